"""``RecsysModule``: the multi-task objective over a :mod:`.models` network.

Loss = Σ_t L_t (+ the model's already-weighted auxiliary losses, e.g. AW-MoE's InfoNCE, added by
:class:`~zoo.module.ZooModule`), where L_t is the binary cross-entropy of task t averaged over the batch rows whose
label is defined (``label_mask``; MovieLens's rating tasks are undefined on sampled negatives) — or the squared
error for the MMoE synthetic regression. A task with no defined label in a batch contributes 0. HoME and MMoE
sum the task losses with equal weights; so do we.

The epoch with the lowest validation loss is kept (``ZooModule.selection_score``): its weights are restored when
fitting ends and saved as ``checkpoints/best.ckpt``, so the test metrics and published weights are those. With
``early_stopping.patience`` set, Lightning's ``EarlyStopping`` on the same loss (logged as ``val/epoch_loss``)
ends training once it has not improved for that many epochs, ``trainer.max_epochs`` being the cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning.pytorch.callbacks import Callback, EarlyStopping

from zoo.module import StepOutput, ZooModule
from zoo.optim import OptimConfig

from .config import EarlyStoppingConfig, RecsysConfig
from .models import InputSpec, RecsysModel, build_model

EPOCH_LOSS = "val/epoch_loss"  # the row-weighted validation loss of an epoch: early stopping and the kept epoch


def masked_task_losses(pred_BT: torch.Tensor, labels_BT: torch.Tensor, mask_BT: torch.Tensor,
                       regression: bool = False) -> torch.Tensor:
    """Per-task loss ``[T]``: mean BCE-with-logits (or squared error) over the rows where ``mask_BT`` is True;
    0 for a task without such rows. Masked labels never reach the loss, whatever their value."""
    pred, labels = pred_BT.float(), labels_BT.float()
    m = mask_BT.to(pred.dtype)
    safe = torch.where(mask_BT, labels, torch.zeros_like(labels))  # masked labels may be anything (NaN included)
    if regression:
        elem = (pred - safe) ** 2
    else:
        elem = F.binary_cross_entropy_with_logits(pred, safe, reduction="none")
    return (elem * m).sum(0) / m.sum(0).clamp_min(1.0)


class RecsysModule(ZooModule):
    """One row batch per step (see :mod:`.data`); keeps the best validation epoch."""

    def __init__(self, model: nn.Module, optim: OptimConfig | None = None, *, tasks: tuple[str, ...] = (),
                 regression: bool = False, early_stopping: EarlyStoppingConfig | None = None) -> None:
        super().__init__(model, optim=optim)
        self.tasks, self.regression = tuple(tasks), regression
        self.early_stopping = early_stopping or EarlyStoppingConfig()
        self.epochs_run = 0
        self._val_sum, self._val_rows = 0.0, 0

    def configure_callbacks(self) -> list[Callback]:
        """``EarlyStopping`` on ``val/epoch_loss`` when ``early_stopping.patience`` is set (checked after each
        validation epoch only, so a run without validation never stops early)."""
        stop = self.early_stopping
        if stop.patience is None:
            return []
        return [EarlyStopping(monitor=EPOCH_LOSS, mode="min", patience=stop.patience, min_delta=stop.min_delta,
                              check_on_train_epoch_end=False)]

    def step(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        out = self.model(batch)
        per_task = masked_task_losses(out.pred, batch["labels"], batch["label_mask"], self.regression)
        return StepOutput(per_task.sum(), None, None, out.aux, out.stats, batch_size=int(batch["labels"].shape[0]))

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_rows = 0.0, 0

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict:
        out = super().validation_step(batch, batch_idx)
        n = int(batch["labels"].shape[0])
        self._val_sum += float(out["loss"]) * n
        self._val_rows += n
        return out

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking and self._val_rows:
            self.epochs_run += 1
            self.log(EPOCH_LOSS, self._val_sum / self._val_rows, sync_dist=self.sync_dist)
        super().on_validation_epoch_end()

    def selection_score(self) -> float | None:
        """Minus the validation loss of the epoch (row-weighted mean), so the lowest loss is kept."""
        return -self._val_sum / self._val_rows if self._val_rows else None

    @property
    def best_loss(self) -> float | None:
        return None if self.best_score is None else -self.best_score


def build_network(cfg: RecsysConfig, info: Mapping[str, Any]) -> RecsysModel:
    """The ``model.arch`` network sized by the info's inputs and tasks (HoME grouped as the data says)."""
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.arch == "home":
        kwargs.setdefault("task_groups", info["task_groups"])
    spec = InputSpec(embed_dim=cfg.model.embed_dim, **info["inputs"])
    return build_model(cfg.model.arch, spec, len(info["tasks"]), **kwargs)


def build_module(cfg: RecsysConfig, info: Mapping[str, Any]) -> RecsysModule:
    return RecsysModule(build_network(cfg, info), cfg.optim, tasks=tuple(info["tasks"]),
                        regression=bool(info["regression"]), early_stopping=cfg.early_stopping)
