"""The downstream evaluations of a pretrained graph backbone, averaged over seeded few-shot splits.

``lodo``: for each held-out domain, a backbone pretrained on the other domains (same config and seed, pretrained
here) is tuned on ``shots`` labelled nodes per class of the held-out domain and scored on the rest. ``karate``,
``atlas`` and ``link`` adapt the run's own backbone, pretrained on every domain: node classification of the karate
club, graph classification of the graph atlas, link prediction on an unseen LFR graph. ``scratch`` pretrains nothing
and trains a fresh GNN on each task.

Metrics (under ``test/``): ``lodo_acc``/``lodo_f1`` (mean over held-out domains and splits) and ``lodo_acc_<domain>``,
``karate_acc``/``karate_f1``, ``atlas_acc``/``atlas_f1`` (accuracy and macro-F1), ``link_auc`` (ROC-AUC),
``tunable_params`` (parameters the adaptation tunes, prompts and head included, mean over the held-out domains; of
the first evaluation that ran when ``lodo`` did not), ``entropy`` (MoE backbones: usage entropy, in nats, of the
routing of the held-out domains' nodes, mean over domains) and ``max_cos`` (GMoPE: largest ``|cos|`` between two
prompts of the run's backbone after pretraining).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import Any

import lightning as L

from zoo.task import quiet_trainer

from .config import MOE_METHODS, GraphConfig
from .data import GraphDataModule, downstream_graph
from .models import GMoPE, usage_entropy
from .module import Backbone, build_module, needs_fit
from .splits import k_shot_graphs, k_shot_split
from .transfer import GraphInput, Result, classify, predict_links

#: ``trainer.*`` keys a fold's pretraining takes from the run's config (the rest are about logging and devices).
FOLD_TRAINER_KEYS = ("max_epochs", "max_steps", "min_epochs", "min_steps", "limit_train_batches",
                     "gradient_clip_val")


def pretrain(cfg: GraphConfig, domains: list[str]) -> Backbone:
    """A backbone pretrained on ``domains`` as the run's own was (same config, seed and epochs)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = GraphDataModule(cfg, domains)
    module = build_module(cfg, {"dim": cfg.data.dim})
    kwargs = {k: v for k, v in cfg.trainer.items() if k in FOLD_TRAINER_KEYS}
    quiet_trainer(**kwargs).fit(module, dm)
    return module.model.eval()


def _mean(results: list[Result], key: str) -> float:
    return statistics.fmean(r.metrics[key] for r in results)


def _splits(cfg: GraphConfig) -> range:
    return range(cfg.data.splits)


def lodo(cfg: GraphConfig, dm: GraphDataModule) -> tuple[dict[str, float], list[Result]]:
    """Leave-one-domain-out node classification (module docstring)."""
    method, metrics, everything = cfg.model.method, {}, []
    for holdout in cfg.data.holdouts:
        others = [name for name in cfg.data.domains if name != holdout]
        backbone = pretrain(cfg, others) if needs_fit(cfg) else None
        graph = dm.graph(holdout)
        g = GraphInput.nodes(graph, backbone)
        results = []
        for split in _splits(cfg):
            train_idx, test_idx = k_shot_split(graph.y, cfg.data.shots, split)
            results.append(classify(method, backbone, g, graph.y, train_idx, test_idx, int(graph.num_classes),
                                    cfg.model, cfg.train, cfg.seed * 1000 + split))
        metrics[f"lodo_acc_{holdout}"] = _mean(results, "acc")
        everything += results
    metrics["lodo_acc"], metrics["lodo_f1"] = _mean(everything, "acc"), _mean(everything, "f1")
    return metrics, everything


def evaluate(cfg: GraphConfig, trainer: L.Trainer, module: Any, dm: GraphDataModule) -> dict[str, float]:
    """Every downstream evaluation of ``cfg.data.downstream`` (module docstring)."""
    started = time.perf_counter()
    method, data = cfg.model.method, cfg.data
    backbone = module.model.eval() if needs_fit(cfg) else None
    metrics: dict[str, float] = {}
    tunable: dict[str, list[int]] = defaultdict(list)
    entropies: list[float] = []
    if "lodo" in data.downstream:
        found, results = lodo(cfg, dm)
        metrics.update(found)
        tunable["lodo"] = [r.tunable for r in results]
        entropies = [usage_entropy(r.stats["router"]) for r in results[:: data.splits] if "router" in r.stats]
    if "karate" in data.downstream:
        graph = downstream_graph("karate", data.seed, data.dim)
        g = GraphInput.nodes(graph, backbone)
        results = [classify(method, backbone, g, graph.y, *k_shot_split(graph.y, data.karate_shots, split), 2,
                            cfg.model, cfg.train, cfg.seed * 1000 + split) for split in _splits(cfg)]
        metrics["karate_acc"], metrics["karate_f1"] = _mean(results, "acc"), _mean(results, "f1")
        tunable["karate"] = [r.tunable for r in results]
    if "atlas" in data.downstream:
        graphs = downstream_graph("atlas", data.seed, data.dim)
        g = GraphInput.graphs(list(graphs), backbone)
        y = graphs.y
        results = [classify(method, backbone, g, y, *k_shot_graphs(list(graphs), data.atlas_shots, split),
                            int(graphs.y.max()) + 1, cfg.model, cfg.train, cfg.seed * 1000 + split)
                   for split in _splits(cfg)]
        metrics["atlas_acc"], metrics["atlas_f1"] = _mean(results, "acc"), _mean(results, "f1")
        tunable["atlas"] = [r.tunable for r in results]
    if "link" in data.downstream:
        graph = downstream_graph("link", data.seed, data.dim)
        results = [predict_links(method, backbone, graph, data.link_test, cfg.model, cfg.train, cfg.seed * 1000 + split)
                   for split in _splits(cfg)]
        metrics["link_auc"] = _mean(results, "auc")
        tunable["link"] = [r.tunable for r in results]
    first = next(iter(tunable.values()))
    metrics["tunable_params"] = statistics.fmean(first)
    if method in MOE_METHODS and entropies:
        metrics["entropy"] = statistics.fmean(entropies)
    if isinstance(backbone, GMoPE) and backbone.prompts is not None:
        metrics["max_cos"] = backbone.max_prompt_cosine()
    metrics["eval_s"] = time.perf_counter() - started
    return {f"test/{name}": float(value) for name, value in metrics.items()}
