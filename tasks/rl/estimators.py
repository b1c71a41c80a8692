"""The actor estimators the RL boards compare; each takes the same critic, so only the actor step differs.

- ``pmoe`` (``policy.pmoe_losses``): one action from every expert, the critic picks the best, only that expert is
  trained, the gate learns the winning frequencies.
- ``gumbel``: the expert choice is relaxed with straight-through Gumbel-softmax (Jang et al. 2017): the forward pass
  takes one expert's action, the backward pass sends the critic's gradient into the gate through the soft sample;
  the entropy term is the mixture's log-density.
- ``score``: the expert choice ``k ~ Cat(w)`` is trained by the score-function (REINFORCE, "score-ratio")
  estimator with the batch mean as baseline; the chosen expert's action is reparameterised as usual.
- ``mean``: the deterministic gate-weighted MoE (``combine="mean"``): a single Gaussian whose parameters are the
  gate-weighted average of the experts', trained exactly as SAC's unimodal actor.

With K = 1 ``pmoe`` is plain SAC (the unimodal baseline row).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from zoo.errors import check_arg

from .policy import ActorLosses, GaussianMixturePolicy, mixture_log_prob, pmoe_losses, squashed_log_prob

QFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _zero(like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros(())


def _draw_all(policy: GaussianMixturePolicy, obs: torch.Tensor):
    dist = policy(obs)
    u = dist.mu + dist.log_std.exp() * torch.randn_like(dist.mu)  # [B, K, A], one reparameterised draw per expert
    return dist, u


def gumbel_losses(policy: GaussianMixturePolicy, q_fn: QFn, obs: torch.Tensor, alpha, tau: float = 1.0) -> ActorLosses:
    """Straight-through Gumbel-softmax routing: ``a = Σ_k g_k a_k`` with ``g`` one-hot forward, soft backward."""
    dist, u_all = _draw_all(policy, obs)
    g = F.gumbel_softmax(dist.logits, tau=tau, hard=True)  # [B, K]
    u = (g.unsqueeze(-1) * u_all).sum(1)
    logp = mixture_log_prob(dist, u)
    actor = (alpha * logp - q_fn(obs, torch.tanh(u))).mean()
    return ActorLosses(actor, _zero(actor), g.detach().argmax(-1), -logp.detach().mean())


def score_losses(policy: GaussianMixturePolicy, q_fn: QFn, obs: torch.Tensor, alpha) -> ActorLosses:
    """Score-function routing: ``k ~ Cat(w)``; the gate gets ``−(R − mean R) ∇ log w_k`` with ``R`` the soft value
    ``Q(s, a_k) − α log π(a_k|s)``; the expert's action is reparameterised."""
    dist, u_all = _draw_all(policy, obs)
    k = torch.distributions.Categorical(logits=dist.logits.detach()).sample()
    rows = torch.arange(obs.shape[0], device=obs.device)
    u = u_all[rows, k]
    logp = mixture_log_prob(dist, u)
    value = q_fn(obs, torch.tanh(u)) - alpha * logp
    advantage = (value - value.mean()).detach()
    log_w = torch.log_softmax(dist.logits, -1)[rows, k]
    actor = -value.mean() - (advantage * log_w).mean()
    return ActorLosses(actor, _zero(actor), k, -logp.detach().mean())


def mean_losses(policy: GaussianMixturePolicy, q_fn: QFn, obs: torch.Tensor, alpha) -> ActorLosses:
    """SAC's actor loss for the gate-weighted single Gaussian (``combine="mean"``)."""
    dist = policy(obs)
    mu, log_std = policy.mean_gaussian(dist)
    u = mu + log_std.exp() * torch.randn_like(mu)
    logp = squashed_log_prob(u, mu, log_std)
    actor = (alpha * logp - q_fn(obs, torch.tanh(u))).mean()
    return ActorLosses(actor, _zero(actor), dist.logits.detach().argmax(-1), -logp.detach().mean())


ESTIMATORS: dict[str, Callable[..., ActorLosses]] = {
    "pmoe": pmoe_losses,
    "gumbel": gumbel_losses,
    "score": score_losses,
    "mean": mean_losses,
}


def actor_losses(estimator: str, policy: GaussianMixturePolicy, q_fn: QFn, obs: torch.Tensor, alpha) -> ActorLosses:
    check_arg(estimator in ESTIMATORS, "estimator", estimator, sorted(ESTIMATORS))
    if (estimator == "mean") != (policy.combine == "mean"):
        raise ValueError(f"estimator {estimator!r} does not match a policy with combine={policy.combine!r}")
    return ESTIMATORS[estimator](policy, q_fn, obs, alpha)
