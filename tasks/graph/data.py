"""Graphs of the graph task as the models see them, and the pretraining batches.

Every graph's features are aligned to ``data.dim`` by SVD (:func:`~.formats.align_features`) once, when first
asked for, and cached. Pretraining's examples are the ``hops``-hop ego-subgraphs of every node of the pretraining
domains: :class:`EgoSet` builds them all at once (:func:`~.models.ego_subgraphs`) with their router inputs, and a
batch of centres is sliced out of that union with index operations, so no loop in Python runs over nodes or edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader
from torch_geometric.data import Batch, Data

from .config import GraphConfig
from .formats import align_features
from .models import ego_subgraphs, route_input
from .real import graph_atlas, karate
from .synthetic import link_graph, make_domain


@lru_cache(maxsize=16)
def domain_graph(name: str, seed: int, num_nodes: int | None, dim: int) -> Data:
    """A synthetic domain (:func:`~.synthetic.make_domain`) with its features aligned to ``dim`` (:func:`features`)."""
    graph = make_domain(name, seed, num_nodes)
    graph.x = features(graph.x, dim)
    return graph


def features(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Features aligned to ``dim`` by SVD and scaled to unit mean variance over the columns the SVD filled, so every
    graph meets a model (and a prompt) at the same scale whatever its raw feature units."""
    x = align_features(x, dim)
    filled = x.abs().sum(0) > 0
    scale = x[:, filled].square().mean().sqrt() if filled.any() else x.new_ones(())
    return x / scale.clamp_min(1e-12)


def aligned(graph: Data, dim: int) -> Data:
    """A copy of ``graph`` with its features aligned to ``dim`` (:func:`features`)."""
    graph = graph.clone()
    graph.x = features(graph.x, dim)
    return graph


def aligned_graphs(graphs: list[Data], dim: int) -> list[Data]:
    """Copies of a dataset's graphs with their features aligned to ``dim`` together (one SVD of all their nodes,
    so every graph is projected on the same basis)."""
    x = features(torch.cat([g.x for g in graphs]), dim)
    sizes = [g.num_nodes for g in graphs]
    out = []
    for graph, part in zip(graphs, x.split(sizes)):
        graph = graph.clone()
        graph.x = part
        out.append(graph)
    return out


@lru_cache(maxsize=4)
def downstream_graph(name: str, seed: int, dim: int) -> Data | list[Data]:
    """A downstream evaluation's data with aligned features: ``karate`` (a graph), ``atlas`` (a list of graphs) or
    ``link`` (the unseen LFR graph of data seed ``seed``)."""
    if name == "karate":
        return aligned(karate(), dim)
    if name == "atlas":
        return aligned_graphs(graph_atlas(), dim)
    return aligned(link_graph(seed), dim)


@dataclass
class EgoBatch:
    """A batch of ``num_graphs`` ego-subgraphs: node features ``x [S, d]``, ``edge_index [2, E]``, the ego of each
    node ``batch [S]`` and each ego's router input ``route [num_graphs, d + 5]``."""

    x: torch.Tensor
    edge_index: torch.Tensor
    batch: torch.Tensor
    route: torch.Tensor
    num_graphs: int


class EgoSet:
    """Every node's ego-subgraph in a list of graphs, as one union to slice batches from.

    Args:
        graphs: the graphs (features already aligned to one width).
        hops: k of the k-hop ego-subgraphs.
    """

    def __init__(self, graphs: list[Data], hops: int) -> None:
        union = Batch.from_data_list([Data(x=g.x, edge_index=g.edge_index, num_nodes=g.num_nodes) for g in graphs])
        ego = ego_subgraphs(union.edge_index, union.num_nodes, hops)
        self.x = union.x[ego.node]
        self.edge_index, self.ego = ego.edge_index, ego.batch
        self.route = route_input(union.x, union.edge_index, level="node", hops=hops)
        self.size = union.num_nodes

    def __len__(self) -> int:
        return self.size

    def collate(self, centres: list[int]) -> EgoBatch:
        """The ego-subgraphs of ``centres`` as one batch (egos in ascending centre order)."""
        centres_t = torch.as_tensor(sorted(centres), dtype=torch.long)
        member = torch.isin(self.ego, centres_t)
        keep = member.nonzero()[:, 0]
        new_id = torch.full((len(self.ego),), -1, dtype=torch.long)
        new_id[keep] = torch.arange(len(keep))
        edges = self.edge_index[:, member[self.edge_index[0]]]
        return EgoBatch(self.x[keep], new_id[edges], torch.searchsorted(centres_t, self.ego[keep]),
                        self.route[centres_t], len(centres_t))


class GraphDataModule(L.LightningDataModule):
    """Ego-subgraph batches of the pretraining domains.

    Args:
        cfg: the task config.
        domains: the pretraining domains (default ``cfg.data.domains``; a leave-one-domain-out fold passes the
            others).
    """

    def __init__(self, cfg: GraphConfig, domains: list[str] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.domains = list(cfg.data.domains if domains is None else domains)
        self.egos: EgoSet | None = None

    def graph(self, name: str) -> Data:
        """Domain ``name``'s graph, features aligned."""
        data = self.cfg.data
        return domain_graph(name, data.seed, data.num_nodes, data.dim)

    def setup(self, stage: str | None = None) -> None:
        if self.egos is None:
            self.egos = EgoSet([self.graph(name) for name in self.domains], self.cfg.data.hops)

    def train_dataloader(self) -> DataLoader:
        assert self.egos is not None
        return DataLoader(range(len(self.egos)), batch_size=self.cfg.train.batch_size, shuffle=True,
                          drop_last=len(self.egos) > self.cfg.train.batch_size, collate_fn=self.egos.collate)


def build_datamodule(cfg: GraphConfig) -> GraphDataModule:
    return GraphDataModule(cfg)


def model_info(cfg: GraphConfig, dm: GraphDataModule) -> dict[str, Any]:
    """What the model and ``predict`` need without the data: the feature width and the pretraining domains."""
    return {"dim": cfg.data.dim, "domains": list(dm.domains)}
