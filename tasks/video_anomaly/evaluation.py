"""Test-split evaluation: score every test video (all crops, averaged), then the frame-level metrics of
:mod:`.metrics` over the concatenated frames, per-class AUC and, for class experts, what masking each expert does.

Metrics (all under ``test/``): ``auc``, ``ap`` (frames of all test videos), ``auc_a``, ``ap_a`` (abnormal videos
only), ``auc/<class>`` (the class's videos + all normal ones) and ``worst_class_auc``. With one expert per class:
``masked_auc/<class>`` (AUC_c with expert c masked), ``delta_auc/<class>`` = ΔAUC_c, their mean
``delta_auc_mean`` and ``delta_auc_others``, the mean change of the *other* classes' AUC when one expert is
masked (small when the experts are specific). The scores of every test video are written to the run directory
(``test_scores.npz``) for the board's plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.io import atomic_write_bytes

from . import metrics as M
from .config import EXPERT_ARCHS
from .data import TEST_BATCH, VADDataModule, pad_videos
from .features import Video

SCORES_FILE = "test_scores.npz"


@torch.inference_mode()
def score_videos(network: torch.nn.Module, videos: Sequence[Video], expert_mask: torch.Tensor | None = None,
                 batch_size: int = TEST_BATCH) -> list[np.ndarray]:
    """Per video, its snippet scores ``[T]``: the network's scores of every crop, averaged."""
    network.eval()
    crops = videos[0].features.shape[1] if videos else 0
    sums = [np.zeros(len(v.features)) for v in videos]
    for crop in range(crops):
        for start in range(0, len(videos), batch_size):
            chunk = videos[start:start + batch_size]
            batch = pad_videos(chunk, crop)
            kwargs = {} if expert_mask is None else {"expert_mask": expert_mask}
            scores = network(batch.x, batch.mask, **kwargs).scores.double().numpy()
            for i, v in enumerate(chunk):
                sums[start + i] += scores[i, :len(v.features)]
    return [s / crops for s in sums]


def video_metrics(scores: Sequence[np.ndarray], videos: Sequence[Video]) -> dict[str, float]:
    """AUC, AP, AUC_A, AP_A, per-class AUC and the worst of them."""
    labels = [v.frame_labels for v in videos]
    out = {"test/auc": M.frame_auc(scores, labels), "test/ap": M.frame_ap(scores, labels),
           "test/auc_a": M.abnormal_auc(scores, labels), "test/ap_a": M.abnormal_ap(scores, labels)}
    per_class = M.class_auc(scores, labels, [v.cls for v in videos])
    out.update({f"test/auc/{c}": value for c, value in per_class.items()})
    finite = [value for value in per_class.values() if np.isfinite(value)]
    out["test/worst_class_auc"] = min(finite) if finite else float("nan")
    return out


def masking_metrics(network: torch.nn.Module, scores: Sequence[np.ndarray], videos: Sequence[Video],
                    experts: Sequence[str]) -> dict[str, float]:
    """For each class expert c: AUC_c with c masked, ΔAUC_c, and the other classes' mean ΔAUC."""
    labels, classes = [v.frame_labels for v in videos], [v.cls for v in videos]
    full_auc = M.class_auc(scores, labels, classes)
    out: dict[str, float] = {}
    own, others = [], []
    for e, name in enumerate(experts):
        if name not in full_auc:
            continue
        keep = torch.ones(len(experts), dtype=torch.bool)
        keep[e] = False
        masked_auc = M.class_auc(score_videos(network, videos, keep), labels, classes)
        out[f"test/masked_auc/{name}"] = masked_auc[name]
        out[f"test/delta_auc/{name}"] = masked_auc[name] - full_auc[name]
        own.append(out[f"test/delta_auc/{name}"])
        others += [masked_auc[c] - full_auc[c] for c in full_auc if c != name]
    if own:
        out["test/delta_auc_mean"] = float(np.mean(own))
        out["test/delta_auc_others"] = float(np.mean(others)) if others else float("nan")
    return out


def save_scores(path: Path, scores: Sequence[np.ndarray], videos: Sequence[Video]) -> None:
    """Snippet scores and labels of every test video, concatenated, with names, classes and lengths."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, names=np.array([v.name for v in videos]), classes=np.array([v.cls for v in videos]),
        lengths=np.array([len(s) for s in scores]), scores=np.concatenate(scores).astype(np.float32),
        labels=np.concatenate([v.snippet_labels for v in videos]).astype(np.uint8))
    atomic_write_bytes(path, buffer.getvalue())


def load_scores(path: Path) -> dict[str, Any]:
    """What :func:`save_scores` wrote: per-video lists ``scores``, ``labels`` and arrays ``names``, ``classes``."""
    with np.load(path, allow_pickle=False) as data:
        cuts = np.cumsum(data["lengths"])[:-1]
        return {"names": data["names"].tolist(), "classes": data["classes"].tolist(),
                "scores": np.split(data["scores"], cuts), "labels": np.split(data["labels"], cuts)}


def evaluate(cfg: Any, trainer: Any, module: Any, dm: VADDataModule) -> dict[str, float]:
    """The test metrics of the module doc; writes the test scores next to the run's checkpoints."""
    dm.setup("test")
    videos = dm.test.videos
    network = module.model
    scores = score_videos(network, videos)
    out = video_metrics(scores, videos)
    if cfg.model.arch in EXPERT_ARCHS and cfg.model.experts == "class":
        out.update(masking_metrics(network, scores, videos, dm.expert_names))
    run_dir = Path(trainer.default_root_dir)
    if run_dir.is_dir():
        save_scores(run_dir / SCORES_FILE, scores, videos)
    return out
