"""Test metrics of every recsys row (``TaskSpec.evaluate``), always on the TEST split.

Binary tasks (MovieLens derived tasks, the simulator), per task t over the test rows whose label is defined:

- ``test/auc/<t>``; ``test/gauc/<t>`` (impression-weighted mean of per-user AUCs, :func:`.metrics.gauc`) with
  ``test/gauc_users/<t>`` users used and ``test/gauc_excluded/<t>`` users left out for having one class;
- ``test/mean_auc``, ``test/mean_gauc``: means over the tasks where they are defined; ``test/sparse/mean_auc``
  and ``test/sparse/mean_gauc`` the same over the sparse tasks (positive rate below 5 % in train: the
  simulator's like, comment, forward, follow; absent on MovieLens, whose rarest task, hate, is 6 %);
- the same for long-tail users' rows (``test/longtail/...``, users with at most ``data.long_tail_max`` training
  rows), with ``test/longtail/users`` and ``test/longtail/rows``;
- collapse diagnostics over all test rows, from each model's :class:`~.models.Diagnostics`:
  ``test/zero_act`` = share of expert hidden units that are <= 0 on at least 90 % of the test rows (pooled over
  every expert layer; Shared-Bottom: its bottom layers; a SiLU unit below zero counts as <= 0 too, but HoME's
  BatchNorm centres every unit, so its experts read about 0) and ``test/min_shared_usage`` = min over tasks of
  the mean gate weight on the shared experts (MMoE and the one-gate models: every expert is shared, so 1;
  CGC/PLE: the shared bank of the last level; HoME: the global experts of the task layer);
  ``test/effective_rank`` = the entropy-based effective rank (:func:`.metrics.effective_rank`) of each expert's
  output matrix over every test row ([N, H], not centred; its singular values from the streamed Gram matrix
  AᵀA), averaged over the experts of each expert layer (``test/effective_rank/<layer>``) and over all experts
  of all layers (``test/effective_rank``). A metric a model has no parts for (DIN, Shared-Bottom's gates,
  AW-MoE's FFN expert units) is absent, not NaN.

A task with no positive label in the test split (a sparse task on a small subset) gets NaN AUC/GAUC, a logged
warning, and is counted in ``test/tasks_without_positives``; the means skip it. MMoE synthetic (regression):
``test/mse/<t>`` and ``test/mse_mean`` on the test rows.

Also reported: ``train/best_epoch`` and ``val/best_loss`` (the epoch whose weights were kept) and
``train/epochs`` (validation epochs run: fewer than ``trainer.max_epochs`` when early stopping ended training).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .data import RecsysDataModule
from .metrics import DEAD_SHARE, auc, effective_rank, gauc
from .models import Diagnostics

log = logging.getLogger(__name__)

SPARSE_RATE = 0.05  # a task with fewer positives than this in train is "sparse" (HoME's underfitting claim)


@dataclass
class CollapseCounter:
    """Streams :class:`~.models.Diagnostics` over batches: per expert unit, how many rows it was <= 0 on, per
    expert the Gram matrix of its outputs, and per task the summed gate weight on shared experts, so the
    diagnostics cover every test row without keeping their activations."""

    rows: int = 0
    nonpositive: dict[str, torch.Tensor] = field(default_factory=dict)
    gram: dict[str, torch.Tensor] = field(default_factory=dict)
    shared: list[float] = field(default_factory=list)

    def update(self, diag: Diagnostics, batch_size: int) -> None:
        self.rows += batch_size
        for key, acts_BnH in diag.expert_acts.items():
            count = (acts_BnH <= 0).sum(0)
            self.nonpositive[key] = self.nonpositive[key] + count if key in self.nonpositive else count
            a = acts_BnH.double()
            gram_nHH = torch.einsum("bnh,bnk->nhk", a, a)
            self.gram[key] = self.gram[key] + gram_nHH if key in self.gram else gram_nHH
        if diag.task_gates and diag.shared_experts:
            sums = [float(g[:, diag.shared_experts].sum()) for g in diag.task_gates]
            self.shared = [a + b for a, b in zip(self.shared, sums)] if self.shared else sums

    def zero_activation_ratio(self, dead_share: float = DEAD_SHARE) -> float | None:
        if not self.nonpositive or not self.rows:
            return None
        dead = torch.cat([(c.double() / self.rows >= dead_share).flatten() for c in self.nonpositive.values()])
        return float(dead.double().mean())

    def min_shared_usage(self) -> float | None:
        return min(s / self.rows for s in self.shared) if self.shared and self.rows else None

    def effective_ranks(self) -> dict[str, float]:
        """Per expert layer, the mean over its experts of their outputs' effective rank (σ = the square roots of
        the Gram matrix's eigenvalues), and under ``""`` the mean over every expert; empty without experts."""
        per_layer, every = {}, []
        for key, gram_nHH in self.gram.items():
            sv_nH = torch.linalg.eigvalsh(gram_nHH).clamp_min(0.0).sqrt()
            ranks = [effective_rank(sv) for sv in sv_nH]
            per_layer[key] = float(np.mean(ranks))
            every.extend(ranks)
        return {"": float(np.mean(every)), **per_layer} if every else {}


@dataclass
class SplitScores:
    """Predictions on a split: ``pred[N, T]`` (logits; regression: values), ``labels``, ``mask``, ``user``,
    ``long_tail`` (None for MMoE synthetic) and the collapse counters."""

    pred: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    user: np.ndarray | None
    long_tail: np.ndarray | None
    collapse: CollapseCounter


@torch.no_grad()
def score_split(model: torch.nn.Module, dm: RecsysDataModule, split: str = "test") -> SplitScores:
    """Run ``model`` (in eval mode) over every row of ``split``."""
    was_training = model.training
    model.eval()
    preds, labels, masks, users, tails = [], [], [], [], []
    collapse = CollapseCounter()
    device = next(model.parameters()).device
    for batch in dm.loader(split):
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(batch)
        preds.append(out.pred.float().cpu())
        labels.append(batch["labels"].cpu())
        masks.append(batch["label_mask"].cpu())
        if "user" in batch:
            users.append(batch["user"].cpu())
            tails.append(batch["long_tail"].cpu())
        collapse.update(out.diagnostics, int(batch["labels"].shape[0]))
    model.train(was_training)

    def cat(parts: list[torch.Tensor]) -> np.ndarray | None:
        return torch.cat(parts).numpy() if parts else None

    return SplitScores(cat(preds), cat(labels), cat(masks), cat(users), cat(tails), collapse)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def ranking_metrics(scores: SplitScores, tasks: tuple[str, ...], rows: np.ndarray | None = None,
                    prefix: str = "") -> tuple[dict[str, float], list[str]]:
    """AUC and GAUC per task over ``rows`` (all rows by default), keys ``{prefix}auc/<t>`` etc., and the tasks
    without a positive label there."""
    keep = np.ones(len(scores.pred), bool) if rows is None else rows
    out: dict[str, float] = {}
    aucs, gaucs, no_positive = [], [], []
    for t, task in enumerate(tasks):
        sel = keep & scores.mask[:, t]
        y, s = scores.labels[sel, t], scores.pred[sel, t]
        if not y.any():
            no_positive.append(task)
        a, g = auc(y, s), gauc(scores.user[sel], y, s)
        out[f"{prefix}auc/{task}"], out[f"{prefix}gauc/{task}"] = a, g.value
        out[f"{prefix}gauc_users/{task}"], out[f"{prefix}gauc_excluded/{task}"] = float(g.users), float(g.excluded)
        aucs.append(a)
        gaucs.append(g.value)
    out[f"{prefix}mean_auc"], out[f"{prefix}mean_gauc"] = _nanmean(aucs), _nanmean(gaucs)
    return out, no_positive


def metrics_from_scores(scores: SplitScores, tasks: tuple[str, ...], regression: bool,
                        sparse_tasks: tuple[str, ...] = ()) -> dict[str, float]:
    """The ``test/...`` metrics (without the prefix) of one scored split; ``sparse_tasks`` get their own means."""
    if regression:
        err = (scores.pred - scores.labels) ** 2
        out = {f"mse/{task}": float(err[:, t].mean()) for t, task in enumerate(tasks)}
        out["mse_mean"] = float(err.mean())
    else:
        out, no_positive = ranking_metrics(scores, tasks)
        for task in no_positive:
            log.warning("recsys: task %r has no positive label in the test split; its AUC/GAUC are NaN", task)
        out["tasks_without_positives"] = float(len(no_positive))
        if sparse_tasks:
            out["sparse/mean_auc"] = _nanmean([out[f"auc/{t}"] for t in sparse_tasks])
            out["sparse/mean_gauc"] = _nanmean([out[f"gauc/{t}"] for t in sparse_tasks])
        tail = scores.long_tail
        if tail is not None and tail.any():
            lt, _ = ranking_metrics(scores, tasks, tail, "longtail/")
            out.update(lt)
            out["longtail/users"] = float(len(np.unique(scores.user[tail])))
            out["longtail/rows"] = float(tail.sum())
    zero_act, shared = scores.collapse.zero_activation_ratio(), scores.collapse.min_shared_usage()
    if zero_act is not None:
        out["zero_act"] = zero_act
    if shared is not None:
        out["min_shared_usage"] = shared
    for layer, rank in scores.collapse.effective_ranks().items():
        out[f"effective_rank/{layer}" if layer else "effective_rank"] = rank
    return out


def sparse_tasks(dm: RecsysDataModule) -> tuple[str, ...]:
    """Tasks whose positive rate in the training split is below :data:`SPARSE_RATE` (the simulator's like,
    comment, forward and follow; none of MovieLens's derived tasks)."""
    if dm.regression:
        return ()
    rates = dm.data.label_rates("train")
    return tuple(t for t in dm.tasks if rates[t] < SPARSE_RATE)


def evaluate(cfg, trainer, module, dm: RecsysDataModule) -> dict[str, float]:
    dm.setup("test")
    scores = score_split(module.model, dm, "test")
    metrics = metrics_from_scores(scores, dm.tasks, dm.regression, sparse_tasks(dm))
    out = {f"test/{k}": v for k, v in metrics.items()}
    if getattr(module, "best_epoch", None) is not None:
        out["train/best_epoch"] = float(module.best_epoch)
        out["val/best_loss"] = float(module.best_loss)
    if getattr(module, "epochs_run", 0):
        out["train/epochs"] = float(module.epochs_run)
    return out
