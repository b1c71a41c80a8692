"""Real graphs that need no download, for the graph task's transfer boards: networkx's karate club and graph atlas,
the larval Drosophila mushroom-body connectome and the 32 mouse DTI connectomes shipped in graspologic's wheel, and
pykeen's three small knowledge graphs (UMLS, Kinships, Nations), all as PyG ``Data`` in the conventions of
:mod:`.formats`.

None of them brings node features a model could transfer, so ``x`` holds :func:`.formats.structural_features`
(log degree, clustering, log mean neighbour degree, log triangles); the Drosophila connectome adds its log in- and
out-synapse counts, the mouse connectomes the log anatomy of each brain region and its log fibre strength. One-hot
node ids would only name nodes, which means nothing in another graph.

Graph atlas classes (:data:`ATLAS_CLASSES`), from networkx's ``is_forest``, ``is_bipartite`` and ``triangles``,
checked in order: 0 ``forest`` (acyclic, edgeless graphs included), 1 ``bipartite_cycle`` (bipartite with a cycle,
so every cycle even), 2 ``triangle`` (contains a triangle), 3 ``odd_cycle`` (an odd cycle of length 5 or 7 but no
triangle). Over the 1,251 atlas graphs of 2 to 7 nodes they hold 78, 70, 1,080 and 23 graphs.
"""

from __future__ import annotations

import csv
from pathlib import Path

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from zoo.carriers import carrier_file
from zoo.errors import ZooValueError, check_arg

from .formats import structural_features, undirected_edges

KARATE_CLUBS = ("Mr. Hi", "Officer")  # label order of networkx's 'club' attribute
ATLAS_CLASSES = ("forest", "bipartite_cycle", "triangle", "odd_cycle")
DROSOPHILA_SIDES = ("left", "right")
DROSOPHILA_CELL_TYPES = ("I", "K", "O", "P")  # input (MBIN), Kenyon cell, output (MBON), projection neuron
MOUSE_GENOTYPES = ("BTBR", "B6", "CAST", "DBA2")  # BTBR T+ Itpr3tf/J, C57BL/6J, CAST/EiJ, DBA/2J
MOUSE_ANATOMY = ("volume_mm3", "adc", "dwi", "e1", "e2", "e3", "fa", "rd")  # columns of a features CSV, logged
MOUSE_FEATURE_HEADER = ("ROI", "voxels", *MOUSE_ANATOMY)
MOUSE_RIGHT_ROI = 1000  # a right-hemisphere region's ROI number in the features CSVs: 1000 + its atlas ROI
KNOWLEDGE_GRAPHS = ("umls", "kinships", "nations")
KG_SPLITS = ("train", "valid", "test")


def _from_networkx(graph: nx.Graph) -> tuple[Tensor, int]:
    """The undirected edge index of a graph whose nodes are ``0 .. n - 1``."""
    num_nodes = graph.number_of_nodes()
    pairs = torch.tensor(list(graph.edges()), dtype=torch.long).reshape(-1, 2).T
    return undirected_edges(pairs, num_nodes)[0], num_nodes


def karate() -> Data:
    """Zachary's karate club: 34 members, 78 friendships, label = the club a member joined after the split
    (0 ``"Mr. Hi"``, 1 ``"Officer"``, 17 each); ``x`` = structural features. Friendship weights are dropped."""
    graph = nx.karate_club_graph()
    edge_index, num_nodes = _from_networkx(graph)
    y = torch.tensor([KARATE_CLUBS.index(graph.nodes[v]["club"]) for v in range(num_nodes)])
    return Data(x=structural_features(edge_index, num_nodes), edge_index=edge_index, y=y, num_classes=2)


def atlas_class(graph: nx.Graph) -> int:
    """A graph's class index in :data:`ATLAS_CLASSES` (module docstring)."""
    if nx.is_forest(graph):
        return 0
    if nx.is_bipartite(graph):
        return 1
    if any(nx.triangles(graph).values()):
        return 2
    return 3


def graph_atlas() -> list[Data]:
    """The graphs of networkx's ``graph_atlas_g()`` with at least 2 nodes (1,251 graphs of 2 to 7 nodes), each
    with ``y`` = ``[atlas_class]``, ``num_classes`` = 4, ``atlas_index`` (its position in the atlas) and
    structural ``x``."""
    graphs = []
    for index, graph in enumerate(nx.graph_atlas_g()):
        if graph.number_of_nodes() < 2:
            continue
        edge_index, num_nodes = _from_networkx(graph)
        graphs.append(Data(x=structural_features(edge_index, num_nodes), edge_index=edge_index,
                           y=torch.tensor([atlas_class(graph)]), num_classes=len(ATLAS_CLASSES),
                           atlas_index=index))
    return graphs


def drosophila(side: str = "left") -> Data:
    """One hemisphere of the larval Drosophila mushroom-body connectome (Eichler et al., Nature 2017), from
    graspologic's shipped CSVs: 209 (left) or 213 (right) neurons labelled by cell type
    (:data:`DROSOPHILA_CELL_TYPES`). The weighted directed synapse counts become unweighted undirected edges.

    Args:
        side: ``"left"`` or ``"right"``.

    Returns:
        ``Data`` with ``x`` = structural features plus ``log(1 + synapses in)`` and ``log(1 + synapses out)``,
        ``y``, ``num_classes`` = 4 and ``classes``.
    """
    check_arg(side in DROSOPHILA_SIDES, "side", side, DROSOPHILA_SIDES)
    adjacency_path = carrier_file("graspologic", f"datasets/drosophila/{side}_adjacency.csv")
    labels_path = carrier_file("graspologic", f"datasets/drosophila/{side}_cell_labels.csv")
    adjacency = np.loadtxt(adjacency_path, dtype=np.int64, ndmin=2)
    cell_types = labels_path.read_text().split()
    num_nodes = len(cell_types)
    if adjacency.shape != (num_nodes, num_nodes) or not set(cell_types) <= set(DROSOPHILA_CELL_TYPES):
        raise ZooValueError(f"{adjacency_path} is {adjacency.shape} for {num_nodes} labels of types "
                            f"{sorted(set(cell_types))}; expected a square matrix and types {DROSOPHILA_CELL_TYPES}")
    edge_index, _, _ = undirected_edges(torch.from_numpy(np.stack(np.nonzero(adjacency))), num_nodes)
    synapses = torch.from_numpy(np.stack([adjacency.sum(axis=0), adjacency.sum(axis=1)], axis=1)).float()
    x = torch.cat([structural_features(edge_index, num_nodes), synapses.log1p()], dim=1)
    y = torch.tensor([DROSOPHILA_CELL_TYPES.index(t) for t in cell_types])
    return Data(x=x, edge_index=edge_index, y=y, num_classes=len(DROSOPHILA_CELL_TYPES),
                classes=list(DROSOPHILA_CELL_TYPES))


def _by_subject(folder: Path, prefix: str, suffix: str) -> dict[str, Path]:
    """Subject id → path of the files in ``folder``, every one named ``<prefix><id><suffix>``."""
    found = {}
    for path in sorted(folder.iterdir()):
        if not (path.name.startswith(prefix) and path.name.endswith(suffix)):
            raise ZooValueError(f"{path} is not named {prefix}<id>{suffix}")
        found[path.name[len(prefix):-len(suffix)]] = path
    return found


def _mouse_anatomy(path: Path, subject: str, rois: np.ndarray) -> np.ndarray:
    """The ``[regions, len(MOUSE_ANATOMY)]`` anatomy of one features CSV, rows in the order of ``rois``."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    run = rows[0][2] if rows and len(rows[0]) > 2 else None
    header = tuple(rows[2]) if len(rows) > 2 else ()
    if run != f"N{subject}" or header != MOUSE_FEATURE_HEADER:
        raise ZooValueError(f"{path}: line 1 names run {run} and line 3 holds {list(header)}; expected run "
                            f"N{subject} and the header {','.join(MOUSE_FEATURE_HEADER)}")
    table = np.asarray(rows[3:], dtype=np.float64)
    kept = table[table[:, 0] != 0]  # ROI 0 is everything outside the labelled regions
    if not np.array_equal(kept[:, 0], rois) or (kept[:, 2:] <= 0).any():
        half = len(rois) // 2
        raise ZooValueError(f"{path} holds ROIs {kept[:, 0].astype(int).tolist()[:3]}...; expected positive anatomy "
                            f"for ROIs 1..{half} and {MOUSE_RIGHT_ROI + 1}..{MOUSE_RIGHT_ROI + half} in that order")
    return kept[:, 2:]


def mouse_connectomes() -> list[Data]:
    """The 32 mouse brain connectomes of Wang et al. (NeuroImage 2020) from graspologic's shipped files, one graph
    per mouse for genotype classification: 8 mice (4 male, 4 female) of each strain in :data:`MOUSE_GENOTYPES`.

    Nodes are the 332 regions of the symmetric Waxholm-space atlas (``atlas.csv``'s 166 regions, left hemisphere
    first as in ``blocks.csv``); node ``v`` is atlas ROI ``v % 166 + 1``, numbered ``1000 +`` that on the right
    in the features CSVs. Edges are the DTI tractography pairs of ``edgelists/sub-<id>_ses-1_dti.edgelist``
    (``i j fibres``, each pair once), made undirected and unweighted; the fibre counts survive in the strength
    feature.

    Returns:
        Graphs in ``participants.csv`` order, each with ``x`` float32 ``[332, 13]`` = structural features, the
        log of the region's ``volume_mm3, adc, dwi, e1, e2, e3, fa, rd`` (all positive; ``voxels`` is left out,
        being the volume over a constant 45 µm voxel) and ``log(1 + strength)`` (the fibres of the region's edges),
        ``y`` = ``[genotype index]``, ``num_classes`` = 4, ``classes``, ``participant`` (``"sub-<id>"``) and
        ``sex``.

    Raises:
        ZooValueError: the edge lists, feature CSVs and participants do not name the same mice, or a file is not
            in the layout above.
    """
    folder = carrier_file("graspologic", "datasets/mice/participants.csv").parent
    hemisphere = len(carrier_file("graspologic", "datasets/mice/atlas.csv").read_text().strip().splitlines()) - 1
    num_nodes = 2 * hemisphere
    rois = np.concatenate([np.arange(1, hemisphere + 1), MOUSE_RIGHT_ROI + np.arange(1, hemisphere + 1)])
    with (folder / "participants.csv").open(newline="") as handle:
        participants = list(csv.DictReader(handle))
    edge_files = _by_subject(folder / "edgelists", "sub-", "_ses-1_dti.edgelist")
    feature_files = _by_subject(folder / "features", "", ".csv")
    subjects = [row["participant_id"].removeprefix("sub-") for row in participants]
    if not sorted(subjects) == sorted(edge_files) == sorted(feature_files):
        raise ZooValueError(f"{folder}: participants.csv names {len(subjects)} mice, edgelists/ {len(edge_files)} and "
                            f"features/ {len(feature_files)}, differing in "
                            f"{sorted(set(subjects) ^ set(edge_files) | set(subjects) ^ set(feature_files))}; "
                            "expected the same mice in all three")
    graphs = []
    for row, subject in zip(participants, subjects):
        check_arg(row["genotype"] in MOUSE_GENOTYPES, f"{folder}/participants.csv: genotype of {row['participant_id']}",
                  row["genotype"], MOUSE_GENOTYPES)
        path = edge_files[subject]
        table = np.loadtxt(path, ndmin=2)
        ends = table[:, :2].astype(np.int64)
        if table.shape[1] != 3 or ends.min() < 0 or ends.max() >= num_nodes:
            raise ZooValueError(f"{path}: {table.shape[1]} columns, nodes {ends.min()}..{ends.max()}; expected "
                                f"'i j fibres' lines with nodes 0..{num_nodes - 1}")
        edge_index, loops, repeats = undirected_edges(torch.from_numpy(ends.T), num_nodes)
        if loops or repeats:
            raise ZooValueError(f"{path}: {loops} self-loops and {repeats} repeated pairs; expected each pair once")
        strength = np.bincount(ends.ravel(), weights=np.repeat(table[:, 2], 2), minlength=num_nodes)
        anatomy = _mouse_anatomy(feature_files[subject], subject, rois)
        x = torch.cat([structural_features(edge_index, num_nodes), torch.from_numpy(np.log(anatomy)).float(),
                       torch.from_numpy(np.log1p(strength)).float()[:, None]], dim=1)
        graphs.append(Data(x=x, edge_index=edge_index, y=torch.tensor([MOUSE_GENOTYPES.index(row["genotype"])]),
                           num_classes=len(MOUSE_GENOTYPES), classes=list(MOUSE_GENOTYPES),
                           participant=row["participant_id"], sex=row["sex"]))
    return graphs


def _triples(name: str, split: str) -> list[tuple[str, str]]:
    path = carrier_file("pykeen", f"datasets/{name}/{split}.txt")
    pairs = []
    for line, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) != 3:
            raise ZooValueError(f"{path} line {line}: {len(fields)} tab-separated fields; expected head, relation, tail")
        pairs.append((fields[0], fields[2]))
    return pairs


def knowledge_graph(name: str) -> Data:
    """One of pykeen's small knowledge graphs as an untyped entity graph for link prediction.

    Entities are the nodes (sorted by name, kept as ``node_ids``); relations are dropped, so a triple is an
    undirected entity pair. Self-pairs are dropped, and a pair belongs to the first split it occurs in (train,
    valid, test), so no test pair is a training edge under another relation. ``edge_index`` holds the training
    pairs (both directions); ``train_pos``, ``val_pos`` and ``test_pos`` hold each split's pairs once
    (``[2, E]``, smaller index first). ``x`` = structural features of the training graph; ``y`` is all ``-1``
    (no node labels, ``num_classes`` = 0). Pairs (train/valid/test): UMLS 3,105/232/212; Kinships 5,155/158/43
    (the training graph is 96 % dense); Nations 91/0/0 (its training pairs already join all 14 entities), so
    only UMLS is a real link-prediction test.

    Args:
        name: one of :data:`KNOWLEDGE_GRAPHS`.
    """
    check_arg(name in KNOWLEDGE_GRAPHS, "name", name, KNOWLEDGE_GRAPHS)
    splits = {split: _triples(name, split) for split in KG_SPLITS}
    entities = sorted({entity for pairs in splits.values() for pair in pairs for entity in pair})
    index = {entity: i for i, entity in enumerate(entities)}
    num_nodes = len(entities)
    seen = torch.empty(0, dtype=torch.long)
    positives = {}
    for split, pairs in splits.items():
        ends = torch.tensor([(index[h], index[t]) for h, t in pairs], dtype=torch.long).reshape(-1, 2).T
        edge_index, _, _ = undirected_edges(ends, num_nodes)
        once = edge_index[:, edge_index[0] < edge_index[1]]
        keys = once[0] * num_nodes + once[1]
        positives[split] = once[:, ~torch.isin(keys, seen)]
        seen = torch.cat([seen, keys])
    train_edges, _, _ = undirected_edges(positives["train"], num_nodes)
    return Data(x=structural_features(train_edges, num_nodes), edge_index=train_edges,
                y=torch.full((num_nodes,), -1, dtype=torch.long), num_classes=0, node_ids=entities,
                train_pos=positives["train"], val_pos=positives["valid"], test_pos=positives["test"])
