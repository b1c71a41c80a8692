"""Lightning callbacks shared by all tasks."""

from __future__ import annotations

import io
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

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

    def state_dict(self) -> dict[str, Any]:
        """The load history so far: a resumed run's ``expert_load`` then covers the whole run."""
        history = {layer: [[step, load] for step, load in rows] for layer, rows in self.history.items()}
        return {"history": history, "num_ffn": dict(self.num_ffn), "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {layer: [(step, load) for step, load in rows] for layer, rows in state_dict["history"].items()}
        self.num_ffn = dict(state_dict["num_ffn"])
        self._last_step = state_dict["last_step"]

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._latest is not None and self._latest[0] != self._last_step:
            self._record(*self._latest)
        logger_dir = trainer.logger.log_dir if trainer.logger is not None else None
        out_dir = self.dirpath or logger_dir
        if not self.history or not trainer.is_global_zero or out_dir is None:
            return
        write_expert_load(out_dir, self.history, self.num_ffn, plot=self.plot_at_end)


class ValidationCurve(L.Callback):
    """Every validation's ``val/*`` metrics with its epoch, the epochs of training done (fractional when
    ``val_check_interval`` validates within epochs), the optimizer step and the seconds since the fit started
    (training and validation wall time: the clock a user waits on), so that runs can be compared on how fast they
    converge, not only where they end. The rows are kept in :attr:`rows` (a resumed run continues them and its
    clock) and written to ``val_curve.csv`` in ``dirpath`` when the fit ends; the sanity check is left out.
    """

    def __init__(self, dirpath: str | os.PathLike | None = None) -> None:
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.rows: list[dict[str, float]] = []
        self._start: float | None = None
        self._end: float | None = None
        self._before = 0.0  # seconds of the fit before a resume

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._end = time.perf_counter(), None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._start is None:
            return
        row = {"epoch": float(trainer.current_epoch), "epochs": _epochs_done(trainer),
               "step": float(trainer.global_step), "seconds": self.seconds()}
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.startswith("val/") and torch.as_tensor(value).numel() == 1:
                row[key] = float(value)
        self.rows.append(row)

    def seconds(self) -> float:
        """Seconds of fitting so far (all of it once the fit ended), over all parts of a resumed run."""
        if self._start is None:
            return self._before
        return self._before + ((self._end if self._end is not None else time.perf_counter()) - self._start)

    def first_reaching(self, key: str, target: float) -> dict[str, float] | None:
        """The first validation at which ``key`` was at or below ``target`` (None if none was)."""
        return next((row for row in self.rows if row.get(key, math.inf) <= target), None)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows], "seconds": self.seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict["rows"]]
        self._before = float(state_dict["seconds"])

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end = time.perf_counter()
        if not self.rows or not trainer.is_global_zero or self.dirpath is None:
            return
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        lines = [",".join(keys)] + [",".join(repr(row[k]) if k in row else "" for k in keys) for row in self.rows]
        atomic_write_text(self.dirpath / "val_curve.csv", "\n".join(lines) + "\n")


def _epochs_done(trainer: L.Trainer) -> float:
    """Epochs of training done: optimizer steps over the steps of one epoch (whole epochs where that is unknown)."""
    per_epoch = trainer.num_training_batches / max(1, trainer.accumulate_grad_batches)
    if not math.isfinite(per_epoch) or per_epoch <= 0:
        return float(trainer.current_epoch + 1)
    return trainer.global_step / math.ceil(per_epoch)


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


# ------------------------------------------------------------------------------------ resumable checkpoints


def save_checkpoint(trainer: L.Trainer, path: str | os.PathLike, weights_only: bool = False) -> None:
    """``trainer.save_checkpoint`` to a temporary file beside ``path``, synced and renamed into place: a run killed
    while saving keeps its previous checkpoint whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        trainer.save_checkpoint(tmp, weights_only=weights_only)
        if trainer.is_global_zero:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _loader_generators(trainer: L.Trainer) -> list[torch.Generator]:
    """The ``torch.Generator`` objects the train loaders shuffle with (the loader's own, its sampler's, a batch
    sampler's inner sampler's), each once, in a fixed order; an empty list when they use the global RNG."""
    loaders = trainer.train_dataloader
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    found: dict[int, torch.Generator] = {}
    for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
        samplers = [loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)]
        samplers += [getattr(s, "sampler", None) for s in samplers[1:]]
        for obj in samplers:
            gen = getattr(obj, "generator", None)
            if isinstance(gen, torch.Generator):
                found.setdefault(id(gen), gen)
    return list(found.values())


def random_state(generators: list[torch.Generator]) -> dict[str, Any]:
    """Every random state a training step may draw from, as tensors and plain values (``weights_only`` loads it)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
        "loaders": [g.get_state() for g in generators],
    }


def set_random_state(state: dict[str, Any], generators: list[torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    for gen, saved in zip(generators, state["loaders"], strict=True):
        gen.set_state(saved)


def _train_iterator(trainer: L.Trainer) -> Any:
    """The iterator over this epoch's train batches (Lightning's CombinedLoader returns itself from ``iter``)."""
    return trainer.fit_loop._data_fetcher.combined_loader._iterator


class RunCheckpoint(L.Callback):
    """Keep ``checkpoints/last.ckpt`` current, so a killed or interrupted run resumes where it stopped and ends
    with the weights an uninterrupted run would have, bit for bit.

    The checkpoint is written atomically (:func:`save_checkpoint`) at the end of every epoch, after its
    validation, and within an epoch every ``every_n_steps`` optimizer steps. Lightning restores weights,
    optimizer, schedule and loop counters, but neither random state nor the position in an epoch: a plain
    DataLoader restarts at the first batch of a new shuffle. So the checkpoint also carries the random states
    (torch, CUDA, numpy, python and the train loader's own generators) from which the epoch's batch order was
    drawn and those of the moment it was written; a resumed run rebuilds the epoch's batch order, skips the
    batches already trained and continues from the saved state. Only a sized train loader can be resumed within
    an epoch; with an unsized one checkpoints (and Ctrl-C stops) wait for the epoch's end.

    The first Ctrl-C (SIGINT) during training stops at the next optimizer step, or at the epoch's end when the
    epoch's validation is running: the checkpoint is written there and ``KeyboardInterrupt`` raised. A second
    Ctrl-C interrupts at once, keeping the previous checkpoint.

    Args:
        dirpath: the run's ``checkpoints/`` folder.
        every_n_steps: optimizer steps between checkpoints within an epoch; 0 writes them at epoch ends only.
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_steps: int = 500) -> None:
        super().__init__()
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self._trainer: L.Trainer | None = None
        self._epoch_rng: dict[str, Any] | None = None  # the state the epoch's batch order is drawn from
        self._epoch_iterator: Any = None  # the train iterator seen at the epoch's start, until its first batch
        self._batches_done: int | None = None  # while writing: the epoch's batches it covers (0: all)
        self._step_seen = -1
        self._resume: dict[str, Any] | None = None
        self._stop_requested = False
        self._sigint_handler: Any = None

    # the checkpoint's own state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"rng": random_state(_loader_generators(self._trainer)), "epoch_rng": self._epoch_rng,
                "batches_done": self._batches_done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = state_dict

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Store a checkpoint written at an epoch's end as the finished epoch it is. Lightning counts the epoch as
        finished only once its end hooks return; restarting such a checkpoint with ``max_steps`` set, it would
        train one more batch of the old epoch and validate it again."""
        if self._batches_done != 0:
            return
        checkpoint["epoch"] = trainer.current_epoch + 1
        loop = checkpoint["loops"]["fit_loop"]
        for counts in loop["epoch_progress"].values():
            counts["completed"] = counts["processed"]
        for key in ("epoch_loop.batch_progress", "epoch_loop.val_loop.batch_progress"):
            loop[key]["current"] = dict.fromkeys(loop[key]["current"], 0)
            loop[key]["is_last_batch"] = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer
        for stale in self.path.parent.glob(".*.ckpt.*.part"):  # left by a run killed while saving
            stale.unlink(missing_ok=True)

    def _save(self, trainer: L.Trainer, batches_done: int) -> None:
        self._batches_done = batches_done
        try:
            save_checkpoint(trainer, self.path)
        finally:
            self._batches_done = None

    # resuming ---------------------------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_sigint()
        self._step_seen = trainer.global_step
        if self._resume is None:
            return
        state, self._resume = self._resume, None
        if state["batches_done"] is None:  # written by someone else's trainer.save_checkpoint: Lightning's restore
            return
        fetcher = trainer.fit_loop._data_fetcher  # Lightning has no public handle on the epoch's iterator
        generators = _loader_generators(trainer)
        skip = state["batches_done"]
        if not skip:  # written between epochs: the next batch order is drawn from the saved state
            set_random_state(state["rng"], generators)
            iter(fetcher)
            return
        epoch_rng = state["epoch_rng"]
        self._epoch_rng = epoch_rng
        set_random_state(epoch_rng["state"], generators)
        iter(fetcher)
        if epoch_rng["after_iter"]:
            set_random_state(epoch_rng["state"], generators)
        for _ in range(skip):
            next(fetcher.iterator)
        set_random_state(state["rng"], generators)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_rng = {"state": random_state(_loader_generators(trainer)), "after_iter": True}
        self._epoch_iterator = _train_iterator(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._epoch_iterator is not None:
            # Lightning creates an epoch's iterator before this epoch's start hook in a fit's first epoch, after it
            # in the others: the batch order was drawn from the state saved at the start only if the iterator
            # already existed then.
            after = _train_iterator(trainer) is self._epoch_iterator
            self._epoch_rng["after_iter"] = after
            self._epoch_iterator = None

    # writing ----------------------------------------------------------------------------------------------------

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        stepped = trainer.global_step != self._step_seen
        self._step_seen = trainer.global_step
        epoch_loop = trainer.fit_loop.epoch_loop
        if not stepped or epoch_loop.batch_progress.is_last_batch or trainer.fit_loop._data_fetcher.length is None:
            return  # mid-accumulation, the epoch's end comes next, or no resumable position
        due = self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0
        if due or self._stop_requested:
            self._save(trainer, batch_idx + 1)
        if self._stop_requested:
            raise KeyboardInterrupt

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, 0)
        if self._stop_requested:
            raise KeyboardInterrupt

    # Ctrl-C -----------------------------------------------------------------------------------------------------

    def _catch_sigint(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._sigint_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        print("zoo: stopping at the next step to save a checkpoint (Ctrl-C again to stop now)", file=sys.stderr)

    def _release_sigint(self) -> None:
        if self._sigint_handler is not None:
            signal.signal(signal.SIGINT, self._sigint_handler)
            self._sigint_handler = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._release_sigint()
        if self._stop_requested:  # Ctrl-C after the last checkpoint: stop before testing
            raise KeyboardInterrupt

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._release_sigint()
