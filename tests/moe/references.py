"""Per-token references shared by the backbone tests, written from the definitions (no zoo code involved)."""

import math

import torch


def act_ref(name, h, g=None):
    """The activations written out from their definitions (exact erf GELU, as torch's default)."""
    if name == "gelu":
        return 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
    if name == "silu":
        return h * torch.sigmoid(h)
    if name == "relu":
        return torch.clamp_min(h, 0.0)
    if name == "swiglu":
        return h * torch.sigmoid(h) * g
    raise AssertionError(name)


def ffn_ref(x_D, w1_DF, w2_FD, w3_DF, name):
    """One expert on one token."""
    g = x_D @ w3_DF if w3_DF is not None else None
    return act_ref(name, x_D @ w1_DF, g) @ w2_FD
