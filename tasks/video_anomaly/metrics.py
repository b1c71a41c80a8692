"""Frame-level metrics of weakly supervised video anomaly detection, computed as the benchmarks report them.

A model scores snippets of :data:`SNIPPET_FRAMES` frames (the unit of the I3D features); the metrics are over
frames. :func:`snippet_to_frames` gives every frame the score of the snippet it falls in, then the frames of all
test videos are concatenated and scored as one set, not averaged per video:

- :func:`frame_auc`: ROC-AUC, P(score of an abnormal frame > score of a normal frame), ties counting one half; the
  UCF-Crime (Sultani et al., CVPR 2018) and ShanghaiTech (weakly supervised split of Zhong et al., CVPR 2019)
  metric.
- :func:`frame_ap`: average precision ``Σ_n (R_n − R_{n−1}) · P_n`` over the distinct score thresholds, the
  XD-Violence metric (Wu et al., ECCV 2020). It is sklearn's ``average_precision_score``, not the trapezoidal area
  under the precision-recall curve, whose linear interpolation is optimistic (Davis and Goadrich, ICML 2006).
- :func:`abnormal_auc`, :func:`abnormal_ap` (AUC_A, AP_A): the same over the abnormal videos only, so a model
  cannot score well by ranking whole normal videos low; GS-MoE (D'Amicantonio, Majhi et al., ICCV 2025) reports
  them next to AUC and AP.
- :func:`class_auc` (AUC_c): ROC-AUC over all normal videos plus the abnormal videos of class c (zoo choice of
  the video set), and :func:`delta_class_auc` (ΔAUC_c), how much AUC_c changes when expert c is masked.

A video is abnormal when one of its frame labels is 1 and normal otherwise, for AUC_A, AP_A and AUC_c alike.

Degenerate sets: any metric over frames that hold a single class (or none) is NaN, never an error: AUC is
undefined there and AP is 1 for every scorer when no frame is normal, so neither would measure anything. Examples:
AUC_A when every frame of the abnormal videos is abnormal, AUC_c likewise when the split has no normal video,
any metric on a test split without abnormal videos. Bad inputs (lengths that do not fit, labels other than 0/1,
non-finite scores) raise :class:`~zoo.errors.ZooValueError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from zoo.errors import ZooValueError, check_arg

SNIPPET_FRAMES = 16  # frames per I3D snippet on UCF-Crime, ShanghaiTech and XD-Violence


def _numpy(x: Any) -> np.ndarray:
    """An array from numpy, lists or torch tensors (detached and moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def snippet_to_frames(values: Any, num_frames: int | None = None, snippet_frames: int = SNIPPET_FRAMES) -> np.ndarray:
    """Per-frame values from per-snippet ``values`` [T] or [T, crops] (crops averaged, as in 10-crop testing).

    Frame ``f`` takes the value of snippet ``f // snippet_frames``. Without ``num_frames`` every snippet covers
    ``snippet_frames`` frames (``T · snippet_frames`` in all). A video whose frame count is not a multiple has a
    partial last snippet: give ``num_frames`` in ``(snippet_frames·(T−1), snippet_frames·T]`` and the last
    snippet covers only the frames left. More frames than the snippets cover is an error, since frames after the
    last snippet have no score. Snippet labels expand by the same rule (1-D input keeps its dtype).
    """
    check_arg(isinstance(snippet_frames, int) and snippet_frames >= 1, "snippet_frames", snippet_frames,
              "an int >= 1")
    v = _numpy(values)
    if v.ndim == 2:
        v = v.astype(np.float64).mean(axis=1)
    if v.ndim != 1 or not len(v):
        raise ZooValueError(f"snippet values must be [T] or [T, crops] with T >= 1, got shape {_numpy(values).shape}")
    covered = len(v) * snippet_frames
    if num_frames is None:
        num_frames = covered
    check_arg(isinstance(num_frames, int | np.integer), "num_frames", num_frames, "an int or None")
    if not covered - snippet_frames < num_frames <= covered:
        raise ZooValueError(f"{len(v)} snippets of {snippet_frames} frames cover {covered - snippet_frames + 1}.."
                            f"{covered} frames, got {num_frames}")
    return np.repeat(v, snippet_frames)[:num_frames]


def _videos(scores: Sequence[Any], labels: Sequence[Any],
            snippet_frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per video ``(frame labels int64, frame scores float64)``, checked."""
    if len(scores) != len(labels):
        raise ZooValueError(f"scores and labels differ in number of videos: {len(scores)} vs {len(labels)}")
    out = []
    for i, (s, y) in enumerate(zip(scores, labels)):
        y = _numpy(y)
        if y.ndim != 1 or not np.isin(y, (0, 1)).all():
            raise ZooValueError(f"video {i}: frame labels must be a 1-D array of 0/1, got shape {y.shape}, "
                                f"values {np.unique(y)[:5].tolist()}")
        s = snippet_to_frames(_numpy(s).astype(np.float64), len(y), snippet_frames)
        if not np.isfinite(s).all():
            raise ZooValueError(f"video {i}: {int((~np.isfinite(s)).sum())} frame scores are NaN or infinite")
        out.append((y.astype(np.int64), s))
    return out


def _concat(videos: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not videos:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate([y for y, _ in videos]), np.concatenate([s for _, s in videos])


def concat_frames(scores: Sequence[Any], labels: Sequence[Any],
                  snippet_frames: int = SNIPPET_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """``(frame labels [N], frame scores [N])`` of all videos, concatenated in order.

    Args:
        scores: per video, its snippet scores [T_i] or [T_i, crops].
        labels: per video, its frame labels [N_i] of 0/1 (:func:`snippet_to_frames` for the rule tying N_i to
            T_i; expand snippet labels with it first).
    """
    return _concat(_videos(scores, labels, snippet_frames))


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC of frame scores for frame labels; NaN unless both classes are present."""
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, score))


def ap(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision of frame scores for frame labels; NaN unless both classes are present."""
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(average_precision_score(y, score))


def frame_auc(scores: Sequence[Any], labels: Sequence[Any], snippet_frames: int = SNIPPET_FRAMES) -> float:
    """Frame-level ROC-AUC over all test videos (arguments as in :func:`concat_frames`)."""
    return auc(*concat_frames(scores, labels, snippet_frames))


def frame_ap(scores: Sequence[Any], labels: Sequence[Any], snippet_frames: int = SNIPPET_FRAMES) -> float:
    """Frame-level AP over all test videos (arguments as in :func:`concat_frames`)."""
    return ap(*concat_frames(scores, labels, snippet_frames))


def abnormal_auc(scores: Sequence[Any], labels: Sequence[Any], snippet_frames: int = SNIPPET_FRAMES) -> float:
    """AUC_A: frame-level ROC-AUC over the abnormal videos only."""
    return auc(*_concat([v for v in _videos(scores, labels, snippet_frames) if v[0].any()]))


def abnormal_ap(scores: Sequence[Any], labels: Sequence[Any], snippet_frames: int = SNIPPET_FRAMES) -> float:
    """AP_A: frame-level AP over the abnormal videos only."""
    return ap(*_concat([v for v in _videos(scores, labels, snippet_frames) if v[0].any()]))


def _class_frames(videos: list[tuple[np.ndarray, np.ndarray]], classes: Sequence[str],
                  cls: str) -> tuple[np.ndarray, np.ndarray]:
    """Frames of the normal videos and of the abnormal videos of class ``cls``, in video order."""
    return _concat([v for c, v in zip(classes, videos) if not v[0].any() or c == cls])


def _classes(videos: list[tuple[np.ndarray, np.ndarray]], classes: Sequence[str]) -> list[str]:
    """The classes of the abnormal videos, sorted."""
    if len(classes) != len(videos):
        raise ZooValueError(f"classes and labels differ in number of videos: {len(classes)} vs {len(videos)}")
    return sorted({c for c, v in zip(classes, videos) if v[0].any()}, key=str)


def class_auc(scores: Sequence[Any], labels: Sequence[Any], classes: Sequence[str],
              snippet_frames: int = SNIPPET_FRAMES) -> dict[str, float]:
    """AUC_c for every class c of an abnormal video: frame-level ROC-AUC over the normal videos and those of c.

    Args:
        classes: per video, its anomaly class; read for abnormal videos only, so normal ones may hold anything.
    """
    videos = _videos(scores, labels, snippet_frames)
    return {c: auc(*_class_frames(videos, classes, c)) for c in _classes(videos, classes)}


def delta_class_auc(masked_scores: Sequence[Any], scores: Sequence[Any], labels: Sequence[Any],
                    classes: Sequence[str], cls: str, snippet_frames: int = SNIPPET_FRAMES) -> float:
    """ΔAUC_c: AUC_c of the scores with expert ``cls`` masked minus AUC_c of the full model's ``scores``
    (negative when the expert helps its class; arguments as in :func:`class_auc`)."""
    full = _videos(scores, labels, snippet_frames)
    masked = _videos(masked_scores, labels, snippet_frames)
    names = _classes(full, classes)
    check_arg(cls in names, "cls", cls, f"a class of an abnormal video: {', '.join(map(str, names))}")
    return auc(*_class_frames(masked, classes, cls)) - auc(*_class_frames(full, classes, cls))
