"""Per-layer routing statistics: what the expert-stats callback logs and plots.

Computed without gradients from a layer's :class:`~zoo.moe.routing.Routing`; all fields are detached tensors
on the routing's device and nothing is copied to the host until a logger asks. (Counting valid ids uses a
boolean mask, which synchronises on CUDA; the GPU kernels issue makes routing metadata sync-free.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .losses import routing_entropy


@dataclass(frozen=True)
class ExpertStats:
    """Routing statistics of one layer for one batch.

    ``tokens[E]``: slots assigned to each routable expert (FFN then special ones); ``load[E]``: the same as
    fractions of all assigned slots; ``drop_rate``: fraction of requested slots dropped by capacity (0 if the
    router has no capacity); ``entropy``: mean router entropy in nats; ``active_experts``: mean number of FFN
    experts that process a token (the compute actually spent); ``num_ffn``: how many of the E are FFN experts.
    """

    tokens: torch.Tensor
    load: torch.Tensor
    drop_rate: torch.Tensor
    entropy: torch.Tensor
    active_experts: torch.Tensor
    num_ffn: int

    @property
    def num_experts(self) -> int:
        return self.tokens.shape[0]

    def load_cv(self) -> torch.Tensor:
        """Coefficient of variation of the load across experts: 0 is perfectly balanced."""
        return self.load.std(unbiased=False) / self.load.mean().clamp_min(1e-12)

    def as_scalars(self) -> dict[str, float]:
        """Flat ``name → float`` view for loggers: summary numbers plus ``load/e{i}`` per expert."""
        out = {
            "drop_rate": float(self.drop_rate),
            "entropy": float(self.entropy),
            "active_experts": float(self.active_experts),
            "load_cv": float(self.load_cv()),
        }
        out.update({f"load/e{i}": float(v) for i, v in enumerate(self.load.tolist())})
        return out


@torch.no_grad()
def routing_stats(
    ids_TK: torch.Tensor,
    logits_TE: torch.Tensor,
    ffn_ids_TK: torch.Tensor,
    num_ffn: int,
    drop_rate: torch.Tensor | None = None,
) -> ExpertStats:
    """Statistics of one routing decision; ``ffn_ids`` are the ids left for the FFN kernel (specials → −1)."""
    E = logits_TE.shape[-1]
    tokens = torch.bincount(ids_TK[ids_TK >= 0], minlength=E)
    load = tokens.float() / tokens.sum().clamp_min(1).float()
    T = max(ids_TK.shape[0], 1)
    return ExpertStats(
        tokens=tokens,
        load=load,
        drop_rate=drop_rate.detach().float() if drop_rate is not None else logits_TE.new_zeros(()),
        entropy=routing_entropy(logits_TE.detach()),
        active_experts=(ffn_ids_TK >= 0).sum().float() / T,
        num_ffn=num_ffn,
    )
