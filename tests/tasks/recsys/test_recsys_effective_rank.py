"""The effective-rank diagnostic of expert outputs: known answers (rank r with equal singular values → r, rank
one → 1, a plain entropy of the normalised singular values otherwise), invariance to scale, the streamed value over
batches (CollapseCounter's Gram matrices) against an SVD of the whole matrix, and its test metric keys."""

import math

import numpy as np
import pytest
import torch

from zoo.errors import ZooValueError
from zoo.tasks.recsys.evaluation import CollapseCounter, SplitScores, metrics_from_scores
from zoo.tasks.recsys.metrics import effective_rank, matrix_effective_rank
from zoo.tasks.recsys.models import Diagnostics


def equal_singular_values(n: int, h: int, r: int, seed: int = 0) -> np.ndarray:
    """An [n, h] matrix of rank r whose r non-zero singular values are all 3."""
    rng = np.random.default_rng(seed)
    left = np.linalg.qr(rng.normal(size=(n, r)))[0]
    right = np.linalg.qr(rng.normal(size=(h, r)))[0]
    return 3.0 * left @ right.T


@pytest.mark.parametrize("r", [1, 2, 5, 8])
def test_rank_r_with_equal_singular_values_has_effective_rank_r(r):
    assert matrix_effective_rank(equal_singular_values(50, 8, r)) == pytest.approx(r, rel=1e-9)


def test_hand_worked_singular_values():
    # q = (0.5, 0.25, 0.25): H = 0.5 ln 2 + 2 · 0.25 ln 4 = 1.5 ln 2, exp(H) = 2^1.5
    assert effective_rank([2.0, 1.0, 1.0, 0.0]) == pytest.approx(2**1.5)
    assert effective_rank([7.0]) == 1.0
    assert effective_rank(torch.tensor([4.0, 4.0])) == pytest.approx(2.0)
    assert math.isnan(effective_rank([0.0, 0.0]))
    with pytest.raises(ZooValueError, match="singular values"):
        effective_rank([1.0, -1.0])


def test_matches_a_plain_entropy_of_numpy_singular_values_and_ignores_scale():
    a = np.random.default_rng(2).normal(size=(30, 6)) @ np.diag([5, 3, 1, 0.5, 0.1, 0.01])
    sv = np.linalg.svd(a, compute_uv=False)
    q = sv / sv.sum()
    expected = math.exp(-sum(x * math.log(x) for x in q))
    assert matrix_effective_rank(a) == pytest.approx(expected)
    assert matrix_effective_rank(10 * a) == pytest.approx(expected)
    assert 1.0 < expected < 6.0


def test_streamed_over_batches_equals_the_whole_matrix():
    rng = np.random.default_rng(1)
    acts = {"a": torch.from_numpy(rng.normal(size=(60, 3, 4)) @ np.diag([4, 2, 1, 0.1])),
            "b": torch.from_numpy(np.stack([equal_singular_values(60, 5, 2, seed=s) for s in range(2)], 1))}
    counter = CollapseCounter()
    for lo, hi in ((0, 25), (25, 60)):
        counter.update(Diagnostics(expert_acts={k: v[lo:hi] for k, v in acts.items()}), hi - lo)
    ranks = counter.effective_ranks()
    per_expert = {k: [matrix_effective_rank(v[:, e].numpy()) for e in range(v.shape[1])] for k, v in acts.items()}
    assert ranks["a"] == pytest.approx(np.mean(per_expert["a"]), rel=1e-6)
    assert ranks["b"] == pytest.approx(2.0, rel=1e-6)
    assert ranks[""] == pytest.approx(np.mean(per_expert["a"] + per_expert["b"]), rel=1e-6)

    scores = SplitScores(np.zeros((60, 1)), np.zeros((60, 1)), np.ones((60, 1), bool), None, None, counter)
    m = metrics_from_scores(scores, ("y",), regression=True)
    assert m["effective_rank"] == ranks[""] and m["effective_rank/a"] == ranks["a"]


def test_no_experts_no_effective_rank():
    scores = SplitScores(np.zeros((4, 1)), np.zeros((4, 1)), np.ones((4, 1), bool), None, None, CollapseCounter())
    assert not any(k.startswith("effective_rank") for k in metrics_from_scores(scores, ("y",), regression=True))
