"""The environment loop of off-policy training: collect, update, evaluate; plus the evaluation protocol.

``evaluate`` is RL Baselines3 Zoo's: mean ± std return over deterministic episodes (the gate's most probable
expert, its mean action). ``train_off_policy`` steps one environment, fills the replay buffer (uniform random
actions for the first ``start_steps``), runs one agent update per step after that, and evaluates every
``eval_every`` steps; ``curve_auc`` turns the evaluation curve into PMOE's headline metric (the area under the
learning curve, normalised by the step budget, i.e. the mean return over training).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from zoo.errors import ZooValueError

from .policy import GaussianMixturePolicy
from .sac import ReplayBuffer, SACAgent


class RunningNorm:
    """Running mean and variance of observations (Welford, batched); ``normalize`` clips to ±clip standard units.

    Its state (``count``, ``mean``, ``var``) is what must be saved with the weights: a policy trained on normalised
    observations is wrong on raw ones.
    """

    def __init__(self, dim: int, clip: float = 10.0) -> None:
        self.count, self.mean, self.var, self.clip = 1e-4, np.zeros(dim), np.ones(dim), clip

    def update(self, x: np.ndarray) -> None:
        x = np.atleast_2d(x)
        n, mean, var = x.shape[0], x.mean(0), x.var(0)
        delta, total = mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray | float]:
        return {"count": self.count, "mean": self.mean.copy(), "var": self.var.copy()}


def _check_obs(obs: np.ndarray, where: str) -> np.ndarray:
    if not np.all(np.isfinite(obs)):
        raise ZooValueError(f"{where}: the environment returned a non-finite observation {obs.tolist()}")
    return obs


def evaluate(env, policy: GaussianMixturePolicy, episodes: int, norm: RunningNorm | None = None, seed: int = 0) -> tuple[float, float]:
    """Mean and std of the return over ``episodes`` deterministic episodes (seeds ``seed``, ``seed + 1``, …)."""
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            x = norm.normalize(obs) if norm is not None else np.asarray(obs, np.float32)
            action = policy.act(torch.from_numpy(_check_obs(x, "evaluate"))[None], deterministic=True)[0].numpy()
            obs, reward, terminated, truncated, _ = env.step(action * env.action_space.high)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns))


def curve_auc(steps: list[int], returns: list[float], budget: int) -> float:
    """Area under the evaluation curve (trapezoids, flat before the first point), divided by the step budget."""
    if not steps:
        return float("nan")
    xs, ys = np.asarray([0, *steps], float), np.asarray([returns[0], *returns], float)
    return float(np.trapezoid(ys, xs) / budget)


@dataclass
class TrainLog:
    eval_steps: list[int] = field(default_factory=list)
    eval_returns: list[float] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    env_seconds: float = 0.0
    update_seconds: float = 0.0
    updates: int = 0


def train_off_policy(
    env,
    agent: SACAgent,
    steps: int,
    *,
    start_steps: int = 1000,
    eval_every: int = 5000,
    eval_env=None,
    eval_episodes: int = 10,
    norm: RunningNorm | None = None,
    seed: int = 0,
    on_episode: Callable[[int, float], None] | None = None,
) -> TrainLog:
    """Train ``agent`` for ``steps`` environment steps; see the module docstring. ``on_episode(step, return)`` is
    called after every episode (progress bars)."""
    if steps < 1:
        raise ZooValueError(f"steps={steps} must be positive")
    rng = np.random.default_rng(seed)
    scale = env.action_space.high
    buf = ReplayBuffer(env.observation_space.shape[0], env.action_space.shape[0], min(agent.cfg.buffer_size, steps))
    log = TrainLog()
    obs, _ = env.reset(seed=seed)
    episode_return = 0.0
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        raw = _check_obs(np.asarray(obs, np.float64), f"step {step}")
        if norm is not None:
            norm.update(raw)
        x = norm.normalize(raw) if norm is not None else raw.astype(np.float32)
        if step <= start_steps:
            action = rng.uniform(-1, 1, size=scale.shape).astype(np.float32)
        else:
            action = agent.actor.act(torch.from_numpy(x)[None])[0].numpy()
        obs, reward, terminated, truncated, _ = env.step(action * scale)
        next_raw = _check_obs(np.asarray(obs, np.float64), f"step {step}")
        next_x = norm.normalize(next_raw) if norm is not None else next_raw.astype(np.float32)
        buf.add(x, action, float(reward), next_x, terminated)  # truncation is not a terminal state
        episode_return += float(reward)
        log.env_seconds += time.perf_counter() - t0
        if terminated or truncated:
            log.episode_returns.append(episode_return)
            if on_episode is not None:
                on_episode(step, episode_return)
            obs, _ = env.reset()
            episode_return = 0.0
        if step > start_steps:
            t0 = time.perf_counter()
            agent.update(buf.sample(agent.cfg.batch_size, rng))
            log.update_seconds += time.perf_counter() - t0
            log.updates += 1
        if eval_env is not None and step % eval_every == 0:
            mean, _ = evaluate(eval_env, agent.actor, eval_episodes, norm, seed=10_000 + step)
            log.eval_steps.append(step)
            log.eval_returns.append(mean)
    return log
