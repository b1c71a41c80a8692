"""Wall time of ``zoo leaderboard reproduce`` on a board's tier: one process against worker processes and Ray.

What it measures
    For each board, the whole command as a user runs it, each variant in a fresh Python process, in one scratch
    repository root per variant (the board's YAML copied; results and run dirs go there, the committed results are
    never touched), every run forced:

    - ``seq``: ``--jobs 1`` with torch's default threads (all cores), the default command;
    - ``seq-1t``: ``--jobs 1 --threads 1``;
    - ``jobs``: ``--jobs N`` (one thread per worker);
    - ``ray``: ``--executor ray --jobs N`` (a local instance of N CPUs, started and shut down by the command).

    It prints the seconds of each and their ratio to ``seq``, the mean per-run overhead of Ray against ``jobs``
    (``(ray − jobs) · N / runs``), and whether every variant's checked metrics equal those of ``seq-1t`` (the
    workers run one thread, so that is the run they must match bit for bit; without ``seq-1t``, the first variant
    measured). The CPU flags and the load average
    are printed with the table: compare only ratios measured in one run.

How to run it
    .venv/bin/python benchmarks/parallel_reproduce.py --boards forecasting.m3 graph.prompt-transfer
    .venv/bin/python benchmarks/parallel_reproduce.py --boards recsys.ml100k-mtl --variants seq jobs --json out.json
    .venv/bin/python benchmarks/parallel_reproduce.py --boards forecasting.convergence --tier full --variants seq jobs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_times import cpu_flags  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("seq", "seq-1t", "jobs", "ray")
# Runs the CLI with the leaderboards of a scratch root: `python -c CHILD ROOT ARGV...`.
CHILD = """
import sys
from pathlib import Path
from zoo import leaderboard
from zoo.cli import main
root = Path(sys.argv[1])
leaderboard.repo_root = lambda: root
sys.exit(main(sys.argv[2:]))
"""


def variant_argv(variant: str, board: str, jobs: int, tier: str) -> list[str]:
    argv = ["leaderboard", "reproduce", board, "--tier", tier, "--force", "--no-progress"]
    return argv + {"seq": [], "seq-1t": ["--threads", "1"], "jobs": ["--jobs", str(jobs)],
                   "ray": ["--executor", "ray", "--jobs", str(jobs)]}[variant]


def run_variant(board: str, variant: str, jobs: int, tier: str, workdir: Path) -> tuple[float, dict]:
    """Seconds of the command and its results ({(row, seed): checked metrics})."""
    root = workdir / variant
    (root / "leaderboards").mkdir(parents=True)
    shutil.copy(REPO / "leaderboards" / f"{board}.yaml", root / "leaderboards")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), *variant_argv(variant, board, jobs, tier)], cwd=root,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{board} {variant}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    from zoo import leaderboard

    spec = leaderboard.load_spec(board)
    checked = {m.key for m in spec.metrics if m.checked}
    results = {}
    for path in sorted((root / "leaderboards" / "results" / board).glob(f"*/{tier}-s*.json")):
        record = json.loads(path.read_text())
        results[record["row"], record["seed"]] = {k: v for k, v in record["metrics"].items() if k in checked}
    return seconds, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="+", default=["forecasting.m3", "graph.prompt-transfer"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--tier", default="smoke", choices=["smoke", "full"])
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, flags: {cpu_flags()}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    for board in args.boards:
        with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
            measured = {v: run_variant(board, v, args.jobs, args.tier, Path(tmp)) for v in args.variants}
        base = measured.get("seq", next(iter(measured.values())))[0]
        reference = measured.get("seq-1t", next(iter(measured.values())))[1]
        runs = len(reference)
        for variant, (seconds, results) in measured.items():
            row = {"board": board, "tier": args.tier, "variant": variant, "runs": runs, "seconds": round(seconds, 1),
                   "ratio": round(seconds / base, 2), "same_metrics": results == reference}
            rows.append(row)
            print(f"{board:24s} {args.tier:5s} {variant:7s} {runs:3d} runs {seconds:7.1f} s  × seq {seconds / base:5.2f}  "
                  f"metrics equal seq-1t: {results == reference}")
        if "ray" in measured and "jobs" in measured:
            overhead = (measured["ray"][0] - measured["jobs"][0]) * args.jobs / runs
            print(f"{board:24s} Ray overhead per run against --jobs {args.jobs}: {overhead:+.2f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"cpu_flags": cpu_flags(), "jobs": args.jobs, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
