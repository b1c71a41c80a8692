"""Environments of the RL task: gymnasium ids (MuJoCo v5 locomotion and any other continuous-control id) and
:class:`TwoGoalEnv` (``TwoGoal-v0``), a small task whose reward has two equally good optima.

``gymnasium`` (the ``rl`` extra) is imported here, never by ``zoo`` itself. ``make_env`` refuses, with one line,
an unknown id (naming the closest registered ones) and a non-Box action space (PMOE's experts are Gaussians over
continuous actions). MuJoCo's warnings go to Python logging instead of ``MUJOCO_LOG.TXT`` in the working
directory (MuJoCo's default handler writes that file wherever the user runs).
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from zoo.errors import ZooValueError

log = logging.getLogger(__name__)

TWO_GOAL_ID = "TwoGoal-v0"


def route_mujoco_warnings() -> None:
    """Send MuJoCo warnings to this module's logger (idempotent; a no-op without mujoco)."""
    try:
        import mujoco
    except ImportError:
        return
    if mujoco.get_mju_user_warning() is not _mujoco_warning:
        mujoco.set_mju_user_warning(_mujoco_warning)


def _mujoco_warning(message: str) -> None:
    log.warning("mujoco: %s", message.strip())


class TwoGoalEnv(gym.Env):
    """A 2-D point that must reach one of two goals, at (−1, 1) and (1, 1), from the origin.

    Action: a velocity in [−1, 1]², scaled by 0.1 per step. Reward per step: −(distance to the nearer goal), and
    +10 and the end of the episode on coming within 0.1 of either; 30 steps at most. The task is mirror-symmetric
    in x, so at the start the best actions are up-left and up-right, and their mean (straight up) is the worst
    direction of the three: a unimodal Gaussian policy whose mean starts on the axis gets no expected gradient
    across it and heads between the goals, while a mixture can give each goal an expert.
    """

    metadata = {"render_modes": []}
    goals = np.array([[-1.0, 1.0], [1.0, 1.0]])
    step_size, radius, bonus, max_steps = 0.1, 0.1, 10.0, 30

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-3.0, 3.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.pos = np.zeros(2)
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.pos = self.np_random.normal(0.0, 0.01, size=2)
        self.t = 0
        return self.pos.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        move = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0) * self.step_size
        self.pos = np.clip(self.pos + move, -3.0, 3.0)
        self.t += 1
        dist = np.linalg.norm(self.goals - self.pos, axis=1)
        reached = bool(dist.min() < self.radius)
        reward = -float(dist.min()) + (self.bonus if reached else 0.0)
        truncated = self.t >= self.max_steps and not reached
        return self.pos.astype(np.float32), reward, reached, truncated, {"goal": int(dist.argmin()) if reached else -1}


def make_env(env_id: str, seed: int | None = None) -> Any:
    """A gymnasium environment by id (``TwoGoal-v0`` included), checked for a continuous action space."""
    route_mujoco_warnings()
    if env_id == TWO_GOAL_ID:
        env = TwoGoalEnv()
    else:
        registered = list(gym.envs.registry)
        if env_id not in registered:
            close = difflib.get_close_matches(env_id, [*registered, TWO_GOAL_ID], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ZooValueError(f"unknown environment id {env_id!r}{hint}")
        env = gym.make(env_id)
    if not isinstance(env.action_space, gym.spaces.Box):
        name = type(env.action_space).__name__
        env.close()
        raise ZooValueError(f"{env_id} has a {name} action space; PMOE's Gaussian experts need continuous (Box) actions")
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env
