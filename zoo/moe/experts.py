"""Expert banks: what routed tokens are sent to.

* :class:`FFNExperts` — the stacked FFN bank (``w1[E, D, F]``, ``w2[E, F, D]``, ``w3[E, D, F]`` for SwiGLU) that
  every fused kernel serves through :func:`zoo.kernels.moe_ffn`.
* :class:`ModuleExperts` — heterogeneous experts (hash-grid NeRF experts, prompt experts, policy heads): any
  list of modules with the same input, dispatched by a sorted per-expert loop.
* :class:`SpecialExperts` — MoE++ zero / copy / constant experts and AdaMoE null experts, applied element-wise
  outside the FFN kernel.
* :class:`SharedExperts` — always-on experts (DeepSeekMoE, Qwen2-MoE, UniMoE-Audio), a dense FFN on every token,
  optionally weighted per token and per expert by the router.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import check_arg
from zoo.kernels import ACTIVATIONS, backends, moe_ffn
from zoo.kernels.activations import GATED, apply_activation
from zoo.kernels.dispatch import accumulation_dtype, combine, sort_slots


class Experts(nn.Module, abc.ABC):
    """Interface of a routed expert bank: ``forward(x[T, D], ids[T, k], weights[T, k]) → y[T, D_out]``.

    ``y[t] = Σ_s weights[t, s] · expert_{ids[t, s]}(x[t])``; slots with id −1 contribute nothing. With
    ``weights=None`` it returns the unweighted per-slot outputs ``[T, k, D_out]`` (zeros in empty slots).
    """

    num_experts: int

    @abc.abstractmethod
    def forward(self, x_TD: torch.Tensor, ids_TK: torch.Tensor, weights_TK: torch.Tensor | None) -> torch.Tensor:
        """Weighted sum of the routed experts' outputs per token."""


def _uniform_(t: torch.Tensor, fan_in: int) -> torch.Tensor:
    """``nn.Linear``'s default init, applied per expert: U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(t, -bound, bound)


class FFNExperts(Experts):
    """``E`` two-layer FFN experts stored as stacked tensors so one grouped kernel runs them all.

    Args:
        num_experts: E.
        d_model: D, input and output width.
        d_hidden: F, hidden width of each expert.
        activation: ``gelu``, ``silu``, ``relu`` or ``swiglu`` (gated; adds ``w3``).
        backend: ``zoo.kernels`` backend, ``auto`` by default (the fastest one that accepts the inputs).
    """

    def __init__(self, num_experts: int, d_model: int, d_hidden: int, activation: str = "gelu", backend: str = "auto") -> None:
        super().__init__()
        for name, value in (("num_experts", num_experts), ("d_model", d_model), ("d_hidden", d_hidden)):
            check_arg(isinstance(value, int) and value > 0, name, value, "a positive int")
        check_arg(activation in ACTIVATIONS, "activation", activation, ACTIVATIONS)
        check_arg(backend == "auto" or backend in backends(), "backend", backend, ["auto", *backends()])
        self.num_experts, self.d_model, self.d_hidden = num_experts, d_model, d_hidden
        self.activation, self.backend = activation, backend
        self.w1 = nn.Parameter(_uniform_(torch.empty(num_experts, d_model, d_hidden), d_model))
        self.w2 = nn.Parameter(_uniform_(torch.empty(num_experts, d_hidden, d_model), d_hidden))
        self.w3 = nn.Parameter(_uniform_(torch.empty(num_experts, d_model, d_hidden), d_model)) if activation in GATED else None

    def forward(self, x_TD: torch.Tensor, ids_TK: torch.Tensor, weights_TK: torch.Tensor | None) -> torch.Tensor:
        return moe_ffn(x_TD, ids_TK, weights_TK, self.w1, self.w2, self.w3, self.activation, self.backend)

    def extra_repr(self) -> str:
        return f"E={self.num_experts}, D={self.d_model}, F={self.d_hidden}, activation={self.activation}, backend={self.backend}"


class ModuleExperts(Experts):
    """Heterogeneous experts: any modules mapping ``x[n, D]`` to ``[n, D_out]``, run per expert on its tokens.

    Slots are sorted by expert once and combined deterministically, as in the FFN kernels.
    """

    def __init__(self, experts: list[nn.Module] | nn.ModuleList) -> None:
        super().__init__()
        check_arg(len(experts) > 0, "experts", f"{len(experts)} modules", "at least one module")
        self.experts = nn.ModuleList(experts)
        self.num_experts = len(self.experts)

    def forward(self, x_TD: torch.Tensor, ids_TK: torch.Tensor, weights_TK: torch.Tensor | None) -> torch.Tensor:
        if ids_TK.numel():
            lo, hi = int(ids_TK.min()), int(ids_TK.max())
            check_arg(lo >= -1 and hi < self.num_experts, "ids", f"values in [{lo}, {hi}]", f"expert ids in [0, {self.num_experts}) or -1")
        slots = sort_slots(ids_TK.long(), self.num_experts)
        x_ND = x_TD.index_select(0, slots.token_idx_N)
        outputs = [expert(x_nD) for expert, x_nD in zip(self.experts, x_ND.split(slots.counts_E.tolist()))]
        return combine(torch.cat(outputs), slots, weights_TK, x_TD.dtype)


class SpecialExperts(nn.Module):
    """Computation-free experts, numbered after the FFN experts in this order: zero, copy, constant, null.

    * zero (MoE++): outputs 0, so a token that picks it spends less compute;
    * copy (MoE++): outputs ``x``;
    * constant (MoE++): outputs ``α₁·x + α₂·v`` with a learned vector ``v`` and ``[α₁, α₂] = softmax(W_c x)``;
    * null (AdaMoE): outputs 0, used to let top-k pick "fewer" real experts.

    With ``zero_renormalize`` (MoE++ official code), in a token that picked a zero expert that expert's weight is
    set to 0 and the token's other weights are renormalised, so picking it removes compute without shrinking the
    output; tokens that picked no zero expert keep their weights.
    """

    def __init__(
        self,
        d_model: int,
        first_id: int,
        *,
        num_zero: int = 0,
        num_copy: int = 0,
        num_constant: int = 0,
        num_null: int = 0,
        zero_renormalize: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("num_zero", num_zero), ("num_copy", num_copy), ("num_constant", num_constant), ("num_null", num_null)):
            check_arg(isinstance(value, int) and value >= 0, name, value, "a non-negative int")
        self.first_id = first_id
        self.counts = {"zero": num_zero, "copy": num_copy, "constant": num_constant, "null": num_null}
        self.num_experts = sum(self.counts.values())
        self.zero_renormalize = zero_renormalize
        self.constant_vectors = self.constant_mix = None
        if num_constant:  # no empty parameters: DDP would report them unused
            self.constant_vectors = nn.Parameter(torch.randn(num_constant, d_model) * d_model**-0.5)
            self.constant_mix = nn.Parameter(torch.randn(num_constant, d_model, 2) * d_model**-0.5)

    def id_range(self, kind: str) -> tuple[int, int]:
        """``[start, stop)`` of the global expert ids of one kind."""
        start = self.first_id
        for name, count in self.counts.items():
            if name == kind:
                return start, start + count
            start += count
        raise KeyError(kind)

    def forward(
        self, x_TD: torch.Tensor, ids_TK: torch.Tensor, weights_TK: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Apply the special experts; return ``(y_special[T, D], ffn_ids, ffn_weights)``.

        ``ffn_ids`` has every special slot rewritten to −1, so the FFN kernel sees ``[0, first_id) ∪ {−1}``.
        """
        weights_TK = torch.where(ids_TK >= 0, weights_TK, torch.zeros_like(weights_TK))
        if self.zero_renormalize and self.counts["zero"]:
            lo, hi = self.id_range("zero")
            is_zero = (ids_TK >= lo) & (ids_TK < hi)
            kept = torch.where(is_zero, torch.zeros_like(weights_TK), weights_TK)
            total = kept.sum(-1, keepdim=True)
            renormalize = is_zero.any(-1, keepdim=True) & (total > 0)
            weights_TK = torch.where(renormalize, kept / total.clamp_min(1e-20), kept)
        acc = accumulation_dtype(x_TD.dtype)  # fp32, or fp64 for fp64 inputs
        y_TD = torch.zeros_like(x_TD, dtype=acc)
        lo, hi = self.id_range("copy")
        copy_w = torch.where((ids_TK >= lo) & (ids_TK < hi), weights_TK, 0.0).sum(-1)
        y_TD = y_TD + copy_w[:, None] * x_TD.to(acc)
        lo, _ = self.id_range("constant")
        for c in range(self.counts["constant"]):
            w_T = torch.where(ids_TK == lo + c, weights_TK, 0.0).sum(-1)
            alpha_T2 = torch.softmax(x_TD.to(acc) @ self.constant_mix[c].to(acc), dim=-1)
            out_TD = alpha_T2[:, :1] * x_TD.to(acc) + alpha_T2[:, 1:] * self.constant_vectors[c].to(acc)
            y_TD = y_TD + w_T[:, None] * out_TD
        is_special = ids_TK >= self.first_id
        ffn_ids = torch.where(is_special, torch.full_like(ids_TK, -1), ids_TK)
        ffn_weights = torch.where(is_special, torch.zeros_like(weights_TK), weights_TK)
        return y_TD.to(x_TD.dtype), ffn_ids, ffn_weights


class SharedExperts(nn.Module):
    """Always-on experts applied to every token (DeepSeekMoE shared experts, Qwen2-MoE shared expert).

    ``num_shared`` experts of width F are one dense FFN of width ``num_shared·F`` (the sum of their outputs):
    expert s owns the hidden units ``[s·F, (s+1)·F)``. With ``gated`` the output is scaled per token by
    ``sigmoid(x·w_gate)`` (Qwen2-MoE). Given router weights ``w[T, num_shared]`` (UniMoE-Audio, whose router
    scores the shared experts too) the output is ``Σ_s w_s · FFN_s(x)``, computed by scaling each expert's
    hidden units before ``w2``.
    """

    def __init__(self, d_model: int, d_hidden: int, num_shared: int = 1, activation: str = "gelu", gated: bool = False) -> None:
        super().__init__()
        check_arg(isinstance(num_shared, int) and num_shared > 0, "num_shared", num_shared, "a positive int")
        check_arg(activation in ACTIVATIONS, "activation", activation, ACTIVATIONS)
        width = num_shared * d_hidden
        self.num_shared, self.d_hidden, self.activation = num_shared, d_hidden, activation
        self.w1 = nn.Parameter(_uniform_(torch.empty(d_model, width), d_model))
        self.w2 = nn.Parameter(_uniform_(torch.empty(width, d_model), width))
        self.w3 = nn.Parameter(_uniform_(torch.empty(d_model, width), d_model)) if activation in GATED else None
        self.gate = nn.Linear(d_model, 1, bias=False) if gated else None

    def forward(self, x_TD: torch.Tensor, weights_TS: torch.Tensor | None = None) -> torch.Tensor:
        """Shared experts' output ``[T, D]``; ``weights_TS`` (optional) weigh each expert per token."""
        dtype = x_TD.dtype
        g = x_TD @ self.w3.to(dtype) if self.w3 is not None else None
        h_TF = apply_activation(x_TD @ self.w1.to(dtype), self.activation, g)
        if weights_TS is not None:
            T = x_TD.shape[0]
            check_arg(tuple(weights_TS.shape) == (T, self.num_shared), "shared weights.shape", tuple(weights_TS.shape),
                      f"[{T}, {self.num_shared}] (tokens, shared experts)")
            h_TSF = h_TF.reshape(T, self.num_shared, self.d_hidden) * weights_TS.to(dtype)[:, :, None]
            h_TF = h_TSF.reshape(h_TF.shape)
        y_TD = h_TF @ self.w2.to(dtype)
        if self.gate is not None:
            acc = accumulation_dtype(x_TD.dtype)
            gate_T1 = F.linear(x_TD.to(acc), self.gate.weight.to(acc))
            y_TD = y_TD * torch.sigmoid(gate_T1).to(dtype)
        return y_TD


def split_dense_ffn(w1_DF: torch.Tensor, w2_FD: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a dense FFN's hidden units into ``groups`` consecutive slices: ``w1[G, D, F/G]``, ``w2[G, F/G, D]``.

    ``Σ_g gelu(x w1_g) w2_g = gelu(x w1) w2``: the activation is element-wise, so the parts sum to the dense FFN.
    """
    D, F_ = w1_DF.shape
    check_arg(tuple(w2_FD.shape) == (F_, D), "w2.shape", tuple(w2_FD.shape), f"({F_}, {D}), the transpose of w1's")
    check_arg(isinstance(groups, int) and groups >= 1 and F_ % groups == 0, "groups", groups,
              f"a positive divisor of the hidden width {F_}")
    return w1_DF.reshape(D, groups, F_ // groups).permute(1, 0, 2).contiguous(), w2_FD.reshape(groups, F_ // groups, D)
