"""What the ``forecasting`` TaskSpec builds: the datamodule, the model info, the module, and its test metrics.

The network depends on the data only through the model info (:func:`model_info`): the lookback ``L``, the
horizon ``H`` and the seasonal period ``m`` of the training set, plus its frequency name. Published weights carry
that info, so ``zoo predict`` rebuilds the model without loading any data set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from torchmetrics import MetricCollection

from .config import STAT_ARCHS, ForecastingConfig
from .data import ForecastDataModule
from .evaluation import baseline_forecasts, model_forecasts, score, with_owa
from .metrics import MASE, SMAPE
from .model import ForecastModule, MoEForecaster, SeasonalNaive, StatisticalForecaster
from .online import run_online


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


def model_info(cfg: ForecastingConfig, dm: ForecastDataModule) -> dict[str, Any]:
    """``lookback``, ``horizon`` and ``seasonality`` size the network and the statistical forecasters (the
    config may leave them to the data: ``data.horizon: null`` is the official horizon); ``period`` is the
    training frequency, which ``predict`` compares with its input's."""
    return {"lookback": dm.lookback, "horizon": dm.horizon, "seasonality": dm.seasonality, "period": dm.period}


def build_model(cfg: ForecastingConfig, info: Mapping[str, Any]) -> nn.Module:
    """The network (or statistical forecaster) named by ``model.arch``, sized from the model info."""
    m = cfg.model
    lookback, horizon, seasonality = info["lookback"], info["horizon"], info["seasonality"]
    if m.arch == "seasonal_naive":
        return SeasonalNaive(horizon, seasonality)
    if m.arch in STAT_ARCHS:
        return StatisticalForecaster(m.arch, horizon, seasonality)
    if m.arch in ("moe", "dense"):
        return MoEForecaster(
            lookback,
            horizon,
            m.d_model,
            cfg.moe,
            num_layers=m.num_layers,
            dense=m.arch == "dense",
            expert_forecasts=m.expert_loss != "none",
        )
    from .nets import build_net

    return build_net(m.arch, lookback, horizon, **m.net_kwargs)


def build_module(cfg: ForecastingConfig, info: Mapping[str, Any]) -> ForecastModule:
    m = cfg.model
    metrics = MetricCollection({"smape": SMAPE(), "mase": MASE()})
    return ForecastModule(
        build_model(cfg, info),
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
        metrics = run_online(cfg, module, dm)
    elif cfg.model.arch in STAT_ARCHS and cfg.model.arch != "seasonal_naive":
        metrics = score(dm, baseline_forecasts(dm, cfg.model.arch, max_history=cfg.model.stat_history, n_jobs=2))
    else:
        windows = dm.windows("test")
        metrics = score(dm, model_forecasts(module.model, windows.x, windows.scale))
    return {**with_owa(metrics, dm), **convergence_metrics(trainer, cfg.target_val_loss)}


def convergence_metrics(trainer: Any, target: float | None) -> dict[str, float]:
    """How the fit converged, from its validation curve (:class:`zoo.callbacks.ValidationCurve`): the final and the
    best validation task loss, the fit's seconds and, for a ``target`` loss, the epochs (fractional), optimizer steps
    and seconds to its first reach (left out when it was never reached, so that ``fit/reached_target`` 0 says so)."""
    from zoo.callbacks import ValidationCurve

    curve = next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, ValidationCurve)), None)
    rows = [r for r in curve.rows if "val/task_loss" in r] if curve is not None else []
    if not rows:
        return {}
    out = {"fit/val_task_loss_final": rows[-1]["val/task_loss"],
           "fit/val_task_loss_best": min(r["val/task_loss"] for r in rows), "fit/seconds": curve.seconds()}
    if target is not None:
        hit = curve.first_reaching("val/task_loss", target)
        out["fit/reached_target"] = float(hit is not None)
        if hit is not None:
            out["fit/epochs_to_target"] = hit["epochs"]
            out["fit/steps_to_target"] = hit["step"]
            out["fit/seconds_to_target"] = hit["seconds"]
    return out
