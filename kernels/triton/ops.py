"""Thin launchers for the Triton kernels, each a ``torch.library.custom_op`` with a fake (meta) implementation.

The fake implementations only compute output shapes, so ``torch.compile`` traces through the ops without
running them. Block sizes are plain arguments (no autotuning: it does not work under the CPU interpreter, and
fixed tiles keep results independent of the batch size). Every output is freshly allocated; rows that no
program writes (empty slots, the unused tail of a grouped buffer) are zeros.

Importing this module imports triton (see ``zoo.kernels.triton`` for the lazy entry points).
"""

import contextlib
import functools
from typing import Optional

import torch
import triton

from . import kernels as K

Tensor = torch.Tensor

#: custom-op namespace of this package
NS = "moe_zoo"


@functools.cache
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def _device_guard(t: Tensor):
    """Launch on ``t``'s GPU. Under the interpreter, run numpy's BLAS on one thread instead: its small tile
    matmuls otherwise fight torch's OpenMP threads for the cores (measured 10 ms instead of 0.06 ms per
    ``tl.dot`` on 2 cores, 250× slower)."""
    if t.device.type == "cuda" and not K.INTERPRETED:
        return torch.cuda.device(t.device)
    ctl = _blas_controller() if K.INTERPRETED else None
    return ctl.limit(limits=1, user_api="blas") if ctl is not None else contextlib.nullcontext()


def _precision(dtype: torch.dtype) -> str:
    """``ieee`` fp32 products unless TF32 is allowed for matmuls (docs/kernels.md tests fp32 with TF32 off)."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    if dtype == torch.bfloat16 and K.INTERPRETED:
        return "ieee"  # upcast tiles: the interpreter's bf16 arithmetic is wrong
    return "tf32"


def _upcast(dtype: torch.dtype) -> bool:
    return K.INTERPRETED and dtype == torch.bfloat16


def _fit(block: int, n: int) -> int:
    """A tile no wider than the dimension needs (at least 16, tl.dot's minimum): depends on D/F, never on T."""
    return min(block, max(16, triton.next_power_of_2(n)))


def _strides(t: Optional[Tensor], n: int) -> tuple[int, ...]:
    return tuple(t.stride()) if t is not None else (0,) * n


def _launch_scatter_mm(a, w, a2, w2, a_rows, out_rows, blk_expert, blk_start, expert_end, out, out2,
                       block_m, block_n, block_k, mode):
    E, K_, N = w.shape
    block_n, block_k = _fit(block_n, N), _fit(block_k, K_)
    grid = (blk_expert.shape[0], triton.cdiv(N, block_n))
    if grid[0] == 0 or grid[1] == 0:
        return
    with _device_guard(a):
        K.scatter_mm_kernel[grid](
            a, *a.stride(), a_rows if a_rows is not None else blk_expert,
            w, *w.stride(),
            a2 if a2 is not None else a, *_strides(a2, 2),
            w2 if w2 is not None else w, *_strides(w2, 3),
            out, *out.stride(), out_rows if out_rows is not None else blk_expert,
            out2 if out2 is not None else out, *_strides(out2, 2),
            blk_expert, blk_start, expert_end,
            K_, N, E,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
            GATHER_A=a_rows is not None, SCATTER_OUT=out_rows is not None, MODE=mode,
            PRECISION=_precision(a.dtype), UPCAST=_upcast(a.dtype),
            num_warps=4, num_stages=3 if a.element_size() < 4 else 2,
        )


@torch.library.custom_op(f"{NS}::triton_scatter_mm", mutates_args=())
def scatter_mm(
    a: Tensor, w: Tensor, a2: Optional[Tensor], w2: Optional[Tensor],
    a_rows: Optional[Tensor], out_rows: Optional[Tensor],
    blk_expert: Tensor, blk_start: Tensor, expert_end: Tensor,
    num_out_rows: int, out_dtype: torch.dtype, block_m: int, block_n: int, block_k: int,
) -> Tensor:
    """``out[o(p)] = A[a(p)] @ W[e(p)] (+ A2[a(p)] @ W2[e(p)])`` over the sorted rows ``p`` of each block.

    ``a(p) = a_rows[p]`` (gather) or ``p``; ``o(p) = out_rows[p]`` (scatter) or ``p``. ``w``, ``w2``: ``[E, K, N]``
    (any strides, so a transposed ``[E, N, K]`` weight is passed as a view). Returns ``[num_out_rows, N]``.
    """
    out = torch.zeros(num_out_rows, w.shape[2], device=a.device, dtype=out_dtype)
    mode = K.MODE_SUM2 if a2 is not None else K.MODE_SINGLE
    _launch_scatter_mm(a, w, a2, w2, a_rows, out_rows, blk_expert, blk_start, expert_end, out, None,
                       block_m, block_n, block_k, mode)
    return out


@scatter_mm.register_fake
def _(a, w, a2, w2, a_rows, out_rows, blk_expert, blk_start, expert_end, num_out_rows, out_dtype,
      block_m, block_n, block_k):
    return a.new_empty(num_out_rows, w.shape[2], dtype=out_dtype)


@torch.library.custom_op(f"{NS}::triton_scatter_mm_dual", mutates_args=())
def scatter_mm_dual(
    a: Tensor, w: Tensor, w2: Tensor, a_rows: Optional[Tensor], out_rows: Optional[Tensor],
    blk_expert: Tensor, blk_start: Tensor, expert_end: Tensor,
    num_out_rows: int, out_dtype: torch.dtype, block_m: int, block_n: int, block_k: int,
) -> tuple[Tensor, Tensor]:
    """``(A[a(p)] @ W[e(p)], A[a(p)] @ W2[e(p)])``: the gated pair of projections, sharing each loaded A tile."""
    out = torch.zeros(num_out_rows, w.shape[2], device=a.device, dtype=out_dtype)
    out2 = torch.zeros_like(out)
    _launch_scatter_mm(a, w, None, w2, a_rows, out_rows, blk_expert, blk_start, expert_end, out, out2,
                       block_m, block_n, block_k, K.MODE_DUAL)
    return out, out2


@scatter_mm_dual.register_fake
def _(a, w, w2, a_rows, out_rows, blk_expert, blk_start, expert_end, num_out_rows, out_dtype,
      block_m, block_n, block_k):
    out = a.new_empty(num_out_rows, w.shape[2], dtype=out_dtype)
    return out, torch.empty_like(out)


def _launch_expert_dw(a, g, g2, a_rows, g_rows, expert_start, expert_end, dw, dw2, block_m, block_k, block_n):
    E, K_, N = dw.shape
    block_k, block_n = _fit(block_k, K_), _fit(block_n, N)
    grid = (E, triton.cdiv(K_, block_k), triton.cdiv(N, block_n))
    if 0 in grid:
        return
    with _device_guard(a):
        K.expert_dw_kernel[grid](
            a, *a.stride(), a_rows if a_rows is not None else expert_start,
            g, *g.stride(), g_rows if g_rows is not None else expert_start,
            g2 if g2 is not None else g, *_strides(g2, 2),
            dw, *dw.stride(),
            dw2 if dw2 is not None else dw, *_strides(dw2, 3),
            expert_start, expert_end,
            K_, N,
            BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_N=block_n,
            GATHER_A=a_rows is not None, GATHER_G=g_rows is not None, DUAL=g2 is not None,
            PRECISION=_precision(a.dtype), UPCAST=_upcast(a.dtype),
            num_warps=4, num_stages=3 if a.element_size() < 4 else 2,
        )


@torch.library.custom_op(f"{NS}::triton_expert_dw", mutates_args=())
def expert_dw(
    a: Tensor, g: Tensor, a_rows: Optional[Tensor], g_rows: Optional[Tensor],
    expert_start: Tensor, expert_end: Tensor, out_dtype: torch.dtype,
    block_m: int, block_k: int, block_n: int,
) -> Tensor:
    """``dW[e] = Σ_{p in expert e's rows} A[a(p)]ᵀ G[g(p)]``, ``[E, K, N]``; zeros for experts without rows."""
    dw = torch.empty(expert_start.shape[0], a.shape[1], g.shape[1], device=a.device, dtype=out_dtype)
    _launch_expert_dw(a, g, None, a_rows, g_rows, expert_start, expert_end, dw, None, block_m, block_k, block_n)
    return dw


@expert_dw.register_fake
def _(a, g, a_rows, g_rows, expert_start, expert_end, out_dtype, block_m, block_k, block_n):
    return a.new_empty(expert_start.shape[0], a.shape[1], g.shape[1], dtype=out_dtype)


@torch.library.custom_op(f"{NS}::triton_expert_dw_dual", mutates_args=())
def expert_dw_dual(
    a: Tensor, g: Tensor, g2: Tensor, a_rows: Optional[Tensor], g_rows: Optional[Tensor],
    expert_start: Tensor, expert_end: Tensor, out_dtype: torch.dtype,
    block_m: int, block_k: int, block_n: int,
) -> tuple[Tensor, Tensor]:
    """``expert_dw`` for two gradients that share ``A`` (dW1 and dW3 of a gated projection)."""
    dw = torch.empty(expert_start.shape[0], a.shape[1], g.shape[1], device=a.device, dtype=out_dtype)
    dw2 = torch.empty_like(dw)
    _launch_expert_dw(a, g, g2, a_rows, g_rows, expert_start, expert_end, dw, dw2, block_m, block_k, block_n)
    return dw, dw2


@expert_dw_dual.register_fake
def _(a, g, g2, a_rows, g_rows, expert_start, expert_end, out_dtype, block_m, block_k, block_n):
    dw = a.new_empty(expert_start.shape[0], a.shape[1], g.shape[1], dtype=out_dtype)
    return dw, torch.empty_like(dw)


def _k_pad(k: int) -> int:
    return triton.next_power_of_2(max(k, 1))


def _combine_tiles(block_t: int, block_d: int, k: int, D: int) -> tuple[int, int]:
    """Combine tiles ``[BLOCK_T, K_PAD, BLOCK_D]``; on the GPU at most 4096 elements, so large k does not spill
    registers (depends on k and D, never on T)."""
    block_d = _fit(block_d, D)
    if not K.INTERPRETED:
        kp = _k_pad(k)
        while block_t * kp * block_d > 4096 and block_d > 32:
            block_d //= 2
        while block_t * kp * block_d > 4096 and block_t > 1:
            block_t //= 2
    return block_t, block_d


@torch.library.custom_op(f"{NS}::triton_combine", mutates_args=())
def combine(
    y_SD: Tensor, weights_TK: Tensor, ids_TK: Tensor, out_dtype: torch.dtype, block_t: int, block_d: int
) -> Tensor:
    """``out[t] = Σ_s weights[t, s] · y[t·k + s]`` over slots with ``ids ≥ 0``, in fp32; ``[T, D]``."""
    T, k = ids_TK.shape
    D = y_SD.shape[1]
    out = torch.empty(T, D, device=y_SD.device, dtype=out_dtype)
    block_t, block_d = _combine_tiles(block_t, block_d, k, D)
    grid = (triton.cdiv(T, block_t), triton.cdiv(D, block_d))
    if 0 in grid:
        return out.zero_()
    with _device_guard(y_SD):
        K.combine_kernel[grid](
            y_SD, *y_SD.stride(), weights_TK, *weights_TK.stride(), ids_TK, *ids_TK.stride(),
            out, *out.stride(), T, k, D, BLOCK_T=block_t, K_PAD=_k_pad(k), BLOCK_D=block_d, num_warps=4,
        )
    return out


@combine.register_fake
def _(y_SD, weights_TK, ids_TK, out_dtype, block_t, block_d):
    return y_SD.new_empty(ids_TK.shape[0], y_SD.shape[1], dtype=out_dtype)


@torch.library.custom_op(f"{NS}::triton_combine_bwd", mutates_args=())
def combine_bwd(
    grad_TD: Tensor, y_SD: Tensor, weights_TK: Tensor, ids_TK: Tensor, block_t: int, block_d: int
) -> tuple[Tensor, Tensor]:
    """Gradients of ``combine``: ``dy[t·k + s] = weights[t, s] · grad[t]`` (``y``'s dtype, 0 in empty slots) and
    ``dweights[t, s] = <grad[t], y[t·k + s]>`` (``weights``' dtype)."""
    T, k = ids_TK.shape
    D = y_SD.shape[1]
    dy = torch.empty_like(y_SD, memory_format=torch.contiguous_format)
    dw = torch.empty(T, k, device=y_SD.device, dtype=weights_TK.dtype)
    if T == 0 or k == 0:
        return dy.zero_(), dw.zero_()
    block_t, block_d = _combine_tiles(block_t, block_d, k, D)
    with _device_guard(y_SD):
        K.combine_bwd_kernel[(triton.cdiv(T, block_t),)](
            grad_TD, *grad_TD.stride(), y_SD, *y_SD.stride(), weights_TK, *weights_TK.stride(),
            ids_TK, *ids_TK.stride(), dy, *dy.stride(), dw,
            T, k, D, BLOCK_T=block_t, K_PAD=_k_pad(k), BLOCK_D=block_d, num_warps=4,
        )
    return dy, dw


@combine_bwd.register_fake
def _(grad_TD, y_SD, weights_TK, ids_TK, block_t, block_d):
    T, k = ids_TK.shape
    return y_SD.new_empty(y_SD.shape), weights_TK.new_empty(T, k)
