"""DETR's Hungarian matcher: the one-to-one assignment of queries to target boxes that the set loss trains on.

Per image the cost of giving query q target j is ``cost_class · class_cost + cost_l1 · ‖b_q − b_j‖₁ −
cost_giou · GIoU(b_q, b_j)`` (boxes cxcywh in [0, 1]), the class cost being ``−p_q(label_j)`` for softmax logits
or, for sigmoid logits, the focal loss of calling it ``label_j`` less that of not (Deformable DETR); scipy's
``linear_sum_assignment`` finds the cheapest assignment, so each target gets exactly one query (every target when
there are at least as many queries).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou

#: The sigmoid focal loss's α and γ (Lin et al. 2017; Deformable DETR and DINO use them for matching and loss).
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def focal_class_cost(logits: torch.Tensor) -> torch.Tensor:
    """``[N, C]`` focal cost of predicting each class:
    ``α (1 − p)^γ (−log p) − (1 − α) p^γ (−log(1 − p))``, ``p = σ(logit)`` (log-sigmoids keep it finite for
    masked, very negative logits)."""
    p = logits.sigmoid()
    pos = FOCAL_ALPHA * (1 - p) ** FOCAL_GAMMA * -F.logsigmoid(logits)
    neg = (1 - FOCAL_ALPHA) * p**FOCAL_GAMMA * -F.logsigmoid(-logits)
    return pos - neg


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]],
                    cost_class: float, cost_l1: float, cost_giou: float,
                    sigmoid: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The cheapest query ↔ target assignment of every image.

    Args:
        logits: ``[B, Q, C]`` sigmoid class logits, or ``[B, Q, C + 1]`` softmax ones (the last column "no
            object").
        boxes: ``[B, Q, 4]`` predicted boxes, cxcywh in [0, 1].
        targets: per image ``labels [n]`` (int64) and ``boxes [n, 4]`` cxcywh in [0, 1].
        cost_class: weight of the class cost.
        cost_l1: weight of the L1 box distance.
        cost_giou: weight of the negated generalised IoU.
        sigmoid: the logits are independent sigmoids (the focal cost), else a softmax.

    Returns:
        Per image ``(query_idx, target_idx)``, int64 CPU tensors of equal length ``min(Q, n)``, sorted by query.
    """
    B, Q = logits.shape[:2]
    sizes = [len(t["labels"]) for t in targets]
    if sum(sizes) == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return [(empty, empty) for _ in range(B)]
    flat = logits.flatten(0, 1).float()
    class_cost = focal_class_cost(flat) if sigmoid else -flat.softmax(-1)
    pred = boxes.flatten(0, 1).float()
    labels = torch.cat([t["labels"] for t in targets]).to(logits.device)
    gt = torch.cat([t["boxes"] for t in targets]).to(pred)
    cost = (cost_class * class_cost[:, labels] + cost_l1 * torch.cdist(pred, gt, p=1)
            - cost_giou * generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy")))
    cost = cost.view(B, Q, -1).cpu()
    matches = []
    for b, block in enumerate(cost.split(sizes, dim=-1)):
        rows, cols = linear_sum_assignment(block[b].numpy())
        matches.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
    return matches
