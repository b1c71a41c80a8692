"""``NerfModule``: photometric training of a :class:`~.models.RadianceField` on random ray batches.

A step renders its rays (:func:`~.render.render_rays`, jittered samples) and minimises the mean squared colour
error plus the field's balance loss. The module keeps, in checkpointed buffers updated right after each optimizer
step, the wall-clock seconds from the start of each batch to the end of its optimizer step (forward, backward,
step), when the running training PSNR (of an exponential mean of the batch MSE) first reached
``eval.target_psnr``, and the mean share of points the capacity limit dropped in the trained pass, so a resumed run
reports the same figures as an uninterrupted one, up to timing noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import torch

from zoo.module import StepOutput, ZooModule

from .config import NerfConfig
from .models import RadianceField
from .render import RenderOutput, render_rays

#: Weight of the newest batch in the running training MSE.
EMA = 0.05


def mse_to_psnr(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-10))


class NerfModule(ZooModule):
    """Trains a radiance field.

    Args:
        model: the field.
        cfg: the task config (render, eval and optim sections are used).
        info: the model info (:func:`~.data.model_info`).
    """

    def __init__(self, model: RadianceField, cfg: NerfConfig, info: Mapping[str, Any]) -> None:
        super().__init__(model, optim=cfg.optim)
        self.render_cfg, self.eval_cfg = cfg.render, cfg.eval
        self.info = dict(info)
        self.register_buffer("train_seconds", torch.zeros((), dtype=torch.float64))
        self.register_buffer("seconds_to_target", torch.full((), math.inf, dtype=torch.float64))
        self.register_buffer("running_mse", torch.full((), math.nan, dtype=torch.float64))
        self.register_buffer("dropped_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.int64))
        self.register_buffer("rays_done", torch.zeros((), dtype=torch.int64))
        self._started, self._dropped, self._mse, self._rays = 0.0, 0.0, math.nan, 0

    def render(self, origins: torch.Tensor, directions: torch.Tensor, appearance: torch.Tensor,
               jitter: bool = False) -> RenderOutput:
        """Render rays with this module's sampling settings."""
        cfg = self.render_cfg
        return render_rays(self.model, origins, directions, appearance, cfg.samples, cfg.importance, jitter)

    def step(self, batch: Any) -> StepOutput:
        origins, directions, rgb, appearance = batch
        out = self.render(origins, directions, appearance, jitter=self.training)
        loss = torch.mean((out.rgb - rgb) ** 2)
        if self.training:
            self._dropped, self._mse, self._rays = out.dropped, float(loss.detach()), len(rgb)
        return StepOutput(loss, aux=out.aux, stats=out.stats, batch_size=len(rgb))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._started = time.perf_counter()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The step, then its bookkeeping: here rather than at batch end, because the checkpoint callbacks save
        before the module's own batch-end hook runs, and a resumed run would lose this batch's figures."""
        super().optimizer_step(*args, **kwargs)
        self.train_seconds += time.perf_counter() - self._started
        self.steps_done += 1
        self.rays_done += self._rays
        self.dropped_sum += self._dropped
        mse, running = self._mse, float(self.running_mse)
        running = mse if math.isnan(running) else (1 - EMA) * running + EMA * mse
        self.running_mse.fill_(running)
        self.log("train/psnr", mse_to_psnr(running), on_step=True, on_epoch=False, prog_bar=True)
        if math.isinf(float(self.seconds_to_target)) and mse_to_psnr(running) >= self.eval_cfg.target_psnr:
            self.seconds_to_target.fill_(float(self.train_seconds))

    def training_figures(self) -> dict[str, float]:
        """Training wall clock, time to the target PSNR (NaN if never reached), ray throughput, dropped share."""
        steps = int(self.steps_done)
        seconds = float(self.train_seconds)
        to_target = float(self.seconds_to_target)
        return {
            "train_s": seconds,
            "train_s_to_target": to_target if math.isfinite(to_target) else math.nan,
            "train_rays_per_s": int(self.rays_done) / seconds if seconds > 0 else math.nan,
            "dropped_pct": 100.0 * float(self.dropped_sum) / steps if steps else math.nan,
        }


def build_module(cfg: NerfConfig, info: Mapping[str, Any]) -> NerfModule:
    """The ``model.*`` radiance field over the info's box and appearance codes."""
    model = RadianceField(cfg.model, int(info["num_images"]), info["box"])
    return NerfModule(model, cfg, info)
