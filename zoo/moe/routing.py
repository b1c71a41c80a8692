"""Routers: token representations in, a :class:`Routing` out.

Every router returns the same contract (docs/architecture.md, "The MoE contract"): ``ids[T, k_max]`` (int64, −1 for
a slot with no work), ``weights[T, k_max]`` (0 where the id is −1), fp32 ``logits[T, E]`` and named, already
weighted auxiliary losses. Dynamic-k routers (top-p, threshold, dense-to-sparse, expert choice) pad to their
widest row with −1, so every router feeds the same dispatch.

Routers run in fp32 even under autocast: a bf16 router changes which experts win (a ScatterMoE accuracy issue).
Routers whose state changes with training (aux-loss-free bias, dense-to-sparse temperature) do it in
:meth:`Router.on_optimizer_step`, which :class:`zoo.module.ZooModule` calls once per optimizer step.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooValueError, check_arg

from . import losses


@dataclass
class Routing:
    """What a router decided for ``T`` tokens over ``E`` experts.

    ``drop_rate`` is the fraction of requested slots dropped by a capacity limit (top-k with a capacity factor),
    or, for expert choice, the fraction of tokens no expert picked. ``requested_ids`` are the choices before
    capacity dropped any (None when nothing can be dropped): balance losses and loads are measured on them, as
    in GShard/Switch, so an overloaded expert is penalised for all the tokens it was asked to take.
    ``shared_weights[T, S]`` are per-token weights of the ``S`` always-on shared experts, for routers that also
    score them (:class:`TopPRouter` with ``shared``); None when the shared experts are not routed.
    """

    ids: torch.Tensor
    weights: torch.Tensor
    logits: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    drop_rate: torch.Tensor | None = None
    requested_ids: torch.Tensor | None = None
    shared_weights: torch.Tensor | None = None

    @property
    def k(self) -> int:
        return self.ids.shape[1]


def _compact(mask_TE: torch.Tensor, weights_TE: torch.Tensor, k_max: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a boolean selection ``[T, E]`` into ``ids/weights[T, k]`` padded with −1, highest weight first.

    ``k`` is the widest row (at least 1), or ``k_max`` if given (rows are then truncated to their best k_max).
    """
    T, E = mask_TE.shape
    key = torch.where(mask_TE, weights_TE.detach(), torch.full_like(weights_TE, -math.inf))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    width = int(mask_TE.sum(1).max()) if T else 0
    width = max(1, min(width, k_max if k_max is not None else E))
    ids = order[:, :width]
    keep = mask_TE.gather(1, ids)
    weights = torch.where(keep, weights_TE.gather(1, ids), weights_TE.new_zeros(()))
    return torch.where(keep, ids, torch.full_like(ids, -1)), weights


def _top1_mask(probs_TE: torch.Tensor) -> torch.Tensor:
    """Boolean ``[T, E]`` marking each row's most probable expert (dynamic-k routers always keep it)."""
    return F.one_hot(probs_TE.argmax(-1), probs_TE.shape[-1]).bool()


class Router(nn.Module, abc.ABC):
    """Base router: an fp32 linear gate ``x → logits[T, E]`` plus the standard auxiliary losses.

    Args:
        d_model: token dimension D.
        num_experts: number of routable experts E (FFN and special experts together).
        balance_coef: weight of the Switch/GShard load-balance loss (0.01 as in Switch; 0 disables it).
        z_coef: weight of the ST-MoE router z-loss (1e-3 in ST-MoE; off by default).
        importance_coef: weight of the importance CV² loss (Shazeer et al. 2017; off by default).
        jitter: multiplicative router-input noise ε: in training the router reads ``x · U(1 − ε, 1 + ε)``, drawn per
            element (Switch Transformer's input jitter; 0.01 in Switch and UniMoE-Audio). The experts still read
            the clean ``x``. 0 (default) disables it; eval is never jittered.
    """

    #: Routers without a learned gate (hash routing) set this False.
    learned: bool = True
    #: Shared experts this router also weights per token (``Routing.shared_weights``); 0 for most routers.
    num_shared: int = 0

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        *,
        balance_coef: float = 0.01,
        z_coef: float = 0.0,
        importance_coef: float = 0.0,
        jitter: float = 0.0,
    ) -> None:
        super().__init__()
        check_arg(isinstance(d_model, int) and d_model > 0, "d_model", d_model, "a positive int")
        check_arg(isinstance(num_experts, int) and num_experts > 0, "num_experts", num_experts, "a positive int")
        for name, coef in (("balance_coef", balance_coef), ("z_coef", z_coef), ("importance_coef", importance_coef)):
            check_arg(coef >= 0, name, coef, "a non-negative float")
        check_arg(0 <= jitter < 1, "jitter", jitter, "a float in [0, 1)")
        self.d_model, self.num_experts = d_model, num_experts
        self.balance_coef, self.z_coef, self.importance_coef = balance_coef, z_coef, importance_coef
        self.jitter = jitter
        if self.learned:
            self.gate = nn.Linear(d_model, num_experts, bias=False)
            nn.init.normal_(self.gate.weight, std=d_model**-0.5)

    def router_logits(self, x_TD: torch.Tensor) -> torch.Tensor:
        """fp32 gate logits ``[T, E]``, computed outside autocast."""
        with torch.autocast(device_type=x_TD.device.type, enabled=False):
            return F.linear(x_TD.float(), self.gate.weight.float())

    def jittered(self, x_TD: torch.Tensor) -> torch.Tensor:
        """The router input, in training times fp32 noise ``U(1 − jitter, 1 + jitter)`` per element."""
        if not (self.training and self.jitter):
            return x_TD
        x_TD = x_TD.float()
        return x_TD * torch.empty_like(x_TD).uniform_(1.0 - self.jitter, 1.0 + self.jitter)

    def forward(self, x_TD: torch.Tensor, token_ids_T: torch.Tensor | None = None) -> Routing:
        check_arg(x_TD.dim() == 2 and x_TD.shape[1] == self.d_model, "x.shape", tuple(x_TD.shape), f"[T, {self.d_model}]")
        x_TD = self.jittered(x_TD)
        logits = self.router_logits(x_TD)
        routing = self.select(logits, x_TD, token_ids_T)
        requested = routing.requested_ids if routing.requested_ids is not None else routing.ids
        routing.aux.update(self.aux_losses(logits, requested))
        return routing

    @abc.abstractmethod
    def select(self, logits_TE: torch.Tensor, x_TD: torch.Tensor, token_ids_T: torch.Tensor | None) -> Routing:
        """Pick experts and weights from the logits; each router implements its rule here."""

    def aux_losses(self, logits_TE: torch.Tensor, ids_TK: torch.Tensor) -> dict[str, torch.Tensor]:
        aux: dict[str, torch.Tensor] = {}
        if self.balance_coef:
            aux["balance"] = self.balance_coef * losses.load_balance_loss(logits_TE, ids_TK)
        if self.z_coef:
            aux["z_loss"] = self.z_coef * losses.router_z_loss(logits_TE)
        if self.importance_coef:
            aux["importance"] = self.importance_coef * losses.importance_loss(logits_TE)
        return aux

    def on_optimizer_step(self, step: int) -> None:
        """Called once per optimizer step (before it) with the global step; stateless routers ignore it."""

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_experts={self.num_experts}"


class TopKRouter(Router):
    """Top-k softmax routing (Shazeer et al. 2017; GShard; Switch; Mixtral).

    Args:
        k: experts per token.
        renormalize: divide the k kept probabilities by their sum (Mixtral) instead of keeping the raw softmax
            probabilities (Switch, GShard). Default: True for k > 1, False for k = 1 — a renormalised top-1
            weight is always 1, so the gate would get no gradient from the task loss.
        noise: add ``N(0, 1) · softplus(x W_noise)`` to the logits in training (noisy top-k gating).
        noise_std: add fixed ``N(0, noise_std²)`` jitter to the logits in training (Switch/tutel gate noise; DAMEX
            uses 1/E). Exclusive with ``noise``. Either noise changes the choice and the weights (both come from
            the noisy scores, as in noisy top-k gating); ``Routing.logits`` and the aux losses keep the clean logits.
        capacity_factor: if set, each expert takes at most ``ceil(cf · T · k / E)`` slots per batch; the
            overflow is dropped (id −1) in slot-major priority: every token's first choice before any
            second choice (GShard). ``None`` is dropless.
        eval_dropless: apply the capacity limit in training only, so that in eval mode a token's output does not
            depend on which other inputs share its batch (one image alone, a test batch of one domain).
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        k: int = 2,
        *,
        renormalize: bool | None = None,
        noise: bool = False,
        noise_std: float | None = None,
        capacity_factor: float | None = None,
        eval_dropless: bool = False,
        **loss_coefs: float,
    ) -> None:
        super().__init__(d_model, num_experts, **loss_coefs)
        check_arg(isinstance(k, int) and 1 <= k <= num_experts, "k", k, f"an int in [1, num_experts={num_experts}]")
        check_arg(capacity_factor is None or capacity_factor > 0, "capacity_factor", capacity_factor, "None or > 0")
        check_arg(noise_std is None or noise_std >= 0, "noise_std", noise_std, "None or a float >= 0")
        if noise and noise_std is not None:
            raise ZooValueError(f"noise=True (learned noise) and noise_std={noise_std} (fixed jitter) are exclusive; "
                                "pass one of them")
        self.k, self.capacity_factor, self.noise_std = k, capacity_factor, noise_std
        self.eval_dropless = eval_dropless
        self.renormalize = k > 1 if renormalize is None else renormalize
        self.noise = nn.Linear(d_model, num_experts, bias=False) if noise else None
        if self.noise is not None:
            nn.init.zeros_(self.noise.weight)

    def selection_scores(self, logits_TE: torch.Tensor, x_TD: torch.Tensor) -> torch.Tensor:
        if self.noise is not None and self.training:
            with torch.autocast(device_type=x_TD.device.type, enabled=False):
                std = F.softplus(F.linear(x_TD.float(), self.noise.weight.float()))
            return logits_TE + torch.randn_like(logits_TE) * std
        if self.noise_std and self.training:
            return logits_TE + torch.randn_like(logits_TE) * self.noise_std
        return logits_TE

    def select(self, logits_TE: torch.Tensor, x_TD: torch.Tensor, token_ids_T: torch.Tensor | None) -> Routing:
        scores = self.selection_scores(logits_TE, x_TD)
        probs = torch.softmax(scores, dim=-1)
        top_p, ids = probs.topk(self.k, dim=-1)
        weights = top_p / top_p.sum(-1, keepdim=True) if self.renormalize else top_p
        return self._with_capacity(ids, weights, logits_TE)

    def _with_capacity(self, ids: torch.Tensor, weights: torch.Tensor, logits_TE: torch.Tensor) -> Routing:
        if self.capacity_factor is None or (self.eval_dropless and not self.training):
            return Routing(ids, weights, logits_TE)
        kept_ids, kept_weights, drop_rate = apply_capacity(ids, weights, self.num_experts, self.capacity_factor)
        return Routing(kept_ids, kept_weights, logits_TE, drop_rate=drop_rate, requested_ids=ids)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}, capacity_factor={self.capacity_factor}"


def capacity(num_tokens: int, k: int, num_experts: int, capacity_factor: float) -> int:
    """Slots per expert: ``ceil(cf · T · k / E)``."""
    return math.ceil(capacity_factor * num_tokens * k / num_experts)


def apply_capacity(
    ids_TK: torch.Tensor, weights_TK: torch.Tensor, num_experts: int, capacity_factor: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drop slots beyond each expert's capacity, first choices first, earlier tokens first (GShard).

    Returns the new ids and weights (dropped slots become −1 / 0) and the fraction of valid slots dropped.
    """
    T, k = ids_TK.shape
    cap = capacity(T, k, num_experts, capacity_factor)
    slot_major = ids_TK.t().reshape(-1)  # priority order: slot 0 of every token, then slot 1, ...
    valid = slot_major >= 0
    keyed = torch.where(valid, slot_major, torch.full_like(slot_major, num_experts))
    order = torch.sort(keyed, stable=True).indices
    counts = torch.bincount(keyed, minlength=num_experts + 1)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device) - starts[keyed[order]]
    keep = (valid & (rank < cap)).view(k, T).t()
    dropped = (valid.view(k, T).t() & ~keep).sum()
    drop_rate = dropped.float() / valid.sum().clamp_min(1).float()
    return (
        torch.where(keep, ids_TK, torch.full_like(ids_TK, -1)),
        torch.where(keep, weights_TK, torch.zeros_like(weights_TK)),
        drop_rate,
    )


class AuxFreeRouter(TopKRouter):
    """Auxiliary-loss-free balancing (Wang et al. 2024, "Auxiliary-Loss-Free Load Balancing"; DeepSeek-V3).

    Selection uses ``scores + bias``; the weights use the unbiased scores (renormalised over the k when k > 1,
    as DeepSeek-V3 does), so the bias steers which experts are chosen without touching the function computed
    for a given choice. Loads are counted on the choices before any capacity drop. The bias is updated once per optimizer
    step from the load counted in training forwards since the last step (safe with gradient accumulation) and
    is a persistent buffer, so it travels with checkpoints.

    Args:
        score: ``"sigmoid"`` (DeepSeek-V3) or ``"softmax"``.
        bias_rate: update speed u (1e-3 in the paper).
        balance_coef: defaults to 0: this router balances without an auxiliary loss.
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        k: int = 2,
        *,
        score: str = "sigmoid",
        bias_rate: float = 1e-3,
        balance_coef: float = 0.0,
        **kwargs,
    ) -> None:
        check_arg(score in ("sigmoid", "softmax"), "score", score, ["sigmoid", "softmax"])
        check_arg(bias_rate >= 0, "bias_rate", bias_rate, "a non-negative float")
        super().__init__(d_model, num_experts, k, balance_coef=balance_coef, **kwargs)
        self.score, self.bias_rate = score, bias_rate
        self.register_buffer("bias", torch.zeros(num_experts))
        self.register_buffer("pending_load", torch.zeros(num_experts), persistent=False)

    def select(self, logits_TE: torch.Tensor, x_TD: torch.Tensor, token_ids_T: torch.Tensor | None) -> Routing:
        noisy = self.selection_scores(logits_TE, x_TD)
        scores = torch.sigmoid(noisy) if self.score == "sigmoid" else torch.softmax(noisy, dim=-1)
        ids = (scores.detach() + self.bias).topk(self.k, dim=-1).indices
        if self.renormalize:
            # In log space: chosen sigmoid scores that all underflow to 0 still share a weight of 1.
            log_scores = F.logsigmoid(noisy) if self.score == "sigmoid" else torch.log_softmax(noisy, dim=-1)
            weights = torch.softmax(log_scores.gather(1, ids), dim=-1)
        else:
            weights = scores.gather(1, ids)
        if self.training:
            self.pending_load += torch.bincount(ids.reshape(-1), minlength=self.num_experts).float()
        return self._with_capacity(ids, weights, logits_TE)

    @torch.no_grad()
    def on_optimizer_step(self, step: int) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.pending_load)  # every replica applies the same global update
        if self.pending_load.sum() > 0:
            self.bias.copy_(losses.aux_free_bias_update(self.bias, self.pending_load, self.bias_rate))
        self.pending_load.zero_()

    def _apply(self, fn, recurse=True):
        """Keep the bias and load counter in fp32 under ``.to(bfloat16)``: 1e-3 steps vanish in bf16."""
        super()._apply(fn, recurse)
        self.bias.data = self.bias.data.float()
        self.pending_load.data = self.pending_load.data.float()
        return self


class ExpertChoiceRouter(Router):
    """Expert-choice routing (Zhou et al. 2022): each expert takes its top-C tokens, ``C = ceil(T · c / E)``.

    Balanced by construction (no auxiliary loss by default). A token may get 0..E experts; tokens nobody picks
    pass through the residual only and are reported as ``drop_rate``. Selection looks at the whole batch, so it
    leaks future tokens: not for causal decoders.

    Args:
        capacity_factor: c, average experts per token (2 in the paper).
    """

    def __init__(self, d_model: int, num_experts: int, *, capacity_factor: float = 2.0, balance_coef: float = 0.0, **kw) -> None:
        super().__init__(d_model, num_experts, balance_coef=balance_coef, **kw)
        check_arg(capacity_factor > 0, "capacity_factor", capacity_factor, "> 0")
        self.capacity_factor = capacity_factor

    def select(self, logits_TE: torch.Tensor, x_TD: torch.Tensor, token_ids_T: torch.Tensor | None) -> Routing:
        T, E = logits_TE.shape
        probs = torch.softmax(logits_TE, dim=-1)
        cap = min(T, math.ceil(T * self.capacity_factor / E))
        token_idx_EC = probs.t().topk(cap, dim=-1).indices
        mask = torch.zeros_like(probs, dtype=torch.bool)
        mask.scatter_(0, token_idx_EC.t(), True)
        ids, weights = _compact(mask, probs)
        drop_rate = (~mask.any(1)).float().sum() / max(T, 1)
        return Routing(ids, weights, logits_TE, drop_rate=drop_rate)


class TopPRouter(Router):
    """Top-p (dynamic) routing (Huang et al. 2024, "Harder Tasks Need More Experts: Dynamic Routing in MoE").

    Keeps the smallest set of most probable experts whose mass reaches ``p``, **including the expert that
    crosses p**, so the kept mass is always ≥ p. Weights are the raw softmax probabilities (not renormalised).
    An entropy penalty ("dynamic loss") stops the router from going uniform to activate more experts.

    With ``shared`` = S > 0 the router also scores S always-on shared experts (UniMoE-Audio): a second fp32 gate
    gives them logits, the selection S_t is unchanged (top-p over the routable experts' softmax), and the
    weights become one softmax over the selected and shared logits together,
    ``w_i = exp(z_i) / Σ_{j ∈ S_t ∪ shared} exp(z_j)``, returned in ``weights`` and ``shared_weights[T, S]``.
    The aux losses still see the routable logits only.

    Args:
        p: mass threshold in (0, 1] (0.4 in the official code; 0.7 in UniMoE-Audio).
        k_max: optional cap on experts per token.
        entropy_coef: weight of the dynamic (entropy) loss.
        shared: number of shared experts the router also weights (0: none; the layer's
            :class:`~zoo.moe.experts.SharedExperts` must then have as many).
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        *,
        p: float = 0.4,
        k_max: int | None = None,
        entropy_coef: float = 1e-4,
        shared: int = 0,
        **kw,
    ) -> None:
        super().__init__(d_model, num_experts, **kw)
        check_arg(0 < p <= 1, "p", p, "a float in (0, 1]")
        check_arg(k_max is None or 1 <= k_max <= num_experts, "k_max", k_max, f"None or an int in [1, {num_experts}]")
        check_arg(entropy_coef >= 0, "entropy_coef", entropy_coef, "a non-negative float")
        check_arg(isinstance(shared, int) and shared >= 0, "shared", shared, "an int >= 0")
        self.p, self.k_max, self.entropy_coef, self.num_shared = p, k_max, entropy_coef, shared
        if shared:
            self.shared_gate = nn.Linear(d_model, shared, bias=False)
            nn.init.normal_(self.shared_gate.weight, std=d_model**-0.5)

    def select(self, logits_TE: torch.Tensor, x_TD: torch.Tensor, token_ids_T: torch.Tensor | None) -> Routing:
        probs = torch.softmax(logits_TE, dim=-1)
        sorted_p, order = probs.detach().sort(dim=-1, descending=True)
        mass_before = sorted_p.cumsum(-1) - sorted_p
        keep_sorted = mass_before < self.p
        mask = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
        ids, weights = _compact(mask, probs, self.k_max)
        routing = Routing(ids, weights, logits_TE)
        if self.num_shared:
            routing.weights, routing.shared_weights = self._joint_weights(logits_TE, x_TD, ids)
        if self.entropy_coef:
            routing.aux["entropy"] = self.entropy_coef * losses.routing_entropy(logits_TE)
        return routing

    def _joint_weights(
        self, logits_TE: torch.Tensor, x_TD: torch.Tensor, ids_TK: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax over each token's selected logits and its shared logits: ``(weights[T, k], shared[T, S])``."""
        with torch.autocast(device_type=x_TD.device.type, enabled=False):
            shared_TS = F.linear(x_TD.float(), self.shared_gate.weight.float())
        chosen_TK = logits_TE.gather(1, ids_TK.clamp_min(0)).masked_fill(ids_TK < 0, -math.inf)
        joint = torch.softmax(torch.cat([chosen_TK, shared_TS], dim=-1), dim=-1)
        return joint[:, : ids_TK.shape[1]], joint[:, ids_TK.shape[1] :]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}, k_max={self.k_max}, shared={self.num_shared}"


class ThresholdRouter(Router):
    """Threshold (dynamic-k) routing: every expert whose probability is ≥ ``threshold``, at least the top one.

    Args:
        threshold: probability cut in (0, 1].
        k_max: optional cap on experts per token.
        renormalize: renormalise the kept probabilities to sum to 1.
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        *,
        threshold: float = 0.1,
        k_max: int | None = None,
        renormalize: bool = False,
        **kw,
    ) -> None:
        super().__init__(d_model, num_experts, **kw)
        check_arg(0 < threshold <= 1, "threshold", threshold, "a float in (0, 1]")
        check_arg(k_max is None or 1 <= k_max <= num_experts, "k_max", k_max, f"None or an int in [1, {num_experts}]")
        self.threshold, self.k_max, self.renormalize = threshold, k_max, renormalize

    def select(self, logits_TE: torch.Tensor, x_TD: torch.Tensor, token_ids_T: torch.Tensor | None) -> Routing:
        probs = torch.softmax(logits_TE, dim=-1)
        ids, weights = _compact((probs >= self.threshold) | _top1_mask(probs), probs, self.k_max)
        if self.renormalize:
            weights = weights / weights.sum(-1, keepdim=True)
        return Routing(ids, weights, logits_TE)


class SoftRouter(Router):
    """Soft (dense) gating: every token uses every expert, weighted by the softmax (classic MoE, MMoE gates).

    Balance loss is off by default: with all experts active it has nothing to balance.
    """

    def __init__(self, d_model: int, num_experts: int, *, balance_coef: float = 0.0, **kw) -> None:
        super().__init__(d_model, num_experts, balance_coef=balance_coef, **kw)

    def select(self, logits_TE: torch.Tensor, x_TD: torch.Tensor, token_ids_T: torch.Tensor | None) -> Routing:
        T, E = logits_TE.shape
        ids = torch.arange(E, device=logits_TE.device).expand(T, E)
        return Routing(ids, torch.softmax(logits_TE, dim=-1), logits_TE)


class HashRouter(Router):
    """Hash routing (Roller et al. 2021, "Hash Layers for Large Sparse Models"): a fixed, unlearned assignment.

    With ``token_ids`` (vocabulary ids, user ids, ...) the expert is a fixed random hash of the id; without them
    it is a locality-sensitive hash of the representation (signs of ``hash_bits`` fixed random projections),
    so similar tokens share an expert. k > 1 takes k distinct experts; each gets weight 1/k. No parameters, no
    auxiliary losses; the logits are zeros.
    """

    learned = False

    def __init__(self, d_model: int, num_experts: int, k: int = 1, *, hash_bits: int = 16, seed: int = 0) -> None:
        super().__init__(d_model, num_experts, balance_coef=0.0)
        check_arg(isinstance(k, int) and 1 <= k <= num_experts, "k", k, f"an int in [1, num_experts={num_experts}]")
        check_arg(1 <= hash_bits <= 62, "hash_bits", hash_bits, "an int in [1, 62]")
        self.k = k
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(d_model, hash_bits, generator=gen))
        self.register_buffer("permutation", torch.randperm(num_experts, generator=gen))
        self.register_buffer("bit_values", 2 ** torch.arange(hash_bits))

    def router_logits(self, x_TD: torch.Tensor) -> torch.Tensor:
        return x_TD.new_zeros(x_TD.shape[0], self.num_experts, dtype=torch.float32)

    def select(self, logits_TE: torch.Tensor, x_TD: torch.Tensor, token_ids_T: torch.Tensor | None) -> Routing:
        if token_ids_T is None:
            bits = (x_TD.float() @ self.projection.float()) > 0
            codes = (bits.long() * self.bit_values).sum(-1)  # no integer matmul: CUDA has none
        else:
            check_arg(token_ids_T.shape == x_TD.shape[:1], "token_ids.shape", tuple(token_ids_T.shape), f"[{x_TD.shape[0]}]")
            codes = token_ids_T.long()
        # Knuth's multiplicative hash (int64 wrap-around is harmless: % keeps it in range); the permutation
        # breaks any residual id order.
        base = (codes * 2654435761) % (2**31 - 1) % self.num_experts
        slots = (base[:, None] + torch.arange(self.k, device=base.device)) % self.num_experts
        ids = self.permutation[slots]
        weights = torch.full(ids.shape, 1.0 / self.k, device=ids.device)
        return Routing(ids, weights, logits_TE)


class DomainRouter(Router):
    """Domain routing: every token goes to the expert its ``token_ids`` name, with weight 1 (k = 1).

    The ids are given, not learned: a token's domain or dataset mapped to that domain's expert (DEMix-style domain
    experts; an oracle for dataset-aware MoE such as DAMEX). The gate is still learned, so ``Routing.logits`` are
    real router scores that a loss or a routing-accuracy diagnostic can use, but it never changes the choice.
    The balance loss is off by default (the choice does not depend on the gate).

    Args:
        capacity_factor: as :class:`TopKRouter`'s (overflow dropped, earlier tokens first); None is dropless. An
            oracle compared with a learned top-1 router should have the same capacity, or it also wins by dropping
            nothing.
        eval_dropless: apply the capacity in training only, as :class:`TopKRouter`'s.
    """

    k = 1

    def __init__(self, d_model: int, num_experts: int, *, capacity_factor: float | None = None,
                 eval_dropless: bool = False, balance_coef: float = 0.0, **kw: float) -> None:
        super().__init__(d_model, num_experts, balance_coef=balance_coef, **kw)
        check_arg(capacity_factor is None or capacity_factor > 0, "capacity_factor", capacity_factor, "None or > 0")
        self.capacity_factor, self.eval_dropless = capacity_factor, eval_dropless

    def select(self, logits_TE: torch.Tensor, x_TD: torch.Tensor, token_ids_T: torch.Tensor | None) -> Routing:
        if token_ids_T is None:
            raise ZooValueError("DomainRouter needs token_ids (each token's expert id); pass token_ids to the MoE layer")
        check_arg(token_ids_T.shape == x_TD.shape[:1], "token_ids.shape", tuple(token_ids_T.shape), f"[{x_TD.shape[0]}]")
        ids = token_ids_T.long().to(logits_TE.device)
        if ids.numel():
            lo, hi = int(ids.min()), int(ids.max())
            check_arg(lo >= 0 and hi < self.num_experts, "token_ids", f"values in [{lo}, {hi}]",
                      f"expert ids in [0, {self.num_experts})")
        ids, weights = ids[:, None], torch.ones(ids.shape[0], 1, device=logits_TE.device)
        if self.capacity_factor is None or (self.eval_dropless and not self.training):
            return Routing(ids, weights, logits_TE)
        kept_ids, kept_weights, drop_rate = apply_capacity(ids, weights, self.num_experts, self.capacity_factor)
        return Routing(kept_ids, kept_weights, logits_TE, drop_rate=drop_rate, requested_ids=ids)


class DenseToSparseRouter(Router):
    """EvoMoE's dense-to-sparse gate (Nie et al. 2022, "EvoMoE"): start dense, anneal to sparse top-k.

    In training, gates are a Gumbel-softmax over ``log softmax(logits)`` with temperature τ annealed
    exponentially from ``tau_start`` to ``tau_end`` over ``anneal_steps`` optimizer steps; experts whose gate
    exceeds ``threshold`` (0.02 in the paper) are kept, with their gates as weights (not renormalised). A high
    τ spreads the gate over all experts (dense); a low one concentrates it. After annealing, and in eval,
    it routes top-``k`` with softmax weights (top-1 in the paper).
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        k: int = 1,
        *,
        tau_start: float = 2.0,
        tau_end: float = 0.3,
        anneal_steps: int = 1000,
        threshold: float = 0.02,
        **kw,
    ) -> None:
        super().__init__(d_model, num_experts, **kw)
        check_arg(isinstance(k, int) and 1 <= k <= num_experts, "k", k, f"an int in [1, num_experts={num_experts}]")
        check_arg(tau_start >= tau_end > 0, "tau_start, tau_end", (tau_start, tau_end), "tau_start >= tau_end > 0")
        check_arg(anneal_steps >= 0, "anneal_steps", anneal_steps, "a non-negative int")
        check_arg(0 <= threshold < 1, "threshold", threshold, "a float in [0, 1)")
        self.k, self.tau_start, self.tau_end = k, tau_start, tau_end
        self.anneal_steps, self.threshold = anneal_steps, threshold
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def temperature(self) -> float:
        if self.anneal_steps == 0:
            return self.tau_end
        frac = min(1.0, int(self.step) / self.anneal_steps)
        return self.tau_start * (self.tau_end / self.tau_start) ** frac

    @property
    def is_dense_phase(self) -> bool:
        return self.training and int(self.step) < self.anneal_steps

    def select(self, logits_TE: torch.Tensor, x_TD: torch.Tensor, token_ids_T: torch.Tensor | None) -> Routing:
        if self.is_dense_phase:
            gates = F.gumbel_softmax(torch.log_softmax(logits_TE, dim=-1), tau=self.temperature, dim=-1)
            ids, weights = _compact((gates > self.threshold) | _top1_mask(gates), gates)
        else:
            probs = torch.softmax(logits_TE, dim=-1)
            weights, ids = probs.topk(self.k, dim=-1)
        return Routing(ids, weights, logits_TE)

    def on_optimizer_step(self, step: int) -> None:
        self.step.fill_(step + 1)


ROUTERS: dict[str, type[Router]] = {
    "top_k": TopKRouter,
    "aux_free": AuxFreeRouter,
    "expert_choice": ExpertChoiceRouter,
    "top_p": TopPRouter,
    "threshold": ThresholdRouter,
    "soft": SoftRouter,
    "hash": HashRouter,
    "domain": DomainRouter,
    "dense_to_sparse": DenseToSparseRouter,
}


class SplitRouter(Router):
    """Router of a dense FFN cut into ``G`` parts (:func:`zoo.moe.split_dense_ffn`; Dynamic-DINO-style MoE-fication):
    dense first, then learned top-k over the parts.

    Dense phase: every part runs, with weight ``G · p_e`` for ``p = softmax(x W)``. The gate starts at zero, so
    every weight starts at 1 and the layer is exactly the dense FFN the parts were cut from; the gate then learns,
    per token, which parts matter, so sparsifying does not start from a tie (a zero gate would send every token
    to the same k parts). After :meth:`sparsify`: the top-``k`` parts run with weight ``(G / k) · G · p_e``; the
    factor ``G / k`` keeps the layer's output scale when the gate is near uniform (k parts then stand in for G).
    Weights keep the raw probabilities (not renormalised over the k), so the gate learns from the task loss for
    every k, k = 1 included. The phase is a persistent buffer: it travels with checkpoints.
    """

    def __init__(self, d_model: int, groups: int, k: int) -> None:
        super().__init__(d_model, groups, balance_coef=0.0)
        check_arg(isinstance(k, int) and 1 <= k <= groups, "k", k, f"an int in [1, {groups}]")
        nn.init.zeros_(self.gate.weight)
        self.top_k = k
        self.register_buffer("sparse", torch.zeros((), dtype=torch.bool))

    @property
    def k(self) -> int:
        """Parts a token runs now: all of them in the dense phase."""
        return self.top_k if bool(self.sparse) else self.num_experts

    def sparsify(self) -> None:
        """Switch to top-k routing (idempotent)."""
        self.sparse.fill_(True)

    def select(self, logits_TE: torch.Tensor, x_TD: torch.Tensor, token_ids_T: torch.Tensor | None) -> Routing:
        T, G = logits_TE.shape
        probs_TE = torch.softmax(logits_TE, dim=-1)
        if not bool(self.sparse):
            return Routing(torch.arange(G, device=logits_TE.device).expand(T, G), probs_TE * G, logits_TE)
        probs, ids = probs_TE.topk(self.top_k, dim=-1)
        return Routing(ids, probs * (G * G / self.top_k), logits_TE)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.top_k}, sparse={bool(self.sparse)}"
