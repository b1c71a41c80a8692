"""The Triton kernels of the ``triton`` backend. Importing this module imports triton and jits the kernels.

Rows are the ``S = T·k`` slots sorted by expert (see ``routing.py``). Three kernels do all the GEMM work:

* ``scatter_mm_kernel``: ``out[o(p)] = A[a(p)] @ W[e(p)]`` for every sorted row ``p``, one program per
  (row block, column block). ``a(p)`` gathers input rows through an index (tokens, or slots) or reads the grouped
  row ``p``; ``o(p)`` scatters output rows to their slot or writes the grouped row ``p``. A program's rows all
  belong to one expert (the block-to-expert map), so it streams one weight matrix. Two modes fuse the gated
  projections: ``DUAL`` (one A, two weights, two outputs: ``x·w1`` and ``x·w3``) and ``SUM2`` (two A's, two
  weights, one output: ``dh·w1ᵀ + dg·w3ᵀ``).
* ``expert_dw_kernel``: ``dW[e] = A_eᵀ @ G_e`` over expert ``e``'s row range, one program per (expert, K block,
  N block), rows visited in a fixed order (deterministic, no split-K atomics). An expert without rows stores
  zeros.
* ``combine_kernel`` / ``combine_bwd_kernel``: the weighted sum over the ``(T, k, D)`` slot view, one program
  per block of tokens (and columns), the k slots reduced in registers: deterministic, no atomics.

All products accumulate in fp32. ``UPCAST`` converts loaded tiles to fp32 before arithmetic: the CPU interpreter
computes bf16 wrongly (docs/kernels.md, "The Triton interpreter"), so the launchers set it there for bf16.
"""

from __future__ import annotations

import triton
import triton.language as tl

# SCATTER_MM modes
MODE_SINGLE: tl.constexpr = tl.constexpr(0)
MODE_DUAL: tl.constexpr = tl.constexpr(1)  # out = A·W, out2 = A·W2
MODE_SUM2: tl.constexpr = tl.constexpr(2)  # out = A·W + A2·W2

@triton.jit
def _load_tile(ptr, rows, cols, stride_r, stride_c, mask_r, mask_c, UPCAST: tl.constexpr):
    tile = tl.load(ptr + rows[:, None] * stride_r + cols[None, :] * stride_c,
                   mask=mask_r[:, None] & mask_c[None, :], other=0.0)
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def scatter_mm_kernel(
    a_ptr, stride_am, stride_ak, a_rows_ptr,
    w_ptr, stride_we, stride_wk, stride_wn,
    a2_ptr, stride_a2m, stride_a2k,
    w2_ptr, stride_w2e, stride_w2k, stride_w2n,
    out_ptr, stride_om, stride_on, out_rows_ptr,
    out2_ptr, stride_o2m, stride_o2n,
    blk_expert_ptr, blk_start_ptr, expert_end_ptr,
    K, N, num_experts,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GATHER_A: tl.constexpr, SCATTER_OUT: tl.constexpr, MODE: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(blk_expert_ptr + pid_m)
    if e >= num_experts:  # an unused block of the static grid
        return
    start = tl.load(blk_start_ptr + pid_m)
    end = tl.load(expert_end_ptr + e)
    rows = start + tl.arange(0, BLOCK_M)
    row_mask = rows < end
    if GATHER_A:
        a_rows = tl.load(a_rows_ptr + rows, mask=row_mask, other=0).to(tl.int64)
    else:
        a_rows = rows.to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    e64 = e.to(tl.int64)
    w_base = w_ptr + e64 * stride_we
    w2_base = w2_ptr + e64 * stride_w2e

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        a = _load_tile(a_ptr, a_rows, ks, stride_am, stride_ak, row_mask, k_mask, UPCAST)
        w = _load_tile(w_base, ks, cols, stride_wk, stride_wn, k_mask, col_mask, UPCAST)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
        if MODE == MODE_DUAL:
            w2 = _load_tile(w2_base, ks, cols, stride_w2k, stride_w2n, k_mask, col_mask, UPCAST)
            acc2 = tl.dot(a, w2, acc2, input_precision=PRECISION)
        if MODE == MODE_SUM2:
            a2 = _load_tile(a2_ptr, a_rows, ks, stride_a2m, stride_a2k, row_mask, k_mask, UPCAST)
            w2 = _load_tile(w2_base, ks, cols, stride_w2k, stride_w2n, k_mask, col_mask, UPCAST)
            acc = tl.dot(a2, w2, acc, input_precision=PRECISION)

    if SCATTER_OUT:
        o_rows = tl.load(out_rows_ptr + rows, mask=row_mask, other=0).to(tl.int64)
    else:
        o_rows = rows.to(tl.int64)
    out_mask = row_mask[:, None] & col_mask[None, :]
    tl.store(out_ptr + o_rows[:, None] * stride_om + cols[None, :] * stride_on,
             acc.to(out_ptr.dtype.element_ty), mask=out_mask)
    if MODE == MODE_DUAL:
        tl.store(out2_ptr + o_rows[:, None] * stride_o2m + cols[None, :] * stride_o2n,
                 acc2.to(out2_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def expert_dw_kernel(
    a_ptr, stride_am, stride_ak, a_rows_ptr,
    g_ptr, stride_gm, stride_gn, g_rows_ptr,
    g2_ptr, stride_g2m, stride_g2n,
    dw_ptr, stride_de, stride_dk, stride_dn,
    dw2_ptr, stride_d2e, stride_d2k, stride_d2n,
    expert_start_ptr, expert_end_ptr,
    K, N,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
    GATHER_A: tl.constexpr, GATHER_G: tl.constexpr, DUAL: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    e = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_n = tl.program_id(2)
    start = tl.load(expert_start_ptr + e)
    end = tl.load(expert_end_ptr + e)
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    k_mask = ks < K
    ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = ns < N
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    for m0 in range(start, end, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_mask = rows < end
        if GATHER_A:
            a_rows = tl.load(a_rows_ptr + rows, mask=row_mask, other=0).to(tl.int64)
        else:
            a_rows = rows.to(tl.int64)
        if GATHER_G:
            g_rows = tl.load(g_rows_ptr + rows, mask=row_mask, other=0).to(tl.int64)
        else:
            g_rows = rows.to(tl.int64)
        a_t = _load_tile(a_ptr, ks, a_rows, stride_ak, stride_am, k_mask, row_mask, UPCAST)  # [BLOCK_K, BLOCK_M]
        g = _load_tile(g_ptr, g_rows, ns, stride_gm, stride_gn, row_mask, n_mask, UPCAST)
        acc = tl.dot(a_t, g, acc, input_precision=PRECISION)
        if DUAL:
            g2 = _load_tile(g2_ptr, g_rows, ns, stride_g2m, stride_g2n, row_mask, n_mask, UPCAST)
            acc2 = tl.dot(a_t, g2, acc2, input_precision=PRECISION)
    out_mask = k_mask[:, None] & n_mask[None, :]
    e64 = e.to(tl.int64)
    tl.store(dw_ptr + e64 * stride_de + ks[:, None] * stride_dk + ns[None, :] * stride_dn,
             acc.to(dw_ptr.dtype.element_ty), mask=out_mask)
    if DUAL:
        tl.store(dw2_ptr + e64 * stride_d2e + ks[:, None] * stride_d2k + ns[None, :] * stride_d2n,
                 acc2.to(dw2_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def combine_kernel(
    y_ptr, stride_ym, stride_yd,
    w_ptr, stride_wt, stride_ws,
    ids_ptr, stride_it, stride_is,
    out_ptr, stride_ot, stride_od,
    T, k, D,
    BLOCK_T: tl.constexpr, K_PAD: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """``out[t] = Σ_s w[t, s] · y[t·k + s]`` over the slots with an expert (ids ≥ 0); one program per
    (BLOCK_T tokens, BLOCK_D columns), the k slots reduced in registers."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_mask = t < T
    t = t.to(tl.int64)
    s = tl.arange(0, K_PAD)
    ts_mask = t_mask[:, None] & (s < k)[None, :]
    ids = tl.load(ids_ptr + t[:, None] * stride_it + s[None, :] * stride_is, mask=ts_mask, other=-1)
    valid = ids >= 0  # [BLOCK_T, K_PAD]
    w = tl.load(w_ptr + t[:, None] * stride_wt + s[None, :] * stride_ws, mask=valid, other=0.0).to(tl.float32)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = d < D
    slot = t[:, None] * k + s[None, :]
    y = tl.load(y_ptr + slot[:, :, None] * stride_ym + d[None, None, :] * stride_yd,
                mask=valid[:, :, None] & d_mask[None, None, :], other=0.0).to(tl.float32)
    out = tl.sum(w[:, :, None] * y, axis=1)
    tl.store(out_ptr + t[:, None] * stride_ot + d[None, :] * stride_od, out.to(out_ptr.dtype.element_ty),
             mask=t_mask[:, None] & d_mask[None, :])


@triton.jit
def combine_bwd_kernel(
    g_ptr, stride_gt, stride_gd,
    y_ptr, stride_ym, stride_yd,
    w_ptr, stride_wt, stride_ws,
    ids_ptr, stride_it, stride_is,
    dy_ptr, stride_dym, stride_dyd,
    dw_ptr,
    T, k, D,
    BLOCK_T: tl.constexpr, K_PAD: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """``dy[t·k + s] = w[t, s] · g[t]`` (0 in empty slots) and ``dw[t, s] = <g[t], y[t·k + s]>``; one program per
    BLOCK_T tokens, ``dw`` (contiguous ``[T, k]``) reduced over the D blocks in a fixed order."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_mask = t < T
    t = t.to(tl.int64)
    s = tl.arange(0, K_PAD)
    ts_mask = t_mask[:, None] & (s < k)[None, :]
    ids = tl.load(ids_ptr + t[:, None] * stride_it + s[None, :] * stride_is, mask=ts_mask, other=-1)
    valid = ids >= 0
    w = tl.load(w_ptr + t[:, None] * stride_wt + s[None, :] * stride_ws, mask=valid, other=0.0).to(tl.float32)
    slot = t[:, None] * k + s[None, :]
    dw = tl.zeros((BLOCK_T, K_PAD), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_mask = d < D
        g = tl.load(g_ptr + t[:, None] * stride_gt + d[None, :] * stride_gd,
                    mask=t_mask[:, None] & d_mask[None, :], other=0.0).to(tl.float32)
        y = tl.load(y_ptr + slot[:, :, None] * stride_ym + d[None, None, :] * stride_yd,
                    mask=valid[:, :, None] & d_mask[None, None, :], other=0.0).to(tl.float32)
        dy = w[:, :, None] * g[:, None, :]
        tl.store(dy_ptr + slot[:, :, None] * stride_dym + d[None, None, :] * stride_dyd,
                 dy.to(dy_ptr.dtype.element_ty), mask=ts_mask[:, :, None] & d_mask[None, None, :])
        dw += tl.sum(y * g[:, None, :], axis=2)
    tl.store(dw_ptr + slot, dw.to(dw_ptr.dtype.element_ty), mask=ts_mask)


#: Whether the kernels above were jitted for the CPU interpreter (TRITON_INTERPRET was set when this module loaded).
INTERPRETED = type(scatter_mm_kernel).__name__ == "InterpretedFunction"
