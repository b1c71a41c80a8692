"""Pictures of the NeRF experts: which expert renders each pixel, test views beside their renders and errors, how
the experts split the city's downtown and suburb, atomic PNG and looping GIF writers, and the figures of a
reproduced board (:func:`main`).

Expert ``e`` always has the same colour (:func:`expert_colours`: matplotlib's ``tab10``, then ``tab20b``), and a
pixel no expert renders (sky, empty space: id -1) is dark grey. The 64-pixel views are small, so the writers take a
whole enlargement ``scale`` (nearest neighbour, pixels stay square). A reproduced board's figures::

    python -m zoo.tasks.nerf.plots nerf.procedural-city --tier full

write ``leaderboards/<board>.views.png`` (one test view of every row whose lowest-seed run directory still holds its
``renders.npz``: the render and its expert map, with the view's PSNR) and ``leaderboards/<board>.speed.png`` (per
row the training seconds to the target PSNR and the render milliseconds, mean over seeds, from the results files).
"""

from __future__ import annotations

import io
import math
import textwrap
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zoo.errors import ZooValueError, check_arg
from zoo.io import atomic_write_bytes

from .city import ASPHALT, GRASS
from .metrics import purity

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Colour of pixels without an expert (id -1).
NONE_COLOUR = (48, 48, 48)
#: What each run directory keeps of its test renders (gt, pred, experts, psnr, names).
RENDERS_FILE = "renders.npz"
RENDERS_KEYS = ("gt", "pred", "experts", "psnr", "names")
#: The test view of every row on the board's views figure.
BOARD_VIEW = 0
#: Timing metrics of the board's speed figure, with their axis labels.
SPEED_METRICS = {"test/train_s_to_target": "training seconds to the target PSNR",
                 "test/render_ms": "render milliseconds"}
DEFAULT_BOARD = "nerf.procedural-city"
LEGEND_FONT = 7
#: Characters per line of a view's label beside its row of :func:`views_figure` (what fits a panel's height).
ROW_LABEL_CHARS = 28


def _palette() -> list[tuple[int, int, int]]:
    from matplotlib import colormaps

    colours = list(colormaps["tab10"].colors) + list(colormaps["tab20b"].colors)
    return [tuple(round(255 * v) for v in c[:3]) for c in colours]


def expert_colours(num_experts: int) -> np.ndarray:
    """One distinct colour per expert; expert ``e`` has the same colour whatever the count.

    Args:
        num_experts: number of experts E (1 to 30).

    Returns:
        uint8 ``[E, 3]`` RGB.
    """
    palette = _palette()
    ok = isinstance(num_experts, int | np.integer) and 1 <= num_experts <= len(palette)
    check_arg(ok, "num_experts", num_experts, f"an int in [1, {len(palette)}]")
    return np.asarray(palette[:num_experts], np.uint8)


def expert_image(ids: np.ndarray) -> np.ndarray:
    """Colour each pixel by its expert.

    Args:
        ids: int ``[H, W]`` expert ids, -1 for none.

    Returns:
        uint8 ``[H, W, 3]``: :func:`expert_colours` per id, :data:`NONE_COLOUR` for -1.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ZooValueError(f"expert ids must be an int array [H, W], got {ids.dtype} {list(ids.shape)}")
    if ids.size and ids.min() < -1:
        raise ZooValueError(f"expert ids must be -1 (none) or >= 0, got {ids.min()}")
    top = int(ids.max()) if ids.size else -1
    colours = np.concatenate([expert_colours(top + 1) if top >= 0 else np.zeros((0, 3), np.uint8),
                              np.asarray([NONE_COLOUR], np.uint8)])
    return colours[ids]  # -1 picks the last row, NONE_COLOUR


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Enlarge by a whole factor, nearest neighbour.

    Args:
        image: ``[H, W]`` or ``[..., H, W, C]`` (channels last, e.g. frames ``[n, H, W, 3]``).
        factor: the enlargement (>= 1).

    Returns:
        The array with both spatial sides ``factor`` times longer, same dtype.
    """
    check_arg(isinstance(factor, int) and not isinstance(factor, bool) and factor >= 1, "factor", factor,
              "an int >= 1")
    image = np.asarray(image)
    check_arg(image.ndim >= 2, "image", f"an array of shape {list(image.shape)}", "[H, W] or [..., H, W, C]")
    rows, cols = (0, 1) if image.ndim == 2 else (image.ndim - 3, image.ndim - 2)
    return np.repeat(np.repeat(image, factor, axis=rows), factor, axis=cols)


def _uint8(image: np.ndarray) -> np.ndarray:
    """Pixels as uint8: floats in [0, 1] are clipped and rounded (NaN black), uint8 passes unchanged."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise ZooValueError(f"pixels must be floats in [0, 1] or uint8, got dtype {image.dtype}")
    return np.round(np.clip(np.nan_to_num(image, nan=0.0), 0, 1) * 255).astype(np.uint8)


def _check_suffix(path: str | Path, suffix: str) -> Path:
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise ZooValueError(f"{path}: expected a {suffix} file name")
    return path


def write_png(path: str | Path, image: np.ndarray, scale: int = 1) -> Path:
    """Write an RGB image as a PNG, atomically.

    Args:
        path: a ``.png`` path.
        image: ``[H, W, 3]`` floats in [0, 1] or uint8.
        scale: whole enlargement (nearest neighbour).

    Returns:
        The path written.
    """
    from PIL import Image

    path = _check_suffix(path, ".png")
    pixels = _uint8(image)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ZooValueError(f"{path}: image must be [H, W, 3], got shape {list(pixels.shape)}")
    buffer = io.BytesIO()
    Image.fromarray(upscale(pixels, scale)).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 10, scale: int = 1) -> Path:
    """Write frames as a GIF that loops forever, atomically.

    Args:
        path: a ``.gif`` path.
        frames: ``[n, H, W, 3]`` floats in [0, 1] or uint8 (GIF keeps at most 256 colours per frame).
        fps: frames per second, in (0, 100] (GIF times frames in hundredths of a second).
        scale: whole enlargement (nearest neighbour).

    Returns:
        The path written.
    """
    from PIL import Image

    path = _check_suffix(path, ".gif")
    check_arg(isinstance(fps, int | float) and not isinstance(fps, bool) and 0 < fps <= 100, "fps", fps,
              "a number in (0, 100]")
    pixels = _uint8(frames)
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or len(pixels) == 0:
        raise ZooValueError(f"{path}: frames must be [n, H, W, 3] with n >= 1, got shape {list(pixels.shape)}")
    images = [Image.fromarray(frame) for frame in upscale(pixels, scale)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps),
                   loop=0)
    return atomic_write_bytes(path, buffer.getvalue())


def _legend(fig: Figure, num_experts: int, with_none: bool) -> None:
    """A row of expert colour patches below the figure."""
    from matplotlib.patches import Patch

    colours = expert_colours(num_experts) / 255 if num_experts else []
    handles = [Patch(color=c, label=f"expert {e}") for e, c in enumerate(colours)]
    if with_none:
        handles.append(Patch(color=np.asarray(NONE_COLOUR) / 255, label="none"))
    fits = int(fig.get_figwidth() * 72 / (LEGEND_FONT * 0.65 * 10 + 3 * LEGEND_FONT))  # entries per line
    fig.legend(handles=handles, loc="outside lower center", ncol=max(1, min(len(handles), fits)),
               fontsize=LEGEND_FONT, frameon=False)


def _images(name: str, value: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    value = np.asarray(value)
    expected = "[n, H, W, 3]" if shape is None else str(list(shape))
    if value.ndim != 4 or value.shape[-1] != 3 or len(value) == 0 or (shape is not None and value.shape != shape):
        raise ZooValueError(f"{name} has shape {list(value.shape)}; expected {expected}")
    return value


def views_figure(gt: np.ndarray, pred: np.ndarray, experts: np.ndarray | None, titles: Sequence[str]) -> Figure:
    """One row per view: ground truth, render, absolute error (heat) and, when given, the expert of each pixel.

    Args:
        gt: true images ``[n, H, W, 3]`` in [0, 1].
        pred: renders of the same shape.
        experts: int ``[n, H, W]`` expert ids (-1 none), or None for a model without experts.
        titles: one label per view.
    """
    from matplotlib.figure import Figure

    gt = _images("gt", gt)
    pred = _images("pred", pred, gt.shape)
    if len(titles) != len(gt):
        raise ZooValueError(f"{len(titles)} titles for {len(gt)} views; expected one per view")
    if experts is not None:
        experts = np.asarray(experts)
        if experts.shape != gt.shape[:-1]:
            raise ZooValueError(f"experts has shape {list(experts.shape)}; expected {list(gt.shape[:-1])}")
    error = np.abs(pred.astype(np.float64) - gt).mean(axis=-1)
    columns = ["ground truth", "render", "|error|"] + ([] if experts is None else ["experts"])
    fig = Figure(figsize=(1.9 * len(columns) + 1.0, 1.9 * len(gt) + (0.9 if experts is not None else 0.4)),
                 layout="constrained")
    axes = fig.subplots(len(gt), len(columns), squeeze=False)
    heat = None
    vmax = max(float(error.max()), 1e-6)
    for i in range(len(gt)):
        axes[i, 0].imshow(_uint8(gt[i]), interpolation="nearest")
        axes[i, 1].imshow(_uint8(pred[i]), interpolation="nearest")
        heat = axes[i, 2].imshow(error[i], cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
        if experts is not None:
            axes[i, 3].imshow(expert_image(experts[i]), interpolation="nearest")
        axes[i, 0].set_ylabel(textwrap.fill(titles[i], ROW_LABEL_CHARS), fontsize=8)
        for ax in axes[i]:
            ax.set(xticks=[], yticks=[])
    for ax, name in zip(axes[0], columns):
        ax.set_title(name, fontsize=9)
    fig.colorbar(heat, ax=list(axes[:, 2]), shrink=0.8, label="mean |error| over RGB")
    if experts is not None:
        _legend(fig, int(experts.max()) + 1, bool((experts == -1).any()))
    return fig


def expert_region_figure(table: np.ndarray, finest: int | None = None) -> Figure:
    """Per expert a stacked bar of the downtown and suburb points it takes.

    Args:
        table: ``[E, 2]`` (downtown, suburb) counts of :func:`.metrics.expert_region_table`.
        finest: the expert with the finest hash grid, marked on the plot, or None.
    """
    from matplotlib.figure import Figure

    table = np.asarray(table)
    score = purity(table)  # validates the table
    ok = finest is None or (isinstance(finest, int | np.integer) and 0 <= finest < len(table))
    check_arg(ok, "finest", finest, f"None or an expert index in 0..{len(table) - 1}")
    fig = Figure(figsize=(max(4.0, 0.6 * len(table) + 2.0), 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(table))
    ax.bar(x, table[:, 0], color=ASPHALT, label="downtown (x < 0)")
    ax.bar(x, table[:, 1], bottom=table[:, 0], color=GRASS, label="suburb (x >= 0)")
    labels = [str(e) for e in x]
    if finest is not None:
        ax.bar([finest], [table[finest].sum()], fill=False, edgecolor="crimson", linewidth=2)
        labels[finest] = f"{finest}\nfinest"
    ax.set_xticks(x, labels=labels)
    ax.set(xlabel="expert", ylabel="points", title=f"points per expert by region (purity {score:.3f})")
    ax.legend(fontsize=8)
    return fig


def read_renders(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a run directory's :data:`RENDERS_FILE`, checked for the keys and shapes the figures read."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with data:
            arrays = {k: data[k] for k in RENDERS_KEYS if k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ZooValueError(f"{path}: cannot read ({e})") from None
    missing = [k for k in RENDERS_KEYS if k not in arrays]
    if missing:
        raise ZooValueError(f"{path}: missing {', '.join(missing)}; expected {', '.join(RENDERS_KEYS)}")
    n = len(arrays["gt"])
    shapes = {k: list(v.shape) for k, v in arrays.items()}
    ok = (arrays["gt"].ndim == 4 and arrays["gt"].shape[-1] == 3 and arrays["pred"].shape == arrays["gt"].shape
          and arrays["experts"].shape == arrays["gt"].shape[:-1] and shapes["psnr"] == shapes["names"] == [n])
    if not ok:
        raise ZooValueError(f"{path}: shapes {shapes}; expected gt and pred [n, H, W, 3], experts [n, H, W], "
                            "psnr and names [n]")
    return arrays


def board_views_figure(board: str, renders: dict[str, dict[str, np.ndarray]], view: int = BOARD_VIEW) -> Figure:
    """One test view of every row: ground truth, then per row its render above its expert map.

    Args:
        board: the board's name (the title).
        renders: per row the arrays of :func:`read_renders`.
        view: index of the test view drawn.
    """
    from matplotlib.figure import Figure

    if not renders:
        raise ZooValueError(f"{board}: no renders to draw; expected at least one row's {RENDERS_FILE}")
    first = next(iter(renders.values()))
    fewest = min(len(data["gt"]) for data in renders.values())
    check_arg(isinstance(view, int) and 0 <= view < fewest, "view", view, f"a test view index below {fewest}")
    fig = Figure(figsize=(1.7 * (len(renders) + 1) + 0.4, 4.3), layout="constrained")
    axes = fig.subplots(2, len(renders) + 1, squeeze=False)
    axes[0, 0].imshow(_uint8(first["gt"][view]), interpolation="nearest")
    axes[0, 0].set_title(f"ground truth\n{first['names'][view]}", fontsize=7)
    axes[1, 0].axis("off")
    top = -1
    for col, (row, data) in enumerate(renders.items(), start=1):
        ids = np.asarray(data["experts"][view]).astype(np.int64)
        top = max(top, int(ids.max()))
        axes[0, col].imshow(_uint8(data["pred"][view]), interpolation="nearest")
        axes[0, col].set_title(f"{row}\n{float(data['psnr'][view]):.2f} dB", fontsize=7)
        if (ids >= 0).any():
            axes[1, col].imshow(expert_image(ids), interpolation="nearest")
        else:
            axes[1, col].text(0.5, 0.5, "no experts", ha="center", va="center", fontsize=7,
                              transform=axes[1, col].transAxes)
    for ax in axes[:, 1:].ravel():
        ax.set(xticks=[], yticks=[])
    axes[0, 0].set(xticks=[], yticks=[])
    axes[0, 1].set_ylabel("render", fontsize=8)
    axes[1, 1].set_ylabel("top-1 expert", fontsize=8)
    if top >= 0:
        _legend(fig, top + 1, True)
    fig.suptitle(f"{board}: test view {view}, render and expert of each pixel (lowest seed)", fontsize=9)
    return fig


def speed_means(board: str, tier: str) -> dict[str, dict[str, float]]:
    """Per row of the board with results, the mean over seeds of each :data:`SPEED_METRICS` key (finite values
    only; NaN when no seed has one)."""
    from zoo import leaderboard

    results = leaderboard.load_results(board, tier)
    if not results:
        raise ZooValueError(f"{board} has no {tier} results: run `zoo leaderboard reproduce {board} --tier {tier}`")
    means = {}
    for row in leaderboard.load_spec(board).rows:
        if row.name not in results:
            continue
        means[row.name] = {}
        for key in SPEED_METRICS:
            values = [r["metrics"][key] for r in results[row.name] if math.isfinite(r["metrics"].get(key, math.nan))]
            means[row.name][key] = float(np.mean(values)) if values else math.nan
    return means


def speed_figure(board: str, means: dict[str, dict[str, float]]) -> Figure:
    """Per row horizontal bars of each :data:`SPEED_METRICS` value; a missing value is marked, not drawn."""
    from matplotlib.figure import Figure

    rows = list(means)
    fig = Figure(figsize=(9.0, 0.35 * len(rows) + 1.6), layout="constrained")
    axes = fig.subplots(1, len(SPEED_METRICS), sharey=True, squeeze=False)[0]
    y = np.arange(len(rows))
    for ax, (key, label) in zip(axes, SPEED_METRICS.items()):
        values = np.asarray([means[row].get(key, math.nan) for row in rows], np.float64)
        ax.barh(y, np.nan_to_num(values, nan=0.0), color="tab:blue")
        for i, v in enumerate(values):
            ax.text(v if math.isfinite(v) else 0.0, i, f" {v:.3g}" if math.isfinite(v) else " —", va="center",
                    fontsize=7)
        ax.set(xlabel=label, title=key)
        ax.margins(x=0.15)
    axes[0].set_yticks(y, labels=rows)
    axes[0].invert_yaxis()
    fig.suptitle(f"{board}: speed (mean over seeds; machine-dependent)", fontsize=9)
    return fig


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from zoo import leaderboard
    from zoo.errors import ZooError
    from zoo.io import write_figure

    p = argparse.ArgumentParser(description="figures of a reproduced nerf board")
    p.add_argument("board", nargs="?", default=DEFAULT_BOARD)
    p.add_argument("--tier", default="full", choices=list(leaderboard.TIERS))
    args = p.parse_args(argv)
    out = leaderboard.boards_dir()
    written: list[Path] = []
    try:
        means = speed_means(args.board, args.tier)
        written.append(write_figure(out / f"{args.board}.speed.png", speed_figure(args.board, means)))
        runs = leaderboard.first_run_dirs(args.board, args.tier, RENDERS_FILE)
        order = [row for row in means if row in runs]
        if order:
            renders = {row: read_renders(runs[row] / RENDERS_FILE) for row in order}
            written.append(write_figure(out / f"{args.board}.views.png", board_views_figure(args.board, renders)))
        else:
            print(f"no run directory of {args.board} ({args.tier}) on this machine holds {RENDERS_FILE}; "
                  f"{args.board}.views.png not drawn", file=sys.stderr)
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
