"""Sorted per-expert loop: sort → split by expert → ``F.linear`` per expert → deterministic combine.

The portable backend: any D/F, any float dtype, any torch. At coarse granularity (E≈8) it is as fast as
``grouped`` on the CPU; at fine granularity its E small GEMMs lose (docs/kernels.md, "Early CPU measurements").
"""

from __future__ import annotations

import torch

from .activations import apply_activation
from .dispatch import combine, sort_slots


def loop_moe_ffn(
    x_TD: torch.Tensor,
    ids_TK: torch.Tensor,
    weights_TK: torch.Tensor,
    w1_EDF: torch.Tensor,
    w2_EFD: torch.Tensor,
    w3_EDF: torch.Tensor | None,
    activation: str,
) -> torch.Tensor:
    slots = sort_slots(ids_TK, w1_EDF.shape[0])
    x_ND = x_TD.index_select(0, slots.token_idx_N)
    # unbind once: indexing w[e] per expert would make autograd build a full [E, D, F] gradient per expert
    w1s, w2s = w1_EDF.unbind(0), w2_EFD.unbind(0)
    w3s = w3_EDF.unbind(0) if w3_EDF is not None else None
    outputs = []
    for e, x_nD in enumerate(torch.split(x_ND, slots.counts_E.tolist())):
        if x_nD.shape[0] == 0:
            continue
        g_nF = x_nD @ w3s[e] if w3s is not None else None
        outputs.append(apply_activation(x_nD @ w1s[e], activation, g_nF) @ w2s[e])
    if not outputs:  # no slot: an empty product still ties the (zero) gradients to x and the weights
        g_nF = x_ND @ w3s[0] if w3s is not None else None
        outputs.append(apply_activation(x_ND @ w1s[0], activation, g_nF) @ w2s[0])
    y_ND = torch.cat(outputs)
    return combine(y_ND, slots, weights_TK, x_TD.dtype)
