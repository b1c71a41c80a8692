"""Typed config of the graph task: the schema every ``configs/graph/*.yaml`` recipe is validated into. Torch-free, so
a recipe resolves and shows without importing torch or torch-geometric."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.errors import check_arg, check_seed
from zoo.optim import OptimConfig

DOMAINS = ("sbm_homo", "sbm_hetero", "lfr", "geometric")
PRETEXTS = ("graphcl", "link")
ENCODERS = ("gin", "gcn")
#: How a downstream task adapts the pretrained model; ``scratch`` trains a fresh GNN on the shots, nothing pretrained.
METHODS = ("scratch", "finetune", "linear_probe", "gpf", "gpf_plus", "graphprompt", "all_in_one", "dense_prompt",
           "moe_no_prompt", "gmope")
#: The methods whose backbone is the mixture of experts (the others use one GNN).
MOE_METHODS = ("moe_no_prompt", "gmope")
DOWNSTREAM = ("lodo", "karate", "atlas", "link")


@dataclass
class DataConfig:
    """Pretraining domains and downstream evaluations.

    ``domains``: the seeded synthetic domains of :mod:`.synthetic` the model is pretrained on, ``num_nodes`` nodes
    each (None: each domain's own size). ``downstream``: the evaluations after pretraining: ``lodo``
    (leave-one-domain-out: for each domain of ``holdout``, all of ``domains`` by default, a model is pretrained on
    the others and tuned on ``shots`` labelled nodes per class of the held-out one), ``karate`` (Zachary's club,
    ``karate_shots`` per class), ``atlas`` (graph classification of networkx's graph atlas, ``atlas_shots`` graphs
    per class) and ``link`` (link prediction on an unseen LFR graph, ``link_test`` of its edges held out).
    ``splits``: seeded few-shot splits per evaluation, averaged. ``dim``: every graph's features are aligned to
    this width by SVD. ``hops``: the ego-subgraphs that are pretraining's graphs and node-level routing's tokens.
    ``seed``: the data seed (graphs and splits); it stays fixed across a board's seeds, which vary initialisation
    and training order.
    """

    domains: list[str] = field(default_factory=lambda: list(DOMAINS))
    num_nodes: int | None = None
    holdout: list[str] | None = None
    downstream: list[str] = field(default_factory=lambda: list(DOWNSTREAM))
    shots: int = 5
    karate_shots: int = 1
    atlas_shots: int = 10
    link_test: float = 0.2
    splits: int = 5
    dim: int = 32
    hops: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in self.domains:
            check_arg(name in DOMAINS, "data.domains", name, DOMAINS)
        check_arg(len(set(self.domains)) == len(self.domains) and len(self.domains) >= 2, "data.domains",
                  self.domains, "at least two different domains")
        for name in self.holdout or []:
            check_arg(name in self.domains, "data.holdout", name, self.domains)
        for name in self.downstream:
            check_arg(name in DOWNSTREAM, "data.downstream", name, DOWNSTREAM)
        for name in ("shots", "karate_shots", "atlas_shots", "splits", "dim", "hops"):
            value = getattr(self, name)
            check_arg(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"data.{name}", value,
                      "a positive int")
        check_arg(self.num_nodes is None or (isinstance(self.num_nodes, int) and self.num_nodes >= 60),
                  "data.num_nodes", self.num_nodes, "None or an int >= 60")
        check_arg(0 < self.link_test < 1, "data.link_test", self.link_test, "a fraction in (0, 1)")
        check_seed(self.seed, "data.seed")

    @property
    def holdouts(self) -> list[str]:
        """The held-out domains of the ``lodo`` evaluation."""
        return list(self.holdout) if self.holdout is not None else list(self.domains)


@dataclass
class ModelConfig:
    """The pretrained model and how it is adapted.

    ``method``: ``scratch`` (a fresh GNN trained on the shots), ``finetune`` (pretrained GNN and head, everything
    tuned), ``linear_probe`` (a head on frozen embeddings), the single-prompt baselines ``gpf``, ``gpf_plus``,
    ``graphprompt`` and ``all_in_one`` (ProG-style, over one frozen pretrained GNN), ``dense_prompt`` (one GNN as
    wide as ``k`` experts, with one prompt), ``moe_no_prompt`` (the experts and router, head tuning only) or
    ``gmope`` (prompt experts: only the prompts and the head are tuned). ``encoder``: ``gin`` or ``gcn`` with
    ``layers`` layers of ``hidden``. ``num_experts``/``k``: the MoE methods' experts and how many each token (a
    graph or a node's ego-subgraph) uses. ``orth_coef``: weight of the soft orthogonality loss on the prompts (0
    is the ablation). ``balance_coef``: the router's load-balance loss. ``prompt_basis``: GPF-plus's basis prompts
    and All-in-One's prompt tokens.
    """

    method: str = "gmope"
    encoder: str = "gin"
    hidden: int = 64
    layers: int = 2
    num_experts: int = 4
    k: int = 2
    orth_coef: float = 0.1
    balance_coef: float = 0.01
    prompt_basis: int = 4

    def __post_init__(self) -> None:
        check_arg(self.method in METHODS, "model.method", self.method, METHODS)
        check_arg(self.encoder in ENCODERS, "model.encoder", self.encoder, ENCODERS)
        for name in ("hidden", "layers", "num_experts", "k", "prompt_basis"):
            value = getattr(self, name)
            check_arg(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"model.{name}", value,
                      "a positive int")
        check_arg(self.k <= self.num_experts, "model.k", self.k, f"an int in [1, model.num_experts={self.num_experts}]")
        for name in ("orth_coef", "balance_coef"):
            check_arg(getattr(self, name) >= 0, f"model.{name}", getattr(self, name), "a float >= 0")


@dataclass
class TrainConfig:
    """Pretraining and tuning.

    Pretraining (``trainer.max_epochs`` passes over the pretraining graphs' ego-subgraphs, ``batch_size`` a step,
    at ``optim.lr``) minimises the ``pretext``: ``graphcl`` contrasts two views (edges dropped and feature columns
    masked with probability ``augment``) at ``temperature``; ``link`` predicts the ``augment`` share of each
    ego-subgraph's edges held out of message passing against as many sampled non-edges. Tuning takes
    ``tune_steps`` full-batch Adam steps at ``tune_lr`` on a downstream task's shots.
    """

    pretext: str = "graphcl"
    temperature: float = 0.1
    augment: float = 0.2
    batch_size: int = 64
    tune_steps: int = 100
    tune_lr: float = 0.01

    def __post_init__(self) -> None:
        check_arg(self.pretext in PRETEXTS, "train.pretext", self.pretext, PRETEXTS)
        check_arg(self.temperature > 0, "train.temperature", self.temperature, "a float > 0")
        check_arg(0 <= self.augment < 1, "train.augment", self.augment, "a fraction in [0, 1)")
        check_arg(isinstance(self.batch_size, int) and self.batch_size >= 2, "train.batch_size", self.batch_size,
                  "an int >= 2")
        check_arg(isinstance(self.tune_steps, int) and self.tune_steps >= 1, "train.tune_steps", self.tune_steps,
                  "a positive int")
        check_arg(self.tune_lr > 0, "train.tune_lr", self.tune_lr, "a float > 0")


@dataclass
class GraphConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=1e-3))
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 10})
    seed: int = 0
