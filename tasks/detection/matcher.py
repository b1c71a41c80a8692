"""DETR's Hungarian matcher: the one-to-one assignment of queries to target boxes that the set loss trains on.

Per image the cost of giving query q target j is ``−cost_class · p_q(label_j) + cost_l1 · ‖b_q − b_j‖₁ −
cost_giou · GIoU(b_q, b_j)`` (boxes cxcywh in [0, 1]); scipy's ``linear_sum_assignment`` finds the cheapest
assignment, so each target gets exactly one query (every target when there are at least as many queries).
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]],
                    cost_class: float, cost_l1: float, cost_giou: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The cheapest query ↔ target assignment of every image.

    Args:
        logits: ``[B, Q, C + 1]`` class logits (the last column "no object").
        boxes: ``[B, Q, 4]`` predicted boxes, cxcywh in [0, 1].
        targets: per image ``labels [n]`` (int64) and ``boxes [n, 4]`` cxcywh in [0, 1].
        cost_class: weight of the negated class probability.
        cost_l1: weight of the L1 box distance.
        cost_giou: weight of the negated generalised IoU.

    Returns:
        Per image ``(query_idx, target_idx)``, int64 CPU tensors of equal length ``min(Q, n)``, sorted by query.
    """
    B, Q = logits.shape[:2]
    sizes = [len(t["labels"]) for t in targets]
    if sum(sizes) == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return [(empty, empty) for _ in range(B)]
    probs = logits.flatten(0, 1).float().softmax(-1)
    pred = boxes.flatten(0, 1).float()
    labels = torch.cat([t["labels"] for t in targets]).to(logits.device)
    gt = torch.cat([t["boxes"] for t in targets]).to(pred)
    cost = (-cost_class * probs[:, labels] + cost_l1 * torch.cdist(pred, gt, p=1)
            - cost_giou * generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy")))
    cost = cost.view(B, Q, -1).cpu()
    matches = []
    for b, block in enumerate(cost.split(sizes, dim=-1)):
        rows, cols = linear_sum_assignment(block[b].numpy())
        matches.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
    return matches
