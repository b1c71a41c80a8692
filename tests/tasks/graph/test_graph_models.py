"""Graph encoders, structure features, GMoPE and the pretexts: structure features against networkx, ego-subgraphs
against ``k_hop_subgraph``, the router's choices and the combined embeddings against a per-token loop, batching
against per-graph runs, prompt-only gradients, the orthogonality loss, NT-Xent against a loop."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric import seed_everything
from torch_geometric.data import Batch, Data
from torch_geometric.utils import from_networkx, k_hop_subgraph, negative_sampling

from zoo.errors import ZooValueError
from zoo.moe import ExpertStats, count_params
from zoo.tasks.graph.models import (
    GMoPE,
    DensePromptGNN,
    GNNEncoder,
    MoENoPrompt,
    ego_subgraphs,
    orthogonality_loss,
    structure_features,
    triangles,
    usage_entropy,
)
from zoo.tasks.graph.pretext import (
    LinkDecoder,
    drop_edges,
    graphcl_loss,
    link_loss,
    link_scores,
    mask_features,
    nt_xent,
)

D = 8


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def graph(g: nx.Graph, d: int = D) -> Data:
    data = Data(edge_index=from_networkx(g).edge_index if g.number_of_edges() else torch.empty(2, 0, dtype=torch.long),
                num_nodes=g.number_of_nodes())
    data.x = torch.randn(g.number_of_nodes(), d)
    return data


GRAPHS = [
    nx.gnp_random_graph(12, 0.3, seed=1),
    nx.path_graph(5),
    nx.star_graph(4),
    nx.complete_graph(4),
    nx.empty_graph(1),
    nx.empty_graph(3),
    nx.barbell_graph(4, 2),
    nx.barabasi_albert_graph(30, 3, seed=4),
]


# ---------------------------------------------------------------- encoders


@pytest.mark.parametrize("kind", ["gin", "gcn"])
def test_encoder_is_permutation_equivariant(kind):
    data = graph(GRAPHS[0])
    enc = GNNEncoder(kind, D, hidden=16, layers=2)
    out = enc(data.x, data.edge_index)
    assert out.shape == (12, 16) and enc.out_dim == 16
    perm = torch.randperm(12)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(12)
    permuted = enc(data.x[perm], inv[data.edge_index])
    torch.testing.assert_close(permuted, out[perm], rtol=1e-5, atol=1e-5)


def test_encoder_rejects_unknown_kind():
    with pytest.raises(ZooValueError, match="kind='gat'"):
        GNNEncoder("gat", D)


# ---------------------------------------------------------------- structure features


@pytest.mark.parametrize("g", [nx.gnp_random_graph(15, 0.4, seed=3), nx.barabasi_albert_graph(40, 3, seed=4)])
def test_triangles_match_networkx(g):
    n = g.number_of_nodes()
    assert triangles(from_networkx(g).edge_index, n).tolist() == [float(nx.triangles(g, v)) for v in range(n)]


def test_structure_features_match_networkx_per_graph_of_a_batch():
    batch = Batch.from_data_list([graph(g) for g in GRAPHS])
    feats = structure_features(batch.edge_index, batch.num_nodes, batch.batch, batch.x)
    assert feats.shape == (len(GRAPHS), 5)
    for i, g in enumerate(GRAPHS):
        log_deg = np.log1p([d for _, d in g.degree()])
        x = batch.get_example(i).x
        cos = [float(F.cosine_similarity(x[u], x[v], dim=0)) for u, v in g.edges()]
        expected = [log_deg.mean(), log_deg.std(), nx.average_clustering(g), nx.density(g),
                    np.mean(cos) if cos else 0.0]
        np.testing.assert_allclose(feats[i].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_structure_features_label_homophily_and_simple_graph():
    g = nx.cycle_graph(6)
    data = graph(g)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    feats = structure_features(data.edge_index, 6, None, data.x, y)
    assert float(feats[0, 4]) == pytest.approx(4 / 6)  # edges 0-1, 1-2, 3-4, 4-5 of six agree
    # duplicates, one-way edges and self-loops read as the same simple graph
    messy = torch.cat([data.edge_index, data.edge_index[:, :3], torch.tensor([[2, 4], [2, 4]])], 1)
    one_way = data.edge_index[:, data.edge_index[0] < data.edge_index[1]]
    for ei in (messy, one_way):
        torch.testing.assert_close(structure_features(ei, 6, None, data.x, y), feats)


def test_ego_subgraphs_match_k_hop_subgraph():
    data = graph(nx.gnp_random_graph(14, 0.2, seed=5))
    for hops in (1, 2):
        ego = ego_subgraphs(data.edge_index, 14, hops)
        for v in range(14):
            subset, sub_edges, _, _ = k_hop_subgraph(v, hops, data.edge_index, num_nodes=14)
            assert ego.node[ego.batch == v].tolist() == subset.tolist()
            assert int(ego.node[ego.center[v]]) == v and int(ego.batch[ego.center[v]]) == v
            mine = ego.node[ego.edge_index[:, ego.batch[ego.edge_index[0]] == v]]
            assert sorted(map(tuple, mine.t().tolist())) == sorted(map(tuple, sub_edges.t().tolist()))


# ---------------------------------------------------------------- GMoPE


def small_gmope(**kw) -> GMoPE:
    return GMoPE(d=D, num_experts=4, k=2, hidden=16, router_hidden=16, **kw).eval()


def loop_route(model: GMoPE, x: torch.Tensor, edge_index: torch.Tensor) -> tuple[list[int], list[float]]:
    """One token by hand: router input, MLP, gate, softmax, top-2, renormalised weights."""
    n = x.shape[0]
    feats = structure_features(edge_index, n, None, x)[0]
    gate_in = model.route_mlp(torch.cat([x.mean(0), feats]))
    probs = torch.softmax(gate_in @ model.router.gate.weight.t(), -1)
    top = sorted(range(4), key=lambda e: -float(probs[e].detach()))[:2]
    total = float(probs[top].sum().detach())
    return top, [float(probs[e].detach()) / total for e in top]


def loop_combine(model: GMoPE, x, edge_index, ids, weights) -> torch.Tensor:
    out = 0
    for e, w in zip(ids, weights):
        out = out + w * model.encoders[e](x + model.prompts[e], edge_index)
    return out


@pytest.mark.parametrize("kind", ["gin", "gcn"])
def test_gmope_graph_routing_matches_a_per_graph_loop(kind):
    model = small_gmope(kind=kind)
    datas = [graph(g) for g in GRAPHS[:4]]
    batch = Batch.from_data_list(datas)
    out = model(batch.x, batch.edge_index, batch.batch)
    assert out.nodes.shape == (batch.num_nodes, 16) and out.graphs.shape == (4, 16)
    for i, data in enumerate(datas):
        ids, weights = loop_route(model, data.x, data.edge_index)
        assert out.routing.ids[i].tolist() == ids
        np.testing.assert_allclose(out.routing.weights[i].tolist(), weights, rtol=1e-5)
        expected = loop_combine(model, data.x, data.edge_index, ids, weights)
        torch.testing.assert_close(out.nodes[batch.batch == i], expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.graphs[i], expected.mean(0), rtol=1e-4, atol=1e-5)


def test_gmope_on_a_batch_of_two_equals_each_graph_alone():
    model = small_gmope()
    a, b = graph(GRAPHS[0]), graph(GRAPHS[6])
    batch = Batch.from_data_list([a, b])
    for level in ("graph", "node"):
        out = model(batch.x, batch.edge_index, batch.batch, level=level)
        alone = [model(d.x, d.edge_index, level=level) for d in (a, b)]
        torch.testing.assert_close(out.nodes, torch.cat([o.nodes for o in alone]), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.graphs, torch.cat([o.graphs for o in alone]), rtol=1e-4, atol=1e-5)


def test_gmope_node_routing_reads_each_ego_subgraph():
    model = small_gmope()
    data = graph(nx.gnp_random_graph(10, 0.25, seed=2))
    out = model(data.x, data.edge_index, level="node")
    assert out.routing.ids.shape == (10, 2) and out.graphs.shape == (1, 16)
    experts = model.expert_outputs(data.x, data.edge_index)
    for v in range(10):
        subset, sub_edges, _, _ = k_hop_subgraph(v, 2, data.edge_index, relabel_nodes=True, num_nodes=10)
        ids, weights = loop_route(model, data.x[subset], sub_edges)
        assert out.routing.ids[v].tolist() == ids
        expected = sum(w * experts[e, v] for e, w in zip(ids, weights))
        torch.testing.assert_close(out.nodes[v], expected, rtol=1e-4, atol=1e-5)
    cached = model(data.x, data.edge_index, level="node", route_input=model.route_input(data.x, data.edge_index,
                                                                                       level="node"))
    torch.testing.assert_close(cached.nodes, out.nodes)


def test_gmope_aux_and_stats():
    model = small_gmope()
    batch = Batch.from_data_list([graph(g) for g in GRAPHS])
    out = model(batch.x, batch.edge_index, batch.batch)
    assert set(out.aux) == {"balance", "orth"}
    torch.testing.assert_close(out.aux["orth"], 0.1 * orthogonality_loss(model.prompts))
    stats = out.stats["router"]
    assert isinstance(stats, ExpertStats) and int(stats.tokens.sum()) == 2 * len(GRAPHS)
    assert 0 <= model.usage_entropy(stats) <= math.log(4) + 1e-9
    assert set(MoENoPrompt(d=D, hidden=16)(batch.x, batch.edge_index, batch.batch).aux) == {"balance"}
    with pytest.raises(ZooValueError, match="level='edge'"):
        model(batch.x, batch.edge_index, batch.batch, level="edge")


def test_orthogonality_loss_zero_for_orthonormal_prompts_and_hand_value():
    q, _ = torch.linalg.qr(torch.randn(D, 4))
    assert float(orthogonality_loss(3.0 * q.t())) == pytest.approx(0.0, abs=1e-10)
    # two equal prompts and one orthogonal to both: off-diagonal cosines 1, 1 (symmetric), 0, ...
    p = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert float(orthogonality_loss(p)) == pytest.approx(2.0)


def test_prompt_diagnostics():
    model = small_gmope()
    with torch.no_grad():
        model.prompts.copy_(torch.eye(4, D))
        model.prompts[3] = torch.tensor([0.6, -0.8] + [0.0] * (D - 2))
    assert model.max_prompt_cosine() == pytest.approx(0.8)
    stats = ExpertStats(torch.tensor([2, 2, 0, 0]), torch.tensor([0.5, 0.5, 0.0, 0.0]), torch.tensor(0.0),
                        torch.tensor(1.0), torch.tensor(2.0), 4)
    assert usage_entropy(stats) == pytest.approx(math.log(2))


@pytest.mark.parametrize("router", [True, False])
def test_freeze_experts_leaves_gradients_to_prompts_only(router):
    model = small_gmope()
    model.freeze_experts(router=router)
    tunable = {id(p) for p in model.tunable_parameters()}
    router_params = {id(p) for p in [*model.route_mlp.parameters(), *model.router.parameters()]}
    assert tunable == {id(model.prompts)} | (set() if router else router_params)
    batch = Batch.from_data_list([graph(g) for g in GRAPHS[:3]])
    out = model(batch.x, batch.edge_index, batch.batch)
    (out.graphs.square().sum() + sum(out.aux.values())).backward()
    assert model.prompts.grad is not None and float(model.prompts.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.encoders.parameters())
    assert all((p.grad is None) == router for p in model.route_mlp.parameters())


def test_unfrozen_gmope_trains_its_chosen_experts_and_router():
    model = small_gmope()
    batch = Batch.from_data_list([graph(g) for g in GRAPHS[:3]])
    out = model(batch.x, batch.edge_index, batch.batch)
    (out.graphs.square().sum() + sum(out.aux.values())).backward()
    chosen = set(out.routing.ids.flatten().tolist())
    for e, enc in enumerate(model.encoders):
        assert (next(enc.parameters()).grad is not None) == (e in chosen)
    assert model.router.gate.weight.grad is not None and model.route_mlp[0].weight.grad is not None


def test_dense_twin_and_parameter_counts():
    model = small_gmope()
    per_expert = sum(p.numel() for p in model.encoders[0].parameters())
    total, active = count_params(model)
    assert total - active == 2 * per_expert
    dense = DensePromptGNN(d=D, hidden=16)
    batch = Batch.from_data_list([graph(g) for g in GRAPHS[:3]])
    out = dense(batch.x, batch.edge_index, batch.batch)
    assert out.nodes.shape == (batch.num_nodes, 32) and out.graphs.shape == (3, 32) and dense.out_dim == 32
    assert out.aux == {} and out.stats == {} and out.routing is None
    dense.freeze_experts()
    assert sum(p.numel() for p in dense.tunable_parameters()) == D
    assert dense.max_prompt_cosine() == 0.0


# ---------------------------------------------------------------- pretexts


def test_nt_xent_matches_a_loop():
    z1, z2 = torch.randn(5, 6), torch.randn(5, 6)
    tau = 0.1
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    losses = []
    for i in range(10):
        partner = (i + 5) % 10
        others = [math.exp(float(z[i] @ z[j]) / tau) for j in range(10) if j != i]
        losses.append(-math.log(math.exp(float(z[i] @ z[partner]) / tau) / sum(others)))
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(sum(losses) / 10, rel=1e-5)


def test_graphcl_loss_without_augmentation_is_nt_xent_of_equal_views():
    model = small_gmope().train()
    batch = Batch.from_data_list([graph(g) for g in GRAPHS[:4]])

    def encode(x, edge_index, b):
        return model(x, edge_index, b).graphs

    loss = graphcl_loss(encode, batch, drop_edge=0.0, mask_feat=0.0)
    z = encode(batch.x, batch.edge_index, batch.batch)
    torch.testing.assert_close(loss, nt_xent(z, z, 0.1))
    graphcl_loss(encode, batch).backward()
    assert model.prompts.grad is not None
    with pytest.raises(ZooValueError, match="num_graphs"):
        graphcl_loss(encode, Batch.from_data_list([graph(GRAPHS[0])]))


def test_augmentations():
    ei = from_networkx(nx.complete_graph(30)).edge_index
    kept = drop_edges(ei, 0.5)
    pairs = set(map(tuple, kept.t().tolist()))
    assert all((v, u) in pairs for u, v in pairs)
    assert 0.35 < kept.shape[1] / ei.shape[1] < 0.65
    x = torch.randn(20, 200)
    masked = mask_features(x, 0.3)
    zero_cols = (masked == 0).all(0)
    assert torch.equal(masked[:, ~zero_cols], x[:, ~zero_cols]) and 0.15 < zero_cols.float().mean() < 0.45
    with pytest.raises(ZooValueError, match="drop_edge=1.0"):
        drop_edges(ei, 1.0)


def test_link_scores_and_loss():
    z = torch.randn(10, 4, requires_grad=True)
    pairs = torch.tensor([[0, 3], [5, 1]])
    torch.testing.assert_close(link_scores(z, pairs), torch.stack([z[0] @ z[5], z[3] @ z[1]]))
    decoder = LinkDecoder(4)
    torch.testing.assert_close(link_scores(z, pairs, decoder), link_scores(z, pairs.flip(0), decoder))
    ei = from_networkx(nx.cycle_graph(10)).edge_index
    seed_everything(1)  # negative_sampling draws from Python's random too
    loss = link_loss(z, ei, 10)
    seed_everything(1)
    neg = negative_sampling(ei, num_nodes=10, num_neg_samples=ei.shape[1])
    pos_s, neg_s = link_scores(z, ei), link_scores(z, neg)
    expected = torch.cat([F.softplus(-pos_s), F.softplus(neg_s)]).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert z.grad is not None
    batch = torch.tensor([0] * 5 + [1] * 5)
    two = from_networkx(nx.disjoint_union(nx.cycle_graph(5), nx.cycle_graph(5))).edge_index
    assert torch.isfinite(link_loss(z, two, 10, batch=batch, decoder=decoder))
