"""Detection objective: set loss (softmax CE and sigmoid focal) against per-query loops, empty images, DAMEX and
vanilla routing losses against per-token loops, gradients to the router gate, and a one-batch overfit."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, generalized_box_iou

from zoo.moe import importance_loss, smooth_load_loss
from zoo.tasks.detection.config import ModelConfig
from zoo.tasks.detection.losses import damex_loss, objective, set_loss, vanilla_loss
from zoo.tasks.detection.matcher import hungarian_match
from zoo.tasks.detection.models import DetOutput, build_detector

C, L, B, Q = 4, 2, 3, 5
SMALL = {"d_model": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 2, "queries": 6, "ffn_hidden": 16,
         "moe_layers": [0, 1]}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_targets(sizes, generator=None):
    targets = []
    for n in sizes:
        wh = torch.rand(n, 2, generator=generator) * 0.3 + 0.1
        centre = torch.rand(n, 2, generator=generator) * (1 - wh) + wh / 2
        targets.append({"labels": torch.randint(0, C, (n,), generator=generator), "boxes": torch.cat((centre, wh), 1)})
    return targets


def random_output(E=3, sigmoid=False, tokens=0):
    """Random detector output; ``tokens`` > 0 adds that many encoder proposals per image (two-stage)."""
    logits = torch.randn(L, B, Q, C + (0 if sigmoid else 1), requires_grad=True)
    boxes = torch.rand(L, B, Q, 4).clamp(0.1, 0.4).requires_grad_()
    router = {f"decoder{i}": torch.randn(B, Q, E, requires_grad=True) for i in range(2)}
    out = DetOutput(logits, boxes, router_logits=router, sigmoid=sigmoid)
    if tokens:
        out.enc_logits = torch.randn(B, tokens, logits.shape[-1], requires_grad=True)
        out.enc_boxes = torch.rand(B, tokens, 4).clamp(0.1, 0.4).requires_grad_()
    return out


def focal(logit, present):
    """Sigmoid focal loss of one logit (α 0.25, γ 2) from its definition."""
    p = torch.sigmoid(logit)
    if present:
        return -0.25 * (1 - p) ** 2 * torch.log(p)
    return -0.75 * p**2 * torch.log(1 - p)


def set_loss_loop(out, targets, cfg):
    """DETR's loss query by query: weighted CE mean, L1 and 1 − GIoU of matched pairs per target box."""
    num_boxes = max(sum(len(t["labels"]) for t in targets), 1)
    total = 0.0
    stages = [(out.logits[i], out.boxes[i]) for i in range(out.logits.shape[0])]
    if out.enc_logits is not None:
        stages.append((out.enc_logits, out.enc_boxes))
    for stage_logits, stage_boxes in stages:
        matches = hungarian_match(stage_logits, stage_boxes, targets, cfg.cost_class, cfg.cost_l1, cfg.cost_giou,
                                  out.sigmoid)
        ce_sum, weight_sum, focal_sum, l1, giou = 0.0, 0.0, 0.0, 0.0, 0.0
        for b, (rows, cols) in enumerate(matches):
            assigned = dict(zip(rows.tolist(), cols.tolist()))
            for q in range(stage_logits.shape[1]):
                label = int(targets[b]["labels"][assigned[q]]) if q in assigned else C
                if out.sigmoid:
                    focal_sum = focal_sum + sum(focal(stage_logits[b, q, c], c == label) for c in range(C))
                else:
                    w = 1.0 if q in assigned else cfg.no_object_weight
                    ce_sum = ce_sum - w * torch.log_softmax(stage_logits[b, q], -1)[label]
                    weight_sum += w
                if q in assigned:
                    pred, gt = stage_boxes[b, q], targets[b]["boxes"][assigned[q]]
                    l1 = l1 + (pred - gt).abs().sum()
                    g = generalized_box_iou(box_convert(pred[None], "cxcywh", "xyxy"),
                                            box_convert(gt[None], "cxcywh", "xyxy"))[0, 0]
                    giou = giou + 1 - g
        cls = cfg.cost_class * focal_sum / num_boxes if out.sigmoid else ce_sum / weight_sum
        total = total + cls + (cfg.cost_l1 * l1 + cfg.cost_giou * giou) / num_boxes
    return total


@pytest.mark.parametrize(("class_loss", "tokens"), [("softmax", 0), ("focal", 0), ("focal", 7), ("softmax", 7)])
def test_set_loss_equals_the_per_query_loop_and_its_parts_add_up(class_loss, tokens):
    cfg = ModelConfig(no_object_weight=0.2, class_loss=class_loss)
    out, targets = random_output(sigmoid=class_loss == "focal", tokens=tokens), random_targets([2, 0, 4])
    loss, parts, matches = set_loss(out, targets, cfg)
    cls = "focal" if class_loss == "focal" else "ce"
    assert set(parts) == {cls, "l1", "giou"}
    torch.testing.assert_close(loss, parts[cls] + parts["l1"] + parts["giou"])
    ref = set_loss_loop(out, targets, cfg)
    torch.testing.assert_close(loss, ref)
    for tensor in (out.boxes, out.logits) + ((out.enc_boxes, out.enc_logits) if tokens else ()):
        (grad,) = torch.autograd.grad(loss, tensor, retain_graph=True)
        (ref_grad,) = torch.autograd.grad(ref, tensor, retain_graph=True)
        torch.testing.assert_close(grad, ref_grad)
    assert [len(r) for r, _ in matches] == [2, 0, 4]


def test_set_loss_without_any_target_only_learns_no_object():
    out = random_output()
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * B
    loss, parts, _ = set_loss(out, empty, ModelConfig(class_loss="softmax"))
    assert parts["l1"] == 0 and parts["giou"] == 0
    expected = sum(F.cross_entropy(out.logits[i].reshape(-1, C + 1), torch.full((B * Q,), C)) for i in range(L))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.isfinite(out.logits.grad).all()


def test_focal_set_loss_without_any_target_learns_every_class_absent():
    out = random_output(sigmoid=True)
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * B
    loss, parts, _ = set_loss(out, empty, ModelConfig())
    assert parts["l1"] == 0 and parts["giou"] == 0
    p = out.logits.sigmoid()
    expected = 2.0 * (-0.75 * p**2 * torch.log(1 - p)).sum()  # cost_class × focal sum over 1 (no boxes: count 1)
    torch.testing.assert_close(loss, expected)


def test_focal_loss_ignores_masked_classes():
    out = random_output(sigmoid=True)
    with torch.no_grad():
        out.logits[..., 0] = -1e4  # class 0 masked for every query
    targets = random_targets([1, 2, 1])
    for t in targets:
        t["labels"].clamp_(min=1)
    loss, _, _ = set_loss(out, targets, ModelConfig())
    loss.backward()
    assert torch.isfinite(loss) and (out.logits.grad[..., 0] == 0).all()


def test_damex_loss_equals_the_per_token_loop():
    out = random_output(E=4)
    experts = torch.tensor([3, 0, 2])
    got = damex_loss(out.router_logits, experts)
    per_layer = []
    for logits in out.router_logits.values():
        tokens = [-torch.log_softmax(logits[b, q], -1)[experts[b]] for b in range(B) for q in range(Q)]
        per_layer.append(sum(tokens) / len(tokens))
    torch.testing.assert_close(got, sum(per_layer) / len(per_layer))
    assert damex_loss({}, experts) == 0


def test_damex_loss_reaches_the_router_gate_of_the_detector():
    cfg = ModelConfig(**SMALL)
    model = build_detector(cfg, C, 3, 32)
    experts = torch.tensor([0, 2])
    out = model(torch.randn(2, 3, 32, 32))
    damex_loss(out.router_logits, experts).backward()
    for i in (0, 1):
        gate = model.layers[i].ffn.router.gate.weight
        assert gate.grad is not None and gate.grad.abs().sum() > 0


def test_vanilla_loss_counts_only_matched_queries():
    out = random_output(E=4)
    matches = [(torch.tensor([0, 3]), torch.tensor([1, 0])), (torch.zeros(0, dtype=torch.int64),) * 2,
               (torch.tensor([1, 2, 4]), torch.tensor([0, 2, 1]))]
    got = vanilla_loss(out.router_logits, matches, 0.25, 1)
    per_layer = []
    for logits in out.router_logits.values():
        fg = torch.stack([logits[0, 0], logits[0, 3], logits[2, 1], logits[2, 2], logits[2, 4]])
        per_layer.append(0.5 * (importance_loss(fg) + smooth_load_loss(fg, 1, 0.25)))
    torch.testing.assert_close(got, sum(per_layer) / 2)
    (grad,) = torch.autograd.grad(got, out.router_logits["decoder0"])
    unmatched = torch.ones(B, Q, dtype=torch.bool)
    unmatched[0, [0, 3]] = unmatched[2, [1, 2, 4]] = False
    assert (grad[unmatched] == 0).all() and grad[~unmatched].abs().sum() > 0


def test_objective_names_its_parts_and_weights_the_routing_loss():
    out, targets, experts = random_output(E=3, sigmoid=True), random_targets([1, 2, 3]), torch.tensor([0, 1, 2])
    base, _, _ = set_loss(out, targets, ModelConfig())
    for routing_loss in ("damex", "vanilla"):
        cfg = ModelConfig(routing_loss=routing_loss, routing_loss_weight=0.5)
        loss, parts = objective(out, targets, experts, cfg, 3)
        assert set(parts) == {"focal", "l1", "giou", routing_loss}
        torch.testing.assert_close(loss, base + 0.5 * parts[routing_loss])
    loss, parts = objective(out, targets, experts, ModelConfig(routing_loss="none"), 3)
    assert set(parts) == {"focal", "l1", "giou"}
    torch.testing.assert_close(loss, base)


@pytest.mark.parametrize("class_loss", ["focal", "softmax"])
def test_one_batch_overfits(class_loss):
    cfg = ModelConfig(backbone="resnet10t", d_model=32, heads=2, encoder_layers=1, decoder_layers=2, queries=8,
                      ffn_hidden=32, moe_layers=[1], decoder="moe", class_loss=class_loss)
    model = build_detector(cfg, C, 2, 32)
    images = torch.randn(2, 3, 32, 32)
    targets, experts = random_targets([2, 3], torch.Generator().manual_seed(1)), torch.tensor([0, 1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    start, losses = time.perf_counter(), []
    for _ in range(150):
        loss, _ = objective(model(images), targets, experts, cfg, 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 20, (losses[0], losses[-1])
    assert time.perf_counter() - start < 20
