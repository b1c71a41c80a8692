"""PMOE's Gaussian-mixture actor and its estimator (Ren et al. 2021, "Probabilistic Mixture-of-Experts for
Efficient Deep Reinforcement Learning", arXiv 2104.09122).

``π(a|s) = Σ_k w_k(s) · tanh_# N(μ_k(s), σ_k(s))``: a shared ReLU trunk, the K Gaussian expert heads as one
``nn.Linear(hidden, K·2A)`` (every expert is evaluated on every state, so one matmul serves them all; initialised
uniform ±3e-3 as the authors' code) and a gate (a ``zoo.moe`` ``SoftRouter`` on the state, softmax weights; it
reads ``[s, 1]`` so that its linear map has the bias the authors' ``nn.Linear(state_dim, K)`` has: without one, the
gate is uniform at ``s = 0``, the mean of normalised observations). Actions are squashed by tanh, with the
change-of-variables correction in every log-density. docs/rl-pmoe-fidelity.md compares all of it with the paper
and the authors' code.

The estimator (``pmoe_losses``): sample one action from *every* expert, let the critic pick the best one
``k* = argmax_k Q(s, a_k)`` (scored without gradient), train only that expert (``α log π_{k*}(a_{k*}|s) −
Q(s, a_{k*})``, the component density, as SAC's actor loss) and pull the gate toward the winner's one-hot
("frequency" loss ``(1/K) Σ_k (w_k − 1[k = k*])²``, whose minimiser is ``w_k = P(k is best at s)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import check_arg
from zoo.moe import SoftRouter

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
HEAD_INIT = 3e-3  # the authors' uniform init of the mean and log-std layers
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def squashed_log_prob(u: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log-density of ``a = tanh(u)`` where ``u ~ N(mu, exp(log_std))``, summed over the action dims.

    ``log p(a) = log N(u) − Σ log(1 − tanh(u)²)``; the correction is computed as ``2(log 2 − u − softplus(−2u))``,
    which stays finite where ``tanh(u)`` rounds to ±1.
    """
    normal = -0.5 * ((u - mu) / log_std.exp()) ** 2 - log_std - _LOG_SQRT_2PI
    correction = 2 * (math.log(2) - u - F.softplus(-2 * u))
    return (normal - correction).sum(-1)


@dataclass
class MixtureOutput:
    """The actor's distribution at a batch of states: gate logits ``[B, K]``, expert means and log-stds ``[B, K, A]``."""

    logits: torch.Tensor
    mu: torch.Tensor
    log_std: torch.Tensor

    @property
    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=-1)


COMBINES = ("mixture", "mean")


class GaussianMixturePolicy(nn.Module):
    """PMOE actor: trunk → K Gaussian heads (tanh-squashed), gate on the state.

    Args:
        obs_dim, act_dim: observation and action sizes (actions live in [−1, 1]^act_dim; scale outside).
        num_experts: K (K = 1 is the unimodal SAC/PPO actor).
        hidden, layers: width and depth of the ReLU trunk.
        combine: ``"mixture"`` (the stochastic mixture: pick an expert, then act with it) or ``"mean"`` (the
            deterministic gate-weighted MoE baseline: one Gaussian whose mean and log-std are the gate-weighted
            averages of the experts'; a unimodal policy whose parameters come from an MoE).
    """

    def __init__(
        self, obs_dim: int, act_dim: int, num_experts: int = 4, hidden: int = 256, layers: int = 2,
        combine: str = "mixture",
    ) -> None:
        super().__init__()
        for name, value in (("obs_dim", obs_dim), ("act_dim", act_dim), ("num_experts", num_experts), ("hidden", hidden)):
            check_arg(isinstance(value, int) and value > 0, name, value, "a positive int")
        check_arg(combine in COMBINES, "combine", combine, COMBINES)
        self.act_dim, self.num_experts, self.combine = act_dim, num_experts, combine
        dims = [obs_dim] + [hidden] * layers
        self.trunk = nn.Sequential(*(m for i in range(layers) for m in (nn.Linear(dims[i], dims[i + 1]), nn.ReLU())))
        self.heads = nn.Linear(hidden, num_experts * 2 * act_dim)  # expert k: rows [2Ak, 2A(k+1)) = (μ_k, log σ_k)
        nn.init.uniform_(self.heads.weight, -HEAD_INIT, HEAD_INIT)
        nn.init.uniform_(self.heads.bias, -HEAD_INIT, HEAD_INIT)
        self.gate = SoftRouter(obs_dim + 1, num_experts)  # reads [s, 1]: the constant input is the gate's bias
        self._register_load_state_dict_pre_hook(_upgrade_state_dict, with_module=True)

    def gate_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """The gate's logits ``[B, K]`` at raw (policy-input) states ``obs[B, O]``."""
        return self.gate(torch.cat([obs.float(), obs.new_ones(obs.shape[0], 1, dtype=torch.float32)], -1)).logits

    def expert_head(self, k: int) -> nn.Linear:
        """Expert ``k``'s own head as a separate ``nn.Linear(hidden, 2·act_dim)`` (a copy of its rows of the batched
        head): what the batched matmul computes for that expert."""
        rows = slice(2 * self.act_dim * k, 2 * self.act_dim * (k + 1))
        head = nn.Linear(self.heads.in_features, 2 * self.act_dim)
        with torch.no_grad():
            head.weight.copy_(self.heads.weight[rows])
            head.bias.copy_(self.heads.bias[rows])
        return head

    def forward(self, obs: torch.Tensor) -> MixtureOutput:
        out = self.heads(self.trunk(obs)).unflatten(-1, (self.num_experts, 2 * self.act_dim))  # [B, K, 2A]
        mu, log_std = out.split(self.act_dim, dim=-1)
        return MixtureOutput(self.gate_logits(obs), mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))

    def sample_all(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, MixtureOutput]:
        """One reparameterised action per expert ``a[B, K, A]`` and its component log-density ``log π_k(a_k|s)``."""
        dist = self(obs)
        u = dist.mu + dist.log_std.exp() * torch.randn_like(dist.mu)
        return torch.tanh(u), squashed_log_prob(u, dist.mu, dist.log_std), dist

    def mean_gaussian(self, dist: MixtureOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``"mean"`` combine's single Gaussian: gate-weighted mean and log-std of the experts' ``[B, A]``."""
        w = dist.weights.unsqueeze(-1)
        return (w * dist.mu).sum(1), (w * dist.log_std).sum(1)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Log-density of given actions in (−1, 1) (PPO's likelihood ratio): ``log Σ_k w_k π_k(a|s)`` for the
        mixture, the single Gaussian's for ``combine="mean"``."""
        dist = self(obs)
        u = torch.atanh(action.clamp(-1 + 1e-6, 1 - 1e-6))
        if self.combine == "mean":
            return squashed_log_prob(u, *self.mean_gaussian(dist))
        return mixture_log_prob(dist, u)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """PMOE's acting and target-action rule: ``k ~ Cat(w(s))``, then ``a ~ π_k``; returns ``a``, the component
        log-density ``log π_k(a|s)`` and ``k`` (``combine="mean"``: a draw of the single Gaussian, its density, and
        the gate's most probable expert)."""
        dist = self(obs)
        mu, log_std, k = self._acting_gaussian(dist, deterministic=False)
        u = mu + log_std.exp() * torch.randn_like(mu)
        return torch.tanh(u), squashed_log_prob(u, mu, log_std), k

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Acting: pick an expert (the gate's most probable one, or a draw from it), then its mean or a sample."""
        mu, log_std, _ = self._acting_gaussian(self(obs), deterministic)
        return torch.tanh(mu if deterministic else mu + log_std.exp() * torch.randn_like(mu))

    def _acting_gaussian(self, dist: MixtureOutput, deterministic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The Gaussian an action is drawn from, and the expert it belongs to."""
        if self.combine == "mean":
            return (*self.mean_gaussian(dist), dist.logits.argmax(-1))
        if self.num_experts == 1:
            return dist.mu[:, 0], dist.log_std[:, 0], dist.mu.new_zeros(dist.mu.shape[0], dtype=torch.long)
        logits = dist.logits.detach()
        k = logits.argmax(-1) if deterministic else torch.multinomial(torch.softmax(logits, -1), 1).squeeze(-1)
        rows = torch.arange(k.shape[0], device=k.device)
        return dist.mu[rows, k], dist.log_std[rows, k], k


def _upgrade_state_dict(module: GaussianMixturePolicy, state_dict: dict, prefix: str, *args) -> None:
    """Load weights saved in the earlier layout: one ``nn.Linear`` per expert (``heads.experts.<k>``, stacked into
    the batched head's rows) and a gate without the bias column (a zero bias: the same function)."""
    if f"{prefix}heads.experts.0.weight" in state_dict:
        for name in ("weight", "bias"):
            parts = [state_dict.pop(f"{prefix}heads.experts.{k}.{name}") for k in range(module.num_experts)]
            state_dict[f"{prefix}heads.{name}"] = torch.cat(parts)
    key = f"{prefix}gate.gate.weight"
    gate = state_dict.get(key)
    if gate is not None and gate.shape[-1] == module.gate.gate.weight.shape[-1] - 1:
        state_dict[key] = torch.cat([gate, gate.new_zeros(gate.shape[0], 1)], -1)


def mixture_log_prob(dist: MixtureOutput, u: torch.Tensor) -> torch.Tensor:
    """``log Σ_k w_k π_k(tanh u|s)`` for pre-squash actions ``u[B, A]``: every expert's density at the same ``u``
    (the tanh correction is shared, so no ``atanh`` round trip is needed for sampled actions)."""
    u = u.unsqueeze(1).expand_as(dist.mu)
    return torch.logsumexp(torch.log_softmax(dist.logits, -1) + squashed_log_prob(u, dist.mu, dist.log_std), -1)


def frequency_loss(weights: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """PMOE's gate ("frequency") loss ``mean_b (1/K) Σ_k (w_bk − 1[k = k*_b])²``: minimised by ``w_k = P(k* = k)``."""
    return ((weights - F.one_hot(best, weights.shape[-1]).to(weights.dtype)) ** 2).mean(-1).mean()


@dataclass
class ActorLosses:
    """One actor step's losses: ``actor`` (the experts' and, where the estimator routes by gradient, the gate's),
    ``gate`` (a separate gate loss; PMOE's frequency loss, else zero), the expert each state used ``[B]`` and
    ``entropy`` = −mean log-density of the actions taken (what the temperature update reads)."""

    actor: torch.Tensor
    gate: torch.Tensor
    best: torch.Tensor
    entropy: torch.Tensor


def pmoe_losses(
    policy: GaussianMixturePolicy,
    q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    obs: torch.Tensor,
    alpha: float | torch.Tensor,
) -> ActorLosses:
    """PMOE's actor and gate losses for a batch of states.

    ``q_fn(obs[N, O], actions[N, A]) → [N]`` is the critic (SAC: the min of the twin Qs). It scores all B·K
    (state, expert action) pairs without gradient, then runs once more, differentiably, on the B winning actions:
    the actor gradient reaches only ``k*``'s action, so nothing else needs a backward pass (the same gradient as
    differentiating all B·K and indexing the winners). ``best`` is ``k*`` per state; ``entropy`` is −mean log π_{k*}
    (for the temperature update). K = 1 skips the scoring pass.
    """
    dist = policy(obs)
    u_all = dist.mu + dist.log_std.exp() * torch.randn_like(dist.mu)  # [B, K, A], one reparameterised draw per expert
    B, K, A = u_all.shape
    if K == 1:
        best = obs.new_zeros(B, dtype=torch.long)
    else:
        with torch.no_grad():
            q_all = q_fn(obs.repeat_interleave(K, dim=0), torch.tanh(u_all.detach()).reshape(B * K, A)).reshape(B, K)
        best = q_all.argmax(-1)
    rows = torch.arange(B, device=obs.device)
    u = u_all[rows, best]
    logp_best = squashed_log_prob(u, dist.mu[rows, best], dist.log_std[rows, best])
    actor = (alpha * logp_best - q_fn(obs, torch.tanh(u))).mean()
    return ActorLosses(actor, frequency_loss(dist.weights, best), best, -logp_best.detach().mean())
