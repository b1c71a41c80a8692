"""The CPU fast path: one pass per expert, gather → GEMMs → weighted scatter-add, with a hand-written backward.

``grouped`` runs each stage over all ``N = T·k`` routed rows before the next one starts: it materialises the
gathered ``[N, D]`` input, the ``[T·k, D]`` scattered output and the autograd graph of every step, so in the
fine-grained regime (E=64, F=128) about half of its time is memory traffic around GEMMs that are themselves
near the dense ideal. Here each expert's rows go through the whole chain while they are in cache:

* forward: gather the expert's tokens, ``h = x·w1`` (``g = x·w3``), scale the activation ``act(h[, g])`` by the
  routing weights (F-wide, cheaper than scaling the D-wide output when F < D), ``·w2``, and ``index_add`` into
  an fp32 ``[T, D]`` accumulator (no ``[T·k, D]`` buffer, no combine pass);
* backward (an ``autograd.Function``, one Python loop, no graph): reuses the forward's sort, recomputes the
  activation from the saved pre-activations, gathers the output gradient per expert and writes ``dW`` straight
  into each expert's slice. The routing-weight gradient needs no saved output: with ``y = (w·a)·w2``,
  ``dL/dw = (dy·w2ᵀ)·a``, a row-wise dot product of two F-wide tensors the backward computes anyway.

Saved for backward: only the pre-activations ``[N, F]`` (two of them when gated); the gathered input is
re-gathered instead of kept. On the kernel board this is the smallest dispatch memory of all backends (23 MB
against 161 MB for ``grouped`` at T4096 D256 F128 E64 k8, fp32). Accumulation over the k slots of a token is
fp32 (fp64 for fp64 inputs, which are then exact to fp64 rounding), and deterministic: experts are visited in a fixed order and the CPU ``index_add_`` is
sequential per row.

CPU tensors only (``.tolist()`` of the expert counts is free there, a host sync on a GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .activations import apply_activation
from .dispatch import accumulation_dtype, sort_slots

_aten = torch.ops.aten


def fused_unsupported(x_TD: torch.Tensor, w1_EDF: torch.Tensor, w3_EDF: torch.Tensor | None) -> str | None:
    """Why ``fused`` cannot run these inputs, or None if it can."""
    if x_TD.device.type != "cpu":
        return f"tensors on {x_TD.device.type}: the fused loop is the CPU path (it reads expert counts on the host)"
    return None


def fused_faster(x_TD: torch.Tensor, w1_EDF: torch.Tensor, w3_EDF: torch.Tensor | None) -> bool:
    """Where ``auto`` prefers ``fused`` to ``grouped``/``loop``, as measured on the kernel board
    (leaderboards/kernels.md, 2-core AVX-512 CPU): large batches (T ≥ 4096) of fine-grained experts (E ≥ 32).
    float32: forward and training (0.8 of the dense ideal against ~0.55 for grouped at E=64 k8, forward +
    backward). bfloat16: inference (forward only: ~2× grouped at E=64 k8), and training only with very small
    experts (F ≤ 64); otherwise its per-expert bf16 GEMMs in the backward cost what it saves.

    The gain comes from never allocating the ``[T·k, D]`` buffers that ``grouped`` builds: from 32 MiB on, glibc
    serves each one with fresh pages, and their page faults cost as much as the GEMMs. At T ≤ 2048 fused is no
    faster, and at T ≤ 256 its per-expert Python loop makes it slower."""
    E, F_ = w1_EDF.shape[0], w1_EDF.shape[2]
    if x_TD.shape[0] < 4096 or E < 32:
        return False
    if x_TD.dtype != torch.bfloat16:
        return True
    training = torch.is_grad_enabled() and (x_TD.requires_grad or w1_EDF.requires_grad)
    return F_ <= 64 or not training


def _activation_backward(
    da_nF: torch.Tensor, h_nF: torch.Tensor, activation: str, g_nF: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients of ``apply_activation(h, activation, g)`` w.r.t. ``h`` (and ``g`` when gated)."""
    if activation == "gelu":
        return _aten.gelu_backward(da_nF, h_nF), None
    if activation == "silu":
        return _aten.silu_backward(da_nF, h_nF), None
    if activation == "relu":
        return da_nF.masked_fill(h_nF <= 0, 0.0), None
    assert activation == "swiglu" and g_nF is not None
    return _aten.silu_backward(da_nF * g_nF, h_nF), da_nF * F.silu(h_nF)


class _FusedMoEFFN(torch.autograd.Function):
    """``y = Σ_s w[t, s] · FFN_{ids[t, s]}(x[t])`` (or the unweighted per-slot outputs) with a per-expert pass."""

    @staticmethod
    def forward(ctx, x_TD, weights_TK, w1_EDF, w2_EFD, w3_EDF, ids_TK, activation):  # type: ignore[override]
        T, D = x_TD.shape
        E, k = w1_EDF.shape[0], ids_TK.shape[1]
        slots = sort_slots(ids_TK, E)
        counts = slots.counts_E.tolist()
        weighted = weights_TK is not None
        # the destination row of each sorted slot: its token (weighted sum) or the slot itself (per-slot output)
        dest_N = slots.token_idx_N if weighted else slots.slot_idx_N
        w_N = weights_TK.reshape(-1).index_select(0, slots.slot_idx_N) if weighted else None
        acc = accumulation_dtype(x_TD.dtype)
        out = x_TD.new_zeros((T, D) if weighted else (T * k, D), dtype=acc if weighted else x_TD.dtype)
        h_NF = x_TD.new_empty(slots.num_rows, w1_EDF.shape[2])
        g_NF = torch.empty_like(h_NF) if w3_EDF is not None else None
        chunks = _per_expert(counts, slots.token_idx_N, dest_N, h_NF, g_NF, w_N)
        for e, (tok_n, dest_n, h_nF, g_nF, w_n) in chunks:
            x_nD = x_TD.index_select(0, tok_n)
            torch.mm(x_nD, w1_EDF[e], out=h_nF)
            if g_nF is not None:
                torch.mm(x_nD, w3_EDF[e], out=g_nF)
            a_nF = apply_activation(h_nF, activation, g_nF)
            if w_n is None:
                out.index_copy_(0, dest_n, a_nF @ w2_EFD[e])
            else:
                # weighting the F-wide activation costs less than the D-wide output when F < D
                y_nD = a_nF.mul_(w_n[:, None]) @ w2_EFD[e]
                out.index_add_(0, dest_n, y_nD.to(acc))
        ctx.save_for_backward(x_TD, w1_EDF, w2_EFD, w3_EDF, weights_TK, h_NF, g_NF, w_N, slots.token_idx_N, dest_N)
        ctx.counts, ctx.slot_idx_N, ctx.activation = counts, slots.slot_idx_N, activation
        return out.to(x_TD.dtype) if weighted else out.view(T, k, D)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x_TD, w1_EDF, w2_EFD, w3_EDF, weights_TK, h_NF, g_NF, w_N, token_idx_N, dest_N = ctx.saved_tensors
        counts, activation = ctx.counts, ctx.activation
        need_x, need_w, need_w1, need_w2, need_w3 = ctx.needs_input_grad[:5]
        dtype = x_TD.dtype
        acc = accumulation_dtype(dtype)
        grad_RD = grad_out.reshape(-1, x_TD.shape[1]).to(dtype)
        dx_TD = torch.zeros(x_TD.shape, dtype=acc) if need_x else None
        dw_N = torch.empty(token_idx_N.shape[0], dtype=acc) if w_N is not None and need_w else None
        dw1 = torch.zeros_like(w1_EDF) if need_w1 else None
        dw2 = torch.zeros_like(w2_EFD) if need_w2 else None
        dw3 = torch.zeros_like(w3_EDF) if need_w3 and w3_EDF is not None else None
        chunks = _per_expert(counts, token_idx_N, dest_N, h_NF, g_NF, w_N, dw_N)
        for e, (tok_n, dest_n, h_nF, g_nF, w_n, dw_n) in chunks:
            dy_nD = grad_RD.index_select(0, dest_n)
            a_nF = apply_activation(h_nF, activation, g_nF)
            # with y = (w·a)·W2: dL/dw = (dy·W2ᵀ)·a, dL/da = w·(dy·W2ᵀ), dL/dW2 = (w·a)ᵀ·dy; all F-wide
            da_nF = dy_nD @ w2_EFD[e].t()
            if w_n is not None:
                if dw_n is not None:
                    torch.linalg.vecdot(da_nF.to(acc), a_nF.to(acc), out=dw_n)
                da_nF.mul_(w_n[:, None])
                a_nF.mul_(w_n[:, None])
            if dw2 is not None:
                torch.mm(a_nF.t(), dy_nD, out=dw2[e])
            dh_nF, dg_nF = _activation_backward(da_nF, h_nF, activation, g_nF)
            if dw1 is not None or dw3 is not None:
                xt_Dn = x_TD.index_select(0, tok_n).t()
                if dw1 is not None:
                    torch.mm(xt_Dn, dh_nF, out=dw1[e])
                if dw3 is not None:
                    torch.mm(xt_Dn, dg_nF, out=dw3[e])
            if dx_TD is not None:
                dx_nD = dh_nF @ w1_EDF[e].t()
                if dg_nF is not None:
                    dx_nD.addmm_(dg_nF, w3_EDF[e].t())
                dx_TD.index_add_(0, tok_n, dx_nD.to(acc))
        dweights = None
        if dw_N is not None:
            flat = torch.zeros(weights_TK.numel(), dtype=acc).index_copy_(0, ctx.slot_idx_N, dw_N)
            dweights = flat.view_as(weights_TK).to(weights_TK.dtype)
        dx = dx_TD.to(dtype) if dx_TD is not None else None
        return dx, dweights, dw1, dw2, dw3, None, None


def _per_expert(counts: list[int], *rows_N: torch.Tensor | None):
    """``(expert, (row slices…))`` for each expert with rows, slicing every row-indexed tensor (None stays None)."""
    parts = [t.split(counts) if t is not None else [None] * len(counts) for t in rows_N]
    for e, count in enumerate(counts):
        if count:
            yield e, tuple(p[e] for p in parts)


def fused_moe_ffn(
    x_TD: torch.Tensor,
    ids_TK: torch.Tensor,
    weights_TK: torch.Tensor | None,
    w1_EDF: torch.Tensor,
    w2_EFD: torch.Tensor,
    w3_EDF: torch.Tensor | None,
    activation: str,
) -> torch.Tensor:
    return _FusedMoEFFN.apply(x_TD, weights_TK, w1_EDF, w2_EFD, w3_EDF, ids_TK, activation)
