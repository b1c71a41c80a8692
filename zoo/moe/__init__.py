"""The shared MoE backbone: routers, expert banks, the MoE layer, balance losses and routing statistics.

Every task builds its models from these parts (docs/architecture.md, "The MoE contract"); none re-implements
routing, dispatch or balancing.
``MoEConfig`` (``zoo.moe.config``) is torch-free; the rest load on first access, so a task's config module can
import ``zoo.moe.MoEConfig`` without importing torch.
"""

import importlib
from typing import Any

_HOMES = {
    "config": ("MoEConfig",),
    "experts": ("Experts", "FFNExperts", "ModuleExperts", "SharedExperts", "SpecialExperts", "split_dense_ffn"),
    "layer": ("MoELayer", "MoEOutput", "build_router", "collect", "count_params", "on_optimizer_step", "routers",
              "total_aux_loss"),
    "losses": ("importance_loss", "load_balance_loss", "router_z_loss", "routing_entropy", "smooth_load_loss"),
    "routing": ("ROUTERS", "AuxFreeRouter", "DenseToSparseRouter", "DomainRouter", "ExpertChoiceRouter", "HashRouter",
                "Router", "Routing", "SoftRouter", "SplitRouter", "ThresholdRouter", "TopKRouter", "TopPRouter"),
    "parallel": ("CommBytes", "ExpertParallelFFN", "all_reduce_expert_tokens", "all_to_all_bytes", "expert_parallel_mesh",
                 "global_expert_stats", "uniform_all_to_all_bytes"),
    "stats": ("ExpertStats", "routing_stats"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'zoo.moe' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME_OF])


__all__ = [
    "ROUTERS",
    "AuxFreeRouter",
    "DenseToSparseRouter",
    "DomainRouter",
    "ExpertChoiceRouter",
    "ExpertStats",
    "Experts",
    "FFNExperts",
    "HashRouter",
    "MoEConfig",
    "MoELayer",
    "MoEOutput",
    "ModuleExperts",
    "Router",
    "Routing",
    "SharedExperts",
    "SoftRouter",
    "SplitRouter",
    "SpecialExperts",
    "ThresholdRouter",
    "TopKRouter",
    "TopPRouter",
    "build_router",
    "collect",
    "count_params",
    "importance_loss",
    "load_balance_loss",
    "on_optimizer_step",
    "router_z_loss",
    "routers",
    "routing_entropy",
    "routing_stats",
    "split_dense_ffn",
    "smooth_load_loss",
    "total_aux_loss",
]
