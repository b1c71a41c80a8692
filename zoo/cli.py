"""The ``zoo`` console script.

Every failure the zoo anticipates is a :class:`zoo.errors.ZooError` and ends as one line on stderr with its exit
code (2 bad usage or input, 3 weights unavailable offline, 4 checksum mismatch, 5 leaderboard outside
tolerance, 6 table out of date); anything else is a bug (exit 1) and keeps its traceback. Commands that print
tables take ``--json`` for machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from fnmatch import fnmatchcase
from datetime import datetime
from pathlib import Path
from typing import Any

from zoo._version import __version__
from zoo.errors import SEED_MAX, ZooError, ZooValueError, check_arg


class _Parser(argparse.ArgumentParser):
    """argparse with the zoo's convention for usage errors: one line, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"zoo: error: {message} (see `{self.prog} --help`)\n")


def _quiet_lightning() -> None:
    """Keep the terminal for our own output: no device banners, tips or known-benign warnings."""
    import lightning  # noqa: F401  (importing it configures its loggers; quieten them afterwards)

    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("lightning", "pytorch_lightning", "lightning_fabric")):
            logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings(
        "ignore",
        message=".*(LeafSpec|litlogger|does not have many workers|no `val_dataloader`|is smaller than the logging"
        "|exists and is not empty|Checkpoint directory).*",
    )
    # torch-geometric scripts a few helpers with torch.jit at import, which torch now deprecates
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)


WRAPPABLE = {"description", "detail"}  # prose columns; every other cell is never cut or wrapped


def _print_table(title: str, columns: list[str], rows: list[list[Any]], note: str | None = None) -> None:
    """A rich table whose ids and numbers are never cut: the console widens to fit them when it must (prose
    columns wrap instead)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, min_width=len(title) + 4)  # the title on one line
    cells = [[str(c) for c in row] for row in rows]
    needed = 1
    for i, col in enumerate(columns):
        wrap = col in WRAPPABLE
        table.add_column(col, no_wrap=not wrap, overflow="fold" if wrap else "ignore")
        needed += 3 + (24 if wrap else max([len(col), *(len(r[i]) for r in cells)]))
    for row in cells:
        table.add_row(*row)
    console = Console()
    if console.width < needed:
        console = Console(width=needed)
    console.print(table)
    if note:
        console.print(note, style="dim")


def _emit(args: argparse.Namespace, data: Any, title: str, columns: list[str], rows: list[list[Any]],
          note: str | None = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=1))
    else:
        _print_table(title, columns, rows, note)


def _metric_rows(spec: Any, metrics: dict[str, float], verbose: bool) -> tuple[list[list[str]], str | None]:
    """The task's headline metrics (all with ``verbose`` or when it names none) and a note on what was left out."""
    keys = sorted(metrics)
    if not verbose and spec.headline_metrics:
        shown = [k for k in keys if any(fnmatchcase(k, p) for p in spec.headline_metrics)] or keys
    else:
        shown = keys
    rows = [[k, _fmt(metrics[k])] for k in shown]
    hidden = len(keys) - len(shown)
    return rows, (f"{hidden} more metrics in the results (--verbose shows all)" if hidden else None)


def _set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads: ``threads``, or a default that leaves the cores other processes use alone."""
    import torch

    from zoo.task import default_threads

    check_arg(threads is None or threads >= 1, "--threads", threads, "a positive int")
    n = threads or default_threads()
    torch.set_num_threads(n)
    return n


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _seed(text: str) -> int:
    """``--seed``'s type: numpy and Lightning take seeds in [0, 2**32 - 1] and fail deep inside a run otherwise."""
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int in [0, {SEED_MAX}]")
    return seed


# ------------------------------------------------------------------------------------------------ demo


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the backbone's tiny example and print held-out error and expert balance."""
    from zoo.demo import run_demo

    check_arg(args.steps > 0, "--steps", args.steps, "a positive int")
    _quiet_lightning()
    out_dir = Path(args.out) if args.out else Path("runs") / "demo" / datetime.now().strftime("%Y%m%d-%H%M%S")
    results = run_demo(args.steps, out_dir, args.seed)
    rows = [[r.name, f"{r.val_mse:.4f}", "—" if r.load_cv is None else f"{r.load_cv:.3f}", f"{r.seconds:.1f}"] for r in results]
    _print_table(
        "Tiny MoE demo: 8 experts top-2 vs dense twin (held-out set)",
        ["variant", "val MSE", "load CV (0 = even)", "train s"],
        rows,
    )
    print(f"expert-load plots: {out_dir}/*/expert_load.png")
    return 0


# -------------------------------------------------------------------------------------- list / info


def cmd_list(args: argparse.Namespace) -> int:
    """List tasks, recipes, published weights or leaderboards."""
    from zoo import api
    from zoo.config import recipe_names
    from zoo.registry import TASKS

    what = args.what
    if what == "tasks":
        from zoo.registry import task_summary

        data = [{"task": n, "description": task_summary(n)} for n in TASKS.names(args.pattern)]
        _emit(args, data, "tasks", ["task", "description"], [[d["task"], d["description"]] for d in data])
    elif what == "recipes":
        data = [{"task": t, "recipe": r} for t in TASKS.names() for r in recipe_names(t) if fnmatchcase(f"{t}/{r}", args.pattern)]
        _emit(args, data, "recipes", ["task", "recipe"], [[d["task"], d["recipe"]] for d in data])
    elif what == "weights":
        entries = [e for e in api.all_entries() if fnmatchcase(e.id, args.pattern)]
        data = [e.to_dict() for e in entries]
        rows = [[e.id, e.file, f"{e.params_total:,}", f"{e.params_active:,}", e.board or "—"] for e in entries]
        _emit(args, data, "weights", ["id", "file", "params", "active", "board"], rows)
    else:
        from zoo import leaderboard

        data = [{"board": b, "task": leaderboard.load_spec(b).task} for b in leaderboard.board_names()]
        _emit(args, data, "leaderboards", ["board", "task"], [[d["board"], d["task"]] for d in data])
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a task: its recipes, config sections and published weights."""
    import dataclasses

    from zoo import api
    from zoo.config import recipe_names

    spec = api.load_task(args.task)
    data = {
        "task": spec.name,
        "description": spec.description,
        "config_sections": [f.name for f in dataclasses.fields(spec.config_cls)],
        "recipes": recipe_names(spec.name),
        "weights": [e.id for e in api.task_entries(spec.name)],
        "extras": list(spec.extras),
        "predict_options": [f"--{o.flag}" for o in spec.predict_options],
    }
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        for key, value in data.items():
            print(f"{key:16} {', '.join(value) if isinstance(value, list) else value}")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the fully resolved config of a task and recipe (with --config/--set/--smoke applied)."""
    from zoo import api
    from zoo.config import dump_yaml, resolve_config, to_dict

    spec = api.load_task(args.task)
    cfg, _ = resolve_config(spec.config_cls, spec.name, args.recipe, args.config, args.set, args.smoke)
    print(json.dumps(to_dict(cfg), indent=1) if args.json else dump_yaml(to_dict(cfg)), end="" if not args.json else "\n")
    return 0


# -------------------------------------------------------------------------------------- train / eval


def cmd_train(args: argparse.Namespace) -> int:
    """Train a task by name; the run dir gets config.yaml, run.json, checkpoints/, metrics.csv, results.json."""
    from zoo import api
    from zoo.config import from_dict, resolve_config
    from zoo.hub import load_checkpoint
    from zoo.task import fit_and_test, make_run_dir, remove_run_dir, write_run_files

    spec = api.load_task(args.task)
    threads = _set_threads(args.threads)
    _quiet_lightning()
    if args.resume:
        given = [flag for flag, v in (("--recipe", args.recipe), ("--config", args.config), ("--set", args.set),
                                      ("--smoke", args.smoke), ("--seed", args.seed), ("--out", args.out)) if v]
        if given:
            raise ZooValueError(f"--resume continues a run with its saved config; it cannot be combined with {', '.join(given)}")
        run_dir, saved = api.resolve_run(args.resume)
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.exists():
            raise ZooValueError(f"--resume {run_dir}: no checkpoints/last.ckpt to resume from")
        load_checkpoint(ckpt)  # refuse an unreadable or unsafe checkpoint before anything is written into the run
        cfg = from_dict(spec.config_cls, saved)
    else:
        cfg, _ = resolve_config(spec.config_cls, spec.name, args.recipe, args.config, args.set, args.smoke)
        if args.seed is not None:
            cfg.seed = args.seed
        run_dir = make_run_dir(spec.name, args.recipe, cfg.seed, args.out)
        ckpt = None
    print(f"run dir: {run_dir}", file=sys.stderr)
    try:
        if ckpt is None:
            write_run_files(run_dir, cfg, {"recipe": args.recipe, "smoke": args.smoke,
                                           "command": args.command_line, "threads": threads})
        result = fit_and_test(spec, cfg, run_dir, resume=ckpt, progress=not args.no_progress)
    except KeyboardInterrupt:  # Ctrl-C: keep what resumes, remove what cannot (main reports it, exit 130)
        if (run_dir / "checkpoints" / "last.ckpt").exists():
            print(f"resume with: zoo train {spec.name} --resume {run_dir}", file=sys.stderr)
        else:
            remove_run_dir(run_dir, prune_parents=args.out is None)
            print(f"removed {run_dir}: interrupted before its first checkpoint", file=sys.stderr)
        raise
    except BaseException:  # a new run that failed before its first checkpoint leaves no debris
        if ckpt is None and not (run_dir / "checkpoints" / "last.ckpt").exists():
            remove_run_dir(run_dir, prune_parents=args.out is None)
            print(f"removed {run_dir}: nothing was trained", file=sys.stderr)
        raise
    from zoo.distributed import is_rank_zero

    if is_rank_zero():  # ranks started by torchrun or SLURM all get here; one prints
        rows, note = _metric_rows(spec, result.metrics, args.verbose)
        _emit(args, {"run_dir": str(run_dir), "metrics": result.metrics}, f"{spec.name}: test metrics",
              ["metric", "value"], rows, note)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a run's last checkpoint or published weights on the task's test split (``--set data.*=...`` to
    evaluate on other data: the model comes from the run or weights, only the test data from the config)."""
    import tempfile

    from zoo import api
    from zoo.config import apply_overrides, from_dict, parse_override, to_dict
    from zoo.io import atomic_write_text
    from zoo.task import build_trainer, provenance

    spec = api.load_task(args.task)
    overrides = [parse_override(o) for o in args.set]  # in order: a later --set of a key wins
    bad = [k for k, _ in overrides if not k.startswith("data.")]
    if bad:
        raise ZooValueError(f"--set {bad[0]}: eval takes data.* overrides only (the model comes from the run or "
                            "weights)")
    _set_threads(args.threads)
    _quiet_lightning()
    if args.run:
        run_dir, _ = api.resolve_run(args.run)
        if api.run_checkpoint(run_dir, prefer_best=False) is None:
            raise ZooValueError(f"--run {run_dir}: no checkpoints/last.ckpt (was the run trained?)")
        loaded = api.load_run(run_dir, spec, prefer_best=False)
        source = str(run_dir)
    else:
        loaded = api.load_weights(args.weights, trust_unverified=args.trust_unverified)
        if loaded.task.name != spec.name:
            raise ZooValueError(f"--weights {args.weights} belongs to task {loaded.task.name!r}, not {spec.name!r}")
        source = args.weights
    cfg = from_dict(spec.config_cls, apply_overrides(to_dict(loaded.config), overrides)) if overrides else loaded.config
    dm = loaded.datamodule if loaded.datamodule is not None and not overrides else None
    if dm is None:  # the test data: built from the config, the model stays the loaded one
        dm = spec.build_datamodule(cfg)
        dm.prepare_data()
        dm.setup("fit")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(cfg, Path(tmp), progress=False)
        metrics = spec.test(cfg, trainer, loaded.module, dm)
    if args.results_out:
        atomic_write_text(args.results_out, json.dumps({"source": source, "metrics": metrics, **provenance()}, indent=1))
    rows, note = _metric_rows(spec, metrics, args.verbose)
    _emit(args, {"source": source, "metrics": metrics}, f"{spec.name}: {source}", ["metric", "value"], rows, note)
    return 0


PREDICT_SHOWN = 20  # rows printed when the predictions also go to a file (all with --verbose)


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict with published weights (or a .safetensors path) on your own input."""
    from zoo import api

    spec = args.spec
    if spec.predict is None:
        raise ZooValueError(f"task {spec.name!r} has no predict yet")
    if spec.predict_input is not None and args.input is None and spec.predict_input_required:
        raise ZooValueError(f"zoo predict {spec.name} needs INPUT (see `zoo predict {spec.name} --help`)")
    _set_threads(args.threads)
    loaded = api.load_weights(args.weights, trust_unverified=args.trust_unverified)
    if loaded.task.name != spec.name:
        raise ZooValueError(f"--weights {args.weights} belongs to task {loaded.task.name!r}, not {spec.name!r}")
    options = {o.dest: getattr(args, o.dest) for o in spec.predict_options if getattr(args, o.dest) is not None}
    inputs = (args.input,) if spec.predict_input is not None else ()
    rows = spec.predict(loaded, *inputs, out=args.out, **options)
    shown = rows if args.verbose or not args.out else rows[:PREDICT_SHOWN]
    columns = list(rows[0]) if rows else []
    cells = [[_fmt(v) if isinstance(v, float) else "" if v is None else v for v in r.values()] for r in shown]
    note = f"{len(rows) - len(shown)} more rows in {args.out} (--verbose prints all)" if len(shown) < len(rows) else None
    _emit(args, rows, f"{spec.name}: {args.weights}", columns, cells, note)
    written = [("wrote", args.out)] + [(o.flag, getattr(args, o.dest)) for o in spec.predict_options
                                       if o.metavar in ("FILE", "PNG") and getattr(args, o.dest)]
    for label, path in written:
        if path:
            print(f"{label} {path}", file=sys.stderr)
    return 0


# -------------------------------------------------------------------------------------------- weights


def cmd_weights(args: argparse.Namespace) -> int:
    """Published weights: list, path, verify, fetch (resolve + verify), publish a run."""
    from zoo import api, hub

    if args.action == "list":
        args.what, args.pattern = "weights", args.pattern or "*"
        return cmd_list(args)
    if args.action == "publish":
        return _publish(args)
    if args.action == "verify" and args.id is None:
        return _verify_all(args)
    check_arg(args.id is not None, "ID", None, "a weights id, e.g. forecasting/moe_e8k2.m3-monthly")
    entry = api.find_entry(args.id)
    path = hub.verify(entry)
    if args.action == "path":
        print(path)
    else:
        print(f"ok  {entry.id}  {path}  sha256 {entry.sha256[:12]}…")
    return 0


def _verify_all(args: argparse.Namespace) -> int:
    """Verify every published weight; one row each, exit with the worst failure's code."""
    from zoo import api, hub
    from zoo.errors import ZooError

    rows, data, worst = [], [], None
    for entry in api.all_entries():
        try:
            path = hub.verify(entry)
            status, where = "ok", path.name
        except ZooError as err:
            status, where = f"error {err.exit_code}", str(err)
            worst = err if worst is None or err.exit_code > worst.exit_code else worst
        rows.append([entry.id, status, f"{entry.size:,}", where])
        data.append({"id": entry.id, "status": status, "detail": where})
    _emit(args, data, "weights verify", ["id", "status", "bytes", "file or error"], rows)
    if worst is not None:
        raise worst
    return 0


def _publish(args: argparse.Namespace) -> int:
    from zoo import api, hub, modelinfo
    from zoo.config import config_sha256, from_dict, to_dict
    from zoo.moe import count_params

    for flag in ("task", "run", "arch", "tag"):
        check_arg(getattr(args, flag) is not None, f"--{flag}", None, "a value: publish needs --task, --run, --arch and --tag")
    spec = api.load_task(args.task)
    run_dir, saved = api.resolve_run(args.run)
    cfg = from_dict(spec.config_cls, saved)
    results_path = run_dir / "results.json"
    if not results_path.exists():
        raise ZooValueError(f"--run {run_dir}: no results.json (train and test it first)")
    metrics = json.loads(results_path.read_text())["metrics"]
    # A task that keeps its best validation epoch (stocks) leaves best.ckpt: the weights its test metrics used.
    loaded = api.load_run(run_dir, spec)
    model = loaded.module.model
    plain_info, info_tensors = modelinfo.split(loaded.info)
    state = {**model.state_dict(), **info_tensors}
    total, active = count_params(model)
    before = set(hub.weights_dir().glob("*")) if hub.weights_dir().is_dir() else set()
    artifact = hub.publish(
        state,
        to_dict(cfg),
        arch=args.arch,
        tag=args.tag,
        out_dir=hub.weights_dir(),
        extra={"task": spec.name, "config_sha256": config_sha256(cfg), "model_info": plain_info,
               "eval": {"split": "test", "metrics": metrics}},
    )
    entry = artifact.entry(spec.name, params_total=total, params_active=active, metrics=metrics, board=args.board, default=args.default)
    try:
        hub.add_entry(api.manifest_path(spec.name), entry)
    except ZooError:  # the manifest refused the entry: leave no file behind that nothing names
        for path in (artifact.weights_path, artifact.config_path):
            if path not in before:
                path.unlink(missing_ok=True)
        raise
    print(f"published {entry.id} → {artifact.weights_path}")
    return 0


# ---------------------------------------------------------------------------------------------- boards


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Leaderboards: list, reproduce (train + test every row and seed), render Markdown, check."""
    from zoo import leaderboard

    if args.action == "list":
        args.what, args.pattern = "boards", "*"
        return cmd_list(args)
    boards = leaderboard.board_names() if args.all else args.boards
    check_arg(bool(boards), "BOARD", None, "a board name or --all")
    if args.action != "reproduce":
        for flag, given in (("--jobs", args.jobs != 1), ("--force", args.force), ("--executor", args.executor),
                            ("--address", args.address)):
            check_arg(not given, flag, "given", f"only with reproduce, not {args.action}")
    if args.action == "render":
        stale = leaderboard.render(boards, check=args.check)
        print("up to date" if not stale else "rendered " + ", ".join(str(p) for p in stale))
        return 0
    in_workers = args.action == "reproduce" and (args.jobs > 1 or args.executor == "ray")
    if args.threads is not None and not in_workers:  # else torch's default, as the committed smoke results were made
        _set_threads(args.threads)
    if not in_workers:  # workers write their output to logs; this process then need not import torch at all
        _quiet_lightning()
    if args.action == "reproduce":
        from rich.console import Console

        failed = []
        for board in boards:
            before = leaderboard.load_results(board, args.tier)  # the committed numbers, before re-runs replace them
            try:
                written = leaderboard.reproduce(board, args.tier, rows=args.rows, seeds=args.seeds,
                                                progress=not args.no_progress, jobs=args.jobs, threads=args.threads,
                                                force=args.force, executor=args.executor or "local",
                                                address=args.address)
            except leaderboard.RunsFailedError as err:  # the runs that finished are compared all the same
                written = err.written
                failed.append(err)
            rows = leaderboard.compare(board, args.tier, before, written)
            Console(stderr=False).print(leaderboard.comparison_table(board, args.tier, rows))
            print(f"wrote {len(written)} results under leaderboards/results/{board}/", file=sys.stderr)
        if len(failed) == 1:
            raise failed[0]
        if failed:  # one line for every board, with their common exit code (else 1)
            error = ZooError("; ".join(str(err) for err in failed))
            error.exit_code = failed[0].exit_code if len({e.exit_code for e in failed}) == 1 else 1
            raise error
        return 0
    for board in boards:
        timings = leaderboard.check_tier(board, args.tier, seeds=args.seeds)
        print(f"{board} {args.tier}: within tolerance")
        for line in timings:  # machine-dependent, so reported and never checked
            print(f"  {line}")
    return 0


# ---------------------------------------------------------------------------------------------- parser


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that run a model: threads, output form and detail."""
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: the cores not busy with other "
                   "processes, at least 1); recorded in run.json")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--verbose", action="store_true", help="print every metric or row, not a summary")


def _add_trust_option(p: argparse.ArgumentParser) -> None:
    """The opt-in for a weights file given by path whose YAML records no sha256 (refused without it)."""
    p.add_argument("--trust-unverified", action="store_true", help="load a .safetensors file given by path even "
                   "though its YAML records no weights_sha256 to verify it against")


def _find_task(argv: Sequence[str]) -> str | None:
    """The task named in ``zoo predict`` arguments: the first token that is a task name, else the first that is
    not an option (so a typo still gets its did-you-mean), else None."""
    from zoo.registry import TASKS

    names = set(TASKS.names())
    return next((a for a in argv if a in names), next((a for a in argv if not a.startswith("-")), None))


def build_predict_parser(task: str | None) -> argparse.ArgumentParser:
    """``zoo predict TASK``'s parser, made from the task's declared INPUT and options; without a task, the generic
    usage listing the tasks."""
    from zoo import api
    from zoo.registry import TASKS

    parser = _Parser(prog="zoo predict", description=cmd_predict.__doc__)
    parser.set_defaults(func=cmd_predict, command="predict")
    if task is None:
        parser.add_argument("task", metavar="TASK", choices=TASKS.names(), help=", ".join(TASKS.names()))
        parser.add_argument("--weights", required=True, metavar="ID|PATH")
        return parser
    spec = api.load_task(task)
    parser.prog = f"zoo predict {spec.name}"
    parser.description = f"Predict with {spec.name} weights on your own input."
    parser.set_defaults(spec=spec, task=spec.name)
    parser.add_argument("task", metavar=spec.name, choices=[spec.name], help=argparse.SUPPRESS)
    if spec.predict_input is not None:
        parser.add_argument("input", metavar="INPUT", nargs=None if spec.predict_input_required else "?",
                            help=spec.predict_input)
    else:
        parser.set_defaults(input=None)
    parser.add_argument("--weights", required=True, metavar="ID|PATH", help="a weights id (zoo weights list) or a "
                        ".safetensors file with its .yaml beside it")
    _add_trust_option(parser)
    if spec.predict_out is None:
        parser.add_argument("--out", metavar="FILE", help="also write the predictions to FILE (CSV)")
    else:
        parser.add_argument("--out", metavar="PATH", help=spec.predict_out)
    for option in spec.predict_options:
        kwargs: dict[str, Any] = {"help": option.help, "dest": option.dest}
        if option.flag_only:
            kwargs["action"] = "store_const"
            kwargs["const"] = True
        else:
            kwargs.update(type=option.type, metavar=option.metavar, choices=option.choices)
        parser.add_argument(f"--{option.flag}", **kwargs)
    _add_run_options(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zoo", description="The MoE model zoo: one shared mixture-of-experts backbone, many tasks.")
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=func.__doc__)
        p.set_defaults(func=func)
        return p

    demo = add("demo", cmd_demo, "train the backbone's tiny example (about a minute on 2 cores)")
    demo.add_argument("--steps", type=int, default=300, help="optimizer steps per variant (default 300)")
    demo.add_argument("--seed", type=_seed, default=0, help="random seed for data and initialisation (default 0)")
    demo.add_argument("--out", help="directory for plots (default runs/demo/<timestamp>)")

    lst = add("list", cmd_list, "list tasks, recipes, weights or boards")
    lst.add_argument("what", nargs="?", default="tasks", choices=["tasks", "recipes", "weights", "boards"])
    lst.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern (default *)")
    lst.add_argument("--json", action="store_true", help="machine-readable output")

    info = add("info", cmd_info, "describe a task")
    info.add_argument("task")
    info.add_argument("--json", action="store_true")

    config = sub.add_parser("config", help="show resolved configs")
    config_sub = config.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    show = config_sub.add_parser("show", help="print the resolved config", description=cmd_config_show.__doc__)
    show.set_defaults(func=cmd_config_show)
    show.add_argument("task")

    train = add("train", cmd_train, "train a task by name")
    train.add_argument("task")
    train.add_argument("--seed", type=_seed, help="overrides the config's seed")
    train.add_argument("--resume", metavar="RUN", help="continue the run in this run dir from its last checkpoint")
    train.add_argument("--out", metavar="DIR", help="run dir (default runs/<task>/<recipe>/<time>-s<seed>)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    for p in (show, train):
        p.add_argument("--recipe", help="configs/<task>/<recipe>.yaml")
        p.add_argument("--config", metavar="FILE", help="YAML file merged over the recipe")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. moe.num_experts=16")
        p.add_argument("--smoke", action="store_true", help="apply the recipe's smoke overrides (tiny data, few steps)")
    show.add_argument("--json", action="store_true")

    ev = add("eval", cmd_eval, "evaluate a run or published weights on the test split")
    ev.add_argument("task")
    src = ev.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="DIR")
    src.add_argument("--weights", metavar="ID|PATH")
    _add_trust_option(ev)
    ev.add_argument("--results-out", metavar="FILE", help="write metrics and provenance as JSON")
    ev.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                    help="evaluate on other data, e.g. data.source=csv data.path=mine.csv")
    for p in (train, ev):
        _add_run_options(p)

    add("predict", cmd_predict, "predict with published weights on your own input (`zoo predict TASK --help`)")

    w = add("weights", cmd_weights, "published weights: list, path, verify, fetch, publish")
    w.add_argument("action", choices=["list", "path", "verify", "fetch", "publish"])
    w.add_argument("id", nargs="?", help="weights id (path/verify/fetch), or a pattern (list)")
    w.add_argument("--task", help="publish: the run's task")
    w.add_argument("--run", metavar="DIR", help="publish: the trained run dir")
    w.add_argument("--arch", help="publish: architecture name, e.g. moe_e8k2")
    w.add_argument("--tag", help="publish: tag, e.g. m3-monthly")
    w.add_argument("--board", help="publish: the leaderboard its metrics belong to")
    w.add_argument("--default", action="store_true", help="publish: the task's default weights")
    w.add_argument("--json", action="store_true")
    w.set_defaults(pattern=None)

    lb = add("leaderboard", cmd_leaderboard, "reproduce, render and check leaderboards")
    lb.add_argument("action", choices=["list", "reproduce", "render", "check"])
    lb.add_argument("boards", nargs="*", metavar="BOARD")
    lb.add_argument("--all", action="store_true", help="every board in leaderboards/")
    lb.add_argument("--tier", default="smoke", choices=["smoke", "full"], help="default smoke")
    lb.add_argument("--rows", nargs="+", help="reproduce: only these rows")
    lb.add_argument("--seeds", nargs="+", type=int, help="reproduce, check: only these seeds")
    lb.add_argument("--check", action="store_true", help="render: exit 6 if committed tables differ")
    lb.add_argument("--no-progress", action="store_true")
    lb.add_argument("--threads", type=int, metavar="N", help="reproduce, check: torch threads per run (default: "
                    "torch's, all cores; 1 with --jobs > 1; recorded in each result)")
    lb.add_argument("--jobs", type=int, default=1, metavar="N", help="reproduce: run N (row, seed) runs at a time, "
                    "each in a fresh worker process (default 1: one after another in this process); with --executor "
                    "ray and no --address, the CPUs of the local Ray instance are N x --threads")
    lb.add_argument("--force", action="store_true", help="reproduce: redo runs whose results file exists with the "
                    "same config hash (by default they are skipped, so rerunning resumes)")
    lb.add_argument("--executor", choices=["local", "ray"], help="reproduce: local worker processes (default) or "
                    "Ray tasks (needs the 'cluster' extra)")
    lb.add_argument("--address", metavar="ADDR", help="reproduce --executor ray: the Ray cluster to submit to "
                    "(default: start a local instance)")
    lb.add_argument("--json", action="store_true")
    return parser


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line; ``zoo predict`` gets a parser made for its task, which takes INPUT and options in
    any order. Every other command's own parser also takes its positionals after its options (plain argparse
    gives an optional positional its empty value at the first option, so ``zoo leaderboard render --check BOARD``
    would call BOARD unrecognised)."""
    if argv and argv[0] == "predict":
        rest = argv[1:]
        task = _find_task(rest)
        if task is not None and task in rest:  # the task first, so no option can take it for its value
            rest.remove(task)
            rest.insert(0, task)
        return build_predict_parser(task).parse_intermixed_args(rest)
    parser = build_parser()
    command = _command_parser(parser, argv[0]) if argv else None
    if command is None:
        return parser.parse_args(argv)
    args = command.parse_intermixed_args(argv[1:])
    args.command = argv[0]
    return args


def _command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    """The sub-parser of command ``name``, unless it has sub-commands of its own (``config``), which intermixed
    parsing cannot take."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = commands.choices.get(name)
    if command is None or any(isinstance(a, argparse._SubParsersAction) for a in command._actions):
        return None
    return command


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse(argv)
        if args.command is None:
            build_parser().print_help()
            return 0
        if getattr(args, "action", None) == "list" and args.command == "weights":
            args.pattern = args.id
        if args.command == "leaderboard" and args.action in ("reproduce", "check"):
            from zoo.leaderboard import pin_numerics

            pin_numerics()
        args.command_line = ["zoo", *argv]
        code = args.func(args)
        sys.stdout.flush()  # a reader that closed the pipe (`zoo list | head`) is found here, not at exit
        return code
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        return _closed_pipe()
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130


def _closed_pipe() -> int:
    """The reader of our output went away: stop quietly, as a command killed by SIGPIPE would (exit 141), and point
    stdout at /dev/null so the interpreter's final flush does not complain."""
    import os
    import signal

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
