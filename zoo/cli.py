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
import shutil
import sys
import warnings
from collections.abc import Sequence
from fnmatch import fnmatchcase
from datetime import datetime
from pathlib import Path
from typing import Any

from zoo._version import __version__
from zoo.errors import ZooError, ZooValueError, check_arg


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


def _print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(c) for c in row))
    Console().print(table)


def _emit(args: argparse.Namespace, data: Any, title: str, columns: list[str], rows: list[list[Any]]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=1))
    else:
        _print_table(title, columns, rows)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


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
        data = [{"task": n, "description": TASKS.get(n).description} for n in TASKS.names(args.pattern)]
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
    from zoo.task import fit_and_test, make_run_dir, write_run_files

    _quiet_lightning()
    spec = api.load_task(args.task)
    if args.resume:
        given = [flag for flag, v in (("--recipe", args.recipe), ("--config", args.config), ("--set", args.set),
                                      ("--smoke", args.smoke), ("--seed", args.seed), ("--out", args.out)) if v]
        if given:
            raise ZooValueError(f"--resume continues a run with its saved config; it cannot be combined with {', '.join(given)}")
        run_dir, saved = api.resolve_run(args.resume)
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.exists():
            raise ZooValueError(f"--resume {run_dir}: no checkpoints/last.ckpt to resume from")
        cfg = from_dict(spec.config_cls, saved)
    else:
        cfg, _ = resolve_config(spec.config_cls, spec.name, args.recipe, args.config, args.set, args.smoke)
        if args.seed is not None:
            cfg.seed = args.seed
        run_dir = make_run_dir(spec.name, args.recipe, cfg.seed, args.out)
        write_run_files(run_dir, cfg, {"recipe": args.recipe, "smoke": args.smoke, "command": args.command_line})
        ckpt = None
    print(f"run dir: {run_dir}", file=sys.stderr)
    try:
        result = fit_and_test(spec, cfg, run_dir, resume=ckpt, progress=not args.no_progress)
    except ZooError:
        if ckpt is None and not (run_dir / "checkpoints").exists():  # a new run that never trained: no debris
            shutil.rmtree(run_dir, ignore_errors=True)
            print(f"removed {run_dir}: nothing was trained", file=sys.stderr)
        raise
    rows = [[k, _fmt(v)] for k, v in sorted(result.metrics.items())]
    _emit(args, {"run_dir": str(run_dir), "metrics": result.metrics}, f"{spec.name}: test metrics", ["metric", "value"], rows)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a run's last checkpoint or published weights on the task's test split."""
    from zoo import api, hub
    from zoo.config import from_dict
    from zoo.io import atomic_write_text
    from zoo.task import build_trainer, provenance

    _quiet_lightning()
    spec = api.load_task(args.task)
    if args.run:
        run_dir, saved = api.resolve_run(args.run)
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.exists():
            raise ZooValueError(f"--run {run_dir}: no checkpoints/last.ckpt (was the run trained?)")
        loaded = api.build_from_config(spec, from_dict(spec.config_cls, saved))
        loaded.module.load_state_dict(hub.load_checkpoint(ckpt)["state_dict"])
        source = str(run_dir)
    else:
        loaded = api.load_weights(args.weights)
        if loaded.task.name != spec.name:
            raise ZooValueError(f"--weights {args.weights} belongs to task {loaded.task.name!r}, not {spec.name!r}")
        source = args.weights
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(loaded.config, Path(tmp), progress=False)
        metrics = spec.test(loaded.config, trainer, loaded.module, loaded.datamodule)
    if args.results_out:
        atomic_write_text(args.results_out, json.dumps({"source": source, "metrics": metrics, **provenance()}, indent=1))
    rows = [[k, _fmt(v)] for k, v in sorted(metrics.items())]
    _emit(args, {"source": source, "metrics": metrics}, f"{spec.name}: {source}", ["metric", "value"], rows)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict with published weights (or a .safetensors path) on your own input; see the task's docs for INPUT."""
    from zoo import api

    _quiet_lightning()
    spec = api.load_task(args.task)
    if spec.predict is None:
        raise ZooValueError(f"task {spec.name!r} has no predict yet")
    if args.input is None and spec.predict_input_required:
        raise ZooValueError(f"zoo predict {spec.name} needs INPUT (see zoo predict --help)")
    loaded = api.load_weights(args.weights)
    if loaded.task.name != spec.name:
        raise ZooValueError(f"--weights {args.weights} belongs to task {loaded.task.name!r}, not {spec.name!r}")
    # Task-specific options go through only when given, so a task without them keeps its own defaults.
    given = (("fill", args.fill), ("levels", args.level), ("episodes", args.episodes), ("video", args.video),
             ("user", args.user), ("top", args.top), ("rank_by", args.rank_by))
    options = {k: v for k, v in given if v is not None}
    rows = spec.predict(loaded, args.input, horizon=args.horizon, out=args.out, plot=args.plot, **options)
    columns = list(rows[0]) if rows else []
    cells = [[_fmt(v) if isinstance(v, float) else "" if v is None else v for v in r.values()] for r in rows]
    _emit(args, rows, f"{spec.name}: {args.weights}", columns, cells)
    for label, path in (("wrote", args.out), ("plot", args.plot), ("video", args.video)):
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
    check_arg(args.id is not None, "ID", None, "a weights id, e.g. forecasting/moe_e8k2.m3-monthly")
    entry = api.find_entry(args.id)
    path = hub.verify(entry)
    if args.action == "path":
        print(path)
    else:
        print(f"ok  {entry.id}  {path}  sha256 {entry.sha256[:12]}…")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from zoo import api, hub
    from zoo.moe import count_params
    from zoo.config import config_sha256, from_dict, to_dict

    for flag in ("task", "run", "arch", "tag"):
        check_arg(getattr(args, flag) is not None, f"--{flag}", None, "a value: publish needs --task, --run, --arch and --tag")
    spec = api.load_task(args.task)
    run_dir, saved = api.resolve_run(args.run)
    cfg = from_dict(spec.config_cls, saved)
    results_path = run_dir / "results.json"
    if not results_path.exists():
        raise ZooValueError(f"--run {run_dir}: no results.json (train and test it first)")
    metrics = json.loads(results_path.read_text())["metrics"]
    loaded = api.build_from_config(spec, cfg)
    # A task that keeps its best validation epoch (stocks) leaves best.ckpt: the weights its test metrics used.
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    if not ckpt.exists():
        ckpt = run_dir / "checkpoints" / "last.ckpt"
    if ckpt.exists():
        loaded.module.load_state_dict(hub.load_checkpoint(ckpt)["state_dict"])
    model = loaded.module.model
    state = model.state_dict()
    total, active = count_params(model)
    artifact = hub.publish(
        state,
        to_dict(cfg),
        arch=args.arch,
        tag=args.tag,
        out_dir=hub.weights_dir(),
        extra={"task": spec.name, "config_sha256": config_sha256(cfg), "eval": {"split": "test", "metrics": metrics}},
    )
    entry = artifact.entry(spec.name, params_total=total, params_active=active, metrics=metrics, board=args.board, default=args.default)
    hub.add_entry(api.manifest_path(spec.name), entry)
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
    if args.action == "render":
        stale = leaderboard.render(boards, check=args.check)
        print("up to date" if not stale else "rendered " + ", ".join(str(p) for p in stale))
        return 0
    _quiet_lightning()
    if args.action == "reproduce":
        for board in boards:
            for path in leaderboard.reproduce(board, args.tier, rows=args.rows, seeds=args.seeds, progress=not args.no_progress):
                print(f"wrote {path}")
        return 0
    for board in boards:
        leaderboard.check_tier(board, args.tier, seeds=args.seeds)
        print(f"{board} {args.tier}: within tolerance")
    return 0


# ---------------------------------------------------------------------------------------------- parser


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
    demo.add_argument("--seed", type=int, default=0, help="random seed for data and initialisation (default 0)")
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
    train.add_argument("--seed", type=int, help="overrides the config's seed")
    train.add_argument("--resume", metavar="RUN", help="continue the run in this run dir from its last checkpoint")
    train.add_argument("--out", metavar="DIR", help="run dir (default runs/<task>/<recipe>/<time>-s<seed>)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    train.add_argument("--json", action="store_true")
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
    ev.add_argument("--results-out", metavar="FILE", help="write metrics and provenance as JSON")
    ev.add_argument("--json", action="store_true")

    pr = add("predict", cmd_predict, "predict with published weights on your own input")
    pr.add_argument("task")
    pr.add_argument("input", metavar="INPUT", nargs="?", help="forecasting: a CSV, long (id,timestamp,value; id and "
                    "timestamp optional) or wide (timestamp column + one column per series); stocks: a long price "
                    "CSV; rl: optional environment id (default: the one the agent was trained on); recsys: optional "
                    "file of candidate item ids, one per line (default: every item the user has not rated in training)")
    pr.add_argument("--weights", required=True, metavar="ID|PATH")
    pr.add_argument("--horizon", type=int, help="forecasting: steps ahead (default: the trained horizon)")
    pr.add_argument("--out", metavar="FILE", help="write predictions as CSV (forecasting: "
                    "id,step,timestamp,forecast,lo80,hi80,lo95,hi95)")
    pr.add_argument("--plot", metavar="PNG", help="write a plot of history and forecast (forecasting: fan charts)")
    pr.add_argument("--fill", metavar="POLICY", help="forecasting: missing values and gaps: error (default), "
                    "interpolate or ffill")
    pr.add_argument("--level", nargs="+", type=float, metavar="PCT", help="forecasting: empirical interval levels "
                    "in percent (default 80 95)")
    pr.add_argument("--episodes", type=int, metavar="N", help="rl: deterministic episodes to run (default 1)")
    pr.add_argument("--video", metavar="FILE", help="rl: render the episodes offscreen to an .mp4 or .gif")
    pr.add_argument("--user", metavar="ID", help="recsys: the user to recommend items for (an id as in the data's "
                    "user file)")
    pr.add_argument("--top", type=int, metavar="N", help="recsys: how many items to return (default 10)")
    pr.add_argument("--rank-by", metavar="TASK", help="recsys: the task whose score orders the items (default: the "
                    "first task, watch on MovieLens, long_view on the simulator)")
    pr.add_argument("--json", action="store_true")

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
    lb.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "action", None) == "list" and args.command == "weights":
        args.pattern = args.id
    args.command_line = ["zoo", *(sys.argv[1:] if argv is None else argv)]
    try:
        return args.func(args)
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
