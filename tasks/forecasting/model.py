"""Forecasting models built from ``zoo.moe`` parts: the MoE forecaster, its dense twin, and seasonal naive.

All take the last ``L`` values of a series scaled by their mean absolute value (the datamodule does it) and
forecast the next ``H`` values directly (one output per step), in the same scale.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.module import ModelOutput, OptimConfig, StepOutput, ZooModule
from zoo.moe import MoEConfig, MoELayer, collect


class MoEForecaster(nn.Module):
    """``lags → Linear(L, d) → [x + MoE(LayerNorm(x))] × layers → Linear(d, H)``.

    With ``moe=None`` each block is a dense FFN of width ``k · d_hidden`` instead: the dense twin, with the same
    active parameters per forecast as the MoE (``k`` experts of width ``d_hidden`` run per token).
    """

    def __init__(
        self, lookback: int, horizon: int, d_model: int, moe: MoEConfig, *, num_layers: int = 1, dense: bool = False
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(lookback, d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(num_layers))
        if dense:
            width = moe.k * moe.d_hidden
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.Linear(d_model, width), nn.GELU(), nn.Linear(width, d_model)) for _ in range(num_layers)
            )
        else:
            self.blocks = nn.ModuleList(MoELayer.from_config(moe, d_model) for _ in range(num_layers))
        self.head = nn.Linear(d_model, horizon)
        self.dense = dense

    def forward(self, x_BL: torch.Tensor) -> ModelOutput:
        h = self.embed(x_BL)
        outputs = {}
        for i, (norm, block) in enumerate(zip(self.norms, self.blocks)):
            if self.dense:
                h = h + block(norm(h))
            else:
                out = block(norm(h))
                outputs[f"moe{i}"] = out
                h = h + out.y
        aux, stats = collect(outputs)
        return ModelOutput(self.head(h), aux, stats)


class SeasonalNaive(nn.Module):
    """Forecast ``y[T+h] = y[T+h−m·⌈h/m⌉]``: the last observed season repeated (m = 1: the last value)."""

    def __init__(self, horizon: int, seasonality: int) -> None:
        super().__init__()
        self.horizon, self.m = horizon, max(1, seasonality)

    def forward(self, x_BL: torch.Tensor) -> ModelOutput:
        m = min(self.m, x_BL.shape[1])
        season = x_BL[:, -m:]
        reps = -(-self.horizon // m)
        return ModelOutput(season.repeat(1, reps)[:, : self.horizon])


class ForecastModule(ZooModule):
    """Trains on scaled windows; metrics see forecasts and targets back in the original scale."""

    def __init__(self, model: nn.Module, loss: str = "mae", optim: OptimConfig | None = None, metrics: Any = None) -> None:
        super().__init__(model, optim=optim, metrics=metrics)
        self.loss_name = loss

    def step(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        out = self.model(batch["x"])
        loss_fn = F.l1_loss if self.loss_name == "mae" else F.mse_loss
        loss = loss_fn(out.pred, batch["y"])
        scale = batch["scale"][:, None]
        metric_kwargs = {k: batch[k] for k in ("series", "mase_scale") if k in batch}
        return StepOutput(
            loss,
            (out.pred.detach() * scale).float(),
            (batch["y"] * scale).float(),
            out.aux,
            out.stats,
            batch_size=batch["x"].shape[0],
            metric_kwargs=metric_kwargs,
        )

    def configure_optimizers(self) -> Any:
        if not any(p.requires_grad for p in self.model.parameters()):
            return None
        return super().configure_optimizers()
