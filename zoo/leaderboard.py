"""Leaderboards: spec YAML → ``reproduce`` (one results JSON per run) → ``render`` Markdown → ``check``.

A board ``leaderboards/<board>.yaml`` names its task, protocol, metrics (key, display name, format, which
direction is better, tolerance, or ``kind: timing`` for a wall-clock figure that is shown but never checked), seeds
and rows (recipe, optional weights id, optional ``claimed`` paper numbers kept apart from reproduced ones,
optional ``config`` overrides, ``seeds`` and Ray ``resources``). A board-level ``config`` (dotted keys) puts
every recipe on the board's data; ``smoke_config`` is added in the smoke tier, before the recipes' own smoke
overrides; ``comparisons`` print ratios of two rows' means under each table; ``claims`` are the paper's claims,
judged from each tier's results (:mod:`zoo.claims`); ``summary`` picks what the README's one-line-per-board table
shows (primary ``metric``, default the first; the ``moe`` row and its ``dense`` twin).

``reproduce`` trains and tests every row × seed of a tier (``smoke`` applies each recipe's smoke overrides,
``full`` runs the recipe as written) under one overall progress bar and writes
``leaderboards/results/<board>/<row>/<tier>-s<seed>.json``; ``compare`` sets the re-run means against the results
committed before it. Runs whose results file holds the config hash the run would have now are skipped unless
``force``, so rerunning an interrupted reproduce resumes it. With ``jobs`` > 1 or the Ray executor the runs go to
workers (:mod:`zoo.executors`; one torch thread each unless told otherwise) and the caller writes each results
file as its run finishes; a run that raises is reported while the others go on. ``render`` turns whatever results exist
into ``leaderboards/<board>.md`` (mean ± std (n), the value alone when n = 1; best marked; params total/active;
wall seconds of train + test per run; the reproduce command) and into the README's summary table between
``<!-- leaderboards -->`` and ``<!-- /leaderboards -->``; ``render --check`` fails (exit 6) if the committed files
differ from what the results render to.
``check --tier smoke`` reruns the smoke tier and fails (exit 5) when a metric moves beyond its tolerance, is
missing from the rerun or is not finite. A malformed results file is a one-line error naming it (exit 2).
See docs/architecture.md, "Leaderboards".
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.claims import Claim, parse_claims, render_claims, tally
from zoo.config import config_sha256, read_yaml, repo_root, resolve_config
from zoo.references import Reference, parse_references, render_references
from zoo.errors import StaleTableError, ToleranceError, ZooError, ZooValueError, check_arg
from zoo.io import atomic_write_text

TIERS = ("smoke", "full")
RESOURCES = ("cpus", "gpus")  # what a run may ask a Ray scheduler for


def boards_dir() -> Path:
    return repo_root() / "leaderboards"


def board_names() -> list[str]:
    return sorted(p.stem for p in boards_dir().glob("*.yaml"))


BETTER = ("lower", "higher", "none")  # "none": a diagnostic (e.g. routing entropy), shown without arrow or bold
# "timing": wall-clock seconds, which depend on the machine and its load: shown on the board, never checked.
KINDS = ("score", "timing")


# Board runs pin the CPU math libraries to one instruction-set path, so a result does not depend on whether the
# machine has AVX-512 (MKL's conditional numerical reproducibility; ATen's kernel dispatch). RL training amplifies
# the last-bit differences between paths into different returns. Set before torch is imported (the CLI does).
REPRODUCIBLE_NUMERICS = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ZOO_KERNELS_AUTOTUNE": "0"}
# read by the kernels at each call, so pinning it works after torch is imported; the others are read at import
_READ_AT_CALL = ("ZOO_KERNELS_AUTOTUNE",)


def pin_numerics() -> None:
    """Set :data:`REPRODUCIBLE_NUMERICS` unless the user set them: the CPU kernels' instruction set, and ``auto``
    choosing its expert backend by a fixed rule instead of by timing (backends agree to ~1e-6, not bitwise). The
    instruction-set pins only take effect before torch is imported (an in-process caller that imported it already
    keeps its numerics); results record what was in effect."""
    import os
    import sys

    for key, value in REPRODUCIBLE_NUMERICS.items():
        if key in _READ_AT_CALL or "torch" not in sys.modules:
            os.environ.setdefault(key, value)


@dataclass(frozen=True)
class MetricSpec:
    """A board column.

    Args:
        tolerance: how far a rerun's value may move (``check``, and ``reproduce``'s verdict); finite, since a
            figure no tolerance can hold is a timing.
        kind: ``score``, or ``timing`` for a machine-dependent measurement that is reported and never checked
            (it takes no tolerance).
    """

    key: str
    display: str
    format: str = "{:.4g}"
    better: str = "lower"
    tolerance: float = 0.0
    kind: str = "score"

    @property
    def checked(self) -> bool:
        return self.kind != "timing"


@dataclass(frozen=True)
class RowSpec:
    """A row: a recipe, plus ``config`` (dotted keys) applied over it and over the board's ``config``.
    ``seeds`` overrides the board's seeds (one seed for deterministic rows such as statistical baselines);
    ``resources`` (``cpus``, ``gpus``) what one of its runs asks a Ray scheduler for, over the board's."""

    name: str
    recipe: str
    weights: str | None = None
    claimed: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None
    resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """A ratio printed under each tier's table: mean ``metric`` of ``numerator`` over that of ``denominator``."""

    label: str
    metric: str
    numerator: str
    denominator: str


@dataclass(frozen=True)
class Summary:
    """The board's line in the README summary: its primary ``metric`` (None: the first metric) and the pair of
    rows that tests the paper's claim, its ``moe`` row against the ``dense`` twin (both or neither)."""

    metric: str | None = None
    moe: str | None = None
    dense: str | None = None


@dataclass(frozen=True)
class BoardSpec:
    name: str
    task: str
    title: str
    protocol: str
    metrics: tuple[MetricSpec, ...]
    seeds: tuple[int, ...]
    rows: tuple[RowSpec, ...]
    claimed_source: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    smoke_config: dict[str, Any] = field(default_factory=dict)
    comparisons: tuple[Comparison, ...] = ()
    summary: Summary = Summary()
    resources: dict[str, float] = field(default_factory=dict)
    claims: tuple[Claim, ...] = ()
    references: tuple[Reference, ...] = ()

    @property
    def primary_metric(self) -> MetricSpec:
        """The metric the README summary ranks rows by."""
        key = self.summary.metric or self.metrics[0].key
        return next(m for m in self.metrics if m.key == key)

    def row(self, name: str) -> RowSpec:
        for row in self.rows:
            if row.name == name:
                return row
        raise ZooValueError(f"board {self.name!r} has no row {name!r} (rows: {', '.join(r.name for r in self.rows)})")


def load_spec(name: str) -> BoardSpec:
    """Parse and validate ``leaderboards/<name>.yaml``."""
    path = boards_dir() / f"{name}.yaml"
    if not path.exists():
        import difflib

        close = difflib.get_close_matches(name, board_names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ZooValueError(f"unknown board {name!r}{hint} (known: {', '.join(board_names()) or 'none'})")
    data = read_yaml(path)
    try:
        metrics = tuple(MetricSpec(**m) for m in data["metrics"])
        rows = tuple(RowSpec(**{**r, "seeds": tuple(r["seeds"]) if "seeds" in r else None}) for r in data["rows"])
        spec = BoardSpec(
            name=name,
            task=data["task"],
            title=data.get("title", name),
            protocol=data.get("protocol", "").strip(),
            metrics=metrics,
            seeds=tuple(data.get("seeds", [0])),
            rows=rows,
            claimed_source=data.get("claimed_source"),
            config=dict(data.get("config") or {}),
            smoke_config=dict(data.get("smoke_config") or {}),
            comparisons=tuple(Comparison(**c) for c in data.get("comparisons") or ()),
            summary=Summary(**(data.get("summary") or {})),
            resources=dict(data.get("resources") or {}),
            claims=parse_claims(data.get("claims"), {m.key: m.better for m in metrics}, {r.name for r in rows},
                                str(path)),
            references=parse_references(data.get("references"), {m.key for m in metrics}, {r.name for r in rows},
                                        str(path)),
        )
    except (KeyError, TypeError) as err:
        raise ZooValueError(f"{path}: malformed board spec ({err})") from None
    for raw, m in zip(data["metrics"], metrics):
        _check_metric(raw, m, path)
    if len({r.name for r in rows}) != len(rows):
        raise ZooValueError(f"{path}: duplicate row names")
    for c in spec.comparisons:
        for row in (c.numerator, c.denominator):
            spec.row(row)
    _check_summary(spec, path)
    for where, resources in [("resources", spec.resources), *((f"row {r.name}: resources", r.resources) for r in rows)]:
        _check_resources(resources, f"{path}: {where}")
    return spec


def _check_resources(resources: dict[str, Any], where: str) -> None:
    for key, value in resources.items():
        if key not in RESOURCES:
            raise ZooValueError(f"{where}: unknown resource {key!r} (known: {', '.join(RESOURCES)})")
        if not _is_number(value) or value < 0:
            raise ZooValueError(f"{where}: {key} must be a number >= 0, got {value!r}")


def _check_metric(raw: dict[str, Any], m: MetricSpec, path: Path) -> None:
    """A metric's ``better`` and ``kind`` are known words; a checked metric has a finite tolerance and a timing
    none, so an unbounded tolerance cannot stand in for "not checked"."""
    check_arg(m.better in BETTER, f"{path.name}: metrics.better", m.better, BETTER)
    check_arg(m.kind in KINDS, f"{path.name}: {m.key}.kind", m.kind, KINDS)
    if not m.checked and "tolerance" in raw:
        raise ZooValueError(f"{path}: {m.key} is a timing (reported, never checked); remove its tolerance")
    if m.checked and not (_is_number(m.tolerance) and math.isfinite(m.tolerance) and m.tolerance >= 0):
        raise ZooValueError(f"{path}: {m.key} tolerance {m.tolerance!r} is not a finite number >= 0; a figure that "
                            "must not be checked is declared `kind: timing`")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_summary(spec: BoardSpec, path: Path) -> None:
    keys = [m.key for m in spec.metrics]
    summary = spec.summary
    if summary.metric is not None:
        check_arg(summary.metric in keys, f"{path.name}: summary.metric", summary.metric, keys)
    if (summary.moe is None) != (summary.dense is None):
        raise ZooValueError(f"{path}: summary names both a moe row and its dense twin, or neither")
    for row in (summary.moe, summary.dense):
        if row is not None:
            spec.row(row)


def results_dir(board: str) -> Path:
    return boards_dir() / "results" / board


def result_path(board: str, row: str, tier: str, seed: int) -> Path:
    return results_dir(board) / row / f"{tier}-s{seed}.json"


def state_dict_sha256(model: Any) -> str:
    """sha256 of the model's state dict serialised as safetensors: the weights hash of a results file."""
    import hashlib

    from safetensors.torch import save

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    return hashlib.sha256(save(state, metadata={"format": "pt"})).hexdigest()


def first_run_dirs(board: str, tier: str, needs: str) -> dict[str, Path]:
    """Per row of a reproduced board, the run directory of its lowest seed that still holds the file ``needs`` on
    this machine (rows without one are left out): board figures drawn from what the runs wrote."""
    out = {}
    for row, records in load_results(board, tier).items():
        for record in sorted(records, key=lambda r: r["seed"]):
            run_dir = Path(record.get("run_dir", ""))
            if (run_dir / needs).exists():
                out[row] = run_dir
                break
    return out


def row_config(spec: BoardSpec, row: RowSpec, tier: str, seed: int) -> tuple[Any, Any]:
    """The task and the resolved config of one run (board, row and smoke layers over the recipe, then the seed)."""
    from zoo.api import load_task

    task = load_task(spec.task)
    smoke = tier == "smoke"
    layers = (spec.config, row.config, spec.smoke_config if smoke else {})
    cfg, _ = resolve_config(task.config_cls, spec.task, row.recipe, smoke=smoke, layers=layers)
    cfg.seed = seed
    return task, cfg


def run_row(spec: BoardSpec, row: RowSpec, tier: str, seed: int, *, progress: bool = False) -> dict[str, Any]:
    """Train and test one row with one seed; return its results record (nothing is written but the run dir)."""
    from zoo.moe import count_params
    from zoo.task import fit_and_test, make_run_dir, provenance, write_run_files

    task, cfg = row_config(spec, row, tier, seed)
    run_dir = make_run_dir(spec.task, row.recipe, seed)
    write_run_files(run_dir, cfg, {"board": spec.name, "row": row.name, "tier": tier})
    start = time.perf_counter()
    result = fit_and_test(task, cfg, run_dir, progress=progress)
    wall = time.perf_counter() - start
    model = result.module.model
    total, active = count_params(model)
    command = f"zoo leaderboard reproduce {spec.name} --tier {tier} --rows {row.name} --seeds {seed}"
    return {
        "board": spec.name,
        "row": row.name,
        "tier": tier,
        "seed": seed,
        "recipe": row.recipe,
        "metrics": result.metrics,
        "params_total": total,
        "params_active": active,
        "weights_sha256": state_dict_sha256(model),
        "config_sha256": config_sha256(cfg),
        "wall_seconds": round(wall, 2),
        "run_dir": str(run_dir),
        **provenance(command.split()),
    }


def planned_runs(
    spec: BoardSpec, rows: list[str] | None = None, seeds: list[int] | None = None
) -> list[tuple[RowSpec, int]]:
    """The (row, seed) runs of a reproduce, in board order: ``rows`` and ``seeds`` narrow the board's own."""
    runs = []
    for row in [spec.row(r) for r in rows] if rows else spec.rows:
        row_seeds = row.seeds if row.seeds is not None else spec.seeds
        runs += [(row, s) for s in row_seeds if seeds is None or s in seeds]
    return runs


@dataclass(frozen=True)
class RunFailure:
    """A run that raised: its row and seed, the error's first line, and the log that holds its traceback
    (``log_tail``: the end of that log, from a worker that may have written it on another machine)."""

    row: str
    seed: int
    error: str
    exit_code: int
    log: Path | None = None
    log_tail: str = ""

    def line(self) -> str:
        return f"{self.row} s{self.seed}: {self.error}" + (f" (log: {self.log})" if self.log else "")


SHOWN_FAILURES = 3  # in the final error line; every failure is reported on its own line as it happens


class RunsFailedError(ZooError):
    """Some runs of a reproduce raised while the others finished and were written (``written``). The exit code is
    the failures' own when they share one (2 for a bad config), else 1."""

    def __init__(self, board: str, tier: str, failures: list[RunFailure], total: int, written: list[Path]) -> None:
        shown = "; ".join(f.line() for f in failures[:SHOWN_FAILURES])
        more = f"; and {len(failures) - SHOWN_FAILURES} more (stderr above lists each)" \
            if len(failures) > SHOWN_FAILURES else ""
        super().__init__(f"{board} {tier}: {len(failures)} of {total} runs failed: {shown}{more}")
        self.failures, self.written = failures, written
        codes = {f.exit_code for f in failures}
        self.exit_code = codes.pop() if len(codes) == 1 else 1


def log_path(board: str, row: str, tier: str, seed: int) -> Path:
    """Where a reproduce run's output (parallel runs) or traceback (any failed run) goes, under ``./runs``."""
    return Path("runs") / "leaderboard" / board / row / f"{tier}-s{seed}.log"


def run_failure(row: RowSpec, seed: int, err: Exception, log: Path) -> RunFailure:
    """The record of a run that raised; its traceback is appended to ``log``."""
    import traceback

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as f:
        traceback.print_exception(err, file=f)
    first = str(err).strip().splitlines()
    message = f"{type(err).__name__}: {first[0]}" if first else type(err).__name__
    return RunFailure(row.name, seed, message, err.exit_code if isinstance(err, ZooError) else 1, log)


def _is_current(spec: BoardSpec, row: RowSpec, tier: str, seed: int) -> bool:
    """Whether the run's results file exists and was made from the config the run would resolve to now."""
    path = result_path(spec.name, row.name, tier, seed)
    if not path.exists():
        return False
    record = read_record(path, spec.name, tier)
    return record.get("config_sha256") == config_sha256(row_config(spec, row, tier, seed)[1])


def _overall_progress(console: Any, enabled: bool) -> Any:
    """One bar for the whole reproduce on stderr: runs done / total, running and failed, elapsed and left."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
               TextColumn("{task.fields[running]} running, {task.fields[failed]} failed"), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    return Progress(*columns, console=console, disable=not enabled)


def reproduce(
    board: str,
    tier: str,
    *,
    rows: list[str] | None = None,
    seeds: list[int] | None = None,
    progress: bool = False,
    jobs: int = 1,
    threads: int | None = None,
    force: bool = False,
    executor: str = "local",
    address: str | None = None,
) -> list[Path]:
    """Train and test each row × seed of ``tier``; write one results JSON per run as it finishes. Returns the
    paths written.

    Runs whose results file exists with the config hash the run would have now are left out unless ``force``, so
    rerunning an interrupted reproduce resumes it. A run that raises is reported on stderr (row, seed, error, log)
    and the others go on; when any failed, :class:`RunsFailedError` (holding the paths written) is raised at the
    end. Results files are written whole or not at all, so an interrupted reproduce leaves none half-written.

    Args:
        progress: show one overall bar; the runs' own Lightning bars stay off so it is the only one.
        jobs: with the local executor, 1 runs in this process, one run after another, and N > 1 runs N at a time in
            N worker processes; with Ray and no ``address``, the local instance gets ``jobs`` × ``threads`` CPUs
            (``jobs`` 1: all of them).
        threads: torch threads of each worker (default 1, so results do not depend on ``jobs``); in-process runs
            keep this process's setting.
        executor: ``local`` or ``ray`` (see :mod:`zoo.executors`).
        address: the Ray cluster to submit to (default: start a local instance).
    """
    from rich.console import Console

    from zoo import executors

    check_arg(tier in TIERS, "--tier", tier, TIERS)
    check_arg(isinstance(jobs, int) and jobs >= 1, "--jobs", jobs, "a positive int")
    check_arg(threads is None or threads >= 1, "--threads", threads, "a positive int")
    check_arg(executor in executors.EXECUTORS, "--executor", executor, executors.EXECUTORS)
    check_arg(address is None or executor == "ray", "--address", address, "only with --executor ray")
    spec = load_spec(board)
    runs = planned_runs(spec, rows, seeds)
    console = Console(stderr=True)
    in_process = executor == "local" and jobs == 1
    local_workers = executors.LocalProcesses(jobs, _worker_imports(spec.task)) \
        if executor == "local" and jobs > 1 else None  # made first: its server imports torch while this process works
    if not force:
        try:
            runs = _without_current(spec, runs, tier, console)
        except BaseException:
            if local_workers is not None:
                local_workers.close()
            raise
    worker_threads = None if in_process else threads or 1
    cwd = str(Path.cwd())
    todo_jobs = [executors.Job(spec, row, tier, seed, worker_threads, cwd, **_resources(spec, row, worker_threads))
                 for row, seed in runs]
    written: list[Path] = []
    failures: list[RunFailure] = []

    def done(job: executors.Job, outcome: executors.Outcome) -> None:
        if isinstance(outcome, RunFailure):
            if outcome.log is not None and outcome.log_tail and not outcome.log.exists():  # ran on another machine
                outcome.log.parent.mkdir(parents=True, exist_ok=True)
                outcome.log.write_text(outcome.log_tail, encoding="utf-8")
            failures.append(outcome)
            console.print(f"failed: {board} {tier} {outcome.line()}", style="red", markup=False, highlight=False,
                          soft_wrap=True)
            return
        path = result_path(board, job.row.name, tier, job.seed)
        atomic_write_text(path, json.dumps(outcome, indent=1))
        written.append(path)

    if not todo_jobs:
        if local_workers is not None:
            local_workers.close()
        return written
    if in_process:
        runner: executors.Executor = executors.InProcess()
    elif local_workers is not None:
        runner = local_workers
    else:
        runner = executors.RayTasks(address, jobs * (threads or 1) if jobs > 1 else None,
                                    report=lambda line: console.print(line, style="yellow", markup=False,
                                                                      highlight=False, soft_wrap=True))
    with _overall_progress(console, progress) as bar:
        task = bar.add_task(f"{board} {tier}", total=len(todo_jobs), running=0, failed=0)
        try:
            for job in todo_jobs:
                runner.submit(job)
            while len(written) + len(failures) < len(todo_jobs):
                bar.update(task, **_bar_fields(board, tier, runner.running(), len(failures)))
                for job, outcome in runner.wait_any():
                    done(job, outcome)
                    bar.advance(task)
            bar.update(task, **_bar_fields(board, tier, [], len(failures)))
        except BaseException:
            runner.stop()
            raise
        runner.close()
    if failures:
        raise RunsFailedError(board, tier, failures, len(todo_jobs), written)
    return written


def _without_current(spec: BoardSpec, runs: list[tuple[RowSpec, int]], tier: str,
                     console: Any) -> list[tuple[RowSpec, int]]:
    """The runs whose results file is missing or was made from another config than the run's now; says how many
    were skipped."""
    todo = [(row, seed) for row, seed in runs if not _is_current(spec, row, tier, seed)]
    if len(todo) < len(runs):
        console.print(f"{spec.name} {tier}: skipped {len(runs) - len(todo)} of {len(runs)} runs whose results exist "
                      "with the same config hash (--force redoes them)", markup=False, highlight=False,
                      soft_wrap=True)
    return todo


def _bar_fields(board: str, tier: str, running: list[Any], failed: int) -> dict[str, Any]:
    """The overall bar's text: the runs going on now (the first three), how many, and how many failed."""
    names = ", ".join(job.name for job in running[:3]) + (", …" if len(running) > 3 else "")
    return {"description": f"{board} {tier}" + (f": {names}" if names else ""), "running": len(running),
            "failed": failed}


def _resources(spec: BoardSpec, row: RowSpec, threads: int | None) -> dict[str, float]:
    """What one of the row's runs asks a Ray scheduler for: the row's resources over the board's, and as many CPUs
    as its torch threads where neither says."""
    resources = {"cpus": float(threads or 1), "gpus": 0.0, **spec.resources, **row.resources}
    return {k: float(v) for k, v in resources.items()}


def _worker_imports(task: str) -> list[str]:
    """What local workers import once, in their fork server: torch, Lightning and the modules that build, train and
    test the task (its lazy builders; not predict)."""
    import dataclasses

    from zoo.api import load_task
    from zoo.task import lazy

    spec = load_task(task)
    builders = [getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name != "predict"]
    modules = [b.target.partition(":")[0] if isinstance(b, lazy) else getattr(b, "__module__", None)
               for b in builders if callable(b)]
    return list(dict.fromkeys(["torch", "lightning", "zoo.task", *(m for m in modules if m)]))


@dataclass(frozen=True)
class RerunRow:
    """One row × metric of a reproduce set against the committed results of the same seeds: (mean, std, n) each,
    None where that side has no value."""

    row: str
    metric: MetricSpec
    rerun: tuple[float, float, int] | None
    committed: tuple[float, float, int] | None

    @property
    def within(self) -> bool | None:
        """Whether the two means differ by at most the metric's tolerance (None: nothing to compare, or a timing)."""
        if self.rerun is None or self.committed is None or not self.metric.checked:
            return None
        return abs(self.rerun[0] - self.committed[0]) <= self.metric.tolerance + 1e-12


def compare(board: str, tier: str, before: dict[str, list[dict[str, Any]]], written: list[Path]) -> list[RerunRow]:
    """Each re-run row and metric against ``before`` (``load_results`` read before ``reproduce`` overwrote the
    files), restricted to the seeds that were re-run so both means cover the same runs."""
    spec = load_spec(board)
    fresh: dict[str, list[dict[str, Any]]] = {}
    for path in written:
        record = read_record(Path(path), board, tier)
        fresh.setdefault(record["row"], []).append(record)
    out = []
    for row in spec.rows:
        if row.name not in fresh:
            continue
        seeds = {r["seed"] for r in fresh[row.name]}
        old = [r for r in before.get(row.name, []) if r["seed"] in seeds]
        for m in spec.metrics:
            out.append(RerunRow(row.name, m, _metric_stats(fresh[row.name], m.key), _metric_stats(old, m.key)))
    return out


def comparison_table(board: str, tier: str, rows: list[RerunRow]) -> Any:
    """The rich table ``zoo leaderboard reproduce`` ends with: re-run vs committed, and the tolerance verdict."""
    from rich.table import Table

    table = Table(title=f"{board} {tier}: re-run vs committed (same seeds)")
    for header in ("row", "metric", "re-run", "committed", "Δ mean", "tolerance", "within"):
        table.add_column(header, justify="left" if header in ("row", "metric", "within") else "right")
    verdicts = {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}
    for r in rows:
        fmt = r.metric.format.format
        rerun = _format_stat(r.metric, *r.rerun) if r.rerun else "—"
        committed = f"{fmt(r.committed[0])} ({r.committed[2]})" if r.committed else "none"
        delta = f"{r.rerun[0] - r.committed[0]:+.3g}" if r.rerun and r.committed else "—"
        tolerance = f"{r.metric.tolerance:g}" if r.metric.checked else "timing"
        table.add_row(r.row, r.metric.display, rerun, committed, delta, tolerance, verdicts[r.within])
    return table


def load_results(board: str, tier: str) -> dict[str, list[dict[str, Any]]]:
    """Results files of a tier, by row; a malformed file, or one from another board or tier, is an error."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(results_dir(board).glob(f"*/{tier}-s*.json")):
        record = read_record(path, board, tier)
        out.setdefault(record["row"], []).append(record)
    return out


# What render and check read from a results file, with the JSON types it must have.
RECORD_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "board": (str, "string"), "tier": (str, "string"), "row": (str, "string"), "seed": (int, "integer"),
    "metrics": (dict, "object"), "params_total": (int, "integer"), "params_active": (int, "integer"),
    "wall_seconds": ((int, float), "number"),
}


def read_record(path: Path, board: str, tier: str) -> dict[str, Any]:
    """One results file of ``board`` and ``tier``, validated here so that a malformed file is one line naming it
    (exit 2) instead of a traceback deep in render or check."""
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ZooValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except json.JSONDecodeError as err:
        raise ZooValueError(f"{path}: not valid JSON ({err})") from None
    problem = _record_problem(record, path)
    if problem is None and (record["board"], record["tier"]) != (board, tier):
        problem = f"results of board {record['board']!r} tier {record['tier']!r}, not {board!r} {tier!r}"
    if problem is not None:
        raise ZooValueError(f"{path}: {problem}")
    return record


def _record_problem(record: Any, path: Path) -> str | None:
    """What is wrong with a results record (None: nothing): its shape, field types, metric values, and whether it
    lies where its row and seed say."""
    if not isinstance(record, dict):
        return f"expected a JSON object, found a {type(record).__name__}"
    missing = [key for key in RECORD_FIELDS if key not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    for key, (kind, name) in RECORD_FIELDS.items():
        if not isinstance(record[key], kind) or isinstance(record[key], bool):
            return f"{key} is {record[key]!r}, not a JSON {name}"
    bad = next((k for k, v in record["metrics"].items() if not _is_number(v)), None)
    if bad is not None:
        return f"metric {bad!r} is {record['metrics'][bad]!r}, not a number"
    if (path.parent.name, path.name) != (record["row"], f"{record['tier']}-s{record['seed']}.json"):
        home = f"{record['row']}/{record['tier']}-s{record['seed']}.json"
        return f"holds row {record['row']!r} seed {record['seed']}: move it to {home}"
    return None


def _metric_stats(records: list[dict[str, Any]], key: str) -> tuple[float, float, int] | None:
    """(mean, sample std, n) of a metric over runs, ignoring runs without a finite value; None if none has one."""
    values = [r["metrics"][key] for r in records if key in r["metrics"] and math.isfinite(r["metrics"][key])]
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def _format_stat(m: MetricSpec, mean: float, std: float, n: int) -> str:
    """``mean ± std (n)``; one run (deterministic rows) shows no spread."""
    spread = f" ± {m.format.format(std)}" if n > 1 else ""
    return f"{m.format.format(mean)}{spread} ({n})"


Stats = dict[str, dict[str, tuple[float, float, int]]]  # row → metric key → (mean, std, n)


def _board_stats(spec: BoardSpec, results: dict[str, list[dict[str, Any]]]) -> Stats:
    """Per row with results, per metric with a value: (mean, std, n)."""
    stats = {}
    for row, records in results.items():
        stats[row] = {m.key: st for m in spec.metrics if (st := _metric_stats(records, m.key)) is not None}
    return stats


def _best_row(stats: Stats, m: MetricSpec) -> str | None:
    """The row with the best mean on ``m`` (None for a diagnostic metric or when no row has it)."""
    means = {row: s[m.key][0] for row, s in stats.items() if m.key in s}
    if not means or m.better == "none":
        return None
    return (min if m.better == "lower" else max)(means, key=means.get)


def render_board(spec: BoardSpec) -> str:
    """The Markdown of a board from its results: one table per tier that has results."""
    lines = [
        f"# {spec.title}",
        "",
        f"<!-- generated by `zoo leaderboard render {spec.name}` from leaderboards/results/{spec.name}/; do not edit -->",
        "",
        spec.protocol,
        "",
    ]
    for tier in TIERS:
        results = load_results(spec.name, tier)
        if not results:
            continue
        lines += [f"## Tier `{tier}`", "", _table(spec, tier, results), ""]
        lines += _comparisons(spec, results)
        lines += render_claims(spec.claims, _board_stats(spec, results),
                               {m.key: (m.display, m.better, m.format) for m in spec.metrics})
        lines.append(f"Reproduce: `zoo leaderboard reproduce {spec.name} --tier {tier}` then `zoo leaderboard render {spec.name}`.")
        lines.append("")
    if len(lines) == 6:
        lines += ["No results yet: run `zoo leaderboard reproduce " + spec.name + " --tier smoke`.", ""]
    lines += render_references(spec.references, _board_stats(spec, load_results(spec.name, SUMMARY_TIER)),
                               [(m.key, m.display, m.format) for m in spec.metrics], SUMMARY_TIER)
    return "\n".join(lines).rstrip() + "\n"


ARROWS = {"lower": " ↓", "higher": " ↑", "none": ""}


def _table(spec: BoardSpec, tier: str, results: dict[str, list[dict[str, Any]]]) -> str:
    stats = _board_stats(spec, results)
    best = {m.key: _best_row(stats, m) for m in spec.metrics}
    has_claimed = any(r.claimed for r in spec.rows)
    header = ["row", *(f"{m.display}{ARROWS[m.better]}" for m in spec.metrics), "params (active)", "wall s", "recipe"]
    if has_claimed:
        header.append("claimed (paper)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in spec.rows:
        if row.name not in results:
            continue
        records = results[row.name]
        cells = [row.name]
        for m in spec.metrics:
            if m.key not in stats[row.name]:
                cells.append("—")
                continue
            text = _format_stat(m, *stats[row.name][m.key])
            cells.append(f"**{text}**" if best.get(m.key) == row.name else text)
        first = records[0]
        cells.append(f"{first['params_total']:,} ({first['params_active']:,})")
        wall = statistics.fmean(r["wall_seconds"] for r in records)
        cells.append(f"{wall:.1f}")
        overrides = "".join(f" `{k}={v}`" for k, v in row.config.items())
        cells.append(f"`{row.recipe}`{overrides}")
        if has_claimed:
            cells.append(", ".join(f"{k} {v}" for k, v in row.claimed.items()) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _comparisons(spec: BoardSpec, results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per comparison whose two rows have results: the ratio of their means."""
    lines = []
    for c in spec.comparisons:
        means = []
        for row in (c.numerator, c.denominator):
            values = [r["metrics"][c.metric] for r in results.get(row, []) if c.metric in r["metrics"]]
            means.append(statistics.fmean(values) if values else None)
        if None in means or means[1] == 0:
            continue
        lines.append(f"- {c.label}: **{means[0] / means[1]:.2f}×** (mean `{c.metric}` of `{c.numerator}` / "
                     f"`{c.denominator}`)")
    return [*lines, ""] if lines else []


SUMMARY_TIER = "full"
README_START, README_END = "<!-- leaderboards -->", "<!-- /leaderboards -->"


def summary_table(boards: list[str], tier: str = SUMMARY_TIER) -> str:
    """The README's Markdown table: one row per board with its best row on the primary metric, its MoE row
    against the dense twin and its claims' verdicts, from the ``tier`` results (a board without any says so)."""
    lines = [
        f"| board | task | best on the primary metric (`{tier}` tier) | MoE vs its dense twin | paper's claims |",
        "|---|---|---|---|---|",
    ]
    for name in boards:
        spec = load_spec(name)
        cells = _summary_cells(spec, load_results(name, tier), tier)
        lines.append(f"| [{name}](leaderboards/{name}.md) | {spec.task} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _summary_cells(spec: BoardSpec, results: dict[str, list[dict[str, Any]]], tier: str) -> tuple[str, str, str]:
    if not results:
        return f"no `{tier}` results yet", "—", "—"
    stats = _board_stats(spec, results)
    claims = tally(spec.claims, stats, {m.key: (m.display, m.better, m.format) for m in spec.metrics})
    m = spec.primary_metric
    best = _best_row(stats, m)
    best_cell = f"`{best}` {_format_stat(m, *stats[best][m.key])} {m.display}{ARROWS[m.better]}" if best else "—"
    if spec.summary.moe is None:
        return best_cell, "—", claims

    def mean(row: str) -> str:
        return m.format.format(stats[row][m.key][0]) if m.key in stats.get(row, {}) else "—"

    moe, dense = spec.summary.moe, spec.summary.dense
    return best_cell, f"`{moe}` {mean(moe)} vs `{dense}` {mean(dense)} {m.display}{ARROWS[m.better]}", claims


def _readme_with_summary(readme: str, table: str) -> str:
    """``readme`` with the table between its summary markers (unchanged when it has none)."""
    if README_START not in readme or README_END not in readme:
        return readme
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{table.strip()}\n{README_END}{tail}"


def render(boards: list[str], check: bool = False) -> list[Path]:
    """Write (or, with ``check``, compare) each board's Markdown and the README summary of every board; returns
    the stale files."""
    stale = []
    for name in boards:
        text = render_board(load_spec(name))
        md = boards_dir() / f"{name}.md"
        if not md.exists() or md.read_text(encoding="utf-8") != text:
            stale.append(md)
            if not check:
                atomic_write_text(md, text)
    readme_path = repo_root() / "README.md"
    readme = readme_path.read_text(encoding="utf-8") if readme_path.exists() else ""
    new_readme = _readme_with_summary(readme, summary_table(board_names()))
    if new_readme != readme:
        stale.append(readme_path)
        if not check:
            atomic_write_text(readme_path, new_readme)
    if check and stale:
        raise StaleTableError(
            f"out of date: {', '.join(str(p.relative_to(repo_root())) for p in stale)}; run `zoo leaderboard render --all`"
        )
    return stale


def check_tier(board: str, tier: str = "smoke", seeds: list[int] | None = None) -> list[str]:
    """Rerun every committed run of ``tier`` (only ``seeds``, if given) and compare its metrics with the committed
    ones: exit 5 when one moves beyond its tolerance, is missing from the rerun or is not finite. The reruns are
    compared in memory; the committed results files are never touched. Returns the timing metrics' lines, which
    are reported and never checked.
    """
    check_arg(tier in TIERS, "--tier", tier, TIERS)
    spec = load_spec(board)
    committed = load_results(board, tier)
    if not committed:
        raise ZooValueError(f"board {board!r} has no committed {tier} results to check against")
    problems, timings = _unmeasured(spec, committed), []
    for row_name, records in committed.items():
        for record in records:
            if seeds is not None and record["seed"] not in seeds:
                continue
            fresh = run_row(spec, spec.row(row_name), tier, record["seed"])["metrics"]
            for m in spec.metrics:
                verdict = _rerun_verdict(m, record["metrics"].get(m.key), fresh.get(m.key))
                if verdict is not None:
                    line = f"{row_name} s{record['seed']} {m.key}: {verdict}"
                    (problems if m.checked else timings).append(line)
    if problems:
        raise ToleranceError(f"{board} {tier}: " + "; ".join(problems))
    return timings


def _unmeasured(spec: BoardSpec, committed: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A checked metric that no committed run has: a misspelt key would otherwise never be compared."""
    records = [r for rs in committed.values() for r in rs]
    return [f"{m.key}: in no committed run (is the key right?)" for m in spec.metrics
            if m.checked and not any(m.key in r["metrics"] for r in records)]


def _rerun_verdict(m: MetricSpec, old: float | None, new: Any) -> str | None:
    """What to say about one metric of one rerun against its committed value; None when there is nothing (within
    tolerance, or a metric the row has neither time). A timing's line is a report, every other line a problem."""
    if old is None and new is None:
        return None
    shown = f"{_show(old)} → {_show(new)}"
    if not m.checked:
        return f"{shown} (timing, not checked)"
    if new is None:
        return f"{_show(old)} → missing from the rerun"
    if not (_is_number(new) and math.isfinite(new)):
        return f"{shown} (not a finite number)"
    if old is None:
        return f"{shown} (not in the committed run; reproduce it)"
    if not math.isfinite(old):
        return f"{shown} (the committed value is not finite)"
    if abs(new - old) > m.tolerance + 1e-12:
        return f"{shown} (tolerance {m.tolerance})"
    return None


def _show(value: Any) -> str:
    return "none" if value is None else f"{value:.6g}" if _is_number(value) else repr(value)
