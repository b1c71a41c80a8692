"""``ZooModule``: the LightningModule every task trains through.

It owns the parts every MoE task shares: the objective ``task loss + Σ auxiliary losses`` (the aux losses travel
up from each :class:`~zoo.moe.MoELayer` in the model's output, never through hidden state), per-stage
torchmetrics, the optimizer and schedule from :class:`OptimConfig`, and the per-optimizer-step router updates
(aux-loss-free bias, dense-to-sparse temperature). Routing statistics are returned from ``training_step`` for
:class:`zoo.callbacks.ExpertStatsCallback` to log and plot.

A task either passes a model whose ``forward(x)`` returns a tensor or a :class:`ModelOutput` together with a
``loss_fn`` (batches are ``(x, y)``), or subclasses and overrides :meth:`ZooModule.step`. Under DDP the logged
losses are reduced over the ranks (``sync_dist``) and the torchmetrics sync their states, so the epoch metrics of
rank 0 (the ones written) are those of the whole split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import Metric, MetricCollection

from zoo.callbacks import save_checkpoint
from zoo.errors import ZooValueError, check_arg
from zoo.moe import ExpertStats, Router, on_optimizer_step, total_aux_loss
from zoo.optim import OptimConfig, lr_lambda

STAGES = ("train", "val", "test")


@dataclass
class ModelOutput:
    """What an MoE task model returns: its prediction plus the aux losses and stats of its MoE layers.

    ``extras`` carries task-specific tensors a loss needs (e.g. per-expert forecasts and their gates).
    """

    pred: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, ExpertStats] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class StepOutput:
    """One step's task loss, predictions and targets for metrics, and the model's aux losses and stats.

    ``metric_kwargs`` are extra keyword inputs for metrics that need more than ``(preds, target)`` (e.g. a
    per-sample MASE scale); a MetricCollection passes each metric only the keywords its ``update`` accepts.
    """

    loss: torch.Tensor
    preds: torch.Tensor | None = None
    target: torch.Tensor | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, ExpertStats] = field(default_factory=dict)
    batch_size: int | None = None
    metric_kwargs: dict[str, torch.Tensor] = field(default_factory=dict)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into decayed (matrices, expert banks) and not decayed (routers, biases, norms)."""
    router_params = {id(p) for m in model.modules() if isinstance(m, Router) for p in m.parameters()}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in router_params else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class ZooModule(L.LightningModule):
    """Base LightningModule: task loss + Σ aux losses, per-stage metrics, optimizer from config.

    Args:
        model: the task network. Its ``forward(x)`` returns a tensor or a :class:`ModelOutput`.
        loss_fn: task loss ``loss_fn(pred, target)`` used by the default :meth:`step`.
        optim: optimizer/scheduler config.
        metrics: torchmetrics computed per stage on ``(preds, target)``; each stage gets its own copy
            (``train/…``, ``val/…``, ``test/…``) so their states never mix.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        optim: OptimConfig | None = None,
        metrics: Mapping[str, Metric] | MetricCollection | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.optim = optim or OptimConfig()
        self.save_hyperparameters({"optim": asdict(self.optim)})
        collection = MetricCollection(dict(metrics)) if isinstance(metrics, Mapping) else metrics
        self.train_metrics = collection.clone(prefix="train/") if collection is not None else None
        self.val_metrics = collection.clone(prefix="val/") if collection is not None else None
        self.test_metrics = collection.clone(prefix="test/") if collection is not None else None
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None

    def selection_score(self) -> float | None:
        """This validation epoch's model-selection score (higher is better); None, the default, keeps the last
        epoch. A task that returns a score gets the weights of its best epoch restored when fitting ends and saved
        as ``checkpoints/best.ckpt`` in the run, which ``zoo weights publish`` prefers to ``last.ckpt``, so test
        metrics and published weights come from the same epoch."""
        return None

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        score = self.selection_score()
        if score is not None and (self.best_score is None or score > self.best_score):
            self.best_score, self.best_epoch = score, self.current_epoch
            self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def on_fit_end(self) -> None:
        if self._best_state is None:
            return
        self.model.load_state_dict(self._best_state)
        checkpoints = Path(self.trainer.default_root_dir) / "checkpoints"
        if checkpoints.is_dir():
            save_checkpoint(self.trainer, checkpoints / "best.ckpt", weights_only=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A resumable checkpoint carries the best epoch so far (score, epoch, weights): a resumed run then keeps
        the same epoch an uninterrupted one would. A weights-only one (``best.ckpt``) resumes nothing."""
        if self._best_state is not None and "optimizer_states" in checkpoint:
            checkpoint["best_epoch"] = {"score": self.best_score, "epoch": self.best_epoch, "state_dict": self._best_state}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        best = checkpoint.get("best_epoch")
        if best is not None:
            self.best_score, self.best_epoch, self._best_state = best["score"], best["epoch"], best["state_dict"]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def step(self, batch: Any) -> StepOutput:
        """Default step for ``(x, y)`` batches; tasks with richer batches override this."""
        check_arg(self.loss_fn is not None, "loss_fn", None, "a loss function, or a subclass overriding step()")
        x, y = batch
        out = self.model(x)
        if not isinstance(out, ModelOutput):
            out = ModelOutput(out)
        return StepOutput(self.loss_fn(out.pred, y), out.pred.detach(), y, out.aux, out.stats, batch_size=len(y))

    def _metrics(self, stage: str) -> MetricCollection | None:
        return {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}[stage]

    @property
    def sync_dist(self) -> bool:
        """Whether logged values are reduced over the ranks (``self.log(..., sync_dist=...)``): True in a world of
        more than one rank, so epoch values are those of the whole split, not rank 0's share of it."""
        trainer = self._trainer
        return trainer is not None and trainer.world_size > 1

    def _shared_step(self, batch: Any, stage: str) -> dict[str, Any]:
        out = self.step(batch)
        aux = total_aux_loss(out.aux)
        loss = out.loss if aux is None else out.loss + aux
        log = {"batch_size": out.batch_size, "on_step": stage == "train", "on_epoch": True, "sync_dist": self.sync_dist}
        self.log(f"{stage}/loss", loss, prog_bar=True, **log)
        self.log(f"{stage}/task_loss", out.loss, **log)
        for name, value in out.aux.items():
            self.log(f"{stage}/aux/{name}", value, **log)
        metrics = self._metrics(stage)
        if metrics is not None and out.preds is not None:
            metrics.update(out.preds, out.target, **out.metric_kwargs)
            self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=out.batch_size)
        return {"loss": loss, "expert_stats": out.stats}

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._shared_step(batch, "test")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        on_optimizer_step(self.model, self.global_step)

    def optimized(self) -> nn.Module:
        """The module whose parameters the optimizer trains: the model (a task that trains parts outside it, such
        as a pretext head, returns the whole LightningModule)."""
        return self.model

    def configure_optimizers(self) -> Any:
        cfg = self.optim
        groups = param_groups(self.optimized(), cfg.weight_decay)
        if cfg.name == "sgd":
            optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
        else:
            cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
            optimizer = cls(groups, lr=cfg.lr, betas=cfg.betas)
        if cfg.scheduler == "none" and cfg.warmup_steps == 0:
            return optimizer
        total = cfg.max_steps or self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ZooValueError("optim.scheduler needs a finite horizon: set optim.max_steps or trainer.max_steps/max_epochs")
        total = int(total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
