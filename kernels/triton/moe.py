"""Autograd for the Triton expert FFN: one ``Function`` per projection, plus the combine.

``moe_ffn_triton`` sorts the slots once (``routing.build_routing``) and threads the same metadata through
both projections and their backward passes:

1. ``_GatherProject``: ``h = x[token(p)] @ w1[e]`` (and ``g = x[token(p)] @ w3[e]``), x rows gathered inside the
   GEMM, outputs grouped by expert ``[S, F]``. Backward: ``dx`` via the transposed GEMM scattered to the slots
   (``[S, D]``) and summed over k in fp32; ``dW1``/``dW3`` per expert row range, sharing the gathered x tile.
2. the activation, in PyTorch (the same ``apply_activation`` as every backend).
3. ``_ScatterProject``: ``y[slot(p)] = a[p] @ w2[e]``, scattered straight to the slot layout ``[T·k, D]`` (zeros
   in empty slots). Backward: ``da`` gathers the slot grads inside the GEMM; ``dW2`` per expert row range.
4. ``_Combine``: ``y[t] = Σ_s weights[t, s] · y_slot[t, s]``, deterministic, fp32; backward gives the slot grads
   and the gate-weight grads. With ``weights=None`` the slot outputs ``[T, k, D]`` are returned instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..activations import apply_activation
from . import ops
from .kernels import INTERPRETED
from .routing import build_routing


@dataclass(frozen=True)
class Blocks:
    """Tile sizes, passed to the launchers. ``block_m``: rows per GEMM program (also the routing block map);
    ``block_n``/``block_k``: output columns / reduction step; ``dw_*``: the weight-gradient kernel's (rows per
    step, K and N tile); ``block_t``/``block_d``: tokens/columns per combine program. Powers of two; the GEMM
    tiles at least 16 on the GPU."""

    block_m: int = 64
    block_n: int = 64
    block_k: int = 32
    dw_block_m: int = 32
    dw_block_k: int = 64
    dw_block_n: int = 64
    block_t: int = 4
    block_d: int = 128


def default_blocks(dtype: torch.dtype) -> Blocks:
    """Fixed tiles per dtype (never per batch size, so results do not depend on T). Under the CPU interpreter
    every program iteration costs milliseconds, so it gets big tiles (docs/kernels.md, "The Triton interpreter")."""
    if INTERPRETED:
        return Blocks(64, 256, 256, 64, 256, 256, 64, 256)
    if dtype == torch.float32:
        return Blocks(64, 64, 32, 32, 64, 64, 4, 128)
    return Blocks(64, 128, 64, 64, 64, 64, 4, 256)


class _GatherProject(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w1, w3, sorted_slot, sorted_token, expert_start, expert_end, blk_expert, blk_start,
                k, blocks):
        S = sorted_slot.shape[0]
        args = (sorted_token, None, blk_expert, blk_start, expert_end, S, x.dtype,
                blocks.block_m, blocks.block_n, blocks.block_k)
        ctx.save_for_backward(x, w1, w3, sorted_slot, sorted_token, expert_start, expert_end, blk_expert,
                              blk_start)
        ctx.k, ctx.blocks = k, blocks
        if w3 is None:
            return ops.scatter_mm(x, w1, None, None, *args)
        return ops.scatter_mm_dual(x, w1, w3, *args)

    @staticmethod
    def backward(ctx, dh, dg=None):
        x, w1, w3, sorted_slot, sorted_token, expert_start, expert_end, blk_expert, blk_start = ctx.saved_tensors
        b, k = ctx.blocks, ctx.k
        T, D = x.shape
        dx = dw1 = dw3 = None
        if ctx.needs_input_grad[0]:
            # dx per slot (fp32 accumulation, stored in x's dtype like y_slot), scattered to t·k + s (empty slots
            # stay 0), then summed over k in fp32: no atomics
            dx_slot = ops.scatter_mm(
                dh, w1.transpose(1, 2), dg, w3.transpose(1, 2) if w3 is not None else None,
                None, sorted_slot, blk_expert, blk_start, expert_end, T * k, x.dtype,
                b.block_m, b.block_n, b.block_k,
            )
            dx = dx_slot.view(T, k, D).sum(1, dtype=torch.float32).to(x.dtype)
        if ctx.needs_input_grad[1] or (w3 is not None and ctx.needs_input_grad[2]):
            dw_args = (sorted_token, None, expert_start, expert_end, w1.dtype,
                       b.dw_block_m, b.dw_block_k, b.dw_block_n)
            if w3 is None:
                dw1 = ops.expert_dw(x, dh, *dw_args)
            else:
                dw1, dw3 = ops.expert_dw_dual(x, dh, dg, *dw_args)
        return dx, dw1, dw3, None, None, None, None, None, None, None, None


class _ScatterProject(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, w2, sorted_slot, expert_start, expert_end, blk_expert, blk_start, blocks):
        ctx.save_for_backward(a, w2, sorted_slot, expert_start, expert_end, blk_expert, blk_start)
        ctx.blocks = blocks
        return ops.scatter_mm(a, w2, None, None, None, sorted_slot, blk_expert, blk_start, expert_end,
                              sorted_slot.shape[0], a.dtype, blocks.block_m, blocks.block_n, blocks.block_k)

    @staticmethod
    def backward(ctx, dy_slot):
        a, w2, sorted_slot, expert_start, expert_end, blk_expert, blk_start = ctx.saved_tensors
        b = ctx.blocks
        da = dw2 = None
        if ctx.needs_input_grad[0]:
            da = ops.scatter_mm(dy_slot, w2.transpose(1, 2), None, None, sorted_slot, None, blk_expert, blk_start,
                                expert_end, a.shape[0], a.dtype, b.block_m, b.block_n, b.block_k)
        if ctx.needs_input_grad[1]:
            dw2 = ops.expert_dw(a, dy_slot, None, sorted_slot, expert_start, expert_end, w2.dtype,
                                b.dw_block_m, b.dw_block_k, b.dw_block_n)
        return da, dw2, None, None, None, None, None, None


class _Combine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y_slot, weights, ids, blocks):
        ctx.save_for_backward(y_slot, weights, ids)
        ctx.blocks = blocks
        return ops.combine(y_slot, weights, ids, y_slot.dtype, blocks.block_t, blocks.block_d)

    @staticmethod
    def backward(ctx, grad):
        y_slot, weights, ids = ctx.saved_tensors
        dy, dweights = ops.combine_bwd(grad, y_slot, weights, ids, ctx.blocks.block_t, ctx.blocks.block_d)
        return dy, (dweights if ctx.needs_input_grad[1] else None), None, None


def moe_ffn_triton(
    x_TD: torch.Tensor,
    ids_TK: torch.Tensor,
    weights_TK: torch.Tensor | None,
    w1_EDF: torch.Tensor,
    w2_EFD: torch.Tensor,
    w3_EDF: torch.Tensor | None,
    activation: str,
    blocks: Blocks | None = None,
) -> torch.Tensor:
    """The ``moe_ffn`` backend function (validated inputs, weights in x's dtype); ``blocks`` overrides tiles."""
    T, D = x_TD.shape
    k = ids_TK.shape[1]
    b = blocks or default_blocks(x_TD.dtype)
    r = build_routing(ids_TK, w1_EDF.shape[0], b.block_m)
    proj = _GatherProject.apply(x_TD, w1_EDF, w3_EDF, r.sorted_slot, r.sorted_token, r.expert_start,
                                r.expert_end, r.blk_expert, r.blk_start, k, b)
    h_SF, g_SF = proj if w3_EDF is not None else (proj, None)
    a_SF = apply_activation(h_SF, activation, g_SF)
    y_SD = _ScatterProject.apply(a_SF, w2_EFD, r.sorted_slot, r.expert_start, r.expert_end, r.blk_expert,
                                 r.blk_start, b)
    if weights_TK is None:
        return y_SD.view(T, k, D)
    return _Combine.apply(y_SD, weights_TK, ids_TK, b)
