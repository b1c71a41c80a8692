"""The ``moe.*`` block of recipes: everything needed to build an MoE layer. Torch-free, so a recipe can be
resolved and shown without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.errors import check_arg


@dataclass
class MoEConfig:
    """Everything needed to build an :class:`MoELayer` for a given ``d_model``; the ``moe.*`` block of recipes.

    ``router_kwargs`` go to the router class (e.g. ``{"p": 0.4}`` for ``top_p``, ``{"capacity_factor": 1.25}``
    for ``top_k``); ``k`` is passed to routers that take it. ``balance_coef``/``z_coef`` left as None keep the
    router's own default (0.01 balance for top-k, none for balanced-by-construction routers).
    ``num_shared`` always-on shared experts are added to every token's output; ``shared_gated`` scales them by a
    sigmoid gate (Qwen2-MoE); ``shared_routed`` lets the ``top_p`` router score them too (UniMoE-Audio): each
    token's selected experts and the shared ones are weighted by one softmax over their logits together.
    Router-input jitter is a router kwarg, e.g. ``{"p": 0.7, "jitter": 0.01}``.
    ``expert_parallel`` > 1 shards the FFN experts over groups of that many ranks (``zoo.moe.parallel``); it must
    divide ``num_experts``, and the world size when the layer is built.
    """

    num_experts: int = 8
    k: int = 2
    d_hidden: int = 256
    activation: str = "gelu"
    router: str = "top_k"
    router_kwargs: dict[str, Any] = field(default_factory=dict)
    balance_coef: float | None = None
    z_coef: float | None = None
    num_shared: int = 0
    shared_gated: bool = False
    shared_routed: bool = False
    num_zero: int = 0
    num_copy: int = 0
    num_constant: int = 0
    num_null: int = 0
    zero_renormalize: bool = True
    backend: str = "auto"
    expert_parallel: int = 1

    def __post_init__(self) -> None:
        num_special = self.num_zero + self.num_copy + self.num_constant + self.num_null
        check_arg(self.num_experts >= 1, "moe.num_experts", self.num_experts, "a positive int")
        for name in ("num_shared", "num_zero", "num_copy", "num_constant", "num_null"):
            check_arg(getattr(self, name) >= 0, f"moe.{name}", getattr(self, name), "an int >= 0")
        routable = self.num_experts + num_special
        check_arg(1 <= self.k <= routable, "moe.k", self.k, f"an int in [1, {routable}] (the routable experts)")
        check_arg(self.d_hidden >= 1, "moe.d_hidden", self.d_hidden, "a positive int")
        ep = self.expert_parallel
        check_arg(isinstance(ep, int) and not isinstance(ep, bool) and ep >= 1 and self.num_experts % ep == 0,
                  "moe.expert_parallel", ep, f"a positive divisor of moe.num_experts={self.num_experts}")
        for name in ("balance_coef", "z_coef"):
            value = getattr(self, name)
            check_arg(value is None or value >= 0, f"moe.{name}", value, "None or a float >= 0")
        if self.shared_routed:
            check_arg(self.num_shared >= 1 and self.router == "top_p" and not self.shared_gated, "moe.shared_routed",
                      self.shared_routed, f"moe.num_shared >= 1, moe.router='top_p' and moe.shared_gated=False "
                      f"(got num_shared={self.num_shared}, router={self.router!r}, shared_gated={self.shared_gated})")
