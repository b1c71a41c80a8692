"""Self-supervised pretext tasks of the graph task: GraphCL contrast and link prediction.

GraphCL (You et al., NeurIPS 2020) encodes two augmented views of each graph (or of each node's ego-subgraph, one
graph per node) and pulls the two views of a graph together against every other graph of the batch with the
NT-Xent loss (SimCLR's normalised temperature-scaled cross entropy). The augmentations here are edge dropping
(both directions of an undirected edge together) and feature masking (random feature columns zeroed for every
node, as in GRACE). Link prediction scores node pairs with a dot product or an MLP decoder and trains them with
binary cross entropy against pairs drawn by ``torch_geometric.utils.negative_sampling``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.utils import batched_negative_sampling, dropout_edge, negative_sampling

from zoo.errors import check_arg

#: ``encode_fn(x, edge_index, batch) → [G, H]``: graph embeddings of a batch.
EncodeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def drop_edges(edge_index: torch.Tensor, p: float) -> torch.Tensor:
    """Drop each undirected edge with probability ``p`` (both of its directions together)."""
    check_arg(0 <= p < 1, "drop_edge", p, "a float in [0, 1)")
    return dropout_edge(edge_index, p=p, force_undirected=True, training=p > 0)[0]


def mask_features(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero each feature column with probability ``p``, the same columns for every node."""
    check_arg(0 <= p < 1, "mask_feat", p, "a float in [0, 1)")
    keep = torch.rand(x.shape[1], device=x.device) >= p
    return x * keep.to(x.dtype)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent over ``B`` positive pairs ``(z1[i], z2[i])``: each of the ``2B`` embeddings must pick its partner
    among the other ``2B − 1`` by cosine similarity / τ; the mean cross entropy.

    Args:
        z1: ``[B, H]`` first views.
        z2: ``[B, H]`` second views.
        temperature: τ.
    """
    check_arg(z1.shape == z2.shape and z1.dim() == 2, "z2.shape", tuple(z2.shape), f"{tuple(z1.shape)} (as z1)")
    check_arg(temperature > 0, "temperature", temperature, "a float > 0")
    B = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
    sim = (z @ z.t() / temperature).fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(B, 2 * B), torch.arange(B)]).to(z.device)
    return F.cross_entropy(sim, partner)


def graphcl_loss(
    encode_fn: EncodeFn,
    batch: Batch,
    drop_edge: float = 0.2,
    mask_feat: float = 0.2,
    temperature: float = 0.1,
) -> torch.Tensor:
    """GraphCL: NT-Xent between the graph embeddings of two augmented views of a batch of graphs.

    Args:
        encode_fn: ``(x, edge_index, batch) → [G, H]`` graph embeddings (a projection head included, if any).
        batch: a PyG batch of ``G ≥ 2`` graphs (``x``, ``edge_index``, ``batch``).
        drop_edge: probability of dropping an edge in a view.
        mask_feat: probability of masking a feature column in a view.
        temperature: τ of the NT-Xent loss.
    """
    check_arg(batch.num_graphs >= 2, "batch.num_graphs", batch.num_graphs, "at least 2 graphs (the negatives)")
    views = [encode_fn(mask_features(batch.x, mask_feat), drop_edges(batch.edge_index, drop_edge), batch.batch)
             for _ in range(2)]
    return nt_xent(*views, temperature=temperature)


class LinkDecoder(nn.Module):
    """An MLP edge decoder: ``score(u, v) = MLP(z_u ⊙ z_v)``, symmetric in ``u`` and ``v``.

    Args:
        hidden: embedding width H (and the MLP's hidden width).
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, z_u: torch.Tensor, z_v: torch.Tensor) -> torch.Tensor:
        return self.net(z_u * z_v)[:, 0]


def link_scores(z: torch.Tensor, pairs: torch.Tensor, decoder: LinkDecoder | None = None) -> torch.Tensor:
    """Logits ``[P]`` of node pairs ``[2, P]``: ``z_u · z_v``, or the decoder's score.

    Args:
        z: ``[N, H]`` node embeddings.
        pairs: ``[2, P]`` node pairs.
        decoder: an MLP decoder; None for the dot product.
    """
    z_u, z_v = z[pairs[0]], z[pairs[1]]
    return (z_u * z_v).sum(-1) if decoder is None else decoder(z_u, z_v)


def link_loss(
    z: torch.Tensor,
    edge_index: torch.Tensor,
    num_nodes: int,
    *,
    decoder: LinkDecoder | None = None,
    batch: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """Link prediction loss: BCE of the edges (label 1) and about as many sampled non-edges (label 0).

    Args:
        z: ``[N, H]`` node embeddings.
        edge_index: ``[2, E]`` the positive edges (typically edges held out of the message passing).
        num_nodes: N.
        decoder: an MLP decoder; None for the dot product.
        batch: ``[N]`` graph of each node: negatives are then drawn inside each graph (as many per graph as
            there are positives per graph on average).
        known: ``[2, E']`` every edge a negative must avoid (default: ``edge_index``); pass the whole graph's edges
            when only some of them are the positives.
    """
    known = edge_index if known is None else known
    if batch is None:
        negatives = negative_sampling(known, num_nodes=num_nodes, num_neg_samples=edge_index.shape[1])
    else:
        per_graph = -(-edge_index.shape[1] // (int(batch.max()) + 1))
        negatives = batched_negative_sampling(known, batch, num_neg_samples=per_graph)
    negatives = negatives.long()  # PyG returns a float tensor when it finds no pair to sample
    logits = link_scores(z, torch.cat([edge_index, negatives], 1), decoder)
    labels = torch.cat([logits.new_ones(edge_index.shape[1]), logits.new_zeros(negatives.shape[1])])
    return F.binary_cross_entropy_with_logits(logits, labels)
