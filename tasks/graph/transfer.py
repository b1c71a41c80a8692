"""Downstream adaptation: how each method of the board tunes a pretrained backbone on a few labelled examples.

:class:`Adapter` wraps a copy of the pretrained backbone as a method uses it: everything trainable (``finetune``,
and ``scratch`` with a freshly initialised GNN), frozen with a head on top (``linear_probe``, ``moe_no_prompt``),
a ProG prompt over the frozen encoder (``gpf``, ``gpf_plus``, ``graphprompt``, ``all_in_one``), or the frozen
experts with their own prompts trainable (``dense_prompt``, ``gmope``). :func:`classify` tunes it and a linear head
(GraphPrompt: its class prototypes) with full-batch Adam on the labelled nodes or graphs and scores the rest;
:func:`predict_links` tunes it and a linear projection for link prediction on the training edges and scores
held-out edges against sampled non-edges. Routing inputs are computed once per graph and reused by every step.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import negative_sampling
from torchmetrics.functional.classification import binary_auroc, multiclass_accuracy, multiclass_f1_score

from zoo.moe import ExpertStats, total_aux_loss

from .config import ModelConfig, TrainConfig
from .models import GMoPE, route_input
from .module import Backbone, build_backbone
from .pretext import link_loss, link_scores
from .prompts import GPF, AllInOne, GPFPlus, GraphPrompt

PROMPT_BASELINES = ("gpf", "gpf_plus", "graphprompt", "all_in_one")
#: Methods that tune a copy of the backbone with nothing frozen.
TRAIN_ALL = ("scratch", "finetune")


@dataclass
class GraphInput:
    """One downstream input: a graph (``level="node"``: its nodes are the examples) or a batch of graphs
    (``level="graph"``), with the router's input per token when the backbone routes."""

    x: torch.Tensor
    edge_index: torch.Tensor
    level: str
    batch: torch.Tensor | None = None
    num_graphs: int = 1
    route: torch.Tensor | None = None

    @classmethod
    def nodes(cls, graph: Data, model: nn.Module | None, edge_index: torch.Tensor | None = None) -> GraphInput:
        """A node-level input of ``graph`` for ``model`` (optionally with other edges, e.g. link prediction's
        training edges); the router input is computed when ``model`` routes."""
        edges = graph.edge_index if edge_index is None else edge_index
        route = route_input(graph.x, edges, level="node", hops=model.hops) if isinstance(model, GMoPE) else None
        return cls(graph.x, edges, "node", route=route)

    @classmethod
    def graphs(cls, graphs: list[Data], model: nn.Module | None) -> GraphInput:
        """A graph-level input of a list of graphs for ``model``."""
        union = Batch.from_data_list([Data(x=g.x, edge_index=g.edge_index, num_nodes=g.num_nodes) for g in graphs])
        G = len(graphs)
        route = route_input(union.x, union.edge_index, union.batch, "graph", G) if isinstance(model, GMoPE) else None
        return cls(union.x, union.edge_index, "graph", union.batch, G, route)


class Adapter(nn.Module):
    """A copy of a pretrained backbone as ``method`` tunes it (module docstring).

    Args:
        method: one of :data:`~.config.METHODS`.
        backbone: the pretrained backbone (None for ``scratch``).
        cfg: the model config (``scratch``'s fresh GNN, the prompts' sizes).
        d: the feature width.
    """

    def __init__(self, method: str, backbone: Backbone | None, cfg: ModelConfig, d: int) -> None:
        super().__init__()
        self.method = method
        if method == "scratch" or backbone is None:
            self.body: nn.Module = build_backbone(ModelConfig(method="scratch", encoder=cfg.encoder, hidden=cfg.hidden,
                                                              layers=cfg.layers), d)
        elif method in PROMPT_BASELINES:
            encoder = copy.deepcopy(backbone.encoder)
            self.body = {"gpf": lambda: GPF(encoder, d), "gpf_plus": lambda: GPFPlus(encoder, d, cfg.prompt_basis),
                         "graphprompt": lambda: GraphPrompt(encoder),
                         "all_in_one": lambda: AllInOne(encoder, d, cfg.prompt_basis)}[method]()
        else:
            self.body = copy.deepcopy(backbone)
            if method not in TRAIN_ALL:
                self.body.freeze_experts()
        self.out_dim: int = self.body.encoder.out_dim if method in PROMPT_BASELINES else self.body.out_dim

    def forward(self, g: GraphInput) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, ExpertStats]]:
        """Embeddings of the input's examples (nodes or graphs), the aux losses and the routing stats."""
        if self.method in PROMPT_BASELINES:
            out = self.body(g.x, g.edge_index, g.batch, g.num_graphs)
            return (out.nodes if g.level == "node" else out.graphs), {}, {}
        out = self.body(g.x, g.edge_index, g.batch, level=g.level, route_input=g.route, num_graphs=g.num_graphs)
        return (out.nodes if g.level == "node" else out.graphs), out.aux, out.stats

    @property
    def prototypes(self) -> bool:
        """GraphPrompt classifies by class prototypes instead of a head."""
        return self.method == "graphprompt"


@dataclass
class Result:
    """One tuned adaptation's scores: ``metrics`` (accuracy and macro-F1, or ROC-AUC), ``tunable`` parameters,
    and the routing stats of its final pass (MoE backbones)."""

    metrics: dict[str, float]
    tunable: int
    stats: dict[str, ExpertStats] = field(default_factory=dict)


def _tune(adapter: Adapter, head: nn.Module | None, loss_fn: Callable[[], torch.Tensor], cfg: TrainConfig) -> int:
    """Full-batch Adam on every parameter still trainable; returns how many numbers that is."""
    params = [p for p in adapter.parameters() if p.requires_grad]
    if head is not None:
        params += list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.tune_lr)
    for _ in range(cfg.tune_steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()
    return sum(p.numel() for p in params)


def _with_aux(loss: torch.Tensor, aux: dict[str, torch.Tensor]) -> torch.Tensor:
    extra = total_aux_loss(aux)
    return loss if extra is None else loss + extra


class Classifier(nn.Module):
    """An adapted backbone with its head (or GraphPrompt's prototypes of the labelled examples ``train_idx``)."""

    def __init__(self, adapter: Adapter, num_classes: int, train_idx: torch.Tensor, y_train: torch.Tensor) -> None:
        super().__init__()
        self.adapter, self.num_classes = adapter, num_classes
        self.head = None if adapter.prototypes else nn.Linear(adapter.out_dim, num_classes)
        self.train_idx, self.y_train = train_idx, y_train

    def forward(self, g: GraphInput) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, ExpertStats]]:
        """Logits ``[examples, C]`` of every example of ``g``, the aux losses and the routing stats."""
        embeddings, aux, stats = self.adapter(g)
        if self.head is not None:
            return self.head(embeddings), aux, stats
        prototypes = GraphPrompt.prototypes(embeddings[self.train_idx], self.y_train, self.num_classes)
        return self.adapter.body.logits(embeddings, prototypes), aux, stats


def tune_classifier(
    method: str, backbone: Backbone | None, g: GraphInput, y: torch.Tensor, train_idx: torch.Tensor,
    num_classes: int, model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int,
) -> tuple[Classifier, int]:
    """Tune ``method`` and a head on the labelled examples ``train_idx`` of ``g``.

    Args:
        method: the adaptation.
        backbone: the pretrained backbone (None for ``scratch``).
        g: the input; its examples are nodes or graphs by ``g.level``.
        y: ``[examples]`` labels (only ``y[train_idx]`` is read).
        train_idx: the labelled examples.
        num_classes: C.
        model_cfg: the model config.
        train_cfg: the tuning steps and learning rate.
        seed: initialises the head and the fresh GNN of ``scratch``.

    Returns:
        the tuned classifier and how many parameters were tuned.
    """
    torch.manual_seed(seed)
    y_train = y[train_idx]
    classifier = Classifier(Adapter(method, backbone, model_cfg, g.x.shape[1]), num_classes, train_idx, y_train)

    def loss() -> torch.Tensor:
        logits, aux, _ = classifier(g)
        return _with_aux(F.cross_entropy(logits[train_idx], y_train), aux)

    return classifier, _tune(classifier.adapter, classifier.head, loss, train_cfg)


def classify(
    method: str, backbone: Backbone | None, g: GraphInput, y: torch.Tensor, train_idx: torch.Tensor,
    test_idx: torch.Tensor, num_classes: int, model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int,
) -> Result:
    """:func:`tune_classifier` on ``train_idx``, then accuracy and macro-F1 (torchmetrics) of ``test_idx``."""
    classifier, tunable = tune_classifier(method, backbone, g, y, train_idx, num_classes, model_cfg, train_cfg, seed)
    with torch.no_grad():
        logits, _, stats = classifier(g)
    pred, target = logits.argmax(-1)[test_idx], y[test_idx]
    metrics = {"acc": float(multiclass_accuracy(pred, target, num_classes, average="micro")),
               "f1": float(multiclass_f1_score(pred, target, num_classes, average="macro"))}
    return Result(metrics, tunable, stats)


def edge_split(graph: Data, share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out ``share`` of an undirected graph's edges, with as many non-edges, for link prediction.

    Returns:
        the training edges (both directions), the held-out edges and the sampled non-edges (one direction each).
    """
    generator = torch.Generator().manual_seed(seed)
    src, dst = graph.edge_index
    upper = graph.edge_index[:, src < dst]
    order = torch.randperm(upper.shape[1], generator=generator)
    count = max(1, round(share * upper.shape[1]))
    test, train = upper[:, order[:count]], upper[:, order[count:]]
    state = random.getstate()  # PyG samples non-edges with Python's random module
    random.seed(seed)
    try:
        negatives = negative_sampling(graph.edge_index, num_nodes=graph.num_nodes, num_neg_samples=count)
    finally:
        random.setstate(state)
    return torch.cat([train, train.flip(0)], 1), test, negatives


def predict_links(
    method: str, backbone: Backbone | None, graph: Data, share: float, model_cfg: ModelConfig,
    train_cfg: TrainConfig, seed: int,
) -> Result:
    """Tune ``method`` for link prediction on ``graph`` with ``share`` of its edges held out (split ``seed``);
    ROC-AUC of the held-out edges against as many non-edges.

    The node embeddings go through a tuned linear projection and are scored by dot product (GraphPrompt: its
    prompted embeddings directly); training pairs are the message-passing edges against fresh non-edges each step.
    """
    train_edges, test_pos, test_neg = edge_split(graph, share, seed)
    torch.manual_seed(seed)
    adapter = Adapter(method, backbone, model_cfg, graph.x.shape[1])
    project = None if adapter.prototypes else nn.Linear(adapter.out_dim, adapter.out_dim)
    g = GraphInput.nodes(graph, adapter.body, train_edges)
    positives = train_edges[:, train_edges[0] < train_edges[1]]

    def embed() -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, ExpertStats]]:
        z, aux, stats = adapter(g)
        return (z if project is None else project(z)), aux, stats

    def loss() -> torch.Tensor:
        z, aux, _ = embed()
        return _with_aux(link_loss(z, positives, graph.num_nodes, known=train_edges), aux)

    tunable = _tune(adapter, project, loss, train_cfg)
    with torch.no_grad():
        z, _, stats = embed()
        scores = link_scores(z, torch.cat([test_pos, test_neg], 1))
    labels = torch.cat([torch.ones(test_pos.shape[1]), torch.zeros(test_neg.shape[1])]).long()
    return Result({"auc": float(binary_auroc(scores, labels))}, tunable, stats)
