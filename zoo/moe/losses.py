"""Load-balancing and router regularisation losses.

All take fp32 router logits ``[T, E]`` and return an unweighted scalar; routers multiply by their coefficient.
Placeholder slots (id −1) are ignored, and an empty batch (T = 0) gives 0 rather than NaN.
"""

from __future__ import annotations

import math

import torch

from zoo.errors import check_arg


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


def cv_squared(v_E: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation ``Var(v) / mean(v)²`` (population variance); 0 for fewer than 2 values."""
    if v_E.numel() < 2:
        return v_E.new_zeros(())
    return v_E.var(unbiased=False) / v_E.mean().pow(2).clamp_min(1e-12)


def importance_loss(logits_TE: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation of expert importance ``Σ_t p_te`` (Shazeer et al. 2017)."""
    return cv_squared(torch.softmax(logits_TE, dim=-1).sum(0))


def smooth_load_loss(logits_TE: torch.Tensor, k: int, noise_std: float) -> torch.Tensor:
    """Shazeer et al. 2017's differentiable load loss: ``CV²(load)`` with ``load_e = Σ_t Φ((z_te − τ_te) / σ)``.

    ``Φ((z_te − τ_te) / σ)`` is the probability that expert e is among token t's top-k once its logit gets
    ``N(0, σ²)`` noise: ``τ_te`` is the paper's ``kth_excluding(z_t, k, e)``, the k-th largest logit among the
    *other* experts of the token (the (k+1)-th largest overall if e is in the top-k, else the k-th). Here the
    other experts' logits are the given ones (the paper uses their noisy values, which a router does not keep),
    so this is the load the noise-free logits are expected to produce. Gradients flow through both ``z_te``
    and ``τ_te``. With k = E every expert is always chosen and the loss is 0.

    Args:
        logits_TE: router logits ``[T, E]`` (fp32).
        k: experts per token.
        noise_std: σ > 0, the std of the selection noise (DAMEX/Switch jitter: 1/E).
    """
    T, E = logits_TE.shape
    check_arg(isinstance(k, int) and 1 <= k <= E, "k", k, f"an int in [1, {E}] (the number of experts)")
    check_arg(noise_std > 0, "noise_std", noise_std, "a float > 0")
    if T == 0 or k == E:
        return logits_TE.sum() * 0.0
    top = logits_TE.topk(k + 1, dim=-1)
    in_top_k = torch.zeros_like(logits_TE, dtype=torch.bool).scatter(1, top.indices[:, :k], True)
    threshold = torch.where(in_top_k, top.values[:, k : k + 1], top.values[:, k - 1 : k])
    z = (logits_TE - threshold) / noise_std
    prob_TE = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    return cv_squared(prob_TE.sum(0))


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
