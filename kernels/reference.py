"""The oracle: a plain per-token, per-slot loop (ScatterMoE's ``dumb_forward``).

Every other backend is tested against this one, forward and gradients. It is deliberately naive: no sorting,
no batching, fp32 arithmetic whatever the input dtype (fp64 for fp64 inputs, the ground truth of gradcheck), so
that a bug in dispatch cannot hide here too.
It is never picked by ``backend="auto"``.
"""

from __future__ import annotations

import torch

from .activations import apply_activation
from .dispatch import accumulation_dtype


def reference_moe_ffn(
    x_TD: torch.Tensor,
    ids_TK: torch.Tensor,
    weights_TK: torch.Tensor,
    w1_EDF: torch.Tensor,
    w2_EFD: torch.Tensor,
    w3_EDF: torch.Tensor | None,
    activation: str,
) -> torch.Tensor:
    """``y[t] = Σ_s weights[t, s] · expert_{ids[t, s]}(x[t])``, skipping slots whose id is −1.

    With ``weights_TK=None``: the unweighted per-slot outputs ``y[t, s] = expert_{ids[t, s]}(x[t])``.
    """
    T, D = x_TD.shape
    k = ids_TK.shape[1]
    acc = accumulation_dtype(x_TD.dtype)
    rows = []
    for t in range(T):
        x_D = x_TD[t].to(acc)
        slots = []
        for s in range(k):
            e = int(ids_TK[t, s])
            y_D = x_D * 0.0  # zeros that keep the graph to x, so empty slots still backpropagate
            if e >= 0:
                h_F = x_D @ w1_EDF[e].to(acc)
                g_F = x_D @ w3_EDF[e].to(acc) if w3_EDF is not None else None
                y_D = apply_activation(h_F, activation, g_F) @ w2_EFD[e].to(acc)
            slots.append(y_D if weights_TK is None else weights_TK[t, s].to(acc) * y_D)
        rows.append(torch.stack(slots) if weights_TK is None else sum(slots, x_D * 0.0))
    if not rows:
        return x_TD.new_zeros((T, k, D) if weights_TK is None else (T, D))
    return torch.stack(rows).to(x_TD.dtype)
