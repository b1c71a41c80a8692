"""``MoELayer``: router + routed experts (+ special and shared experts), and its config.

The layer returns its auxiliary losses and statistics with its output (:class:`MoEOutput`) instead of hiding
them in module state, so a task model passes them up explicitly and :class:`zoo.module.ZooModule` adds every
loss to the objective and logs every layer.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.errors import ZooValueError, check_arg
from zoo.kernels import weighted_sum

from .config import MoEConfig
from .experts import Experts, FFNExperts, ModuleExperts, SharedExperts, SpecialExperts
from .routing import ROUTERS, Router, Routing
from .stats import ExpertStats, routing_stats


@dataclass
class MoEOutput:
    """A layer's output ``y`` (same shape as its input), its weighted aux losses and its routing statistics.

    ``expert_outputs`` (only when asked for) are the routed FFN experts' unweighted outputs per slot,
    ``[..., k, D]``, aligned with ``routing.ids``/``routing.weights`` and zero in empty or special slots; ``y`` is
    their weighted sum plus the special and shared experts. Losses on individual experts use them.
    """

    y: torch.Tensor
    aux: dict[str, torch.Tensor]
    stats: ExpertStats
    routing: Routing
    expert_outputs: torch.Tensor | None = None


def _router_takes_k(cls: type[Router]) -> bool:
    return "k" in inspect.signature(cls).parameters


def build_router(name: str, d_model: int, num_experts: int, **kwargs: Any) -> Router:
    """Instantiate a router by registry name; an unknown name raises with the closest match."""
    if name not in ROUTERS:
        hint = difflib.get_close_matches(name, ROUTERS, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ZooValueError(f"router={name!r} is not allowed; expected one of {', '.join(ROUTERS)}{suggestion}")
    cls = ROUTERS[name]
    if not _router_takes_k(cls):
        kwargs.pop("k", None)
    try:
        return cls(d_model, num_experts, **kwargs)
    except TypeError as err:
        raise ZooValueError(f"router {name!r}: {err}") from None


class MoELayer(nn.Module):
    """A mixture-of-experts layer: ``y = Σ routed experts + special experts + shared experts``.

    Input ``x[..., D]`` is flattened to tokens ``[T, D]``; ``token_ids[...]`` (optional) feed hash routing.
    The router scores all ``E = experts.num_experts + special.num_experts`` routable experts; special slots
    are applied element-wise and rewritten to −1 before the FFN kernel. ``route_on[..., D_r]`` (optional) is
    what the router scores instead of ``x`` when the gate reads other features than the experts (Switch-NeRF
    gates on an encoding of the point its MLP experts read raw; ``D_r`` is the router's ``d_model``).
    A router that also weights the shared experts (``router.num_shared > 0``, UniMoE-Audio) needs ``shared``
    with as many experts; its ``Routing.shared_weights`` then weigh them per token.
    """

    def __init__(
        self,
        router: Router,
        experts: Experts,
        special: SpecialExperts | None = None,
        shared: SharedExperts | None = None,
    ) -> None:
        super().__init__()
        num_special = special.num_experts if special is not None else 0
        expected = experts.num_experts + num_special
        check_arg(
            router.num_experts == expected,
            "router.num_experts",
            router.num_experts,
            f"{expected} (= {experts.num_experts} experts + {num_special} special experts)",
        )
        if special is not None:
            check_arg(
                special.first_id == experts.num_experts,
                "special.first_id",
                special.first_id,
                f"{experts.num_experts} (special experts are numbered right after the FFN experts)",
            )
        routed_shared = getattr(router, "num_shared", 0)
        if routed_shared:
            have = shared.num_shared if shared is not None else 0
            check_arg(have == routed_shared, "shared.num_shared", have,
                      f"{routed_shared} (the router weights {routed_shared} shared experts)")
        self.router, self.experts, self.special, self.shared = router, experts, special, shared
        self.d_model = router.d_model

    @classmethod
    def from_config(cls, cfg: MoEConfig, d_model: int) -> MoELayer:
        """Build router, FFN bank, special and shared experts from a :class:`MoEConfig`; with
        ``expert_parallel > 1`` the bank is this rank's :class:`~zoo.moe.parallel.ExpertParallelFFN` shard."""
        num_special = cfg.num_zero + cfg.num_copy + cfg.num_constant + cfg.num_null
        router_kwargs = {"k": cfg.k, **cfg.router_kwargs}
        if cfg.shared_routed:
            router_kwargs["shared"] = cfg.num_shared
        for name in ("balance_coef", "z_coef"):
            value = getattr(cfg, name)
            if value is None:
                continue
            if not getattr(ROUTERS.get(cfg.router), "learned", True):
                raise ZooValueError(f"moe.{name}={value!r} does not apply to router {cfg.router!r}, which has no learned gate; leave it unset")
            router_kwargs.setdefault(name, value)
        router = build_router(cfg.router, d_model, cfg.num_experts + num_special, **router_kwargs)
        if cfg.expert_parallel > 1:
            from .parallel import ExpertParallelFFN, expert_parallel_mesh  # torch.distributed only when asked for

            group = expert_parallel_mesh(cfg.expert_parallel).get_group("ep")
            experts = ExpertParallelFFN(cfg.num_experts, d_model, cfg.d_hidden, cfg.activation, cfg.backend, group)
        else:
            experts = FFNExperts(cfg.num_experts, d_model, cfg.d_hidden, cfg.activation, cfg.backend)
        special = None
        if num_special:
            special = SpecialExperts(
                d_model,
                cfg.num_experts,
                num_zero=cfg.num_zero,
                num_copy=cfg.num_copy,
                num_constant=cfg.num_constant,
                num_null=cfg.num_null,
                zero_renormalize=cfg.zero_renormalize,
            )
        shared = SharedExperts(d_model, cfg.d_hidden, cfg.num_shared, cfg.activation, cfg.shared_gated) if cfg.num_shared else None
        return cls(router, experts, special, shared)

    def forward(
        self,
        x: torch.Tensor,
        token_ids: torch.Tensor | None = None,
        *,
        route_on: torch.Tensor | None = None,
        expert_outputs: bool = False,
    ) -> MoEOutput:
        check_arg(x.is_floating_point(), "x.dtype", x.dtype, "a floating dtype")
        if route_on is None or self.special is not None or self.shared is not None:
            check_arg(x.dim() >= 1 and x.shape[-1] == self.d_model, "x.shape", tuple(x.shape), f"[..., {self.d_model}]")
        if route_on is not None:
            check_arg(x.dim() >= 1 and route_on.shape == (*x.shape[:-1], self.d_model), "route_on.shape",
                      tuple(route_on.shape), f"[{', '.join(map(str, x.shape[:-1]))}, {self.d_model}]")
        x_TD = x.reshape(-1, x.shape[-1])
        token_ids_T = token_ids.reshape(-1) if token_ids is not None else None
        routing = self.router(x_TD if route_on is None else route_on.reshape(-1, self.d_model), token_ids_T)
        ffn_ids, ffn_weights = routing.ids, routing.weights
        y_TD = None
        if self.special is not None:
            y_TD, ffn_ids, ffn_weights = self.special(x_TD, ffn_ids, ffn_weights)
        slots_TKD = None
        if expert_outputs:
            slots_TKD = self.experts(x_TD, ffn_ids, None)  # computed once; combined below like the fused path
            y_ffn = weighted_sum(slots_TKD, ffn_weights, slots_TKD.dtype)
        else:
            y_ffn = self.experts(x_TD, ffn_ids, ffn_weights)
        y_TD = y_ffn if y_TD is None else y_TD + y_ffn
        if self.shared is not None:
            y_TD = y_TD + self.shared(x_TD, routing.shared_weights)
        stats = routing_stats(routing.ids, routing.logits, ffn_ids, self.experts.num_experts, routing.drop_rate)
        lead = x.shape[:-1]
        if slots_TKD is not None:
            slots_TKD = slots_TKD.reshape(*lead, *slots_TKD.shape[1:])
        return MoEOutput(y_TD.reshape(*lead, y_TD.shape[-1]), dict(routing.aux), stats, routing, slots_TKD)


def total_aux_loss(aux: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """Sum of already-weighted auxiliary losses, or None when there are none."""
    values = list(aux.values())
    return torch.stack([v.float() for v in values]).sum() if values else None


def collect(outputs: Mapping[str, MoEOutput]) -> tuple[dict[str, torch.Tensor], dict[str, ExpertStats]]:
    """Flatten ``{layer: MoEOutput}`` into ``aux`` keyed ``layer/loss`` and ``stats`` keyed ``layer``."""
    aux = {f"{layer}/{name}": v for layer, out in outputs.items() for name, v in out.aux.items()}
    stats = {layer: out.stats for layer, out in outputs.items()}
    return aux, stats


def routers(module: nn.Module) -> Iterable[Router]:
    """Every router inside ``module``."""
    return (m for m in module.modules() if isinstance(m, Router))


def on_optimizer_step(module: nn.Module, step: int) -> None:
    """Advance the per-step state of every router in ``module`` (aux-free bias, dense-to-sparse temperature).

    Call it once per optimizer step, before the step; :class:`zoo.module.ZooModule` does.
    """
    for router in routers(module):
        router.on_optimizer_step(step)


def _bank_params(experts: nn.Module) -> int:
    """Parameters of a whole bank: an expert-parallel shard holds ``E / ep`` of its ``E`` experts, the others live
    on the other ranks of its group."""
    from .parallel import ExpertParallelFFN

    held = sum(p.numel() for p in experts.parameters())
    return held * experts.num_experts // experts.local_experts if isinstance(experts, ExpertParallelFFN) else held


def count_params(model: nn.Module) -> tuple[int, int]:
    """Parameters in total, and active per token: an MoE layer runs k of its E FFN experts (all of them for
    routers without a fixed k, such as soft gates); heterogeneous experts (:class:`ModuleExperts`) count as their
    mean size. An expert-parallel bank (:class:`~zoo.moe.parallel.ExpertParallelFFN`) counts all E experts, its
    shard's on this rank and those on the others, so every rank reports the model's global count. A module that
    runs only one of several sub-networks per input
    (one model per dataset) says how many of its parameters an input leaves idle with ``inactive_params()``, its
    sub-networks' MoE layers included; nothing inside it is counted again."""
    from .parallel import ExpertParallelFFN

    total = sum(p.numel() for p in model.parameters())
    total += sum(_bank_params(m) - sum(p.numel() for p in m.parameters()) for m in model.modules()
                 if isinstance(m, ExpertParallelFFN))
    inactive = 0
    counted: set[int] = set()
    for m in model.modules():
        if id(m) in counted:
            continue
        if hasattr(m, "inactive_params"):
            inactive += int(m.inactive_params())
            counted |= {id(sub) for sub in m.modules()}
        elif isinstance(m, MoELayer) and isinstance(m.experts, FFNExperts | ModuleExperts | ExpertParallelFFN):
            per_expert = _bank_params(m.experts) / m.experts.num_experts
            k = getattr(m.router, "k", m.experts.num_experts)
            inactive += round(per_expert * max(0, m.experts.num_experts - k))
    return total, total - inactive
