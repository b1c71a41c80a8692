"""Detection metrics against hand-worked COCO AP, pycocotools run directly on COCO JSON, plain loops and sklearn."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch

from zoo.errors import ZooValueError
from zoo.tasks.detection.metrics import (
    matched_routing_accuracy,
    confusion,
    confusion_figure,
    detection_ap,
    routing_accuracy,
    usage_entropy,
)


def _pred(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}


def _target(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def _ap101(hits: list[bool], num_gt: int) -> float:
    """COCO's 101-point interpolated AP of detections already sorted by score (True = matched a box)."""
    tp = np.cumsum(hits)
    recall = tp / num_gt
    precision = tp / np.arange(1, len(hits) + 1)
    points = []
    for r in np.linspace(0, 1, 101):
        reached = precision[recall >= r - 1e-12]
        points.append(reached.max() if reached.size else 0.0)
    return float(np.mean(points))


def _hand_case():
    """Dataset "a" (class 1): image 0 has box G1, image 1 has G2 and G3. Its detections by score: IoU 0.92 with
    G1, a box on nothing, IoU 0.62 with G2; G3 is missed. Dataset "b" (class 2): one box, found exactly. Each
    dataset also predicts the other's label once, which must change nothing."""
    preds = [
        _pred([[0, 0, 10, 9.2], [0, 0, 10, 10]], [0.9, 0.95], [1, 2]),
        _pred([[100, 100, 110, 110], [20, 20, 30, 26.2]], [0.8, 0.7], [1, 1]),
        _pred([[5, 5, 25, 45], [5, 5, 25, 45]], [0.6, 0.99], [2, 1]),
    ]
    targets = [
        _target([[0, 0, 10, 10]], [1]),
        _target([[20, 20, 30, 30], [50, 50, 60, 60]], [1, 1]),
        _target([[5, 5, 25, 45]], [2]),
    ]
    return preds, targets, [0, 0, 1], ["a", "b"]


def test_hand_worked_case_follows_the_coco_definition():
    result = detection_ap(*_hand_case())
    # 3 boxes; at IoU 0.5..0.6 the detections are hit, miss, hit: recall 1/3, 1/3, 2/3 at precision 1, 1/2, 2/3.
    # Interpolated precision is 1 at the 34 recall points 0..0.33, 2/3 at the 33 points 0.34..0.66, 0 after.
    assert _ap101([True, False, True], 3) == pytest.approx(56 / 101)
    # At IoU 0.65..0.9 only the first detection hits (1 at 34 points); at 0.95 none does.
    assert _ap101([True, False, False], 3) == pytest.approx(34 / 101)
    assert result["ap50/a"] == pytest.approx(56 / 101, abs=1e-6)
    assert result["ap/a"] == pytest.approx((3 * 56 + 6 * 34 + 0) / 1010, abs=1e-6)
    assert result["ap/b"] == pytest.approx(1.0) and result["ap50/b"] == pytest.approx(1.0)
    assert result["ap_mean"] == pytest.approx((372 / 1010 + 1) / 2, abs=1e-6)
    assert result["ap50_mean"] == pytest.approx((56 / 101 + 1) / 2, abs=1e-6)
    assert set(result) == {"ap/a", "ap50/a", "ap/b", "ap50/b", "ap_mean", "ap50_mean"}


def test_other_datasets_labels_are_ignored_but_own_labels_are_false_positives():
    preds, targets, ids, names = _hand_case()
    base = detection_ap(preds, targets, ids, names)
    # A high-scoring box of dataset b's label in dataset a's image: class 2 has no box in dataset a, so nothing.
    preds[0] = _pred([[0, 0, 10, 9.2], [60, 60, 70, 70]], [0.9, 0.99], [1, 2])
    assert detection_ap(preds, targets, ids, names)["ap/a"] == pytest.approx(base["ap/a"])
    # The same box with dataset a's own label is a false positive ranked first: hits become miss, hit, miss, hit.
    preds[0] = _pred([[0, 0, 10, 9.2], [60, 60, 70, 70]], [0.9, 0.99], [1, 1])
    assert detection_ap(preds, targets, ids, names)["ap50/a"] == pytest.approx(
        _ap101([False, True, False, True], 3), abs=1e-6)


def test_perfect_and_empty_predictions():
    _, targets, ids, names = _hand_case()
    perfect = [dict(t, scores=torch.linspace(1, 0.5, len(t["labels"]))) for t in targets]
    assert all(v == pytest.approx(1.0) for v in detection_ap(perfect, targets, ids, names).values())
    empty = [_pred([], [], []) for _ in targets]
    assert all(v == 0.0 for v in detection_ap(empty, targets, ids, names).values())


def test_dataset_without_ground_truth_is_nan_and_left_out_of_the_mean():
    preds, targets, ids, _ = _hand_case()
    targets[2] = _target([], [])
    result = detection_ap(preds, targets, ids, ["a", "b", "c"])
    assert math.isnan(result["ap/b"]) and math.isnan(result["ap50/b"])  # predictions but nothing to find
    assert math.isnan(result["ap/c"])  # no image at all
    assert result["ap_mean"] == pytest.approx(result["ap/a"]) and result["ap50_mean"] == pytest.approx(result["ap50/a"])
    assert math.isnan(detection_ap(preds[2:], targets[2:], [0], ["b"])["ap_mean"])


def _random_case(seed: int):
    """Three datasets with their own unified labels, jittered copies of the boxes plus clutter; one image holds
    150 detections so the 100-per-image cap matters."""
    rng = np.random.default_rng(seed)
    labels_of = {0: [0, 1, 2], 1: [3, 4], 2: [5]}
    preds, targets, ids = [], [], []
    for image in range(18):
        d = image % 3
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 400, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 120, (n, 2))], axis=1)
        labels = rng.choice(labels_of[d], n)
        found = rng.random(n) < 0.7
        jitter = boxes[found] + rng.normal(0, 6, (found.sum(), 4))
        clutter = 150 if image == 4 else int(rng.integers(0, 5))
        cxy = rng.uniform(0, 400, (clutter, 2))
        cboxes = np.concatenate([cxy, cxy + rng.uniform(10, 120, (clutter, 2))], axis=1)
        pboxes = np.concatenate([jitter, cboxes])
        plabels = np.concatenate([labels[found], rng.integers(0, 6, clutter)])
        preds.append({"boxes": torch.tensor(pboxes, dtype=torch.float32),
                      "scores": torch.tensor(rng.random(len(pboxes)), dtype=torch.float32),
                      "labels": torch.tensor(plabels, dtype=torch.int64)})
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.tensor(labels, dtype=torch.int64)})
        ids.append(d)
    return preds, targets, ids


def _pycocotools_direct(preds, targets, ids, dataset, tmp_path) -> tuple[float, float]:
    """AP@[.5:.95] and AP50 of one dataset from COCOeval on COCO JSON files (all unified categories listed)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        x0, y0, x1, y1 = (float(v) for v in b)
        return [x0, y0, x1 - x0, y1 - y0]

    images = [i for i, d in enumerate(ids) if d == dataset]
    gt = {"images": [{"id": i, "width": 640, "height": 640} for i in range(len(targets))],
          "categories": [{"id": c} for c in range(6)], "annotations": []}
    for i, t in enumerate(targets):
        for b, c in zip(t["boxes"].tolist(), t["labels"].tolist()):
            x, y, w, h = xywh(b)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "category_id": c,
                                      "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    dets = [{"image_id": i, "category_id": c, "bbox": xywh(b), "score": s}
            for i, p in enumerate(preds) if i in images
            for b, c, s in zip(p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist())]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        evaluator = COCOeval(coco, coco.loadRes(dets), "bbox")
        evaluator.params.imgIds = images
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_pycocotools_on_coco_json(seed, tmp_path):
    preds, targets, ids = _random_case(seed)
    result = detection_ap(preds, targets, ids, ["x", "y", "z"])
    direct = [_pycocotools_direct(preds, targets, ids, d, tmp_path) for d in range(3)]
    for (ap, ap50), name in zip(direct, ["x", "y", "z"]):
        assert 0 < ap < 1
        assert result[f"ap/{name}"] == pytest.approx(ap, abs=1e-6)
        assert result[f"ap50/{name}"] == pytest.approx(ap50, abs=1e-6)
    assert result["ap_mean"] == pytest.approx(np.mean([a for a, _ in direct]), abs=1e-6)


def test_detection_ap_rejects_bad_inputs():
    preds, targets, ids, names = _hand_case()
    with pytest.raises(ZooValueError, match="one entry per image"):
        detection_ap(preds[:2], targets, ids, names)
    with pytest.raises(ZooValueError, match=r"dataset_ids must be ints in \[0, 2\)"):
        detection_ap(preds, targets, [0, 0, 2], names)
    with pytest.raises(ZooValueError, match="lacks scores"):
        detection_ap([{k: v for k, v in p.items() if k != "scores"} for p in preds], targets, ids, names)
    with pytest.raises(ZooValueError, match=r"preds\[1\] must hold boxes \[N, 4\]"):
        detection_ap([preds[0], _pred([[0, 0, 1, 1]], [0.5, 0.4], [1, 1]), preds[2]], targets, ids, names)
    with pytest.raises(ZooValueError, match="distinct names"):
        detection_ap(preds, targets, ids, ["a", "a"])


def _routing(seed: int, tokens: int = 500, experts: int = 6, datasets: int = 4):
    rng = np.random.default_rng(seed)
    return rng.integers(0, experts, tokens), rng.integers(0, datasets, tokens)


def test_routing_accuracy_matches_a_loop():
    experts, datasets = _routing(0)
    mapping = [2, 0, 5, 2]
    hits = 0
    for e, d in zip(experts, datasets):
        hits += int(e == mapping[d])
    assert routing_accuracy(experts, datasets, mapping) == pytest.approx(hits / len(experts))
    assert routing_accuracy(torch.tensor(experts), torch.tensor(datasets), mapping) == pytest.approx(hits / 500)
    assert routing_accuracy(np.array(mapping)[datasets], datasets, mapping) == 1.0
    assert math.isnan(routing_accuracy(np.zeros(0, np.int64), np.zeros(0, np.int64), mapping))
    with pytest.raises(ZooValueError, match=r"dataset_ids must lie in \[0, 4\)"):
        routing_accuracy(experts, datasets + 1, mapping)
    with pytest.raises(ZooValueError, match="expert_ids must be"):
        routing_accuracy(experts[:, None], datasets, mapping)


def test_usage_entropy_matches_a_loop():
    experts, _ = _routing(1)
    counts = [0] * 8
    for e in experts:
        counts[e] += 1
    nats = -sum(c / len(experts) * math.log(c / len(experts)) for c in counts if c)
    got, normalised = usage_entropy(experts, 8)  # experts 6 and 7 unused
    assert got == pytest.approx(nats) and normalised == pytest.approx(nats / math.log(8))
    assert usage_entropy(np.arange(400) % 4, 4) == pytest.approx((math.log(4), 1.0))
    assert usage_entropy(np.full(50, 3), 4) == (0.0, 0.0)
    assert all(math.isnan(v) for v in usage_entropy(np.zeros(0, np.int64), 4))
    with pytest.raises(ZooValueError, match=r"expert_ids must lie in \[0, 4\)"):
        usage_entropy(np.array([0, 4]), 4)


def test_confusion_matches_sklearn():
    from sklearn.metrics import confusion_matrix

    experts, datasets = _routing(2, experts=7, datasets=3)
    got = confusion(experts, datasets, 7, 3)
    counts = confusion_matrix(datasets, experts, labels=np.arange(7))[:3, :7]
    np.testing.assert_allclose(got, counts / counts.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(got.sum(axis=1), 1.0)
    missing = confusion(experts[datasets != 1], datasets[datasets != 1], 7, 4)
    assert np.isnan(missing[1]).all() and np.isnan(missing[3]).all()
    np.testing.assert_allclose(missing[[0, 2]], got[[0, 2]])


@pytest.mark.parametrize(("names", "experts", "annotated"), [
    (["coco", "voc", "kitti"], 4, 12),
    (["coco", "objects365", "openimages", "lvis", "mapillary_vistas", "kitti", "watercolor", "clipart",
      "comic", "dota_aerial", "deeplesion"], 32, 0),
])
def test_confusion_figure_is_readable(names, experts, annotated, overlapping_texts):
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    matrix = rng.dirichlet(np.ones(experts), len(names))
    matrix[1] = np.nan  # a dataset without tokens
    fig = confusion_figure(matrix, names, experts)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # heatmap and colour bar
    heatmap = fig.axes[0]
    assert [t.get_text() for t in heatmap.get_yticklabels()] == names
    cells = [t for t in heatmap.texts if t.get_text().endswith("%")]
    assert len(cells) == max(annotated - experts, 0)  # the NaN row is not annotated
    assert overlapping_texts(fig) == []
    with pytest.raises(ZooValueError, match="confusion matrix must be"):
        confusion_figure(matrix[:, :-1], names, experts)


def test_matched_routing_accuracy_is_blind_to_which_expert_a_dataset_got():
    datasets = np.repeat([0, 1, 2], 4)
    permuted = np.array([2, 2, 2, 0, 1, 1, 1, 1, 0, 0, 0, 0])  # dataset 0 → expert 2 (3 of 4), 1 → 1, 2 → 0
    assert matched_routing_accuracy(permuted, datasets, 3, 3) == pytest.approx(11 / 12)
    assert routing_accuracy(permuted, datasets, [0, 1, 2]) == pytest.approx(5 / 12)
    # every token on one expert: one dataset can be matched to it, the others get nothing
    assert matched_routing_accuracy(np.zeros(12, np.int64), datasets, 3, 3) == pytest.approx(4 / 12)
    # fewer experts than datasets: the best two datasets are matched
    assert matched_routing_accuracy(np.array([0] * 4 + [1] * 4 + [1] * 4), datasets, 2, 3) == pytest.approx(8 / 12)
    assert np.isnan(matched_routing_accuracy(np.zeros(0, np.int64), np.zeros(0, np.int64), 3, 3))
