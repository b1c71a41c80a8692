"""The graph task's data: the synthetic domains (graph conventions, seeding, the homophily they are built for, the
LFR retry, a GCN's accuracy on the tuned features), the real graphs against networkx and plain re-readings of the
carriers' files, and the k-shot splits against hand-checked properties and every bad input."""

from __future__ import annotations

import collections
import csv
import hashlib
import importlib.util
import shutil
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
import yaml
from torch_geometric.data import Data
from torch_geometric.utils import homophily

from zoo.carriers import CARRIERS, carrier_file
from zoo.errors import ZooValueError
from zoo.tasks.graph import real, synthetic
from zoo.tasks.graph.formats import structural_features, undirected_edges
from zoo.tasks.graph.splits import SPLITS, k_shot_graphs, k_shot_split


ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_graph(data: Data) -> None:
    """The conventions every graph of the task keeps."""
    n = data.num_nodes
    assert data.x.dtype == torch.float32 and data.x.dim() == 2 and data.x.size(0) == n
    assert torch.isfinite(data.x).all()
    assert data.edge_index.dtype == torch.long and data.edge_index.size(0) == 2
    assert torch.equal(data.edge_index, undirected_edges(data.edge_index, n)[0])  # both ways, sorted, no repeats
    assert (data.edge_index[0] != data.edge_index[1]).all()
    assert data.y.dtype == torch.long


# --- synthetic


@pytest.mark.parametrize("name", synthetic.DOMAINS)
def test_domains_keep_the_conventions_and_are_seeded(name: str):
    data = synthetic.make_domain(name, seed=1)
    assert_graph(data)
    assert data.num_nodes == synthetic.NUM_NODES[name] and data.x.size(1) == synthetic.WIDTH[name]
    assert data.domain == name and 3 <= data.num_classes <= 6
    assert torch.equal(torch.unique(data.y), torch.arange(data.num_classes))
    again, other = synthetic.make_domain(name, seed=1), synthetic.make_domain(name, seed=2)
    assert torch.equal(again.x, data.x) and torch.equal(again.edge_index, data.edge_index)
    assert not torch.equal(other.x, data.x)


def test_domain_structure_is_what_it_is_named_for():
    edge_homophily = {name: homophily(d.edge_index, d.y) for name in synthetic.DOMAINS
                      for d in [synthetic.make_domain(name)]}
    assert edge_homophily["sbm_homo"] > 0.6 and edge_homophily["sbm_hetero"] < 0.2
    assert edge_homophily["lfr"] > 0.4 and edge_homophily["geometric"] > 0.6
    assert len({synthetic.make_domain(n).x.size(1) for n in synthetic.DOMAINS}) == 4


def test_domain_sizes_and_bad_arguments():
    assert synthetic.make_domain("sbm_hetero", num_nodes=90).num_nodes == 90
    with pytest.raises(ZooValueError, match="name='cora' is not allowed"):
        synthetic.make_domain("cora")
    with pytest.raises(ZooValueError, match="num_nodes=10 is not allowed; expected an int >= 60"):
        synthetic.make_domain("lfr", num_nodes=10)
    with pytest.raises(ZooValueError, match="seed=-1"):
        synthetic.make_domain("lfr", seed=-1)


def test_lfr_moves_on_to_the_next_seed_deterministically(monkeypatch: pytest.MonkeyPatch):
    real_lfr, seeds = nx.LFR_benchmark_graph, []

    def failing_twice(*args, seed, **kwargs):
        seeds.append(seed)
        if len(seeds) <= 2:
            raise nx.ExceededMaxIterations("no luck")
        return real_lfr(*args, seed=seed, **kwargs)

    monkeypatch.setattr(synthetic.nx, "LFR_benchmark_graph", failing_twice)
    first = synthetic.make_domain("lfr", seed=3)
    tried, seeds[:] = list(seeds), []
    second = synthetic.make_domain("lfr", seed=3)
    assert len(tried) == 3 == len(set(tried)) and seeds == tried
    assert torch.equal(first.edge_index, second.edge_index)
    monkeypatch.setattr(synthetic.nx, "LFR_benchmark_graph", lambda *a, **k: (_ for _ in ()).throw(
        nx.ExceededMaxIterations("never")))
    with pytest.raises(ZooValueError, match="could not build an LFR graph of 250 nodes in 50 seeds"):
        synthetic.make_domain("lfr")


def test_lfr_labels_are_size_ranked_communities():
    data = synthetic.make_domain("lfr", seed=0)
    sizes = torch.bincount(data.y).tolist()
    assert sum(sizes) == 250 and len(sizes) == data.num_classes
    link = synthetic.link_graph(0)
    assert_graph(link)
    assert not torch.equal(link.edge_index, data.edge_index)
    assert torch.equal(synthetic.link_graph(0).edge_index, link.edge_index)


def _gcn_accuracy(data: Data, seed: int) -> float:
    from torch_geometric.nn import GCNConv

    torch.manual_seed(seed)
    order = torch.randperm(data.num_nodes)
    train, test = order[: data.num_nodes // 2], order[data.num_nodes // 2:]
    first, second = GCNConv(data.x.size(1), 32), GCNConv(32, data.num_classes)
    optimiser = torch.optim.Adam([*first.parameters(), *second.parameters()], lr=0.01, weight_decay=5e-4)

    def forward(training: bool) -> torch.Tensor:
        hidden = torch.nn.functional.dropout(first(data.x, data.edge_index).relu(), 0.5, training=training)
        return second(hidden, data.edge_index)

    for _ in range(200):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(forward(True)[train], data.y[train]).backward()
        optimiser.step()
    with torch.no_grad():
        return (forward(False)[test].argmax(1) == data.y[test]).float().mean().item()


def test_features_are_tuned_for_a_gcn_to_score_about_70_to_85_percent():
    accuracy = {name: np.mean([_gcn_accuracy(synthetic.make_domain(name, seed), seed) for seed in range(2)])
                for name in synthetic.DOMAINS}
    assert all(0.62 <= a <= 0.9 for a in accuracy.values()), accuracy


# --- real graphs


def test_karate_against_networkx():
    data = real.karate()
    graph = nx.karate_club_graph()
    assert_graph(data)
    assert data.num_nodes == 34 and data.edge_index.size(1) == 2 * graph.number_of_edges() == 156
    assert {tuple(e) for e in data.edge_index.T.tolist()} == {*graph.edges(), *(e[::-1] for e in graph.edges())}
    assert [real.KARATE_CLUBS[c] for c in data.y] == [graph.nodes[v]["club"] for v in range(34)]
    assert data.y.bincount().tolist() == [17, 17] and data.num_classes == 2
    torch.testing.assert_close(data.x[:, 0], torch.tensor([graph.degree(v) for v in range(34)]).log1p().float())


def _atlas_class_by_walks(graph: nx.Graph) -> int:
    """Atlas classes from closed walks: a triangle iff trace(A³) > 0, bipartite iff no odd closed walk."""
    n = graph.number_of_nodes()
    adjacency = nx.to_numpy_array(graph, nodelist=range(n))
    powers = [np.trace(np.linalg.matrix_power(adjacency, k)) for k in range(3, n + 1, 2)]
    if graph.number_of_edges() == n - nx.number_connected_components(graph):
        return 0
    if not any(powers):
        return 1
    return 2 if powers[0] > 0 else 3


def test_graph_atlas_classes_against_closed_walks():
    graphs = real.graph_atlas()
    atlas = nx.graph_atlas_g()
    assert len(graphs) == 1251 and graphs[0].atlas_index == 2
    assert [int(g.y) for g in graphs] == [_atlas_class_by_walks(atlas[g.atlas_index]) for g in graphs]
    assert collections.Counter(int(g.y) for g in graphs) == {0: 78, 1: 70, 2: 1080, 3: 23}
    for g in graphs[::97]:
        assert_graph(g)
        assert g.edge_index.size(1) == 2 * atlas[g.atlas_index].number_of_edges() and g.num_classes == 4
    assert real.atlas_class(nx.cycle_graph(5)) == 3 and real.atlas_class(nx.cycle_graph(6)) == 1


@pytest.mark.requires_carrier("graspologic")
@pytest.mark.parametrize(("side", "counts"), [("left", [21, 101, 29, 58]), ("right", [21, 100, 29, 63])])
def test_drosophila_against_the_csvs(side: str, counts: list[int]):
    data = real.drosophila(side)
    assert_graph(data)
    assert data.num_nodes == sum(counts) and data.y.bincount().tolist() == counts
    adjacency = np.array([[int(v) for v in line.split()] for line in
                          carrier_file("graspologic", f"datasets/drosophila/{side}_adjacency.csv").read_text()
                          .splitlines()])
    graph = nx.from_numpy_array(((adjacency + adjacency.T) > 0).astype(int))
    graph.remove_edges_from(nx.selfloop_edges(graph))
    assert data.edge_index.size(1) == 2 * graph.number_of_edges()
    torch.testing.assert_close(data.x[:, 4], torch.from_numpy(adjacency.sum(0)).log1p().float())
    torch.testing.assert_close(data.x[:, :4], structural_features(data.edge_index, data.num_nodes))
    with pytest.raises(ZooValueError, match="side='middle' is not allowed"):
        real.drosophila("middle")


@pytest.mark.requires_carrier("pykeen")
@pytest.mark.parametrize(("name", "entities"), [("umls", 135), ("kinships", 104), ("nations", 14)])
def test_knowledge_graphs_against_the_triples(name: str, entities: int):
    data = real.knowledge_graph(name)
    assert_graph(data)
    assert data.num_nodes == entities == len(data.node_ids) and data.node_ids == sorted(data.node_ids)
    seen: set[frozenset[str]] = set()
    want = {}
    for split in real.KG_SPLITS:
        pairs = set()
        for line in carrier_file("pykeen", f"datasets/{name}/{split}.txt").read_text().splitlines():
            head, _, tail = line.split("\t")
            if head != tail and frozenset((head, tail)) not in seen:
                pairs.add(frozenset((head, tail)))
        seen |= pairs
        want[split] = pairs
    for split, key in zip(real.KG_SPLITS, ("train_pos", "val_pos", "test_pos")):
        got = {frozenset((data.node_ids[u], data.node_ids[v])) for u, v in data[key].T.tolist()}
        assert got == want[split] and data[key].size(1) == len(got), split
        assert (data[key][0] < data[key][1]).all()
    assert data.edge_index.size(1) == 2 * data.train_pos.size(1)
    assert (data.y == -1).all() and data.num_classes == 0


def _card(name: str, package: str) -> dict:
    """A data card whose pin and file checksums agree with the installed carrier."""
    card = yaml.safe_load((ROOT / "data" / f"{name}.yaml").read_text())
    assert (card["source"]["package"], str(card["source"]["version"])) == (CARRIERS[package].dist,
                                                                           CARRIERS[package].version)
    site = Path(next(iter(importlib.util.find_spec(package).submodule_search_locations))).parent
    for entry in card["source"]["files"]:
        assert hashlib.sha256((site / entry["path"]).read_bytes()).hexdigest() == entry["sha256"], entry["path"]
    return card


@pytest.mark.requires_carrier("graspologic")
def test_drosophila_card_matches_the_files_and_the_loader():
    card = _card("drosophila", "graspologic")
    for side in real.DROSOPHILA_SIDES:
        data = real.drosophila(side)
        assert card["file"][side]["neurons"] == data.num_nodes
        assert card["graph"][side]["undirected_edges"] == data.edge_index.size(1) // 2
        assert list(card["file"]["cell_types"][side].values()) == data.y.bincount().tolist()


@pytest.mark.requires_carrier("pykeen")
def test_pykeen_card_matches_the_files_and_the_loader():
    card = _card("pykeen-kg", "pykeen")
    for name in real.KNOWLEDGE_GRAPHS:
        data = real.knowledge_graph(name)
        assert card["file"][name]["entities"] == data.num_nodes
        lines = [carrier_file("pykeen", f"datasets/{name}/{s}.txt").read_text().splitlines() for s in real.KG_SPLITS]
        assert card["file"][name]["triples"] == [len(part) for part in lines]
        split = card["split"][name]
        assert [split[k] for k in ("train", "valid", "test")] == [data[k].size(1) for k in ("train_pos", "val_pos",
                                                                                             "test_pos")]


@pytest.fixture(scope="module")
def mice() -> list[Data]:
    return real.mouse_connectomes()


def _plain_edgelist(subject: str) -> list[tuple[int, int, float]]:
    path = carrier_file("graspologic", f"datasets/mice/edgelists/sub-{subject}_ses-1_dti.edgelist")
    return [(int(i), int(j), float(w)) for i, j, w in (line.split() for line in path.read_text().splitlines())]


@pytest.mark.requires_carrier("graspologic")
def test_mouse_connectomes_against_the_files(mice: list[Data]):
    assert len(mice) == 32
    for data in mice:
        assert_graph(data)
        assert data.num_nodes == 332 and data.x.shape == (332, 13) and data.y.shape == (1,)
        assert data.num_classes == 4 and data.classes == list(real.MOUSE_GENOTYPES)
        assert torch.bincount(data.edge_index[0], minlength=332).min() > 0  # every region has an edge
    with carrier_file("graspologic", "datasets/mice/participants.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [d.participant for d in mice] == [r["participant_id"] for r in rows]
    assert [real.MOUSE_GENOTYPES[int(d.y)] for d in mice] == [r["genotype"] for r in rows]
    assert collections.Counter((real.MOUSE_GENOTYPES[int(d.y)], d.sex) for d in mice) == {
        (g, sex): 4 for g in real.MOUSE_GENOTYPES for sex in ("male", "female")}

    data = mice[[d.participant for d in mice].index("sub-54855")]  # the sparsest mouse
    lines = _plain_edgelist("54855")
    assert data.edge_index.size(1) == 2 * len(lines) == 2 * 26802
    assert {tuple(e) for e in data.edge_index.T.tolist()} == {*((i, j) for i, j, _ in lines),
                                                             *((j, i) for i, j, _ in lines)}
    degree = collections.Counter(v for i, j, _ in lines for v in (i, j))
    torch.testing.assert_close(data.x[:, 0], torch.tensor([degree[v] for v in range(332)]).log1p().float())
    torch.testing.assert_close(data.x[:, :4], structural_features(data.edge_index, 332))
    features = carrier_file("graspologic", "datasets/mice/features/54855.csv").read_text().splitlines()
    by_roi = {int(line.split(",")[0]): [float(v) for v in line.split(",")[2:]] for line in features[3:]}
    for node, roi in ((5, 6), (200, 1035)):  # left: atlas ROI node + 1; right: 1000 + ROI (node - 166 + 1)
        strength = sum(w for i, j, w in lines if node in (i, j))
        assert data.x[node, 12].item() == pytest.approx(np.log1p(strength), rel=1e-6)
        torch.testing.assert_close(data.x[node, 4:12], torch.tensor(np.log(by_roi[roi])).float())


@pytest.mark.requires_carrier("graspologic")
def test_mouse_card_matches_the_files_and_the_loader(mice: list[Data]):
    card = _card("mouse-connectomes", "graspologic")
    assert len(card["source"]["files"]) == 2 + 2 * len(mice)  # participants, atlas, an edge list and features each
    assert card["file"]["mice"] == len(mice) and card["file"]["regions"] == mice[0].num_nodes
    assert list(card["file"]["genotypes"]) == list(real.MOUSE_GENOTYPES)
    assert list(card["file"]["genotypes"].values()) == torch.cat([d.y for d in mice]).bincount().tolist()
    edges = [d.edge_index.size(1) // 2 for d in mice]
    assert [card["graph"]["undirected_edges"][k] for k in ("min", "max")] == [min(edges), max(edges)]
    assert card["file"]["edge_lines"]["total"] == sum(edges)  # one line per pair
    assert len(card["graph"]["features"]) == mice[0].x.size(1)


def _mice_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the mice folder that the loader reads instead of the installed one."""
    folder = tmp_path / "datasets" / "mice"
    shutil.copytree(carrier_file("graspologic", "datasets/mice/participants.csv").parent, folder)
    monkeypatch.setattr(real, "carrier_file", lambda package, relpath: tmp_path / relpath)
    return folder


EDGES_54776 = "edgelists/sub-54776_ses-1_dti.edgelist"


@pytest.mark.requires_carrier("graspologic")
@pytest.mark.parametrize(("changes", "message"), [
    ({"features/54790.csv": None},
     r"participants\.csv names 32 mice, edgelists/ 32 and features/ 31, differing in \['54790'\]"),
    ({"edgelists/sub-54790_ses-1_dti.edgelist": None, "edgelists/sub-99_ses-1_dti.edgelist": "0 1 1\n"},
     r"differing in \['54790', '99'\]; expected the same mice in all three"),
    ({"edgelists/notes.txt": "x"}, r"notes\.txt is not named sub-<id>_ses-1_dti\.edgelist"),
    ({"participants.csv": "participant_id,genotype,sex\nsub-54776,DBA2,male\n"}, r"participants\.csv names 1 mice"),
    ({"features/54776.csv": ",runno:,N54777,atlas:,C57_symmetric_R\n\nROI,voxels,volume_mm3\n"},
     r"54776\.csv: line 1 names run N54777 and line 3 holds \['ROI', 'voxels', 'volume_mm3'\]; expected run N54776"),
    ({EDGES_54776: "0 1 3.0\n0 332 1.0\n"},
     r"sub-54776_ses-1_dti\.edgelist: 3 columns, nodes 0\.\.332; expected 'i j fibres' lines with nodes 0\.\.331"),
    ({EDGES_54776: "0 1 3.0\n1 0 1.0\n"}, r"0 self-loops and 1 repeated pairs; expected each pair once"),
])
def test_bad_mouse_files_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      changes: dict[str, str | None], message: str):
    folder = _mice_copy(tmp_path, monkeypatch)
    for relpath, content in changes.items():
        if content is None:
            (folder / relpath).unlink()
        else:
            (folder / relpath).write_text(content)
    with pytest.raises(ZooValueError, match=message) as error:
        real.mouse_connectomes()
    assert "\n" not in str(error.value)


@pytest.mark.requires_carrier("graspologic")
def test_unknown_mouse_genotype_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = _mice_copy(tmp_path, monkeypatch)
    participants = folder / "participants.csv"
    participants.write_text(participants.read_text().replace("sub-54776,DBA2", "sub-54776,C3H"))
    with pytest.raises(ZooValueError, match=r"participants\.csv: genotype of sub-54776='C3H' is not allowed; expected"):
        real.mouse_connectomes()


# --- splits


def test_k_shot_split_takes_k_per_class_and_tests_the_rest():
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, -1, 0, 2])
    train, test = k_shot_split(y, 2, seed=0)
    assert train.dtype == test.dtype == torch.long
    assert torch.bincount(y[train]).tolist() == [2, 2, 2]
    assert sorted(train.tolist() + test.tolist()) == [i for i in range(12) if y[i] >= 0]
    assert train.tolist() == sorted(train.tolist()) and 9 not in test.tolist()
    assert torch.equal(k_shot_split(y, 2, seed=0)[0], train)
    splits = {tuple(k_shot_split(y, 1, seed)[0].tolist()) for seed in range(SPLITS)}
    assert SPLITS == 5 and len(splits) > 1


@pytest.mark.parametrize(("y", "k", "message"), [
    (torch.tensor([0, 0, 1, 1, 1]), 2, "class 0 has 2 labelled nodes; a 2-shot split needs at least 3"),
    (torch.tensor([-1, -1]), 1, "no labelled nodes"),
    (torch.tensor([], dtype=torch.long), 1, "no labelled nodes"),
    (torch.tensor([0, 0, 1, 1]), 0, "k=0 is not allowed; expected a positive int"),
])
def test_bad_k_shot_split_is_one_line(y: torch.Tensor, k: int, message: str):
    with pytest.raises(ZooValueError, match=message):
        k_shot_split(y, k, 0)


def test_k_shot_graphs_on_the_atlas():
    graphs = real.graph_atlas()
    train, test = k_shot_graphs(graphs, 5, seed=1)
    labels = torch.tensor([int(g.y) for g in graphs])
    assert torch.bincount(labels[train]).tolist() == [5, 5, 5, 5]
    assert len(train) + len(test) == len(graphs) and not set(train.tolist()) & set(test.tolist())
    with pytest.raises(ZooValueError, match="class 3 has 23 labelled graphs; a 23-shot split needs at least 24"):
        k_shot_graphs(graphs, 23, 0)
    with pytest.raises(ZooValueError, match="no graphs to split"):
        k_shot_graphs([], 1, 0)
    with pytest.raises(ZooValueError, match="seed=1.5"):
        k_shot_graphs(graphs, 1, 1.5)
    with pytest.raises(ZooValueError, match="graph 1 has y=None; expected one label per graph"):
        k_shot_graphs([graphs[0], Data(x=graphs[0].x)], 1, 0)
