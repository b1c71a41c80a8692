"""Pictures of detections: one image with its boxes drawn into the pixels (``zoo predict --plot``), and a figure of
a few test images with predicted and true boxes for the board and the README, and the figures of a reproduced
board (:func:`main`).

:func:`draw_detections` uses :func:`torchvision.utils.draw_bounding_boxes` with a ``name 0.87`` label per box and
one colour per class (matplotlib's ``tab10`` then ``tab20b``, cycled); an image whose longer side is under
:data:`MIN_DRAW` pixels is first enlarged by a whole factor (nearest neighbour, so pixels stay square) so that the
text is legible, and the line width grows with the image. Boxes are continuous pixel coordinates, so a box
``[x1, x2)`` outlines the pixels ``floor(x1) .. ceil(x2) - 1``. :func:`examples_figure` draws no text on the boxes,
which would overlap on crowded images: colours name the classes in a legend below the grid, predictions are solid
and ground truth dashed.

A reproduced board's figures::

    python -m zoo.tasks.detection.plots detection.mini-uodb --tier full

write ``leaderboards/<board>.datasets.png`` (per dataset, each row's AP50, mean over seeds, from the committed
results), ``<board>.routing.png`` (the expert × dataset confusion of every routed row's lowest seed) and
``<board>.examples.png`` (the test detections of one row's lowest seed); the last two read the run directories the
results name, so they are drawn on the machine that ran the board.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.errors import ZooValueError
from zoo.io import atomic_write_bytes, write_figure

from .structures import to_rgb

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Images whose longer side is below this many pixels are enlarged before drawing.
MIN_DRAW = 256
#: Columns of the examples grid.
GRID_COLUMNS = 4
LEGEND_FONT = 7


def class_colors(count: int) -> list[tuple[int, int, int]]:
    """``count`` RGB colours, one per class index: tab10, then tab20b, cycled."""
    from matplotlib import colormaps

    palette = list(colormaps["tab10"].colors) + list(colormaps["tab20b"].colors)
    return [tuple(round(255 * v) for v in palette[i % len(palette)][:3]) for i in range(count)]


def draw_detections(image: np.ndarray, boxes: Any, labels: Any, scores: Any | None, class_names: Sequence[str],
                    path: str | Path | None = None) -> np.ndarray:
    """The image with its boxes, class names and scores drawn (module docstring).

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` pixels (made RGB uint8 by ``to_rgb``).
        boxes: ``[N, 4]`` xyxy in the image's pixels (array or tensor).
        labels: ``[N]`` class indices into ``class_names``.
        scores: ``[N]`` confidences shown after the name, or None for names only (ground truth).
        class_names: the name of every class index.
        path: write the drawing there as a PNG, atomically.

    Returns:
        The drawing, uint8 ``[H * f, W * f, 3]`` with ``f`` the enlargement factor (1 for large images).

    Raises:
        ZooValueError: mismatched lengths, a label outside ``class_names``, or a path that cannot be written.
    """
    import torch
    from torchvision.utils import draw_bounding_boxes

    pixels = to_rgb(image)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    scores = None if scores is None else np.asarray(scores, np.float64).reshape(-1)
    if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise ZooValueError(f"{len(boxes)} boxes, {len(labels)} labels and "
                            f"{'no' if scores is None else len(scores)} scores; expected one of each per box")
    if len(labels) and not (0 <= labels.min() and labels.max() < len(class_names)):
        raise ZooValueError(f"a label of {labels.min()}..{labels.max()} is outside the {len(class_names)} class "
                            "names")
    height, width = pixels.shape[:2]
    factor = math.ceil(MIN_DRAW / max(height, width)) if max(height, width) < MIN_DRAW else 1
    pixels = np.repeat(np.repeat(pixels, factor, 0), factor, 1)
    height, width = pixels.shape[:2]
    if len(boxes):
        boxes = boxes * factor
        outline = np.stack([np.floor(boxes[:, 0]), np.floor(boxes[:, 1]), np.ceil(boxes[:, 2]) - 1,
                            np.ceil(boxes[:, 3]) - 1], 1)
        outline = np.clip(outline, 0, [width - 1, height - 1, width - 1, height - 1])
        outline[:, 2:] = np.maximum(outline[:, 2:], outline[:, :2])
        colors = class_colors(len(class_names))
        texts = [class_names[k] if scores is None else f"{class_names[k]} {s:.2f}"
                 for k, s in zip(labels, scores if scores is not None else labels)]
        drawn = draw_bounding_boxes(torch.from_numpy(pixels).permute(2, 0, 1), torch.from_numpy(outline), texts,
                                    colors=[colors[k] for k in labels], fill_labels=True,
                                    width=max(1, round(max(height, width) / 256)))
        pixels = drawn.permute(1, 2, 0).contiguous().numpy()
    if path is not None:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getvalue())
    return pixels


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def examples_figure(samples: Sequence[tuple[np.ndarray, Mapping[str, Any], Mapping[str, Any], str]],
                    class_names: Sequence[str]) -> Figure:
    """A grid of images with predicted boxes (solid) and true boxes (dashed), one colour per class (module
    docstring).

    Args:
        samples: per panel ``(image [H, W, 3] uint8, pred {boxes, labels, ...}, target {boxes, labels}, title)``,
            boxes xyxy in the image's pixels.
        class_names: the name of every class index; the legend lists the classes that occur.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    if not samples:
        raise ZooValueError("no samples to draw; expected at least one (image, prediction, target, title)")
    columns = min(GRID_COLUMNS, len(samples))
    rows = math.ceil(len(samples) / columns)
    fig = Figure(figsize=(2.8 * columns + 0.4, 2.9 * rows + 1.0), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    colors = [tuple(c / 255 for c in rgb) for rgb in class_colors(len(class_names))]
    seen: set[int] = set()
    for ax, (image, pred, target, title) in zip(axes, samples):
        pixels = to_rgb(image)
        height, width = pixels.shape[:2]
        ax.imshow(pixels, extent=(0, width, height, 0), interpolation="nearest")
        for boxes, labels, style in ((target["boxes"], target["labels"], "--"), (pred["boxes"], pred["labels"], "-")):
            for (x1, y1, x2, y2), k in zip(_numpy(boxes).reshape(-1, 4).tolist(), _numpy(labels).reshape(-1).tolist()):
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colors[k], linestyle=style,
                                       linewidth=1.4 if style == "-" else 1.0))
                seen.add(int(k))
        ax.set_title(f"{title}\n{len(_numpy(pred['labels']).reshape(-1))} predicted, "
                     f"{len(_numpy(target['labels']).reshape(-1))} true", fontsize=8)
        ax.set(xlim=(0, width), ylim=(height, 0), xticks=[], yticks=[])
    for ax in axes[len(samples):]:
        ax.remove()
    handles = [Line2D([], [], color="0.2", ls="-", label="predicted"), Line2D([], [], color="0.2", ls="--",
                                                                              label="ground truth")]
    handles += [Line2D([], [], color=colors[k], lw=3, label=class_names[k]) for k in sorted(seen)]
    longest = max(len(h.get_label()) for h in handles)
    fits = int(fig.get_figwidth() * 72 / (LEGEND_FONT * 0.65 * longest + 3 * LEGEND_FONT))  # entries per line
    fig.legend(handles=handles, loc="outside lower center", ncol=max(1, min(len(handles), fits)), fontsize=LEGEND_FONT,
               frameon=False)
    return fig


def dataset_ap50(board: str, tier: str) -> tuple[list[str], dict[str, dict[str, float]]]:
    """The datasets and, per row, the mean over seeds of each dataset's AP50 from the committed results."""
    from zoo.leaderboard import load_results, load_spec

    results = load_results(board, tier)
    datasets: list[str] = []
    means: dict[str, dict[str, float]] = {}
    for row in load_spec(board).rows:
        records = results.get(row.name, [])
        keys = [k for k in (records[0]["metrics"] if records else {}) if k.startswith("test/ap50/")]
        for key in keys:
            if key.removeprefix("test/ap50/") not in datasets:
                datasets.append(key.removeprefix("test/ap50/"))
        if keys:
            means[row.name] = {k.removeprefix("test/ap50/"): float(np.nanmean([r["metrics"].get(k, np.nan)
                                                                                for r in records])) for k in keys}
    if not means:
        raise ZooValueError(f"{board} has no {tier} results: run `zoo leaderboard reproduce {board} --tier {tier}`")
    return datasets, means


def datasets_figure(board: str, datasets: list[str], means: Mapping[str, Mapping[str, float]]) -> Figure:
    """Grouped bars: per dataset, each row's mean AP50."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(8, 1.4 * len(datasets) + 3), 4.4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(means)
    x = np.arange(len(datasets))
    for i, (row, values) in enumerate(means.items()):
        ax.bar(x + (i - (len(means) - 1) / 2) * width, [values.get(d, np.nan) for d in datasets], width, label=row)
    ax.set_xticks(x, labels=[d.split("/")[-1] for d in datasets])
    ax.set(ylim=(0, 1), ylabel="AP50 (mean over seeds)", title=f"{board}: AP50 per dataset")
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    return fig


def routing_figure(board: str, tables: Mapping[str, tuple[np.ndarray, list[str]]]) -> Figure:
    """One heatmap per routed row: the share of each dataset's decoder tokens each expert takes as top-1."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(tables) + 1.2, 4.6), layout="constrained")
    axes = fig.subplots(1, len(tables), squeeze=False)[0]
    image = None
    for ax, (row, (matrix, names)) in zip(axes, tables.items(), strict=True):
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(matrix.shape[1]))
        ax.set_yticks(range(len(names)), labels=[n.split("/")[-1] for n in names] if ax is axes[0] else [])
        ax.set(xlabel="expert", title=row)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="share of the dataset's tokens")
    fig.suptitle(f"{board}: top-1 expert of every decoder token, per dataset (lowest seed, MoE layers averaged)")
    return fig


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from zoo.errors import ZooError
    from zoo.leaderboard import boards_dir, first_run_dirs

    from .evaluation import CONFUSION_TABLE, EXAMPLES_FILE

    p = argparse.ArgumentParser(description="figures of a reproduced detection board")
    p.add_argument("board")
    p.add_argument("--tier", default="full", choices=["smoke", "full"])
    p.add_argument("--examples-row", default="damex", help="the row whose test detections are drawn")
    args = p.parse_args(argv)
    out = boards_dir()
    written = []
    try:
        datasets, means = dataset_ap50(args.board, args.tier)
        written.append(write_figure(out / f"{args.board}.datasets.png", datasets_figure(args.board, datasets, means)))
        tables = {}
        for row, run_dir in first_run_dirs(args.board, args.tier, CONFUSION_TABLE).items():
            with np.load(run_dir / CONFUSION_TABLE, allow_pickle=False) as data:
                tables[row] = (data["matrix"], data["datasets"].tolist())
        if tables:
            written.append(write_figure(out / f"{args.board}.routing.png", routing_figure(args.board, tables)))
        example = first_run_dirs(args.board, args.tier, EXAMPLES_FILE).get(args.examples_row)
        if example is not None:
            written.append(atomic_write_bytes(out / f"{args.board}.examples.png",
                                              (example / EXAMPLES_FILE).read_bytes()))
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
