"""``VADModule``: the weakly supervised objective of :mod:`.losses` over a :mod:`.models` network.

Every training step reads a :class:`~.batch.VADBatch` of normal and abnormal videos and minimises the row's
objective (MIL ranking, top-k MIL, magnitude margin, memory terms, class-expert and gate losses, TGS
pseudo-labels after the MIL-only warm-up epochs); each named part of it is logged as ``train/<part>``. There is no
validation split: weak supervision has no snippet labels to select an epoch with, so the last epoch is kept and
tested, as the published baselines do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zoo.module import StepOutput, ZooModule
from zoo.optim import OptimConfig

from .batch import VADBatch
from .config import ModelConfig, VideoAnomalyConfig
from .losses import objective
from .models import build_network


class VADModule(ZooModule):
    """Trains a video anomaly network; ``model_cfg`` picks the objective's terms."""

    def __init__(self, model: Any, model_cfg: ModelConfig, optim: OptimConfig | None = None) -> None:
        super().__init__(model, optim=optim)
        self.model_cfg = model_cfg

    def step(self, batch: VADBatch) -> StepOutput:
        out = self.model(batch.x, batch.mask)
        loss, parts = objective(self.model_cfg, out, batch, self.current_epoch)
        for name, value in parts.items():
            self.log(f"train/{name}", value.detach(), on_step=False, on_epoch=True, batch_size=len(batch),
                     sync_dist=self.sync_dist)
        return StepOutput(loss, aux=out.aux, stats=out.stats, batch_size=len(batch))


def build_module(cfg: VideoAnomalyConfig, info: Mapping[str, Any]) -> VADModule:
    """The ``model.arch`` network for features of ``info['dim']`` with one expert per ``info['experts']`` name."""
    network = build_network(cfg.model, int(info["dim"]), max(1, len(info["experts"])))
    return VADModule(network, cfg.model, cfg.optim)
