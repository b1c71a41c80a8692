"""``zoo predict rl``: run a trained agent for a few deterministic episodes, draw its routing and optionally film it.

``INPUT`` is optional: an environment id to run the agent in (default: the one it was trained on; its observation
and action sizes and action bounds must match the model info's). ``--video out.mp4`` (or ``.gif``) renders every
episode offscreen; MuJoCo renders through EGL (``MUJOCO_GL=egl``, set here unless the user chose a backend, e.g.
``osmesa``). ``--plot out.png`` draws the returns and the gate's weights over the steps (``routing_plot.py``),
``--out rows.csv`` writes the rows. Every output is built in memory (the video in a temporary file) before any is
written.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ZooValueError
from zoo.io import atomic_write_bytes, atomic_write_text

from .envs import make_env
from .evaluation import TEST_SEED
from .loop import rollouts
from .routing_plot import routing_png

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


def _check_options(episodes: int, video: str | None, plot: str | None) -> None:
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ZooValueError(f"--episodes {episodes}: must be a positive int")
    if video is not None and Path(video).suffix.lower() not in VIDEO_SUFFIXES:
        raise ZooValueError(f"--video {video}: give a file ending in {' or '.join(VIDEO_SUFFIXES)}")
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise ZooValueError(f"--plot {plot}: give a file ending in .png")


def _check_env(env: Any, env_id: str, trained_on: str, info: dict[str, Any]) -> None:
    """Refuse an environment whose spaces differ from the ones the agent was trained on."""
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    if (obs_dim, act_dim) != (info["obs_dim"], info["act_dim"]):
        raise ZooValueError(f"weights trained on {trained_on} (observations {info['obs_dim']}, actions "
                            f"{info['act_dim']}) cannot act in {env_id} (observations {obs_dim}, actions {act_dim})")
    high = np.asarray(env.action_space.high, np.float64)
    if not np.allclose(high, info["action_high"]):
        raise ZooValueError(f"weights trained on {trained_on} (actions up to {list(info['action_high'])}) cannot act "
                            f"in {env_id} (actions up to {high.tolist()})")


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def predict(loaded: Any, env_id: str | None = None, *, episodes: int = 1, video: str | None = None,
            plot: str | None = None, out: str | None = None) -> list[dict]:
    """Run ``episodes`` deterministic episodes; one row per episode (return, length, goal reached where the task
    has goals, mean routing entropy). Uses only the loaded config, module and model info."""
    cfg, info, model = loaded.config, loaded.info, loaded.module.model
    _check_options(episodes, video, plot)
    env_id = env_id or cfg.env
    if video is not None:
        os.environ.setdefault("MUJOCO_GL", "egl")
    env = make_env(env_id, render_mode="rgb_array" if video is not None else None)
    try:
        _check_env(env, env_id, cfg.env, info)
    except ZooValueError:
        env.close()
        raise
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
    rows, weights = [], []
    for i in range(episodes):
        one = rollouts(env, model.actor, 1, norm, seed=TEST_SEED + i, on_frame=record if video is not None else None)
        row = {"episode": i, "env": env_id, "return": one.returns[0], "length": one.lengths[0],
               "routing_entropy": one.routing_entropy}
        if one.successes is not None:
            row["goal_reached"] = bool(one.successes[0])
        rows.append(row)
        weights.append(one.weights[0])
    env.close()
    reached = [r["goal_reached"] for r in rows] if "goal_reached" in rows[0] else None
    png = routing_png(env_id, [r["return"] for r in rows], weights, reached) if plot is not None else None
    table = _csv_text(rows) if out is not None else None
    if video is not None:
        _write_video(Path(video), frames, min(fps, VIDEO_FPS))
    if png is not None:
        atomic_write_bytes(plot, png)
    if table is not None:
        atomic_write_text(out, table)
    return rows
