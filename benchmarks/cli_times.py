"""Wall time of the zoo's metadata commands, and which heavy libraries each one imports.

Each command runs as a fresh ``python -m zoo`` process ``--repeats`` times (interleaved, so a busy machine slows
all of them alike); the table gives the median and the fastest wall time and the heavy modules
(:data:`HEAVY`) the process imported, found with ``-X importtime``. ``--src DIR`` times another checkout of the
zoo (e.g. an older commit in a git worktree) with this environment, for before/after comparisons in one run.

    .venv/bin/python benchmarks/cli_times.py                  # the metadata verbs, 5 repeats
    .venv/bin/python benchmarks/cli_times.py --src /tmp/old   # the same verbs from another checkout
    .venv/bin/python benchmarks/cli_times.py --json times.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "lightning", "torchvision", "torchmetrics", "pandas", "sklearn", "matplotlib", "gymnasium")
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("list",),
    ("list", "weights"),
    ("info", "forecasting"),
    ("info", "recsys"),
    ("config", "show", "forecasting", "--recipe", "moe_e8k2_m3-monthly"),
    ("weights", "list"),
    ("weights", "verify"),
    ("leaderboard", "render", "--all", "--check"),
)
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)")


def cpu_flags() -> str:
    """The SIMD flags that matter for CPU kernels, from /proc/cpuinfo (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    match = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set(match.group(1).split()) if match else set()
    return " ".join(sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4"))))


def run_once(command: tuple[str, ...], src: Path | None) -> tuple[float, set[str], int]:
    """Wall seconds, heavy top-level modules imported and the exit code of one ``python -m zoo`` run."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "zoo", *command], capture_output=True,
                          text=True, env=env, cwd=src or Path.cwd())
    seconds = time.perf_counter() - start
    imported = set()
    for line in proc.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and match.group(1).split(".")[0] in HEAVY:
            imported.add(match.group(1).split(".")[0])
    return seconds, imported, proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--src", type=Path, help="time the zoo package of this checkout instead")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    times: dict[tuple[str, ...], list[float]] = {c: [] for c in COMMANDS}
    heavy: dict[tuple[str, ...], set[str]] = {c: set() for c in COMMANDS}
    codes: dict[tuple[str, ...], int] = {}
    for _ in range(args.repeats):
        for command in COMMANDS:
            seconds, imported, code = run_once(command, args.src)
            times[command].append(seconds)
            heavy[command] |= imported
            codes[command] = code
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, flags: {cpu_flags()}")
    print(f"# source: {args.src or 'this checkout'}; {args.repeats} repeats each")
    print(f"{'command':58} {'median s':>9} {'min s':>7}  heavy imports")
    rows = []
    for command in COMMANDS:
        label = "zoo " + " ".join(command) + ("" if codes[command] == 0 else f"  (exit {codes[command]})")
        median, best = statistics.median(times[command]), min(times[command])
        print(f"{label:58} {median:9.2f} {best:7.2f}  {', '.join(sorted(heavy[command])) or '-'}")
        rows.append({"command": label, "median_s": median, "min_s": best, "heavy": sorted(heavy[command])})
    if args.json:
        args.json.write_text(json.dumps({"cpu_flags": cpu_flags(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
