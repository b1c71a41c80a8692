"""Forecasting models built from ``zoo.moe`` parts: the MoE forecaster, its dense twin, and seasonal naive.

All take the last ``L`` values of a series scaled by their mean absolute value (the datamodule does it) and
forecast the next ``H`` values directly (one output per step), in the same scale.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import check_arg
from zoo.module import ModelOutput, StepOutput, ZooModule
from zoo.moe import MoEConfig, MoELayer, collect
from zoo.optim import OptimConfig

from .baselines import BASELINES, forecast_all


class MoEForecaster(nn.Module):
    """``lags → Linear(L, d) → [x + MoE(LayerNorm(x))] × layers → Linear(d, H)``.

    With ``dense`` each block is a dense FFN of width ``k · d_hidden`` instead: the dense twin, with the same
    active parameters per forecast as the MoE (``k`` experts of width ``d_hidden`` run per token).

    With ``expert_forecasts`` the last MoE layer also yields each routed expert's own forecast
    ``ŷ_e = head(h + f_e(LayerNorm(h)))`` (``extras["expert_pred"]`` ``[B, k, H]``, with ``extras["gate"]``
    ``[B, k]`` and ``extras["expert_mask"]``) for expert-specific losses. The head is linear and shared, so
    when the gate weights sum to 1 (a softmax gate over FFN experts) the combined forecast is exactly
    ``Σ_e g_e ŷ_e``.
    """

    def __init__(
        self,
        lookback: int,
        horizon: int,
        d_model: int,
        moe: MoEConfig,
        *,
        num_layers: int = 1,
        dense: bool = False,
        expert_forecasts: bool = False,
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
        self.expert_forecasts = expert_forecasts and not dense

    def forward(self, x_BL: torch.Tensor) -> ModelOutput:
        h = self.embed(x_BL)
        outputs = {}
        extras = {}
        last = len(self.blocks) - 1
        for i, (norm, block) in enumerate(zip(self.norms, self.blocks)):
            if self.dense:
                h = h + block(norm(h))
                continue
            want_experts = self.expert_forecasts and i == last
            out = block(norm(h), expert_outputs=want_experts)
            outputs[f"moe{i}"] = out
            if want_experts:
                ids = out.routing.ids
                extras = {
                    "expert_pred": self.head(h.unsqueeze(1) + out.expert_outputs),
                    "gate": out.routing.weights,
                    "expert_mask": (ids >= 0) & (ids < block.experts.num_experts),
                }
            h = h + out.y
        aux, stats = collect(outputs)
        return ModelOutput(self.head(h), aux, stats, extras)


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


class StatisticalForecaster(nn.Module):
    """A classical baseline (``baselines.BASELINES``) behind the network interface; nothing to train.

    Boards score it on each test window's whole history (``evaluation.baseline_forecasts``); called as a network
    (``zoo predict``) it fits each row of lags on its own.
    """

    def __init__(self, method: str, horizon: int, seasonality: int) -> None:
        super().__init__()
        check_arg(method in BASELINES, "method", method, tuple(BASELINES))
        self.method, self.horizon, self.m = method, horizon, max(1, seasonality)

    def forward(self, x_BL: torch.Tensor) -> ModelOutput:
        pred = forecast_all(list(x_BL.detach().double().cpu().numpy()), self.horizon, self.method, m=self.m,
                            progress=False)
        return ModelOutput(torch.as_tensor(pred, dtype=x_BL.dtype, device=x_BL.device))




def expert_loss(
    expert_pred_BKH: torch.Tensor,
    y_BH: torch.Tensor,
    gate_BK: torch.Tensor,
    mask_BK: torch.Tensor,
    variant: str,
    loss: str = "mae",
    tau: float = 0.1,
) -> torch.Tensor:
    """Expert-specific loss L_exp of El Mahtout & Ziel (2026), in three variants:

    * ``uniform``: ``(1/K) Σ_k ℓ(ŷ_k, y)`` over the token's routed experts;
    * ``gate`` (Jacobs et al. 1991): ``Σ_k g_k ℓ(ŷ_k, y) / Σ_k g_k``; its gradient also moves the gate towards
      the experts that forecast this window best;
    * ``best``: ``min_k ℓ(ŷ_k, y) + KL(softmax(−ℓ/τ) ‖ g)``: the best expert is trained on the window and
      the gate learns to predict which expert that is (the target distribution is not differentiated).

    ``ℓ`` is MAE or MSE per window (averaged over the horizon), on the scaled target like the base loss.
    """
    err = (expert_pred_BKH - y_BH.unsqueeze(1)).abs() if loss == "mae" else (expert_pred_BKH - y_BH.unsqueeze(1)) ** 2
    per_expert = err.mean(-1)  # [B, K]
    maskf = mask_BK.float()
    if variant == "uniform":
        return ((per_expert * maskf).sum(-1) / maskf.sum(-1).clamp_min(1)).mean()
    if variant == "gate":
        g = gate_BK * maskf
        return ((g * per_expert).sum(-1) / g.sum(-1).clamp_min(1e-12)).mean()
    masked = per_expert.masked_fill(~mask_BK, torch.inf)
    best = masked.min(-1).values
    target = torch.softmax(-masked.detach() / tau, dim=-1)
    g = (gate_BK * maskf) / (gate_BK * maskf).sum(-1, keepdim=True).clamp_min(1e-12)
    kl = (target * (torch.log(target.clamp_min(1e-12)) - torch.log(g.clamp_min(1e-12)))).sum(-1)
    return (best + kl).mean()


class ForecastModule(ZooModule):
    """Trains on scaled windows; metrics see forecasts and targets back in the original scale.

    Objective: ``ℓ(ŷ, y) + λ · L_exp`` (:func:`expert_loss`, off with ``expert_loss="none"``) ``+ Σ aux``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str = "mae",
        optim: OptimConfig | None = None,
        metrics: Any = None,
        *,
        expert_loss: str = "none",
        expert_loss_weight: float = 1.0,
        expert_loss_tau: float = 0.1,
    ) -> None:
        super().__init__(model, optim=optim, metrics=metrics)
        self.loss_name = loss
        self.expert_loss, self.expert_loss_weight, self.expert_loss_tau = expert_loss, expert_loss_weight, expert_loss_tau

    def step(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        out = self.model(batch["x"])
        loss_fn = F.l1_loss if self.loss_name == "mae" else F.mse_loss
        loss = loss_fn(out.pred, batch["y"])
        aux = dict(out.aux)
        if self.expert_loss != "none" and "expert_pred" in out.extras:
            e = out.extras
            l_exp = expert_loss(
                e["expert_pred"], batch["y"], e["gate"], e["expert_mask"], self.expert_loss, self.loss_name, self.expert_loss_tau
            )
            aux["expert_loss"] = self.expert_loss_weight * l_exp
        scale = batch["scale"][:, None]
        metric_kwargs = {k: batch[k] for k in ("series", "mase_scale") if k in batch}
        return StepOutput(
            loss,
            (out.pred.detach() * scale).float(),
            (batch["y"] * scale).float(),
            aux,
            out.stats,
            batch_size=batch["x"].shape[0],
            metric_kwargs=metric_kwargs,
        )

    def configure_optimizers(self) -> Any:
        if not any(p.requires_grad for p in self.model.parameters()):
            return None
        return super().configure_optimizers()
