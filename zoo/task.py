"""``TaskSpec``: what a task package tells the zoo, and the one training path every supervised task shares.

A task registers a ``TaskSpec`` under the ``zoo.tasks`` entry-point group. The zoo then resolves its config,
builds its datamodule, derives the model info (data-derived sizes, statistics, vocabularies) and the
LightningModule from it, fits, tests and writes the run dir; a task whose training is not a supervised ``fit``
(RL) passes its own ``train`` instead of changing this flow. This module imports no Lightning at import time, so
metadata commands stay fast.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo._version import __version__
from zoo.config import ZOO_TRAINER_KEYS, config_sha256, dump_yaml, repo_root, to_dict
from zoo.errors import ZooValueError
from zoo.io import atomic_write_text

if TYPE_CHECKING:
    import lightning as L


class lazy:  # noqa: N801 - used like a function: lazy("pkg.module:function")
    """A callable standing for ``"pkg.module:attr"`` that imports it on the first call, so a task package can name
    its builders without importing torch or its data libraries."""

    def __init__(self, target: str) -> None:
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"lazy target {target!r}: expected 'package.module:attribute'")
        self.target = target
        self._func: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._func is None:
            import importlib

            module, _, attr = self.target.partition(":")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._func = obj
        return self._func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"lazy({self.target!r})"


def number_list(text: str) -> list[float]:
    """``"80,95"`` → ``[80.0, 95.0]``: the type of a list-valued ``PredictOption``."""
    import argparse

    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 80,95")
    return values


@dataclass(frozen=True)
class PredictOption:
    """A task-specific ``zoo predict`` option ``--<flag>``, passed to ``TaskSpec.predict`` as keyword ``dest``
    only when the user gives it (so the predict function's own default applies otherwise).

    Args:
        flag: the option name without dashes, e.g. ``"rank-by"`` (keyword ``rank_by``).
        help: one line for ``zoo predict TASK --help``.
        type: converts the command-line string (``int``, ``float``, ``str``, :func:`number_list` for a list);
            a list option takes one comma-separated value, so it can never swallow INPUT.
        metavar: the value's name in the help.
        choices: the allowed values, if a closed set.
        flag_only: a switch without a value (passed as True).
    """

    flag: str
    help: str
    type: Callable[[str], Any] = str
    metavar: str | None = None
    choices: tuple[Any, ...] | None = None
    flag_only: bool = False

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")


@dataclass(frozen=True)
class TaskSpec:
    """A task: its config type, builders, predict contract and a one-line description for ``zoo list``.

    Building: ``model_info(cfg, datamodule) → info`` extracts from the prepared datamodule everything the network
    needs beyond the config (data-derived sizes, normalisation statistics, vocabularies and id maps, feature
    lists); ``build_module(cfg, info)`` builds the LightningModule from the config and that info alone. Info
    values are YAML scalars, lists and mappings, or arrays (numpy or torch) at the top level; arrays reach
    ``build_module`` and ``predict`` as CPU torch tensors whichever way the info came (fresh from data, from a
    run dir or from published weights), so the three paths build the same model. Published weights carry the
    info, which is why loading them never builds a datamodule.

    ``needs_fit(cfg)`` is False for models with nothing to train (classical baselines). ``evaluate(cfg, trainer,
    module, datamodule)`` replaces the plain test loop when evaluation is more than one pass over a test set.
    ``train(cfg, module, datamodule, run_dir, resume=CKPT|None, progress=bool) → metrics`` replaces
    ``Trainer.fit`` for a task whose training is not a supervised fit (RL's environment loop); it writes
    ``run_dir/checkpoints/last.ckpt`` (with a ``state_dict`` entry, as Lightning's). ``trace(cfg, module,
    datamodule, steps) → losses`` is its golden trace (``zoo.golden``).

    Predict: ``predict(loaded, input, *, out=None, **options) → rows`` serves ``zoo predict``; ``loaded`` is a
    :class:`LoadedModel` (``config``, ``module``, ``info``; no datamodule). ``predict_input`` is the help of the
    INPUT positional (None: the task takes none), ``predict_input_required`` whether it must be given, and
    ``predict_options`` the task's own options (``--plot`` included when the task draws one). ``predict_out`` is the
    help of ``--out`` when the task writes something else there than its rows as a file (a folder of renders).

    ``extras`` name the pip extras the task needs and ``requires`` the modules they provide: a missing one makes
    ``zoo`` print the install command instead of failing on an import. ``headline_metrics`` (fnmatch patterns)
    are the metrics ``zoo train``/``eval`` print without ``--verbose`` (all when empty).
    """

    name: str
    description: str
    config_cls: type
    build_datamodule: Callable[[Any], L.LightningDataModule]
    build_module: Callable[[Any, Mapping[str, Any]], L.LightningModule]
    model_info: Callable[[Any, L.LightningDataModule], dict[str, Any]] = lambda cfg, dm: {}
    needs_fit: Callable[[Any], bool] = lambda cfg: True
    evaluate: Callable[[Any, L.Trainer, L.LightningModule, L.LightningDataModule], dict[str, float]] | None = None
    train: Callable[..., dict[str, float]] | None = None
    trace: Callable[[Any, L.LightningModule, L.LightningDataModule, int], list[float]] | None = None
    predict: Callable[..., list[dict]] | None = None
    predict_input: str | None = None
    predict_input_required: bool = True
    predict_options: tuple[PredictOption, ...] = ()
    predict_out: str | None = None
    extras: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    headline_metrics: tuple[str, ...] = ()

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
    """A task module built from a config and its model info; ``datamodule`` is the one the info came from, or
    None when the model was rebuilt from published weights or a run dir without touching data."""

    task: TaskSpec
    config: Any
    module: L.LightningModule
    info: dict[str, Any]
    datamodule: L.LightningDataModule | None = None


def build_from_info(spec: TaskSpec, cfg: Any, info: Mapping[str, Any]) -> LoadedModel:
    """Build the module from the config and a model info alone (no data). MoE banks are built whole even with
    ``moe.expert_parallel`` > 1: :class:`zoo.distributed.ExpertParallelStrategy` shards them once the ranks run."""
    from zoo import modelinfo
    from zoo.distributed import without_expert_parallel

    info = modelinfo.normalize(info)
    return LoadedModel(spec, cfg, spec.build_module(without_expert_parallel(cfg), info), info)


def build_from_config(spec: TaskSpec, cfg: Any) -> LoadedModel:
    """Prepare the datamodule (``fit`` stage), derive the model info from it and build the module."""
    dm = spec.build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    loaded = build_from_info(spec, cfg, spec.model_info(cfg, dm))
    loaded.datamodule = dm
    return loaded


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    """A Trainer for internal runs (demo, golden traces, tests): CPU, no logger, checkpoints, bars or summary."""
    import lightning as L

    defaults = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    lightning_kwargs = {k: v for k, v in kwargs.items() if k not in ZOO_TRAINER_KEYS}
    return L.Trainer(**{**defaults, **lightning_kwargs})


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    seconds: float
    module: L.LightningModule


def default_threads() -> int:
    """Torch threads for a run: the cores this process may use minus those other processes keep busy (the
    one-minute load average), at least 1. Many threads on a loaded machine make small models many times slower."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = int(os.getloadavg()[0])
    except OSError:
        busy = 0
    return max(1, min(cores, cores - busy))


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
    import torch

    return {
        "command": command if command is not None else sys.argv,
        "zoo": __version__,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "numerics": {k: os.environ[k] for k in ("MKL_CBWR", "ATEN_CPU_CAPABILITY") if k in os.environ},
        "machine": platform.machine(),
        "time": datetime.now().isoformat(timespec="seconds"),
    }


def make_run_dir(task: str, recipe: str | None, seed: int, out: str | os.PathLike | None = None) -> Path:
    """``runs/<task>/<recipe>/<YYYYmmdd-HHMMSS>-s<seed>/`` (or ``out`` verbatim); never reuses a directory. Ranks
    started by torchrun or SLURM share the one rank 0 makes (:func:`zoo.distributed.rank_zero_value`)."""
    from zoo.distributed import rank_zero_value

    return rank_zero_value(lambda: _new_run_dir(task, recipe, seed, out))


def _new_run_dir(task: str, recipe: str | None, seed: int, out: str | os.PathLike | None) -> Path:
    if out is not None:
        run_dir = Path(out)
        if run_dir.exists() and not run_dir.is_dir():
            raise ZooValueError(f"--out {run_dir}: exists and is not a directory")
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ZooValueError(f"--out {run_dir}: directory exists and is not empty")
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path("runs") / task / (recipe or "default")
        run_dir, n = base / f"{stamp}-s{seed}", 1
        while True:  # mkdir claims the name atomically: runs started in parallel never share a directory
            try:
                run_dir.mkdir(parents=True)
                return run_dir
            except FileExistsError:
                n += 1
                run_dir = base / f"{stamp}-s{seed}-{n}"
            except OSError as err:
                raise ZooValueError(f"cannot create the run directory {run_dir} ({err.strerror or err})") from None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ZooValueError(f"--out {run_dir}: cannot create the run directory ({err.strerror or err})") from None
    return run_dir


def remove_run_dir(run_dir: Path, prune_parents: bool) -> None:
    """Delete a run dir that holds nothing worth keeping; with ``prune_parents`` (a default ``runs/<task>/<recipe>/``
    location) also the parents it leaves empty, up to and including ``runs/``. Only rank 0 of a world started by
    torchrun or SLURM removes it."""
    import shutil

    from zoo.distributed import is_rank_zero

    if not is_rank_zero():
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    if prune_parents:
        for parent in list(run_dir.parents)[:3]:  # <recipe>/, <task>/, runs/
            try:
                parent.rmdir()  # only if empty
            except OSError:
                break


def write_run_files(run_dir: Path, cfg: Any, extra: dict[str, Any] | None = None) -> None:
    """``config.yaml`` and ``run.json`` (provenance); written by rank 0 only of a world started by torchrun or SLURM."""
    from zoo.distributed import is_rank_zero

    if not is_rank_zero():
        return
    atomic_write_text(run_dir / "config.yaml", dump_yaml(to_dict(cfg)))
    info = {**provenance(), "config_sha256": config_sha256(cfg), **(extra or {})}
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=1))


#: Optimizer steps between the checkpoints written within an epoch (``trainer.checkpoint_every_n_steps``).
CHECKPOINT_EVERY_N_STEPS = 500


def build_trainer(
    cfg: Any, run_dir: Path, *, progress: bool = True, callbacks: list | None = None, resumed: bool = False
) -> L.Trainer:
    """A Lightning Trainer writing CSV logs, checkpoints, expert stats and the validation curve into ``run_dir``.

    ``checkpoints/last.ckpt`` is kept current (:class:`zoo.callbacks.RunCheckpoint`): written atomically at the
    end of every epoch and every ``trainer.checkpoint_every_n_steps`` optimizer steps (default
    :data:`CHECKPOINT_EVERY_N_STEPS`; 0: epoch ends only), so a killed run continues with ``zoo train TASK
    --resume RUN`` to the weights an uninterrupted run would reach. ``trainer.enable_checkpointing: false``
    writes none.
    """
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import RichProgressBar
    from lightning.pytorch.loggers import CSVLogger

    from zoo.callbacks import ExpertStatsCallback, RunCheckpoint, ValidationCurve
    from zoo.distributed import expert_parallel_of, local_ranks, trainer_strategy
    from zoo.errors import check_arg

    kwargs = dict(getattr(cfg, "trainer", {}) or {})
    every = kwargs.pop("checkpoint_every_n_steps", CHECKPOINT_EVERY_N_STEPS)
    check_arg(isinstance(every, int) and every >= 0, "trainer.checkpoint_every_n_steps", every, "an integer >= 0")
    checkpointing = kwargs.pop("enable_checkpointing", True)
    kwargs.setdefault("accelerator", "cpu" if not torch.cuda.is_available() else "auto")
    # DDP through the zoo's launcher, with the MoE banks sharded over the ranks for moe.expert_parallel > 1
    ranks = local_ranks(kwargs.get("devices", "auto"), kwargs["accelerator"]) * kwargs.get("num_nodes", 1)
    kwargs["strategy"] = trainer_strategy(kwargs.get("strategy", "auto"), expert_parallel_of(cfg), kwargs["accelerator"],
                                          ranks)
    all_callbacks = [ExpertStatsCallback(dirpath=run_dir), ValidationCurve(dirpath=run_dir), *(callbacks or [])]
    if progress:
        all_callbacks.append(RichProgressBar(leave=True))
    if checkpointing:  # last: its checkpoint holds the other callbacks' state after this step
        all_callbacks.append(RunCheckpoint(run_dir / "checkpoints", every_n_steps=every))
    # A resumed run logs into a new version folder so the first part's metrics.csv is kept.
    version = "" if not resumed else f"resumed-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return L.Trainer(
        default_root_dir=run_dir,
        logger=CSVLogger(run_dir, name="", version=version),
        callbacks=all_callbacks,
        enable_checkpointing=False,  # RunCheckpoint writes them; Lightning would add its own
        enable_progress_bar=progress,
        enable_model_summary=False,
        **kwargs,
    )


@contextmanager
def _reraise_interrupt(trainer: L.Trainer) -> Iterator[None]:
    """Lightning ends a Ctrl-C in ``fit``/``test`` with its graceful shutdown and ``sys.exit(1)``; give the caller
    the ``KeyboardInterrupt`` back, so ``zoo train`` reports it as one (exit 130)."""
    try:
        yield
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise


def fit_and_test(
    spec: TaskSpec,
    cfg: Any,
    run_dir: Path,
    *,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
) -> RunResult:
    """Seed, build, fit (unless the model has nothing to train), test; write ``model_info``, ``results.json``.

    Ctrl-C raises ``KeyboardInterrupt`` (after the training checkpoint it triggers, see
    :class:`zoo.callbacks.RunCheckpoint`). In a world started by torchrun or SLURM every rank runs this and rank 0
    writes the files; the ranks wait for each other at the end."""
    import lightning as L

    from zoo import modelinfo
    from zoo.distributed import is_rank_zero, wait_for_external_world

    L.seed_everything(getattr(cfg, "seed", 0), workers=True, verbose=False)
    built = build_from_config(spec, cfg)
    writes = is_rank_zero()
    if writes:
        modelinfo.save_run(run_dir, built.info)
    module, datamodule = built.module, built.datamodule
    trainer = build_trainer(cfg, run_dir, progress=progress and spec.train is None, resumed=resume is not None)
    start = time.perf_counter()
    train_metrics: dict[str, float] = {}
    with _reraise_interrupt(trainer):
        if spec.train is not None:
            train_metrics = spec.train(cfg, module, datamodule, run_dir, resume=resume, progress=progress)
        elif spec.needs_fit(cfg):
            with warnings.catch_warnings():
                # RunCheckpoint resumes mid-epoch itself; Lightning would warn that a plain DataLoader cannot
                warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
                trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None,
                            weights_only=True)
        train_seconds = time.perf_counter() - start
        metrics = {**train_metrics, **spec.test(cfg, trainer, module, datamodule)}
    result = {"metrics": metrics, "train_seconds": round(train_seconds, 3), "config_sha256": config_sha256(cfg)}
    if writes:
        atomic_write_text(run_dir / "results.json", json.dumps(result, indent=1))
    wait_for_external_world()
    return RunResult(run_dir, metrics, train_seconds, module)


def run_test_loop(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule) -> dict[str, float]:
    """Run the test loop and return its metrics as plain floats."""
    datamodule.setup("test")
    (raw,) = trainer.test(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in raw.items()}
