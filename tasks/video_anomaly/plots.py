"""Plots of a reproduced video_anomaly board: score curves against the ground truth, and per-class AUC bars.

The curves read the run directories that ``zoo leaderboard reproduce`` recorded in each results file (the
``test_scores.npz`` the evaluation writes), so they are drawn on the machine that ran the board; the bars read the
committed results (mean over seeds of ``test/auc/<class>``)::

    python -m zoo.tasks.video_anomaly.plots video_anomaly.synthvad --tier full

writes ``leaderboards/<board>.curves.png`` (a few test videos, one per anomaly class where possible, with each
row's snippet scores of its lowest seed and the anomalous snippets shaded) and ``leaderboards/<board>.classes.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.errors import ZooError, ZooValueError
from zoo.io import write_figure
from zoo.leaderboard import boards_dir, first_run_dirs, load_results, load_spec

from .evaluation import SCORES_FILE, load_scores

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CURVE_VIDEOS = 4  # test videos drawn, abnormal ones of different classes first


def first_runs(board: str, tier: str) -> dict[str, Path]:
    """Each row's run directory of its lowest seed that still has its test scores on this machine."""
    out = first_run_dirs(board, tier, SCORES_FILE)
    if not out:
        raise ZooValueError(f"no run directory of {board} ({tier}) is on this machine: run "
                            f"`zoo leaderboard reproduce {board} --tier {tier}` here first")
    return out


def pick_videos(classes: list[str], labels: list[np.ndarray], count: int = CURVE_VIDEOS) -> list[int]:
    """Indices of ``count`` test videos: the first abnormal video of as many classes as fit, then a normal one."""
    chosen, seen = [], set()
    for i, (c, y) in enumerate(zip(classes, labels)):
        if y.any() and c not in seen and len(chosen) < count - 1:
            chosen.append(i)
            seen.add(c)
    normal = [i for i, y in enumerate(labels) if not y.any()]
    return chosen + normal[:count - len(chosen)]


def curves_figure(board: str, runs: dict[str, Path], rows: list[str] | None = None) -> Figure:
    """One panel per picked test video: each row's snippet scores over time, anomalous snippets shaded."""
    from matplotlib.figure import Figure

    loaded = {row: load_scores(run / SCORES_FILE) for row, run in runs.items() if rows is None or row in rows}
    first = next(iter(loaded.values()))
    picked = pick_videos(first["classes"], first["labels"])
    fig = Figure(figsize=(11, 2.4 * len(picked) + 0.6), layout="constrained")
    axes = fig.subplots(len(picked), 1, squeeze=False)[:, 0]
    for ax, v in zip(axes, picked):
        labels = first["labels"][v]
        t = np.arange(len(labels))
        ax.fill_between(t, 0, 1, where=labels > 0, step="mid", color="tab:red", alpha=0.15,
                        label="anomalous snippets")
        for row, data in loaded.items():
            ax.plot(t, data["scores"][v], lw=2 if "gsmoe" in row else 1, label=row)
        ax.set(ylim=(0, 1), xlim=(0, max(1, len(t) - 1)), ylabel="score",
               title=f"{first['names'][v]} ({first['classes'][v]})")
    axes[-1].set_xlabel("snippet (16 frames)")
    axes[0].legend(fontsize=7, ncol=4, loc="upper left")
    fig.suptitle(f"{board}: snippet scores of test videos against the ground truth (lowest seed of each row)")
    return fig


def class_auc_means(board: str, tier: str) -> tuple[list[str], dict[str, dict[str, float]]]:
    """The classes and, per row, the mean over seeds of each class's AUC from the committed results."""
    spec = load_spec(board)
    results = load_results(board, tier)
    classes: set[str] = set()
    means: dict[str, dict[str, float]] = {}
    for row in spec.rows:
        records = results.get(row.name, [])
        if not records:
            continue
        keys = {k for r in records for k in r["metrics"] if k.startswith("test/auc/")}
        classes |= {k.removeprefix("test/auc/") for k in keys}
        means[row.name] = {k.removeprefix("test/auc/"): float(np.nanmean([r["metrics"].get(k, np.nan)
                                                                           for r in records])) for k in keys}
    if not means:
        raise ZooValueError(f"{board} has no {tier} results: run `zoo leaderboard reproduce {board} --tier {tier}`")
    return sorted(classes), means


def classes_figure(board: str, classes: list[str], means: dict[str, dict[str, float]]) -> Figure:
    """Grouped bars: per class, each row's mean AUC; 0.5 (chance) dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(7, 1.3 * len(classes) + 3), 4.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(means)
    x = np.arange(len(classes))
    for i, (row, values) in enumerate(means.items()):
        ax.bar(x + (i - (len(means) - 1) / 2) * width, [values.get(c, np.nan) for c in classes], width, label=row)
    ax.axhline(0.5, color="0.3", lw=0.8, ls="--")
    ax.set_xticks(x, labels=classes)
    ax.set(ylim=(0.3, 1.0), ylabel="AUC_c (class c + all normal videos)",
           title=f"{board}: per-class frame AUC, mean over seeds")
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="plots of a reproduced video_anomaly board")
    p.add_argument("board")
    p.add_argument("--tier", default="full", choices=["smoke", "full"])
    args = p.parse_args(argv)
    out = boards_dir()
    try:
        classes, means = class_auc_means(args.board, args.tier)
        written: list[Any] = [write_figure(out / f"{args.board}.classes.png", classes_figure(args.board, classes, means))]
        runs = first_runs(args.board, args.tier)
        written.append(write_figure(out / f"{args.board}.curves.png", curves_figure(args.board, runs)))
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
