"""Hungarian matcher against brute force over every assignment (softmax and focal class costs), a hand-worked case,
masked classes and empty images."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from zoo.tasks.detection.matcher import hungarian_match

WEIGHTS = {"cost_class": 2.0, "cost_l1": 5.0, "cost_giou": 2.0}


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    wh = torch.rand(n, 2, generator=generator) * 0.4 + 0.05
    centre = torch.rand(n, 2, generator=generator) * (1 - wh) + wh / 2
    return torch.cat((centre, wh), 1)


def focal_cost(logit: float) -> float:
    """Focal loss of calling the class present less that of calling it absent, α 0.25, γ 2, from the definition."""
    p = 1 / (1 + math.exp(-logit))
    return 0.25 * (1 - p) ** 2 * -math.log(p) - 0.75 * p**2 * -math.log(1 - p)


def pair_cost(logits_q, box_q, label, box_t, sigmoid=False):
    """The matching cost of one query and one target, written from the definition."""
    class_cost = focal_cost(float(logits_q[label])) if sigmoid else -float(torch.softmax(logits_q, -1)[label])
    l1 = (box_q - box_t).abs().sum()
    giou = generalized_box_iou(box_convert(box_q[None], "cxcywh", "xyxy"), box_convert(box_t[None], "cxcywh", "xyxy"))
    return float(WEIGHTS["cost_class"] * class_cost + WEIGHTS["cost_l1"] * l1 - WEIGHTS["cost_giou"] * giou[0, 0])


def brute_force(logits, boxes, target, sigmoid):
    """Cheapest total cost over every injective assignment of the smaller side to the larger."""
    Q, n = logits.shape[0], len(target["labels"])
    cost = [[pair_cost(logits[q], boxes[q], target["labels"][j], target["boxes"][j], sigmoid) for j in range(n)]
            for q in range(Q)]
    if n <= Q:
        return min(sum(cost[q][j] for j, q in enumerate(qs)) for qs in itertools.permutations(range(Q), n)), cost
    return min(sum(cost[q][j] for q, j in enumerate(js)) for js in itertools.permutations(range(n), Q)), cost


@pytest.mark.parametrize("sigmoid", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_matches_the_cheapest_assignment_by_brute_force(seed, sigmoid):
    g = torch.Generator().manual_seed(seed)
    Q, C = 5, 4
    sizes = [0, 1, 3, 5, 7]  # 7 > Q: only Q targets can be matched
    logits = torch.randn(len(sizes), Q, C + (0 if sigmoid else 1), generator=g) * 2
    boxes = random_boxes(len(sizes) * Q, g).view(len(sizes), Q, 4)
    targets = [{"labels": torch.randint(0, C, (n,), generator=g), "boxes": random_boxes(n, g)} for n in sizes]
    matches = hungarian_match(logits, boxes, targets, **WEIGHTS, sigmoid=sigmoid)
    assert len(matches) == len(sizes)
    for b, ((rows, cols), target) in enumerate(zip(matches, targets)):
        n = len(target["labels"])
        assert rows.dtype == cols.dtype == torch.int64 and len(rows) == len(cols) == min(Q, n)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert rows.tolist() == sorted(rows.tolist())
        if n == 0:
            continue
        best, cost = brute_force(logits[b], boxes[b], target, sigmoid)
        got = sum(cost[q][j] for q, j in zip(rows.tolist(), cols.tolist()))
        assert got == pytest.approx(best, abs=1e-5)


def test_hand_worked_assignment():
    # Query 0 sits on target 1 and query 1 on target 0; the class scores are uninformative.
    logits = torch.zeros(1, 3, 3)
    boxes = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]]])
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.2, 0.2, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])}]
    ((rows, cols),) = hungarian_match(logits, boxes, targets, **WEIGHTS)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]


@pytest.mark.parametrize("sigmoid", [False, True])
def test_class_cost_decides_between_equal_boxes(sigmoid):
    logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]])
    boxes = torch.full((1, 2, 4), 0.5)
    targets = [{"labels": torch.tensor([1, 0]), "boxes": torch.full((2, 4), 0.5)}]
    ((rows, cols),) = hungarian_match(logits, boxes, targets, **WEIGHTS, sigmoid=sigmoid)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]


def test_focal_cost_of_a_masked_class_is_finite_and_repels():
    # Query 0 sits on the target but its class is masked (a very negative logit): query 1 gets the target.
    logits = torch.tensor([[[-1e4, 0.0], [0.0, 0.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.6, 0.6, 0.2, 0.2]]])
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    ((rows, cols),) = hungarian_match(logits, boxes, targets, **WEIGHTS, sigmoid=True)
    assert rows.tolist() == [1] and cols.tolist() == [0]


def test_images_without_targets():
    logits = torch.randn(2, 4, 3, requires_grad=True)
    boxes = torch.rand(2, 4, 4, requires_grad=True)
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    matches = hungarian_match(logits, boxes, [empty, empty], **WEIGHTS)
    assert [(len(r), len(c)) for r, c in matches] == [(0, 0), (0, 0)]
    one = {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    matches = hungarian_match(logits, boxes, [empty, one], **WEIGHTS)
    assert len(matches[0][0]) == 0 and len(matches[1][0]) == 1
