"""Graph encoders of the graph task: GIN/GCN encoders, the structure features a router reads, and GMoPE.

GMoPE (Wang et al., arXiv 2511.03251) is a mixture of ``M`` GNN experts, each with a prompt vector ``p_m`` added to
every node's (aligned, ``d = 32``) features, routed per graph (graph tasks) or per node's ego-subgraph (node
tasks) by a structure-aware router: ``h = Σ_m g_m · Enc_m(X + 1 p_mᵀ, A)``. Pretraining adds a soft orthogonality
loss on the prompts; transfer tunes the prompts (and a task head) with the experts frozen. The router's top-k
choice, balance loss and statistics are the shared ``zoo.moe.TopKRouter``'s; only its input, an MLP over
``[mean-pooled X || structure features]``, is the task's. :class:`MoENoPrompt` (same experts and router, no
prompts) and :class:`DensePromptGNN` (one encoder of twice the width with one prompt) are the ablation twins.

Structure features are computed with index operations only (sorted edge keys, ``searchsorted``, scatter sums), so a
batch of many small graphs or of every node's 2-hop ego-subgraph costs a few vectorised passes over its wedges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GCNConv, GINConv, global_mean_pool
from torch_geometric.utils import remove_self_loops, scatter, to_undirected

from zoo.errors import check_arg
from zoo.kernels.dispatch import weighted_sum
from zoo.moe import ExpertStats, Routing, TopKRouter, routing_stats

KINDS = ("gin", "gcn")
LEVELS = ("graph", "node")
#: Columns of :func:`structure_features`.
STRUCTURE_FEATURES = ("log_degree_mean", "log_degree_std", "clustering", "density", "homophily")


def simple_graph(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """The simple undirected graph of ``edge_index``: both directions of every edge, no self-loops or duplicates,
    sorted by (source, target)."""
    edge_index, _ = remove_self_loops(edge_index)
    return to_undirected(edge_index, num_nodes=num_nodes)


def _row_pointers(sources: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """CSR row pointers ``[N + 1]`` of edges sorted by source."""
    counts = torch.bincount(sources, minlength=num_nodes)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _expand(rowptr: torch.Tensor, targets: torch.Tensor, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (item, neighbour) pair: item ``i`` paired with each neighbour of ``nodes[i]`` (CSR ``rowptr``/``targets``).

    Returns the item index and the neighbour of each pair, items in order.
    """
    starts, counts = rowptr[nodes], rowptr[nodes + 1] - rowptr[nodes]
    item = torch.repeat_interleave(torch.arange(nodes.numel(), device=nodes.device), counts)
    first = torch.cumsum(counts, 0) - counts
    offset = torch.arange(item.numel(), device=nodes.device) - first[item]
    return item, targets[starts[item] + offset]


def _lookup(sorted_keys: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position of each query in ``sorted_keys`` and whether it is there."""
    pos = torch.searchsorted(sorted_keys, queries)
    if sorted_keys.numel() == 0:
        return pos, torch.zeros_like(queries, dtype=torch.bool)
    return pos, sorted_keys[pos.clamp_max(sorted_keys.numel() - 1)] == queries


def triangles(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Triangles through each node ``[N]`` of the simple undirected graph of ``edge_index``."""
    return _simple_triangles(simple_graph(edge_index, num_nodes), num_nodes)


def _simple_triangles(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """:func:`triangles` of a graph already made simple by :func:`simple_graph` (its edges sorted).

    Edges are oriented from the lower to the higher (degree, id) end; a wedge ``v ← u → w`` of two out-edges closes
    a triangle when ``v → w`` is an edge. Each triangle is seen exactly once, from its lowest corner, and only
    ``Σ_u outdeg(u)² = O(E^1.5)`` wedges are looked at (hubs have few out-edges).
    """
    src, dst = edge_index
    deg = torch.bincount(src, minlength=num_nodes)
    rank = deg * num_nodes + torch.arange(num_nodes, device=src.device)
    up = rank[src] < rank[dst]
    src, dst = src[up], dst[up]  # still sorted by (source, target)
    item, w = _expand(_row_pointers(src, num_nodes), dst, src)
    u, v = src[item], dst[item]
    _, closed = _lookup(src * num_nodes + dst, v * num_nodes + w)
    corners = torch.cat([u[closed], v[closed], w[closed]])
    return torch.bincount(corners, minlength=num_nodes).float()


def structure_features(
    edge_index: torch.Tensor,
    num_nodes: int,
    batch: torch.Tensor | None,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    num_graphs: int | None = None,
) -> torch.Tensor:
    """Per-graph structure features ``[G, 5]`` of a batch, columns :data:`STRUCTURE_FEATURES`.

    Edges are read as a simple undirected graph. ``log_degree_*``: mean and population std of ``log(1 + degree)``;
    ``clustering``: mean local clustering coefficient (0 at nodes of degree < 2, as networkx's
    ``average_clustering``); ``density``: ``2|E| / (n (n − 1))`` (0 for one node); ``homophily``: mean cosine
    similarity of the features at the two ends of an edge (0 without edges), a label-free proxy since labels are
    not known at test time.

    Args:
        edge_index: ``[2, E]`` edges of the batch.
        num_nodes: N.
        batch: ``[N]`` graph of each node, or None for one graph.
        x: ``[N, F]`` node features.
        y: ``[N]`` node labels; when given, ``homophily`` is the label edge homophily (share of edges joining
            nodes of one label) instead of the feature proxy, for analysis.
        num_graphs: G (default: ``batch.max() + 1``).
    """
    check_arg(x.dim() == 2 and x.shape[0] == num_nodes, "x.shape", tuple(x.shape), f"[{num_nodes}, F]")
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=x.device)
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if num_nodes else 0
    edge_index = simple_graph(edge_index, num_nodes)
    src, dst = edge_index
    deg = torch.bincount(src, minlength=num_nodes).float()
    n = scatter(torch.ones_like(deg), batch, 0, dim_size=num_graphs, reduce="sum")
    log_deg = torch.log1p(deg)
    mean = scatter(log_deg, batch, 0, dim_size=num_graphs, reduce="sum") / n.clamp_min(1)
    var = scatter(log_deg.square(), batch, 0, dim_size=num_graphs, reduce="sum") / n.clamp_min(1) - mean.square()
    local = 2 * _simple_triangles(edge_index, num_nodes) / (deg * (deg - 1)).clamp_min(1)
    clustering = scatter(local, batch, 0, dim_size=num_graphs, reduce="sum") / n.clamp_min(1)
    edges = scatter(torch.ones_like(src, dtype=torch.float), batch[src], 0, dim_size=num_graphs, reduce="sum")
    density = edges / (n * (n - 1)).clamp_min(1)
    if y is None:
        agree = F.cosine_similarity(x[src].float(), x[dst].float(), dim=-1)
    else:
        agree = (y[src] == y[dst]).float()
    homophily = scatter(agree, batch[src], 0, dim_size=num_graphs, reduce="sum") / edges.clamp_min(1)
    return torch.stack([mean, var.clamp_min(0).sqrt(), clustering, density, homophily], -1)


@dataclass
class EgoSubgraphs:
    """The ``hops``-hop ego-subgraphs of every node, as one disjoint union of ``S`` nodes.

    ``node[S]``: the original node of each union node; ``edge_index[2, E_s]``: the edges of each ego-subgraph
    (induced, both directions), in union ids; ``batch[S]``: the centre each union node belongs to (ego ``v`` is
    graph ``v``); ``center[N]``: the union id of each centre.
    """

    node: torch.Tensor
    edge_index: torch.Tensor
    batch: torch.Tensor
    center: torch.Tensor


def ego_subgraphs(edge_index: torch.Tensor, num_nodes: int, hops: int = 2) -> EgoSubgraphs:
    """Every node's ``hops``-hop ego-subgraph (the induced subgraph on the nodes within ``hops`` edges of it, as
    ``torch_geometric.utils.k_hop_subgraph`` builds it), all at once.

    Memory is ``O(Σ_v |E(ego_v)|)``: fine for the small graphs of few-shot node tasks, not for million-node graphs.

    Args:
        edge_index: ``[2, E]`` edges (read as undirected).
        num_nodes: N.
        hops: k of the k-hop neighbourhood.
    """
    check_arg(isinstance(hops, int) and hops >= 0, "hops", hops, "an int >= 0")
    src, dst = simple_graph(edge_index, num_nodes)
    rowptr = _row_pointers(src, num_nodes)
    nodes = torch.arange(num_nodes, device=edge_index.device)
    keys = nodes * num_nodes + nodes  # (centre, member) pairs as centre · N + member, sorted
    for _ in range(hops):
        item, reached = _expand(rowptr, dst, keys % num_nodes)
        keys = torch.unique(torch.cat([keys, keys[item] // num_nodes * num_nodes + reached]))
    centre, member = keys // num_nodes, keys % num_nodes
    item, other = _expand(rowptr, dst, member)
    pos, inside = _lookup(keys, centre[item] * num_nodes + other)
    union_edges = torch.stack([item[inside], pos[inside]])
    return EgoSubgraphs(member, union_edges, centre, torch.searchsorted(keys, nodes * num_nodes + nodes))


def route_input(
    x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None, level: str = "graph",
    num_graphs: int | None = None, *, hops: int = 2,
) -> torch.Tensor:
    """A structure-aware router's input per token, ``[T, d + 5]``: ``[mean of X || structure features]`` per graph
    (``level="graph"``, ``[G, ·]``) or per node's ``hops``-hop ego-subgraph (``level="node"``, ``[N, ·]``). It
    depends on the data only, so a task computes it once per graph and passes it to every forward."""
    check_arg(level in LEVELS, "level", level, LEVELS)
    N = x.shape[0]
    if level == "node":
        ego = ego_subgraphs(edge_index, N, hops)
        x_ego = x[ego.node]
        feats = structure_features(ego.edge_index, len(ego.node), ego.batch, x_ego, num_graphs=N)
        return torch.cat([global_mean_pool(x_ego, ego.batch, N), feats], -1)
    G = count_graphs(batch, num_graphs)
    feats = structure_features(edge_index, N, batch, x, num_graphs=G)
    return torch.cat([global_mean_pool(x, batch, G), feats], -1)


class GNNEncoder(nn.Module):
    """A GIN or GCN encoder: node features ``[N, d_in]`` → node embeddings ``[N, hidden]``.

    GIN layers use a two-layer ReLU MLP (Xu et al. 2019), GCN layers the symmetric normalisation with self-loops
    (Kipf & Welling 2017); ReLU between layers, none after the last. No batch norm or dropout, so a graph's
    embedding does not depend on the other graphs of its batch.

    Args:
        kind: ``"gin"`` or ``"gcn"``.
        d_in: input feature width.
        hidden: width of every layer and of the output.
        layers: number of message-passing layers.
    """

    def __init__(self, kind: str, d_in: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        check_arg(kind in KINDS, "kind", kind, KINDS)
        for name, value in (("d_in", d_in), ("hidden", hidden), ("layers", layers)):
            check_arg(isinstance(value, int) and value > 0, name, value, "a positive int")
        self.kind, self.out_dim = kind, hidden
        widths = [d_in] + [hidden] * layers
        self.convs = nn.ModuleList(
            GINConv(nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, b))) if kind == "gin" else GCNConv(a, b)
            for a, b in zip(widths[:-1], widths[1:])
        )

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x


def orthogonality_loss(prompts: torch.Tensor) -> torch.Tensor:
    """``‖P̂ P̂ᵀ − I‖_F²`` over the l2-normalised prompts ``P̂`` ``[M, d]``: 0 when the prompts are orthogonal."""
    unit = F.normalize(prompts, dim=-1)
    gram = unit @ unit.t()
    return (gram - torch.eye(len(prompts), device=prompts.device, dtype=gram.dtype)).square().sum()


@dataclass
class GMoPEOutput:
    """Node embeddings ``[N, H]``, graph embeddings ``[G, H]`` (mean of the node embeddings), the already weighted
    aux losses (``balance``, ``orth``), the router's stats keyed ``"router"`` and its :class:`Routing` (None for
    the dense twin)."""

    nodes: torch.Tensor
    graphs: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, ExpertStats] = field(default_factory=dict)
    routing: Routing | None = None


def usage_entropy(stats: ExpertStats) -> float:
    """Entropy (nats) of the share of routed slots each expert took: ``log M`` when balanced, 0 when collapsed."""
    load = stats.load[stats.load > 0].double()
    return float(-(load * load.log()).sum())


def count_graphs(batch: torch.Tensor | None, num_graphs: int | None = None) -> int:
    """G: ``num_graphs`` if given, else ``batch.max() + 1`` (1 without a batch vector)."""
    if num_graphs is not None:
        return num_graphs
    return 1 if batch is None or batch.numel() == 0 else int(batch.max()) + 1


class _PromptedGNN(nn.Module):
    """What every model of this module shares: prompt-only transfer and the prompt diagnostics."""

    prompts: nn.Parameter | None

    def tunable_parameters(self) -> list[nn.Parameter]:
        """The parameters that still train: after :meth:`freeze_experts`, the prompts (and the router if kept)."""
        return [p for p in self.parameters() if p.requires_grad]

    def max_prompt_cosine(self) -> float:
        """Largest ``|cos|`` between two different prompts (0 for fewer than two prompts)."""
        if self.prompts is None or len(self.prompts) < 2:
            return 0.0
        unit = F.normalize(self.prompts.detach(), dim=-1)
        gram = (unit @ unit.t()).abs().fill_diagonal_(0)
        return float(gram.max())

    usage_entropy = staticmethod(usage_entropy)


class GMoPE(_PromptedGNN):
    """GMoPE: ``M`` prompted GNN experts, a structure-aware top-k router, prompt orthogonality.

    Routing. One token per graph (``level="graph"``) or per node (``level="node"``, routed on its ``hops``-hop
    ego-subgraph). The token's router input is ``[mean of X over the graph or ego-subgraph || structure features]``
    (:func:`structure_features`, on the raw features: routing does not depend on the prompts); an MLP maps it to
    the ``zoo.moe.TopKRouter``, which picks ``k`` experts and their weights and adds its balance loss.

    Dispatch. Every expert is a GNN that needs the whole graph around a token (its neighbours' features, not only
    the token's), so an expert cannot run on its tokens alone as an FFN expert does. Each expert that at least one
    token of the batch chose (all ``M`` at most, and ``M`` is small) runs on the whole batch:
    ``H[m] = Enc_m(X + 1 p_mᵀ, A)``, ``[M', N, H]``. Each node then takes its token's ``k`` chosen rows from ``H``
    (a gather) and sums them with the token's weights (``zoo.kernels`` weighted sum):
    ``h_v = Σ_s g_{t(v), s} · H[id_{t(v), s}, v]``. Outputs no token of a node's graph chose are computed but unused;
    an expert no token chose does not run and gets no gradient. :meth:`inactive_params` counts the ``M − k``
    experts a token leaves out as idle, so ``zoo.moe.count_params`` reports ``k`` of ``M`` as active.

    Transfer. :meth:`freeze_experts` freezes the encoders and, by default, the router: a few-shot target set is too
    small to retrain a gate without collapsing it, and the router reads no prompt, so the pretrained routing of a
    new domain is kept and the prompts (plus the caller's head) adapt to it.

    Args:
        d: node feature width (the aligned features).
        num_experts: M.
        k: experts per token.
        kind: expert GNN, ``"gin"`` or ``"gcn"``.
        hidden: width of every expert layer and of the embeddings.
        layers: message-passing layers per expert.
        prompts: give each expert a prompt vector (False: :class:`MoENoPrompt`).
        orth: add the weighted orthogonality loss ``orth_coef · L_orth`` to ``aux`` as ``"orth"``.
        orth_coef: weight of ``L_orth``.
        balance_coef: the router's load-balance weight.
        router_hidden: width of the router MLP (the gate's input).
        hops: k of the ego-subgraphs of node-level routing.
    """

    def __init__(
        self,
        d: int = 32,
        num_experts: int = 4,
        k: int = 2,
        kind: str = "gin",
        hidden: int = 64,
        layers: int = 2,
        *,
        prompts: bool = True,
        orth: bool = True,
        orth_coef: float = 0.1,
        balance_coef: float = 0.01,
        router_hidden: int = 64,
        hops: int = 2,
    ) -> None:
        super().__init__()
        check_arg(isinstance(num_experts, int) and num_experts > 0, "num_experts", num_experts, "a positive int")
        check_arg(orth_coef >= 0, "orth_coef", orth_coef, "a non-negative float")
        check_arg(isinstance(hops, int) and hops >= 0, "hops", hops, "an int >= 0")
        self.d, self.num_experts, self.k, self.hops, self.out_dim = d, num_experts, k, hops, hidden
        self.orth, self.orth_coef = orth and prompts, orth_coef
        self.prompts = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_experts, d))) if prompts else None
        self.encoders = nn.ModuleList(GNNEncoder(kind, d, hidden, layers) for _ in range(num_experts))
        self.route_mlp = nn.Sequential(nn.Linear(d + len(STRUCTURE_FEATURES), router_hidden), nn.ReLU())
        self.router = TopKRouter(router_hidden, num_experts, k, balance_coef=balance_coef)

    def route_input(
        self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None, level: str = "graph",
        num_graphs: int | None = None,
    ) -> torch.Tensor:
        """The router's input per token (:func:`route_input`, with this model's ``hops``)."""
        return route_input(x, edge_index, batch, level, num_graphs, hops=self.hops)

    def expert_outputs(self, x: torch.Tensor, edge_index: torch.Tensor, experts: list[int] | None = None) -> torch.Tensor:
        """Experts on the whole batch: ``[len(experts), N, H]`` (all M by default), expert m reading ``X + 1 p_mᵀ``."""
        experts = range(self.num_experts) if experts is None else experts
        outs = [self.encoders[m](x if self.prompts is None else x + self.prompts[m], edge_index) for m in experts]
        return torch.stack(outs)

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor | None = None,
        *,
        level: str = "graph",
        route_input: torch.Tensor | None = None,
        num_graphs: int | None = None,
    ) -> GMoPEOutput:
        """Route, run the experts and combine.

        Args:
            x: ``[N, d]`` node features.
            edge_index: ``[2, E]`` edges of the batch.
            batch: ``[N]`` graph of each node (None: one graph).
            level: ``"graph"`` (one token per graph) or ``"node"`` (one token per node, on its ego-subgraph).
            route_input: the router input of :meth:`route_input`, if already computed.
            num_graphs: G (default: ``batch.max() + 1``).
        """
        check_arg(x.dim() == 2 and x.shape[1] == self.d, "x.shape", tuple(x.shape), f"[N, {self.d}]")
        check_arg(level in LEVELS, "level", level, LEVELS)
        N, G = x.shape[0], count_graphs(batch, num_graphs)
        if route_input is None:
            route_input = self.route_input(x, edge_index, batch, level, G)
        routing = self.router(self.route_mlp(route_input))
        if level == "node":
            token = torch.arange(N, device=x.device)
        else:
            token = batch if batch is not None else torch.zeros(N, dtype=torch.long, device=x.device)
        ids, weights = routing.ids[token], routing.weights[token]  # [N, k]
        used = torch.unique(routing.ids[routing.ids >= 0])
        row = torch.zeros(self.num_experts + 1, dtype=torch.long, device=x.device)  # expert id → row of H; −1 → 0
        row[used] = torch.arange(len(used), device=x.device)
        H = self.expert_outputs(x, edge_index, used.tolist())
        chosen = H[row[ids], torch.arange(N, device=x.device)[:, None]]  # [N, k, H]; −1 slots weigh 0
        nodes = weighted_sum(chosen, weights, H.dtype)
        aux = dict(routing.aux)
        if self.orth:
            aux["orth"] = self.orth_coef * orthogonality_loss(self.prompts)
        stats = routing_stats(routing.ids, routing.logits, routing.ids, self.num_experts, routing.drop_rate)
        return GMoPEOutput(nodes, global_mean_pool(nodes, batch, G), aux, {"router": stats}, routing)

    def freeze_experts(self, router: bool = True) -> None:
        """Freeze the expert encoders and (``router=True``) the router; the prompts stay trainable."""
        self.encoders.requires_grad_(False)
        self.route_mlp.requires_grad_(not router)
        self.router.requires_grad_(not router)

    def inactive_params(self) -> int:
        """Parameters a token leaves idle: the ``M − k`` experts it was not routed to."""
        per_expert = sum(p.numel() for p in self.encoders[0].parameters())
        return per_expert * (self.num_experts - self.k)


class MoENoPrompt(GMoPE):
    """GMoPE without prompts: the same experts and router, the experts reading the raw features."""

    def __init__(self, d: int = 32, num_experts: int = 4, k: int = 2, kind: str = "gin", hidden: int = 64,
                 layers: int = 2, **kwargs) -> None:
        super().__init__(d, num_experts, k, kind, hidden, layers, prompts=False, **kwargs)


class PlainGNN(_PromptedGNN):
    """One GNN encoder behind the same call and output as :class:`GMoPE`, no router (``level`` and ``route_input``
    are accepted and ignored): the backbone of the single-GNN rows (full fine-tuning, linear probe and the ProG
    prompts, which wrap its ``encoder``), or, with ``prompt``, one that reads ``X + 1 pᵀ`` with a learned ``p``.

    Args:
        d: node feature width.
        kind: ``"gin"`` or ``"gcn"``.
        hidden: width of every layer and of the embeddings.
        layers: message-passing layers.
        prompt: add one learned prompt vector to every node's features.
    """

    def __init__(self, d: int = 32, kind: str = "gin", hidden: int = 64, layers: int = 2, *,
                 prompt: bool = False) -> None:
        super().__init__()
        self.d, self.out_dim = d, hidden
        self.prompts = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, d))) if prompt else None
        self.encoder = GNNEncoder(kind, d, hidden, layers)

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor | None = None,
        *,
        level: str = "graph",
        route_input: torch.Tensor | None = None,
        num_graphs: int | None = None,
    ) -> GMoPEOutput:
        check_arg(x.dim() == 2 and x.shape[1] == self.d, "x.shape", tuple(x.shape), f"[N, {self.d}]")
        nodes = self.encoder(x if self.prompts is None else x + self.prompts[0], edge_index)
        return GMoPEOutput(nodes, global_mean_pool(nodes, batch, count_graphs(batch, num_graphs)))

    def freeze_experts(self, router: bool = True) -> None:
        """Freeze the encoder; a prompt stays trainable (``router`` is accepted for a common call)."""
        self.encoder.requires_grad_(False)


class DensePromptGNN(PlainGNN):
    """The dense twin: one encoder of width ``2 · hidden`` (the width of GMoPE's k = 2 active experts) reading
    ``X + 1 pᵀ`` with one prompt.

    Args:
        d: node feature width.
        kind: ``"gin"`` or ``"gcn"``.
        hidden: GMoPE's expert width; the encoder is twice as wide.
        layers: message-passing layers.
    """

    def __init__(self, d: int = 32, kind: str = "gin", hidden: int = 64, layers: int = 2) -> None:
        super().__init__(d, kind, 2 * hidden, layers, prompt=True)
