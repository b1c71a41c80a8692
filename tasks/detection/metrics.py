"""Metrics of DAMEX, a dataset-aware mixture-of-experts detector trained on a mix of detection datasets: box AP
per dataset, and how the router spreads each dataset's tokens over the experts.

:func:`detection_ap` is COCO box AP computed separately on each dataset's images, because the datasets of a mix
differ in difficulty and size and one pooled number would hide a dataset the model neglects. It is torchmetrics'
``MeanAveragePrecision`` on the pycocotools backend, so the COCO rules hold: boxes ``xyxy`` in absolute pixels,
greedy matching in score order, precision interpolated at the 101 recall points ``0, 0.01, …, 1``, at most 100
detections per image, area range "all", AP averaged over the classes and then (``ap``) over the IoU thresholds
``0.5, 0.55, …, 0.95``; ``ap50`` is the IoU 0.5 value. Labels are ids in the unified label space of the mix.
What counts for a dataset: only its own images enter, and a class enters only when it has a ground-truth box
in them (COCO gives a class without ground truth AP −1 and leaves it out of the mean). A prediction of a class
that the dataset's images never contain, such as another dataset's label, therefore changes nothing, while a
prediction of a class the dataset does contain is a false positive in every image where it matches no box of
that class. With disjoint label spaces this is the usual per-dataset COCO evaluation over the dataset's own
categories. A dataset with no ground-truth box in its images (or no image) has AP NaN, not −1 or 0: there is
nothing to detect, so no detector could score there. ``ap_mean`` and ``ap50_mean`` are the unweighted means over
the datasets whose AP is not NaN (NaN when none is), each dataset counting once whatever its size, as DAMEX
reports them.

The routing diagnostics read the top-1 expert of every routed token (one id per token, with the dataset of the
image the token came from) and say whether the router learned the dataset-to-expert mapping DAMEX trains it
towards. :func:`routing_accuracy` is the share of tokens whose top-1 expert is the one their dataset is mapped
to; :func:`matched_routing_accuracy` is the same share under the one-to-one dataset ↔ expert assignment that
maximises it, so it says how dataset-bound the experts are whichever expert a dataset ended up with (vanilla
MoE is never told a mapping); :func:`usage_entropy` is the entropy of the expert usage distribution over all tokens, in nats and divided
by ``log E`` (1 = every expert used equally, 0 = one expert takes every token), which shows collapse onto few
experts; :func:`confusion` is the dataset × expert table of shares (each row sums to 1) that shows where each
dataset's tokens go, and :func:`confusion_figure` draws it as a heatmap. A dataset without tokens gets a NaN
row, and the accuracy and entropy of no tokens at all are NaN. Bad inputs raise
:class:`~zoo.errors.ZooValueError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zoo.errors import ZooValueError, check_arg

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _numpy(x: Any) -> np.ndarray:
    """An array from numpy, lists or torch tensors (detached and moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _tensor(x: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(_numpy(x), dtype=dtype)


def _image(entry: dict[str, Any], i: int, what: str, with_scores: bool) -> dict[str, torch.Tensor]:
    """One image's boxes, labels (and scores), as CPU tensors, with the shapes checked."""
    keys = ("boxes", "scores", "labels") if with_scores else ("boxes", "labels")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ZooValueError(f"{what}[{i}] lacks {', '.join(missing)}; expected a dict with {', '.join(keys)}")
    boxes = _tensor(entry["boxes"], torch.float32)
    out = {"boxes": boxes.reshape(0, 4) if boxes.numel() == 0 else boxes,
           "labels": _tensor(entry["labels"], torch.int64).reshape(-1)}
    if with_scores:
        out["scores"] = _tensor(entry["scores"], torch.float32).reshape(-1)
    n = len(out["labels"])
    if out["boxes"].shape != (n, 4) or (with_scores and len(out["scores"]) != n):
        sizes = {k: tuple(v.shape) for k, v in out.items()}
        raise ZooValueError(f"{what}[{i}] must hold boxes [N, 4] and labels{', scores' if with_scores else ''} [N] "
                            f"with one N, got shapes {sizes}")
    if not torch.isfinite(out["boxes"]).all() or (with_scores and not torch.isfinite(out["scores"]).all()):
        raise ZooValueError(f"{what}[{i}] holds non-finite boxes or scores")
    return out


def _coco_ap(preds: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]]) -> tuple[float, float]:
    """COCO (AP@[.5:.95], AP50) of one set of images; NaN for both when the images hold no ground-truth box."""
    from torchmetrics.detection import MeanAveragePrecision

    if not preds or sum(len(t["labels"]) for t in targets) == 0:
        return math.nan, math.nan
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    metric.warn_on_many_detections = False  # keeping the 100 best per image is the COCO rule, not an accident
    metric.update(preds, targets)
    result = metric.compute()
    return float(result["map"]), float(result["map_50"])


def detection_ap(preds: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]], dataset_ids: Sequence[int] | Any,
                 dataset_names: Sequence[str]) -> dict[str, float]:
    """COCO box AP of every dataset of the mix on its own images, and the means over the datasets.

    Args:
        preds: one dict per image: ``boxes`` [N, 4] xyxy pixels, ``scores`` [N], ``labels`` [N] unified label ids.
        targets: one dict per image, in the same order: ``boxes`` [M, 4] xyxy pixels, ``labels`` [M].
        dataset_ids: [images] index into ``dataset_names`` of the dataset each image comes from.
        dataset_names: the names of the datasets, used in the keys.

    Returns:
        ``ap/<name>`` (AP@[.5:.95]) and ``ap50/<name>`` for every dataset (NaN when its images hold no
        ground-truth box), and ``ap_mean``, ``ap50_mean``: means over the datasets whose AP is not NaN.
    """
    names = list(dataset_names)
    check_arg(len(names) >= 1 and len(set(names)) == len(names), "dataset_names", names,
              "one or more distinct names")
    ids = _numpy(dataset_ids).reshape(-1)
    if not len(preds) == len(targets) == len(ids):
        raise ZooValueError(f"preds, targets and dataset_ids must have one entry per image, got {len(preds)}, "
                            f"{len(targets)} and {len(ids)}")
    if len(ids) and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= len(names)):
        raise ZooValueError(f"dataset_ids must be ints in [0, {len(names)}), got values {sorted(set(ids.tolist()))}")
    p = [_image(d, i, "preds", True) for i, d in enumerate(preds)]
    t = [_image(d, i, "targets", False) for i, d in enumerate(targets)]
    out: dict[str, float] = {}
    for d, name in enumerate(names):
        rows = np.flatnonzero(ids == d)
        out[f"ap/{name}"], out[f"ap50/{name}"] = _coco_ap([p[i] for i in rows], [t[i] for i in rows])
    for key, prefix in (("ap_mean", "ap/"), ("ap50_mean", "ap50/")):
        values = [out[prefix + name] for name in names if not math.isnan(out[prefix + name])]
        out[key] = float(np.mean(values)) if values else math.nan
    return out


def _tokens(expert_ids: Any, num_experts: int | None, dataset_ids: Any = None,
            num_datasets: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Top-1 expert ids [T] (and dataset ids [T]) as int64, checked against their ranges (ids >= 0 only where
    the count is None)."""
    check_arg(num_experts is None or (isinstance(num_experts, int | np.integer) and num_experts >= 1),
              "num_experts", num_experts, "an int >= 1")
    experts = _numpy(expert_ids)
    if experts.ndim != 1 or (experts.size and not np.issubdtype(experts.dtype, np.integer)):
        raise ZooValueError(f"expert_ids must be [T] ints (the top-1 expert of each token), got shape "
                            f"{experts.shape} of {experts.dtype}")
    experts = experts.astype(np.int64)
    if experts.size and (experts.min() < 0 or experts.max() >= (num_experts or np.iinfo(np.int64).max)):
        raise ZooValueError(f"expert_ids must lie in [0, {num_experts or 'inf'}), got {experts.min()}.."
                            f"{experts.max()}")
    if dataset_ids is None:
        return experts, None
    datasets = _numpy(dataset_ids)
    if datasets.shape != experts.shape or (datasets.size and not np.issubdtype(datasets.dtype, np.integer)):
        raise ZooValueError(f"dataset_ids must be [T] ints like expert_ids {experts.shape}, got shape "
                            f"{datasets.shape} of {datasets.dtype}")
    datasets = datasets.astype(np.int64)
    if num_datasets is not None and datasets.size and (datasets.min() < 0 or datasets.max() >= num_datasets):
        raise ZooValueError(f"dataset_ids must lie in [0, {num_datasets}), got {datasets.min()}..{datasets.max()}")
    return experts, datasets


def routing_accuracy(expert_ids: Any, dataset_ids: Any, expected_expert: Sequence[int]) -> float:
    """Share of tokens whose top-1 expert is the expert their dataset is mapped to (NaN without tokens).

    Args:
        expert_ids: [T] top-1 expert of each token.
        dataset_ids: [T] dataset of each token, an index into ``expected_expert``.
        expected_expert: the expert each dataset is mapped to.
    """
    expected = np.asarray(list(expected_expert), dtype=np.int64)
    check_arg(expected.size >= 1 and expected.min() >= 0, "expected_expert", list(expected_expert),
              "one expert id >= 0 per dataset")
    experts, datasets = _tokens(expert_ids, None, dataset_ids, len(expected))
    if not experts.size:
        return math.nan
    return float(np.mean(experts == expected[datasets]))


def matched_routing_accuracy(expert_ids: Any, dataset_ids: Any, num_experts: int, num_datasets: int) -> float:
    """Share of tokens routed to their dataset's expert under the best one-to-one dataset ↔ expert assignment
    (Hungarian, on the token counts; with fewer experts than datasets some datasets get none). NaN without tokens.

    Args:
        expert_ids: [T] top-1 expert of each token.
        dataset_ids: [T] dataset of each token.
        num_experts: E.
        num_datasets: D.
    """
    from scipy.optimize import linear_sum_assignment

    check_arg(isinstance(num_datasets, int | np.integer) and num_datasets >= 1, "num_datasets", num_datasets,
              "an int >= 1")
    experts, datasets = _tokens(expert_ids, num_experts, dataset_ids, num_datasets)
    if not experts.size:
        return math.nan
    counts = np.bincount(datasets * num_experts + experts, minlength=num_datasets * num_experts)
    counts = counts.reshape(num_datasets, num_experts)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / experts.size)


def usage_entropy(expert_ids: Any, num_experts: int) -> tuple[float, float]:
    """Entropy of the share of tokens each expert takes as top-1, in nats and divided by ``log num_experts``.

    Args:
        expert_ids: [T] top-1 expert of each token.
        num_experts: E, the number of experts.

    Returns:
        ``(nats, normalised)``: ``normalised`` is 1 when every expert takes the same share and 0 when one
        takes all; NaN with a single expert. Both are NaN without tokens.
    """
    experts, _ = _tokens(expert_ids, num_experts)
    if not experts.size:
        return math.nan, math.nan
    share = np.bincount(experts, minlength=num_experts) / experts.size
    used = share[share > 0]
    nats = float(-(used * np.log(used)).sum())
    return nats, nats / math.log(num_experts) if num_experts > 1 else math.nan


def confusion(expert_ids: Any, dataset_ids: Any, num_experts: int, num_datasets: int) -> np.ndarray:
    """[num_datasets, num_experts] share of each dataset's tokens that each expert takes as top-1.

    Args:
        expert_ids: [T] top-1 expert of each token.
        dataset_ids: [T] dataset of each token.
        num_experts: E, the number of columns.
        num_datasets: D, the number of rows.

    Returns:
        float64 rows that sum to 1; the row of a dataset without tokens is NaN.
    """
    check_arg(isinstance(num_datasets, int | np.integer) and num_datasets >= 1, "num_datasets", num_datasets,
              "an int >= 1")
    experts, datasets = _tokens(expert_ids, num_experts, dataset_ids, num_datasets)
    counts = np.bincount(datasets * num_experts + experts, minlength=num_datasets * num_experts)
    counts = counts.reshape(num_datasets, num_experts).astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        return counts / totals


def confusion_figure(matrix: Any, dataset_names: Sequence[str], num_experts: int) -> Figure:
    """Heatmap of a :func:`confusion` table: rows = datasets, columns = experts, cells annotated while the grid is
    small, one colour bar; NaN rows (datasets without tokens) are grey.

    Args:
        matrix: [len(dataset_names), num_experts] shares.
        dataset_names: the row labels.
        num_experts: E, the number of columns.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    names = [str(n) for n in dataset_names]
    values = _numpy(matrix).astype(np.float64)
    if values.shape != (len(names), num_experts):
        raise ZooValueError(f"confusion matrix must be [{len(names)} datasets, {num_experts} experts], got shape "
                            f"{values.shape}")
    width = max(3.6, 0.34 * num_experts + 1.6) + 0.07 * max(len(n) for n in names)
    height = max(2.6, 0.32 * len(names) + 1.4)
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(values), vmin=0, vmax=1, cmap=cmap, aspect="auto")
    ax.set_yticks(np.arange(len(names)), labels=names, fontsize=8)
    step = max(1, math.ceil(num_experts / 32))
    ticks = np.arange(0, num_experts, step)
    ax.set_xticks(ticks, labels=[str(e) for e in ticks], fontsize=7, rotation=90 if len(ticks) > 16 else 0)
    ax.set(xlabel="top-1 expert", ylabel="dataset", title="share of each dataset's tokens per expert")
    if values.size <= 64 and num_experts <= 12:
        for (d, e), v in np.ndenumerate(values):
            if not math.isnan(v):
                ax.text(e, d, f"{v:.0%}", ha="center", va="center", fontsize=7, color="black" if v > 0.6 else "white")
    fig.colorbar(image, ax=ax, shrink=0.9, label="share of the dataset's tokens")
    return fig
