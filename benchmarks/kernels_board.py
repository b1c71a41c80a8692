"""The kernel board: measure the expert-FFN backends on the board's shapes and render ``leaderboards/kernels.md``.

What it measures (one process, every variant interleaved as in ``moe_layer.py``, whose timing code it reuses)
    * the fraction of the dense-equivalent ideal of every backend (``hf_loop``, ``loop``, ``grouped``,
      ``fused``, ``compiled``, ``auto``; ``triton`` is listed as n/a: these are CPU tensors), forward and
      forward + backward, fp32 and bf16, on
      ``T4096 D256 F512 E8 k2`` (coarse), ``T4096 D256 F128 E64 k8`` and ``T4096 D256 F128 E128 k8``
      (fine-grained), ``T1024 D256 F128 E64 k8`` (fine-grained, fewer tokens) and ``T256 D256 F512 E8 k2``
      (small batch);
    * the scaling curve: forward + backward fraction of the ideal against E at fixed active FLOPs (k = E/8,
      F = 1024/k, so k·F and the rows per expert stay fixed) for E = 8 … 128;
    * dispatch memory: the peak memory growth of one training forward (inputs excluded) next to ``T·k·D`` and
      ``T·E·D`` elements: on the CPU the resident set, each backend in a fresh process; on a GPU the CUDA
      allocator's peak;
    * a profile of ``auto`` on every fraction target it misses (else the fine-grained shape): the ops that take
      the time (CPU time, or GPU kernel time on CUDA) and the share outside matrix products, which is what
      explains a missed target.

``auto`` is measured with autotuning on (``ZOO_KERNELS_AUTOTUNE=1``, docs/kernels.md "How ``auto`` chooses"),
tuned into a fresh cache file per run, so it is what task models get on the machine; its warm-up call tunes.

How to run it (on a quiet machine: the load average is recorded and printed on the board)
    .venv/bin/python benchmarks/kernels_board.py run           # ~5 min on 2 cores; writes results, renders
    .venv/bin/python benchmarks/kernels_board.py run --device cuda   # on a GPU: every backend that runs on CUDA
    .venv/bin/python benchmarks/kernels_board.py run --repeats 1 --shapes "T1024 D256 F128 E64 k8" --dtypes bf16 \
        --results /tmp/kb --board /tmp/kb/kernels.md            # a subset, written elsewhere
    .venv/bin/python benchmarks/kernels_board.py render        # results JSON → leaderboards/kernels.md + plot
    .venv/bin/python benchmarks/kernels_board.py render --check   # CI: the committed board matches its results

Results live in ``leaderboards/results/kernels/``: ``cpu.json`` and, from ``--device cuda``, ``gpu.json`` (with
the GPU's name), one section of the board each; until a GPU has been measured the GPU section says so. On CPU
tensors ``triton`` shows ``n/a``; on CUDA ``fused`` does (it is the CPU path). ``benchmarks/gpu_check.sh`` runs
the Triton tests and a reduced GPU board in one command. ``--device cuda`` without a CUDA device exits 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

import moe_layer as ml
from zoo.io import atomic_write_text
from zoo.kernels import autotune, compiled, moe_ffn, resolve_backend

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "leaderboards" / "results" / "kernels"
BOARD = ROOT / "leaderboards" / "kernels.md"
PLOT = ROOT / "leaderboards" / "kernels.scaling.png"

BOARD_SHAPES = (
    "T4096 D256 F512 E8 k2, T4096 D256 F128 E64 k8, T4096 D256 F128 E128 k8, T1024 D256 F128 E64 k8, T256 D256 F512 E8 k2"
)
SCALING_SHAPES = ", ".join(f"T4096 D256 F{1024 // (e // 8)} E{e} k{e // 8}" for e in (8, 16, 32, 64, 128))
PROFILE_SHAPE = "T4096 D256 F128 E64 k8"
QUICK = {  # tiny stand-ins for tests and smoke runs
    "board": "T64 D32 F64 E4 k2, T64 D32 F16 E16 k4",
    "scaling": "T64 D32 F64 E4 k1, T64 D32 F32 E8 k2",
    "profile": "T64 D32 F16 E16 k4",
}
MEMORY_VARIANTS = {
    "cpu": ("hf_loop", "loop", "grouped", "fused", "compiled"), "cuda": ("hf_loop", "loop", "grouped", "triton"),
}
VARIANTS = ("hf_loop", "loop", "grouped", "fused", "compiled", "triton", "auto")
RESULT_FILES = {"cpu": "cpu.json", "cuda": "gpu.json"}  # the board's sections, in this order
SECTION_TITLES = {"cpu": "CPU", "cuda": "GPU"}
DEFAULT_REPEATS = {"cpu": 5, "cuda": 20}
# The board's targets (docs/kernels.md, "Measuring"), checked against ``auto`` (what task models get):
# (shape, dtype, minimum fraction of ideal).
IDEAL_TARGETS = [
    ("T4096 D256 F512 E8 k2", "fp32", 0.9),
    ("T4096 D256 F512 E8 k2", "bf16", 0.9),
    ("T4096 D256 F128 E64 k8", "fp32", 0.8),
    ("T4096 D256 F128 E64 k8", "bf16", 0.8),
]
SPEEDUP_TARGET = ("T4096 D256 F128 E64 k8", "bf16", 3.0)  # auto vs hf_loop, forward + backward
# auto's fraction of the ideal at the scaling curve's largest E over its fraction at the smallest (fixed active
# FLOPs): the ideal's own slowdown with E is divided out.
SCALING_TARGET = 0.8
AUTO_NEAR_BEST = 1.1  # auto's time over the fastest backend's, on every row of the board
MEMORY_PAIR = ("T4096 D256 F128 E64 k8", "T4096 D256 F128 E128 k8")  # same T, k, D, F; E doubles
MEMORY_FLAT = 1.2  # peak(E128) / peak(E64) allowed for an O(T·k·D) dispatch (noise of a RSS measurement)


def bench_args(repeats: int, device: str = "cpu") -> argparse.Namespace:
    return argparse.Namespace(activation="gelu", with_reference=False, seed=0, repeats=repeats, device=device)


def time_rows(
    shapes: list[ml.Shape], modes: list[str], repeats: int, progress: Progress, label: str, device: str = "cpu",
    dtypes: list[str] | None = None,
) -> list[dict]:
    args, err = bench_args(repeats, device), Console(stderr=True)
    jobs = [(s, d, m) for s in shapes for d in dtypes or ml.DTYPES for m in modes]
    task = progress.add_task(label, total=len(jobs))
    rows = []
    for shape, dtype, mode in jobs:
        progress.update(task, description=f"{label}: {shape.name} {dtype} {mode}")
        rows.append(ml.run_config(shape, dtype, mode, args, err))
        progress.advance(task)
    return ml.to_records(rows, args)


def peak_memory_child(shape: ml.Shape, variant: str, dtype: str) -> dict:
    """In this (fresh) process: resident-memory growth of one training forward of ``variant`` at ``shape``.

    A tiny call first loads the kernels' libraries, so their one-time allocations are not counted. The peak is
    the address space's high-water mark ``VmHWM`` (``ru_maxrss`` would not do: it keeps the parent's peak across
    ``fork`` + ``exec``), and nothing large is freed between reading it and running the call.
    """
    fn = ml.hf_loop_moe_ffn if variant == "hf_loop" else None
    small = ml.make_moe_inputs(ml.Shape(8, shape.D, shape.F, shape.E, shape.k), ml.DTYPES[dtype], False, True, 0)
    inputs = ml.make_moe_inputs(shape, ml.DTYPES[dtype], False, True, 0)

    def call(i: ml.MoEInputs) -> torch.Tensor:
        if fn is not None:
            return fn(i.x_TD, i.ids_TK, i.weights_TK, i.w1_EDF, i.w2_EFD, None, "gelu")
        return moe_ffn(i.x_TD, i.ids_TK, i.weights_TK, i.w1_EDF, i.w2_EFD, None, "gelu", backend=variant)

    call(small).sum().backward()
    before = _peak_rss_kib()
    y = call(inputs)  # the output and the autograd graph's saved tensors stay alive: a training forward
    after = _peak_rss_kib()
    del y
    return {"peak_growth_mb": (after - before) / 1024}


def _peak_rss_kib() -> int:
    """This process's peak resident set (``VmHWM`` of /proc/self/status, Linux), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status: the memory measurement needs Linux")


def peak_memory_cuda(shape: ml.Shape, variant: str, dtype: str) -> dict:
    """On the GPU, in this process: growth of the CUDA allocator's peak over one training forward of ``variant``
    (after a tiny call that loads and compiles its kernels). The allocator counts every tensor exactly, so no
    fresh process is needed."""
    fn = ml.hf_loop_moe_ffn if variant == "hf_loop" else None
    make = partial(ml.make_moe_inputs, dtype=ml.DTYPES[dtype], gated=False, grad=True, seed=0, device="cuda")
    small, inputs = make(ml.Shape(8, shape.D, shape.F, shape.E, shape.k)), make(shape)

    def call(i: ml.MoEInputs) -> torch.Tensor:
        if fn is not None:
            return fn(i.x_TD, i.ids_TK, i.weights_TK, i.w1_EDF, i.w2_EFD, None, "gelu")
        return moe_ffn(i.x_TD, i.ids_TK, i.weights_TK, i.w1_EDF, i.w2_EFD, None, "gelu", backend=variant)

    call(small).backward(small.grad_TD)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    y = call(inputs)
    torch.cuda.synchronize()
    growth = torch.cuda.max_memory_allocated() - before
    del y
    return {"peak_growth_mb": growth / 2**20}


def measure_memory(shapes: list[ml.Shape], progress: Progress, device: str = "cpu") -> list[dict]:
    jobs = [(s, v) for s in shapes for v in MEMORY_VARIANTS[device]]
    task = progress.add_task("dispatch memory", total=len(jobs))
    records = []
    for shape, variant in jobs:
        progress.update(task, description=f"dispatch memory: {shape.name} {variant}")
        small = ml.Shape(8, shape.D, shape.F, shape.E, shape.k)
        inputs = ml.make_moe_inputs(small, torch.float32, False, False, 0, device)
        try:
            if variant != "hf_loop":
                resolve_backend(variant, inputs.x_TD, inputs.w1_EDF)
        except ValueError as e:  # the backend declines these inputs
            records.append({"shape": shape.name, "variant": variant, "status": "n/a", "reason": str(e)})
            progress.advance(task)
            continue
        elements = {"tkd_mb": shape.T * shape.k * shape.D * 4 / 2**20, "ted_mb": shape.T * shape.E * shape.D * 4 / 2**20}
        if device == "cuda":
            try:
                measured = peak_memory_cuda(shape, variant, "fp32")
            except Exception as err:  # a kernel this GPU lacks: recorded, the run goes on
                reason = f"{type(err).__name__}: {next(iter(str(err).splitlines()), '')}"
                records.append({"shape": shape.name, "variant": variant, "status": "error", "reason": reason})
                progress.advance(task)
                continue
        else:
            cmd = [sys.executable, __file__, "_memory", shape.name, variant, "fp32"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ))
            measured = json.loads(out.stdout)
        records.append({"shape": shape.name, "variant": variant, "status": "ok", **measured, **elements})
        progress.advance(task)
    return records


def profile_auto(shape: ml.Shape, dtype: str, top: int = 8, device: str = "cpu") -> dict:
    """Self time by op of ``auto``, forward + backward, over three calls after a warm-up: CPU time on the CPU,
    GPU kernel time on CUDA."""
    inputs = ml.make_moe_inputs(shape, ml.DTYPES[dtype], False, True, 0, device)
    case = ml.moe_case(lambda *a: moe_ffn(*a, backend="auto"), inputs, "gelu")
    case.reset()
    case.run(True)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            case.reset()
            case.run(True)
        if device == "cuda":
            torch.cuda.synchronize()

    def self_time(e) -> float:
        return e.self_device_time_total if device == "cuda" else e.self_cpu_time_total

    events = sorted((e for e in prof.key_averages() if self_time(e) > 0), key=lambda e: -self_time(e))
    total = sum(self_time(e) for e in events)
    ops = [{"op": e.key, "share": self_time(e) / total, "calls": e.count // 3} for e in events[:top]]
    gemm = sum(self_time(e) for e in events if is_gemm(e.key)) / total if total else 0.0
    chosen = resolve_backend("auto", inputs.x_TD, inputs.w1_EDF, None, shape.k, True).name
    return {"shape": shape.name, "dtype": dtype, "backend": chosen, "ms_per_call": total / 3e3, "gemm_share": gemm,
            "ops": ops}


GEMM_OPS = ("mm", "bmm", "addmm", "baddbmm", "_grouped_mm", "matmul", "linear")


def is_gemm(op: str) -> bool:
    """Whether a profiler op name is a matrix product (aten ops, oneDNN/MKL calls, Triton/cuBLAS GEMM kernels)."""
    name = op.removeprefix("aten::").lower()
    return name in GEMM_OPS or "gemm" in name or "mkldnn" in name or "matmul" in name


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def selected_shapes(args: argparse.Namespace) -> dict[str, list[ml.Shape]]:
    """The board's shapes (``--quick``: tiny stand-ins). ``--shapes`` keeps only the given board and scaling
    shapes (those of the given ones that are on the curve) and profiles the first given one."""
    shapes = {k: ml.parse_shapes(v) for k, v in (QUICK if args.quick else {
        "board": BOARD_SHAPES, "scaling": SCALING_SHAPES, "profile": PROFILE_SHAPE}).items()}
    if args.shapes:
        wanted = ml.parse_shapes(args.shapes)
        shapes = {"board": wanted, "scaling": [s for s in shapes["scaling"] if s in wanted], "profile": wanted[:1]}
    return shapes


def missed_targets(board: list[dict]) -> list[tuple[str, str]]:
    """(shape, dtype) of the fraction-of-ideal targets that ``auto`` misses in these records."""
    missed = []
    for shape, dtype, minimum in IDEAL_TARGETS:
        r = _record(board, shape, dtype, "fwd+bwd", "auto")
        if r is not None and r["fraction_of_ideal"] < minimum:
            missed.append((shape, dtype))
    return missed


def run(args: argparse.Namespace) -> Path:
    shapes = selected_shapes(args)
    device, dtypes = args.device, args.dtypes or list(ml.DTYPES)
    # auto as task models get it with autotuning on, tuned afresh on this machine (not a user's old cache)
    os.environ[autotune.ENV] = "1"
    os.environ[autotune.CACHE_ENV] = str(Path(tempfile.mkdtemp(prefix="zoo-kernels-board-")) / "autotune.json")
    if args.quick:  # a smoke run: the compiled backend's chain runs eagerly, so it costs no compile time
        os.environ["ZOO_KERNELS_COMPILE"] = "0"  # for the memory measurements' fresh processes
        compiled.EAGER = True
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with Progress(transient=True, disable=args.no_progress) as progress:
        board = time_rows(shapes["board"], list(ml.MODES), args.repeats, progress, "ideal fractions", device, dtypes)
        scaling = time_rows(shapes["scaling"], ["fwd+bwd"], args.repeats, progress, "scaling curve", device, dtypes)
        memory = measure_memory(shapes["board"], progress, device)
        # where the time goes: on every fraction target auto misses, else on the profile shape in bf16
        wanted = missed_targets(board) or [(shapes["profile"][0].name, dtypes[-1])]
        profiles = []
        for shape_name, dtype in wanted:
            try:
                profiles.append(profile_auto(ml.parse_shapes(shape_name)[0], dtype, device=device))
            except Exception as err:  # e.g. no CUPTI for the GPU profiler: the board is still worth keeping
                profiles.append({"error": f"{type(err).__name__}: {next(iter(str(err).splitlines()), '')}"})
    flags = "".join(f" {flag}" for flag, on in (("--device cuda", device == "cuda"), ("--quick", args.quick)) if on)
    flags += f" --shapes \"{args.shapes}\"" if args.shapes else ""
    flags += f" --dtypes {' '.join(args.dtypes)}" if args.dtypes else ""
    results = {
        "device": device,
        "machine": ml.header(device),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "command": "python benchmarks/kernels_board.py run" + flags,
        "repeats": args.repeats,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "seconds": round(time.perf_counter() - start, 1),
        "board": board,
        "scaling": scaling,
        "memory": memory,
        "profiles": profiles,
    }
    path = args.results / RESULT_FILES[device]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=1) + "\n")
    return path


# ---------------------------------------------------------------------------------------------------- rendering


def _cell(records: list[dict], variant: str) -> str:
    rec = next((r for r in records if r["variant"] == variant), None)
    if rec is None:
        return "–"
    if rec["status"] != "ok":
        return rec["status"]
    ms = rec["median_ms"]
    return f"{rec['fraction_of_ideal']:.2f} ({ml.format_ms(ms)})"


def _row_groups(records: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["shape"], r["dtype"], r["mode"]), []).append(r)
    return groups


def ideal_table(records: list[dict]) -> list[str]:
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    lines = [
        "| shape | dtype | mode | ideal ms | auto → | " + " | ".join(variants) + " |",
        "|---|---|---|---|---|" + "---|" * len(variants),
    ]
    for (shape, dtype, mode), recs in _row_groups(records).items():
        ok = {r["variant"]: r for r in recs if r["status"] == "ok"}
        ideal = min((ok[n] for n in ml.IDEALS if n in ok), key=lambda r: r["median_ms"])
        timed = [v for v in variants if v in ok and v != "auto"]
        best = min(timed, key=lambda v: ok[v]["median_ms"]) if timed else None
        cells = [f"**{_cell(recs, v)}**" if v == best else _cell(recs, v) for v in variants]
        lead = [shape, dtype, mode, f"{ml.format_ms(ideal['median_ms'])} ({ideal['variant'].removeprefix('ideal_')})"]
        lines.append("| " + " | ".join([*lead, recs[0]["auto_backend"], *cells]) + " |")
    return lines


def _record(records: list[dict], shape: str, dtype: str, mode: str, variant: str) -> dict | None:
    for r in records:
        if (r["shape"], r["dtype"], r["mode"], r["variant"], r["status"]) == (shape, dtype, mode, variant, "ok"):
            return r
    return None


def scaling_summary(records: list[dict]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per dtype and variant: ``(fraction at the largest E, fraction at the smallest E, their ratio)``, the
    fraction being of the ideal at that E (so the ideal's own slowdown with E is divided out)."""
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for dtype in ml.DTYPES:
        for variant in VARIANTS:
            pts = sorted((r["E"], r["fraction_of_ideal"]) for r in records
                         if r["dtype"] == dtype and r["variant"] == variant and r["status"] == "ok")
            if len(pts) > 1:
                (_, small), (_, large) = pts[0], pts[-1]
                out.setdefault(dtype, {})[variant] = (large, small, large / small)
    return out


def auto_vs_best(records: list[dict]) -> tuple[float, str] | None:
    """The worst row of the board for ``auto``: its time over the fastest backend's, and which row that is."""
    worst = None
    for (shape, dtype, mode), recs in _row_groups(records).items():
        ok = {r["variant"]: r["median_ms"] for r in recs if r["status"] == "ok"}
        timed = [ms for v, ms in ok.items() if v in VARIANTS and v not in ("auto", "hf_loop")]
        if "auto" in ok and timed:
            ratio = ok["auto"] / min(timed)
            if worst is None or ratio > worst[0]:
                worst = (ratio, f"{shape} {dtype} {mode}")
    return worst


def targets(results: dict) -> list[str]:
    board, scaling, memory = results["board"], results["scaling"], results["memory"]
    lines = ["| target | measured (auto → backend) | met |", "|---|---|---|"]

    def verdict(ok: bool) -> str:
        return "yes" if ok else "**no**"

    for shape, dtype, minimum in IDEAL_TARGETS:
        r = _record(board, shape, dtype, "fwd+bwd", "auto")
        if r is None:
            continue
        lines.append(
            f"| fwd+bwd ≥ {minimum}× ideal, {shape}, {dtype} | {r['fraction_of_ideal']:.2f} ({r['auto_backend']}) "
            f"| {verdict(r['fraction_of_ideal'] >= minimum)} |"
        )
    shape, dtype, minimum = SPEEDUP_TARGET
    auto, hf = _record(board, shape, dtype, "fwd+bwd", "auto"), _record(board, shape, dtype, "fwd+bwd", "hf_loop")
    if auto and hf:
        speedup = hf["median_ms"] / auto["median_ms"]
        lines.append(
            f"| fwd+bwd ≥ {minimum}× faster than hf_loop, {shape}, {dtype} | {speedup:.2f}× ({auto['auto_backend']}) "
            f"| {verdict(speedup >= minimum)} |"
        )
    growth = memory_growth_with_e(memory, results.get("device", "cpu"))
    if growth:
        variant, (small, large, ratio) = max(growth.items(), key=lambda item: item[1][2])
        lines.append(
            f"| dispatch memory O(T·k·D), never O(T·E·D) | peak at {large} / at {small} (T·E·D ×2, T·k·D same): "
            f"≤ {ratio:.2f}× (worst: {variant}) | {verdict(ratio <= MEMORY_FLAT)} |"
        )
    shapes = sorted({(r["E"], r["shape"]) for r in scaling})
    for dtype, spans in scaling_summary(scaling).items():
        if "auto" in spans:
            large, small, ratio = spans["auto"]
            lines.append(
                f"| fraction of ideal at {shapes[-1][1]} ≥ {SCALING_TARGET}× the fraction at {shapes[0][1]}, {dtype} "
                f"| {large:.2f} / {small:.2f} = {ratio:.2f}× | {verdict(ratio >= SCALING_TARGET)} |"
            )
    worst = auto_vs_best(board)
    if worst is not None:
        ratio, where = worst
        lines.append(
            f"| auto within {AUTO_NEAR_BEST - 1:.0%} of the fastest backend on every row | worst: {ratio:.2f}× "
            f"the fastest ({where}) | {verdict(ratio <= AUTO_NEAR_BEST)} |"
        )
    return lines


def memory_growth_with_e(memory: list[dict], device: str = "cpu") -> dict[str, tuple[str, str, float]]:
    """Per backend (hf_loop aside): peak memory growth between two board shapes that differ only in E.

    The O(T·k·D) test: T·E·D doubles from E64 to E128 at the same T, k, D, F, so a dispatch that held anything
    per (token, expert) pair would grow with it."""
    small, large = MEMORY_PAIR
    out = {}
    for variant in MEMORY_VARIANTS[device]:
        if variant == "hf_loop":
            continue
        peak = {m["shape"]: m["peak_growth_mb"] for m in memory if m["variant"] == variant and m["status"] == "ok"}
        if small in peak and large in peak and peak[small] > 0:
            out[variant] = (small, large, peak[large] / peak[small])
    return out


def memory_table(memory: list[dict], device: str = "cpu") -> list[str]:
    variants = MEMORY_VARIANTS[device]
    lines = ["| shape | T·k·D MB | T·E·D MB | " + " | ".join(variants) + " |", "|---|---|---|" + "---|" * len(variants)]
    by_shape: dict[str, dict[str, dict]] = {}
    for m in memory:
        by_shape.setdefault(m["shape"], {})[m["variant"]] = m
    for shape, recs in by_shape.items():
        ref = next((r for r in recs.values() if r["status"] == "ok"), None)
        if ref is None:
            continue
        cells = [
            f"{recs[v]['peak_growth_mb']:.0f}" if v in recs and recs[v]["status"] == "ok" else recs.get(v, {}).get("status", "–")
            for v in variants
        ]
        lines.append(f"| {shape} | {ref['tkd_mb']:.0f} | {ref['ted_mb']:.0f} | " + " | ".join(cells) + " |")
    return lines


def scaling_table(records: list[dict]) -> list[str]:
    """Fraction of the ideal (median ms) per backend along the scaling curve."""
    variants = [v for v in VARIANTS if any(r["variant"] == v and r["status"] == "ok" for r in records)]
    lines = ["| shape | dtype | ideal ms | auto → | " + " | ".join(variants) + " |",
             "|---|---|---|---|" + "---|" * len(variants)]
    for (shape, dtype, _mode), recs in _row_groups(records).items():
        ok = {r["variant"]: r for r in recs if r["status"] == "ok"}
        ideal = min(ok[n]["median_ms"] for n in ml.IDEALS if n in ok)
        cells = [_cell(recs, v) for v in variants]
        lines.append(f"| {shape} | {dtype} | {ml.format_ms(ideal)} | {recs[0]['auto_backend']} | " + " | ".join(cells) + " |")
    return lines


def profile_table(profile: dict, device: str = "cpu") -> list[str]:
    if "error" in profile:
        return [f"The profile of `auto` failed: {profile['error']}"]
    what = "GPU kernel time" if device == "cuda" else "CPU time"
    gemm = profile.get("gemm_share")
    not_gemm = f"; {1 - gemm:.0%} of it outside matrix products" if gemm is not None else ""
    lines = [
        f"`auto` → `{profile['backend']}` on {profile['shape']} {profile['dtype']}, forward + backward, "
        f"{profile['ms_per_call']:.1f} ms per call under the profiler (self {what} by op{not_gemm}):",
        "",
        "| op | share | calls per step |",
        "|---|---|---|",
    ]
    lines += [f"| `{o['op']}`{'' if is_gemm(o['op']) else ' (not GEMM)'} | {o['share']:.0%} | {o['calls']} |"
              for o in profile["ops"]]
    return lines


def profiles_of(results: dict) -> list[dict]:
    """The run's profiles (older results files hold a single ``profile``)."""
    return results.get("profiles") or [results["profile"]]


def plot_scaling(sections: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, dtype in zip(axes, ml.DTYPES, strict=True):
        for results in sections:
            recs = [r for r in results["scaling"] if r["dtype"] == dtype and r["status"] == "ok"]
            for variant in VARIANTS:
                pts = sorted((r["E"], r["fraction_of_ideal"]) for r in recs if r["variant"] == variant)
                if pts:
                    style = "ko-" if variant == "auto" else "o-"
                    label = variant if len(sections) == 1 else f"{variant} ({results['device']})"
                    ax.plot(*zip(*pts, strict=True), style, label=label, alpha=1.0 if variant == "auto" else 0.6)
        ax.axhline(1.0, color="k", ls="--", lw=0.8)
        ax.set(xscale="log", ylim=(0, None), xlabel="experts E (k = E/8, k·F fixed)",
               ylabel="fraction of the dense ideal (fwd+bwd)", title=dtype)
        ax.set_xticks([8, 16, 32, 64, 128], labels=["8", "16", "32", "64", "128"])
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    fig.suptitle("MoE expert FFN: fraction of the dense ideal vs number of experts at fixed active FLOPs")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def render_markdown(sections: list[dict]) -> str:
    out = [
        "# Kernels — MoE expert-FFN dispatch against the dense ideal",
        "",
        "<!-- generated by `python benchmarks/kernels_board.py render` from leaderboards/results/kernels/; do not edit -->",
        "",
        "Fraction of the dense-equivalent ideal = t_ideal / t_backend, where t_ideal is the faster of one dense GEMM "
        "chain with the same active FLOPs and a batched chain under perfectly uniform load (docs/kernels.md, "
        "\"Measuring\"). Cells: `fraction (median ms)`, best backend of the row in bold; `auto →` is what task "
        "models get through `zoo.moe`. GELU experts, top-k of seeded random logits (near-uniform load), forward + backward "
        "with gradients for x, the expert weights and the routing weights. On a 2-core CPU differences under ~10 % "
        "are noise. Measured by `benchmarks/kernels_board.py run` (timing code: `benchmarks/moe_layer.py`).",
    ]
    for results in sections:
        load, device = results["load_average"], results["device"]
        memory_what = (
            "Peak CUDA-allocator growth (MB) of one training forward (output and saved tensors alive, inputs "
            "excluded), fp32"
            if device == "cuda" else
            "Peak resident-memory growth (MB) of one training forward (output and saved tensors alive, inputs "
            "excluded), fp32, each backend in a fresh process"
        )
        out += [
            "",
            f"## {SECTION_TITLES.get(device, device.upper())}: {results['machine']}",
            "",
            f"{results['date']}, commit `{results['commit']}`, `{results['command']}`, median of {results['repeats']}, "
            f"{results['seconds']:.0f} s; 1-min load average {load[0]} before, {load[1]} after.",
            "",
            "### Targets, for `auto`",
            "",
            *targets(results),
            "",
            "### Fraction of the dense ideal",
            "",
            *ideal_table(results["board"]),
            "",
            "### Dispatch memory",
            "",
            f"{memory_what}; T·k·D and T·E·D are the sizes of one fp32 activation per routed slot and per "
            "(token, expert) pair.",
            "",
            *memory_table(results["memory"], device),
            "",
            "### Scaling: fraction of the ideal vs E at fixed active FLOPs",
            "",
            "k = E/8 and F = 1024/k, so the active FLOPs per token and the rows per expert stay fixed while the "
            "experts get smaller; the ideal itself slows down as its GEMMs narrow, so cells are fractions of the "
            f"ideal at each E (median ms in brackets). Plot: [kernels.scaling.png]({PLOT.name}).",
            "",
            *(scaling_table(results["scaling"]) if results["scaling"] else ["No scaling shape in this run."]),
            "",
            "### Where the time goes",
            "",
            "`auto` profiled on every fraction-of-ideal target it misses (when it misses none: on the "
            "fine-grained shape).",
            *(line for profile in profiles_of(results) for line in ["", *profile_table(profile, device)]),
        ]
    if not any(results["device"] == "cuda" for results in sections):
        out += [
            "",
            "## GPU",
            "",
            "No GPU measured yet. On a CUDA machine, `benchmarks/gpu_check.sh` runs the Triton kernel tests on the "
            "GPU and this board's `run --device cuda` (every backend that runs on CUDA: `triton`, `grouped` where "
            "torch has a CUDA `grouped_mm`, `loop`, the dense ideal), writing `leaderboards/results/kernels/gpu.json`.",
        ]
    return "\n".join(out) + "\n"


def load_sections(results_dir: Path) -> list[dict]:
    """The results files, CPU first, then GPU, then any other device's."""
    order = {name: i for i, name in enumerate(RESULT_FILES.values())}
    paths = sorted(results_dir.glob("*.json"), key=lambda p: (order.get(p.name, len(order)), p.name))
    if not paths:
        raise SystemExit(f"no results in {results_dir}: run `python benchmarks/kernels_board.py run` first")
    return [json.loads(p.read_text()) for p in paths]


def render(results_dir: Path, board: Path, plot: Path | None, check: bool) -> int:
    text = render_markdown(load_sections(results_dir))
    if check:
        if not board.exists() or board.read_text() != text:
            print(f"{board} is stale: run `python benchmarks/kernels_board.py render`", file=sys.stderr)
            return 6
        return 0
    atomic_write_text(board, text)
    if plot is not None:
        plot_scaling(load_sections(results_dir), plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="measure on this machine, write the results JSON and render the board")
    r.add_argument("--device", choices=list(RESULT_FILES), default="cpu",
                   help="where the tensors live: cpu (cpu.json) or cuda (gpu.json); default cpu")
    r.add_argument("--repeats", type=int, help="timed rounds per variant; the median is kept (default 5 on the CPU, "
                   f"{DEFAULT_REPEATS['cuda']} on CUDA)")
    r.add_argument("--quick", action="store_true", help="tiny shapes: a smoke run, not a measurement (the compiled backend runs uncompiled)")
    r.add_argument("--shapes", help='only these shapes, e.g. "T4096 D256 F128 E64 k8" (comma-separated); '
                   "the results file is still replaced: pair it with --results/--board for a partial run")
    r.add_argument("--dtypes", nargs="+", choices=list(ml.DTYPES), help="only these dtypes (default: all)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--results", type=Path, default=RESULTS, help=f"results folder (default {RESULTS.relative_to(ROOT)})")
    r.add_argument("--board", type=Path, default=BOARD, help=f"Markdown to write (default {BOARD.relative_to(ROOT)})")
    d = sub.add_parser("render", help="render the board (and its plot) from the results JSON")
    d.add_argument("--check", action="store_true", help="exit 6 if the committed board differs from its results")
    d.add_argument("--results", type=Path, default=RESULTS)
    d.add_argument("--board", type=Path, default=BOARD)
    m = sub.add_parser("_memory")  # internal: one memory measurement in a fresh process
    m.add_argument("shape")
    m.add_argument("variant")
    m.add_argument("dtype")
    args = p.parse_args(argv)
    if args.cmd == "_memory":
        print(json.dumps(peak_memory_child(ml.parse_shapes(args.shape)[0], args.variant, args.dtype)))
        return 0
    plot = PLOT if args.board == BOARD else args.board.with_suffix(".scaling.png")
    if args.cmd == "render":
        return render(args.results, args.board, plot, args.check)
    if args.repeats is None:
        args.repeats = DEFAULT_REPEATS[args.device]
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    missing = ml.cuda_missing(args.device)
    if missing:
        print(f"kernels_board.py: {missing}; nothing was measured", file=sys.stderr)
        return 2
    path = run(args)
    print(f"wrote {path}")
    render(args.results, args.board, plot, check=False)
    print(f"wrote {args.board} and {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
