"""The detection objective: DETR's Hungarian set loss on every decoder layer plus the row's routing loss.

* :func:`set_loss`: per decoder layer (the auxiliary decoding loss, all layers weighted equally and summed) a
  fresh Hungarian match, then the class loss over all queries, L1 and GIoU of the matched boxes. The class loss is
  the sigmoid focal loss (Deformable DETR, DINO: unmatched queries learn every class absent; summed and normalised
  by the batch's target count) or DETR's cross-entropy (unmatched queries learn "no object", down-weighted by
  ``no_object_weight``; a weighted mean over queries). L1 and GIoU are normalised by the target count.
* :func:`damex_loss`: DAMEX's routing loss (Jain et al. 2023): cross-entropy of every decoder token's router
  logits to the expert of its own image's dataset, so each dataset's tokens learn to go to their expert.
* :func:`vanilla_loss`: Shazeer et al. 2017's importance + load CV² balance, on the matched (foreground) queries.

The MoE layers' own auxiliary losses (``DetOutput.aux``) are not part of :func:`objective`: ``zoo.module.ZooModule``
adds them from the step output.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from zoo.moe.losses import importance_loss, smooth_load_loss

from .config import ModelConfig
from .matcher import FOCAL_ALPHA, FOCAL_GAMMA, hungarian_match
from .models import DetOutput

Matches = list[tuple[torch.Tensor, torch.Tensor]]


def layer_set_loss(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]],
                   matches: Matches, no_object_weight: float, num_boxes: float,
                   sigmoid: bool = False) -> dict[str, torch.Tensor]:
    """Unweighted class loss (``focal`` or ``ce``), ``l1`` and ``giou`` of one decoder layer (``boxes [B, Q, 4]``).

    With ``sigmoid`` (``logits [B, Q, C]``) ``focal`` is the sigmoid focal loss summed over all B·Q·C logits
    (one-hot targets: a matched query's label, nothing for the rest) divided by ``num_boxes``; else
    (``logits [B, Q, C+1]``) ``ce`` is the class-weighted mean over all B·Q queries (DETR). ``l1`` and ``giou``
    (1 − GIoU) are sums over matched pairs divided by ``num_boxes``.
    """
    B, Q, C1 = logits.shape
    device = logits.device
    batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)]).to(device)
    query_idx = torch.cat([q for q, _ in matches]).to(device)
    matched = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, matches)]).to(device)
    if sigmoid:
        onehot = torch.zeros(B, Q, C1, device=device)
        onehot[batch_idx, query_idx, matched] = 1.0
        focal = sigmoid_focal_loss(logits.float(), onehot, FOCAL_ALPHA, FOCAL_GAMMA, reduction="sum") / num_boxes
        parts = {"focal": focal}
    else:
        classes = torch.full((B, Q), C1 - 1, dtype=torch.int64, device=device)
        classes[batch_idx, query_idx] = matched
        weight = torch.ones(C1, device=device)
        weight[-1] = no_object_weight
        parts = {"ce": F.cross_entropy(logits.float().transpose(1, 2), classes, weight)}
    pred = boxes[batch_idx, query_idx].float()
    gt = torch.cat([t["boxes"][j.to(t["boxes"].device)] for t, (_, j) in zip(targets, matches)]).to(pred)
    l1 = F.l1_loss(pred, gt, reduction="sum") / num_boxes
    giou = torch.diag(generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy")))
    return {**parts, "l1": l1, "giou": (1 - giou).sum() / num_boxes}


def set_loss(out: DetOutput, targets: list[dict[str, torch.Tensor]],
             cfg: ModelConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor], Matches]:
    """DETR's set loss summed over the decoder layers and the encoder's two-stage proposals when there are any,
    each matched on its own.

    Args:
        out: the detector output.
        targets: per image ``labels [n]`` and ``boxes [n, 4]`` cxcywh in [0, 1].
        cfg: the model config (``no_object_weight`` and the ``cost_*`` weights, used for matching and loss alike:
            focal × ``cost_class`` or CE × 1, L1 × ``cost_l1``, GIoU × ``cost_giou``).

    Returns:
        The loss, its weighted parts ``focal`` (``out.sigmoid``) or ``ce``, ``l1``, ``giou`` (summed over layers;
        they add up to the loss) and the last layer's matches.
    """
    num_boxes = max(sum(len(t["labels"]) for t in targets), 1)
    cls, cls_weight = ("focal", cfg.cost_class) if out.sigmoid else ("ce", 1.0)
    weights = {cls: cls_weight, "l1": cfg.cost_l1, "giou": cfg.cost_giou}
    parts = {name: out.logits.new_zeros((), dtype=torch.float32) for name in weights}
    matches: Matches = []
    stages = list(zip(out.logits, out.boxes))
    if out.enc_logits is not None:
        stages.insert(0, (out.enc_logits, out.enc_boxes))
    for logits, boxes in stages:
        matches = hungarian_match(logits, boxes, targets, cfg.cost_class, cfg.cost_l1, cfg.cost_giou, out.sigmoid)
        layer = layer_set_loss(logits, boxes, targets, matches, cfg.no_object_weight, num_boxes, out.sigmoid)
        for name, weight in weights.items():
            parts[name] = parts[name] + weight * layer[name]
    return sum(parts.values()), parts, matches


def damex_loss(router_logits: Mapping[str, torch.Tensor], expert_of_image: torch.Tensor) -> torch.Tensor:
    """DAMEX's routing loss: mean over all decoder tokens of ``CE(router logits, expert of the token's image)``,
    averaged over the MoE layers; 0 without MoE layers.

    Args:
        router_logits: per MoE layer ``[B, Q, E]`` fp32 router logits.
        expert_of_image: ``[B]`` expert id of each image's dataset.
    """
    values = []
    for logits in router_logits.values():
        B, Q, E = logits.shape
        target = expert_of_image.to(logits.device)[:, None].expand(B, Q)
        values.append(F.cross_entropy(logits.reshape(B * Q, E).float(), target.reshape(-1)))
    return torch.stack(values).mean() if values else expert_of_image.new_zeros((), dtype=torch.float32)


def vanilla_loss(router_logits: Mapping[str, torch.Tensor], matches: Matches, noise_std: float,
                 k: int) -> torch.Tensor:
    """``½ [CV²(importance) + CV²(smooth load)]`` (Shazeer et al. 2017) over the matched queries only, averaged
    over the MoE layers; 0 without MoE layers.

    Args:
        router_logits: per MoE layer ``[B, Q, E]`` fp32 router logits.
        matches: per image ``(query_idx, target_idx)``; their queries are the foreground tokens.
        noise_std: σ of the router's selection noise (the load estimator's).
        k: experts per token.
    """
    values = []
    for logits in router_logits.values():
        batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)]).to(logits.device)
        query_idx = torch.cat([q for q, _ in matches]).to(logits.device)
        fg = logits[batch_idx, query_idx].float()
        values.append(0.5 * (importance_loss(fg) + smooth_load_loss(fg, k, noise_std)))
    return torch.stack(values).mean() if values else torch.zeros(())


def objective(out: DetOutput, targets: list[dict[str, torch.Tensor]], expert_of_image: torch.Tensor,
              cfg: ModelConfig, num_experts: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Set loss + ``routing_loss_weight`` × the ``cfg.routing_loss`` term.

    Args:
        out: the detector output.
        targets: per image ``labels`` and ``boxes`` (cxcywh in [0, 1]).
        expert_of_image: ``[B]`` expert id of each image's dataset (DAMEX's target).
        cfg: the model config.
        num_experts: E of the MoE decoder (the vanilla load estimator's σ = 1/E, the router's jitter; the split
            decoder's E and k are ``split_groups`` and ``split_k``).

    Returns:
        The loss and its parts (:func:`set_loss`) and, when the row has one, the unweighted ``damex`` or
        ``vanilla`` routing loss.
    """
    loss, parts, matches = set_loss(out, targets, cfg)
    if cfg.routing_loss == "none" or not out.router_logits:
        return loss, parts
    if cfg.routing_loss == "damex":
        routing = damex_loss(out.router_logits, expert_of_image)
    else:
        experts, k = (cfg.split_groups, cfg.split_k) if cfg.decoder == "split" else (num_experts, cfg.k)
        routing = vanilla_loss(out.router_logits, matches, 1.0 / experts, k)
    parts[cfg.routing_loss] = routing
    return loss + cfg.routing_loss_weight * routing, parts
