"""Prompt baselines over a frozen encoder: each one's output against its formula, its tunable parameter count, the
frozen encoder getting no gradient, GraphPrompt's prototypes against a loop, All-in-One's inserted prompt graph
against a per-graph construction as ProG builds it."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data
from torch_geometric.utils import from_networkx

from zoo.errors import ZooValueError
from zoo.tasks.graph.models import GNNEncoder
from zoo.tasks.graph.prompts import GPF, AllInOne, GPFPlus, GraphPrompt

D, H = 6, 16


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def batch_of(*graphs: nx.Graph) -> Batch:
    return Batch.from_data_list([Data(x=torch.randn(g.number_of_nodes(), D), edge_index=from_networkx(g).edge_index)
                                 for g in graphs])


BATCH_GRAPHS = (nx.cycle_graph(5), nx.star_graph(3), nx.gnp_random_graph(7, 0.4, seed=1))


def build(name: str, kind: str = "gin"):
    enc = GNNEncoder(kind, D, hidden=H)
    return {
        "gpf": lambda: GPF(enc, D),
        "gpf_plus": lambda: GPFPlus(enc, D, num_basis=4),
        "graphprompt": lambda: GraphPrompt(enc),
        "all_in_one": lambda: AllInOne(enc, D, num_tokens=3),
    }[name]()


TUNABLE = {"gpf": D, "gpf_plus": 4 * D + (D * 4 + 4), "graphprompt": H, "all_in_one": 3 * D}


@pytest.mark.parametrize("kind", ["gin", "gcn"])
@pytest.mark.parametrize("name", list(TUNABLE))
def test_shapes_tunable_counts_and_frozen_encoder(name, kind):
    model = build(name, kind)
    batch = batch_of(*BATCH_GRAPHS)
    out = model(batch.x, batch.edge_index, batch.batch)
    assert out.nodes.shape == (batch.num_nodes, H) and out.graphs.shape == (3, H)
    assert model.num_tunable() == TUNABLE[name]
    assert all(not p.requires_grad for p in model.encoder.parameters())
    out.graphs.square().sum().backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.tunable_parameters())
    assert all(p.grad is None for p in model.encoder.parameters())


@pytest.mark.parametrize("name", list(TUNABLE))
def test_batch_equals_each_graph_alone(name):
    model = build(name)
    batch = batch_of(*BATCH_GRAPHS)
    out = model(batch.x, batch.edge_index, batch.batch)
    for i in range(3):
        g = batch.get_example(i)
        alone = model(g.x, g.edge_index)
        torch.testing.assert_close(out.graphs[i : i + 1], alone.graphs, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.nodes[batch.batch == i], alone.nodes, rtol=1e-4, atol=1e-5)


def test_gpf_and_gpf_plus_follow_their_formulas():
    batch = batch_of(*BATCH_GRAPHS)
    gpf = build("gpf")
    torch.testing.assert_close(gpf(batch.x, batch.edge_index).nodes, gpf.encoder(batch.x + gpf.prompt, batch.edge_index))
    plus = build("gpf_plus")
    for v in range(4):
        scores = plus.score.weight @ batch.x[v] + plus.score.bias
        weights = torch.exp(scores) / torch.exp(scores).sum()
        expected = batch.x[v] + sum(weights[i] * plus.basis[i] for i in range(4))
        torch.testing.assert_close(plus.prompt_features(batch.x)[v], expected)


def test_graphprompt_prototypes_and_cosine_logits_match_a_loop():
    model = build("graphprompt")
    batch = batch_of(*BATCH_GRAPHS)
    out = model(batch.x, batch.edge_index, batch.batch)
    torch.testing.assert_close(out.nodes, model.encoder(batch.x, batch.edge_index) * model.prompt)
    graphs, labels = out.graphs.detach(), torch.tensor([0, 2, 0])
    protos = model.prototypes(graphs, labels, 4)
    torch.testing.assert_close(protos[0], (graphs[0] + graphs[2]) / 2)
    torch.testing.assert_close(protos[2], graphs[1])
    assert float(protos[1].abs().sum()) == 0.0
    logits = model.logits(graphs, protos[[0, 2]])
    for i in range(3):
        for c, proto in enumerate(protos[[0, 2]]):
            expected = float(F.cosine_similarity(graphs[i], proto, dim=0)) / 0.1
            assert float(logits[i, c]) == pytest.approx(expected, rel=1e-5)


def prog_prompt_graph(model: AllInOne, x: torch.Tensor, edge_index: torch.Tensor) -> tuple[set, int]:
    """One graph, built pair by pair: token–token edges (both ways) and token → node edges over the thresholds."""
    N, K = x.shape[0], model.tokens.shape[0]
    t = model.tokens.detach()
    edges = set(map(tuple, edge_index.t().tolist()))
    for i in range(K):
        for j in range(K):
            if i != j and float(torch.sigmoid(t[i] @ t[j])) >= model.inner_prune:
                edges.add((N + i, N + j))
        for v in range(N):
            if float(torch.sigmoid(t[i] @ x[v])) >= model.cross_prune:
                edges.add((N + i, v))
    return edges, N + K


def test_all_in_one_inserts_the_prompt_graph_as_prog_does():
    model = AllInOne(GNNEncoder("gin", D, hidden=H), D, num_tokens=4, inner_prune=0.5, cross_prune=0.5)
    batch = batch_of(*BATCH_GRAPHS)
    x_all, edges, batch_all = model.prompt_graph(batch.x, batch.edge_index, batch.batch)
    N, K = batch.num_nodes, 4
    assert x_all.shape == (N + 3 * K, D) and batch_all.tolist() == batch.batch.tolist() + [0] * K + [1] * K + [2] * K
    torch.testing.assert_close(x_all[N + K : N + 2 * K], model.tokens)
    for g in range(3):
        data = batch.get_example(g)
        expected, size = prog_prompt_graph(model, data.x, data.edge_index)
        # this graph's nodes and tokens in batch ids, relabelled to [nodes, tokens] as in the loop
        ids = torch.cat([(batch.batch == g).nonzero()[:, 0], N + g * K + torch.arange(K)])
        local = torch.full((N + 3 * K,), -1)
        local[ids] = torch.arange(size)
        mine = local[edges[:, batch_all[edges[0]] == g]]
        assert set(map(tuple, mine.t().tolist())) == expected
    out = model(batch.x, batch.edge_index, batch.batch)
    full = model.encoder(x_all, edges)
    torch.testing.assert_close(out.nodes, full[:N])
    torch.testing.assert_close(out.graphs[1], full[batch_all == 1].mean(0))


def test_bad_arguments_are_refused():
    enc = GNNEncoder("gin", D)
    with pytest.raises(ZooValueError, match="num_tokens=0"):
        AllInOne(enc, D, num_tokens=0)
    with pytest.raises(ZooValueError, match="cross_prune=1.5"):
        AllInOne(enc, D, cross_prune=1.5)
    with pytest.raises(ZooValueError, match="num_basis=0"):
        GPFPlus(enc, D, num_basis=0)
    with pytest.raises(ZooValueError, match="temperature=0"):
        GraphPrompt(enc, temperature=0)
