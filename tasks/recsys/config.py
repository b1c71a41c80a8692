"""Typed config of the recsys task: the schema every ``configs/recsys/*.yaml`` recipe is validated into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.errors import check_arg, check_seed
from zoo.optim import OptimConfig

SOURCES = ("ml100k", "movielens", "simulator", "mmoe_synthetic")
ARCHS = ("shared_bottom", "mmoe", "cgc", "ple", "home", "din", "moe_user_gate", "awmoe")
"""The ``model.arch`` names, each a class of :mod:`.models` (registered there under the same name)."""


@dataclass
class DataConfig:
    """Where the rows come from and how they are batched.

    ``source``:

    - ``ml100k``: MovieLens-100K from the recbole wheel (data/ml-100k.yaml), five derived binary tasks
      (:mod:`.movielens`: watch, like, love, dislike, hate);
    - ``movielens``: the same tasks on the MovieLens folder at ``path`` (GroupLens ``u.data``/``u.user``/``u.item``
      or RecBole atomic files, e.g. ML-1M converted by RecBole);
    - ``simulator``: the seeded Kuaishou-like feed of :func:`.synthetic.kuaishou_sim` (long_view + five
      interaction tasks, four of them sparse); ``simulator`` holds its keyword arguments (``n_users``,
      ``n_items``, ``mean_impressions``, ``rates``, ``random_exposure``...);
    - ``mmoe_synthetic``: MMoE's two regression tasks of correlation ``p`` in [-1, 1]
      (:func:`.synthetic.mmoe_synthetic`, ``dim`` features; the paper's scale constant ``c``, ``m`` sine terms
      with ``α_i``, ``β_i`` ~ N(0, ``sine_sd``²), label noise of standard deviation ``noise_sd``); ``n_train``
      training rows, then ``n_val`` more rows of the training stream as the validation split, and ``n_test``
      test rows.

    ``seed`` is the data seed (watch negatives, the simulator's population, the synthetic draws); it stays
    fixed across a board's seeds, which vary the model's initialisation and batch order only.
    ``negatives``: sampled unobserved items per rating (MovieLens watch task). ``max_history``: behaviour
    history length L. ``long_tail_max``: users with at most this many training rows are long-tail users.
    ``max_users``: keep only the users with ids 1..N in every split (smoke runs; the item catalogue is kept).
    """

    source: str = "ml100k"
    path: str | None = None
    seed: int = 0
    negatives: int = 1
    max_history: int = 20
    long_tail_max: int = 20
    max_users: int | None = None
    simulator: dict[str, Any] = field(default_factory=dict)
    p: float = 0.5
    n_train: int = 10_000
    n_val: int = 1_000
    n_test: int = 1_000
    dim: int = 100
    c: float = 1.0
    m: int = 10
    sine_sd: float = 1.0
    noise_sd: float = 0.1
    batch_size: int = 1024
    eval_batch_size: int = 8192

    def __post_init__(self) -> None:
        check_arg(self.source in SOURCES, "data.source", self.source, SOURCES)
        check_seed(self.seed, "data.seed")
        check_arg(self.source != "movielens" or bool(self.path), "data.path", self.path,
                  "a MovieLens folder (GroupLens u.data or RecBole atomic files) when data.source is movielens")
        check_arg(self.negatives >= 1, "data.negatives", self.negatives, "at least 1")
        check_arg(self.max_history >= 1, "data.max_history", self.max_history, "at least 1")
        check_arg(self.max_users is None or self.max_users >= 1, "data.max_users", self.max_users, "None or >= 1")
        check_arg(-1.0 <= self.p <= 1.0, "data.p", self.p, "a task correlation in [-1, 1]")
        check_arg(self.c > 0 and self.m >= 0 and self.sine_sd >= 0 and self.noise_sd >= 0,
                  "data.c/m/sine_sd/noise_sd", (self.c, self.m, self.sine_sd, self.noise_sd),
                  "c > 0 and m, sine_sd, noise_sd >= 0")
        check_arg(min(self.n_train, self.n_val, self.n_test) >= 1, "data.n_train/n_val/n_test",
                  (self.n_train, self.n_val, self.n_test), "at least 1 row each")
        check_arg(self.batch_size >= 1 and self.eval_batch_size >= 1, "data.batch_size",
                  (self.batch_size, self.eval_batch_size), "positive ints")


@dataclass
class ModelConfig:
    """``arch``: one of :data:`ARCHS`; ``kwargs``: its constructor's keyword arguments (``num_experts``,
    ``expert_norm``, ``one_gate``, ``hierarchy_mask``, ``contrastive``...; an unknown one fails when the model is
    built). HoME's ``task_groups`` default to the data's groups (watch vs rating / interaction).
    ``embed_dim``: width of every embedding table."""

    arch: str = "mmoe"
    embed_dim: int = 16
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_arg(self.arch in ARCHS, "model.arch", self.arch, sorted(ARCHS))
        check_arg(self.embed_dim >= 1, "model.embed_dim", self.embed_dim, "a positive int")


@dataclass
class PredictConfig:
    """``zoo predict recsys`` defaults: ``rank_by`` = the task whose score orders the items (None = the first
    task: ``watch`` on MovieLens, ``long_view`` on the simulator)."""

    rank_by: str | None = None


@dataclass
class EarlyStoppingConfig:
    """Stop training once the validation loss (the row-weighted mean that also picks the kept epoch) has not
    improved by more than ``min_delta`` for ``patience`` epochs; ``trainer.max_epochs`` stays the cap. ``patience``
    None trains every epoch up to the cap."""

    patience: int | None = None
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        check_arg(self.patience is None or self.patience >= 1, "early_stopping.patience", self.patience,
                  "None or a positive int")
        check_arg(self.min_delta >= 0, "early_stopping.min_delta", self.min_delta, "a non-negative float")


@dataclass
class RecsysConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=1e-3))
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 3})
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed)
