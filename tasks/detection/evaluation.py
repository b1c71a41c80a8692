"""Test-split evaluation: detect on every test image of the mix, then COCO AP per dataset and the routing
diagnostics of the MoE decoder layers.

Metrics (all under ``test/``): ``ap/<dataset>``, ``ap50/<dataset>``, their means ``ap_mean``, ``ap50_mean`` and
``ap50_small2``, the mean AP50 of the two datasets with the fewest training images. For routed decoders:
``routing_acc`` (the MoE decoder: share of decoder tokens whose top-1 expert is their dataset's expert; a learned
router is given no dataset label, the oracle scores 1 by construction), ``routing_acc_matched`` (the same under the
best one-to-one dataset ↔ expert assignment, which also scores routers never told the mapping), ``usage_entropy``
(nats) and ``usage_entropy_norm`` (divided by log E), each averaged over the MoE layers. ``images_per_s`` is the
inference throughput of the pass. The expert × dataset confusion (plot ``confusion.png``, table ``confusion.npz``)
and a grid of test detections (``detections.png``) are written to the run directory.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.io import atomic_write_bytes, figure_png, write_figure

from . import metrics as M
from .data import DetectionDataModule
from .models import postprocess

CONFUSION_FILE = "confusion.png"
CONFUSION_TABLE = "confusion.npz"
EXAMPLES_FILE = "detections.png"
EXAMPLES = 8
EXAMPLE_SCORE = 0.3  # boxes drawn in the examples grid


@torch.inference_mode()
def detect(module: Any, loader: Any) -> dict[str, Any]:
    """Predictions, targets, dataset ids and per MoE layer the expert each query went to first ``[images, Q]``
    (the router's top choice, or the dataset's expert under oracle routing) for every test image."""
    module.eval()
    preds: list[dict[str, torch.Tensor]] = []
    targets: list[dict[str, torch.Tensor]] = []
    datasets: list[torch.Tensor] = []
    chosen: dict[str, list[torch.Tensor]] = {}
    images_seen, start = 0, time.perf_counter()
    for batch in loader:
        out = module.run(batch.images, batch.dataset_ids, batch.expert_ids)
        size = batch.images.shape[-1]
        sizes = torch.tensor([[size, size]] * len(batch))
        preds += postprocess(out, sizes)
        targets += batch.targets
        datasets.append(batch.dataset_ids)
        for layer, ids in out.chosen.items():
            chosen.setdefault(layer, []).append(ids)
        images_seen += len(batch)
    seconds = time.perf_counter() - start
    return {"preds": preds, "targets": targets, "dataset_ids": torch.cat(datasets).numpy(),
            "chosen": {layer: torch.cat(ids).numpy() for layer, ids in chosen.items()},
            "images_per_s": images_seen / max(seconds, 1e-9)}


def routing_metrics(chosen: Mapping[str, np.ndarray], dataset_ids: np.ndarray, info: Mapping[str, Any],
                    num_experts: int, mapped: bool) -> tuple[dict[str, float], np.ndarray | None]:
    """Routing accuracy (the MoE decoder, whose experts the mix maps datasets to), matched routing accuracy and
    usage entropy, averaged over the MoE layers, and the layers' mean expert × dataset confusion; ``num_experts``
    is the routers' width (the split decoder's groups, not the mix's experts)."""
    if not chosen:
        return {}, None
    queries = next(iter(chosen.values())).shape[1]
    token_datasets = np.repeat(dataset_ids, queries)
    acc, matched, nats, norm, tables = [], [], [], [], []
    for ids in chosen.values():
        flat = ids.reshape(-1)
        if mapped:
            acc.append(M.routing_accuracy(flat, token_datasets, info["experts"]))
        matched.append(M.matched_routing_accuracy(flat, token_datasets, num_experts, len(info["datasets"])))
        entropy = M.usage_entropy(flat, num_experts)
        nats.append(entropy[0])
        norm.append(entropy[1])
        tables.append(M.confusion(flat, token_datasets, num_experts, len(info["datasets"])))
    out = {"test/usage_entropy": float(np.mean(nats)), "test/usage_entropy_norm": float(np.mean(norm)),
           "test/routing_acc_matched": float(np.mean(matched))}
    if acc:
        out["test/routing_acc"] = float(np.mean(acc))
    return out, np.mean(tables, axis=0)


def smallest_ap50(ap: Mapping[str, float], info: Mapping[str, Any], count: int = 2) -> float:
    """Mean AP50 of the ``count`` datasets with the fewest training images (ties: mix order)."""
    order = np.argsort(np.asarray(info["train_sizes"]), kind="stable")[:count]
    values = [ap[f"ap50/{info['datasets'][i]}"] for i in order]
    return float(np.nanmean(values)) if not all(np.isnan(values)) else float("nan")


def examples_png(dm: DetectionDataModule, result: Mapping[str, Any], info: Mapping[str, Any]) -> bytes:
    """A grid of one test image per dataset (up to :data:`EXAMPLES`) with its predicted and true boxes."""

    from .plots import examples_figure
    from .transforms import letterbox

    assert dm.test is not None
    samples = []
    ids = result["dataset_ids"]
    for k, name in enumerate(info["datasets"][:EXAMPLES]):
        rows = np.flatnonzero(ids == k)
        if not len(rows):
            continue
        i = int(rows[0])
        sample, _ = dm.test[i]
        image, _, _ = letterbox(sample.image, None, int(info["image_size"]))
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        keep = result["preds"][i]["scores"] >= EXAMPLE_SCORE
        pred = {key: value[keep] for key, value in result["preds"][i].items()}
        samples.append((pixels, pred, result["targets"][i], name))
    return figure_png(examples_figure(samples, info["classes"]), dpi=110)


def evaluate(cfg: Any, trainer: Any, module: Any, dm: DetectionDataModule) -> dict[str, float]:
    """The test metrics of the module doc; writes the confusion and example plots next to the run's checkpoints."""
    dm.setup("test")
    info = module.info
    result = detect(module, dm.test_dataloader())
    ap = M.detection_ap(result["preds"], result["targets"], result["dataset_ids"], info["datasets"])
    out = {f"test/{key}": value for key, value in ap.items()}
    out["test/ap50_small2"] = smallest_ap50(ap, info)
    mapped = cfg.model.decoder == "moe"
    width = module.model_cfg.split_groups if cfg.model.decoder == "split" else module.num_experts
    routing, table = routing_metrics(result["chosen"], result["dataset_ids"], info, width, mapped)
    out.update(routing)
    out["test/images_per_s"] = result["images_per_s"]
    run_dir = Path(trainer.default_root_dir)
    if run_dir.is_dir():
        import io

        if table is not None:
            write_figure(run_dir / CONFUSION_FILE, M.confusion_figure(table, info["datasets"], width), dpi=110)
            table_bytes = io.BytesIO()
            np.savez(table_bytes, matrix=table, datasets=np.array(info["datasets"]))
            atomic_write_bytes(run_dir / CONFUSION_TABLE, table_bytes.getvalue())
        atomic_write_bytes(run_dir / EXAMPLES_FILE, examples_png(dm, result, info))
    return out
