"""Typed config of the RL task: the schema every ``configs/rl/*.yaml`` recipe is validated into."""

from __future__ import annotations

from dataclasses import dataclass, field

from zoo.errors import check_arg

from .ppo import PPOConfig
from .sac import SACConfig

ALGOS = ("sac", "ppo")


@dataclass
class TrainConfig:
    """The environment loop: ``steps`` environment steps in all, the first ``start_steps`` with uniform random
    actions (off-policy), an evaluation of ``eval_episodes`` deterministic episodes every ``eval_every`` steps (the
    learning curve whose area is the AUC), a checkpoint (weights, optimisers, replay buffer, RNG) every
    ``checkpoint_every`` steps and at the end, observations normalised by running statistics when
    ``normalize_obs``, and ``threads`` torch threads (small networks run fastest on one)."""

    steps: int = 100_000
    start_steps: int = 1000
    eval_every: int = 5000
    eval_episodes: int = 10
    checkpoint_every: int = 10_000
    normalize_obs: bool = True
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "eval_every", "eval_episodes", "checkpoint_every", "threads"):
            check_arg(getattr(self, name) >= 1, f"train.{name}", getattr(self, name), "a positive int")
        check_arg(self.start_steps >= 0, "train.start_steps", self.start_steps, ">= 0")


@dataclass
class RLConfig:
    """``env``: a gymnasium id with continuous actions (``Hopper-v5``, ``HalfCheetah-v5``, ``Walker2d-v5`` …) or
    ``TwoGoal-v0``; ``algo``: the learner, ``sac`` (off-policy, replay buffer) or ``ppo`` (on-policy, vectorised
    environments); ``sac``/``ppo``: the chosen learner's hyper-parameters, the actor's (K experts; SAC's estimator)
    included; ``test_episodes``: deterministic episodes of the final evaluation (≥ 10, RL Baselines3 Zoo's
    protocol)."""

    env: str = "Hopper-v5"
    algo: str = "sac"
    sac: SACConfig = field(default_factory=lambda: SACConfig(hidden=128, batch_size=128))
    ppo: PPOConfig = field(default_factory=PPOConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test_episodes: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        check_arg(self.algo in ALGOS, "algo", self.algo, ALGOS)
        check_arg(self.test_episodes >= 1, "test_episodes", self.test_episodes, "a positive int")
