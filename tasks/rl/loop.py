"""The environment loop of off-policy training: collect, update, evaluate; plus the evaluation protocol.

``evaluate`` is RL Baselines3 Zoo's: mean ± std return over deterministic episodes (the gate's most probable
expert, its mean action); ``rollouts`` also records the routing entropy along the way and whether each episode
reached a goal. ``train_off_policy`` steps one environment, fills the replay buffer (uniform random actions for
the first ``start_steps``), runs one agent update per step after that, and evaluates every ``eval_every`` steps;
its whole state (``LoopState``: step, buffer, RNG, log) can be saved and passed back to continue the run.
``curve_auc`` turns the evaluation curve into PMOE's headline metric (the area under the learning curve,
normalised by the step budget, i.e. the mean return over training).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from zoo.errors import ZooValueError

from .policy import GaussianMixturePolicy
from .sac import ReplayBuffer, SACAgent


class RunningNorm(nn.Module):
    """Running mean and variance of observations (Welford, batched); ``normalize`` clips to ±clip standard units.

    Its state lives in float64 buffers (``count``, ``mean``, ``var``), so it travels in the model's state dict and
    therefore in published weights: a policy trained on normalised observations is wrong on raw ones.
    """

    def __init__(self, dim: int, clip: float = 10.0) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))

    def update(self, x: np.ndarray) -> None:
        x = np.atleast_2d(x)
        n, mean, var = x.shape[0], x.mean(0), x.var(0)
        count, old_mean, old_var = float(self.count), self.mean.numpy(), self.var.numpy()
        delta, total = mean - old_mean, count + n
        new_mean = old_mean + delta * n / total
        new_var = (old_var * count + var * n + delta**2 * count * n / total) / total
        self.mean.copy_(torch.from_numpy(new_mean))
        self.var.copy_(torch.from_numpy(new_var))
        self.count.fill_(total)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        scaled = (x - self.mean.numpy()) / np.sqrt(self.var.numpy() + 1e-8)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)


def _check_obs(obs: np.ndarray, where: str) -> np.ndarray:
    if not np.all(np.isfinite(obs)):
        raise ZooValueError(f"{where}: the environment returned a non-finite observation {obs.tolist()}")
    return obs


@dataclass
class Rollouts:
    """Deterministic evaluation episodes: their returns, the mean gate entropy over the states they visited, for
    goal tasks (``info["goal"]``) whether each ended at a goal, and each episode's gate weights ``[T, K]`` (which
    expert acts when)."""

    returns: list[float]
    lengths: list[int]
    routing_entropy: float
    successes: list[bool] | None
    weights: list[np.ndarray]


def rollouts(
    env, policy: GaussianMixturePolicy, episodes: int, norm: RunningNorm | None = None, seed: int = 0,
    on_frame: Callable[[], None] | None = None,
) -> Rollouts:
    """Run ``episodes`` deterministic episodes (reset seeds ``seed``, ``seed + 1``, …); ``on_frame()`` is called
    after every reset and step (video recording)."""
    returns, lengths, entropies, successes, weights = [], [], [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done, info, length, episode_weights = 0.0, False, {}, 0, []
        while not done:
            if on_frame is not None:
                on_frame()
            x = norm.normalize(obs) if norm is not None else np.asarray(obs, np.float32)
            state = torch.from_numpy(_check_obs(x, "evaluate"))[None]
            with torch.no_grad():
                w = policy(state).weights
            entropies.append(float(-(w * w.clamp_min(1e-12).log()).sum()))
            episode_weights.append(w[0].numpy())
            action = policy.act(state, deterministic=True)[0].numpy()
            obs, reward, terminated, truncated, info = env.step(action * env.action_space.high)
            total += float(reward)
            length += 1
            done = terminated or truncated
        if on_frame is not None:
            on_frame()
        returns.append(total)
        lengths.append(length)
        successes.append(info.get("goal", -1) >= 0 if "goal" in info else None)
        weights.append(np.stack(episode_weights))
    goal_task = all(s is not None for s in successes)
    return Rollouts(returns, lengths, float(np.mean(entropies)), successes if goal_task else None, weights)


def evaluate(env, policy: GaussianMixturePolicy, episodes: int, norm: RunningNorm | None = None, seed: int = 0) -> tuple[float, float]:
    """Mean and std of the return over ``episodes`` deterministic episodes (seeds ``seed``, ``seed + 1``, …)."""
    returns = rollouts(env, policy, episodes, norm, seed).returns
    return float(np.mean(returns)), float(np.std(returns))


def record_evaluation(log: TrainLog, step: int, env, policy: GaussianMixturePolicy, episodes: int,
                      norm: RunningNorm | None, seed: int) -> None:
    """Evaluate the policy and log the step, its mean return and the experts' load: the gate's mean weight per
    expert over the evaluation episodes' states (what ``expert_load.{json,png}`` plot)."""
    result = rollouts(env, policy, episodes, norm, seed)
    log.eval_steps.append(step)
    log.eval_returns.append(float(np.mean(result.returns)))
    log.eval_load.append(np.concatenate(result.weights).mean(axis=0).astype(float).tolist())


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
    eval_load: list[list[float]] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    env_seconds: float = 0.0
    update_seconds: float = 0.0
    updates: int = 0


@dataclass
class LoopState:
    """Everything an off-policy run needs to continue: the last completed step, the replay buffer, the numpy RNG
    (exploration and batch sampling) and the log. A continued run restarts the episode that was in progress."""

    buffer: ReplayBuffer
    rng: np.random.Generator
    log: TrainLog = field(default_factory=TrainLog)
    step: int = 0

    @classmethod
    def fresh(cls, env, agent: SACAgent, steps: int, seed: int) -> LoopState:
        """A new run's state: an empty buffer sized for the run (at most the agent's ``buffer_size``)."""
        size = min(agent.cfg.buffer_size, steps)
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        return cls(ReplayBuffer(obs_dim, act_dim, size), np.random.default_rng(seed))


def train_off_policy(
    env,
    agent: SACAgent,
    steps: int,
    *,
    state: LoopState | None = None,
    start_steps: int = 1000,
    eval_every: int = 5000,
    eval_env=None,
    eval_episodes: int = 10,
    norm: RunningNorm | None = None,
    seed: int = 0,
    on_episode: Callable[[int, float], None] | None = None,
    on_step: Callable[[LoopState], None] | None = None,
) -> TrainLog:
    """Train ``agent`` up to ``steps`` environment steps; see the module docstring. ``state`` continues a saved run
    (a fresh one is made otherwise) and is updated in place. ``on_episode(step, return)`` is called after every episode (progress bars),
    ``on_step(state)`` after every step (checkpoints)."""
    if steps < 1:
        raise ZooValueError(f"steps={steps} must be positive")
    scale = env.action_space.high
    state = state if state is not None else LoopState.fresh(env, agent, steps, seed)
    buf, rng, log = state.buffer, state.rng, state.log
    obs, _ = env.reset(seed=seed + state.step)
    episode_return = 0.0
    for step in range(state.step + 1, steps + 1):
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
            record_evaluation(log, step, eval_env, agent.actor, eval_episodes, norm, seed=10_000 + step)
        state.step = step
        if on_step is not None:
            on_step(state)
    return log
