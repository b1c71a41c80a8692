"""Graph prompt baselines (the ProG family) over one frozen pretrained :class:`~.models.GNNEncoder`.

Each baseline freezes the encoder it is given and learns only a prompt; the caller adds a task head (GraphPrompt
brings its own prototype classifier):

* :class:`GPF` (Fang et al., NeurIPS 2023): one learned vector added to every node's features, ``x' = x + p``;
* :class:`GPFPlus`: ``K`` basis prompts mixed per node by attention, ``x' = x + softmax(a(x)) P``;
* :class:`GraphPrompt` (Liu et al., WWW 2023): a learned vector multiplying the node embeddings before the readout,
  and class prototypes (mean prompted embedding of the k-shot examples) compared by cosine similarity;
* :class:`AllInOne` (Sun et al., KDD 2023): a prompt graph of ``K`` learned tokens inserted into every graph, tokens
  joined to each other and to the graph's nodes where ``sigmoid`` of their inner product passes a threshold, as in
  ProG's ``HeavyPrompt``.

Every ``forward(x, edge_index, batch)`` returns a :class:`PromptOutput` (node and mean-pooled graph embeddings).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import global_mean_pool
from torch_geometric.utils import scatter

from zoo.errors import check_arg

from .models import GNNEncoder, count_graphs


@dataclass
class PromptOutput:
    """Node embeddings ``[N, H]`` of the input's nodes and graph embeddings ``[G, H]``."""

    nodes: torch.Tensor
    graphs: torch.Tensor


class FrozenEncoderPrompt(nn.Module):
    """A prompt over a frozen encoder: the encoder's parameters stop training when the prompt is built.

    Args:
        encoder: the pretrained GNN (``forward(x, edge_index) → [N, H]``, width ``out_dim``).
    """

    def __init__(self, encoder: GNNEncoder) -> None:
        super().__init__()
        self.encoder = encoder.requires_grad_(False)

    def tunable_parameters(self) -> list[nn.Parameter]:
        """The prompt's parameters (everything that still trains)."""
        return [p for p in self.parameters() if p.requires_grad]

    def num_tunable(self) -> int:
        """How many numbers the prompt tunes."""
        return sum(p.numel() for p in self.tunable_parameters())


class _FeaturePrompt(FrozenEncoderPrompt, abc.ABC):
    """A prompt that rewrites node features, then encodes and mean-pools."""

    @abc.abstractmethod
    def prompt_features(self, x: torch.Tensor) -> torch.Tensor:
        """The prompted node features ``[N, d_in]``."""

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None,
                num_graphs: int | None = None) -> PromptOutput:
        nodes = self.encoder(self.prompt_features(x), edge_index)
        return PromptOutput(nodes, global_mean_pool(nodes, batch, count_graphs(batch, num_graphs)))


class GPF(_FeaturePrompt):
    """GPF: ``x' = x + p`` with one learned ``p`` of width ``d_in``.

    Args:
        encoder: the frozen encoder.
        d_in: node feature width.
    """

    def __init__(self, encoder: GNNEncoder, d_in: int) -> None:
        super().__init__(encoder)
        self.prompt = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, d_in)))

    def prompt_features(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.prompt


class GPFPlus(_FeaturePrompt):
    """GPF-plus: ``x' = x + softmax(a(x)) P`` with ``K`` basis prompts ``P [K, d_in]`` and a linear scorer ``a``.

    Args:
        encoder: the frozen encoder.
        d_in: node feature width.
        num_basis: K.
    """

    def __init__(self, encoder: GNNEncoder, d_in: int, num_basis: int = 10) -> None:
        super().__init__(encoder)
        check_arg(isinstance(num_basis, int) and num_basis > 0, "num_basis", num_basis, "a positive int")
        self.basis = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_basis, d_in)))
        self.score = nn.Linear(d_in, num_basis)

    def prompt_features(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.softmax(self.score(x), dim=-1) @ self.basis


class GraphPrompt(FrozenEncoderPrompt):
    """GraphPrompt: prompted embeddings ``h ⊙ p`` (``p`` of the embedding width) read out per graph, classified by
    cosine similarity to class prototypes.

    The readout is the mean (the paper sums); a sum is the mean times the graph's size, so the cosine similarities
    and the predictions are the same.

    Args:
        encoder: the frozen encoder.
        temperature: τ of ``logits = cos / τ``.
    """

    def __init__(self, encoder: GNNEncoder, temperature: float = 0.1) -> None:
        super().__init__(encoder)
        check_arg(temperature > 0, "temperature", temperature, "a float > 0")
        self.temperature = temperature
        self.prompt = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, encoder.out_dim)))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None,
                num_graphs: int | None = None) -> PromptOutput:
        nodes = self.encoder(x, edge_index) * self.prompt
        return PromptOutput(nodes, global_mean_pool(nodes, batch, count_graphs(batch, num_graphs)))

    @staticmethod
    def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Class prototypes ``[C, H]``: the mean embedding of each class's examples (zeros for an absent class)."""
        return scatter(embeddings, labels, 0, dim_size=num_classes, reduce="mean")

    def logits(self, embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """``cos(embedding, prototype) / τ``: ``[n, C]``, for a cross-entropy loss or an argmax."""
        return F.normalize(embeddings, dim=-1) @ F.normalize(prototypes, dim=-1).t() / self.temperature


class AllInOne(FrozenEncoderPrompt):
    """All-in-One: ``K`` learned prompt tokens inserted into every graph of the batch.

    Tokens ``i ≠ j`` are joined both ways where ``sigmoid(t_i · t_j) ≥ inner_prune``; token ``i`` sends a message
    to node ``v`` where ``sigmoid(t_i · x_v) ≥ cross_prune`` (ProG's direction: prompt → graph). ProG's defaults
    (``cross_prune = 0.1``, ``inner_prune = 0.3``) are kept; unlike ProG, tokens get no self-loops. The edges are a
    hard choice, so the tokens learn through their features only. Graph embeddings pool the graph's nodes and its
    tokens (ProG reads the whole prompted graph out); node embeddings are those of the input's nodes.

    Args:
        encoder: the frozen encoder.
        d_in: node feature width (the tokens live in feature space).
        num_tokens: K.
        inner_prune: token–token threshold on the sigmoid similarity.
        cross_prune: token–node threshold on the sigmoid similarity.
    """

    def __init__(self, encoder: GNNEncoder, d_in: int, num_tokens: int = 10, inner_prune: float = 0.3,
                 cross_prune: float = 0.1) -> None:
        super().__init__(encoder)
        check_arg(isinstance(num_tokens, int) and num_tokens > 0, "num_tokens", num_tokens, "a positive int")
        for name, value in (("inner_prune", inner_prune), ("cross_prune", cross_prune)):
            check_arg(0 <= value <= 1, name, value, "a float in [0, 1]")
        self.inner_prune, self.cross_prune = inner_prune, cross_prune
        self.tokens = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(num_tokens, d_in), a=0.01))

    def prompt_graph(
        self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None,
        num_graphs: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch with the prompt graph inserted into every graph: features ``[N + G·K, d]`` (the input's nodes
        first, then graph g's tokens at ``N + g·K + i``), edges and the graph of each node."""
        N, K, G = x.shape[0], self.tokens.shape[0], count_graphs(batch, num_graphs)
        if batch is None:
            batch = torch.zeros(N, dtype=torch.long, device=x.device)
        with torch.no_grad():
            inner = torch.sigmoid(self.tokens @ self.tokens.t()) >= self.inner_prune
            inner.fill_diagonal_(False)
            cross = torch.sigmoid(x @ self.tokens.t()) >= self.cross_prune  # [N, K]
        ti, tj = inner.nonzero().t()
        offsets = N + torch.arange(G, device=x.device)[:, None] * K  # first token of each graph
        inner_edges = torch.stack([(offsets + ti).reshape(-1), (offsets + tj).reshape(-1)])
        node, token = cross.nonzero().t()
        cross_edges = torch.stack([N + batch[node] * K + token, node])
        x_all = torch.cat([x, self.tokens.repeat(G, 1)])
        batch_all = torch.cat([batch, torch.arange(G, device=x.device).repeat_interleave(K)])
        return x_all, torch.cat([edge_index, inner_edges, cross_edges], 1), batch_all

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None,
                num_graphs: int | None = None) -> PromptOutput:
        G = count_graphs(batch, num_graphs)
        x_all, edges, batch_all = self.prompt_graph(x, edge_index, batch, G)
        nodes = self.encoder(x_all, edges)
        return PromptOutput(nodes[: x.shape[0]], global_mean_pool(nodes, batch_all, G))
