"""``DetectionModule``: the DETR set objective with the row's routing loss over a :mod:`.models` detector.

A training step reads a :class:`~.data.DetBatch`, runs the detector (with each image's expert for oracle routing and
one detector per dataset, and its dataset's labels for per-dataset heads) and minimises the Hungarian set loss of
every decoder layer plus the routing loss (DAMEX or vanilla importance + load); each named part is logged as
``train/<part>``. The split-FFN row trains its MoE FFNs dense for ``model.split_epochs`` epochs, then sparsifies
them at the start of the next epoch (also after a resume). There is no validation split: the last epoch is kept
and tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from zoo.errors import check_arg
from zoo.module import StepOutput, ZooModule
from zoo.optim import OptimConfig

from .config import DetectionConfig, ModelConfig
from .data import DetBatch
from .losses import objective
from .models import DetOutput, build_detector


def class_masks(info: Mapping[str, Any]) -> torch.Tensor:
    """``[datasets, classes]`` True where a unified label belongs to the dataset."""
    masks = torch.zeros(len(info["datasets"]), len(info["classes"]), dtype=torch.bool)
    for k, labels in enumerate(info["dataset_labels"]):
        masks[k, list(labels)] = True
    return masks


class DetectionModule(ZooModule):
    """Trains a detector of ``model_cfg`` on a dataset mix described by the model info.

    Args:
        model: the detector of :func:`~.models.build_detector`.
        model_cfg: its config (the objective's terms).
        info: the model info (datasets, their experts and labels).
        optim: optimizer config.
    """

    def __init__(self, model: torch.nn.Module, model_cfg: ModelConfig, info: Mapping[str, Any],
                 optim: OptimConfig | None = None) -> None:
        super().__init__(model, optim=optim)
        self.model_cfg = model_cfg
        self.info = dict(info)
        self.num_experts = int(info["num_experts"])
        self.register_buffer("dataset_masks", class_masks(info), persistent=False)

    def run(self, images: torch.Tensor, dataset_ids: torch.Tensor, expert_ids: torch.Tensor) -> DetOutput:
        """The detector's output for images of known datasets (their labels and experts are used only by the rows
        that are allowed to: per-dataset heads, oracle routing, one model per dataset)."""
        mask = self.dataset_masks[dataset_ids] if self.model_cfg.dataset_heads else None
        if self.model_cfg.per_dataset:
            return self.model(images, dataset_ids, mask)
        return self.model(images, expert_ids if self.model_cfg.routing == "oracle" else None, mask)

    def on_train_epoch_start(self) -> None:
        if self.model_cfg.decoder == "split" and self.current_epoch >= self.model_cfg.split_epochs:
            self.model.sparsify()

    def step(self, batch: DetBatch) -> StepOutput:
        out = self.run(batch.images, batch.dataset_ids, batch.expert_ids)
        loss, parts = objective(out, batch.targets, batch.expert_ids, self.model_cfg, self.num_experts)
        for name, value in parts.items():
            self.log(f"train/{name}", value.detach(), on_step=False, on_epoch=True, batch_size=len(batch),
                     sync_dist=self.sync_dist)
        return StepOutput(loss, aux=out.aux, stats=out.stats, batch_size=len(batch))


def build_module(cfg: DetectionConfig, info: Mapping[str, Any]) -> DetectionModule:
    """The ``model.*`` detector for the info's unified classes, experts and input size."""
    num_experts = cfg.model.num_experts or int(info["num_experts"])
    if cfg.model.routing_loss == "damex" or cfg.model.routing == "oracle":
        check_arg(num_experts >= int(info["num_experts"]), "model.num_experts", num_experts,
                  f">= {info['num_experts']}, the experts the mix maps its datasets to")
    network = build_detector(cfg.model, len(info["classes"]), num_experts, int(info["image_size"]),
                             len(info["datasets"]))
    return DetectionModule(network, cfg.model, {**info, "num_experts": num_experts}, cfg.optim)
