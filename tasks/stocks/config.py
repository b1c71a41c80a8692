"""Typed config of the stocks task: the schema every ``configs/stocks/*.yaml`` recipe is validated into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.errors import check_arg, check_seed
from zoo.moe.config import MoEConfig
from zoo.optim import OptimConfig

NEURAL_ARCHS = ("gru", "moe", "miga")
TABULAR_ARCHS = ("ridge", "mlp", "hgb")
ARCHS = NEURAL_ARCHS + TABULAR_ARCHS


@dataclass
class DataConfig:
    """``source``: a panel name (``style_panel``, ``style_panel_control``, ``sp500``, ``skfolio_sp500``) or a
    file format read from ``path`` (``csv``: a long ``date,instrument,open,high,low,close,volume`` file; ``qlib``:
    a Qlib provider directory). ``panel`` holds loader options (e.g. ``n_stocks``, ``n_days``, ``seed`` of the
    style panel; ``market`` of a Qlib directory). ``split``: train/valid/test fractions of the days after the
    60-day feature warm-up, in time order. ``lookback``: days of features the sequence encoder reads.
    ``max_instruments``/``max_days`` keep the first instruments (by name) and the last days of any panel (the
    recipes' smoke tier)."""

    source: str = "style_panel"
    path: str | None = None
    lookback: int = 20
    split: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])
    panel: dict[str, Any] = field(default_factory=dict)
    max_instruments: int | None = None
    max_days: int | None = None

    def __post_init__(self) -> None:
        check_arg(self.lookback >= 1, "data.lookback", self.lookback, "a positive number of days")
        check_arg(len(self.split) == 3, "data.split", self.split, "three fractions (train, valid, test)")


@dataclass
class ModelConfig:
    """``arch``: ``miga`` (groups × experts, inner-group attention; ``iga``/``oracle`` switch the ablation and the
    oracle-routing upper bound), ``moe`` (a plain ``zoo.moe`` top-k layer configured by the ``moe`` block),
    ``gru`` (the same encoder with a linear head), or a tabular baseline on the last day's features
    (``ridge``, ``mlp``, ``hgb`` = scikit-learn HistGradientBoosting, the LightGBM stand-in; ``sklearn``
    holds its keyword arguments)."""

    arch: str = "miga"
    hidden: int = 64
    num_layers: int = 2
    dropout: float = 0.0
    groups: int = 4
    experts_per_group: int = 4
    k: int = 2
    d_expert: int = 64
    heads: int = 4
    balance: float = 2e-3
    iga: bool = True
    oracle: bool = False
    router_warmup_epochs: int = 0
    sklearn: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_arg(self.arch in ARCHS, "model.arch", self.arch, ARCHS)
        check_arg(self.hidden >= 1, "model.hidden", self.hidden, "a positive int")
        check_arg(1 <= self.k <= self.groups * self.experts_per_group, "model.k", self.k,
                  f"an int in [1, groups × experts_per_group = {self.groups * self.experts_per_group}]")
        check_arg(self.balance >= 0, "model.balance", self.balance, ">= 0")
        check_arg(isinstance(self.router_warmup_epochs, int) and self.router_warmup_epochs >= 0,
                  "model.router_warmup_epochs", self.router_warmup_epochs, "an int >= 0")
        check_arg(self.router_warmup_epochs == 0 or (self.arch == "miga" and not self.oracle),
                  "model.router_warmup_epochs", self.router_warmup_epochs,
                  "0 unless model.arch is 'miga' with its router (oracle: false)")


@dataclass
class BacktestConfig:
    """TopK-dropout portfolio (Qlib's TopkDropoutStrategy, equal weights): hold ``topk`` stocks, swap at most
    ``n_drop`` a day; None scales Qlib's CSI300 setting (50 / 5 of 300) to the test universe. Costs are
    fractions of the traded value (0.05 % to buy, 0.15 % to sell, as in Qlib's benchmarks); ``periods`` trading
    days a year annualise returns (238, Qlib's convention)."""

    topk: int | None = None
    n_drop: int | None = None
    open_cost: float = 0.0005
    close_cost: float = 0.0015
    periods: int = 238


@dataclass
class SearchConfig:
    """A hyperparameter search inside one run (:mod:`.search`): ``space`` maps searchable keys
    (:data:`SEARCHABLE`) to lists of values; the trials are the grid of their combinations, all of them
    (``trials`` None) or ``trials`` of them drawn with ``seed`` (the same draw for every row and run seed). Each
    trial trains ``trainer.max_epochs`` epochs from the same initial weights; the epoch with the best validation
    IC over all trials is kept. An empty ``space`` is no search (``trials`` is then ignored)."""

    space: dict[str, list[Any]] = field(default_factory=dict)
    trials: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        from .search import check_search  # the rules live with the search

        check_search(self)


@dataclass
class StocksConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    moe: MoEConfig = field(default_factory=lambda: MoEConfig(num_experts=16, k=2, d_hidden=64))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=1e-3))
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 10, "gradient_clip_val": 3.0})
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if self.search.space:
            from .search import check_search_run

            check_search_run(self)
