"""The ``optim.*`` block of recipes and its learning-rate schedule; torch-free, so configs load without torch."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from zoo.errors import check_arg

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("none", "cosine", "linear")


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule; the ``optim.*`` block of recipes.

    Weight decay applies to matrices and expert banks only, never to the parameters of ``Router`` modules,
    biases or norms (decaying a router's gate pulls it towards uniform routing). ``scheduler`` is ``none``, ``cosine`` (to
    ``min_lr_ratio·lr``) or ``linear`` decay, after ``warmup_steps`` of linear warm-up; the horizon is
    ``max_steps`` or the trainer's estimate of total steps.
    """

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    scheduler: str = "none"
    warmup_steps: int = 0
    max_steps: int | None = None
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        check_arg(self.name in OPTIMIZERS, "optim.name", self.name, OPTIMIZERS)
        check_arg(self.scheduler in SCHEDULERS, "optim.scheduler", self.scheduler, SCHEDULERS)
        check_arg(self.lr > 0, "optim.lr", self.lr, "> 0")
        check_arg(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        check_arg(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, ">= 0")
        check_arg(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", self.min_lr_ratio, "a float in [0, 1]")


def lr_lambda(cfg: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at each step: linear warm-up, then the configured decay."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.scheduler == "none":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.scheduler == "cosine" else 1 - progress
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay

    return factor
