"""Typed config of the forecasting task: the schema every ``configs/forecasting/*.yaml`` recipe is validated into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.errors import check_arg, check_seed
from zoo.moe.config import MoEConfig
from zoo.optim import OptimConfig

NEURAL_ARCHS = ("moe", "dense", "nbeats", "wavenet", "transformer")
STAT_ARCHS = ("seasonal_naive", "naive", "naive2", "ses", "theta", "ets")
ARCHS = NEURAL_ARCHS + STAT_ARCHS
ONLINE_MODES = ("none", "static", "partial", "full")
LOSSES = ("mae", "mse")
EXPERT_LOSSES = ("none", "gate", "uniform", "best")
FILL_POLICIES = ("error", "interpolate", "ffill")  # missing values in users' CSVs (``csvio``)


@dataclass
class DataConfig:
    """Which series and how they are windowed.

    ``lookback`` L ≈ 1.25 × seasonality (15 for monthly data, as in the Monash protocol); ``horizon`` None uses
    the collection's official horizon (18 for M3 monthly). ``max_series`` takes a deterministic subset (smoke).
    ``test_origins`` > 1 evaluates at that many rolling origins, ``horizon`` apart, at the end of each series
    (see ``ForecastDataModule``); ``online`` needs it. ``source`` is an offline set (``m3``, ``m1``, ``tourism``,
    ``vic_elec``, ``us_employment``...; cards in ``data/*.yaml``) or a file format read from ``path``
    (``tsf``, ``m4``, ``csv``); ``fill`` is the missing-value policy of ``csv`` files (``error``, ``interpolate``,
    ``ffill``). ``stride`` thins the training windows of long series (every ``stride``-th target start).
    """

    source: str = "m3"
    period: str = "MONTHLY"
    path: str | None = None
    lookback: int = 15
    horizon: int | None = None
    batch_size: int = 256
    max_series: int | None = None
    test_origins: int = 1
    fill: str = "error"
    stride: int = 1

    def __post_init__(self) -> None:
        check_arg(self.fill in FILL_POLICIES, "data.fill", self.fill, FILL_POLICIES)
        check_arg(self.horizon is None or self.horizon >= 1, "data.horizon", self.horizon,
                  "None (the collection's own horizon) or an integer >= 1")
        check_arg(self.max_series is None or self.max_series >= 1, "data.max_series", self.max_series,
                  "None (all series) or an integer >= 1")
        for name in ("lookback", "batch_size", "test_origins", "stride"):
            check_arg(getattr(self, name) >= 1, f"data.{name}", getattr(self, name), "an integer >= 1")


@dataclass
class ModelConfig:
    """``arch``: ``moe`` (zoo.moe layers), ``dense`` (the twin with equal active parameters), a neural baseline
    from ``nets`` (``nbeats``, ``wavenet``, ``transformer``; ``net_kwargs`` go to its constructor) or a
    statistical baseline with nothing to train (``seasonal_naive``, ``naive``, ``naive2``, ``ses``, ``theta``,
    ``ets``; the last four fit each series' full history, or its last ``stat_history`` points, see
    ``baselines``). ``expert_loss``: ``none`` or an
    expert-specific loss variant (``gate``, ``uniform``, ``best``; see ``model.expert_loss``) weighted by
    ``expert_loss_weight`` (λ)."""

    arch: str = "moe"
    d_model: int = 64
    num_layers: int = 1
    loss: str = "mae"
    expert_loss: str = "none"
    expert_loss_weight: float = 1.0
    expert_loss_tau: float = 0.1
    net_kwargs: dict[str, Any] = field(default_factory=dict)
    stat_history: int | None = None

    def __post_init__(self) -> None:
        check_arg(self.arch in ARCHS, "model.arch", self.arch, ARCHS)
        check_arg(self.loss in LOSSES, "model.loss", self.loss, LOSSES)
        check_arg(self.expert_loss in EXPERT_LOSSES, "model.expert_loss", self.expert_loss, EXPERT_LOSSES)
        check_arg(self.expert_loss_weight >= 0, "model.expert_loss_weight", self.expert_loss_weight, ">= 0")
        check_arg(self.expert_loss_tau > 0, "model.expert_loss_tau", self.expert_loss_tau, "> 0")
        check_arg(self.d_model > 0, "model.d_model", self.d_model, "a positive int")
        check_arg(self.num_layers > 0, "model.num_layers", self.num_layers, "a positive int")
        check_arg(self.stat_history is None or self.stat_history >= 1, "model.stat_history", self.stat_history,
                  "None or a positive int")


@dataclass
class OnlineConfig:
    """Rolling-origin (online) evaluation over ``data.test_origins`` origins; ``mode``:

    * ``none``: forecast every origin with the model fitted before the first one (same as ``static``, but
      without per-origin timing; the default);
    * ``static``: the same, timed per origin;
    * ``partial``: partial online learning (El Mahtout & Ziel 2026): at each new origin take ``steps`` optimizer
      steps on the windows that became complete since the previous origin, updating only parameters whose
      name contains one of ``train`` (default: the gate, the experts' last layers and the shared output head);
      ``replay`` is the fraction of each batch drawn from older windows;
    * ``full``: retrain a fresh model from scratch on everything observed before each origin.
    """

    mode: str = "none"
    steps: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    replay: float = 0.0
    train: list[str] = field(default_factory=lambda: ["router", "experts.w2", "head"])

    def __post_init__(self) -> None:
        check_arg(self.mode in ONLINE_MODES, "online.mode", self.mode, ONLINE_MODES)
        check_arg(self.steps >= 1, "online.steps", self.steps, "an integer >= 1")
        check_arg(self.lr > 0, "online.lr", self.lr, "> 0")
        check_arg(self.batch_size >= 1, "online.batch_size", self.batch_size, "an integer >= 1")
        check_arg(0 <= self.replay < 1, "online.replay", self.replay, "a fraction in [0, 1)")
        check_arg(len(self.train) > 0, "online.train", self.train, "a non-empty list of parameter-name parts")


@dataclass
class ForecastingConfig:
    """``target_val_loss``: a validation task loss (the forecast loss alone, scaled as the model sees it) whose
    first reach the run reports as ``fit/epochs_to_target`` and ``fit/seconds_to_target`` (with
    ``fit/reached_target`` 1 or 0), to compare how fast models converge (the ``forecasting.convergence`` board)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    moe: MoEConfig = field(default_factory=lambda: MoEConfig(num_experts=8, k=2, d_hidden=64))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 20})
    online: OnlineConfig = field(default_factory=OnlineConfig)
    target_val_loss: float | None = None

    def __post_init__(self) -> None:
        if self.online.mode in ("partial", "full"):
            check_arg(self.model.arch in NEURAL_ARCHS, "model.arch", self.model.arch,
                      f"a trained model ({', '.join(NEURAL_ARCHS)}) for online.mode={self.online.mode!r}")
            check_arg(self.data.test_origins >= 2, "data.test_origins", self.data.test_origins,
                      f">= 2 for online.mode={self.online.mode!r} (updates happen between origins)")
        check_arg(self.target_val_loss is None or self.target_val_loss > 0, "target_val_loss", self.target_val_loss,
                  "a positive number")
        check_seed(self.seed)

    seed: int = 0
