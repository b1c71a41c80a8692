"""Recsys metrics: GAUC worked by hand and against sklearn per user, AUC against sklearn, one-class splits, and the
collapse diagnostics on hand-made activations and gates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from zoo.errors import ZooValueError
from zoo.tasks.recsys.metrics import auc, gauc, min_shared_usage, shared_usage, zero_activation_ratio

# User a: labels 1 0 1 0, scores .9 .8 .3 .1 → positive-negative pairs (.9,.8) (.9,.1) (.3,.1) won, (.3,.8) lost:
#         AUC 3/4, 4 impressions.
# User b: labels 0 1 0, scores .7 .4 .4 → the positive loses to .7 and ties .4 (one half): AUC 0.5/2 = 1/4, 3 rows.
# User c: only positives and user d: one negative → no AUC, left out.
# GAUC = (4·3/4 + 3·1/4) / (4 + 3) = 3.75 / 7.
USERS = ["a"] * 4 + ["b"] * 3 + ["c"] * 2 + ["d"]
LABELS = [1, 0, 1, 0, 0, 1, 0, 1, 1, 0]
SCORES = [0.9, 0.8, 0.3, 0.1, 0.7, 0.4, 0.4, 0.5, 0.6, 0.2]


def test_gauc_hand_worked():
    out = gauc(USERS, LABELS, SCORES)
    assert out.value == pytest.approx(3.75 / 7)
    assert (out.users, out.excluded) == (2, 2)


def test_gauc_matches_sklearn_per_user_and_ignores_row_order():
    rng = np.random.default_rng(0)
    n = 3000
    user = rng.integers(0, 200, n)
    y = (rng.random(n) < 0.3).astype(int)
    score = np.round(rng.random(n) + 0.3 * y, 1)  # rounding makes ties
    used = [u for u in np.unique(user) if 0 < y[user == u].sum() < (user == u).sum()]
    expected = sum((user == u).sum() * roc_auc_score(y[user == u], score[user == u]) for u in used)
    expected /= sum((user == u).sum() for u in used)
    out = gauc(user, y, score)
    assert out.value == pytest.approx(expected, abs=1e-12)
    assert (out.users, out.excluded) == (len(used), len(np.unique(user)) - len(used))
    perm = rng.permutation(n)
    assert gauc(user[perm], y[perm], score[perm]).value == pytest.approx(out.value, abs=1e-12)


def test_gauc_without_a_two_class_user_is_nan():
    out = gauc([1, 1, 2], [1, 1, 0], [0.2, 0.3, 0.4])
    assert math.isnan(out.value) and (out.users, out.excluded) == (0, 2)
    assert math.isnan(gauc([], [], []).value)


def test_auc_matches_sklearn_and_is_nan_with_one_class():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    score = np.round(rng.normal(size=500) + y, 1)
    assert auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert auc(torch.tensor(y), torch.tensor(score)) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))


@pytest.mark.parametrize("y, score, message", [
    ([0, 1], [0.1], "differ in length"),
    ([0, 2], [0.1, 0.2], "labels must be 0 or 1"),
    ([0, 1], [0.1, float("nan")], "NaN or infinite"),
])
def test_auc_refuses_bad_inputs(y, score, message):
    with pytest.raises(ZooValueError, match=message):
        auc(y, score)


def test_zero_activation_ratio_counts_units_dead_on_90_percent_of_rows():
    acts = np.ones((10, 4))
    acts[:, 0] = -1.0  # dead on every row
    acts[:9, 1] = 0.0  # <= 0 on 9 of 10 rows: dead
    acts[:8, 2] = -0.5  # 8 of 10: alive
    assert zero_activation_ratio(acts) == 0.5
    assert zero_activation_ratio([acts[:, :1], acts[:, 1:]]) == 0.5  # experts of different widths, pooled
    assert zero_activation_ratio(torch.tensor(acts)) == 0.5
    assert zero_activation_ratio(acts, dead_share=0.8) == 0.75
    with pytest.raises(ZooValueError, match="same, non-zero number of rows"):
        zero_activation_ratio([acts, acts[:5]])


def test_shared_usage_and_its_minimum():
    # Task a puts .5 then .2 on the shared expert 2 (mean .35); task b .8 then .4 (mean .6).
    gates = {"a": np.array([[0.2, 0.3, 0.5], [0.4, 0.4, 0.2]]), "b": np.array([[0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])}
    assert shared_usage(gates, [2]) == pytest.approx({"a": 0.35, "b": 0.6})
    assert min_shared_usage(gates, [2]) == pytest.approx(0.35)
    assert min_shared_usage(np.stack(list(gates.values())), [2]) == pytest.approx(0.35)
    # CGC: each gate lists its own experts then the shared ones, in its own columns.
    assert min_shared_usage(gates, {"a": [1, 2], "b": [0]}) == pytest.approx(0.2)
    with pytest.raises(ZooValueError, match="do not fit"):
        min_shared_usage(gates, [3])
