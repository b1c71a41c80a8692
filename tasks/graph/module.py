"""``GraphModule``: self-supervised pretraining of a graph backbone on ego-subgraph batches.

The backbone is one of :mod:`.models`' (one GNN for the single-GNN methods, the dense twin, the mixture without
prompts, or GMoPE), chosen by ``model.method``. A step minimises the pretext loss plus the backbone's aux losses
(the router's balance loss, GMoPE's weighted prompt orthogonality): GraphCL's NT-Xent between the projected graph
embeddings of two augmented views of each ego-subgraph, or link prediction of held-out edges inside each
ego-subgraph against negatives drawn in the same ego-subgraph. Routing reads the un-augmented ego-subgraph (its
router input comes with the batch), so both views of an ego take the same experts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch_geometric.data import Batch

from zoo.module import StepOutput, ZooModule

from .config import GraphConfig, ModelConfig
from .models import GMoPE, DensePromptGNN, GMoPEOutput, MoENoPrompt, PlainGNN
from .pretext import LinkDecoder, drop_edges, link_loss, mask_features, nt_xent

Backbone = PlainGNN | DensePromptGNN | GMoPE


def build_backbone(cfg: ModelConfig, d: int) -> Backbone:
    """The pretrained network of ``cfg.method`` over features of width ``d``."""
    if cfg.method == "gmope":
        return GMoPE(d, cfg.num_experts, cfg.k, cfg.encoder, cfg.hidden, cfg.layers, orth=cfg.orth_coef > 0,
                     orth_coef=cfg.orth_coef, balance_coef=cfg.balance_coef)
    if cfg.method == "moe_no_prompt":
        return MoENoPrompt(d, cfg.num_experts, cfg.k, cfg.encoder, cfg.hidden, cfg.layers,
                           balance_coef=cfg.balance_coef)
    if cfg.method == "dense_prompt":
        return DensePromptGNN(d, cfg.encoder, cfg.hidden, cfg.layers)
    return PlainGNN(d, cfg.encoder, cfg.hidden, cfg.layers)


def held_out_edges(edge_index: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split undirected edges (both directions present): ``share`` of them held out. Returns the message-passing
    edges (both directions) and the held-out ones (one direction each)."""
    src, dst = edge_index
    upper = edge_index[:, src < dst]
    held = torch.rand(upper.shape[1], device=edge_index.device) < share
    kept = upper[:, ~held]
    return torch.cat([kept, kept.flip(0)], 1), upper[:, held]


class GraphModule(ZooModule):
    """Pretrains a backbone with a pretext task.

    Args:
        backbone: the network (:func:`build_backbone`).
        cfg: the task config (``train`` and ``optim`` sections are used).
    """

    def __init__(self, backbone: Backbone, cfg: GraphConfig) -> None:
        super().__init__(backbone, optim=cfg.optim)
        self.train_cfg = cfg.train
        width = backbone.out_dim
        if cfg.train.pretext == "graphcl":
            self.head: nn.Module = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
        else:
            self.head = LinkDecoder(width)

    def encode(self, batch: Batch, x: torch.Tensor | None = None,
               edge_index: torch.Tensor | None = None) -> GMoPEOutput:
        """The backbone on a batch of ego-subgraphs (optionally with other features or edges), routed per ego."""
        return self.model(batch.x if x is None else x, batch.edge_index if edge_index is None else edge_index,
                          batch.batch, level="graph", route_input=batch.route, num_graphs=batch.num_graphs)

    def step(self, batch: Batch) -> StepOutput:
        cfg = self.train_cfg
        if cfg.pretext == "graphcl":
            views = [self.encode(batch, mask_features(batch.x, cfg.augment), drop_edges(batch.edge_index, cfg.augment))
                     for _ in range(2)]
            loss = nt_xent(self.head(views[0].graphs), self.head(views[1].graphs), cfg.temperature)
            aux = {name: (views[0].aux[name] + views[1].aux[name]) / 2 for name in views[0].aux}
            out = views[0]
        else:
            kept, held = held_out_edges(batch.edge_index, cfg.augment)
            out = self.encode(batch, edge_index=kept)
            if held.shape[1] == 0:
                loss = out.nodes.sum() * 0
            else:
                loss = link_loss(out.nodes, held, batch.x.shape[0], decoder=self.head, batch=batch.batch,
                                 known=batch.edge_index)
            aux = out.aux
        return StepOutput(loss, aux=aux, stats=out.stats, batch_size=batch.num_graphs)

    def optimized(self) -> nn.Module:
        """The backbone and the pretext head."""
        return self


def build_module(cfg: GraphConfig, info: Mapping[str, Any]) -> GraphModule:
    return GraphModule(build_backbone(cfg.model, int(info["dim"])), cfg)


def needs_fit(cfg: GraphConfig) -> bool:
    """``scratch`` pretrains nothing: its GNN is trained on each downstream task's shots."""
    return cfg.model.method != "scratch"
