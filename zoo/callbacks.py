"""Lightning callbacks shared by all tasks."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import lightning as L

from zoo.io import atomic_write_bytes, atomic_write_text
from zoo.moe import ExpertStats


class ExpertStatsCallback(L.Callback):
    """Log per-layer routing statistics during training and keep the load history for a plot.

    Every ``every_n_steps`` optimizer steps (default: the trainer's ``log_every_n_steps``) it logs, per MoE layer,
    ``experts/<layer>/{load_cv, drop_rate, entropy, active_experts}`` and the load fraction of every expert
    (``experts/<layer>/load/e<i>``), and records the load vector. At the end of training it writes
    ``expert_load.json`` and, with ``plot=True``, ``expert_load.png`` (one heatmap per layer: step × expert)
    into ``dirpath`` (default: the logger's log dir; with neither, nothing is written and the history stays in
    :attr:`history`).

    The stats come from the ``expert_stats`` entry that :class:`zoo.module.ZooModule.training_step` returns.
    """

    def __init__(self, every_n_steps: int | None = None, plot: bool = True, dirpath: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.every_n_steps, self.plot_at_end, self.dirpath = every_n_steps, plot, dirpath
        self.history: dict[str, list[tuple[int, list[float]]]] = {}
        self.num_ffn: dict[str, int] = {}
        self._last_step = -1
        self._latest: tuple[int, dict[str, ExpertStats]] | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        stats: dict[str, ExpertStats] = (outputs or {}).get("expert_stats") or {}
        every = self.every_n_steps or trainer.log_every_n_steps
        step = trainer.global_step
        if stats:
            self._latest = (step, stats)
        # with gradient accumulation several micro-batches share a step: record the step once
        if not stats or step % max(1, every) or step == self._last_step:
            return
        for layer, s in stats.items():
            scalars = s.as_scalars()
            pl_module.log_dict({f"experts/{layer}/{k}": v for k, v in scalars.items()}, on_step=True, on_epoch=False)
        self._record(step, stats)

    def _record(self, step: int, stats: dict[str, ExpertStats]) -> None:
        self._last_step = step
        for layer, s in stats.items():
            self.history.setdefault(layer, []).append((step, s.load.tolist()))
            self.num_ffn[layer] = s.num_ffn

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._latest is not None and self._latest[0] != self._last_step:
            self._record(*self._latest)
        logger_dir = trainer.logger.log_dir if trainer.logger is not None else None
        out_dir = self.dirpath or logger_dir
        if not self.history or not trainer.is_global_zero or out_dir is None:
            return
        write_expert_load(out_dir, self.history, self.num_ffn, plot=self.plot_at_end)


def write_expert_load(dirpath: str | os.PathLike, history: dict[str, list[tuple[int, list[float]]]],
                      num_ffn: dict[str, int], plot: bool = True) -> None:
    """``expert_load.json`` (``{layer: {"num_ffn": n, "steps": [...], "load": [[...], ...]}}``) and, with ``plot``,
    ``expert_load.png`` in ``dirpath``: the load history of any MoE run, trained by Lightning or by a task's loop."""
    out_dir = Path(dirpath)
    data = {
        layer: {"num_ffn": num_ffn[layer], "steps": [s for s, _ in rows], "load": [load for _, load in rows]}
        for layer, rows in history.items()
    }
    atomic_write_text(out_dir / "expert_load.json", json.dumps(data, indent=1))
    if plot:
        plot_expert_load(history, num_ffn, out_dir / "expert_load.png")


def plot_expert_load(
    history: dict[str, list[tuple[int, list[float]]]], num_ffn: dict[str, int], path: str | os.PathLike
) -> None:
    """Heatmaps of load fraction (colour) per expert (rows) over steps (columns), one panel per layer.

    A dashed line separates FFN experts from special (zero/copy/constant/null) experts; the uniform load 1/E is
    the colour scale's midpoint so over- and under-loaded experts read at a glance.
    """
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure  # not pyplot: no global backend switch, no figure registry

    layers = list(history)
    fig = Figure(figsize=(8, 2.2 + 0.9 * len(layers)))
    axes = fig.subplots(len(layers), 1, squeeze=False)
    for ax, layer in zip(axes[:, 0], layers):
        steps = [s for s, _ in history[layer]]
        load = np.asarray([row for _, row in history[layer]]).T
        E = load.shape[0]
        norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0 / E, vmax=max(load.max(), 1.5 / E))
        extent = (steps[0], steps[-1] if steps[-1] > steps[0] else steps[0] + 1, E - 0.5, -0.5)
        im = ax.imshow(load, aspect="auto", cmap="RdBu_r", norm=norm, extent=extent, interpolation="nearest")
        if num_ffn.get(layer, E) < E:
            ax.axhline(num_ffn[layer] - 0.5, color="k", linestyle="--", linewidth=0.8)
        ax.set_title(f"{layer}: load per expert (uniform = 1/{E})", fontsize=9)
        ax.set_ylabel("expert")
        fig.colorbar(im, ax=ax, fraction=0.03).set_label("share of routed tokens", fontsize=8)
    axes[-1, 0].set_xlabel("optimizer step")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())
