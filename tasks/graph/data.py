"""Graphs of the graph task as the models see them, and the pretraining batches.

Every graph's features are aligned to ``data.dim`` by SVD (:func:`~.formats.align_features`) once, when first
asked for, and cached. Pretraining's examples are the ``hops``-hop ego-subgraphs of every node of the pretraining
domains, a PyG ``InMemoryDataset`` (:class:`GraphSet`) that :func:`ego_dataset` builds for all nodes at once with
their router inputs, so no loop in Python runs over nodes or edges; PyG's ``DataLoader`` batches them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import lightning as L
import torch
from torch_geometric.data import Batch, Data, InMemoryDataset
from torch_geometric.loader import DataLoader

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
def downstream_graph(name: str, seed: int, dim: int) -> Data | GraphSet:
    """A downstream evaluation's data with aligned features: ``karate`` (a graph), ``atlas`` (a dataset of graphs) or
    ``link`` (the unseen LFR graph of data seed ``seed``)."""
    if name == "karate":
        return aligned(karate(), dim)
    if name == "atlas":
        return GraphSet.from_list(aligned_graphs(graph_atlas(), dim))
    return aligned(link_graph(seed), dim)


class GraphSet(InMemoryDataset):
    """Graphs held in memory as a PyG ``InMemoryDataset`` (no files): the zoo's synthetic domains, the graph atlas
    and the ego-subgraphs of pretraining, for PyG's ``DataLoader``.

    Args:
        data: every graph's tensors, concatenated (PyG's collated storage, edge indices local to each graph).
        slices: where each graph's rows start in each tensor of ``data``.
    """

    def __init__(self, data: Data, slices: dict[str, torch.Tensor]) -> None:
        super().__init__(None, log=False)
        self.data, self.slices = data, slices

    @classmethod
    def from_list(cls, graphs: list[Data]) -> GraphSet:
        return cls(*cls.collate(graphs))


def ego_dataset(graphs: list[Data], hops: int) -> GraphSet:
    """Every node's ``hops``-hop ego-subgraph in ``graphs`` (features aligned to one width), each with its router
    input ``route [1, d + 5]``, built for all nodes at once from :func:`~.models.ego_subgraphs` (its union lists the
    egos one after another, edges sorted by source, so each ego is one slice)."""
    union = Batch.from_data_list([Data(x=g.x, edge_index=g.edge_index, num_nodes=g.num_nodes) for g in graphs])
    N = union.num_nodes
    ego = ego_subgraphs(union.edge_index, N, hops)
    node_ptr = torch.cat([ego.batch.new_zeros(1), torch.bincount(ego.batch, minlength=N).cumsum(0)])
    owner = ego.batch[ego.edge_index[0]]
    edge_ptr = torch.cat([owner.new_zeros(1), torch.bincount(owner, minlength=N).cumsum(0)])
    data = Data(x=union.x[ego.node], edge_index=ego.edge_index - node_ptr[owner],
                route=route_input(union.x, union.edge_index, level="node", hops=hops))
    return GraphSet(data, {"x": node_ptr, "edge_index": edge_ptr, "route": torch.arange(N + 1)})


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
        self.egos: GraphSet | None = None

    def graph(self, name: str) -> Data:
        """Domain ``name``'s graph, features aligned."""
        data = self.cfg.data
        return domain_graph(name, data.seed, data.num_nodes, data.dim)

    def setup(self, stage: str | None = None) -> None:
        if self.egos is None:
            self.egos = ego_dataset([self.graph(name) for name in self.domains], self.cfg.data.hops)

    def train_dataloader(self) -> DataLoader:
        assert self.egos is not None
        return DataLoader(self.egos, batch_size=self.cfg.train.batch_size, shuffle=True,
                          drop_last=len(self.egos) > self.cfg.train.batch_size)


def build_datamodule(cfg: GraphConfig) -> GraphDataModule:
    return GraphDataModule(cfg)


def model_info(cfg: GraphConfig, dm: GraphDataModule) -> dict[str, Any]:
    """What the model and ``predict`` need without the data: the feature width and the pretraining domains."""
    return {"dim": cfg.data.dim, "domains": list(dm.domains)}
