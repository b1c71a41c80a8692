"""Routing metadata for the Triton kernels, built on the device with no host synchronisation.

Slots are the ``S = T·k`` pairs (token, slot), flattened as ``t·k + s``. They are sorted stably by expert id,
with the placeholder −1 keyed as ``E`` so placeholders sort last and fall outside every expert's row range.
Every shape here follows from ``(T, k, E, BLOCK_M)`` alone: no ``.item()``, ``.tolist()`` or loop over experts,
so the whole thing runs asynchronously on the GPU and traces under ``torch.compile``.

The GEMM grid has one program per ``BLOCK_M`` rows *of one expert* (the block-to-expert map; vLLM's
``expert_ids``, without padding the rows themselves). Expert ``e`` needs ``ceil(n_e / BLOCK_M)`` blocks; in all
``Σ_e ceil(n_e / BLOCK_M) ≤ min(S, ceil(S / BLOCK_M) + E)``, a bound known on the host, so the grid is static
and the few unused blocks are marked with expert ``E`` and exit at once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Routing(NamedTuple):
    """Sorted slots and the block map. All int32, on the device of ``ids``.

    ``sorted_slot[p]``: flat slot index of sorted row ``p`` (placeholders last, outside every expert range);
    ``sorted_token[p]``: its token; ``expert_start[e]``, ``expert_end[e]``: expert ``e``'s row range;
    ``blk_expert[b]``: the expert of row block ``b`` (``E``: unused block); ``blk_start[b]``: its first row.
    """

    sorted_slot: torch.Tensor
    sorted_token: torch.Tensor
    expert_start: torch.Tensor
    expert_end: torch.Tensor
    blk_expert: torch.Tensor
    blk_start: torch.Tensor


def num_row_blocks(num_slots: int, num_experts: int, block_m: int) -> int:
    """Static upper bound on the number of (expert, BLOCK_M rows) blocks: the GEMM grid's first dimension."""
    if num_slots == 0 or num_experts == 0:
        return 0
    return min(num_slots, -(-num_slots // block_m) + num_experts)


def build_routing(ids_TK: torch.Tensor, num_experts: int, block_m: int) -> Routing:
    """Sort the slots of ``ids[T, k]`` (−1 = empty) by expert and map row blocks of ``block_m`` to experts."""
    T, k = ids_TK.shape
    S, E = T * k, num_experts
    dev = ids_TK.device
    flat = ids_TK.reshape(-1).long()
    key = torch.where(flat < 0, torch.full_like(flat, E), flat)
    sorted_key, order = torch.sort(key, stable=True)
    experts = torch.arange(E, device=dev, dtype=sorted_key.dtype)
    # counts from the sorted keys by binary search: static shapes, no atomics (unlike bincount/scatter_add)
    expert_start = torch.searchsorted(sorted_key, experts, right=False)
    expert_end = torch.searchsorted(sorted_key, experts, right=True)
    blocks_E = torch.div(expert_end - expert_start + (block_m - 1), block_m, rounding_mode="floor")
    blk_end_E = torch.cumsum(blocks_E, 0)
    b = torch.arange(num_row_blocks(S, E, block_m), device=dev, dtype=blk_end_E.dtype)
    blk_expert = torch.searchsorted(blk_end_E, b, right=True)  # == E past the last used block
    e = blk_expert.clamp(max=max(E - 1, 0))
    if E > 0:
        blk_start = expert_start[e] + (b - (blk_end_E[e] - blocks_E[e])) * block_m
    else:
        blk_start = b
    i32 = torch.int32
    return Routing(
        sorted_slot=order.to(i32),
        sorted_token=torch.div(order, max(k, 1), rounding_mode="floor").to(i32),
        expert_start=expert_start.to(i32),
        expert_end=expert_end.to(i32),
        blk_expert=blk_expert.to(i32),
        blk_start=blk_start.to(i32),
    )
