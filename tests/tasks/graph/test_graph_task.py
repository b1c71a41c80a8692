"""The graph task's pretraining side against references: ego-subgraph batches against ``k_hop_subgraph``, aligned
features against ``align_features``, GMoPE's node- and graph-level outputs against a per-token loop run on each
token's own ego-subgraph or graph, the held-out edge split, a pretraining step of every backbone and pretext with
its aux losses and gradients, config validation with one-line errors, and ``zoo train graph`` in both argument
orders."""

from __future__ import annotations

import json
import math

import networkx as nx
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.utils import from_networkx, k_hop_subgraph

from zoo.cli import main
from zoo.config import resolve_config
from zoo.errors import ZooValueError
from zoo.tasks.graph import TASK
from zoo.tasks.graph.config import DOMAINS, GraphConfig, ModelConfig, TrainConfig
from zoo.tasks.graph.data import GraphSet, ego_dataset, features
from zoo.tasks.graph.formats import align_features
from zoo.tasks.graph.models import GMoPE, route_input
from zoo.tasks.graph.module import GraphModule, build_backbone, held_out_edges

D = 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: two threads on a shared 2-core machine wait for each other at every layer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_graph(n: int, p: float, seed: int, d: int = D) -> Data:
    g = nx.gnp_random_graph(n, p, seed=seed)
    return Data(x=torch.randn(n, d), edge_index=from_networkx(g).edge_index, num_nodes=n)


def undirected(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {(min(u, v), max(u, v)) for u, v in edge_index.t().tolist()}


# ---------------------------------------------------------------- data


def ego_batch(egos: GraphSet, centres: list[int]) -> Batch:
    """The ego-subgraphs of ``centres``, in that order, as the datamodule's loader batches them."""
    return next(iter(DataLoader(egos[torch.tensor(centres)], batch_size=len(centres))))


def test_ego_batch_matches_k_hop_subgraph_of_each_centre():
    graphs = [random_graph(12, 0.25, seed=1), random_graph(9, 0.3, seed=2)]
    for offset, g in zip((0, 12), graphs):
        g.x[:, 0] = torch.arange(g.num_nodes) + offset  # column 0 names the node in the union
    union = Batch.from_data_list(graphs)
    egos = ego_dataset(graphs, hops=2)
    assert len(egos) == 21
    centres = [17, 3, 11, 0, 20, 12]
    batch = ego_batch(egos, centres)
    assert batch.num_graphs == 6 and batch.route.shape == (6, D + 5)
    assert batch.batch.tolist() == sorted(batch.batch.tolist()) and batch.batch.unique().tolist() == list(range(6))
    assert batch.edge_index.min() >= 0 and batch.edge_index.max() < len(batch.x)
    names = batch.x[:, 0].long()
    torch.testing.assert_close(batch.x, union.x[names], rtol=0, atol=0)  # every feature carried with its node
    for i, centre in enumerate(centres):
        subset, sub_edges, _, _ = k_hop_subgraph(centre, 2, union.edge_index, relabel_nodes=True,
                                                 num_nodes=union.num_nodes)
        mine = (batch.batch == i).nonzero()[:, 0]
        assert sorted(names[mine].tolist()) == subset.tolist()
        edges = batch.edge_index[:, batch.batch[batch.edge_index[0]] == i]
        assert (batch.batch[edges[1]] == i).all()  # no edge leaves its ego
        assert sorted(map(tuple, names[edges].t().tolist())) == sorted(map(tuple, subset[sub_edges].t().tolist()))
        alone = route_input(union.x[subset], sub_edges, level="graph")[0]
        torch.testing.assert_close(batch.route[i], alone, rtol=1e-5, atol=1e-5)


def test_ego_of_an_isolated_node_is_one_node_without_edges():
    g = Data(x=torch.randn(3, D), edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=3)
    ego = ego_dataset([g], hops=2)[2]
    assert ego.x.shape == (1, D) and ego.edge_index.shape == (2, 0) and ego.route.shape == (1, D + 5)
    torch.testing.assert_close(ego.x[0], g.x[2])


@pytest.mark.parametrize("n, width", [(40, 5), (40, 50), (25, 12)], ids=["padded", "projected", "square-ish"])
def test_features_are_align_features_scaled_to_unit_mean_variance(n, width):
    x = torch.randn(n, width) * torch.linspace(0.1, 30.0, width) + 7.0
    got, aligned = features(x, 16), align_features(x, 16)
    filled = aligned.abs().sum(0) > 0
    assert int(filled.sum()) == min(width, 16)
    assert (got[:, ~filled] == 0).all()
    assert float(got[:, filled].var(0, unbiased=False).mean()) == pytest.approx(1.0, rel=1e-5)
    scale = aligned[:, filled].norm() / got[:, filled].norm()
    torch.testing.assert_close(got * scale, aligned, rtol=1e-5, atol=1e-5)


def test_features_of_constant_rows_are_zeros_not_nan():
    got = features(torch.full((5, 3), 2.5), 4)
    assert got.shape == (5, 4) and (got == 0).all()


# ---------------------------------------------------------------- GMoPE against a per-token loop


def small_gmope(layers: int = 2, hops: int = 2) -> GMoPE:
    return GMoPE(d=D, num_experts=4, k=2, kind="gin", hidden=8, layers=layers, router_hidden=8, hops=hops).eval()


def token_loop(model: GMoPE, x: torch.Tensor, edge_index: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """One token alone: its router input, the router's k experts and the weighted sum of those experts run on the
    token's own graph."""
    routing = model.router(model.route_mlp(route_input(x, edge_index, level="graph", hops=model.hops)))
    ids, weights = routing.ids[0].tolist(), routing.weights[0]
    out = sum(w * model.encoders[e](x + model.prompts[e], edge_index) for e, w in zip(ids, weights))
    return ids, out


@pytest.mark.parametrize("layers, hops", [(2, 2), (1, 2), (1, 1)])
def test_gmope_node_level_equals_experts_run_on_each_ego_subgraph(layers, hops):
    """A GIN of ``layers <= hops`` layers sees no further than the ego-subgraph, so running the chosen experts on
    the ego alone and reading its centre is exactly the node's embedding."""
    model = small_gmope(layers, hops)
    g = random_graph(14, 0.22, seed=3)
    out = model(g.x, g.edge_index, level="node")
    assert out.nodes.shape == (14, 8) and out.routing.ids.shape == (14, 2)
    for v in range(14):
        subset, sub_edges, centre, _ = k_hop_subgraph(v, hops, g.edge_index, relabel_nodes=True, num_nodes=14)
        ids, h = token_loop(model, g.x[subset], sub_edges)
        assert out.routing.ids[v].tolist() == ids, v
        torch.testing.assert_close(out.nodes[v], h[centre[0]], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.graphs[0], out.nodes.mean(0))


def test_gmope_graph_level_equals_each_graph_alone_and_prompts_get_the_gradient():
    model = small_gmope()
    graphs = [random_graph(n, 0.3, seed=s) for n, s in ((7, 4), (10, 5), (5, 6), (8, 7))]
    batch = Batch.from_data_list(graphs)
    out = model(batch.x, batch.edge_index, batch.batch)
    for i, g in enumerate(graphs):
        ids, h = token_loop(model, g.x, g.edge_index)
        assert out.routing.ids[i].tolist() == ids
        torch.testing.assert_close(out.nodes[batch.batch == i], h, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.graphs[i], h.mean(0), rtol=1e-4, atol=1e-5)
    model.freeze_experts()
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["prompts"]
    out = model(batch.x, batch.edge_index, batch.batch)
    out.graphs.square().sum().backward()  # no orth loss: only the chosen experts' prompts are reached
    used = set(out.routing.ids.flatten().tolist())
    for e in range(4):
        assert (float(model.prompts.grad[e].abs().sum()) > 0) == (e in used), e
    assert all(p.grad is None for name, p in model.named_parameters() if name != "prompts")


# ---------------------------------------------------------------- pretraining


def test_held_out_edges_partition_the_undirected_edges():
    g = random_graph(150, 0.08, seed=8)
    everything = undirected(g.edge_index)
    kept, held = held_out_edges(g.edge_index, 0.3)
    kept_set, held_set = undirected(kept), undirected(held)
    assert kept_set | held_set == everything and not kept_set & held_set
    assert held.shape[1] == len(held_set) and (held[0] < held[1]).all()  # one direction each
    assert kept.shape[1] == 2 * len(kept_set)
    assert set(map(tuple, kept.t().tolist())) == set(map(tuple, kept.flip(0).t().tolist()))  # symmetric
    assert len(held_set) / len(everything) == pytest.approx(0.3, abs=0.05)  # about 5 binomial stds
    kept, held = held_out_edges(g.edge_index, 0.0)
    assert held.shape[1] == 0 and undirected(kept) == everything


def _module(method: str, pretext: str, orth: float = 0.1, augment: float = 0.3) -> GraphModule:
    cfg = GraphConfig(model=ModelConfig(method=method, hidden=8, num_experts=3, k=2, orth_coef=orth),
                      train=TrainConfig(pretext=pretext, augment=augment, batch_size=8))
    return GraphModule(build_backbone(cfg.model, D), cfg)


STEP_CASES = [("gmope", 0.1, {"balance", "orth"}), ("gmope", 0.0, {"balance"}), ("moe_no_prompt", 0.1, {"balance"}),
              ("dense_prompt", 0.1, set()), ("finetune", 0.1, set())]


@pytest.mark.parametrize("pretext", ["graphcl", "link"])
@pytest.mark.parametrize("method, orth, aux_keys", STEP_CASES, ids=[f"{m}-orth{o}" for m, o, _ in STEP_CASES])
def test_step_loss_aux_and_gradients(method, orth, aux_keys, pretext):
    module = _module(method, pretext, orth)
    batch = ego_batch(ego_dataset([random_graph(30, 0.15, seed=9)], hops=2), list(range(0, 30, 3)))
    out = module.step(batch)
    loss = float(out.loss.detach())
    assert out.loss.dim() == 0 and math.isfinite(loss) and loss > 0
    assert set(out.aux) == aux_keys and all(math.isfinite(float(v.detach())) for v in out.aux.values())
    assert out.batch_size == 10
    (out.loss + sum(out.aux.values(), torch.zeros(()))).backward()
    idle = set()
    if isinstance(module.model, GMoPE):
        used = set(module.model.router(module.model.route_mlp(batch.route)).ids.flatten().tolist())
        idle = {f"model.encoders.{e}." for e in range(3) if e not in used}
        assert set(out.stats) == {"router"}
    for name, p in module.named_parameters():
        if any(name.startswith(prefix) for prefix in idle):
            assert p.grad is None, name
        else:
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_link_step_without_held_out_edges_is_a_zero_loss_that_backpropagates():
    module = _module("finetune", "link", augment=0.0)
    batch = ego_batch(ego_dataset([random_graph(20, 0.2, seed=10)], hops=2), [0, 5, 9])
    out = module.step(batch)
    assert float(out.loss.detach()) == 0.0
    out.loss.backward()


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("settings, key", [
    (["data.domains=[sbm_homo]"], "data.domains"),
    (["data.domains=[sbm_homo,planet]"], "data.domains"),
    (["data.domains=[sbm_homo,sbm_homo]"], "data.domains"),
    (["data.domains=[sbm_homo,geometric]", "data.holdout=[lfr]"], "data.holdout"),
    (["data.downstream=[lodo,cora]"], "data.downstream"),
    (["data.num_nodes=10"], "data.num_nodes"),
    (["data.shots=0"], "data.shots"),
    (["data.hops=true"], "data.hops"),
    (["data.link_test=1.0"], "data.link_test"),
    (["model.method=prompt_tuning"], "model.method"),
    (["model.encoder=gat"], "model.encoder"),
    (["model.k=5"], "model.k"),
    (["model.orth_coef=-0.1"], "model.orth_coef"),
    (["train.pretext=mae"], "train.pretext"),
    (["train.augment=1.0"], "train.augment"),
    (["train.batch_size=1"], "train.batch_size"),
    (["train.tune_lr=0"], "train.tune_lr"),
], ids=lambda v: v[-1] if isinstance(v, list) else None)
def test_bad_settings_raise_one_line_naming_the_key(settings, key):
    with pytest.raises(ZooValueError) as err:
        resolve_config(GraphConfig, "graph", "gmope_transfer", overrides=settings)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_holdouts_default_to_every_domain():
    cfg = GraphConfig()
    assert cfg.data.holdouts == list(DOMAINS)
    cfg.data.holdouts.append("extra")  # a copy: the config is not touched
    assert cfg.data.holdouts == list(DOMAINS)
    cfg, _ = resolve_config(GraphConfig, "graph", "gmope_transfer", overrides=["data.holdout=[lfr]"])
    assert cfg.data.holdouts == ["lfr"]


# ---------------------------------------------------------------- zoo train


@pytest.mark.parametrize("order", ["options_first", "options_last"])
def test_train_by_name_in_both_argument_orders(tmp_path, capsys, order):
    run = tmp_path / "run"
    options = ["--recipe", "gpf_transfer", "--smoke", "--set", "data.splits=1", "--set", "train.tune_steps=3",
               "--out", str(run), "--no-progress", "--threads", "1", "--json"]
    argv = ["train", *options, "graph"] if order == "options_first" else ["train", "graph", *options]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    printed = json.loads(out[out.index("{"):])
    assert printed["run_dir"] == str(run)
    saved = json.loads((run / "results.json").read_text())["metrics"]
    assert saved == printed["metrics"]
    for key in ("test/lodo_acc", "test/lodo_f1", "test/karate_acc", "test/atlas_acc", "test/atlas_f1",
                "test/link_auc", "test/tunable_params"):
        assert key in TASK.headline_metrics and math.isfinite(saved[key]), key
    assert 0 <= saved["test/lodo_acc"] <= 1 and 0 <= saved["test/link_auc"] <= 1 and saved["test/tunable_params"] > 0
    assert "test/entropy" not in saved and "test/max_cos" not in saved  # gpf has neither router nor expert prompts
    run_info = json.loads((run / "run.json").read_text())
    assert run_info["smoke"] is True and run_info["recipe"] == "gpf_transfer"
    assert "tune_steps: 3" in (run / "config.yaml").read_text()  # --set wins over --smoke


# ---------------------------------------------------------------- zoo weights publish


def test_publish_under_a_taken_id_leaves_no_file_behind(tmp_path, capsys, monkeypatch):
    import zoo.api

    weights = tmp_path / "weights"
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(weights))
    monkeypatch.setattr(zoo.api, "manifest_path", lambda task: tmp_path / "manifests" / task / "weights.yaml")
    runs = []
    for seed in (0, 1):
        runs.append(tmp_path / f"run{seed}")
        assert main(["train", "graph", "--recipe", "gpf_transfer", "--smoke", "--seed", str(seed), "--set",
                     "data.splits=1", "--set", "train.tune_steps=2", "--out", str(runs[-1]), "--no-progress"]) == 0
    publish = ["weights", "publish", "--task", "graph", "--arch", "gpf", "--tag", "t"]
    assert main([*publish, "--run", str(runs[0])]) == 0
    first = sorted(p.name for p in weights.iterdir())
    capsys.readouterr()
    assert main([*publish, "--run", str(runs[1])]) == 2  # another run under the same id: refused
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("zoo: error:") and "already exists" in err[-1]
    assert sorted(p.name for p in weights.iterdir()) == first


def test_shipped_weights_reproduce_their_published_karate_score():
    import dataclasses

    import zoo.api
    from zoo.tasks.graph.evaluation import evaluate

    entry = zoo.api.find_entry("graph/gmope.synthetic")
    loaded = zoo.api.load_weights(entry.id)
    assert loaded.datamodule is None and loaded.info == {"dim": 32, "domains": list(DOMAINS)}
    cfg = loaded.config
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, downstream=["karate"]))
    metrics = evaluate(cfg, None, loaded.module, None)
    # the board ran with AVX2 numerics: a tuned head may flip a node or two of the 32 karate test nodes
    assert metrics["test/karate_acc"] == pytest.approx(entry.metrics["test/karate_acc"], abs=2 / 32)
    assert metrics["test/max_cos"] == pytest.approx(entry.metrics["test/max_cos"], abs=1e-6)
