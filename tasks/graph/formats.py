"""Graph readers for what a user brings (an edge-list CSV with an optional nodes CSV, the raw Planetoid files, the
TU text format) and the feature helpers every graph goes through, so that all graphs reach the models as the same
PyG :class:`~torch_geometric.data.Data`: ``x`` float32 ``[N, F]``, ``edge_index`` int64 ``[2, E]`` undirected
(both directions, no self-loops, no duplicates, sorted by source then target), ``y`` int64 (``-1`` = unlabelled)
and ``num_classes``.

- :func:`read_edge_list`: edges CSV = two columns of node ids, comma-separated. Blank lines and lines starting
  with ``#`` are skipped; the first remaining line is a header only when it reads ``source,target`` (any case), so
  a header is optional and any other first line is an edge. The nodes CSV needs the header
  ``node[,label][,feature columns...]``; an empty label cell leaves that node unlabelled. Labels are numbered in
  sorted order (numeric order when all are integers) and kept as ``data.classes``; node ids as ``data.node_ids``
  (nodes-file order, else order of first appearance in the edges). Without feature columns ``x`` holds
  :func:`structural_features`.
- :func:`read_planetoid`: the ``ind.<name>.*`` pickles of Yang et al.'s Planetoid split. They are unpickled with
  a restricted unpickler that admits only the numpy, ``scipy.sparse`` CSR, ``collections.defaultdict`` and
  ``list`` names the format holds (the CSR matrix is rebuilt from its arrays, so scipy is not needed). The
  originals were written by Python 2; files re-pickled by Python 3 name ``_codecs.encode`` and are refused too.
- :func:`read_tu`: the TU Dortmund text format, read like PyG's ``TUDataset`` with ``use_node_attr=True``.

Every bad input is one :class:`ZooValueError` line naming the file (and line).
"""

from __future__ import annotations

import csv
import math
import pickle
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from zoo.errors import ZooValueError, check_arg

PathLike = str | Path
STRUCTURAL_FEATURES = ("log_degree", "clustering", "log_mean_neighbour_degree", "log_triangles")
"""The columns of :func:`structural_features`."""
PLANETOID_FILES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
PLANETOID_VAL = 500  # validation nodes after the training ones, Planetoid's standard split
EDGE_HEADER = ("source", "target")
DENSE_TRIANGLES_MAX = 1024  # structural_features: common neighbours from a dense A @ A up to this many nodes
EXACT_SVD_MAX = 1024  # align_features: exact SVD while the smaller side of x is at most this
SVD_OVERSAMPLE, SVD_POWER_ITERATIONS = 10, 8  # randomized SVD above it


def undirected_edges(pairs: Tensor, num_nodes: int) -> tuple[Tensor, int, int]:
    """The canonical undirected ``edge_index`` of node pairs.

    Args:
        pairs: int ``[2, E]`` node pairs, in any direction.
        num_nodes: the number of nodes (every index is below it).

    Returns:
        ``(edge_index, self_loops, duplicates)``: both directions of every distinct pair, sorted by source then
        target, and how many self-loops and repeated pairs (``b,a`` after ``a,b`` included) were dropped.
    """
    pairs = pairs.long().reshape(2, -1)
    loops = pairs[0] == pairs[1]
    kept = pairs[:, ~loops]
    low, high = torch.minimum(kept[0], kept[1]), torch.maximum(kept[0], kept[1])
    keys = torch.unique(low * num_nodes + high)
    low, high = keys // num_nodes, keys % num_nodes
    both = torch.cat([torch.stack([low, high]), torch.stack([high, low])], dim=1)
    order = torch.argsort(both[0] * num_nodes + both[1])
    return both[:, order], int(loops.sum()), kept.size(1) - keys.numel()


def _common_neighbours(edge_index: Tensor, num_nodes: int) -> Tensor:
    """For every edge ``(u, v)`` of a sorted undirected edge index, the number of common neighbours of u and v:
    ``(A @ A)[u, v]`` on small graphs (dense ones, such as a connectome, would make the lookup slow), else each
    neighbour ``w`` of ``u`` is looked up as an edge ``(v, w)`` (work: the sum of squared degrees)."""
    row, col = edge_index
    if num_nodes <= DENSE_TRIANGLES_MAX:
        adjacency = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
        adjacency[row, col] = 1
        return (adjacency @ adjacency)[row, col]
    degree = torch.bincount(row, minlength=num_nodes)
    first = torch.cumsum(degree, 0) - degree  # where each node's neighbours start in ``col``
    counts = degree[row]
    edge_of = torch.repeat_interleave(torch.arange(row.numel()), counts)
    offset = torch.arange(int(counts.sum())) - (torch.cumsum(counts, 0) - counts)[edge_of]
    third = col[first[row[edge_of]] + offset]
    keys = row * num_nodes + col
    wanted = col[edge_of] * num_nodes + third
    found = keys[torch.searchsorted(keys, wanted).clamp(max=keys.numel() - 1)] == wanted
    return torch.zeros(row.numel(), dtype=torch.float64).index_add_(0, edge_of, found.double())


def structural_features(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Per-node structure, the features of graphs that bring none (columns :data:`STRUCTURAL_FEATURES`).

    ``log(1 + degree)``, the local clustering coefficient (0 below degree 2), ``log(1 + mean neighbour degree)``
    (0 for isolated nodes) and ``log(1 + triangles through the node)``: the quantities networkx's ``degree``,
    ``clustering``, ``average_neighbor_degree`` and ``triangles`` compute.

    Args:
        edge_index: an undirected edge index (both directions, no self-loops, no duplicates).
        num_nodes: the number of nodes.

    Returns:
        float32 ``[num_nodes, 4]``.
    """
    row, col = edge_index[:, torch.argsort(edge_index[0] * num_nodes + edge_index[1])]
    degree = torch.bincount(row, minlength=num_nodes).double()
    neighbour_sum = torch.zeros(num_nodes, dtype=torch.float64).index_add_(0, row, degree[col])
    mean_neighbour = neighbour_sum / degree.clamp(min=1)
    common = _common_neighbours(torch.stack([row, col]), num_nodes)
    triangles = torch.zeros(num_nodes, dtype=torch.float64).index_add_(0, row, common) / 2
    pairs = degree * (degree - 1)
    clustering = torch.where(pairs > 0, 2 * triangles / pairs.clamp(min=1), torch.zeros_like(pairs))
    return torch.stack([degree.log1p(), clustering, mean_neighbour.log1p(), triangles.log1p()], dim=1).float()


def align_features(x: Tensor, d: int) -> Tensor:
    """Project features onto the top-``d`` right singular vectors of the centred features, so graphs with any
    feature width meet the models at width ``d``.

    Each singular vector's sign makes its largest-magnitude entry positive (deterministic); with fewer than ``d``
    singular vectors (``F < d`` or ``N < d``) the missing columns are zeros. The SVD is exact while ``N`` or ``F``
    is at most :data:`EXACT_SVD_MAX`, and randomized with a fixed seed above (a CiteSeer-sized exact SVD takes
    about a minute on two cores).

    Args:
        x: ``[N, F]`` node features.
        d: the output width.

    Returns:
        float32 ``[N, d]``.
    """
    check_arg(isinstance(d, int) and d >= 1, "d", d, "a positive int")
    if x.numel() == 0:
        return torch.zeros(x.size(0), d)
    centred = x.double() - x.double().mean(dim=0)
    if min(centred.shape) <= EXACT_SVD_MAX:
        basis = torch.linalg.svd(centred, full_matrices=False)[2][:d].T  # [F, k]
    else:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            basis = torch.svd_lowrank(centred, q=d + SVD_OVERSAMPLE, niter=SVD_POWER_ITERATIONS)[2][:, :d]
    largest = basis.abs().argmax(dim=0)
    basis = basis * torch.sign(basis[largest, torch.arange(basis.size(1))])
    projected = centred @ basis
    return torch.nn.functional.pad(projected, (0, d - projected.size(1))).float()


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, stripped fields) of every row of a CSV file but blank and ``#`` lines."""
    if not path.is_file():
        raise ZooValueError(f"{path} does not exist")
    rows = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            for row in reader:
                fields = [field.strip() for field in row]
                if any(fields) and not fields[0].startswith("#"):
                    rows.append((reader.line_num, fields))
        except UnicodeDecodeError as err:
            raise ZooValueError(f"{path}: not UTF-8 text (byte {err.start} of a read block); expected a CSV file") from None
    return rows


def _text(path: Path) -> str:
    """A text file's content; a file that is not UTF-8 text is an input error, not a crash."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ZooValueError(f"{path}: not UTF-8 text (byte {err.start}); expected a text file") from None


def _number(path: Path, line: int, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ZooValueError(f"{path} line {line}: {name}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise ZooValueError(f"{path} line {line}: {name}={text!r}; expected a finite number")
    return value


def _read_nodes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Node ids, label texts (``""`` = unlabelled) and ``[N, F]`` features of a nodes CSV."""
    rows = _csv_rows(path)
    if not rows:
        raise ZooValueError(f"{path} is empty; expected a header 'node[,label][,features...]' and one row per node")
    header_line, header = rows[0]
    if header[0].lower() != "node":
        raise ZooValueError(f"{path} line {header_line}: header {','.join(header)!r} must start with 'node' "
                            "(node[,label][,features...])")
    if len(rows) == 1:
        raise ZooValueError(f"{path} has a header but no nodes")
    has_label = len(header) > 1 and header[1].lower() == "label"
    feature_names = header[1 + has_label:]
    ids: list[str] = []
    labels: list[str] = []
    features: list[list[float]] = []
    first_line: dict[str, int] = {}
    for line, fields in rows[1:]:
        if len(fields) != len(header):
            raise ZooValueError(f"{path} line {line}: {len(fields)} fields; expected {len(header)} like the header")
        node = fields[0]
        if not node:
            raise ZooValueError(f"{path} line {line}: empty node id")
        if node in first_line:
            raise ZooValueError(f"{path} line {line}: node {node!r} repeats line {first_line[node]}")
        first_line[node] = line
        ids.append(node)
        labels.append(fields[1] if has_label else "")
        features.append([_number(path, line, name, text) for name, text in zip(feature_names, fields[1 + has_label:])])
    return ids, labels, np.asarray(features, dtype=np.float64).reshape(len(ids), len(feature_names))


def _numbered_labels(labels: Sequence[str]) -> tuple[Tensor, list[str]]:
    """``y`` (``-1`` for ``""``) and the class names in label order: numeric order when all are integers."""
    names = {label for label in labels if label}
    try:
        classes = sorted(names, key=int)
    except ValueError:
        classes = sorted(names)
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index.get(label, -1) for label in labels], dtype=torch.long), classes


def read_edge_list(edges_csv: PathLike, nodes_csv: PathLike | None = None) -> tuple[Data, list[str]]:
    """A user's graph from an edges CSV and an optional nodes CSV (formats in the module docstring).

    Args:
        edges_csv: ``source,target`` rows of node ids.
        nodes_csv: ``node[,label][,features...]`` with a header; every edge must name one of its nodes.

    Returns:
        ``(data, notes)``: the graph (``node_ids``, ``classes`` and ``num_classes`` attached) and one-line notes
        on what was dropped or filled in, for the CLI to print.

    Raises:
        ZooValueError: a missing or empty file, a ragged row, an empty or repeated node id, an edge naming a node
            absent from the nodes file, a non-numeric or non-finite feature.
    """
    edges_path = Path(edges_csv)
    nodes_path = Path(nodes_csv) if nodes_csv is not None else None
    if nodes_path is not None:
        ids, labels, features = _read_nodes(nodes_path)
    else:
        ids, labels, features = [], [], None
    index = {node: i for i, node in enumerate(ids)}
    rows = _csv_rows(edges_path)
    if not rows:
        raise ZooValueError(f"{edges_path} is empty; expected rows 'source,target'")
    if tuple(field.lower() for field in rows[0][1]) == EDGE_HEADER:
        rows = rows[1:]
        if not rows:
            raise ZooValueError(f"{edges_path} has a header but no edges")
    pairs = []
    for line, fields in rows:
        if len(fields) != 2:
            raise ZooValueError(f"{edges_path} line {line}: {len(fields)} fields; expected 2 (source,target)")
        for node in fields:
            if not node:
                raise ZooValueError(f"{edges_path} line {line}: empty node id")
            if node not in index:
                if nodes_path is not None:
                    raise ZooValueError(f"{edges_path} line {line}: node {node!r} is not in {nodes_path}")
                index[node] = len(ids)
                ids.append(node)
                labels.append("")
        pairs.append((index[fields[0]], index[fields[1]]))
    num_nodes = len(ids)
    edge_index, loops, duplicates = undirected_edges(torch.tensor(pairs).T, num_nodes)
    notes = []
    dropped = [f"{loops} self-loop{'s' * (loops != 1)}"] * bool(loops)
    dropped += [f"{duplicates} duplicate edge{'s' * (duplicates != 1)}"] * bool(duplicates)
    if dropped:
        notes.append("dropped " + ", ".join(dropped))
    isolated = num_nodes - int(torch.unique(edge_index[0]).numel())
    if isolated:
        notes.append(f"{isolated} of {num_nodes} nodes have no edges")
    if features is None or features.shape[1] == 0:
        x = structural_features(edge_index, num_nodes)
        notes.append(f"no node features: x = structural features ({', '.join(STRUCTURAL_FEATURES)})")
    else:
        x = torch.from_numpy(features).float()
    y, classes = _numbered_labels(labels)
    unlabelled = int((y < 0).sum())
    if unlabelled:
        notes.append(f"{unlabelled} of {num_nodes} nodes unlabelled")
    data = Data(x=x, edge_index=edge_index, y=y, num_classes=len(classes))
    data.node_ids, data.classes = ids, classes
    return data, notes


class _CsrMatrix:
    """Stands in for scipy's ``csr_matrix`` while unpickling: pickle fills ``__dict__`` with the matrix's arrays."""

    def dense(self, path: Path) -> np.ndarray:
        state = self.__dict__
        shape = state.get("_shape", state.get("shape"))
        try:
            rows, cols = (int(n) for n in shape)
            indptr, indices = (np.asarray(state[key], dtype=np.int64) for key in ("indptr", "indices"))
            values = np.asarray(state["data"], dtype=np.float64)
            out = np.zeros((rows, cols), dtype=np.float64)
            np.add.at(out, (np.repeat(np.arange(rows), np.diff(indptr)), indices), values)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise ZooValueError(f"{path} holds a malformed CSR matrix ({error})") from None
        return out


def _pickle_names() -> dict[tuple[str, str], object]:
    # numpy moved ``numpy.core`` to ``numpy._core`` in 2.0; reduce() hands back whichever this numpy has.
    reconstruct = np.zeros(0).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    names: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                            ("collections", "defaultdict"): defaultdict,
                                            ("__builtin__", "list"): list, ("builtins", "list"): list}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        names[module, "_reconstruct"], names[module, "scalar"] = reconstruct, scalar
    for module in ("scipy.sparse.csr", "scipy.sparse._csr", "scipy.sparse"):
        names[module, "csr_matrix"] = _CsrMatrix
    return names


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only the numpy, CSR, defaultdict and list objects a Planetoid file holds."""

    def __init__(self, file, path: Path) -> None:  # noqa: ANN001 - a binary file object
        super().__init__(file, encoding="latin1")  # the files were written by Python 2
        self.path, self.names = path, _pickle_names()

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.names:
            raise ZooValueError(f"{self.path} refuses to unpickle {module}.{name}; a Planetoid file holds only numpy "
                                "arrays, a scipy CSR matrix and a dict of lists")
        return self.names[module, name]


def _unpickle(path: Path) -> object:
    if not path.is_file():
        raise ZooValueError(f"{path} does not exist; a Planetoid folder holds ind.<name>.{{{','.join(PLANETOID_FILES)}}}")
    with path.open("rb") as handle:
        try:
            return _RestrictedUnpickler(handle, path).load()
        except ZooValueError:
            raise
        except Exception as error:  # any failure to decode is a bad file
            raise ZooValueError(f"{path} is not a readable Planetoid pickle ({type(error).__name__}: {error})") from None


def _matrix(path: Path) -> np.ndarray:
    value = _unpickle(path)
    if isinstance(value, _CsrMatrix):
        value = value.dense(path)
    if not isinstance(value, np.ndarray) or value.ndim != 2 or value.dtype.kind not in "biuf":
        raise ZooValueError(f"{path} holds {type(value).__name__}; expected a numeric 2-D matrix")
    return value.astype(np.float64)


def _graph_pairs(path: Path, num_nodes: int) -> Tensor:
    graph = _unpickle(path)
    if not isinstance(graph, dict):
        raise ZooValueError(f"{path} holds {type(graph).__name__}; expected a dict of adjacency lists")
    pairs = []
    for node, neighbours in graph.items():
        if not isinstance(neighbours, list) or not all(isinstance(n, int) for n in [node, *neighbours]):
            raise ZooValueError(f"{path}: node {node!r} has neighbours {neighbours!r}; expected a list of ints")
        pairs += [(node, neighbour) for neighbour in neighbours]
    pairs_tensor = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T
    if pairs_tensor.numel() and (pairs_tensor.min() < 0 or pairs_tensor.max() >= num_nodes):
        raise ZooValueError(f"{path} names node {int(pairs_tensor.max())}; the features hold {num_nodes} nodes")
    return pairs_tensor


def _test_index(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ZooValueError(f"{path} does not exist; a Planetoid folder holds ind.<name>.{{{','.join(PLANETOID_FILES)}}}")
    values = []
    for line, text in enumerate(_text(path).splitlines(), 1):
        if text.strip():
            try:
                values.append(int(text))
            except ValueError:
                raise ZooValueError(f"{path} line {line}: {text!r} is not a node index") from None
    if not values:
        raise ZooValueError(f"{path} is empty; expected one test node index a line")
    return np.asarray(values, dtype=np.int64)


def read_planetoid(root: PathLike, name: str) -> Data:
    """A Planetoid citation graph (Cora, CiteSeer, PubMed) from its raw ``ind.<name>.*`` files, with the standard
    split: train = the ``len(ind.<name>.y)`` first nodes (20 per class), validation = the next 500, test = the
    nodes of ``test.index``.

    As in PyG's reader, features and labels are ``allx``/``ally`` followed by ``tx``/``ty`` reordered by
    ``test.index``; when the test indices leave gaps (CiteSeer's isolated nodes, absent from ``tx``), zero rows
    fill them. Unlike PyG, a node whose one-hot label row is all zeros is unlabelled (``y = -1``) instead of
    class 0, and the edges are symmetrised.

    Args:
        root: the folder holding the files.
        name: the file prefix (case-insensitive), e.g. ``"cora"``.

    Returns:
        ``Data`` with ``train_mask``, ``val_mask``, ``test_mask`` and ``num_classes``.

    Raises:
        ZooValueError: a missing or unreadable file, a pickled name outside the format, inconsistent sizes.
    """
    folder, prefix = Path(root), name.lower()
    paths = {part: folder / f"ind.{prefix}.{part}" for part in PLANETOID_FILES}
    x_train, tx, allx, y_train, ty, ally = (_matrix(paths[part]) for part in ("x", "tx", "allx", "y", "ty", "ally"))
    test_index = _test_index(paths["test.index"])
    if len(tx) != len(test_index) or len(ty) != len(tx) or len(ally) != len(allx):
        raise ZooValueError(f"{folder}: {len(tx)} rows in tx, {len(ty)} in ty, {len(test_index)} test indices, "
                            f"{len(allx)} rows in allx and {len(ally)} in ally; expected tx, ty and test.index alike "
                            "and allx, ally alike")
    if len(y_train) + PLANETOID_VAL > len(allx) or x_train.shape[1] != allx.shape[1]:
        raise ZooValueError(f"{folder}: x holds {x_train.shape} and allx {allx.shape}; expected the training "
                            f"rows plus {PLANETOID_VAL} validation rows within allx, with its width")
    sorted_index = np.sort(test_index)
    span = int(sorted_index[-1] - sorted_index[0]) + 1
    if span > len(tx):  # isolated test nodes missing from tx and ty: zero rows
        tx_full, ty_full = np.zeros((span, tx.shape[1])), np.zeros((span, ty.shape[1]))
        tx_full[sorted_index - sorted_index[0]], ty_full[sorted_index - sorted_index[0]] = tx, ty
        tx, ty = tx_full, ty_full
    features, one_hot = np.concatenate([allx, tx]), np.concatenate([ally, ty])
    num_nodes = len(features)
    if sorted_index[0] < 0 or sorted_index[-1] >= num_nodes:
        raise ZooValueError(f"{paths['test.index']} holds indices {sorted_index[0]}..{sorted_index[-1]}; "
                            f"the graph has {num_nodes} nodes")
    features[test_index], one_hot[test_index] = features[sorted_index], one_hot[sorted_index]
    y = torch.from_numpy(np.where(one_hot.any(axis=1), one_hot.argmax(axis=1), -1))
    edge_index, _, _ = undirected_edges(_graph_pairs(paths["graph"], num_nodes), num_nodes)
    masks = torch.zeros(3, num_nodes, dtype=torch.bool)
    masks[0, :len(y_train)] = True
    masks[1, len(y_train):len(y_train) + PLANETOID_VAL] = True
    masks[2, torch.from_numpy(test_index)] = True
    return Data(x=torch.from_numpy(features).float(), edge_index=edge_index, y=y, train_mask=masks[0],
                val_mask=masks[1], test_mask=masks[2], num_classes=one_hot.shape[1])


def _read_table(path: Path, kind: type, required: bool = True) -> np.ndarray | None:
    """Rows of comma-separated numbers (TU files), ``[rows, columns]``; None for a missing optional file."""
    if not path.is_file():
        if required:
            raise ZooValueError(f"{path} does not exist")
        return None
    rows: list[list[float]] = []
    for line, text in enumerate(_text(path).splitlines(), 1):
        if not text.strip():
            continue
        fields = [field.strip() for field in text.split(",")]
        if rows and len(fields) != len(rows[0]):
            raise ZooValueError(f"{path} line {line}: {len(fields)} fields; expected {len(rows[0])} like line 1")
        try:
            rows.append([kind(field) for field in fields])
        except ValueError:
            raise ZooValueError(f"{path} line {line}: {text.strip()!r} is not {kind.__name__} numbers") from None
        if kind is float and not all(math.isfinite(v) for v in rows[-1]):
            raise ZooValueError(f"{path} line {line}: {text.strip()!r}; expected finite numbers")
    if not rows:
        raise ZooValueError(f"{path} is empty")
    return np.asarray(rows, dtype=np.int64 if kind is int else np.float64)


def read_tu(root: PathLike, name: str) -> list[Data]:
    """The graphs of a TU Dortmund data set in its text format, with PyG's ``TUDataset`` conventions.

    Files ``<name>_A.txt`` (1-based ``i, j`` node pairs), ``_graph_indicator.txt`` (a node's graph, nodes grouped
    by graph in order 1, 2, ...) and ``_graph_labels.txt`` are required; ``_node_attributes.txt`` and
    ``_node_labels.txt`` (one-hot encoded per column from the smallest label) are optional and form ``x`` in that
    order (PyG's ``use_node_attr=True``); without both, ``x`` holds :func:`structural_features`. Graph labels are
    numbered in sorted order. Edge files' labels and attributes are not read; edges are symmetrised.

    Args:
        root: the folder holding the files.
        name: the files' prefix, e.g. ``"MUTAG"``.

    Returns:
        One ``Data`` per graph, ``y`` of shape ``[1]`` and ``num_classes`` set.

    Raises:
        ZooValueError: a missing or empty required file, ragged or non-numeric rows, row counts that disagree,
            a node index out of range, an edge joining two graphs, graphs out of order.
    """
    folder = Path(root)
    path = {part: folder / f"{name}_{part}.txt" for part in ("A", "graph_indicator", "graph_labels",
                                                             "node_labels", "node_attributes")}
    edges, indicator, graph_labels = (_read_table(path[part], int) for part in ("A", "graph_indicator",
                                                                                "graph_labels"))
    node_labels = _read_table(path["node_labels"], int, required=False)
    attributes = _read_table(path["node_attributes"], float, required=False)
    if edges.shape[1] != 2 or indicator.shape[1] != 1 or graph_labels.shape[1] != 1:
        raise ZooValueError(f"{folder}: {name}_A.txt needs 2 columns, {name}_graph_indicator.txt and "
                            f"{name}_graph_labels.txt 1 each")
    graph_of = indicator[:, 0] - 1
    num_nodes = len(graph_of)
    steps = np.diff(graph_of)
    if graph_of[0] != 0 or ((steps != 0) & (steps != 1)).any():
        line = 1 if graph_of[0] != 0 else int(np.flatnonzero((steps != 0) & (steps != 1))[0]) + 2
        raise ZooValueError(f"{path['graph_indicator']} line {line}: graph {graph_of[line - 1] + 1} out of order; "
                            "expected nodes grouped by graph, graphs numbered 1, 2, ... in order")
    num_graphs = int(graph_of[-1]) + 1
    if len(graph_labels) != num_graphs:
        raise ZooValueError(f"{path['graph_labels']} has {len(graph_labels)} labels; expected {num_graphs}, one per "
                            "graph of the graph indicator")
    for part, table in (("node_labels", node_labels), ("node_attributes", attributes)):
        if table is not None and len(table) != num_nodes:
            raise ZooValueError(f"{path[part]} has {len(table)} rows; expected {num_nodes}, one per node")
    pairs = edges - 1
    bad = np.flatnonzero(((pairs < 0) | (pairs >= num_nodes)).any(axis=1))
    if len(bad):
        raise ZooValueError(f"{path['A']} line {bad[0] + 1}: node {edges[bad[0]].tolist()} outside 1..{num_nodes}")
    crossing = np.flatnonzero(graph_of[pairs[:, 0]] != graph_of[pairs[:, 1]])
    if len(crossing):
        first = pairs[crossing[0]]
        raise ZooValueError(f"{path['A']} line {crossing[0] + 1}: edge {edges[crossing[0]].tolist()} joins graphs "
                            f"{graph_of[first[0]] + 1} and {graph_of[first[1]] + 1}")
    columns = [] if attributes is None else [attributes]
    if node_labels is not None:
        shifted = node_labels - node_labels.min(axis=0)
        columns += [np.eye(int(column.max()) + 1)[column] for column in shifted.T]
    x_all = torch.from_numpy(np.concatenate(columns, axis=1)).float() if columns else None
    classes, y = np.unique(graph_labels[:, 0], return_inverse=True)
    starts = np.searchsorted(graph_of, np.arange(num_graphs + 1))
    pairs = pairs[np.argsort(graph_of[pairs[:, 0]], kind="stable")]
    edge_starts = np.searchsorted(graph_of[pairs[:, 0]], np.arange(num_graphs + 1))
    graphs = []
    for g in range(num_graphs):
        size = int(starts[g + 1] - starts[g])
        local = torch.from_numpy(pairs[edge_starts[g]:edge_starts[g + 1]] - starts[g]).T
        edge_index, _, _ = undirected_edges(local, size)
        x = x_all[starts[g]:starts[g + 1]] if x_all is not None else structural_features(edge_index, size)
        graphs.append(Data(x=x, edge_index=edge_index, y=torch.tensor([int(y[g])]), num_classes=len(classes)))
    return graphs
