"""Expert-FFN dispatch: ``moe_ffn`` and its backend registry.

``moe_ffn(x, ids, weights, w1, w2, w3=None, activation="gelu", backend="auto")`` computes
``y[t] = Σ_s weights[t, s] · FFN_{ids[t, s]}(x[t])`` with ``FFN_e(x) = act(x·w1[e]) · w2[e]`` (gated:
``(silu(x·w1[e]) * (x·w3[e])) · w2[e]``). Slots whose id is −1 contribute nothing.

Backends register with :func:`register_backend`: a function with the ``moe_ffn`` signature, a ``supports``
check that returns why it declines (or None), a priority, optionally ``auto_when``: the inputs on which
``auto`` should prefer it (a backend that can run everything but is only faster on some shapes), and optionally
``prepare``: a compile step, run once per (device, dtype, gated) before the backend's first use, whose failure
makes the backend decline those inputs. ``auto`` is chosen by measurement where autotuning is on
(``kernels/autotune.py``: the candidates are timed once per shape bucket and the winner is cached under
``ZOO_HOME``); otherwise, and for a bucket not tuned yet under ``torch.compile``, it takes the static rule: the
highest-priority backend that accepts the inputs and, if it has ``auto_when``, wants them; the priorities and
``auto_when`` rules follow the CPU measurements in ``leaderboards/kernels.md``. A backend that declines an
explicit request raises one ZooValueError line that names the backends that can run the inputs; under ``auto``
the fall-back is logged once (a failed compile step as a warning), so a kernel that does not compile on some
machine slows a task down instead of stopping it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from zoo.errors import ZooValueError, bad_arg, check_arg

from . import autotune
from .activations import ACTIVATIONS, GATED
from .compiled import compiled_moe_ffn, compiled_prepare, compiled_unsupported
from .dispatch import weighted_sum
from .fused import fused_faster, fused_moe_ffn, fused_unsupported
from .grouped import grouped_moe_ffn, grouped_unsupported
from .loop import loop_moe_ffn
from .reference import reference_moe_ffn

__all__ = [
    "ACTIVATIONS",
    "Backend",
    "BackendDeclined",
    "autotune",
    "backends",
    "moe_ffn",
    "register_backend",
    "resolve_backend",
    "weighted_sum",
]

log = logging.getLogger(__name__)

MoEFFN = Callable[..., torch.Tensor]
Supports = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], str | None]
AutoWhen = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], bool]
Prepare = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], None]


@dataclass(frozen=True)
class Backend:
    """A registered implementation of ``moe_ffn``.

    ``priority`` orders candidates for ``auto`` (higher first); ``None`` keeps the backend out of ``auto``
    (the oracle). ``supports(x, w1, w3)`` returns a reason to decline, or None. ``auto_when(x, w1, w3)``, if
    given, limits ``auto`` to the inputs where the backend was measured faster; explicit requests ignore it.
    ``prepare(x, w1, w3)``, if given, compiles what the backend needs for inputs like these and raises if it
    cannot; it runs once per (device, dtype, gated), and a failure declines those inputs from then on.
    """

    name: str
    fn: MoEFFN
    supports: Supports
    priority: int | None
    auto_when: AutoWhen | None = None
    prepare: Prepare | None = None


class BackendDeclined(ZooValueError):
    """An explicitly requested backend cannot run the inputs: ``reason``, and the backends that can."""

    def __init__(self, backend: str, reason: str, alternatives: list[str]) -> None:
        self.backend, self.reason, self.alternatives = backend, reason, alternatives
        can = ", ".join(alternatives) if alternatives else "none"
        super().__init__(f"backend={backend!r} cannot run these inputs: {reason}; backends that can: {can}")


_BACKENDS: dict[str, Backend] = {}
_logged_fallbacks: set[tuple[str, str]] = set()
# (backend, device, dtype, gated) -> None when the compile step succeeded, else why it failed
_prepared: dict[tuple[str, str, torch.dtype, bool], str | None] = {}
_COMPILE_FAILED = "failed to compile"


def _always(x_TD: torch.Tensor, w1_EDF: torch.Tensor, w3_EDF: torch.Tensor | None) -> str | None:
    return None


def register_backend(
    name: str,
    fn: MoEFFN,
    supports: Supports = _always,
    priority: int | None = 0,
    auto_when: AutoWhen | None = None,
    prepare: Prepare | None = None,
) -> None:
    """Add a backend (Triton and other fused kernels plug in here). Re-registering a name replaces it.

    Args:
        name: the name ``moe_ffn(..., backend=name)`` selects; ``"auto"`` is reserved.
        fn: the implementation, with the ``moe_ffn`` signature (validated inputs, weights in ``x``'s dtype).
        supports: ``supports(x, w1, w3)`` returns why the backend declines these inputs, or None.
        priority: ``auto`` order, higher first; None keeps the backend out of ``auto``.
        auto_when: ``auto_when(x, w1, w3)``: whether ``auto`` should pick this backend for these inputs.
        prepare: ``prepare(x, w1, w3)``: the compile step, run once per (device, dtype, gated); raising declines.
    """
    if name == "auto":
        raise ZooValueError("backend name 'auto' is reserved")
    _BACKENDS[name] = Backend(name, fn, supports, priority, auto_when, prepare)
    for key in [key for key in _prepared if key[0] == name]:
        del _prepared[key]


def backends() -> list[str]:
    """Names of the registered backends, highest ``auto`` priority first, oracle-only ones last."""
    return sorted(_BACKENDS, key=lambda n: -(_BACKENDS[n].priority if _BACKENDS[n].priority is not None else -1e9))


def _decline_reason(candidate: Backend, x_TD: torch.Tensor, w1_EDF: torch.Tensor, w3_EDF: torch.Tensor | None,
                    compile_now: bool = True) -> str | None:
    """Why ``candidate`` cannot run these inputs (its ``supports`` check, then its compile step), or None.

    ``compile_now=False`` reports only a compile step that already failed, without running one. Under
    ``torch.compile`` the step is not run either: the traced call compiles the kernels itself.
    """
    reason = candidate.supports(x_TD, w1_EDF, w3_EDF)
    if reason is not None or candidate.prepare is None:
        return reason
    key = (candidate.name, x_TD.device.type, x_TD.dtype, w3_EDF is not None)
    if key not in _prepared:
        if not compile_now or torch.compiler.is_compiling():
            return None
        try:
            candidate.prepare(x_TD, w1_EDF, w3_EDF)
            _prepared[key] = None
        except Exception as err:  # any failure to build the kernels: the backend declines, nothing crashes
            detail = next(iter(str(err).strip().splitlines()), "")
            _prepared[key] = f"{_COMPILE_FAILED} for {key[1]} {key[2]} ({type(err).__name__}: {detail})"
    return _prepared[key]


def _able_backends(x_TD: torch.Tensor, w1_EDF: torch.Tensor, w3_EDF: torch.Tensor | None) -> list[str]:
    """The registered backends that accept these inputs (without running any compile step), ``auto`` order."""
    return [n for n in backends() if _decline_reason(_BACKENDS[n], x_TD, w1_EDF, w3_EDF, compile_now=False) is None]


def resolve_backend(
    backend: str,
    x_TD: torch.Tensor,
    w1_EDF: torch.Tensor,
    w3_EDF: torch.Tensor | None = None,
    k: int | None = None,
    training: bool | None = None,
) -> Backend:
    """The backend that ``moe_ffn`` would run for these inputs (for ``auto``: the cached autotune choice if
    there is one, else the static rule; this function never times anything).

    Args:
        backend: a registered name, or ``"auto"``.
        x_TD, w1_EDF, w3_EDF: the inputs (only their device, dtype and shapes are read).
        k: slots per token; needed to look up an autotuned choice (without it: the static rule).
        training: whether the call is forward + backward; default: grad mode and the inputs' ``requires_grad``.

    Raises:
        BackendDeclined: (a ZooValueError) ``backend`` is named explicitly and cannot run these inputs; the
            message names the backends that can.
    """
    if backend != "auto":
        if backend not in _BACKENDS:
            raise bad_arg("backend", backend, ["auto", *backends()])
        chosen = _BACKENDS[backend]
        reason = _decline_reason(chosen, x_TD, w1_EDF, w3_EDF)
        if reason is not None:
            raise BackendDeclined(backend, reason, _able_backends(x_TD, w1_EDF, w3_EDF))
        return chosen
    if autotune.enabled():
        tuned = _tuned(x_TD, k, w1_EDF, w3_EDF, training)
        if tuned is not None:
            return tuned
    return _static_auto(x_TD, w1_EDF, w3_EDF)


def _tuned(x_TD: torch.Tensor, k: int | None, w1_EDF: torch.Tensor, w3_EDF: torch.Tensor | None,
           training: bool | None) -> Backend | None:
    """The cached autotune choice for these inputs, if any (and if that backend still accepts them)."""
    if k is None:
        return None
    train = autotune.training(x_TD, w1_EDF, w3_EDF) if training is None else training
    name = autotune.cached(autotune.bucket_key(x_TD, k, w1_EDF, w3_EDF, train))
    if name is None or name not in _BACKENDS:
        return None
    if _decline_reason(_BACKENDS[name], x_TD, w1_EDF, w3_EDF) is not None:
        return None
    return _BACKENDS[name]


def _static_auto(x_TD: torch.Tensor, w1_EDF: torch.Tensor, w3_EDF: torch.Tensor | None) -> Backend:
    """The static rule: the highest-priority backend that accepts the inputs and whose ``auto_when`` wants them."""
    for name in backends():
        candidate = _BACKENDS[name]
        if candidate.priority is None:
            continue
        if candidate.auto_when is not None and not candidate.auto_when(x_TD, w1_EDF, w3_EDF):
            continue
        reason = _decline_reason(candidate, x_TD, w1_EDF, w3_EDF)
        if reason is None:
            return candidate
        if (name, reason) not in _logged_fallbacks:
            _logged_fallbacks.add((name, reason))
            level = logging.WARNING if reason.startswith(_COMPILE_FAILED) else logging.INFO
            log.log(level, "moe_ffn: backend %r declined (%s); trying the next one", name, reason)
    return _BACKENDS["reference"]


def _validate(x_TD, ids_TK, weights_TK, w1_EDF, w2_EFD, w3_EDF, activation) -> None:
    check_arg(activation in ACTIVATIONS, "activation", activation, ACTIVATIONS)
    check_arg(x_TD.dim() == 2, "x.shape", tuple(x_TD.shape), "[T, D]")
    check_arg(x_TD.is_floating_point(), "x.dtype", x_TD.dtype, "a floating dtype")
    T, D = x_TD.shape
    check_arg(w1_EDF.dim() == 3 and w1_EDF.shape[1] == D, "w1.shape", tuple(w1_EDF.shape), f"[E, {D}, F]")
    E, _, F_ = w1_EDF.shape
    check_arg(tuple(w2_EFD.shape) == (E, F_, D), "w2.shape", tuple(w2_EFD.shape), f"[{E}, {F_}, {D}]")
    if activation in GATED:
        check_arg(w3_EDF is not None, "w3", None, f"a [{E}, {D}, {F_}] tensor for activation={activation!r}")
    if w3_EDF is not None:
        check_arg(tuple(w3_EDF.shape) == (E, D, F_), "w3.shape", tuple(w3_EDF.shape), f"[{E}, {D}, {F_}]")
        check_arg(activation in GATED, "activation", activation, f"a gated activation when w3 is given: {sorted(GATED)}")
    check_arg(ids_TK.dim() == 2 and ids_TK.shape[0] == T, "ids.shape", tuple(ids_TK.shape), f"[{T}, k]")
    check_arg(
        not ids_TK.is_floating_point() and ids_TK.dtype != torch.bool, "ids.dtype", ids_TK.dtype, "an integer dtype"
    )
    if weights_TK is not None:
        check_arg(weights_TK.shape == ids_TK.shape, "weights.shape", tuple(weights_TK.shape), f"{tuple(ids_TK.shape)}")
    if ids_TK.numel():
        # Reading the ids back is a host sync per call on CUDA, and a graph break under torch.compile: there the
        # range check is an asynchronous assert instead (CUDA: a device-side assert; a compiled CPU graph: a
        # RuntimeError). Eager CPU calls, and devices without _assert_async kernels, get the clear ZooValueError.
        dev = ids_TK.device.type
        if dev == "cuda" or (dev == "cpu" and torch.compiler.is_compiling()):
            in_range = ((ids_TK >= -1) & (ids_TK < E)).all()
            torch._assert_async(in_range, f"moe_ffn: ids out of range: expert ids must be in [0, {E}) or -1")
        else:
            lo, hi = int(ids_TK.min()), int(ids_TK.max())
            check_arg(lo >= -1 and hi < E, "ids", f"values in [{lo}, {hi}]", f"expert ids in [0, {E}) or -1")


def moe_ffn(
    x_TD: torch.Tensor,
    ids_TK: torch.Tensor,
    weights_TK: torch.Tensor | None,
    w1_EDF: torch.Tensor,
    w2_EFD: torch.Tensor,
    w3_EDF: torch.Tensor | None = None,
    activation: str = "gelu",
    backend: str = "auto",
) -> torch.Tensor:
    """Run the stacked expert FFN on routed tokens; see the module docstring for the contract.

    Shapes: ``x[T, D]``, ``ids[T, k]`` (int, −1 = empty slot), ``weights[T, k]``, ``w1[E, D, F]``,
    ``w2[E, F, D]``, ``w3[E, D, F]`` or None. Returns ``y[T, D]`` in ``x``'s dtype. Weights in another
    dtype are cast to ``x``'s (so bf16 activations can use fp32 master weights); matmuls accumulate in fp32, and
    in fp64 for fp64 inputs (``loop``, ``fused``, ``reference``; ``grouped`` and ``triton`` decline fp64).
    ``weights=None`` returns the unweighted per-slot outputs ``y[T, k, D]`` instead (zeros in empty slots), for
    losses on individual experts (expert-specific losses, PMOE); ``weighted_sum`` then gives the combination.

    Ids outside ``[-1, E)`` raise ZooValueError on the CPU. On an accelerator (and under ``torch.compile``) the
    check is a device-side assert, so that it costs no host sync: it aborts the CUDA context instead.
    """
    _validate(x_TD, ids_TK, weights_TK, w1_EDF, w2_EFD, w3_EDF, activation)
    dtype = x_TD.dtype
    w1_EDF, w2_EFD = w1_EDF.to(dtype), w2_EFD.to(dtype)
    w3_EDF = w3_EDF.to(dtype) if w3_EDF is not None else None
    ids_TK = ids_TK.long()
    if weights_TK is not None:
        weights_TK = weights_TK.masked_fill(ids_TK < 0, 0.0)  # an empty slot's weight is ignored, even inf/NaN
    if backend == "auto" and ids_TK.numel() and autotune.enabled() and not torch.compiler.is_compiling():
        chosen = _autotuned(x_TD, ids_TK, weights_TK, w1_EDF, w2_EFD, w3_EDF, activation)
    else:
        chosen = resolve_backend(backend, x_TD, w1_EDF, w3_EDF, ids_TK.shape[1])
    return chosen.fn(x_TD, ids_TK, weights_TK, w1_EDF, w2_EFD, w3_EDF, activation)


def _autotuned(x_TD, ids_TK, weights_TK, w1_EDF, w2_EFD, w3_EDF, activation) -> Backend:
    """``auto`` under autotuning: the bucket's cached choice, or time the candidates now and cache the winner."""
    train = autotune.training(x_TD, weights_TK, w1_EDF, w2_EFD, w3_EDF)
    key = autotune.bucket_key(x_TD, ids_TK.shape[1], w1_EDF, w3_EDF, train)
    tuned = _tuned(x_TD, ids_TK.shape[1], w1_EDF, w3_EDF, train)
    if tuned is not None:
        return tuned
    candidates = {}
    for name in backends():
        candidate = _BACKENDS[name]
        if candidate.priority is None:
            continue
        reason = _decline_reason(candidate, x_TD, w1_EDF, w3_EDF)
        if reason is None:
            candidates[name] = candidate.fn
        elif (name, reason) not in _logged_fallbacks:
            _logged_fallbacks.add((name, reason))
            level = logging.WARNING if reason.startswith(_COMPILE_FAILED) else logging.INFO
            log.log(level, "moe_ffn: backend %r declined (%s); not a candidate", name, reason)
    if not candidates:
        return _BACKENDS["reference"]
    args = (x_TD, ids_TK, weights_TK, w1_EDF, w2_EFD, w3_EDF, activation)
    return _BACKENDS[autotune.tune(key, candidates, args, train)]


register_backend("grouped", grouped_moe_ffn, lambda x, w1, w3: grouped_unsupported(x, w1, w3), priority=20)
register_backend("loop", loop_moe_ffn, priority=10)
register_backend("fused", fused_moe_ffn, fused_unsupported, priority=25, auto_when=fused_faster)
register_backend("reference", reference_moe_ffn, priority=None)
# below loop, so the static rule never reaches it (kernels/compiled.py says why); autotuning picks it where faster
register_backend("compiled", compiled_moe_ffn, compiled_unsupported, priority=3, prepare=compiled_prepare)

# Triton: imports neither triton nor its kernels here (only on first use), so this works without triton or a GPU.
from .triton import TRITON_PRIORITY, triton_moe_ffn, triton_prepare, triton_unsupported  # noqa: E402

register_backend("triton", triton_moe_ffn, triton_unsupported, priority=TRITON_PRIORITY, prepare=triton_prepare)
