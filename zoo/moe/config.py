"""The ``moe.*`` block of recipes: everything needed to build an MoE layer. Torch-free, so a recipe can be
resolved and shown without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class MoEConfig:
    """Everything needed to build an :class:`MoELayer` for a given ``d_model``; the ``moe.*`` block of recipes.

    ``router_kwargs`` go to the router class (e.g. ``{"p": 0.4}`` for ``top_p``, ``{"capacity_factor": 1.25}``
    for ``top_k``); ``k`` is passed to routers that take it. ``balance_coef``/``z_coef`` left as None keep the
    router's own default (0.01 balance for top-k, none for balanced-by-construction routers).
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
    num_zero: int = 0
    num_copy: int = 0
    num_constant: int = 0
    num_null: int = 0
    zero_renormalize: bool = True
    backend: str = "auto"
