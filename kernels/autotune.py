"""``auto`` chosen by measurement: time the candidate backends once per shape bucket, cache the winner on disk.

On the first ``backend="auto"`` call whose bucket (:func:`bucket_key`: device, dtype, gated, train or
inference, and log2 buckets of rows per expert ``T·k/E``, D, F, E) has no cached choice, every backend that
``auto`` may pick and that accepts the inputs runs once as a warm-up (which also compiles it) and then
``REPEATS`` times on copies of the real inputs (forward, plus backward with a random output gradient when
training); the candidates within ``CLOSE`` of the fastest are then timed ``REPEATS`` more times each, taking turns
so that a change in the machine's load hits them alike, and the fastest median wins. The choice is kept in memory and merged into
``$ZOO_HOME/kernels/autotune.json`` (written atomically), so later calls and later processes on the same machine
reuse it without timing: the same bucket always gets the same backend. Delete the file to tune again;
``ZOO_KERNELS_AUTOTUNE_CACHE`` names another file (the kernel board tunes into a fresh one per run).

Switch: ``ZOO_KERNELS_AUTOTUNE=1`` tunes, ``0`` keeps the static rule (priorities and ``auto_when``, the
measured defaults of ``leaderboards/kernels.md``). Unset, it tunes except where results must not depend on a
timing: under pytest (``PYTEST_CURRENT_TEST``), with ``torch.use_deterministic_algorithms(True)`` (golden traces
train with ``deterministic=True``) and where the CPU numerics are pinned for reproducibility (``MKL_CBWR`` or
``ATEN_CPU_CAPABILITY`` set, as leaderboard runs do); there the static rule decides, which depends on shapes
only and never picks a backend that is not bitwise reproducible.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from zoo.io import atomic_write_text

log = logging.getLogger(__name__)

ENV = "ZOO_KERNELS_AUTOTUNE"
CACHE_ENV = "ZOO_KERNELS_AUTOTUNE_CACHE"
# set when a run pins the CPU math libraries for reproducible results (leaderboard runs do): no timing decides there
PINNED_NUMERICS = ("MKL_CBWR", "ATEN_CPU_CAPABILITY")
REPEATS = 5
#: candidates within this factor of the fastest after the first pass are timed again, interleaved
CLOSE = 1.25
_FORMAT = 1

#: the choices known in this process: bucket key -> backend name
_choices: dict[str, str] = {}
_loaded_from: Path | None = None

# the clock the timing reads; tests replace it
timer: Callable[[], float] = time.perf_counter


def enabled() -> bool:
    """Whether ``auto`` should tune now (see the module docstring for the rule)."""
    flag = os.environ.get(ENV, "").strip().lower()
    if flag in ("0", "false", "off", "no"):
        return False
    if flag in ("1", "true", "on", "yes"):
        return True
    if any(name in os.environ for name in ("PYTEST_CURRENT_TEST", *PINNED_NUMERICS)):
        return False
    return not torch.are_deterministic_algorithms_enabled()


def cache_path() -> Path:
    """``$ZOO_KERNELS_AUTOTUNE_CACHE`` if set, else ``$ZOO_HOME/kernels/autotune.json`` (``ZOO_HOME`` defaults
    to ``~/.cache/zoo``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    home = os.environ.get("ZOO_HOME") or "~/.cache/zoo"
    return Path(home).expanduser() / "kernels" / "autotune.json"


def _log2_bucket(n: float) -> int:
    return round(math.log2(n)) if n > 0 else -1


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"{device.type}:{platform.machine()}:{torch.get_num_threads()}t"


def training(x_TD: torch.Tensor, *weights: torch.Tensor | None) -> bool:
    """Whether this call builds a graph (forward + backward is what to time) or is inference."""
    leaves = (x_TD, *weights)
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in leaves)


def bucket_key(
    x_TD: torch.Tensor, k: int, w1_EDF: torch.Tensor, w3_EDF: torch.Tensor | None, train: bool
) -> str:
    """The cache key of a call: machine, torch version, dtype, gated, mode and log2 buckets of rows per expert
    (``T·k/E``), D, F and E.

    Args:
        x_TD: the tokens (device, dtype and T are read).
        k: slots per token.
        w1_EDF, w3_EDF: the first projection and the gate (None if not gated).
        train: whether the call is timed forward + backward (see :func:`training`).
    """
    T, (E, D, F_) = x_TD.shape[0], w1_EDF.shape
    rows = T * k / E if E else 0
    parts = [
        _machine(x_TD.device), f"torch{torch.__version__}", str(x_TD.dtype).removeprefix("torch."),
        "gated" if w3_EDF is not None else "plain", "train" if train else "infer",
        f"rows2^{_log2_bucket(rows)}", f"D2^{_log2_bucket(D)}", f"F2^{_log2_bucket(F_)}", f"E2^{_log2_bucket(E)}",
    ]
    return " ".join(parts)


def _load() -> None:
    """Read the cache file once per path; a missing file is empty, an unreadable one is logged once and ignored."""
    global _loaded_from
    path = cache_path()
    if _loaded_from == path:
        return
    _loaded_from = path
    _choices.clear()
    _choices.update(_read(path))


def _read(path: Path, warn: bool = True) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        choices = data["choices"] if data.get("format") == _FORMAT else {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in choices.items()):
            raise ValueError("entries are not strings")
        return dict(choices)
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
        if warn:
            log.warning("moe_ffn autotune: ignoring unreadable cache %s (%s: %s)", path, type(err).__name__, err)
        return {}


def _store(key: str, name: str) -> None:
    """Merge one choice into the cache file (re-read first, so concurrent processes keep each other's entries;
    an unreadable file, already reported by :func:`_load`, is replaced)."""
    path = cache_path()
    merged = {**_read(path, warn=False), key: name}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"format": _FORMAT, "choices": merged}, indent=1, sort_keys=True) + "\n")
    except OSError as err:  # a read-only home: the choice still holds for this process
        log.warning("moe_ffn autotune: cannot write %s (%s)", path, err)


def cached(key: str) -> str | None:
    """The backend stored for ``key`` (in this process or the cache file), or None."""
    _load()
    return _choices.get(key)


def _call_ms(run: Callable[[], None], sync: Callable[[], None]) -> float:
    sync()
    start = timer()
    run()
    sync()
    return (timer() - start) * 1e3


def _samples_ms(run: Callable[[], None], sync: Callable[[], None]) -> list[float]:
    run()  # warm-up: first-call costs (compiling, allocator growth) are not the steady state
    return [_call_ms(run, sync) for _ in range(REPEATS)]


def tune(
    key: str,
    candidates: dict[str, Callable[..., torch.Tensor]],
    args: tuple,
    train: bool,
) -> str:
    """Time ``candidates`` (name → ``moe_ffn``-signature function) on ``args``, store and return the fastest.

    Args:
        key: the bucket (:func:`bucket_key`).
        candidates: the backends to compare, in ``auto`` order (ties go to the first).
        args: ``(x, ids, weights, w1, w2, w3, activation)`` of the real call; timed on detached copies, so the
            caller's graph is untouched.
        train: time forward + backward (with gradients for the inputs that need them) instead of forward only.
    """
    x_TD = args[0]
    leaves = [t.detach().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) and t.is_floating_point()
              else t for t in args]
    grad = torch.randn(x_TD.shape, dtype=x_TD.dtype, device=x_TD.device)
    sync = torch.cuda.synchronize if x_TD.device.type == "cuda" else (lambda: None)

    def runner(fn: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            y = fn(*leaves)
            if train:
                torch.autograd.backward(y, grad if y.shape == grad.shape else torch.ones_like(y))
        return run

    with torch.enable_grad() if train else torch.no_grad():
        runs = {name: runner(fn) for name, fn in candidates.items()}
        samples = {name: _samples_ms(run, sync) for name, run in runs.items()}
        first = {name: statistics.median(ms) for name, ms in samples.items()}
        close = [name for name in runs if first[name] <= CLOSE * min(first.values())]
        if len(close) > 1:  # a close call: time the contenders again, alternating, so load drift hits them alike
            for _ in range(REPEATS):
                for name in close:
                    samples[name].append(_call_ms(runs[name], sync))
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            leaf.grad = None
    times = {name: statistics.median(ms) for name, ms in samples.items()}
    best = min(times, key=times.__getitem__)
    summary = ", ".join(f"{n} {ms:.3g} ms" for n, ms in times.items())
    log.info("moe_ffn autotune: %s -> %s (%s)", key, best, summary)
    _choices[key] = best
    _store(key, best)
    return best
