"""``zoo predict rl``: run a trained agent for a few deterministic episodes and optionally film it.

``INPUT`` is optional: an environment id to run the agent in (default: the one it was trained on; its
observation and action sizes must match). ``--video out.mp4`` (or ``.gif``) renders every episode offscreen;
MuJoCo renders through EGL (``MUJOCO_GL=egl``, set here unless the user chose a backend, e.g. ``osmesa``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ZooValueError

from .evaluation import TEST_SEED
from .loop import rollouts

VIDEO_SUFFIXES = (".mp4", ".gif")
VIDEO_FPS = 30


def _write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Encode frames to ``path`` through a temporary file beside it, renamed into place when complete."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; give the video the usual permissions
    os.close(fd)
    try:
        if path.suffix == ".gif":
            imageio.mimwrite(tmp, frames, duration=1000 / fps, loop=0)
        else:
            imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def predict(loaded: Any, env_id: str | None = None, *, episodes: int = 1, video: str | None = None,
            **_: Any) -> list[dict]:
    """Run ``episodes`` deterministic episodes; one row per episode (return, length, goal reached where the task
    has goals, mean routing entropy). Options of other tasks (``--horizon``, ``--out``, ``--plot``) are ignored."""
    cfg, dm, model = loaded.config, loaded.datamodule, loaded.module.model
    if episodes < 1:
        raise ZooValueError(f"--episodes {episodes}: must be at least 1")
    video_path = Path(video) if video else None
    if video_path is not None and video_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ZooValueError(f"--video {video}: give a file ending in {' or '.join(VIDEO_SUFFIXES)}")
    env_id = env_id or cfg.env
    if video_path is not None:
        os.environ.setdefault("MUJOCO_GL", "egl")
    from .envs import make_env

    env = make_env(env_id, render_mode="rgb_array" if video_path is not None else None)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    if (obs_dim, act_dim) != (dm.obs_dim, dm.act_dim):
        env.close()
        raise ZooValueError(f"weights trained on {cfg.env} (observations {dm.obs_dim}, actions {dm.act_dim}) cannot "
                            f"act in {env_id} (observations {obs_dim}, actions {act_dim})")
    frames: list[np.ndarray] = []
    fps = float(env.metadata.get("render_fps") or VIDEO_FPS)
    every = max(1, round(fps / VIDEO_FPS))

    def record() -> None:
        nonlocal calls
        if calls % every == 0:
            try:
                frames.append(np.asarray(env.render()))
            except Exception as err:  # noqa: BLE001 - OpenGL failures surface as many exception types
                raise ZooValueError(f"cannot render {env_id} offscreen ({type(err).__name__}: {err}); set "
                                    "MUJOCO_GL=egl or MUJOCO_GL=osmesa (apt libosmesa6) before running") from None
        calls += 1

    calls = 0
    norm = model.obs_norm if cfg.train.normalize_obs else None
    rows = []
    for i in range(episodes):
        one = rollouts(env, model.actor, 1, norm, seed=TEST_SEED + i, on_frame=record if video_path else None)
        row = {"episode": i, "env": env_id, "return": one.returns[0], "length": one.lengths[0],
               "routing_entropy": one.routing_entropy}
        if one.successes is not None:
            row["goal_reached"] = bool(one.successes[0])
        rows.append(row)
    env.close()
    if video_path is not None:
        _write_video(video_path, frames, min(fps, VIDEO_FPS))
    return rows
