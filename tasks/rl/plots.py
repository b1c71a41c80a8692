"""Learning curves of a reproduced RL board, drawn from its committed results files (every run's evaluation curve
is stored in its metrics as ``curve/<step>``), so anyone can redraw them without rerunning::

    python -m zoo.tasks.rl.plots rl.mujoco [--tier full]

writes ``leaderboards/<board>.curves.png``: one panel per environment (the row-name prefix before ``.``, or the
whole board), one line per row = mean deterministic return over seeds, shaded ± one standard deviation.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from zoo.errors import ZooError, ZooValueError
from zoo.io import atomic_write_bytes
from zoo.leaderboard import boards_dir, load_results, load_spec


def curves(board: str, tier: str) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """``{panel: {row: (steps, mean, std)}}`` over the seeds of each row, on the steps every seed evaluated."""
    spec = load_spec(board)
    results = load_results(board, tier)
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for row in spec.rows:
        per_seed = [{int(k.split("/", 1)[1]): v for k, v in r["metrics"].items() if k.startswith("curve/")}
                    for r in results.get(row.name, [])]
        per_seed = [c for c in per_seed if c]
        if not per_seed:
            continue
        steps = sorted(set.intersection(*(set(c) for c in per_seed)))
        values = np.array([[c[s] for s in steps] for c in per_seed])
        panel, _, name = row.name.rpartition(".")
        panels.setdefault(panel or board, {})[name] = (np.array(steps), values.mean(0), values.std(0))
    if not panels:
        raise ZooValueError(f"no learning curves in the {tier} results of {board}: run "
                            f"`zoo leaderboard reproduce {board} --tier {tier}` first")
    return panels


def plot_curves(board: str, tier: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = curves(board, tier)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (panel, rows) in zip(axes[0], panels.items(), strict=True):
        for name, (steps, mean, std) in rows.items():
            line, = ax.plot(steps, mean, label=name, lw=2.2 if "pmoe" in name else 1.2)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.set(title=panel, xlabel="environment steps", ylabel="deterministic return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{board} ({tier} tier): mean ± std over seeds")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="learning curves of a reproduced RL board")
    p.add_argument("board")
    p.add_argument("--tier", default="full", choices=["smoke", "full"])
    args = p.parse_args(argv)
    try:
        path = plot_curves(args.board, args.tier, boards_dir() / f"{args.board}.curves.png")
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
