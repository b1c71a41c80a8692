"""The convergence figure of a reproduced forecasting board: validation loss against epochs and against seconds.

It reads the ``val_curve.csv`` every trained run writes (:class:`zoo.callbacks.ValidationCurve`) from the run
directories that ``zoo leaderboard reproduce`` recorded in the results files, so it is drawn on the machine that ran
the board, from the runs the table shows::

    python -m zoo.tasks.forecasting.plots forecasting.convergence --tier full

writes ``leaderboards/<board>.curves.png``: per data set (the part of a row name before the first ``.``), the mean curve over
seeds of each row, against epochs (left) and seconds of fitting (right), with the target loss of the rows' config
as a dashed line.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zoo.errors import ZooError, ZooValueError
from zoo.io import write_figure
from zoo.leaderboard import boards_dir, load_results, load_spec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CURVE_FILE = "val_curve.csv"
KEY = "val/task_loss"


def read_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs of training done, seconds, validation task loss) at each validation of one run."""
    with open(run_dir / CURVE_FILE, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(KEY)]
    epochs, seconds, loss = (np.array([float(r[k]) for r in rows]) for k in ("epochs", "seconds", KEY))
    return epochs, seconds, loss


def board_curves(board: str, tier: str) -> dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Every row's curves, one per seed whose run directory is on this machine."""
    out: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for row, records in load_results(board, tier).items():
        runs = [Path(r["run_dir"]) for r in records if "run_dir" in r]
        curves = [read_curve(run) for run in runs if (run / CURVE_FILE).exists()]
        if curves:
            out[row] = curves
    if not out:
        raise ZooValueError(f"no {CURVE_FILE} of {board} ({tier}) is on this machine: run "
                            f"`zoo leaderboard reproduce {board} --tier {tier}` here first")
    return out


def mean_curve(curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Epochs, mean seconds, mean loss and the loss's std over seeds, on the validations all seeds have."""
    n = min(len(c[0]) for c in curves)
    seconds = np.mean([c[1][:n] for c in curves], axis=0)
    losses = np.array([c[2][:n] for c in curves])
    return curves[0][0][:n], seconds, losses.mean(axis=0), losses.std(axis=0)


def curves_figure(board: str, curves: dict[str, list], targets: dict[str, float]) -> Figure:
    """One row of two panels per data set: loss against epochs, and against seconds."""
    from matplotlib.figure import Figure

    datasets = sorted({row.split(".")[0] for row in curves})
    fig = Figure(figsize=(10, 3.4 * len(datasets)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(datasets), 2, squeeze=False))
    for (ax_epoch, ax_seconds), dataset in zip(axes, datasets):
        for row, runs in curves.items():
            if row.split(".")[0] != dataset:
                continue
            epochs, seconds, mean, std = mean_curve(runs)
            label = f"{row.split('.', 1)[-1]} (n={len(runs)})"
            line, = ax_epoch.plot(epochs, mean, label=label)
            ax_epoch.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            ax_seconds.plot(seconds, mean, color=line.get_color(), label=label)
        target = targets.get(dataset)
        for ax, xlabel in ((ax_epoch, "epochs of training"), (ax_seconds, "seconds of fitting")):
            if target is not None:
                ax.axhline(target, color="k", ls="--", lw=0.8, label="target")
            ax.set(xlabel=xlabel, ylabel="validation loss (task)", title=f"{dataset}: against {xlabel.split()[0]}")
        ax_epoch.legend(fontsize=8)
    fig.suptitle(f"{board}: mean over seeds (band: ± std)")
    return fig


def row_targets(board: str) -> dict[str, float]:
    """The target validation loss per data set, from the rows' ``target_val_loss`` config."""
    spec = load_spec(board)
    out = {}
    for row in spec.rows:
        target = {**spec.config, **row.config}.get("target_val_loss")
        if target is not None:
            out[row.name.split(".")[0]] = float(target)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the convergence figure of a reproduced forecasting board")
    p.add_argument("board")
    p.add_argument("--tier", default="full", choices=["smoke", "full"])
    args = p.parse_args(argv)
    try:
        figure = curves_figure(args.board, board_curves(args.board, args.tier), row_targets(args.board))
        path = write_figure(boards_dir() / f"{args.board}.curves.png", figure)
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
