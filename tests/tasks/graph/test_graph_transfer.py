"""The graph task's downstream side against references: what each method tunes (and that the pretrained backbone
it is given never changes), the tuned parameter counts, node classification of two separable communities, accuracy
and macro-F1 against scikit-learn on the classifier's own predictions, the link-prediction edge split and ROC-AUC
against scikit-learn on scores recomputed by hand, and the whole evaluation of a tiny run for three methods."""

from __future__ import annotations

import random

import math
import statistics

import networkx as nx
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

from zoo.config import resolve_config
from zoo.task import fit_and_test
from zoo.tasks.graph import TASK, transfer
from zoo.tasks.graph.config import METHODS, GraphConfig, ModelConfig, TrainConfig
from zoo.tasks.graph.data import domain_graph
from zoo.tasks.graph.models import PlainGNN
from zoo.tasks.graph.module import build_backbone, needs_fit
from zoo.tasks.graph.splits import k_shot_split
from zoo.tasks.graph.transfer import Adapter, GraphInput, classify, edge_split, predict_links, tune_classifier

D, HIDDEN, EXPERTS, BASIS = 8, 16, 3, 4
MODEL = ModelConfig(hidden=HIDDEN, num_experts=EXPERTS, k=2, prompt_basis=BASIS)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: two threads on a shared 2-core machine wait for each other at every layer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def communities(sizes: tuple[int, ...], p_in: float, p_out: float, noise: float, seed: int) -> Data:
    """A stochastic block model whose node features are the block's one-hot code plus Gaussian noise."""
    blocks = range(len(sizes))
    g = nx.stochastic_block_model(list(sizes), [[p_in if a == b else p_out for b in blocks] for a in blocks], seed=seed)
    y = torch.tensor([g.nodes[v]["block"] for v in g.nodes])
    generator = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.one_hot(y, D).float() + noise * torch.randn(len(y), D, generator=generator)
    edges = torch.tensor(list(g.edges()), dtype=torch.long).reshape(-1, 2).t()
    return Data(x=x, y=y, edge_index=to_undirected(edges, num_nodes=len(y)), num_nodes=len(y))


def backbone_of(method: str) -> torch.nn.Module:
    torch.manual_seed(1)
    return build_backbone(ModelConfig(**{**MODEL.__dict__, "method": method}), D)


def undirected(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {(min(u, v), max(u, v)) for u, v in edge_index.t().tolist()}


# ---------------------------------------------------------------- what each method tunes

#: The trainable parameters of each method's body besides the whole network (``None``: everything), with shapes.
TUNED = {
    "scratch": None,
    "finetune": None,
    "linear_probe": {},
    "moe_no_prompt": {},
    "gpf": {"prompt": (1, D)},
    "gpf_plus": {"basis": (BASIS, D), "score.weight": (BASIS, D), "score.bias": (BASIS,)},
    "graphprompt": {"prompt": (1, HIDDEN)},
    "all_in_one": {"tokens": (BASIS, D)},
    "dense_prompt": {"prompts": (1, D)},
    "gmope": {"prompts": (EXPERTS, D)},
}


def test_every_method_is_listed():
    assert set(TUNED) == set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_adapter_tunes_only_its_own_parameters_and_never_the_backbone(method):
    backbone = backbone_of(method)
    before = {name: p.detach().clone() for name, p in backbone.state_dict().items()}
    adapter = Adapter(method, backbone, MODEL, D)
    trainable = {name: tuple(p.shape) for name, p in adapter.body.named_parameters() if p.requires_grad}
    if TUNED[method] is None:
        assert trainable == {name: tuple(p.shape) for name, p in adapter.body.named_parameters()}
    else:
        assert trainable == TUNED[method]
    if method == "scratch":  # a fresh GNN, whatever it was given
        assert isinstance(adapter.body, PlainGNN) and adapter.body is not backbone
        fresh = adapter.body.state_dict()
        assert not all(torch.equal(fresh[name], value) for name, value in before.items() if name in fresh)

    graph = communities((6, 6), 0.6, 0.1, 0.5, seed=0)
    train_idx, _ = k_shot_split(graph.y, 2, 0)
    g = GraphInput.nodes(graph, backbone)
    classifier, tunable = tune_classifier(method, backbone, g, graph.y, train_idx, 2, MODEL,
                                          TrainConfig(tune_steps=3), seed=0)
    width = classifier.adapter.out_dim
    assert width == (2 * HIDDEN if method == "dense_prompt" else HIDDEN)
    body_count = sum(p.numel() for p in classifier.adapter.parameters() if p.requires_grad)
    assert tunable == body_count + (0 if method == "graphprompt" else 2 * (width + 1))
    assert (classifier.head is None) == (method == "graphprompt")
    for name, value in backbone.state_dict().items():  # tuned a copy: the pretrained weights are untouched
        assert torch.equal(value, before[name]), name
    assert all(p.requires_grad for p in backbone.parameters())  # and still trainable for its next user
    if method == "finetune":
        tuned = classifier.adapter.body.state_dict()
        assert any(not torch.equal(tuned[name], value) for name, value in before.items())


def test_scratch_needs_no_backbone():
    adapter = Adapter("scratch", None, MODEL, D)
    assert isinstance(adapter.body, PlainGNN) and all(p.requires_grad for p in adapter.parameters())


# ---------------------------------------------------------------- node classification


@pytest.mark.parametrize("method", ["scratch", "finetune"])
def test_two_separable_communities_are_learned(method):
    graph = communities((25, 25), 0.4, 0.02, 0.5, seed=1)
    backbone = None if method == "scratch" else backbone_of("finetune")
    train_idx, test_idx = k_shot_split(graph.y, 3, 0)
    result = classify(method, backbone, GraphInput.nodes(graph, backbone), graph.y, train_idx, test_idx, 2, MODEL,
                      TrainConfig(tune_steps=30, tune_lr=0.01), seed=0)
    assert result.metrics["acc"] >= 0.95 and result.metrics["f1"] >= 0.95, result.metrics


@pytest.mark.parametrize("method", ["scratch", "gpf", "graphprompt", "gmope"])
def test_accuracy_and_macro_f1_are_sklearns_on_the_classifiers_predictions(method):
    graph = communities((14, 10, 6), 0.3, 0.08, 1.2, seed=2)
    backbone = None if method == "scratch" else backbone_of(method)
    g = GraphInput.nodes(graph, backbone)
    train_idx, test_idx = k_shot_split(graph.y, 2, 1)
    cfg = TrainConfig(tune_steps=5)
    result = classify(method, backbone, g, graph.y, train_idx, test_idx, 3, MODEL, cfg, seed=4)
    classifier, _ = tune_classifier(method, backbone, g, graph.y, train_idx, 3, MODEL, cfg, seed=4)
    with torch.no_grad():
        pred = classifier(g)[0].argmax(-1)[test_idx].numpy()
    target = graph.y[test_idx].numpy()
    assert result.metrics["acc"] == pytest.approx(accuracy_score(target, pred), abs=1e-6)
    assert result.metrics["f1"] == pytest.approx(f1_score(target, pred, average="macro", zero_division=0), abs=1e-6)


# ---------------------------------------------------------------- link prediction


def test_edge_split_holds_out_edges_against_non_edges():
    graph = communities((20, 20), 0.3, 0.05, 0.5, seed=3)
    everything = undirected(graph.edge_index)
    state = torch.random.get_rng_state()
    train, test, negatives = edge_split(graph, 0.2, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is left alone
    train_set, test_set = undirected(train), undirected(test)
    assert train_set | test_set == everything and not train_set & test_set
    assert test.shape[1] == len(test_set) == round(0.2 * len(everything))
    assert train.shape[1] == 2 * len(train_set)
    assert set(map(tuple, train.t().tolist())) == set(map(tuple, train.flip(0).t().tolist()))
    assert 0 < negatives.shape[1] <= test.shape[1]
    assert not undirected(negatives) & everything and (negatives[0] != negatives[1]).all()
    again = edge_split(graph, 0.2, seed=5)
    assert torch.equal(again[0], train) and torch.equal(again[1], test)
    assert not torch.equal(edge_split(graph, 0.2, seed=6)[1], test)


def test_edge_split_negatives_are_the_same_for_the_same_seed():
    graph = communities((20, 20), 0.3, 0.05, 0.5, seed=3)
    first = edge_split(graph, 0.2, seed=5)[2]
    random.random()  # PyG samples from Python's random module: the split must not depend on its state
    assert torch.equal(first, edge_split(graph, 0.2, seed=5)[2])


@pytest.mark.parametrize("method", ["finetune", "gmope", "graphprompt"])
def test_link_auc_is_sklearns_on_scores_recomputed_by_hand(monkeypatch, method):
    graph = communities((15, 15), 0.4, 0.05, 0.5, seed=4)
    seen: dict[str, torch.Tensor] = {}
    passes: list[torch.Tensor] = []
    score, forward = transfer.link_scores, Adapter.forward

    def spy_score(z, pairs, decoder=None):
        seen["z"], seen["pairs"] = z, pairs
        return score(z, pairs, decoder)

    def spy_forward(self, g):
        passes.append(g.edge_index)
        return forward(self, g)

    monkeypatch.setattr(transfer, "link_scores", spy_score)
    monkeypatch.setattr(Adapter, "forward", spy_forward)
    result = predict_links(method, backbone_of(method), graph, 0.25, MODEL, TrainConfig(tune_steps=4), seed=7)
    train, test, _ = edge_split(graph, 0.25, seed=7)
    assert len(passes) == 5 and all(torch.equal(edges, train) for edges in passes)  # held-out edges never seen
    pairs = seen["pairs"]
    assert torch.equal(pairs[:, : test.shape[1]], test)
    negatives = pairs[:, test.shape[1]:]
    assert negatives.shape[1] > 0 and not undirected(negatives) & undirected(graph.edge_index)
    z = seen["z"]
    scores = [float(z[u] @ z[v]) for u, v in pairs.t().tolist()]
    labels = [1] * test.shape[1] + [0] * negatives.shape[1]
    assert result.metrics["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)


# ---------------------------------------------------------------- the evaluation of a run

TINY = {"data.domains": ["sbm_homo", "geometric"], "data.num_nodes": 60, "data.splits": 1, "trainer.max_epochs": 1,
        "train.tune_steps": 3}


def test_only_scratch_skips_pretraining():
    for method in METHODS:
        cfg, _ = resolve_config(GraphConfig, "graph", layers=[{"model.method": method}])
        assert needs_fit(cfg) == (method != "scratch"), method


@pytest.mark.parametrize("recipe", ["gmope_transfer", "gpf_transfer", "scratch_transfer"])
def test_evaluate_reports_every_downstream_metric(tmp_path, recipe):
    cfg, _ = resolve_config(GraphConfig, "graph", recipe, layers=[TINY])
    assert cfg.data.downstream == ["lodo", "karate", "atlas", "link"]
    result = fit_and_test(TASK, cfg, tmp_path / "run", progress=False)
    m = result.metrics
    domains = cfg.data.domains
    expected = {"lodo_acc", "lodo_f1", "karate_acc", "karate_f1", "atlas_acc", "atlas_f1", "link_auc",
                "tunable_params", "eval_s", *(f"lodo_acc_{d}" for d in domains)}
    if cfg.model.method == "gmope":
        expected |= {"entropy", "max_cos"}
    assert set(m) == {f"test/{k}" for k in expected}
    assert all(math.isfinite(v) for v in m.values()), m
    for key in ("lodo_acc", "lodo_f1", "karate_acc", "atlas_acc", "link_auc"):
        assert 0 <= m[f"test/{key}"] <= 1, key
    assert m["test/lodo_acc"] == pytest.approx(statistics.fmean(m[f"test/lodo_acc_{d}"] for d in domains))
    classes = [int(domain_graph(d, cfg.data.seed, cfg.data.num_nodes, cfg.data.dim).num_classes) for d in domains]
    hidden, dim = cfg.model.hidden, cfg.data.dim
    body = {"gmope_transfer": cfg.model.num_experts * dim, "gpf_transfer": dim,
            "scratch_transfer": sum(p.numel() for p in PlainGNN(dim, cfg.model.encoder, hidden).parameters())}[recipe]
    assert m["test/tunable_params"] == pytest.approx(body + statistics.fmean(c * (hidden + 1) for c in classes))
    if cfg.model.method == "gmope":
        assert 0 <= m["test/entropy"] <= math.log(cfg.model.num_experts) + 1e-9
        assert m["test/max_cos"] == pytest.approx(result.module.model.max_prompt_cosine())
