"""The shared MoE backbone: routers, expert banks, the MoE layer, balance losses and routing statistics.

Every task builds its models from these parts (ARCHITECTURE.md, "The MoE contract"); none re-implements
routing, dispatch or balancing.
"""

from .experts import Experts, FFNExperts, ModuleExperts, SharedExperts, SpecialExperts
from .layer import (
    MoEConfig,
    MoELayer,
    MoEOutput,
    build_router,
    collect,
    count_params,
    on_optimizer_step,
    routers,
    total_aux_loss,
)
from .losses import importance_loss, load_balance_loss, router_z_loss, routing_entropy
from .routing import (
    ROUTERS,
    AuxFreeRouter,
    DenseToSparseRouter,
    ExpertChoiceRouter,
    HashRouter,
    Router,
    Routing,
    SoftRouter,
    ThresholdRouter,
    TopKRouter,
    TopPRouter,
)
from .stats import ExpertStats, routing_stats

__all__ = [
    "ROUTERS",
    "AuxFreeRouter",
    "DenseToSparseRouter",
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
    "total_aux_loss",
]
