"""The graph readers against hand-worked fixtures and PyG's own readers: the edge-list CSVs (notes, labels, every
bad input as one line), the raw Planetoid pickles (compared with ``torch_geometric.io.read_planetoid_data``, the
restricted unpickler refusing foreign names), the TU text format (compared with ``TUDataset`` with the network
off), PyG's ``Planetoid`` and ``TUDataset`` reading raw files without a download, and the feature helpers
(structural features against networkx, SVD alignment against numpy).

The Planetoid fixtures were written by :func:`build_planetoid` (``python tests/tasks/graph/test_graph_formats.py``
rewrites them): Python 2 style protocol-2 pickles, byte strings as ``U``/``T`` opcodes and the module names the
original files hold (``scipy.sparse.csr``, ``numpy.core.multiarray``), so the committed bytes stay in the original
format whatever numpy and scipy pickle today.
"""

from __future__ import annotations

import collections
import io
import pickle
import shutil
import socket
import struct
import urllib.request
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.utils import to_undirected

from zoo.errors import ZooValueError
from zoo.tasks.graph.formats import (
    PLANETOID_FILES,
    align_features,
    read_edge_list,
    read_planetoid,
    read_tu,
    structural_features,
    undirected_edges,
)

FIXTURES = Path(__file__).parent / "fixtures"
PLANETOID = FIXTURES / "planetoid"


class _Python2Pickler(pickle._Pickler):
    """Writes ``str`` and ``bytes`` as Python 2 byte strings (opcodes ``U`` and ``T``), as the originals hold them."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_string(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_string
    dispatch[bytes] = save_string


def _python2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    out = buffer.getvalue()
    for new, old in ((b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"),
                     (b"cscipy.sparse._csr\n", b"cscipy.sparse.csr\n")):
        out = out.replace(new, old)
    return out


def build_planetoid(folder: Path, name: str, gaps: bool) -> None:
    """A 557-node (``gaps``: 547) two-class Planetoid set: 40 training nodes, 500 validation nodes, 5 more
    unlabelled-by-split nodes (one with an all-zero label row, as in CiteSeer), 10 test nodes listed in shuffled
    order; ``gaps`` leaves two test indices out of the range, CiteSeer's isolated nodes. The graph holds a
    self-loop, a repeated neighbour and one edge listed in one direction only."""
    import scipy.sparse as sp

    rng = np.random.default_rng(7 if gaps else 3)
    num_all, width, classes = 545, 6, 2
    labels = np.concatenate([np.repeat([0, 1], 20), rng.integers(0, classes, num_all - 40)])
    ally = np.eye(classes, dtype=np.int32)[labels]
    ally[542] = 0
    allx = (rng.random((num_all, width)) < 0.3).astype(np.float32)
    test_slots = np.arange(num_all, num_all + 12 if gaps else num_all + 10)
    test_index = np.setdiff1d(test_slots, [548, 553]) if gaps else test_slots
    test_index = rng.permutation(test_index)
    ty = np.eye(classes, dtype=np.int32)[rng.integers(0, classes, len(test_index))]
    tx = (rng.random((len(test_index), width)) < 0.3).astype(np.float32)
    num_nodes = num_all + len(test_slots)
    graph: collections.defaultdict[int, list[int]] = collections.defaultdict(list)
    for u, v in rng.integers(0, num_nodes, (700, 2)):
        if not (gaps and {int(u), int(v)} & {548, 553}):
            graph[int(u)].append(int(v))
            graph[int(v)].append(int(u))
    graph[3] += [3, 5, 5]  # a self-loop, then 5 twice and only from 3's side
    if gaps:
        graph[548] = []
    files = {"x": sp.csr_matrix(allx[:40]), "tx": sp.csr_matrix(tx), "allx": sp.csr_matrix(allx),
             "y": ally[:40], "ty": ty, "ally": ally, "graph": graph}
    folder.mkdir(parents=True, exist_ok=True)
    for part, value in files.items():
        (folder / f"ind.{name}.{part}").write_bytes(_python2_pickle(value))
    (folder / f"ind.{name}.test.index").write_text("".join(f"{i}\n" for i in test_index))


# --- edge lists


def test_edge_list_with_nodes_file_hand_worked():
    data, notes = read_edge_list(FIXTURES / "edges.csv", FIXTURES / "nodes.csv")
    assert data.node_ids == ["ann", "bob", "cid", "dee", "eve"]
    want = undirected_edges(torch.tensor([[0, 1], [1, 2], [0, 2], [2, 3]]).T, 5)[0]
    assert torch.equal(data.edge_index, want)
    assert data.edge_index.tolist() == [[0, 0, 1, 1, 2, 2, 2, 3], [1, 2, 0, 2, 0, 1, 3, 2]]
    assert data.classes == ["blue", "red"] and data.num_classes == 2
    assert data.y.tolist() == [1, 0, 1, -1, 0] and data.y.dtype == torch.long
    assert data.x.dtype == torch.float32
    assert data.x.tolist() == [[31, 0.5], [45, 1.5], [22, -0.25], [60, 2.0], [18, 0.0]]
    assert notes == ["dropped 1 self-loop, 2 duplicate edges", "1 of 5 nodes have no edges", "1 of 5 nodes unlabelled"]


def test_edge_list_alone_has_structural_features_and_no_labels(tmp_path: Path):
    edges = tmp_path / "e.csv"
    edges.write_text("7,3\n3,9\n\n9,7\n9,12\n")  # no header: the first line is an edge
    data, notes = read_edge_list(edges)
    assert data.node_ids == ["7", "3", "9", "12"]
    assert data.edge_index.size(1) == 8 and data.y.tolist() == [-1] * 4 and data.num_classes == 0
    assert torch.equal(data.x, structural_features(data.edge_index, 4))
    assert notes == ["no node features: x = structural features (log_degree, clustering, log_mean_neighbour_degree, "
                     "log_triangles)", "4 of 4 nodes unlabelled"]


def test_integer_labels_in_numeric_order(tmp_path: Path):
    (tmp_path / "n.csv").write_text("node,label\na,10\nb,9\nc,2\n")
    (tmp_path / "e.csv").write_text("SOURCE,Target\na,b\nb,c\n")
    data, notes = read_edge_list(tmp_path / "e.csv", tmp_path / "n.csv")
    assert data.classes == ["2", "9", "10"] and data.y.tolist() == [2, 1, 0]
    assert data.x.shape == (3, 4)  # no feature columns: structural
    assert notes[0].startswith("no node features")


@pytest.mark.parametrize(("edges", "nodes", "message"), [
    ("a,b\nb,zed\n", "node,label\na,1\nb,2\n", r"e\.csv line 2: node 'zed' is not in .*n\.csv$"),
    ("a,b\n", "node,f1\na,1\nb,nan\n", r"n\.csv line 3: f1='nan'; expected a finite number"),
    ("a,b\n", "node,f1\na,inf\nb,1\n", r"n\.csv line 2: f1='inf'; expected a finite number"),
    ("a,b\n", "node,f1\na,1\nb,x1\n", r"n\.csv line 3: f1='x1' is not a number"),
    ("a,b\n", "node,f1\na,1\nb,\n", r"n\.csv line 3: f1='' is not a number"),
    ("a,b\n", "node,label,f1\na,1,2\nb,1\n", r"n\.csv line 3: 2 fields; expected 3 like the header"),
    ("a,b\na,b,1\n", None, r"e\.csv line 2: 3 fields; expected 2 \(source,target\)"),
    ("a\n", None, r"e\.csv line 1: 1 fields; expected 2"),
    ("a,\n", None, r"e\.csv line 1: empty node id"),
    ("", None, r"e\.csv is empty"),
    ("# only a comment\n\n", None, r"e\.csv is empty"),
    ("source,target\n", None, r"e\.csv has a header but no edges"),
    ("a,b\n", "", r"n\.csv is empty"),
    ("a,b\n", "node,label\n", r"n\.csv has a header but no nodes"),
    ("a,b\n", "id,label\na,1\n", r"n\.csv line 1: header 'id,label' must start with 'node'"),
    ("a,b\n", "node\na\nb\na\n", r"n\.csv line 4: node 'a' repeats line 2"),
])
def test_bad_edge_list_is_one_line(tmp_path: Path, edges: str, nodes: str | None, message: str):
    (tmp_path / "e.csv").write_text(edges)
    if nodes is not None:
        (tmp_path / "n.csv").write_text(nodes)
    with pytest.raises(ZooValueError, match=message) as error:
        read_edge_list(tmp_path / "e.csv", tmp_path / "n.csv" if nodes is not None else None)
    assert "\n" not in str(error.value)


def test_missing_file_is_one_line(tmp_path: Path):
    with pytest.raises(ZooValueError, match=r"nope\.csv does not exist"):
        read_edge_list(tmp_path / "nope.csv")


# --- feature helpers


def test_undirected_edges_counts_what_it_drops():
    pairs = torch.tensor([[2, 0, 1, 1, 0, 2], [0, 2, 1, 2, 2, 1]])  # 0-2 three times, a loop, 1-2 twice
    edge_index, loops, duplicates = undirected_edges(pairs, 3)
    assert edge_index.tolist() == [[0, 1, 2, 2], [2, 2, 0, 1]]
    assert (loops, duplicates) == (1, 3) and edge_index.dtype == torch.long


@pytest.mark.parametrize("graph", [nx.karate_club_graph(), nx.gnp_random_graph(60, 0.08, seed=1),
                                   nx.empty_graph(3), nx.star_graph(5)], ids=["karate", "gnp", "edgeless", "star"])
@pytest.mark.parametrize("dense", [True, False], ids=["dense", "sparse"])
def test_structural_features_match_networkx(graph: nx.Graph, dense: bool, monkeypatch: pytest.MonkeyPatch):
    from zoo.tasks.graph import formats

    if not dense:  # the wedge lookup large graphs take
        monkeypatch.setattr(formats, "DENSE_TRIANGLES_MAX", 0)
    n = graph.number_of_nodes()
    pairs = torch.tensor(list(graph.edges()), dtype=torch.long).reshape(-1, 2).T
    got = structural_features(undirected_edges(pairs, n)[0], n).double()
    neighbour_degree = nx.average_neighbor_degree(graph)
    want = torch.tensor([[np.log1p(graph.degree(v)), nx.clustering(graph, v), np.log1p(neighbour_degree[v]),
                          np.log1p(nx.triangles(graph, v))] for v in range(n)], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_align_features_projects_onto_top_singular_vectors():
    x = torch.randn(40, 10) @ torch.randn(10, 10) + 3
    got = align_features(x, 4)
    centred = (x - x.mean(0)).double().numpy()
    _, _, vh = np.linalg.svd(centred, full_matrices=False)
    want = centred @ vh[:4].T
    assert got.shape == (40, 4) and got.dtype == torch.float32
    np.testing.assert_allclose(np.abs(got.numpy()), np.abs(want), rtol=1e-4, atol=1e-4)  # equal up to sign
    basis = vh[:4].T * np.sign(vh[:4].T[np.abs(vh[:4].T).argmax(0), range(4)])
    np.testing.assert_allclose(got.numpy(), centred @ basis, rtol=1e-4, atol=1e-4)  # the documented sign rule
    order = torch.randperm(40)
    torch.testing.assert_close(align_features(x[order], 4), got[order], rtol=1e-4, atol=1e-4)  # signs are fixed


def test_align_features_randomized_above_the_exact_limit(monkeypatch: pytest.MonkeyPatch):
    from zoo.tasks.graph import formats

    means, labels = 3 * torch.randn(5, 80), torch.randint(0, 5, (300,))
    x = means[labels] + torch.randn(300, 80)  # 4 strong directions after centring, then noise
    exact = align_features(x, 8)
    monkeypatch.setattr(formats, "EXACT_SVD_MAX", 50)
    randomized = align_features(x, 8)
    torch.testing.assert_close(randomized[:, :4], exact[:, :4], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(align_features(x, 8), randomized)  # seeded: the same every call


def test_align_features_pads_narrow_features_and_keeps_distances():
    x = torch.randn(12, 3)
    got = align_features(x, 8)
    assert got.shape == (12, 8) and (got[:, 3:] == 0).all()
    torch.testing.assert_close(torch.cdist(got, got), torch.cdist(x, x), rtol=1e-4, atol=1e-4)  # a rotation
    assert align_features(torch.randn(5, 50), 32)[:, 5:].eq(0).all()  # 5 nodes: at most 5 singular vectors
    with pytest.raises(ZooValueError, match="d=0 is not allowed"):
        align_features(x, 0)


# --- Planetoid


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to download fails the test: sockets, ``urlopen`` (PyG's ``download_url``) and PyG's ``fs.cp``
    (how ``Planetoid`` fetches its files)."""
    from torch_geometric.io import fs

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(fs, "cp", refuse)


@pytest.mark.parametrize(("name", "gaps"), [("Cora", False), ("CiteSeer", True)])
def test_pyg_planetoid_reads_raw_files_offline(tmp_path: Path, offline: None, name: str, gaps: bool):
    pytest.importorskip("scipy", reason="PyG's reader unpickles the CSR matrices with scipy")
    from torch_geometric.datasets import Planetoid

    raw = tmp_path / name / "raw"  # PyG's layout: root/<name as given>/raw/ind.<name lower-cased>.<part>
    raw.mkdir(parents=True)
    for part in PLANETOID_FILES:
        shutil.copy(PLANETOID / f"ind.{name.lower()}.{part}", raw)
    pyg = Planetoid(str(tmp_path), name)[0]
    ours = read_planetoid(raw, name)
    assert ours.num_nodes == pyg.num_nodes == (557 if gaps else 555)
    torch.testing.assert_close(ours.x, pyg.x)
    labelled = ours.y >= 0
    assert torch.equal(ours.y[labelled], pyg.y[labelled]) and (pyg.y[~labelled] == 0).all()
    for mask in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(ours[mask], pyg[mask]), mask
    assert torch.equal(ours.edge_index, to_undirected(pyg.edge_index, num_nodes=pyg.num_nodes))
    assert (tmp_path / name / "processed" / "data.pt").is_file()

    assert torch.equal(Planetoid(str(tmp_path), name)[0].x, pyg.x)  # from the processed file
    if not (tmp_path / name.lower()).exists():  # a case-sensitive file system
        with pytest.raises(AssertionError, match="network access attempted"):
            Planetoid(str(tmp_path), name.lower())  # another folder, root/<lower-case name>/raw, is empty
    for path in raw.iterdir():
        path.unlink()
    with pytest.raises(AssertionError, match="network access attempted"):
        Planetoid(str(tmp_path), name)  # PyG checks the raw files before the processed ones


@pytest.mark.parametrize(("name", "gaps"), [("citeseer", True), ("cora", False)])
def test_planetoid_matches_pyg_reader(name: str, gaps: bool):
    pytest.importorskip("scipy", reason="PyG's reader unpickles the CSR matrices with scipy")
    from torch_geometric.io import read_planetoid_data

    ours = read_planetoid(PLANETOID, name.capitalize())  # the prefix is case-insensitive
    pyg = read_planetoid_data(str(PLANETOID), name)
    num_nodes = 557 if gaps else 555
    assert ours.num_nodes == pyg.num_nodes == num_nodes
    torch.testing.assert_close(ours.x, pyg.x)
    unlabelled = torch.zeros(num_nodes, dtype=torch.bool)
    unlabelled[542] = True  # an all-zero row of ally
    if gaps:
        unlabelled[[548, 553]] = True  # CiteSeer's padding: zero features and labels
        assert ours.x[[548, 553]].abs().sum() == 0
    assert torch.equal(ours.y == -1, unlabelled)
    assert torch.equal(ours.y[~unlabelled], pyg.y[~unlabelled])
    assert (pyg.y[unlabelled] == 0).all()  # PyG calls them class 0
    for mask in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(ours[mask], pyg[mask]), mask
    assert ours.train_mask.sum() == 40 == 20 * ours.num_classes and ours.val_mask[40:540].all()
    assert ours.test_mask.sum() == 10
    assert torch.equal(ours.edge_index, to_undirected(pyg.edge_index, num_nodes=num_nodes))
    assert not torch.equal(to_undirected(pyg.edge_index), pyg.edge_index)  # the one-sided edge 3-5
    assert ours.num_classes == 2 and ours.x.dtype == torch.float32 and ours.edge_index.dtype == torch.long


def test_planetoid_fixture_is_what_the_builder_writes(tmp_path: Path):
    pytest.importorskip("scipy", reason="the builder pickles scipy CSR matrices")
    for name, gaps in (("citeseer", True), ("cora", False)):
        build_planetoid(tmp_path, name, gaps)
        fresh, committed = read_planetoid(tmp_path, name), read_planetoid(PLANETOID, name)
        for key in ("x", "y", "edge_index", "train_mask", "val_mask", "test_mask"):
            assert torch.equal(fresh[key], committed[key]), (name, key)
    assert (PLANETOID / "ind.cora.x").read_bytes().startswith(b"\x80\x02cscipy.sparse.csr\ncsr_matrix\n")


def _planetoid_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "planetoid"
    shutil.copytree(PLANETOID, folder)
    return folder


def test_planetoid_refuses_foreign_pickles(tmp_path: Path):
    folder = _planetoid_copy(tmp_path)
    marker = tmp_path / "ran"
    (folder / "ind.cora.x").write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(ZooValueError, match=r"ind\.cora\.x refuses to unpickle os\.system"):
        read_planetoid(folder, "cora")
    assert not marker.exists()
    (folder / "ind.cora.y").write_bytes(pickle.dumps(np.zeros((2, 2)), protocol=2))  # Python 3's own bytes
    (folder / "ind.cora.x").write_bytes((PLANETOID / "ind.cora.x").read_bytes())
    with pytest.raises(ZooValueError, match=r"ind\.cora\.y refuses to unpickle _codecs\.encode"):
        read_planetoid(folder, "cora")


@pytest.mark.parametrize(("part", "content", "message"), [
    ("x", None, r"ind\.cora\.x does not exist"),
    ("test.index", None, r"ind\.cora\.test\.index does not exist"),
    ("test.index", b"545\nabc\n", r"ind\.cora\.test\.index line 2: 'abc' is not a node index"),
    ("tx", b"garbage", r"ind\.cora\.tx is not a readable Planetoid pickle"),
    ("ty", b"\x80\x02]q\x00.", r"ind\.cora\.ty holds list; expected a numeric 2-D matrix"),
    ("graph", b"\x80\x02]q\x00.", r"ind\.cora\.graph holds list; expected a dict of adjacency lists"),
    ("test.index", b"545\n546\n", r"10 rows in tx, 10 in ty, 2 test indices"),
])
def test_bad_planetoid_is_one_line(tmp_path: Path, part: str, content: bytes | None, message: str):
    folder = _planetoid_copy(tmp_path)
    path = folder / f"ind.cora.{part}"
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    with pytest.raises(ZooValueError, match=message) as error:
        read_planetoid(folder, "cora")
    assert "\n" not in str(error.value)


# --- TU


def test_tu_matches_pyg_tudataset_offline(tmp_path: Path, offline: None):
    from torch_geometric.datasets import TUDataset

    shutil.copytree(FIXTURES / "tu", tmp_path / "TOY" / "raw")
    pyg = TUDataset(str(tmp_path), "TOY", use_node_attr=True)
    ours = read_tu(tmp_path / "TOY" / "raw", "TOY")
    assert len(ours) == len(pyg) == 2
    for mine, theirs in zip(ours, pyg):
        torch.testing.assert_close(mine.x, theirs.x)
        assert torch.equal(mine.y, theirs.y) and mine.num_classes == 2
        assert torch.equal(mine.edge_index, to_undirected(theirs.edge_index, num_nodes=theirs.num_nodes))
    assert [g.y.item() for g in ours] == [1, 0]  # labels 1, -1 numbered in sorted order
    assert ours[0].x.shape == (4, 5)  # 2 attributes + one-hot of labels 1..3
    assert ours[0].edge_index.size(1) == 8  # the 4-cycle; the repeated 1-2 and the self-loop 3-3 dropped
    assert ours[1].edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]  # 6-7 was listed one way only
    assert pyg[1].edge_index.size(1) == 3
    for path in (tmp_path / "TOY" / "raw").iterdir():
        path.unlink()
    with pytest.raises(AssertionError, match="network access attempted"):
        TUDataset(str(tmp_path), "TOY", use_node_attr=True)  # the raw files are checked before the processed ones


def test_tu_without_node_files_has_structural_features(tmp_path: Path):
    for part in ("A", "graph_indicator", "graph_labels"):
        shutil.copy(FIXTURES / "tu" / f"TOY_{part}.txt", tmp_path)
    graphs = read_tu(tmp_path, "TOY")
    assert graphs[0].x.shape == (4, 4)
    assert torch.equal(graphs[0].x, structural_features(graphs[0].edge_index, 4))


@pytest.mark.parametrize(("part", "content", "message"), [
    ("A", "1, 2\n2, 5\n", r"TOY_A\.txt line 2: edge \[2, 5\] joins graphs 1 and 2"),
    ("A", "1, 2\n2, 9\n", r"TOY_A\.txt line 2: node \[2, 9\] outside 1\.\.7"),
    ("A", "1, 2\n2\n", r"TOY_A\.txt line 2: 1 fields; expected 2 like line 1"),
    ("A", "1, 2\n2, b\n", r"TOY_A\.txt line 2: '2, b' is not int numbers"),
    ("A", "", r"TOY_A\.txt is empty"),
    ("graph_indicator", "1\n1\n2\n1\n2\n2\n2\n", r"TOY_graph_indicator\.txt line 4: graph 1 out of order"),
    ("graph_indicator", "2\n2\n2\n2\n3\n3\n3\n", r"TOY_graph_indicator\.txt line 1: graph 2 out of order"),
    ("graph_labels", "1\n", r"TOY_graph_labels\.txt has 1 labels; expected 2"),
    ("node_labels", "1\n2\n", r"TOY_node_labels\.txt has 2 rows; expected 7"),
    ("node_attributes", "1.0\n" * 6 + "nan\n", r"TOY_node_attributes\.txt line 7: 'nan'; expected finite numbers"),
    ("graph_labels", None, r"TOY_graph_labels\.txt does not exist"),
])
def test_bad_tu_is_one_line(tmp_path: Path, part: str, content: str | None, message: str):
    shutil.copytree(FIXTURES / "tu", tmp_path, dirs_exist_ok=True)
    path = tmp_path / f"TOY_{part}.txt"
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    with pytest.raises(ZooValueError, match=message) as error:
        read_tu(tmp_path, "TOY")
    assert "\n" not in str(error.value)


if __name__ == "__main__":  # rewrite the committed Planetoid fixtures
    build_planetoid(PLANETOID, "citeseer", gaps=True)
    build_planetoid(PLANETOID, "cora", gaps=False)
