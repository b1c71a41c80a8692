"""The ``zoo`` console script.

Every failure the zoo anticipates is a :class:`zoo.errors.ZooError` and ends as one line on stderr with its exit
code (2 for bad usage or input); anything else is a bug (exit 1) and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from zoo._version import __version__
from zoo.errors import ZooError, check_arg


class _Parser(argparse.ArgumentParser):
    """argparse with the zoo's convention for usage errors: one line, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"zoo: error: {message} (see `{self.prog} --help`)\n")


def _quiet_lightning() -> None:
    """Keep the terminal for our own output: no device banners, tips or known-benign warnings."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*(LeafSpec|litlogger|does not have many workers|no `val_dataloader`).*")


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the backbone's tiny example and print held-out error and expert balance."""
    from rich.console import Console
    from rich.table import Table

    from zoo.demo import run_demo

    check_arg(args.steps > 0, "--steps", args.steps, "a positive int")
    _quiet_lightning()
    out_dir = Path(args.out) if args.out else Path("runs") / "demo" / datetime.now().strftime("%Y%m%d-%H%M%S")
    console = Console()
    with console.status(f"training 3 variants for {args.steps} steps each (mixture-of-regimes regression)…"):
        results = run_demo(args.steps, out_dir, args.seed)
    table = Table(title="Tiny MoE demo: 8 experts top-2 vs dense twin (held-out set)")
    for col in ("variant", "val MSE", "load CV (0 = even)", "train s"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in results:
        cv = "—" if r.load_cv is None else f"{r.load_cv:.3f}"
        table.add_row(r.name, f"{r.val_mse:.4f}", cv, f"{r.seconds:.1f}")
    console.print(table)
    console.print(f"expert-load plots: {out_dir}/*/expert_load.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zoo", description="The MoE model zoo: one shared mixture-of-experts backbone, many tasks.")
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    demo = sub.add_parser("demo", help="train the backbone's tiny example (about a minute on 2 cores)", description=cmd_demo.__doc__)
    demo.add_argument("--steps", type=int, default=300, help="optimizer steps per variant (default 300)")
    demo.add_argument("--seed", type=int, default=0, help="random seed for data and initialisation (default 0)")
    demo.add_argument("--out", help="directory for plots (default runs/demo/<timestamp>)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
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
