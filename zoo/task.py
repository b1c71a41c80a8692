"""``TaskSpec``: what a task package tells the zoo, and the one training path every supervised task shares.

A task registers a ``TaskSpec`` under the ``zoo.tasks`` entry-point group. The zoo then resolves its config,
builds its datamodule and LightningModule, fits, tests and writes the run dir; a task whose training is not a
supervised ``fit`` (RL) passes its own ``train`` instead of changing this flow.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch

from zoo._version import __version__
from zoo.config import config_sha256, dump_yaml, repo_root, to_dict
from zoo.errors import ZooValueError
from zoo.io import atomic_write_text


@dataclass(frozen=True)
class TaskSpec:
    """A task: its config type, builders, and a one-line description for ``zoo list``.

    ``build_module(cfg, datamodule)`` gets the prepared datamodule so the model can size itself from the data
    (lookback, horizon, number of series). ``needs_fit(cfg)`` is False for models with nothing to train
    (classical baselines): the flow goes straight to evaluation. ``evaluate(cfg, trainer, module, datamodule)``
    replaces the plain test loop for tasks whose evaluation is more than one pass over a test set (rolling-origin
    online forecasting, environment episodes) and returns the metrics. ``predict(loaded, input, **options)``
    serves ``zoo predict`` and returns one dict per prediction; ``predict_input_required`` is False for a task
    whose INPUT is optional (RL: an environment id, defaulting to the trained one).

    ``train(cfg, module, datamodule, run_dir, resume=CKPT|None, progress=bool) → metrics`` replaces
    ``Trainer.fit`` for a task whose training is not a supervised fit (RL's environment loop); it writes
    ``run_dir/checkpoints/last.ckpt`` (with a ``state_dict`` entry, as Lightning's) so resume, eval and publish
    work unchanged, and returns training metrics (e.g. learning-curve AUC) merged into the run's results.
    ``trace(cfg, module, datamodule, steps) → losses`` is its golden trace (``zoo.golden``).
    """

    name: str
    description: str
    config_cls: type
    build_datamodule: Callable[[Any], L.LightningDataModule]
    build_module: Callable[[Any, L.LightningDataModule], L.LightningModule]
    needs_fit: Callable[[Any], bool] = lambda cfg: True
    predict: Callable[..., list[dict]] | None = None
    extras: tuple[str, ...] = ()
    evaluate: Callable[[Any, L.Trainer, L.LightningModule, L.LightningDataModule], dict[str, float]] | None = None
    predict_input_required: bool = True
    train: Callable[..., dict[str, float]] | None = None
    trace: Callable[[Any, L.LightningModule, L.LightningDataModule, int], list[float]] | None = None

    def test(self, cfg: Any, trainer: L.Trainer, module: L.LightningModule,
             datamodule: L.LightningDataModule) -> dict[str, float]:
        """Metrics of a trained (or untrainable) module: the task's ``evaluate``, else the plain test loop."""
        if self.evaluate is None:
            return run_test_loop(trainer, module, datamodule)
        metrics = self.evaluate(cfg, trainer, module, datamodule)
        for logger in trainer.loggers:  # where the test loop would have logged them (metrics.csv)
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()
        return metrics


@dataclass
class LoadedModel:
    """A task module built from a config, with the datamodule it was sized from."""

    task: TaskSpec
    config: Any
    module: L.LightningModule
    datamodule: L.LightningDataModule


def build_from_config(spec: TaskSpec, cfg: Any) -> LoadedModel:
    """Prepare the datamodule (``fit`` stage) and build the module sized from it."""
    dm = spec.build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    return LoadedModel(spec, cfg, spec.build_module(cfg, dm), dm)


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    """A Trainer for internal runs (demo, golden traces, tests): CPU, no logger, checkpoints, bars or summary."""
    defaults = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**defaults, **kwargs})


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    seconds: float
    module: L.LightningModule


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(command: list[str] | None = None) -> dict[str, Any]:
    """Where and how a run happened: command, versions, git commit, device and threads."""
    import lightning

    return {
        "command": command if command is not None else sys.argv,
        "zoo": __version__,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "time": datetime.now().isoformat(timespec="seconds"),
    }


def make_run_dir(task: str, recipe: str | None, seed: int, out: str | os.PathLike | None = None) -> Path:
    """``runs/<task>/<recipe>/<YYYYmmdd-HHMMSS>-s<seed>/`` (or ``out`` verbatim); never reuses a directory."""
    if out is not None:
        run_dir = Path(out)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ZooValueError(f"--out {run_dir}: directory exists and is not empty")
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path("runs") / task / (recipe or "default")
        run_dir = base / f"{stamp}-s{seed}"
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = base / f"{stamp}-s{seed}-{n}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_run_files(run_dir: Path, cfg: Any, extra: dict[str, Any] | None = None) -> None:
    atomic_write_text(run_dir / "config.yaml", dump_yaml(to_dict(cfg)))
    info = {**provenance(), "config_sha256": config_sha256(cfg), **(extra or {})}
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=1))


def build_trainer(
    cfg: Any, run_dir: Path, *, progress: bool = True, callbacks: list | None = None, resumed: bool = False
) -> L.Trainer:
    """A Lightning Trainer writing CSV logs, checkpoints and expert stats into ``run_dir``."""
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger

    from zoo.callbacks import ExpertStatsCallback

    kwargs = dict(getattr(cfg, "trainer", {}) or {})
    kwargs.setdefault("accelerator", "cpu" if not torch.cuda.is_available() else "auto")
    all_callbacks = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0),
        ExpertStatsCallback(dirpath=run_dir),
        *(callbacks or []),
    ]
    if progress:
        all_callbacks.append(RichProgressBar(leave=True))
    # A resumed run logs into a new version folder so the first part's metrics.csv is kept.
    version = "" if not resumed else f"resumed-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return L.Trainer(
        default_root_dir=run_dir,
        logger=CSVLogger(run_dir, name="", version=version),
        callbacks=all_callbacks,
        enable_progress_bar=progress,
        enable_model_summary=False,
        **kwargs,
    )


def fit_and_test(
    spec: TaskSpec,
    cfg: Any,
    run_dir: Path,
    *,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
) -> RunResult:
    """Seed, build, fit (unless the model has nothing to train), test; write ``results.json`` in the run dir."""
    L.seed_everything(getattr(cfg, "seed", 0), workers=True, verbose=False)
    built = build_from_config(spec, cfg)
    module, datamodule = built.module, built.datamodule
    trainer = build_trainer(cfg, run_dir, progress=progress and spec.train is None, resumed=resume is not None)
    start = time.perf_counter()
    train_metrics: dict[str, float] = {}
    if spec.train is not None:
        train_metrics = spec.train(cfg, module, datamodule, run_dir, resume=resume, progress=progress)
    elif spec.needs_fit(cfg):
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None, weights_only=True)
    train_seconds = time.perf_counter() - start
    metrics = {**train_metrics, **spec.test(cfg, trainer, module, datamodule)}
    result = {"metrics": metrics, "train_seconds": round(train_seconds, 3), "config_sha256": config_sha256(cfg)}
    atomic_write_text(run_dir / "results.json", json.dumps(result, indent=1))
    return RunResult(run_dir, metrics, train_seconds, module)


def run_test_loop(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule) -> dict[str, float]:
    """Run the test loop and return its metrics as plain floats."""
    datamodule.setup("test")
    (raw,) = trainer.test(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in raw.items()}
