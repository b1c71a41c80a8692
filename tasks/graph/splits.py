"""Seeded k-shot splits for the graph task's few-shot evaluation: ``k`` labelled examples per class to tune on and
every other labelled example to test on, for nodes of one graph (:func:`k_shot_split`) or for a list of graphs
(:func:`k_shot_graphs`). A board reports the mean over :data:`SPLITS` seeds (0, 1, ...). Unlabelled examples
(``y < 0``) are in neither part; a class too small to leave a test example is an error rather than a silently
smaller shot.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from zoo.errors import ZooValueError, check_arg, check_seed

SPLITS = 5
"""Seeded splits per evaluation: seeds ``0 .. SPLITS - 1``."""


def _split(labels: np.ndarray, k: int, seed: int, what: str) -> tuple[Tensor, Tensor]:
    check_arg(isinstance(k, int) and not isinstance(k, bool) and k >= 1, "k", k, "a positive int")
    check_seed(seed)
    labelled = np.flatnonzero(labels >= 0)
    if len(labelled) == 0:
        raise ZooValueError(f"no labelled {what}s (every label is < 0); a {k}-shot split needs labels")
    rng = np.random.default_rng(seed)
    train = []
    for cls in np.unique(labels[labelled]):
        members = np.flatnonzero(labels == cls)
        if len(members) < k + 1:
            raise ZooValueError(f"class {cls} has {len(members)} labelled {what}{'s' * (len(members) != 1)}; a "
                                f"{k}-shot split needs at least {k + 1} ({k} to train, 1 to test)")
        train.append(rng.choice(members, size=k, replace=False))
    train_idx = np.sort(np.concatenate(train))
    test_idx = np.setdiff1d(labelled, train_idx)
    return torch.from_numpy(train_idx), torch.from_numpy(test_idx)


def k_shot_split(y: Tensor, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """``k`` random nodes of every class to train on, the other labelled nodes to test on.

    Args:
        y: int ``[N]`` node labels, ``-1`` (any negative) for unlabelled nodes.
        k: training nodes per class.
        seed: the split's seed (``0 .. SPLITS - 1`` on the boards).

    Returns:
        ``(train_idx, test_idx)``: sorted int64 node indices, disjoint.

    Raises:
        ZooValueError: no labelled node, a class with fewer than ``k + 1`` nodes, a bad ``k`` or seed.
    """
    labels = torch.as_tensor(y).reshape(-1).long().numpy()
    return _split(labels, k, seed, "node")


def k_shot_graphs(graphs: Sequence[Data], k: int, seed: int) -> tuple[Tensor, Tensor]:
    """``k`` random graphs of every class to train on, the other labelled graphs to test on.

    Args:
        graphs: graphs with a one-element ``y`` (negative = unlabelled).
        k: training graphs per class.
        seed: the split's seed.

    Returns:
        ``(train_idx, test_idx)``: sorted int64 positions in ``graphs``, disjoint.

    Raises:
        ZooValueError: no graphs, a graph without exactly one label, no labelled graph, a class with fewer than
            ``k + 1`` graphs, a bad ``k`` or seed.
    """
    if len(graphs) == 0:
        raise ZooValueError(f"no graphs to split; a {k}-shot split needs labelled graphs")
    for position, graph in enumerate(graphs):
        if graph.y is None or torch.as_tensor(graph.y).numel() != 1:
            raise ZooValueError(f"graph {position} has y={graph.y!r}; expected one label per graph")
    labels = np.asarray([int(torch.as_tensor(g.y).reshape(-1)[0]) for g in graphs], dtype=np.int64)
    return _split(labels, k, seed, "graph")
