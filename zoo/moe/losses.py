"""Load-balancing and router regularisation losses.

All take fp32 router logits ``[T, E]`` and return an unweighted scalar; routers multiply by their coefficient.
Placeholder slots (id −1) are ignored, and an empty batch (T = 0) gives 0 rather than NaN.
"""

from __future__ import annotations

import torch


def expert_fractions(ids_TK: torch.Tensor, num_experts: int) -> torch.Tensor:
    """``f[E]``: fraction of the valid (non −1) slots assigned to each expert; zeros if there are none."""
    valid = ids_TK[ids_TK >= 0]
    counts = torch.bincount(valid, minlength=num_experts).float()
    return counts / counts.sum().clamp_min(1.0)


def load_balance_loss(logits_TE: torch.Tensor, ids_TK: torch.Tensor) -> torch.Tensor:
    """Switch Transformer / GShard auxiliary loss ``E · Σ_e f_e · P_e`` (Fedus et al. 2021, eq. 4).

    ``f_e`` is the (non-differentiable) fraction of slots routed to expert e and ``P_e`` the mean router
    probability of e. It is 1.0 under perfectly uniform routing and grows to E when everything collapses on one
    expert, so a coefficient of 0.01 means the same thing at every E.
    """
    if logits_TE.shape[0] == 0:
        return logits_TE.sum() * 0.0
    E = logits_TE.shape[-1]
    probs_E = torch.softmax(logits_TE, dim=-1).mean(0)
    return E * torch.sum(expert_fractions(ids_TK, E).detach() * probs_E)


def router_z_loss(logits_TE: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss ``mean_t logsumexp(logits_t)²`` (Zoph et al. 2022): keeps logits small for stability."""
    if logits_TE.shape[0] == 0:
        return logits_TE.sum() * 0.0
    return torch.logsumexp(logits_TE, dim=-1).pow(2).mean()


def importance_loss(logits_TE: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation of expert importance ``Σ_t p_te`` (Shazeer et al. 2017)."""
    importance_E = torch.softmax(logits_TE, dim=-1).sum(0)
    if importance_E.numel() < 2:
        return importance_E.new_zeros(())
    return importance_E.var(unbiased=False) / importance_E.mean().pow(2).clamp_min(1e-12)


def routing_entropy(logits_TE: torch.Tensor) -> torch.Tensor:
    """Mean per-token entropy (nats) of the router distribution; the top-p router's "dynamic loss" minimises it."""
    if logits_TE.shape[0] == 0:
        return logits_TE.sum() * 0.0
    logp = torch.log_softmax(logits_TE, dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


def aux_free_bias_update(bias_E: torch.Tensor, load_E: torch.Tensor, rate: float) -> torch.Tensor:
    """Loss-free balancing step (Wang et al. 2024; DeepSeek-V3): ``b_e += u · sign(mean_load − load_e)``.

    Overloaded experts get their selection bias lowered and underloaded ones raised; no gradient is involved.
    """
    return bias_E + rate * torch.sign(load_E.mean() - load_E)
