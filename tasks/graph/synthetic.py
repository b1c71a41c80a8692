"""Seeded synthetic graph domains for pretraining the graph experts and for leave-one-domain-out transfer: four
structurally different node-classification graphs of a few hundred nodes (seconds on a CPU), each with its own
feature width, so that a model must align features (SVD to ``d`` = 32) and adapt its prompts to a domain it has not
seen, as in GMoPE's cross-domain setting.

Domains (:data:`DOMAINS`):

- ``sbm_homo``: stochastic block model, 4 equal blocks, ``p_in`` = 0.06 >> ``p_out`` = 0.008 (edge homophily about
  0.73), features of width 16.
- ``sbm_hetero``: 3 equal blocks with ``p_out`` = 0.04 > ``p_in`` = 0.01 (edge homophily about 0.1), width 48.
- ``lfr``: networkx's LFR benchmark (``tau1`` 3, ``tau2`` 1.5, ``mu`` 0.3, average degree 5, communities of 20 to
  ``n / 3`` nodes; with ``mu`` 0.1 the structure alone lets a GCN score over 95 %, with 0.3 the edge homophily is
  about 0.56); labels = communities ranked by size, rank ``r`` → class ``r mod 6`` (3 to 6 classes); a seed
  for which networkx cannot build the graph, or that yields fewer than 3 communities, moves on to the next one
  deterministically. Width 100.
- ``geometric``: random geometric graph over 5 Gaussian blobs on a circle (a node's blob is its class; nodes closer
  than :data:`GEOMETRIC_RADIUS` are joined), width 300.

Features are class-conditioned Gaussians, ``x = mu_y + noise · e`` with ``mu_c``, ``e`` ~ N(0, I), and the noise
(:data:`NOISE`) set so that a 2-layer GCN trained on half the nodes scores roughly 70-85 % on the other half. Every
random draw comes from ``default_rng(SeedSequence([seed, domain, stream]))``, so a domain and its features change
only with ``seed``.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import torch
from torch_geometric.data import Data

from zoo.errors import ZooValueError, check_arg, check_seed

from .formats import undirected_edges

DOMAINS = ("sbm_homo", "sbm_hetero", "lfr", "geometric")
WIDTH = {"sbm_homo": 16, "sbm_hetero": 48, "lfr": 100, "geometric": 300}
NUM_NODES = {"sbm_homo": 300, "sbm_hetero": 300, "lfr": 250, "geometric": 300}
# Feature noise (standard deviation; class means have unit variance per dimension). With these, a 2-layer GCN
# (hidden 32, dropout 0.5, Adam lr 0.01, weight decay 5e-4, 200 epochs) trained on a random half of the nodes
# scores on the other half (mean ± sd over graph and split seeds 0-4): sbm_homo 0.78 ± 0.02, sbm_hetero 0.78 ± 0.03,
# lfr 0.75 ± 0.04, geometric 0.79 ± 0.03. Structure alone (noise 100) gives sbm_homo 0.73, hence the weak blocks.
NOISE = {"sbm_homo": 8.0, "sbm_hetero": 1.5, "lfr": 2.5, "geometric": 10.0}
SBM = {"sbm_homo": (4, 0.06, 0.008), "sbm_hetero": (3, 0.01, 0.04)}  # blocks, p_in, p_out
LFR = {"tau1": 3.0, "tau2": 1.5, "mu": 0.3, "average_degree": 5, "min_community": 20}
LFR_MAX_CLASSES, LFR_MIN_CLASSES, LFR_ATTEMPTS = 6, 3, 50
GEOMETRIC_BLOBS, GEOMETRIC_SPREAD, GEOMETRIC_RADIUS = 5, 0.12, 0.08
GRAPH, FEATURES = 0, 1  # streams
LINK_DOMAIN = len(DOMAINS)  # link_graph's own domain number, so its LFR graph is none of make_domain's
Generated = tuple[np.ndarray, np.ndarray]  # a generator's [2, E] node pairs and [N] labels


def _rng(seed: int, domain: int, stream: int, *more: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, domain, stream, *more]))


def _sbm(num_nodes: int, blocks: int, p_in: float, p_out: float, rng: np.random.Generator) -> Generated:
    labels = np.arange(num_nodes) * blocks // num_nodes  # equal blocks, the larger ones first
    upper = np.triu_indices(num_nodes, k=1)
    same = labels[upper[0]] == labels[upper[1]]
    chosen = rng.random(len(same)) < np.where(same, p_in, p_out)
    return np.stack([upper[0][chosen], upper[1][chosen]]), labels


def _lfr(num_nodes: int, seed: int, domain: int) -> Generated:
    for attempt in range(LFR_ATTEMPTS):
        nx_seed = int(np.random.SeedSequence([seed, domain, GRAPH, attempt]).generate_state(1)[0])
        try:  # networkx's default max_community (the largest degree) can fall below min_community: it never returns
            graph = nx.LFR_benchmark_graph(num_nodes, max_community=max(num_nodes // 3, LFR["min_community"]),
                                           seed=nx_seed, **LFR)
        except nx.ExceededMaxIterations:
            continue
        communities = {frozenset(graph.nodes[v]["community"]) for v in graph}
        if len(communities) < LFR_MIN_CLASSES:
            continue
        labels = np.empty(num_nodes, dtype=np.int64)
        for rank, community in enumerate(sorted(communities, key=lambda c: (-len(c), min(c)))):
            labels[list(community)] = rank % LFR_MAX_CLASSES
        return np.asarray(list(graph.edges()), dtype=np.int64).reshape(-1, 2).T, labels
    raise ZooValueError(f"networkx could not build an LFR graph of {num_nodes} nodes in {LFR_ATTEMPTS} seeds; "
                        "try another num_nodes (250 works)")


def _geometric(num_nodes: int, rng: np.random.Generator) -> Generated:
    labels = np.arange(num_nodes) * GEOMETRIC_BLOBS // num_nodes
    angle = 2 * np.pi * labels / GEOMETRIC_BLOBS
    centres = 0.5 + 0.3 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    points = centres + GEOMETRIC_SPREAD * rng.standard_normal((num_nodes, 2))
    distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
    source, target = np.nonzero(np.triu(distance < GEOMETRIC_RADIUS, k=1))
    return np.stack([source, target]), labels


def _graph(kind: str, num_nodes: int, seed: int, domain: int) -> Generated:
    if kind in SBM:
        return _sbm(num_nodes, *SBM[kind], _rng(seed, domain, GRAPH))
    if kind == "lfr":
        return _lfr(num_nodes, seed, domain)
    return _geometric(num_nodes, _rng(seed, domain, GRAPH))


def _data(kind: str, num_nodes: int, seed: int, domain: int) -> Data:
    pairs, labels = _graph(kind, num_nodes, seed, domain)
    edge_index, _, _ = undirected_edges(torch.from_numpy(pairs), num_nodes)
    num_classes = int(labels.max()) + 1
    rng = _rng(seed, domain, FEATURES)
    means = rng.standard_normal((num_classes, WIDTH[kind]))
    x = means[labels] + NOISE[kind] * rng.standard_normal((num_nodes, WIDTH[kind]))
    return Data(x=torch.from_numpy(x).float(), edge_index=edge_index, y=torch.from_numpy(labels).long(),
                num_classes=num_classes, domain=kind)


def make_domain(name: str, seed: int = 0, num_nodes: int | None = None) -> Data:
    """One synthetic domain's graph (module docstring).

    Args:
        name: one of :data:`DOMAINS`.
        seed: draws the graph and its features.
        num_nodes: the number of nodes; :data:`NUM_NODES` by default (at least 60).

    Returns:
        ``Data`` with ``x`` of width ``WIDTH[name]``, ``y``, ``num_classes`` and ``domain`` = ``name``.

    Raises:
        ZooValueError: an unknown domain, a bad seed or size, or an LFR size networkx cannot build.
    """
    check_arg(name in DOMAINS, "name", name, DOMAINS)
    check_seed(seed)
    num_nodes = NUM_NODES[name] if num_nodes is None else num_nodes
    check_arg(isinstance(num_nodes, int) and num_nodes >= 60, "num_nodes", num_nodes, "an int >= 60")
    return _data(name, num_nodes, seed, DOMAINS.index(name))


def link_graph(seed: int = 0) -> Data:
    """An LFR graph for link prediction, drawn apart from every :func:`make_domain` graph (its own seed stream),
    with the ``lfr`` domain's sizes and features.

    Args:
        seed: draws the graph and its features.

    Returns:
        ``Data`` as :func:`make_domain` returns (``domain`` = ``"lfr"``).
    """
    check_seed(seed)
    return _data("lfr", NUM_NODES["lfr"], seed, LINK_DOMAIN)
