"""Plots of a reproduced stocks board: cumulative excess return per model, and routing cluster by group.

They read the run directories that ``zoo leaderboard reproduce`` recorded in each results file (the
``backtest.csv`` and ``test_scores.csv`` the evaluation writes), so they are drawn on the machine that ran the
board, from the same numbers the table shows::

    python -m zoo.tasks.stocks.plots stocks.style-panel --tier full

writes ``leaderboards/<board>.excess.png`` (every row, its first seed's run) and ``leaderboards/<board>.routing.png``
(for each routed row, the share of each group's (day, stock) rows sent to each routing cluster).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from zoo.errors import ZooError, ZooValueError
from zoo.io import write_figure
from zoo.leaderboard import boards_dir, first_run_dirs, load_spec

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def first_runs(board: str, tier: str) -> dict[str, Path]:
    """Each row's run directory of its lowest seed that still exists on this machine."""
    out = first_run_dirs(board, tier, "backtest.csv")
    if not out:
        raise ZooValueError(f"no run directory of {board} ({tier}) is on this machine: run "
                            f"`zoo leaderboard reproduce {board} --tier {tier}` here first")
    return out


def plot_excess(board: str, runs: dict[str, Path], path: Path) -> Path:
    """Cumulative daily excess return of each row's portfolio over the test days (after costs)."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.8), layout="constrained")
    ax = fig.subplots()
    for row, run_dir in runs.items():
        daily = pd.read_csv(run_dir / "backtest.csv", index_col=0, parse_dates=True)
        ax.plot(daily.index, daily["excess"].fillna(0).cumsum(), label=row, lw=2 if "miga" in row else 1)
    ax.axhline(0, color="k", lw=0.5)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set(title=f"{board}: cumulative excess return over the benchmark (test days, after costs)",
           xlabel="test day", ylabel="Σ daily excess return")
    ax.legend(fontsize=8, ncol=2)
    return write_figure(path, fig)


def routing_shares(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    """For each routed row, the share of each group's test (day, stock) rows sent to each routing cluster
    (groups × clusters, rows sum to 1); rows without routing or with fewer than two groups are left out."""
    tables = {}
    for row, run_dir in runs.items():
        scores = pd.read_csv(run_dir / "test_scores.csv")
        routed = scores[(scores["cluster"] >= 0) & (scores["group"] >= 0)]
        if len(routed) and routed["group"].nunique() > 1:
            counts = pd.crosstab(routed["group"], routed["cluster"])
            tables[row] = counts.div(counts.sum(axis=1), axis=0)
    return tables


def plot_routing(board: str, runs: dict[str, Path], names: list[str] | None, path: Path,
                 kind: str = "group") -> Path | None:
    """:func:`routing_figure` of the runs written to ``path``; None when no row routes."""
    tables = routing_shares(runs)
    return write_figure(path, routing_figure(board, tables, names, kind)) if tables else None


def routing_figure(board: str, tables: dict[str, pd.DataFrame], names: list[str] | None, kind: str = "group") -> Figure:
    """Heatmaps, one per routed row: rows = true groups (``kind``: style or sector), columns = routing clusters,
    cells = share of the group's rows (annotated while the grid is small); one colour bar for all."""
    from matplotlib.figure import Figure

    groups = sorted(set().union(*(t.index for t in tables.values())))
    labels = [names[g] if names and g < len(names) else str(g) for g in groups]
    most = max(t.shape[1] for t in tables.values())
    ncols = min(len(tables), 2)
    nrows = -(-len(tables) // ncols)
    width = max(3.2, 0.32 * most + 1.2) + 0.07 * max(len(s) for s in labels)
    height = max(2.4, 0.3 * len(groups) + 1.3)
    fig = Figure(figsize=(width * ncols + 1.2, height * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, (ax, (row, share)) in enumerate(zip(axes.ravel(), tables.items())):
        share = share.reindex(groups, fill_value=0.0)
        values = share.to_numpy()
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_yticks(np.arange(len(groups)), labels=labels if i % ncols == 0 else [], fontsize=8)
        clusters = [str(c) for c in share.columns]
        ax.set_xticks(np.arange(len(clusters)), labels=clusters, fontsize=7, rotation=90 if len(clusters) > 24 else 0)
        ax.set(title=row, xlabel="routing cluster")
        if i % ncols == 0:
            ax.set_ylabel(f"true {kind}")
        if values.size <= 64:
            for (g, c), v in np.ndenumerate(values):
                ax.text(c, g, f"{v:.0%}", ha="center", va="center", fontsize=7, color="black" if v > 0.6 else "white")
    for ax in axes.ravel()[len(tables):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9, label=f"share of the {kind}'s (day, stock) rows")
    fig.suptitle(f"{board}: where each {kind}'s stocks are routed (test days)")
    return fig


def group_names(board: str) -> tuple[list[str] | None, str]:
    """The group names of the board's panel, in the code order the evaluation used (sorted), and their kind."""
    from zoo.api import load_task
    from zoo.config import resolve_config

    from .panel import load_panel

    spec = load_spec(board)
    task = load_task(spec.task)
    cfg, _ = resolve_config(task.config_cls, spec.task, spec.rows[0].recipe, layers=(spec.config,))
    panel = load_panel(cfg.data.source, cfg.data.path, **cfg.data.panel)
    if panel.groups is None:
        return None, "group"
    return sorted(panel.groups.astype(str).unique()), panel.group_kind or "group"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="plots of a reproduced stocks board")
    p.add_argument("board")
    p.add_argument("--tier", default="full", choices=["smoke", "full"])
    args = p.parse_args(argv)
    try:
        runs = first_runs(args.board, args.tier)
        out = boards_dir()
        written = [plot_excess(args.board, runs, out / f"{args.board}.excess.png")]
        names, kind = group_names(args.board)
        routing = plot_routing(args.board, runs, names, out / f"{args.board}.routing.png", kind)
        written += [routing] if routing else []
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
