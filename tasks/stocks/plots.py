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

import numpy as np
import pandas as pd

from zoo.errors import ZooError, ZooValueError
from zoo.leaderboard import boards_dir, load_results, load_spec


def first_runs(board: str, tier: str) -> dict[str, Path]:
    """Each row's run directory of its lowest seed that still exists on this machine."""
    out = {}
    for row, records in load_results(board, tier).items():
        for record in sorted(records, key=lambda r: r["seed"]):
            run_dir = Path(record.get("run_dir", ""))
            if (run_dir / "backtest.csv").exists():
                out[row] = run_dir
                break
    if not out:
        raise ZooValueError(f"no run directory of {board} ({tier}) is on this machine: run "
                            f"`zoo leaderboard reproduce {board} --tier {tier}` here first")
    return out


def plot_excess(board: str, runs: dict[str, Path], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for row, run_dir in runs.items():
        daily = pd.read_csv(run_dir / "backtest.csv", index_col=0, parse_dates=True)
        ax.plot(daily.index, daily["excess"].fillna(0).cumsum(), label=row, lw=2 if "miga" in row else 1)
    ax.axhline(0, color="k", lw=0.5)
    ax.set(title=f"{board}: cumulative excess return over the benchmark (test days, after costs)",
           ylabel="Σ daily excess return")
    ax.legend(fontsize=8, ncol=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _save(fig, path)


def plot_routing(board: str, runs: dict[str, Path], names: list[str] | None, path: Path) -> Path | None:
    """Heatmaps: rows = true groups (style or sector), columns = routing clusters, cells = share of the group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = {}
    for row, run_dir in runs.items():
        scores = pd.read_csv(run_dir / "test_scores.csv")
        routed = scores[(scores["cluster"] >= 0) & (scores["group"] >= 0)]
        if len(routed) and routed["group"].nunique() > 1:
            counts = pd.crosstab(routed["group"], routed["cluster"])
            tables[row] = counts.div(counts.sum(axis=1), axis=0)
    if not tables:
        return None
    fig, axes = plt.subplots(1, len(tables), figsize=(4.5 * len(tables), 4), squeeze=False)
    for ax, (row, share) in zip(axes[0], tables.items(), strict=True):
        im = ax.imshow(share.to_numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        labels = [names[g] if names and g < len(names) else str(g) for g in share.index]
        ax.set_yticks(np.arange(len(labels)), labels=labels, fontsize=7)
        ax.set_xticks(np.arange(share.shape[1]), labels=[str(c) for c in share.columns], fontsize=7)
        ax.set(title=row, xlabel="routing cluster")
    fig.colorbar(im, ax=axes[0].tolist(), label="share of the group's rows")
    fig.suptitle(f"{board}: where each group's stocks are routed (test days)")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def group_names(board: str) -> list[str] | None:
    """The group names of the board's panel, in the code order the evaluation used (sorted)."""
    from zoo.api import load_task
    from zoo.config import resolve_config

    spec = load_spec(board)
    task = load_task(spec.task)
    cfg, _ = resolve_config(task.config_cls, spec.task, spec.rows[0].recipe, layers=(spec.config,))
    from .panel import load_panel

    panel = load_panel(cfg.data.source, cfg.data.path, **cfg.data.panel)
    return sorted(panel.groups.astype(str).unique()) if panel.groups is not None else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="plots of a reproduced stocks board")
    p.add_argument("board")
    p.add_argument("--tier", default="full", choices=["smoke", "full"])
    args = p.parse_args(argv)
    try:
        runs = first_runs(args.board, args.tier)
        out = boards_dir()
        written = [plot_excess(args.board, runs, out / f"{args.board}.excess.png")]
        routing = plot_routing(args.board, runs, group_names(args.board), out / f"{args.board}.routing.png")
        written += [routing] if routing else []
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
