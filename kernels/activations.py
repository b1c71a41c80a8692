"""Expert activations shared by every backend, so all of them compute the same function."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Activations of the stacked expert FFN. ``swiglu`` is gated: ``silu(x·w1) * (x·w3)``, and needs ``w3``.
ACTIVATIONS = ("gelu", "silu", "relu", "swiglu")
GATED = frozenset({"swiglu"})

_POINTWISE = {"gelu": F.gelu, "silu": F.silu, "relu": F.relu}


def apply_activation(h_NF: torch.Tensor, activation: str, g_NF: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``activation`` to the first projection ``h``; gated ones multiply by the gate projection ``g``."""
    if activation == "swiglu":
        assert g_NF is not None
        return F.silu(h_NF) * g_NF
    return _POINTWISE[activation](h_NF)
