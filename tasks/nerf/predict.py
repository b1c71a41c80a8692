"""``zoo predict nerf``: render novel views from trained weights, with the expert that owns each pixel.

``--pose FILE`` renders the camera-to-world poses of a JSON file (OpenGL convention, as ``transforms.json``): one
4×4 matrix, a list of them, an object with ``transform_matrix`` or a ``transforms.json``-style object with
``frames``. ``--orbit N`` renders N views on a circle around what the training cameras looked at, at their mean
distance and height (world z up). Views use the training focal length and image size (``--size`` changes the size
and keeps the field of view) and the mean appearance code of the training images. ``--out DIR`` receives one PNG per
pose (``view_000.png``) or ``orbit.gif``, the expert-assignment images (``experts_000.png`` or ``experts.gif`` plus
``experts.png``, the first orbit frame: each pixel coloured by the expert of its heaviest sample, dark grey where no
surface is hit; dense models have none) and ``views.csv`` with the rows. Images are enlarged ``--scale`` times
(nearest neighbour). Nothing is written unless every view rendered.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.errors import ZooValueError
from zoo.io import atomic_write_text

from .cameras import camera_rays, check_pose
from .city import look_at

MAX_ORBIT = 360
MAX_SIZE = 1024
DEFAULT_SCALE = 4
ORBIT_FPS = 12


def read_poses(path: str | Path) -> list[np.ndarray]:
    """The 4×4 rigid camera-to-world poses of a ``--pose`` JSON file (module docstring), or one line saying why
    not."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ZooValueError(f"--pose {path}: no such file") from None
    except UnicodeDecodeError:
        raise ZooValueError(f"--pose {path}: not JSON (not UTF-8 text)") from None
    except OSError as err:
        raise ZooValueError(f"--pose {path}: cannot read it ({err.strerror or err.__class__.__name__})") from None
    except json.JSONDecodeError as err:
        raise ZooValueError(f"--pose {path}: not JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(data, dict) and "frames" in data:
        frames = data["frames"]
        if not isinstance(frames, list) or not frames:
            raise ZooValueError(f"--pose {path}: 'frames' must be a non-empty list")
        matrices = []
        for i, frame in enumerate(frames):
            if not isinstance(frame, dict) or "transform_matrix" not in frame:
                raise ZooValueError(f"--pose {path}: frames[{i}] has no transform_matrix")
            matrices.append((frame["transform_matrix"], f"--pose {path} frames[{i}]"))
    elif isinstance(data, dict) and "transform_matrix" in data:
        matrices = [(data["transform_matrix"], f"--pose {path}")]
    elif isinstance(data, list) and data and isinstance(data[0], list) and data[0] and isinstance(data[0][0], list):
        matrices = [(m, f"--pose {path}[{i}]") for i, m in enumerate(data)]
    elif isinstance(data, list):
        matrices = [(data, f"--pose {path}")]
    else:
        raise ZooValueError(f"--pose {path}: expected a 4x4 matrix, a list of them, an object with "
                            "'transform_matrix' or one with 'frames'")
    return [check_pose(m, where) for m, where in matrices]


def orbit_poses(orbit: dict[str, Any], count: int) -> list[np.ndarray]:
    """``count`` poses evenly spaced on the training cameras' circle, looking at its centre."""
    centre = np.asarray(orbit["centre"], np.float64)
    radius, height = float(orbit["radius"]), float(orbit["height"])
    angles = 2 * math.pi * np.arange(count) / count
    return [look_at(centre + [radius * math.cos(a), radius * math.sin(a), height], centre) for a in angles]


@torch.no_grad()
def render_pose(module: Any, c2w: np.ndarray, intrinsics: np.ndarray, size: tuple[int, int],
                code: torch.Tensor) -> dict[str, np.ndarray]:
    """``rgb [H, W, 3]`` in [0, 1], ``expert`` and ``opacity [H, W]`` of one camera."""
    from .evaluation import render_image

    height, width = size
    origins, directions = camera_rays(c2w, intrinsics, height, width)
    o = torch.from_numpy(origins.reshape(-1, 3).astype(np.float32))
    d = torch.from_numpy(directions.reshape(-1, 3).astype(np.float32))
    return render_image(module, o, d, code.expand(len(o), -1), height, width)


def predict(loaded: Any, *, out: str | Path | None = None, pose: str | Path | None = None, orbit: int | None = None,
            size: int | None = None, scale: int = DEFAULT_SCALE) -> list[dict]:
    """Render the views of ``--pose`` or ``--orbit`` into ``out`` (module docstring).

    Args:
        loaded: a :class:`zoo.task.LoadedModel` of the nerf task.
        out: the output folder (created).
        pose: a JSON file of camera-to-world poses.
        orbit: the number of orbit views, 2 to 360.
        size: rendered height (width scaled to keep the aspect), default the training size.
        scale: integer enlargement of the written images, 1 to 16.

    Returns:
        One dict per view: ``view``, ``file``, ``experts_file`` (None for a dense model), ``opaque`` (share of
        pixels more than half opaque) and, for MoE fields, each expert's share of the pixels it owns
        (``expert_<e>``).

    Raises:
        ZooValueError: both or neither of ``pose``/``orbit``, no ``out`` or one that is a file or cannot be
            created, a malformed pose file, a bad size.
    """
    if (pose is None) == (orbit is None):
        raise ZooValueError("give exactly one of --pose FILE (camera poses as JSON) or --orbit N (views on a circle)")
    if out is None:
        raise ZooValueError("--out DIR is required: the folder the rendered images are written to")
    if orbit is not None and not 2 <= orbit <= MAX_ORBIT:
        raise ZooValueError(f"--orbit {orbit} is not allowed; give 2 to {MAX_ORBIT} views")
    if not 1 <= scale <= 16:
        raise ZooValueError(f"--scale {scale} is not allowed; give an integer enlargement from 1 to 16")
    if Path(out).exists() and not Path(out).is_dir():
        raise ZooValueError(f"--out {out} is a file; give a folder for the rendered images")
    info, module = loaded.info, loaded.module
    train_h, train_w = (int(v) for v in info["image_size"])
    height = train_h if size is None else size
    if not 8 <= height <= MAX_SIZE:
        raise ZooValueError(f"--size {size} is not allowed; give a height from 8 to {MAX_SIZE} pixels")
    width = max(1, round(train_w * height / train_h))
    focal = float(info["orbit"]["focal"]) * height / train_h
    intrinsics = np.array([focal, focal, width / 2, height / 2])
    poses = read_poses(pose) if pose is not None else orbit_poses(info["orbit"], orbit)
    module.eval()
    code = module.model.mean_code(info["train_appearance"])[None]
    with _progress(len(poses)) as bar:
        task = bar.add_task("rendering views", total=len(poses))
        views = []
        for c2w in poses:
            views.append(render_pose(module, c2w, intrinsics, (height, width), code))
            bar.advance(task)
    layer = getattr(module.model.field, "layer", None)
    return write_outputs(Path(out), views, layer.experts.num_experts if layer is not None else 0, orbit is not None,
                         scale)


def _progress(total: int) -> Any:
    """A transient bar on stderr for more than a handful of views, shown only on a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=total <= 4 or not console.is_terminal)


def write_outputs(out: Path, views: list[dict[str, np.ndarray]], num_experts: int, as_orbit: bool,
                  scale: int) -> list[dict]:
    """Write the renders and (with ``num_experts``) the expert images; one row per view."""
    from .plots import expert_image, write_gif, write_png

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ZooValueError(f"--out {out}: cannot create the folder ({err.strerror or type(err).__name__})") from None
    frames = np.stack([v["rgb"] for v in views])
    maps = np.stack([expert_image(v["expert"]) for v in views]) if num_experts else None
    if as_orbit:
        write_gif(out / "orbit.gif", frames, fps=ORBIT_FPS, scale=scale)
        if maps is not None:
            write_gif(out / "experts.gif", maps, fps=ORBIT_FPS, scale=scale)
            write_png(out / "experts.png", maps[0], scale=scale)
    rows = []
    for i, (frame, view) in enumerate(zip(frames, views)):
        name = f"view_{i:03d}.png"
        expert_name = f"experts_{i:03d}.png" if maps is not None else None
        if not as_orbit:
            write_png(out / name, frame, scale=scale)
            if maps is not None:
                write_png(out / expert_name, maps[i], scale=scale)
        surface = view["expert"] >= 0
        row = {"view": i, "file": str(out / ("orbit.gif" if as_orbit else name)),
               "experts_file": None if maps is None else str(out / ("experts.gif" if as_orbit else expert_name)),
               "opaque": float((view["opacity"] > 0.5).mean())}
        for e in range(num_experts):
            row[f"expert_{e}"] = float((view["expert"] == e).sum() / max(1, surface.sum()))
        rows.append(row)
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join("" if r[c] is None else str(r[c]) for c in columns) for r in rows]
    atomic_write_text(out / "views.csv", "\n".join(lines) + "\n")
    return rows
