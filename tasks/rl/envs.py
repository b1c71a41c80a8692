"""Environments of the RL task: gymnasium ids (MuJoCo v5 locomotion and any other continuous-control id) and
:class:`TwoGoalEnv` (``TwoGoal-v0``), a small task whose reward has two equally good optima.

``gymnasium`` (the ``rl`` extra) is imported here, never by ``zoo`` itself. ``make_env`` refuses, with one line,
an unknown id (naming the closest registered ones) and a non-Box action space (PMOE's experts are Gaussians over
continuous actions). MuJoCo's warnings go to Python logging instead of ``MUJOCO_LOG.TXT`` in the working
directory (MuJoCo's default handler writes that file wherever the user runs).

``env_state`` / ``set_env_state`` save and restore an environment mid-episode (its RNG, its time-limit counter and
its simulator state: MuJoCo's full integration state, or the two-goal point), so that a PPO checkpoint continues
exactly where the uninterrupted run would be; they hold plain numbers and tensors (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

import gymnasium as gym
import numpy as np
import torch
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


_seen_warnings: set[str] = set()


def _mujoco_warning(message: str) -> None:
    """Log each distinct MuJoCo warning once per process (every environment made would repeat it)."""
    text = message.strip()
    if text not in _seen_warnings:
        _seen_warnings.add(text)
        log.warning("mujoco: %s", text)


class TwoGoalEnv(gym.Env):
    """A 2-D point that must reach one of two goals, at (−1, 1) and (1, 1), from the origin.

    Action: a velocity in [−1, 1]², scaled by 0.1 per step. Reward per step: −(distance to the nearer goal), and
    +10 and the end of the episode on coming within 0.1 of either; 30 steps at most. The task is mirror-symmetric
    in x, so at the start the best actions are up-left and up-right, and their mean (straight up) is the worst
    direction of the three: a policy fitted to both optima by a mean-seeking (forward-KL or regression) objective
    heads between the goals, while a mixture can give each goal an expert. SAC's actor objective is the reverse
    KL to the soft-optimal policy, which is mode-seeking: measured on the ``rl.two-goal`` board, unimodal SAC breaks
    the symmetry and commits to one goal rather than averaging.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    goals = np.array([[-1.0, 1.0], [1.0, 1.0]])
    step_size, radius, bonus, max_steps = 0.1, 0.1, 10.0, 30

    def __init__(self, render_mode: str | None = None) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ZooValueError(f"{TWO_GOAL_ID} renders only rgb_array frames, not {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-3.0, 3.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.pos = np.zeros(2)
        self.t = 0
        self.trail: list[np.ndarray] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.pos = self.np_random.normal(0.0, 0.01, size=2)
        self.t = 0
        self.trail = [self.pos.copy()]
        return self.pos.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        move = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0) * self.step_size
        self.pos = np.clip(self.pos + move, -3.0, 3.0)
        self.trail.append(self.pos.copy())
        self.t += 1
        dist = np.linalg.norm(self.goals - self.pos, axis=1)
        reached = bool(dist.min() < self.radius)
        reward = -float(dist.min()) + (self.bonus if reached else 0.0)
        truncated = self.t >= self.max_steps and not reached
        return self.pos.astype(np.float32), reward, reached, truncated, {"goal": int(dist.argmin()) if reached else -1}

    def get_state(self) -> dict[str, Any]:
        """The episode's state: the point and the step count (the drawn trail restarts from the point)."""
        return {"pos": self.pos.tolist(), "t": self.t}

    def set_state(self, state: dict[str, Any]) -> None:
        self.pos, self.t = np.asarray(state["pos"], np.float64), int(state["t"])
        self.trail = [self.pos.copy()]

    def render(self, size: int = 160) -> np.ndarray:
        """A top view of the square [−1.5, 1.5] × [−0.5, 1.5]: goals in green, the path so far in blue."""
        frame = np.full((size, size, 3), 255, np.uint8)

        def pixel(p: np.ndarray) -> tuple[int, int]:
            col = int((p[0] + 1.5) / 3.0 * (size - 1))
            row = int((1.5 - p[1]) / 2.0 * (size - 1))
            return min(max(row, 0), size - 1), min(max(col, 0), size - 1)

        def dot(p: np.ndarray, radius: int, colour: tuple[int, int, int]) -> None:
            r, c = pixel(p)
            frame[max(r - radius, 0): r + radius + 1, max(c - radius, 0): c + radius + 1] = colour

        for goal in self.goals:
            dot(goal, 4, (40, 160, 40))
        for p in self.trail:
            dot(p, 1, (60, 90, 220))
        dot(self.pos, 3, (20, 40, 160))
        return frame


def make_env(env_id: str, seed: int | None = None, render_mode: str | None = None) -> Any:
    """A gymnasium environment by id (``TwoGoal-v0`` included), checked for a continuous action space;
    ``render_mode="rgb_array"`` makes it render frames (videos)."""
    route_mujoco_warnings()
    if env_id == TWO_GOAL_ID:
        env = TwoGoalEnv(render_mode=render_mode)
    else:
        registered = list(gym.envs.registry)
        if env_id not in registered:
            close = difflib.get_close_matches(env_id, [*registered, TWO_GOAL_ID], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ZooValueError(f"unknown environment id {env_id!r}{hint}")
        try:
            env = gym.make(env_id, render_mode=render_mode)
        except gym.error.DependencyNotInstalled as err:  # a registered id whose simulator is not installed
            raise ZooValueError(f"environment {env_id} cannot be made: {str(err).strip().splitlines()[0]}") from None
    if not isinstance(env.action_space, gym.spaces.Box):
        name = type(env.action_space).__name__
        env.close()
        raise ZooValueError(f"{env_id} has a {name} action space; PMOE's Gaussian experts need continuous (Box) actions")
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def _time_limit(env: Any) -> gym.wrappers.TimeLimit | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def env_state(env: Any) -> dict[str, Any]:
    """An environment's state mid-episode: its RNG, its elapsed steps and the simulator's state (a ``TwoGoalEnv``'s
    point, a MuJoCo environment's ``mjSTATE_INTEGRATION``: time, positions, velocities, controls, warm start).

    Raises:
        ZooValueError: for an environment whose simulator state this module cannot read.
    """
    base = env.unwrapped
    state: dict[str, Any] = {"rng": base.np_random.bit_generator.state}
    limit = _time_limit(env)
    if limit is not None:
        state["elapsed"] = limit._elapsed_steps
    if hasattr(base, "get_state"):
        state["sim"] = base.get_state()
    elif hasattr(base, "model") and hasattr(base, "data"):
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        values = np.empty(mujoco.mj_stateSize(base.model, spec), np.float64)
        mujoco.mj_getState(base.model, base.data, values, spec)
        state["mujoco"] = torch.from_numpy(values)
    else:
        name = getattr(getattr(base, "spec", None), "id", None) or type(base).__name__
        raise ZooValueError(f"{name}: cannot save this environment's state mid-episode (supported: MuJoCo, {TWO_GOAL_ID})")
    return state


def set_env_state(env: Any, state: dict[str, Any]) -> None:
    """Restore what ``env_state`` saved into an environment of the same id that has been reset."""
    base = env.unwrapped
    base.np_random.bit_generator.state = state["rng"]
    limit = _time_limit(env)
    if limit is not None and "elapsed" in state:
        limit._elapsed_steps = state["elapsed"]
    if "sim" in state:
        base.set_state(state["sim"])
    else:
        import mujoco

        mujoco.mj_setState(base.model, base.data, state["mujoco"].numpy(), mujoco.mjtState.mjSTATE_INTEGRATION)
