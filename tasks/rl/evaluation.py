"""The RL task's test: deterministic episodes of the trained actor (RL Baselines3 Zoo's protocol), on
evaluation seeds no training episode used."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import RLConfig
from .envs import make_env
from .loop import rollouts
from .module import RLModule
from .training import torch_threads

TEST_SEED = 100_000


def evaluate(cfg: RLConfig, trainer: Any, module: RLModule, dm: Any = None) -> dict[str, float]:
    """Mean ± std return over ``cfg.test_episodes`` deterministic episodes of ``cfg.env``, the mean routing entropy
    ``H(w(s))`` over the states they visit and, on goal tasks, the share of episodes that reach a goal. Runs with
    the training's ``train.threads`` torch threads. Makes its own environment, so weights evaluate without a
    datamodule (``dm`` is unused)."""
    env = make_env(cfg.env)
    norm = module.model.obs_norm if cfg.train.normalize_obs else None
    with torch_threads(cfg.train.threads):
        result = rollouts(env, module.model.actor, cfg.test_episodes, norm, seed=TEST_SEED)
    env.close()
    metrics = {
        "test/return_mean": float(np.mean(result.returns)),
        "test/return_std": float(np.std(result.returns)),
        "test/routing_entropy": result.routing_entropy,
    }
    if result.successes is not None:
        metrics["test/success"] = float(np.mean(result.successes))
    return metrics
