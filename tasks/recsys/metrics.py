"""Recsys metrics: AUC, GAUC, and the two collapse diagnostics HoME is about.

- :func:`auc`: P(score of a positive > score of a negative), ties counting one half (sklearn's
  ``roc_auc_score``).
- :func:`gauc`: ``Σ_u w_u AUC_u / Σ_u w_u`` over the users whose rows hold both classes, ``w_u`` = the user's
  impressions (rows), as in DIN (Zhou et al., KDD 2018) and HoME. Users with one class have no AUC and are left
  out; the result says how many were used and left out, since a sparse task (follow at 0.2 %) may be scored on
  a small share of users.
- :func:`zero_activation_ratio`: share of expert hidden units that are ``<= 0`` on at least 90 % of rows, HoME's
  "expert collapse" (ReLU experts above 90 % dead).
- :func:`min_shared_usage`: the smallest, over tasks, mean gate weight that a task puts on the shared experts,
  HoME's "expert degradation" (shared experts taken by one task).
- :func:`effective_rank`: ``exp(H(σ / Σσ))`` of a matrix's singular values σ (H the Shannon entropy, natural
  log): how many directions an expert's outputs really use, between 1 (rank one) and min(rows, columns) (all
  singular values equal); a collapsed expert has a low one even when its units are not dead.

A split where a task has a single class (a smoke-sized test split without a rare positive) is not an error:
:func:`auc` returns NaN and :func:`gauc` a NaN value with zero users used, so an evaluation loop over tasks goes
on and the report shows the gap. Bad inputs (lengths that differ, labels other than 0/1, non-finite scores) are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from zoo.errors import ZooValueError, check_arg

DEAD_SHARE = 0.9  # a unit is "zero" when it is <= 0 on at least this share of rows


def _numpy(x: Any) -> np.ndarray:
    """An array from numpy, lists or torch tensors (detached and moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _labels_scores(y: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    y, score = _numpy(y).reshape(-1), _numpy(score).astype(np.float64).reshape(-1)
    if len(y) != len(score):
        raise ZooValueError(f"labels and scores differ in length: {len(y)} vs {len(score)}")
    if not np.isin(y, (0, 1)).all():
        raise ZooValueError(f"labels must be 0 or 1, got {np.unique(y[~np.isin(y, (0, 1))])[:5].tolist()}")
    if not np.isfinite(score).all():
        raise ZooValueError(f"{int((~np.isfinite(score)).sum())} scores are NaN or infinite")
    return y.astype(np.int64), score


def auc(y: Any, score: Any) -> float:
    """Area under the ROC curve of ``score`` [N] for binary labels ``y`` [N]; NaN when ``y`` has one class."""
    y, score = _labels_scores(y, score)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, score))


@dataclass(frozen=True)
class GAUC:
    """Impression-weighted mean of per-user AUCs: ``value`` (NaN when no user has both classes), the number of
    users it averages (``users``) and of users left out for having one class (``excluded``)."""

    value: float
    users: int
    excluded: int


def gauc(user: Any, y: Any, score: Any) -> GAUC:
    """Group AUC of ``score`` [N] for labels ``y`` [N], grouped by ``user`` [N] (any hashable ids).

    Per user, AUC = (Σ midranks of the positives − P(P+1)/2) / (P·Q) over that user's P positives and Q
    negatives (ties count one half, as in :func:`auc`); vectorised with one grouped rank.
    """
    y, score = _labels_scores(y, score)
    user = _numpy(user).reshape(-1)
    if len(user) != len(y):
        raise ZooValueError(f"users and labels differ in length: {len(user)} vs {len(y)}")
    if not len(y):
        return GAUC(float("nan"), 0, 0)
    group = pd.factorize(user)[0]
    ranks = pd.Series(score).groupby(group).rank(method="average").to_numpy()
    rows = np.bincount(group)
    pos = np.bincount(group, weights=y)
    neg = rows - pos
    rank_sum = np.bincount(group, weights=ranks * y)
    both = (pos > 0) & (neg > 0)
    per_user = (rank_sum[both] - pos[both] * (pos[both] + 1) / 2) / (pos[both] * neg[both])
    used = int(both.sum())
    value = float(np.average(per_user, weights=rows[both])) if used else float("nan")
    return GAUC(value, used, len(rows) - used)


def zero_activation_ratio(acts: Any, dead_share: float = DEAD_SHARE) -> float:
    """Share of hidden units that are ``<= 0`` on at least ``dead_share`` of the rows.

    Args:
        acts: expert hidden activations (after the activation function), [N, units], or a list of them, one per
            expert (units may differ; rows must not), pooled over all experts' units.
    """
    check_arg(0.0 < dead_share <= 1.0, "dead_share", dead_share, "a share in (0, 1]")
    parts = [_numpy(a) for a in (acts if isinstance(acts, (list, tuple)) else [acts])]
    if not parts or any(p.ndim != 2 for p in parts):
        raise ZooValueError(f"activations must be [N, units] arrays, got shapes {[p.shape for p in parts]}")
    if len({p.shape[0] for p in parts}) > 1 or not parts[0].shape[0]:
        raise ZooValueError(f"every expert's activations need the same, non-zero number of rows, got "
                            f"{[p.shape[0] for p in parts]}")
    dead = np.concatenate([(p <= 0).mean(axis=0) >= dead_share for p in parts])
    return float(dead.mean())


def effective_rank(singular_values: Any) -> float:
    """``exp(-Σ_i q_i log q_i)`` with ``q = σ / Σσ``: the entropy-based effective rank from a matrix's singular
    values σ (zero ones add nothing); NaN when every σ is 0 (a zero matrix)."""
    sv = _numpy(singular_values).astype(np.float64).ravel()
    if not np.all(sv >= 0):
        raise ZooValueError(f"singular values must be finite and >= 0, got min {sv.min() if sv.size else None}")
    total = sv.sum()
    if not total > 0:
        return float("nan")
    q = sv[sv > 0] / total
    return float(np.exp(-(q * np.log(q)).sum()))


def matrix_effective_rank(matrix: Any) -> float:
    """:func:`effective_rank` of ``matrix`` [N, H] (e.g. one expert's outputs over N rows)."""
    a = _numpy(matrix).astype(np.float64)
    check_arg(a.ndim == 2, "matrix.shape", a.shape, "[N, H]")
    return effective_rank(np.linalg.svd(a, compute_uv=False))


def shared_usage(gate_weights: Mapping[str, Any] | Sequence[Any],
                 shared_ids: Sequence[int] | Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Per task, the mean over rows of the total gate weight on shared experts.

    Args:
        gate_weights: per task, its gate's weights [N, E_t] (a mapping task → array, or a sequence or
            [T, N, E] array, tasks then named "0", "1"...).
        shared_ids: the columns of the shared experts in every task's gate, or per task (CGC/PLE gates list a
            task's own experts and the shared ones in their own order).
    """
    gates = dict(gate_weights) if isinstance(gate_weights, Mapping) else {
        str(t): g for t, g in enumerate(gate_weights)}
    if not gates:
        raise ZooValueError("no gate weights given")
    out = {}
    for task, g in gates.items():
        g = _numpy(g)
        ids = np.asarray(shared_ids[task] if isinstance(shared_ids, Mapping) else shared_ids, dtype=np.int64)
        if g.ndim != 2 or not len(ids) or ids.min() < 0 or ids.max() >= g.shape[1]:
            raise ZooValueError(f"task {task}: gate weights of shape {g.shape} and shared expert ids {ids.tolist()} "
                                "do not fit; expected [N, E] weights and ids in 0..E-1")
        out[task] = float(g[:, ids].sum(axis=1).mean())
    return out


def min_shared_usage(gate_weights: Mapping[str, Any] | Sequence[Any],
                     shared_ids: Sequence[int] | Mapping[str, Sequence[int]]) -> float:
    """``min_t E_x[Σ_{e ∈ shared} g_{t,e}(x)]`` (see :func:`shared_usage` for the arguments)."""
    return min(shared_usage(gate_weights, shared_ids).values())
