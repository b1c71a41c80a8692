"""Video anomaly metrics: a three-video example worked by hand, agreement with torchmetrics on random videos, the
snippet-to-frame rule, the video sets of AUC_A and AUC_c, degenerate sets and bad inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from zoo.errors import ZooValueError
from zoo.tasks.video_anomaly.metrics import (
    abnormal_ap,
    abnormal_auc,
    class_auc,
    concat_frames,
    delta_class_auc,
    frame_ap,
    frame_auc,
    snippet_to_frames,
)

# Snippets of 2 frames here so the frames can be written out.
# A (class "a"): snippets .8 .3 .6, 5 frames (the last snippet covers one) → .8 .8 .3 .3 .6, labels 1 0 0 0 1
# B (normal):    snippets .4 .1,    4 frames                            → .4 .4 .1 .1,    labels 0 0 0 0
# C (class "b"): snippets .2 .7,    4 frames                            → .2 .2 .7 .7,    labels 0 0 1 1
# Abnormal frames .8 .6 .7 .7 against 9 normal ones (.8 .3 .3 .4 .4 .1 .1 .2 .2): .8 beats 8 and ties 1 (8.5),
# .6 and both .7 beat 8 each → AUC = 32.5 / 36.
# AP over the thresholds .8 (TP 1, FP 1), .7 (TP 3, FP 1), .6 (TP 4, FP 1): recall steps 1/4, 1/2, 1/4 at
# precisions 1/2, 3/4, 4/5 → 1/8 + 3/8 + 1/5 = 7/10.
# AUC_A (A and C): normal frames .8 .3 .3 .2 .2 → (4.5 + 4 + 4 + 4) / 20 = 33/40; AP_A as AP (B adds no frame above
# .6) = 7/10.
# AUC_a (A and B): abnormal .8 .6 against .8 .3 .3 .4 .4 .1 .1 → (6.5 + 6) / 14 = 25/28; AUC_b (C and B) = 1.
SCORES = [[0.8, 0.3, 0.6], [0.4, 0.1], [0.2, 0.7]]
LABELS = [[1, 0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 1]]
CLASSES = ["a", "normal", "b"]


def test_hand_worked_example():
    assert frame_auc(SCORES, LABELS, snippet_frames=2) == pytest.approx(32.5 / 36)
    assert frame_ap(SCORES, LABELS, snippet_frames=2) == pytest.approx(7 / 10)
    assert abnormal_auc(SCORES, LABELS, snippet_frames=2) == pytest.approx(33 / 40)
    assert abnormal_ap(SCORES, LABELS, snippet_frames=2) == pytest.approx(7 / 10)
    assert class_auc(SCORES, LABELS, CLASSES, snippet_frames=2) == pytest.approx({"a": 25 / 28, "b": 1.0})


def test_delta_class_auc_hand_worked():
    # Masking b's expert reverses C's scores: abnormal .2 .2 beat only .1 .1 of 6 normal frames → AUC_b = 4/12.
    masked = [SCORES[0], SCORES[1], [0.7, 0.2]]
    assert delta_class_auc(masked, SCORES, LABELS, CLASSES, "b", snippet_frames=2) == pytest.approx(1 / 3 - 1)
    assert delta_class_auc(SCORES, SCORES, LABELS, CLASSES, "a", snippet_frames=2) == 0.0


def _random_videos(rng: np.random.Generator, n: int) -> tuple[list, list, list]:
    scores, labels, classes = [], [], []
    for _ in range(n):
        t = int(rng.integers(1, 12))
        frames = int(rng.integers(16 * (t - 1) + 1, 16 * t + 1))
        y = np.zeros(frames, dtype=np.int64)
        cls = str(rng.choice(["normal", "x", "y", "z"]))
        if cls != "normal":
            start = int(rng.integers(0, frames))
            y[start:start + int(rng.integers(1, frames + 1))] = 1
        snippet_y = np.pad(y, (0, 16 * t - frames)).reshape(t, 16).max(axis=1)
        scores.append(np.round(rng.random(t) + 0.4 * snippet_y, 1))  # rounding makes ties
        labels.append(y)
        classes.append(cls)
    return scores, labels, classes


def _torch_frames(scores: list, labels: list, keep: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    s = [torch.tensor(x).repeat_interleave(16)[:len(y)] for x, y, k in zip(scores, labels, keep) if k]
    y = [torch.tensor(y) for y, k in zip(labels, keep) if k]
    return torch.cat(s), torch.cat(y)


def test_matches_torchmetrics_on_random_videos():
    rng = np.random.default_rng(0)
    scores, labels, classes = _random_videos(rng, 40)
    s, y = _torch_frames(scores, labels, [True] * 40)
    assert frame_auc(scores, labels) == pytest.approx(BinaryAUROC()(s, y).item(), abs=1e-6)
    assert frame_ap(scores, labels) == pytest.approx(BinaryAveragePrecision()(s, y).item(), abs=1e-6)
    abnormal = [bool(y.any()) for y in labels]
    s, y = _torch_frames(scores, labels, abnormal)
    assert abnormal_auc(scores, labels) == pytest.approx(BinaryAUROC()(s, y).item(), abs=1e-6)
    assert abnormal_ap(scores, labels) == pytest.approx(BinaryAveragePrecision()(s, y).item(), abs=1e-6)
    per_class = class_auc(scores, labels, classes)
    assert list(per_class) == ["x", "y", "z"]
    for c, value in per_class.items():
        s, y = _torch_frames(scores, labels, [not a or k == c for a, k in zip(abnormal, classes)])
        assert value == pytest.approx(BinaryAUROC()(s, y).item(), abs=1e-6)


def test_snippet_to_frames_rule():
    full = snippet_to_frames([0.1, 0.2, 0.3])
    assert full.shape == (48,) and (full[:16] == 0.1).all() and (full[32:] == 0.3).all()
    partial = snippet_to_frames([0.1, 0.2, 0.3], num_frames=33)  # the last snippet covers one frame
    np.testing.assert_array_equal(partial, full[:33])
    assert snippet_to_frames(np.array([0, 1], dtype=np.int64), num_frames=20).dtype == np.int64
    crops = snippet_to_frames(torch.tensor([[0.0, 1.0], [1.0, 1.0]]), snippet_frames=2)
    np.testing.assert_allclose(crops, [0.5, 0.5, 1.0, 1.0])
    for frames in (32, 49):  # 32 frames would leave the third snippet empty; frame 49 has no snippet
        with pytest.raises(ZooValueError, match="cover 33..48 frames"):
            snippet_to_frames([0.1, 0.2, 0.3], num_frames=frames)


def test_concat_frames_keeps_video_order():
    y, s = concat_frames(SCORES, LABELS, snippet_frames=2)
    np.testing.assert_array_equal(y, [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_allclose(s, [0.8, 0.8, 0.3, 0.3, 0.6, 0.4, 0.4, 0.1, 0.1, 0.2, 0.2, 0.7, 0.7])


def test_video_sets_of_auc_a_and_class_auc():
    # A normal video that outscores everything lowers AUC and AUC_c but not AUC_A; its class entry is not read.
    scores, labels = [*SCORES, [0.9]], [*LABELS, [0, 0]]
    assert frame_auc(scores, labels, snippet_frames=2) < frame_auc(SCORES, LABELS, snippet_frames=2)
    assert abnormal_auc(scores, labels, snippet_frames=2) == pytest.approx(33 / 40)
    out = class_auc(scores, labels, [*CLASSES, "a"], snippet_frames=2)
    assert set(out) == {"a", "b"} and out["b"] == pytest.approx(6 / 8)


def test_degenerate_sets_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normal_only = ([[0.1, 0.5]], [[0, 0, 0]])
        assert math.isnan(frame_auc(*normal_only, snippet_frames=2))
        assert math.isnan(frame_ap(*normal_only, snippet_frames=2))
        assert math.isnan(abnormal_auc(*normal_only, snippet_frames=2))
        all_abnormal = ([[0.1, 0.5], [0.3]], [[1, 1, 1], [0, 0]])  # abnormal videos hold no normal frame
        assert not math.isnan(frame_auc(*all_abnormal, snippet_frames=2))
        assert math.isnan(abnormal_auc(*all_abnormal, snippet_frames=2))
        assert math.isnan(abnormal_ap(*all_abnormal, snippet_frames=2))
        no_normal_frame = class_auc(*all_abnormal, ["a", "normal"], snippet_frames=2)  # B's frames are normal
        assert not math.isnan(no_normal_frame["a"])
        assert math.isnan(class_auc([[0.1, 0.5]], [[1, 1, 1]], ["a"], snippet_frames=2)["a"])
        assert class_auc([[0.1, 0.5]], [[0, 0, 1]], ["a"], snippet_frames=2)["a"] == 1.0  # own normal frames
        assert math.isnan(frame_auc([], [])) and class_auc([], [], []) == {}


@pytest.mark.parametrize("call, match", [
    (lambda: frame_auc(SCORES, LABELS[:2], snippet_frames=2), "number of videos: 3 vs 2"),
    (lambda: frame_auc(SCORES, LABELS), "cover 33..48 frames, got 5"),
    (lambda: frame_auc([[0.1]], [[0, 2]], snippet_frames=2), "0/1"),
    (lambda: frame_auc([[0.1]], [[[0, 1]]], snippet_frames=2), "0/1"),
    (lambda: frame_ap([[np.nan]], [[0, 1]], snippet_frames=2), "NaN or infinite"),
    (lambda: frame_auc([np.zeros((1, 2, 2))], [[0, 1]], snippet_frames=2), r"\[T\] or \[T, crops\]"),
    (lambda: frame_auc([[]], [[]]), r"\[T\] or \[T, crops\]"),
    (lambda: class_auc(SCORES, LABELS, CLASSES[:2], snippet_frames=2), "classes and labels"),
    (lambda: delta_class_auc(SCORES, SCORES, LABELS, CLASSES, "normal", snippet_frames=2), "cls='normal'"),
    (lambda: snippet_to_frames([0.1], snippet_frames=0), "snippet_frames=0"),
    (lambda: snippet_to_frames([0.1], num_frames=1.5), "num_frames=1.5"),
])
def test_bad_input_is_one_line(call, match):
    with pytest.raises(ZooValueError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
