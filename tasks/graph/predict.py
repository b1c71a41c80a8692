"""``zoo predict graph``: prompt learning on a user's own graph with pretrained weights: the labelled examples are
the shots the method tunes on (GMoPE: the experts' prompts and a linear head, the experts and router frozen), and
every example is then classified.

INPUT is an edges CSV (node classification) or a TU dataset folder (graph classification).

- Node level: the edges CSV and the ``--nodes`` CSV are read by :func:`~.formats.read_edge_list` (its notes, e.g.
  self-loops or duplicate edges dropped, go to stderr). The nodes with a label are the shots; at least two classes
  must be labelled. Rows, one per node in the user's order: ``node``, ``label`` (the predicted class, named as in
  the label column), ``score`` (its softmax probability), ``given`` (the user's label, or empty) and ``p_<class>``
  per class.
- Graph level: the folder holds one TU data set (``NAME_A.txt``, ``NAME_graph_indicator.txt``,
  ``NAME_graph_labels.txt`` and optionally ``NAME_node_attributes.txt`` and ``NAME_node_labels.txt``, read by
  :func:`~.formats.read_tu`). The TU format gives every graph a label, so there is nothing unlabelled to classify:
  the method is tuned on all graphs and their predictions are reported next to their labels (rows ``graph``, the
  1-based graph number of the files, then ``label``, ``score``, ``given``, ``p_<class>``), which shows how well the
  prompts fit the data set.

Features meet the weights at their width ``info["dim"]``: features of that width are used as given; any other width
(the structural features of a graph without feature columns included) needs ``--align``, which projects them
onto the width by SVD and scales them as pretraining did (:func:`~.data.features`). A summary on stderr gives the
training accuracy (agreement with the given labels on the examples tuned on). ``--out`` writes the rows as CSV,
``--plot`` a PNG: the graph in a seeded spring layout, nodes coloured by predicted label and the labelled ones
ringed in black (node level), or the predicted and given class counts (graph level). Everything is checked before
tuning, and nothing is written unless the prediction succeeded.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from zoo.errors import ZooValueError, check_arg
from zoo.io import atomic_write_bytes, figure_png

from .data import features
from .formats import STRUCTURAL_FEATURES, read_edge_list, read_tu
from .transfer import GraphInput, tune_classifier

MAX_STEPS = 100_000
MAX_PLOT_NODES = 2000  # a spring layout of more takes long (8 s for 2000 nodes) and is unreadable
DENSE_LAYOUT_NODES = 500  # networkx lays out larger graphs with scipy's sparse matrices
TU_PARTS = ("A", "graph_indicator", "graph_labels", "node_attributes", "node_labels")
PROBABILITY_DIGITS = 6


@dataclasses.dataclass
class Examples:
    """What is classified: the model input, labels (``-1`` = unknown), class names and the examples' ids."""

    g: GraphInput
    y: torch.Tensor
    classes: list[str]
    ids: list[str]
    level: str


def predict(loaded: Any, input_path: str | Path, *, out: str | Path | None = None, nodes: str | Path | None = None,
            align: bool = False, steps: int | None = None, plot: str | Path | None = None) -> list[dict]:
    """Tune the weights' method on the labelled examples of ``input_path`` and classify all (module docstring).

    Args:
        loaded: a :class:`zoo.task.LoadedModel` of the graph task.
        input_path: an edges CSV or a TU dataset folder.
        out: CSV path for the rows.
        nodes: the nodes CSV (``node[,label][,features...]``) of an edges CSV.
        align: project features of another width onto the weights' width by SVD.
        steps: tuning steps (default: the weights' ``train.tune_steps``).
        plot: PNG path for the drawing.

    Returns:
        One dict per node (``node``) or graph (``graph``) with ``label``, ``score``, ``given`` and ``p_<class>``.

    Raises:
        ZooValueError: a bad option or input, features of another width without ``align``, fewer than two
            labelled classes; nothing is written then.
    """
    cfg = loaded.config
    check_arg(steps is None or (isinstance(steps, int) and 1 <= steps <= MAX_STEPS), "--steps", steps,
              f"an int from 1 to {MAX_STEPS}")
    for flag, path in (("--out", out), ("--plot", plot)):
        if path is not None and Path(path).is_dir():
            raise ZooValueError(f"{flag} {path} is a folder; give a file path")
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise ZooValueError(f"--plot {plot}: the plot is a PNG; give a path ending in .png")
    source = Path(input_path)
    backbone = loaded.module.model
    dim = int(loaded.info["dim"])
    if source.is_dir():
        if nodes is not None:
            raise ZooValueError(f"--nodes is for an edges CSV; the TU folder {source} brings its own node files")
        examples, notes = _graph_examples(source, backbone, dim, align)
        graph = None
    else:
        if not source.exists():
            raise ZooValueError(f"{source}: no such file or folder; expected an edges CSV (source,target) or a TU "
                                "dataset folder")
        examples, notes, graph = _node_examples(source, nodes, backbone, dim, align)
        if plot is not None:
            _check_plottable(graph.num_nodes)
    train_idx = _shots(examples, source, nodes)
    for note in notes:
        print(f"{source}: {note}", file=sys.stderr)
    train_cfg = cfg.train if steps is None else dataclasses.replace(cfg.train, tune_steps=steps)
    method = cfg.model.method
    classifier, tunable = tune_classifier(method, backbone, examples.g, examples.y, train_idx,
                                          len(examples.classes), cfg.model, train_cfg, seed=cfg.seed)
    classifier.eval()
    with torch.no_grad():
        probs = torch.softmax(classifier(examples.g)[0].double(), dim=-1)
    predicted = probs.argmax(-1)
    rows = _rows(examples, probs, predicted)
    agree = float((predicted[train_idx] == examples.y[train_idx]).double().mean())
    what = f"{examples.level}{'s' * (len(train_idx) != 1)}"
    every = "all " if len(train_idx) == len(examples.ids) else ""
    print(f"tuned {tunable} parameters ({method}, {train_cfg.tune_steps} steps) on {every}{len(train_idx)} labelled "
          f"{what} of {len(examples.classes)} classes; training accuracy (prediction = given label on those "
          f"{what}): {agree:.1%}", file=sys.stderr)
    payloads = []
    if out is not None:
        columns = [examples.level, "label", "score", "given", *(f"p_{name}" for name in examples.classes)]
        payloads.append((out, rows_csv(rows, columns)))
    if plot is not None:
        title = f"{source.name}: predicted classes ({method}, {len(train_idx)} labelled {what})"
        if graph is not None:
            png = plot_nodes(graph.edge_index, graph.num_nodes, predicted, examples.y >= 0, examples.classes, title)
        else:
            png = plot_counts(predicted, examples.y, examples.classes, title)
        payloads.append((plot, png))
    for path, data in payloads:
        atomic_write_bytes(path, data)
    return rows


def model_features(x: torch.Tensor, dim: int, align: bool, where: str, structural: bool) -> torch.Tensor:
    """Features at the weights' width: as given at width ``dim``, aligned by SVD with ``align``, else an error.

    Args:
        x: ``[N, F]`` features.
        dim: the weights' feature width.
        align: project onto ``dim`` by SVD (:func:`~.data.features`).
        where: the file the features came from, for messages.
        structural: ``x`` holds the structural features of a graph without feature columns.
    """
    if not torch.isfinite(x).all():
        raise ZooValueError(f"{where}: feature values beyond float32's range (about ±3.4e38); rescale them")
    if align:
        return features(x, dim)
    if x.shape[1] == dim:
        return x
    if structural:
        raise ZooValueError(f"{where}: no feature columns, so nodes get the {x.shape[1]} structural features "
                            f"({', '.join(STRUCTURAL_FEATURES)}) but the weights take {dim}; add --align to project "
                            f"them onto {dim} by SVD, or give {dim} feature columns")
    raise ZooValueError(f"{where}: {x.shape[1]} feature columns but the weights take {dim}; add --align to project "
                        f"them onto {dim} by SVD")


def _node_examples(edges: Path, nodes: str | Path | None, backbone: Any, dim: int,
                   align: bool) -> tuple[Examples, list[str], Data]:
    data, notes = read_edge_list(edges, nodes)
    structural = any(note.startswith("no node features") for note in notes)
    x = model_features(data.x, dim, align, str(nodes if nodes is not None and not structural else edges), structural)
    graph = Data(x=x, edge_index=data.edge_index, num_nodes=data.num_nodes)
    examples = Examples(GraphInput.nodes(graph, backbone), data.y, list(data.classes), list(data.node_ids), "node")
    return examples, notes, graph


def tu_name(folder: Path) -> str:
    """The prefix of the one TU data set in ``folder`` (``NAME`` of ``NAME_A.txt`` and its siblings)."""
    names = {path.name[: -len(f"_{part}.txt")] for path in folder.iterdir() for part in TU_PARTS
             if path.name.endswith(f"_{part}.txt") and len(path.name) > len(f"_{part}.txt")}
    if not names:
        raise ZooValueError(f"{folder}: no TU files (NAME_A.txt, NAME_graph_indicator.txt, NAME_graph_labels.txt) "
                            "in this folder")
    if len(names) > 1:
        raise ZooValueError(f"{folder} holds the files of several TU data sets ({', '.join(sorted(names))}); give "
                            "a folder with one")
    return names.pop()


def _graph_examples(folder: Path, backbone: Any, dim: int, align: bool) -> tuple[Examples, list[str]]:
    name = tu_name(folder)
    graphs = read_tu(folder, name)
    structural = not any((folder / f"{name}_{part}.txt").is_file() for part in ("node_attributes", "node_labels"))
    x = model_features(torch.cat([g.x for g in graphs]), dim, align, str(folder / name), structural)
    y = torch.cat([g.y for g in graphs])
    graphs = [Data(x=part, edge_index=g.edge_index, num_nodes=g.num_nodes)
              for g, part in zip(graphs, x.split([g.num_nodes for g in graphs]))]  # one SVD basis for all graphs
    # read_tu numbers the labels in sorted order; their values name the classes
    values = np.unique([int(v) for v in (folder / f"{name}_graph_labels.txt").read_text().split()])
    notes = [f"{len(graphs)} graphs, all labelled (the TU format has no unknown label): the prompts are tuned on all "
             "of them and their predictions reported"]
    examples = Examples(GraphInput.graphs(graphs, backbone), y, [str(v) for v in values],
                        [str(i + 1) for i in range(len(graphs))], "graph")
    return examples, notes


def _shots(examples: Examples, source: Path, nodes: str | Path | None) -> torch.Tensor:
    """The labelled examples, refused unless they hold at least two classes."""
    labelled = (examples.y >= 0).nonzero()[:, 0]
    if not len(labelled):
        if nodes is None:
            raise ZooValueError(f"no labelled nodes: {source} comes without --nodes CSV; give one with the header "
                                "node,label[,features...] and labels of at least 2 classes (the shots to tune on)")
        raise ZooValueError(f"{nodes}: no labelled nodes; it needs a 'label' column after 'node' with labels of at "
                            "least 2 classes (the shots to tune on)")
    present = torch.unique(examples.y[labelled])
    if len(present) < 2:
        where = nodes if examples.level == "node" and nodes is not None else source
        raise ZooValueError(f"{where}: every labelled {examples.level} ({len(labelled)}) is of class "
                            f"{examples.classes[int(present[0])]!r}; tuning needs labelled {examples.level}s of at "
                            "least 2 classes")
    return labelled


def _rows(examples: Examples, probs: torch.Tensor, predicted: torch.Tensor) -> list[dict]:
    p = probs.numpy().round(PROBABILITY_DIGITS).tolist()
    classes, given = examples.classes, examples.y.tolist()
    rows = []
    for i, (ident, c) in enumerate(zip(examples.ids, predicted.tolist())):
        rows.append({examples.level: ident, "label": classes[c], "score": p[i][c],
                     "given": classes[given[i]] if given[i] >= 0 else "",
                     **{f"p_{name}": p[i][k] for k, name in enumerate(classes)}})
    return rows


def rows_csv(rows: Sequence[dict], columns: Sequence[str]) -> bytes:
    """The rows as CSV bytes with a header (values quoted where CSV needs it)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _check_plottable(num_nodes: int) -> None:
    if num_nodes > MAX_PLOT_NODES:
        raise ZooValueError(f"--plot draws graphs of up to {MAX_PLOT_NODES} nodes; this one has {num_nodes} (leave "
                            "out --plot)")
    if num_nodes >= DENSE_LAYOUT_NODES and importlib.util.find_spec("scipy") is None:
        raise ZooValueError(f"--plot of a graph of {num_nodes} nodes needs scipy (networkx lays out graphs of "
                            f"{DENSE_LAYOUT_NODES} nodes or more with it): pip install scipy")


def _colours(count: int) -> list[Any]:
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["turbo"](i / (count - 1)) for i in range(count)]


def plot_nodes(edge_index: torch.Tensor, num_nodes: int, predicted: torch.Tensor, labelled: torch.Tensor,
               classes: Sequence[str], title: str) -> bytes:
    """PNG bytes of the graph in a seeded spring layout, nodes coloured by predicted class and the labelled ones
    ringed in black.

    Args:
        edge_index: the undirected edges (both directions).
        num_nodes: N.
        predicted: ``[N]`` predicted class per node.
        labelled: ``[N]`` bool, the nodes tuned on.
        classes: the class names.
        title: the figure title.
    """
    import networkx as nx
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    graph = nx.Graph()
    graph.add_nodes_from(range(num_nodes))
    graph.add_edges_from(edge_index[:, edge_index[0] < edge_index[1]].T.tolist())
    pos = nx.spring_layout(graph, seed=0)
    colours = _colours(len(classes))
    size = float(np.clip(3000 / np.sqrt(max(num_nodes, 1)), 8, 300))
    fig = Figure(figsize=(8, 6.5), layout="constrained")
    ax = fig.subplots()
    nx.draw_networkx_edges(graph, pos, ax=ax, width=0.6, alpha=0.35, edge_color="grey")
    for ringed in (False, True):
        members = [i for i in range(num_nodes) if bool(labelled[i]) == ringed]
        nx.draw_networkx_nodes(graph, pos, nodelist=members, ax=ax, node_size=size,
                               node_color=[colours[int(predicted[i])] for i in members],
                               edgecolors="black" if ringed else "none", linewidths=1.6 if ringed else 0)
    handles = [Line2D([], [], marker="o", linestyle="", markersize=8, markerfacecolor=colours[k],
                      markeredgecolor="none", label=name) for k, name in enumerate(classes)]
    handles.append(Line2D([], [], marker="o", linestyle="", markersize=8, markerfacecolor="white",
                          markeredgecolor="black", markeredgewidth=1.6, label="labelled (tuned on)"))
    ax.legend(handles=handles, title="predicted class", loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return figure_png(fig, dpi=110)


def plot_counts(predicted: torch.Tensor, given: torch.Tensor, classes: Sequence[str], title: str) -> bytes:
    """PNG bytes of a bar chart: graphs per class, predicted beside given.

    Args:
        predicted: ``[G]`` predicted class per graph.
        given: ``[G]`` given class per graph (``-1`` = none).
        classes: the class names.
        title: the figure title.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    count = len(classes)
    ours = np.bincount(predicted.numpy(), minlength=count)
    theirs = np.bincount(given[given >= 0].numpy(), minlength=count)
    at = np.arange(count)
    fig = Figure(figsize=(max(4.5, 0.6 * count + 2.5), 3.8), layout="constrained")
    ax = fig.subplots()
    ax.bar(at - 0.2, ours, width=0.4, color=_colours(count), label="predicted")
    ax.bar(at + 0.2, theirs, width=0.4, color="white", edgecolor="black", label="given")
    ax.set_xticks(at, labels=list(classes))
    ax.set_xlabel("class")
    ax.set_ylabel(f"graphs (of {len(predicted)})")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 1.25 * max(ours.max(), theirs.max()))  # room for the legend above the bars
    ax.legend(fontsize=8, ncols=2, loc="upper center")
    ax.set_title(title, fontsize=9)
    return figure_png(fig, dpi=110)
