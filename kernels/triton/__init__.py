"""The ``triton`` backend of ``moe_ffn``: fused gather → grouped GEMM → scatter, and a deterministic combine.

Layout (docs/kernels.md, "The Triton backend"): ``kernels.py`` holds the Triton kernels, ``ops.py`` their thin
launchers as ``torch.library.custom_op``s with fake implementations (``torch.compile`` traces them), ``routing.py``
the device-side sort and block map (no host syncs), ``moe.py`` one autograd ``Function`` per projection whose
backward reuses the forward's sort.

This module itself imports neither triton nor the kernels, so ``import zoo.kernels`` stays cheap and works
without triton or a GPU: ``triton_unsupported`` answers from the tensors' device and dtype first, and triton is
imported on the first call that can use it.

Devices: CUDA. CPU tensors only under the Triton interpreter, for tests: ``TRITON_INTERPRET=1`` must be set before
the kernels are jitted (before ``zoo.kernels.triton.kernels`` is first imported) and while ``moe_ffn`` runs.
Under the interpreter every kernel runs in Python, orders of magnitude slower, so the backend's ``auto``
priority then drops below ``loop`` (it stays available by name); otherwise it ranks above ``grouped``.
"""

from __future__ import annotations

import os
import sys

import torch

__all__ = ["TRITON_PRIORITY", "interpreter_requested", "triton_moe_ffn", "triton_prepare", "triton_unsupported"]

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreter_requested() -> bool:
    """Whether ``TRITON_INTERPRET`` is set to a true value now (triton's own spelling of booleans)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


#: ``auto`` priority: above ``grouped`` (20) normally; below ``loop`` (10) when the kernels would be interpreted.
TRITON_PRIORITY = 5 if interpreter_requested() else 30


def _kernels_interpreted() -> bool | None:
    """How the kernels were jitted (True: interpreter), or None if they are not loaded yet."""
    mod = sys.modules.get(f"{__name__}.kernels")
    return None if mod is None else bool(getattr(mod, "INTERPRETED", False))


_UNCHECKED = object()
_import_error: object = _UNCHECKED


def _triton_import_error() -> str | None:
    """Why triton cannot be used, or None; checked once. A module global rather than ``functools.cache``: under
    ``torch.compile`` the check is then a plain read (dynamo traces through cache wrappers and warns)."""
    global _import_error
    if _import_error is _UNCHECKED:
        _import_error = _check_triton_import()
    return _import_error  # type: ignore[return-value]


def _check_triton_import() -> str | None:
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception as err:  # not installed, or a broken install (missing libs, wrong numpy)
        return f"triton is not importable ({type(err).__name__}: {err})"
    major, minor = (int(p) for p in triton.__version__.split(".")[:2])
    if (major, minor) < (3, 6):
        return f"triton {triton.__version__} is older than 3.6"
    return None


def triton_unsupported(x_TD: torch.Tensor, w1_EDF: torch.Tensor, w3_EDF: torch.Tensor | None) -> str | None:
    """Why the ``triton`` backend cannot run these inputs, or None if it can."""
    dev = x_TD.device
    if dev.type == "cpu":
        if not interpreter_requested():
            return ("tensors on cpu: the Triton kernels need CUDA (TRITON_INTERPRET=1, set before triton loads, "
                    "runs them on the CPU in the interpreter, for tests)")
        # Not while torch.compile traces: the traced call itself imports the kernels on first use, and a guard on
        # sys.modules would then fail on the frame that created it. (A misconfiguration check only.)
        if not torch.compiler.is_compiling() and _kernels_interpreted() is False:
            return "TRITON_INTERPRET=1 was set after the Triton kernels had been compiled for the GPU"
    elif dev.type != "cuda":
        return f"tensors on {dev.type}: the Triton kernels need CUDA"
    for name, w in (("w1", w1_EDF), ("w3", w3_EDF)):
        if w is not None and w.device != dev:
            return f"{name} on {w.device}, x on {dev}"
    if x_TD.dtype not in DTYPES:
        return f"dtype {x_TD.dtype} (the Triton kernels take float32, float16 or bfloat16)"
    reason = _triton_import_error()
    if reason is not None:
        return reason
    if dev.type == "cuda" and x_TD.dtype == torch.bfloat16 and torch.cuda.get_device_capability(dev) < (8, 0):
        return f"bfloat16 needs compute capability 8.0, {torch.cuda.get_device_name(dev)} has less"
    return None


def triton_prepare(x_TD: torch.Tensor, w1_EDF: torch.Tensor, w3_EDF: torch.Tensor | None) -> None:
    """The compile step: import the kernels and, on CUDA, jit them with one tiny forward + backward in ``x``'s
    dtype (tiles as wide as on real shapes), so that a kernel that does not build on this GPU or toolchain fails
    here, once, and ``auto`` moves on, rather than in the middle of a training step. Under the interpreter
    there is nothing to compile, only the import."""
    from .moe import moe_ffn_triton

    if x_TD.device.type != "cuda":
        return
    dev, dtype = x_TD.device, x_TD.dtype
    T, D, F_, E, k = 16, 256, 256, 2, 2
    gen = torch.Generator(device=dev).manual_seed(0)  # the caller's random stream stays untouched

    def leaf(*size: int) -> torch.Tensor:
        return (torch.randn(*size, device=dev, generator=gen) / size[-2] ** 0.5).to(dtype).requires_grad_()

    x, weights = leaf(T, D), leaf(T, k)
    w1, w2, w3 = leaf(E, D, F_), leaf(E, F_, D), leaf(E, D, F_) if w3_EDF is not None else None
    ids = torch.arange(T * k, device=dev).remainder(E).view(T, k)
    with torch.enable_grad():
        y = moe_ffn_triton(x, ids, weights, w1, w2, w3, "swiglu" if w3 is not None else "gelu")
        y.backward(torch.ones_like(y))
    torch.cuda.synchronize(dev)


def triton_moe_ffn(
    x_TD: torch.Tensor,
    ids_TK: torch.Tensor,
    weights_TK: torch.Tensor | None,
    w1_EDF: torch.Tensor,
    w2_EFD: torch.Tensor,
    w3_EDF: torch.Tensor | None,
    activation: str,
) -> torch.Tensor:
    """The registered backend function; imports triton and jits the kernels on first use."""
    from .moe import moe_ffn_triton

    return moe_ffn_triton(x_TD, ids_TK, weights_TK, w1_EDF, w2_EFD, w3_EDF, activation)
