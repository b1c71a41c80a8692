"""``zoo predict graph``: two 6-cliques joined by one edge, two labelled nodes per clique, are classified by clique;
the rows and the CSV hold one row per node in the user's order with probabilities that sum to 1 and match tuning
the classifier directly; features of another width need ``--align``; a TU folder is classified graph by graph;
bad input is one ``ZooValueError`` line with nothing written; the plot is a PNG; the command line takes the options
in any order."""

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch_geometric.data import Data

from zoo import hub, modelinfo
from zoo.cli import main
from zoo.config import resolve_config
from zoo.errors import ZooValueError
from zoo.task import build_from_info
from zoo.tasks.graph import TASK
from zoo.tasks.graph.config import GraphConfig
from zoo.tasks.graph.data import features
from zoo.tasks.graph.formats import read_edge_list, read_tu
from zoo.tasks.graph.predict import predict, rows_csv, tu_name
from zoo.tasks.graph.transfer import GraphInput, tune_classifier

DIM, STEPS = 32, 30
A = [f"a{i}" for i in range(6)]
B = [f"b{i}" for i in range(6)]
SHOTS = {"a1": "left", "a4": "left", "b2": "right", "b5": "right"}
TU = "tests/tasks/graph/fixtures/tu"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: two OpenMP threads on a shared 2-core machine wait for each other at every layer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def loaded():
    """The smoke GMoPE recipe's model (freshly initialised experts: prompt tuning must still separate the cliques)."""
    cfg, _ = resolve_config(GraphConfig, "graph", "gmope_transfer", smoke=True)
    torch.manual_seed(0)
    return build_from_info(TASK, cfg, {"dim": DIM, "domains": list(cfg.data.domains)})


@pytest.fixture(scope="module")
def weights(loaded, tmp_path_factory):
    """``loaded`` published as a ``.safetensors`` file with its YAML, for the command line."""
    plain, tensors = modelinfo.split(loaded.info)
    art = hub.publish({**loaded.module.model.state_dict(), **tensors}, loaded.config, arch="gmope", tag="tiny",
                      out_dir=tmp_path_factory.mktemp("graph-weights"), extra={"task": "graph", "model_info": plain})
    return str(art.weights_path)


def _block_features(width: int, seed: int = 0) -> np.ndarray:
    """Per node of A then B: clique A's signal in the first half of the columns, B's in the second, plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.1, (12, width))
    x[:6, : width // 2] += 1
    x[6:, width // 2:] += 1
    return x


def _write_graph(folder, width=DIM, x=None, extra_edges=()):
    """Two 6-cliques A and B joined by a0-b0; the nodes CSV lists B before A (the user's order)."""
    edges = ["source,target"] + [f"{c[i]},{c[j]}" for c in (A, B) for i in range(6) for j in range(i + 1, 6)]
    edges += ["a0,b0", *extra_edges]
    (folder / "edges.csv").write_text("\n".join(edges) + "\n")
    x = _block_features(width) if x is None else x
    order = list(range(6, 12)) + list(range(6))
    names = A + B
    header = "node,label" + "".join(f",f{k}" for k in range(x.shape[1]))
    rows = [header] + [f"{names[i]},{SHOTS.get(names[i], '')}" + "".join(f",{v!r}" for v in x[i].tolist())
                       for i in order]
    (folder / "nodes.csv").write_text("\n".join(rows) + "\n")
    return folder / "edges.csv", folder / "nodes.csv"


def test_two_cliques_are_classified_by_clique(loaded, tmp_path, capsys):
    edges, nodes = _write_graph(tmp_path)
    rows = predict(loaded, edges, nodes=nodes, steps=STEPS)
    assert [r["node"] for r in rows] == B + A  # the nodes CSV's order
    assert [r["label"] for r in rows] == ["right"] * 6 + ["left"] * 6
    assert [r["given"] for r in rows] == [SHOTS.get(n, "") for n in B + A]
    assert all(list(r) == ["node", "label", "score", "given", "p_left", "p_right"] for r in rows)
    for r in rows:
        assert r["p_left"] + r["p_right"] == pytest.approx(1, abs=2e-6)
        assert r["score"] == r[f"p_{r['label']}"] == max(r["p_left"], r["p_right"])
    err = capsys.readouterr().err
    assert "8 of 12 nodes unlabelled" in err
    assert f"{STEPS} steps) on 4 labelled nodes of 2 classes; training accuracy" in err and "100.0%" in err


@pytest.mark.parametrize("width, align", [(DIM, False), (5, True), (DIM, True)])
def test_probabilities_are_the_tuned_classifiers(loaded, tmp_path, width, align):
    """Features of the weights' width are used as given; ``--align`` uses ``data.features`` (SVD + scale)."""
    x = _block_features(width, seed=1)
    edges, nodes = _write_graph(tmp_path, width=width, x=x)
    rows = predict(loaded, edges, nodes=nodes, align=align, steps=STEPS)
    order = list(range(6, 12)) + list(range(6))
    x_model = torch.tensor(x[order], dtype=torch.float32)
    x_model = features(x_model, DIM) if align else x_model
    graph, _ = read_edge_list(edges, nodes)
    data = Data(x=x_model, edge_index=graph.edge_index, num_nodes=12)
    backbone = loaded.module.model
    g = GraphInput.nodes(data, backbone)
    train_idx = (graph.y >= 0).nonzero()[:, 0]
    cfg = loaded.config
    train_cfg = dataclasses.replace(cfg.train, tune_steps=STEPS)
    classifier, _ = tune_classifier("gmope", backbone, g, graph.y, train_idx, 2, cfg.model, train_cfg, cfg.seed)
    with torch.no_grad():
        want = torch.softmax(classifier(g)[0].double(), -1).numpy()
    got = np.array([[r["p_left"], r["p_right"]] for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert [r["label"] for r in rows] == ["right"] * 6 + ["left"] * 6


def test_tuning_leaves_the_loaded_weights_alone(loaded, tmp_path):
    before = {k: v.clone() for k, v in loaded.module.model.state_dict().items()}
    edges, nodes = _write_graph(tmp_path)
    first = predict(loaded, edges, nodes=nodes, steps=5)
    after = loaded.module.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert predict(loaded, edges, nodes=nodes, steps=5) == first  # seeded: the same rows again


def test_out_csv_holds_the_rows(loaded, tmp_path):
    edges, nodes = _write_graph(tmp_path)
    out = tmp_path / "pred.csv"
    rows = predict(loaded, edges, nodes=nodes, steps=5, out=out)
    back = list(csv.DictReader(io.StringIO(out.read_text())))
    assert back == [{k: str(v) for k, v in r.items()} for r in rows]
    assert out.read_bytes() == rows_csv(rows, list(rows[0]))


def test_structural_features_need_align_unless_the_width_matches(loaded, tmp_path):
    edges, _ = _write_graph(tmp_path)
    nodes = tmp_path / "labels_only.csv"
    nodes.write_text("node,label\n" + "".join(f"{n},{SHOTS.get(n, '')}\n" for n in A + B))
    with pytest.raises(ZooValueError, match=r"no feature columns, so nodes get the 4 structural features .* the "
                                            r"weights take 32; add --align"):
        predict(loaded, edges, nodes=nodes)
    rows = predict(loaded, edges, nodes=nodes, align=True, steps=5)
    assert [r["node"] for r in rows] == A + B and {r["label"] for r in rows} <= {"left", "right"}


def test_self_loops_and_duplicates_are_dropped_and_said(loaded, tmp_path, capsys):
    edges, nodes = _write_graph(tmp_path, extra_edges=("a0,a0", "b1,b0"))
    predict(loaded, edges, nodes=nodes, steps=5)
    assert f"{edges}: dropped 1 self-loop, 1 duplicate edge" in capsys.readouterr().err


def test_plot_is_a_png(loaded, tmp_path):
    edges, nodes = _write_graph(tmp_path)
    plot = tmp_path / "graph.png"
    predict(loaded, edges, nodes=nodes, steps=5, plot=plot)
    with Image.open(plot) as image:
        assert image.format == "PNG" and min(image.size) > 100


def test_tu_folder_is_classified_graph_by_graph(loaded, tmp_path, capsys):
    plot = tmp_path / "counts.png"
    rows = predict(loaded, TU, align=True, steps=20, plot=plot)
    assert [r["graph"] for r in rows] == ["1", "2"]
    assert [r["given"] for r in rows] == ["1", "-1"]  # TOY_graph_labels.txt, class names as written
    assert all(list(r) == ["graph", "label", "score", "given", "p_-1", "p_1"] for r in rows)
    assert all(r["p_-1"] + r["p_1"] == pytest.approx(1, abs=2e-6) for r in rows)
    assert [r["label"] for r in rows] == ["1", "-1"]  # two graphs tuned on: they fit
    assert "tuned on all of them" in capsys.readouterr().err
    with Image.open(plot) as image:
        assert image.format == "PNG"
    assert tu_name(Path(TU)) == "TOY" and len(read_tu(TU, "TOY")) == 2


def _cases(tmp):
    """(id, positional arguments, options, message fragment) of bad input built in ``tmp``."""
    edges, nodes = _write_graph(tmp)
    lines = nodes.read_text().splitlines()
    cells = lines[1].split(",")
    cells[2] = "nan"
    (tmp / "nan.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    (tmp / "unknown.csv").write_text(edges.read_text() + "a0,zed\n")
    (tmp / "empty.csv").write_text("")
    (tmp / "one_class.csv").write_text(nodes.read_text().replace(",right,", ",left,"))
    (tmp / "unlabelled.csv").write_text(nodes.read_text().replace(",right,", ",,").replace(",left,", ",,"))
    (tmp / "w5").mkdir()
    five = _write_graph(tmp / "w5", width=5)[1]
    (tmp / "notu").mkdir()
    (tmp / "notu" / "readme.txt").write_text("not a TU data set\n")
    for folder, parts in (("tu", ("graph_indicator", "graph_labels")), ("tu_plain", ("A", "graph_indicator"))):
        (tmp / folder).mkdir()
        for part in parts:
            (tmp / folder / f"TOY_{part}.txt").write_text(Path(TU, f"TOY_{part}.txt").read_text())
    (tmp / "tu_one").mkdir()
    for part in ("A", "graph_indicator", "node_attributes"):
        (tmp / "tu_one" / f"TOY_{part}.txt").write_text(Path(TU, f"TOY_{part}.txt").read_text())
    (tmp / "tu_plain" / "TOY_graph_labels.txt").write_text("0\n1\n")
    (tmp / "tu_one" / "TOY_graph_labels.txt").write_text("3\n3\n")
    return [
        ("nan-feature", (edges,), {"nodes": tmp / "nan.csv"}, "expected a finite number"),
        ("unknown-node", (tmp / "unknown.csv",), {"nodes": nodes}, "node 'zed' is not in"),
        ("empty-edges", (tmp / "empty.csv",), {"nodes": nodes}, "is empty; expected rows 'source,target'"),
        ("missing-edges", (tmp / "gone.csv",), {"nodes": nodes}, "gone.csv: no such file or folder"),
        ("no-nodes-csv", (edges,), {"align": True}, "no labelled nodes"),
        ("no-labels", (edges,), {"nodes": tmp / "unlabelled.csv"}, "no labelled nodes"),
        ("one-class", (edges,), {"nodes": tmp / "one_class.csv"}, "of class 'left'; tuning needs labelled nodes of at "
                                                                  "least 2 classes"),
        ("width-5", (edges,), {"nodes": five}, "5 feature columns but the weights take 32; add --align"),
        ("steps-zero", (edges,), {"nodes": nodes, "steps": 0}, "--steps"),
        ("plot-jpg", (edges,), {"nodes": nodes, "plot": tmp / "p.jpg"}, "ending in .png"),
        ("out-folder", (edges,), {"nodes": nodes, "out": tmp / "notu"}, "is a folder"),
        ("tu-with-nodes", (TU,), {"nodes": nodes}, "--nodes is for an edges CSV"),
        ("tu-missing-A", (tmp / "tu",), {}, "TOY_A.txt does not exist"),
        ("folder-without-tu", (tmp / "notu",), {}, "no TU files"),
        ("tu-structural", (tmp / "tu_plain",), {}, "TOY: no feature columns, so nodes get the 4 structural features"),
        ("tu-one-class", (tmp / "tu_one",), {"align": True}, "every labelled graph (2) is of class '3'"),
    ]


def test_bad_input_is_one_line_and_writes_nothing(loaded, tmp_path):
    for case, args, options, message in _cases(tmp_path):
        out, plot = tmp_path / f"{case}.csv", tmp_path / f"{case}.png"
        options = {"out": out, "plot": plot, **options}
        with pytest.raises(ZooValueError) as err:
            predict(loaded, *args, **options)
        assert message in str(err.value) and "\n" not in str(err.value), (case, str(err.value))
        assert not out.exists() and not plot.exists(), case


def test_plot_of_a_huge_graph_is_refused_before_tuning(loaded, tmp_path, monkeypatch):
    monkeypatch.setattr("zoo.tasks.graph.predict.MAX_PLOT_NODES", 10)
    monkeypatch.setattr("zoo.tasks.graph.predict.tune_classifier", lambda *a, **k: pytest.fail("tuned"))
    edges, nodes = _write_graph(tmp_path)
    with pytest.raises(ZooValueError, match="--plot draws graphs of up to 10 nodes; this one has 12"):
        predict(loaded, edges, nodes=nodes, plot=tmp_path / "p.png")


@pytest.mark.parametrize("order", ["weights-first", "options-first"])
def test_command_line_in_either_order(weights, tmp_path, order, capsys):
    edges, nodes = _write_graph(tmp_path)
    out = tmp_path / f"{order}.csv"
    if order == "weights-first":
        argv = ["predict", "graph", "--weights", weights, str(edges), "--nodes", str(nodes), "--out", str(out),
                "--steps", str(STEPS)]
    else:
        argv = ["predict", "--steps", str(STEPS), "--out", str(out), "--nodes", str(nodes), "graph", "--weights",
                weights, str(edges)]
    assert main(argv) == 0
    got = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["node"] for r in got] == B + A
    assert [r["label"] for r in got] == ["right"] * 6 + ["left"] * 6
    assert f"wrote {out}" in capsys.readouterr().err


def test_command_line_align_flag_and_bad_width(weights, tmp_path, capsys):
    edges, nodes = _write_graph(tmp_path, width=5)
    assert main(["predict", "graph", str(edges), "--weights", weights, "--nodes", str(nodes)]) == 2
    assert "add --align" in capsys.readouterr().err.strip().splitlines()[-1]
    plot = tmp_path / "p.png"
    assert main(["predict", "graph", "--align", str(edges), "--nodes", str(nodes), "--weights", weights,
                 "--plot", str(plot), "--steps", str(STEPS)]) == 0
    assert plot.is_file()
