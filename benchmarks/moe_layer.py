"""Time the expert-FFN dispatch backends of ``zoo.kernels.moe_ffn`` against the dense-equivalent ideal.

What it measures
    For each shape (T tokens, model dim D, expert hidden dim F, E experts, top-k), dtype and mode (forward, or
    forward + backward with a random dense output gradient and gradients for x, the expert weights and the
    routing weights), the median wall time of:

    * ``hf_loop``   the eager loop of HF transformers' MoE blocks, written here: one-hot mask of the ids,
                    a loop over the experts that got tokens, ``torch.where`` → gather → matmuls →
                    ``index_add_``;
    * every backend registered in ``zoo.kernels.backends()`` (``reference``, ``loop``, ``grouped``, and any
      added later), each forced with ``moe_ffn(..., backend=name)``; ``reference`` is a per-token Python loop,
      so it is skipped when T·k > 1024 unless ``--with-reference``; a backend that declines the inputs is
      reported ``n/a`` with its reason; ``triton`` is never timed on these CPU tensors: without
      ``TRITON_INTERPRET`` it declines them, with it it would run the Triton interpreter (Python, not a kernel),
      so it is ``skipped``;
    * ``auto``      what ``moe_ffn`` picks by itself (the table says which backend that was);
    * ``ideal_mm``  one dense GEMM chain ``(T·k, D)·(D, F) → act → ·(F, D)``: same active FLOPs, no routing;
    * ``ideal_bmm`` the batched chain ``(E, T·k/E, D)·(E, D, F) → act → ·(E, F, D)``: perfectly uniform load.

    ``t_ideal = min(ideal_mm, ideal_bmm)`` and ``fraction of ideal = t_ideal / t_variant``
    (docs/kernels.md, "Measuring"). Routing is top-k of the softmax of seeded random logits (near-uniform load),
    weights renormalised over the k picks. Each repeat runs every variant once (interleaved, in a fresh random
    order), after one untimed warm-up call each that also checks every variant's output against ``hf_loop``;
    the reported time is the median over repeats. Everything runs on the CPU with torch's thread count, or with
    ``--device cuda`` on the current GPU (each timed call between two ``torch.cuda.synchronize``; a variant whose
    warm-up call raises, e.g. a ``grouped_mm`` that this GPU lacks, is reported ``error`` with the message).

How to run it
    .venv/bin/python benchmarks/moe_layer.py                    # default shapes, fp32 + bf16, fwd + fwd+bwd
    .venv/bin/python benchmarks/moe_layer.py --quick            # tiny shapes: a smoke run of a few seconds
    .venv/bin/python benchmarks/moe_layer.py --shapes "T256 D256 F512 E8 k2" --dtypes bf16 --modes fwd+bwd
    .venv/bin/python benchmarks/moe_layer.py --activation swiglu --json /tmp/moe_layer.json
    .venv/bin/python benchmarks/moe_layer.py --device cuda      # on a GPU (exit 2 where there is none)

How to read it
    One row per (shape, dtype, mode). ``ideal ms`` is ``t_ideal`` and which chain set it; ``auto →`` is the
    backend that ``auto`` resolved to. Each variant cell is ``fraction of ideal (median ms)``, the best of the
    row in bold. 1.0 means as fast as the dense chain; the gap below it is routing overhead (sort, gather and
    scatter, small per-expert GEMMs, per-expert launches). On a 2-core CPU differences under ~10 % are noise,
    and values a little above 1 happen: per-expert chunks can sit in cache better than one large GEMM chain.
    ``n/a``: the backend declined these inputs (e.g. ``grouped`` with D or F not 16-byte aligned, ``triton`` on
    CPU tensors); ``skipped``: ``reference`` at a large T·k, or ``triton`` under the interpreter. The reasons are
    listed under the table (and in the JSON records' ``reason``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from zoo.errors import ZooValueError
from zoo.kernels import ACTIVATIONS, BackendDeclined, backends, compiled, moe_ffn, resolve_backend
from zoo.kernels.activations import GATED, apply_activation
from zoo.kernels.triton import interpreter_requested

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODES = ("fwd", "fwd+bwd")
DEVICES = ("cpu", "cuda")
DEFAULT_SHAPES = "T4096 D256 F512 E8 k2, T4096 D256 F128 E64 k8, T1024 D512 F1024 E8 k2, T256 D256 F512 E8 k2"
# D=36 is not a multiple of 8, so grouped declines it in bf16: the smoke run covers the n/a path too.
QUICK_SHAPES = "T64 D32 F64 E4 k2, T64 D32 F16 E16 k4, T32 D36 F64 E4 k2"
REFERENCE_MAX_SLOTS = 1024  # above this T·k the per-token reference takes too long unless --with-reference
IDEALS = ("ideal_mm", "ideal_bmm")
# Largest |y - y_hf_loop| / max|y_hf_loop| accepted from the warm-up comparison.
MATCH_TOL = {torch.float32: 1e-4, torch.bfloat16: 5e-2}


@dataclass(frozen=True)
class Shape:
    T: int
    D: int
    F: int
    E: int
    k: int

    @property
    def name(self) -> str:
        return f"T{self.T} D{self.D} F{self.F} E{self.E} k{self.k}"


def parse_shapes(text: str) -> list[Shape]:
    """Every ``T… D… F… E… k…`` group in ``text``; fields may be separated by spaces, ``_`` or ``-``."""
    sep = r"[\s_-]*"
    pattern = sep.join(rf"{f}(\d+)" for f in "TDFEk")
    shapes = [Shape(*map(int, groups)) for groups in re.findall(pattern, text, re.IGNORECASE)]
    if not shapes:
        raise ValueError(f"no shape like 'T256 D256 F512 E8 k2' in {text!r}")
    return shapes


@dataclass
class Case:
    """One variant ready to run: a forward closure, the leaves it differentiates, and the output gradient."""

    forward: Callable[[], torch.Tensor]
    leaves: list[torch.Tensor]
    grad: torch.Tensor

    def reset(self) -> None:
        for leaf in self.leaves:
            leaf.grad = None

    def run(self, backward: bool) -> torch.Tensor:
        y = self.forward()
        if backward:
            y.backward(self.grad)
        return y.detach()


@dataclass
class MoEInputs:
    x_TD: torch.Tensor
    ids_TK: torch.Tensor
    weights_TK: torch.Tensor
    w1_EDF: torch.Tensor
    w2_EFD: torch.Tensor
    w3_EDF: torch.Tensor | None
    grad_TD: torch.Tensor

    @property
    def leaves(self) -> list[torch.Tensor]:
        params = [self.x_TD, self.weights_TK, self.w1_EDF, self.w2_EFD, self.w3_EDF]
        return [p for p in params if p is not None and p.requires_grad]


def _randn(
    *size: int, scale: float, dtype: torch.dtype, gen: torch.Generator, grad: bool, device: str = "cpu"
) -> torch.Tensor:
    """Seeded on the CPU (the same numbers on every device), then moved."""
    return (torch.randn(*size, generator=gen) * scale).to(device=device, dtype=dtype).requires_grad_(grad)


def make_routing(T: int, E: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k ids of softmax(random logits) and their probabilities renormalised over the k picks."""
    probs_TE = torch.softmax(torch.randn(T, E, generator=gen), dim=-1)
    top_TK, ids_TK = probs_TE.topk(k, dim=-1)
    return ids_TK, top_TK / top_TK.sum(-1, keepdim=True)


def make_moe_inputs(
    shape: Shape, dtype: torch.dtype, gated: bool, grad: bool, seed: int, device: str = "cpu"
) -> MoEInputs:
    gen = torch.Generator().manual_seed(seed)
    T, D, F_, E, k = shape.T, shape.D, shape.F, shape.E, shape.k
    ids_TK, weights_TK = make_routing(T, E, k, gen)
    randn = partial(_randn, dtype=dtype, gen=gen, device=device)
    return MoEInputs(
        x_TD=randn(T, D, scale=1.0, grad=grad),
        ids_TK=ids_TK.to(device),
        weights_TK=weights_TK.to(device=device, dtype=dtype).requires_grad_(grad),
        w1_EDF=randn(E, D, F_, scale=D**-0.5, grad=grad),
        w2_EFD=randn(E, F_, D, scale=F_**-0.5, grad=grad),
        w3_EDF=randn(E, D, F_, scale=D**-0.5, grad=grad) if gated else None,
        grad_TD=randn(T, D, scale=1.0, grad=False),
    )


def hf_loop_moe_ffn(
    x_TD: torch.Tensor,
    ids_TK: torch.Tensor,
    weights_TK: torch.Tensor,
    w1_EDF: torch.Tensor,
    w2_EFD: torch.Tensor,
    w3_EDF: torch.Tensor | None,
    activation: str,
) -> torch.Tensor:
    """The eager dispatch of HF transformers' sparse MoE blocks (Mixtral, Qwen-MoE, …), as a baseline."""
    y_TD = torch.zeros_like(x_TD)
    mask_EKT = F.one_hot(ids_TK, num_classes=w1_EDF.shape[0]).permute(2, 1, 0)
    experts_hit = (mask_EKT.sum(dim=(1, 2)) > 0).nonzero().flatten().tolist()
    for e in experts_hit:
        slot_n, token_n = torch.where(mask_EKT[e])
        x_nD = x_TD[token_n]
        g_nF = x_nD @ w3_EDF[e] if w3_EDF is not None else None
        y_nD = apply_activation(x_nD @ w1_EDF[e], activation, g_nF) @ w2_EFD[e]
        y_TD.index_add_(0, token_n, (y_nD * weights_TK[token_n, slot_n, None]).to(x_TD.dtype))
    return y_TD


def moe_case(fn: Callable[..., torch.Tensor], inputs: MoEInputs, activation: str) -> Case:
    def forward() -> torch.Tensor:
        i = inputs
        return fn(i.x_TD, i.ids_TK, i.weights_TK, i.w1_EDF, i.w2_EFD, i.w3_EDF, activation)

    return Case(forward, inputs.leaves, inputs.grad_TD)


def ideal_case(
    batch: tuple[int, ...], rows: int, shape: Shape, dtype: torch.dtype, activation: str, grad: bool,
    device: str = "cpu",
) -> Case:
    """The dense chain ``act(x·w1 [, x·w3]) · w2`` on ``(*batch, rows, D)`` inputs; ``batch=()``: one GEMM."""
    gen = torch.Generator().manual_seed(0)
    D, F_ = shape.D, shape.F

    def randn(*size: int, scale: float, leaf: bool = grad) -> torch.Tensor:
        return _randn(*batch, *size, scale=scale, dtype=dtype, gen=gen, grad=leaf, device=device)

    x, g = randn(rows, D, scale=1.0), randn(rows, D, scale=1.0, leaf=False)
    w1, w2 = randn(D, F_, scale=D**-0.5), randn(F_, D, scale=F_**-0.5)
    w3 = randn(D, F_, scale=D**-0.5) if activation in GATED else None

    def forward() -> torch.Tensor:
        gate = torch.matmul(x, w3) if w3 is not None else None
        return torch.matmul(apply_activation(torch.matmul(x, w1), activation, gate), w2)

    return Case(forward, [t for t in (x, w1, w2, w3) if t is not None], g)


def ideal_cases(shape: Shape, dtype: torch.dtype, activation: str, grad: bool, device: str = "cpu") -> dict[str, Case]:
    slots = shape.T * shape.k
    per_expert = -(-slots // shape.E)  # uniform load, rounded up when E does not divide T·k
    return {
        "ideal_mm": ideal_case((), slots, shape, dtype, activation, grad, device),
        "ideal_bmm": ideal_case((shape.E,), per_expert, shape, dtype, activation, grad, device),
    }


def zoo_backend_names() -> list[str]:
    """``reference``, ``loop``, ``grouped`` first (when registered), then any other registered backend."""
    registered = backends()
    first = [n for n in ("reference", "loop", "grouped") if n in registered]
    return first + [n for n in registered if n not in first]


def interpreted(name: str, x: torch.Tensor) -> str | None:
    """Why ``name`` would not run a real kernel on ``x`` although it may accept it, or None.

    Only ``triton`` does this: on CPU tensors it runs (under ``TRITON_INTERPRET=1``) every program in the Triton
    interpreter, in Python, orders of magnitude slower than any kernel; timing that measures nothing.
    """
    if name == "triton" and x.device.type == "cpu" and interpreter_requested():
        return "TRITON_INTERPRET=1: triton would run in the Triton interpreter on CPU tensors, not as a kernel"
    return None


@dataclass(frozen=True)
class Status:
    """A variant that is not timed: ``n/a`` (the backend declines the inputs) or ``skipped``, and why."""

    status: str
    reason: str


def variant_cases(
    shape: Shape, inputs: MoEInputs, activation: str, with_reference: bool
) -> tuple[dict[str, Case], dict[str, Status]]:
    """Cases to time, and a status with its reason for the variants that will not run."""
    cases = {"hf_loop": moe_case(hf_loop_moe_ffn, inputs, activation)}
    statuses: dict[str, Status] = {}
    for name in [*zoo_backend_names(), "auto"]:
        if name == "reference" and shape.T * shape.k > REFERENCE_MAX_SLOTS and not with_reference:
            reason = f"T·k = {shape.T * shape.k} > {REFERENCE_MAX_SLOTS} (--with-reference times it)"
            statuses[name] = Status("skipped", reason)
            continue
        reason = interpreted(name, inputs.x_TD)  # checked first: deciding need not import triton
        if reason is not None:
            statuses[name] = Status("skipped", reason)
            continue
        try:
            chosen = resolve_backend(name, inputs.x_TD, inputs.w1_EDF, inputs.w3_EDF).name
        except BackendDeclined as err:  # its own reason; the table lists the backends that did run
            statuses[name] = Status("n/a", f"backend={name!r} cannot run these inputs: {err.reason}")
            continue
        except ZooValueError as err:
            statuses[name] = Status("n/a", str(err))
            continue
        reason = interpreted(chosen, inputs.x_TD)  # auto resolving to an interpreted backend
        if reason is not None:
            statuses[name] = Status("skipped", f"resolves to {chosen}: {reason}")
            continue
        cases[name] = moe_case(partial(moe_ffn, backend=name), inputs, activation)
    return cases, statuses


def check_outputs(outputs: dict[str, torch.Tensor], dtype: torch.dtype, err: Console) -> None:
    """Warn when a variant's forward output differs from ``hf_loop``'s beyond the dtype's tolerance."""
    base = outputs["hf_loop"].float()
    scale = base.abs().max().clamp_min(1e-12)
    for name, y in outputs.items():
        rel = float((y.float() - base).abs().max() / scale)
        if rel > MATCH_TOL[dtype]:
            err.print(f"[yellow]warning: {name} differs from hf_loop by {rel:.2e} (relative to max |y|)")


def _synchronizer(device: str) -> Callable[[], None]:
    """Waits for the device's queued work (a no-op on the CPU, where every op has finished when it returns)."""
    if device == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def measure(
    cases: dict[str, Case], backward: bool, repeats: int, device: str = "cpu"
) -> tuple[dict[str, float], dict[str, torch.Tensor], dict[str, Status]]:
    """Median ms per case over ``repeats`` rounds, each case's output from its warm-up call, and an ``error``
    status for the cases whose warm-up call raised (they are not timed).

    Every round runs each case once, in a fresh seeded random order, so that no variant always pays for the
    same predecessor (a slow one can leave cold caches and freed memory behind). On a GPU each timed call sits
    between two synchronisations, so its time is the kernels' and not only their launch.
    """
    sync = _synchronizer(device)
    outputs, errors = {}, {}
    for name, case in cases.items():
        case.reset()
        try:
            outputs[name] = case.run(backward)
            sync()
        except Exception as err:  # a kernel this device or torch build lacks: report it, time the others
            errors[name] = Status("error", f"{type(err).__name__}: {next(iter(str(err).splitlines()), '')}")
    names = [name for name in cases if name not in errors]
    times: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(0)
    for _ in range(repeats):
        for name in rng.sample(names, len(names)):
            cases[name].reset()
            sync()
            t0 = time.perf_counter()
            cases[name].run(backward)
            sync()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}, outputs, errors


@dataclass
class Row:
    """The results of one (shape, dtype, mode): median ms of the timed variants, a status for the others."""

    shape: Shape
    dtype: str
    mode: str
    auto_backend: str
    medians: dict[str, float]
    statuses: dict[str, Status]

    @property
    def ideal_name(self) -> str:
        return min(IDEALS, key=self.medians.__getitem__)

    @property
    def t_ideal(self) -> float:
        return self.medians[self.ideal_name]


def run_config(shape: Shape, dtype_name: str, mode: str, args: argparse.Namespace, err: Console) -> Row:
    dtype, backward = DTYPES[dtype_name], mode == "fwd+bwd"
    device = getattr(args, "device", "cpu")
    inputs = make_moe_inputs(shape, dtype, args.activation in GATED, backward, args.seed, device)
    cases, statuses = variant_cases(shape, inputs, args.activation, args.with_reference)
    cases |= ideal_cases(shape, dtype, args.activation, backward, device)
    medians, outputs, errors = measure(cases, backward, args.repeats, device)
    # after the warm-up calls: with autotuning on, auto's first call chose (and cached) its backend
    auto = resolve_backend("auto", inputs.x_TD, inputs.w1_EDF, inputs.w3_EDF, shape.k, backward).name
    if any(name in errors for name in IDEALS) or "hf_loop" in errors:
        raise RuntimeError(f"{shape.name} {dtype_name} {mode}: a baseline failed: {errors}")
    check_outputs({n: y for n, y in outputs.items() if n not in IDEALS}, dtype, err)
    return Row(shape, dtype_name, mode, auto, medians, statuses | errors)


def header(device: str = "cpu") -> str:
    """torch version, threads and the processor (the GPU's name and capability with ``device="cuda"``)."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
        major, minor = torch.cuda.get_device_capability()
        return f"torch {torch.__version__} · CUDA {torch.version.cuda} · {name} (sm_{major}{minor})"
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = match.group(1).strip() if match else ""
    capability = torch.backends.cpu.get_cpu_capability()
    return f"torch {torch.__version__} · threads {torch.get_num_threads()} · {cpu or 'cpu ?'} ({capability})"


def load_average() -> str:
    """The 1-minute load average: well above 0 before the run means other processes share the cores."""
    return f"load average {os.getloadavg()[0]:.2f}"


def format_ms(ms: float) -> str:
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}"


def render(rows: list[Row], variants: list[str], title: str) -> Table:
    table = Table(title=title, caption="cell: fraction of ideal (median ms); best per row in bold")
    for col in ("shape", "dtype", "mode", "ideal ms", "auto →"):
        table.add_column(col, no_wrap=True)
    for name in variants:
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        best = min(variants, key=lambda name: row.medians.get(name, float("inf")))
        cells = []
        for name in variants:
            if name not in row.medians:
                status = row.statuses.get(name)
                cells.append(f"[dim]{status.status if status else 'n/a'}")
                continue
            ms = row.medians[name]
            cell = f"{row.t_ideal / ms:.2f} ({format_ms(ms)})"
            cells.append(f"[bold]{cell}" if name == best else cell)
        ideal = f"{format_ms(row.t_ideal)} ({row.ideal_name.removeprefix('ideal_')})"
        table.add_row(row.shape.name, row.dtype, row.mode, ideal, row.auto_backend, *cells)
    return table


def to_records(rows: list[Row], args: argparse.Namespace) -> list[dict[str, object]]:
    records = []
    for row in rows:
        common = {
            "shape": row.shape.name,
            **vars(row.shape),
            "dtype": row.dtype,
            "mode": row.mode,
            "activation": args.activation,
            "auto_backend": row.auto_backend,
            "repeats": args.repeats,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": getattr(args, "device", "cpu"),
        }
        for variant, ms in row.medians.items():
            result = {"median_ms": ms, "fraction_of_ideal": row.t_ideal / ms, "status": "ok"}
            records.append({**common, "variant": variant, **result})
        for variant, status in row.statuses.items():
            result = {"median_ms": None, "fraction_of_ideal": None, "status": status.status, "reason": status.reason}
            records.append({**common, "variant": variant, **result})
    return records


def status_notes(rows: list[Row]) -> list[str]:
    """One line per (variant, status, reason) that kept a variant from being timed, with the rows it applies to."""
    where: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        for variant, st in row.statuses.items():
            where.setdefault((variant, st.status, st.reason), []).append(f"{row.shape.name} {row.dtype} {row.mode}")
    notes = []
    for (variant, status, reason), cells in where.items():
        at = "every row" if len(cells) == len(rows) else "; ".join(dict.fromkeys(cells))
        notes.append(f"{variant} {status} ({at}): {reason}")
    return notes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shapes_help = f'shapes like "T256 D256 F512 E8 k2" or T256_D256_F512_E8_k2 (default: {DEFAULT_SHAPES})'
    p.add_argument("--shapes", nargs="+", metavar="SHAPE", help=shapes_help)
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--activation", choices=ACTIVATIONS, default="gelu")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds; the median is reported (default 5)")
    p.add_argument("--quick", action="store_true",
                   help=f"tiny shapes for a smoke run (the compiled backend runs uncompiled): {QUICK_SHAPES}")
    reference_help = f"also time the per-token reference when T·k > {REFERENCE_MAX_SLOTS}"
    p.add_argument("--with-reference", action="store_true", help=reference_help)
    p.add_argument("--seed", type=int, default=0, help="seed of the routing and the MoE inputs (default 0)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write one record per row and variant")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="where the tensors live (default cpu)")
    args = p.parse_args(argv)
    if args.quick and args.shapes:
        p.error("--quick picks its own shapes; drop --shapes")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    try:
        default = QUICK_SHAPES if args.quick else DEFAULT_SHAPES
        args.shapes = parse_shapes(" ".join(args.shapes) if args.shapes else default)
    except ValueError as e:
        p.error(str(e))
    return args


def cuda_missing(device: str) -> str | None:
    """A one-line explanation when ``device`` is ``cuda`` and this machine has no usable CUDA device, else None."""
    if device != "cuda" or torch.cuda.is_available():
        return None
    build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", built without CUDA")
    return f"--device cuda: no CUDA device is present ({build}; torch.cuda.is_available() is False)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:  # a smoke run: the compiled backend's chain runs eagerly, so it costs no compile time
        compiled.EAGER = True
    missing = cuda_missing(args.device)
    if missing:
        print(f"moe_layer.py: {missing}", file=sys.stderr)
        return 2
    out = Console(width=None if sys.stdout.isatty() else 200)
    err = Console(stderr=True)
    settings = f"activation {args.activation} · median of {args.repeats}, warm-up 1"
    out.print(f"{header(args.device)} · {load_average()} · {settings}")
    rows = []
    start = time.perf_counter()
    for shape in args.shapes:
        for dtype_name in args.dtypes:
            for mode in args.modes:
                t0 = time.perf_counter()
                rows.append(run_config(shape, dtype_name, mode, args, err))
                err.print(f"[dim]{shape.name} {dtype_name} {mode}: {time.perf_counter() - t0:.1f} s")
    variants = ["hf_loop", *zoo_backend_names(), "auto"]
    out.print(render(rows, variants, title="MoE expert FFN: fraction of the dense ideal"))
    for note in status_notes(rows):
        out.print(f"[dim]{note}", highlight=False)
    out.print(f"total {time.perf_counter() - start:.1f} s · {load_average()}")
    if args.json:
        args.json.write_text(json.dumps(to_records(rows, args), indent=1))
        out.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
