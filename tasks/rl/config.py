"""Typed config of the RL task: the schema every ``configs/rl/*.yaml`` recipe is validated into. Imports no torch
or gymnasium, so ``zoo info rl`` and ``zoo config show rl`` stay fast; the learners (``sac.py``, ``ppo.py``) import
their configs from here."""

from __future__ import annotations

from dataclasses import dataclass, field

from zoo.errors import check_arg, check_seed

ALGOS = ("sac", "ppo")
ESTIMATOR_NAMES = ("pmoe", "gumbel", "score", "mean")  # the actor updates of estimators.py


@dataclass
class SACConfig:
    """Hyper-parameters (PMOE's SAC demo: Adam 3e-4, twin Q, Polyak 0.01; batch and widths as SAC's defaults).
    ``estimator`` picks the actor update (one of ``ESTIMATOR_NAMES``, see ``estimators.py``); the critic update is the
    same for all."""

    num_experts: int = 4
    estimator: str = "pmoe"
    hidden: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.01
    batch_size: int = 256
    buffer_size: int = 1_000_000
    init_alpha: float = 0.2
    target_entropy: float | None = None  # None: −act_dim

    def __post_init__(self) -> None:
        check_arg(self.estimator in ESTIMATOR_NAMES, "sac.estimator", self.estimator, sorted(ESTIMATOR_NAMES))
        for name in ("num_experts", "hidden", "batch_size", "buffer_size"):
            check_arg(getattr(self, name) >= 1, f"sac.{name}", getattr(self, name), "a positive int")
        check_arg(0 < self.tau <= 1, "sac.tau", self.tau, "a float in (0, 1]")
        check_arg(0 <= self.gamma <= 1, "sac.gamma", self.gamma, "a float in [0, 1]")


@dataclass
class PPOConfig:
    """Hyper-parameters: SB3's / CleanRL's MuJoCo PPO defaults (rollout 2048, 10 epochs, minibatch 64, clip 0.2,
    GAE λ 0.95, grad-norm 0.5, width 64 as the reference) plus PMOE's K, Q-net learning rate and frequency-loss
    weight (1, as the reference). ``rollout`` is the number of transitions per update, summed over ``num_envs``.
    ``norm_adv``: advantages standardised per minibatch (CleanRL's ``--norm-adv``, on by default as there);
    ``norm_reward``: rewards divided by the running std of a discounted return, as gymnasium's ``NormalizeReward``
    wrapper (which CleanRL's ``ppo_continuous_action`` applies; off by default here, as SB3's PPO)."""

    num_experts: int = 4
    hidden: int = 64
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    epochs: int = 10
    minibatch: int = 64
    rollout: int = 2048
    num_envs: int = 4
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    q_lr: float = 3e-4
    freq_coef: float = 1.0
    norm_adv: bool = True
    norm_reward: bool = False


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
        check_seed(self.seed)
