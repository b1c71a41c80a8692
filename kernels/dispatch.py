"""Routing metadata and the deterministic combine shared by the sorted backends (``loop``, ``grouped``).

Slots are the ``T·k`` pairs (token, slot). They are sorted stably by expert id, with the placeholder −1
mapped to ``E`` so placeholders sort last and fall outside every expert's row range (the ScatterMoE/vLLM
sentinel). Only the ``N`` valid slots are gathered, so dispatch memory is O(N·D) ≤ O(T·k·D), never O(T·E·D).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SortedSlots:
    """Where each valid slot's row lives after sorting by expert.

    ``slot_idx_N``: flat slot index ``t·k + s`` of the n-th sorted row; ``token_idx_N``: its token;
    ``counts_E``: rows per expert; ``offsets_E``: cumulative end of each expert's row range (int32, as
    ``grouped_mm`` wants it).
    """

    slot_idx_N: torch.Tensor
    token_idx_N: torch.Tensor
    counts_E: torch.Tensor
    offsets_E: torch.Tensor
    num_tokens: int
    k: int

    @property
    def num_rows(self) -> int:
        return self.slot_idx_N.shape[0]


def sort_slots(ids_TK: torch.Tensor, num_experts: int) -> SortedSlots:
    """Stable-sort slots by expert id and drop the placeholder slots."""
    k = ids_TK.shape[1]
    flat = ids_TK.reshape(-1)
    keyed = torch.where(flat < 0, torch.full_like(flat, num_experts), flat)
    order = torch.sort(keyed, stable=True).indices
    counts_E = torch.bincount(keyed, minlength=num_experts + 1)[:num_experts]
    offsets_E = torch.cumsum(counts_E, 0).to(torch.int32)
    num_valid = int(offsets_E[-1]) if num_experts > 0 else 0
    slot_idx_N = order[:num_valid]
    token_idx_N = torch.div(slot_idx_N, k, rounding_mode="floor")
    return SortedSlots(slot_idx_N, token_idx_N, counts_E, offsets_E, ids_TK.shape[0], k)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums are accumulated in: fp32 for fp32 and narrower floats, fp64 for fp64 (so that fp64 inputs
    are exact to fp64 rounding, e.g. for ``torch.autograd.gradcheck``)."""
    return torch.promote_types(dtype, torch.float32)


def combine(
    y_ND: torch.Tensor, slots: SortedSlots, weights_TK: torch.Tensor | None, out_dtype: torch.dtype
) -> torch.Tensor:
    """Scatter expert outputs back to their slots and take the weighted sum over k (fp32, fp64 for fp64).

    Each slot receives at most one row, so the scatter has no write conflicts, and the sum over k is an ordinary
    reduction over a ``(T, k, D)`` view: bitwise deterministic, no atomics. With ``weights_TK=None`` the
    per-slot outputs ``[T, k, D]`` are returned unweighted (zeros in empty slots).
    """
    T, k = slots.num_tokens, slots.k
    y_SD = y_ND.new_zeros(T * k, y_ND.shape[1]).index_copy(0, slots.slot_idx_N, y_ND)
    y_TKD = y_SD.view(T, k, y_ND.shape[1])
    if weights_TK is None:
        return y_TKD.to(out_dtype)
    return weighted_sum(y_TKD, weights_TK, out_dtype)


def weighted_sum(y_TKD: torch.Tensor, weights_TK: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """``y[t] = Σ_s weights[t, s] · y[t, s]``, deterministic, accumulated in fp32 (fp64 when ``y`` is fp64)."""
    acc = accumulation_dtype(y_TKD.dtype)
    # a batched [1, k] × [k, D] product per token: ~10× faster than the equivalent einsum on the CPU
    return torch.bmm(weights_TK.to(acc).unsqueeze(1), y_TKD.to(acc)).squeeze(1).to(out_dtype)
