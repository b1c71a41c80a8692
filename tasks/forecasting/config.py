"""Typed config of the forecasting task: the schema every ``configs/forecasting/*.yaml`` recipe is validated into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.errors import check_arg
from zoo.module import OptimConfig
from zoo.moe import MoEConfig

ARCHS = ("moe", "dense", "seasonal_naive")
LOSSES = ("mae", "mse")
EXPERT_LOSSES = ("none", "gate", "uniform", "best")


@dataclass
class DataConfig:
    """Which series and how they are windowed.

    ``lookback`` L ≈ 1.25 × seasonality (15 for monthly data, as in the Monash protocol); ``horizon`` None uses
    the collection's official horizon (18 for M3 monthly). ``max_series`` takes a deterministic subset (smoke).
    """

    source: str = "m3"
    period: str = "MONTHLY"
    path: str | None = None
    lookback: int = 15
    horizon: int | None = None
    batch_size: int = 256
    max_series: int | None = None


@dataclass
class ModelConfig:
    """``arch``: ``moe`` (zoo.moe layers), ``dense`` (the twin with equal active parameters) or
    ``seasonal_naive`` (no training). ``expert_loss``: ``none`` or an expert-specific loss variant
    (``gate``, ``uniform``, ``best``; see ``model.expert_loss``) weighted by ``expert_loss_weight`` (λ)."""

    arch: str = "moe"
    d_model: int = 64
    num_layers: int = 1
    loss: str = "mae"
    expert_loss: str = "none"
    expert_loss_weight: float = 1.0
    expert_loss_tau: float = 0.1

    def __post_init__(self) -> None:
        check_arg(self.arch in ARCHS, "model.arch", self.arch, ARCHS)
        check_arg(self.loss in LOSSES, "model.loss", self.loss, LOSSES)
        check_arg(self.expert_loss in EXPERT_LOSSES, "model.expert_loss", self.expert_loss, EXPERT_LOSSES)
        check_arg(self.expert_loss_weight >= 0, "model.expert_loss_weight", self.expert_loss_weight, ">= 0")
        check_arg(self.expert_loss_tau > 0, "model.expert_loss_tau", self.expert_loss_tau, "> 0")
        check_arg(self.d_model > 0, "model.d_model", self.d_model, "a positive int")
        check_arg(self.num_layers > 0, "model.num_layers", self.num_layers, "a positive int")


@dataclass
class ForecastingConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    moe: MoEConfig = field(default_factory=lambda: MoEConfig(num_experts=8, k=2, d_hidden=64))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 20})
    seed: int = 0
