"""Board figure of the graph task: each row's downstream scores against the number of parameters it tunes, the
trade-off prompt learning is about (a prompt row should sit high and far to the left of full fine-tuning).

``python -m zoo.tasks.graph.plots [BOARD] [--tier full]`` draws ``leaderboards/<BOARD>.params.png`` from the
board's results files: one panel per score (LODO accuracy, karate accuracy, atlas macro-F1, link AUC), each row a
point at its mean over seeds with the seeds' std as an error bar, the tunable-parameter axis logarithmic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zoo.errors import ZooValueError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_BOARD = "graph.prompt-transfer"
TUNABLE = "test/tunable_params"
#: The panels: score key → axis label.
SCORES = {"test/lodo_acc": "LODO 5-shot accuracy", "test/karate_acc": "karate 1-shot accuracy",
          "test/atlas_f1": "atlas macro-F1", "test/link_auc": "link prediction ROC-AUC"}


def row_stats(board: str, tier: str) -> dict[str, dict[str, tuple[float, float]]]:
    """Per row with results, ``(mean, std)`` over seeds of the tunable count and of every score in :data:`SCORES`
    (NaN where no seed has the value)."""
    from zoo import leaderboard

    results = leaderboard.load_results(board, tier)
    if not results:
        raise ZooValueError(f"{board} has no {tier} results: run `zoo leaderboard reproduce {board} --tier {tier}`")
    stats: dict[str, dict[str, tuple[float, float]]] = {}
    for row in leaderboard.load_spec(board).rows:
        if row.name not in results:
            continue
        stats[row.name] = {}
        for key in (TUNABLE, *SCORES):
            values = [r["metrics"][key] for r in results[row.name] if math.isfinite(r["metrics"].get(key, math.nan))]
            stats[row.name][key] = (float(np.mean(values)), float(np.std(values))) if values else (math.nan, math.nan)
    return stats


def params_figure(board: str, stats: dict[str, dict[str, tuple[float, float]]]) -> Figure:
    """One panel per score of :data:`SCORES`: each row's mean ± std against its tunable parameters (log axis)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 7.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    from matplotlib import colormaps

    colours = [colormaps["tab20"](i % 20) for i in range(len(stats))]
    for ax, (key, label) in zip(axes, SCORES.items()):
        for colour, (row, values) in zip(colours, stats.items()):
            x, (y, err) = values[TUNABLE][0], values[key]
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            marker = "*" if row.startswith("gmope") else "o"
            ax.errorbar(x, y, yerr=err, fmt=marker, color=colour, markersize=9 if marker == "*" else 6, capsize=2)
            ax.annotate(row, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set(xscale="log", xlabel="tunable parameters (log)", ylabel=label, title=label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{board}: downstream score against tunable parameters (mean ± std over seeds; ★ GMoPE rows)",
                 fontsize=9)
    return fig


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from zoo import leaderboard
    from zoo.errors import ZooError
    from zoo.io import write_figure

    p = argparse.ArgumentParser(description="figure of a reproduced graph board")
    p.add_argument("board", nargs="?", default=DEFAULT_BOARD)
    p.add_argument("--tier", default="full", choices=list(leaderboard.TIERS))
    args = p.parse_args(argv)
    try:
        stats = row_stats(args.board, args.tier)
        path: Path = write_figure(leaderboard.boards_dir() / f"{args.board}.params.png", params_figure(args.board, stats))
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
