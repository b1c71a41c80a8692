"""Video anomaly losses against plain per-video loops and hand-worked examples: TGS pseudo-labels (single and two
peaks, plateaus, flat curves, edge peaks, random padded batches), top-k MIL BCE with variable lengths and its
gradient, Sultani's ranking hinge, smoothness/sparsity, the class-expert loss, and when TGS switches on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.tasks.video_anomaly.batch import VADBatch
from zoo.tasks.video_anomaly.config import ModelConfig
from zoo.tasks.video_anomaly.losses import (
    objective,
    ranking_hinge,
    smooth_sparse,
    tgs_pseudo_labels,
    topk_mean,
    topk_mil_bce,
)
from zoo.tasks.video_anomaly.models import VADOutput


def tgs_loop(s: list[float], threshold: float = 0.2) -> list[float]:
    """TGS pseudo-labels of one video, written from the definition."""
    T, low, y = len(s), min(s), [0.0] * len(s)
    for p in range(T):
        if s[p] != max(s[max(0, p - 2):p + 3]) or s[p] - low <= threshold:
            continue
        v1 = 0
        while p - v1 - 1 >= 0 and s[p - v1 - 1] <= s[p - v1]:
            v1 += 1
        v2 = 0
        while p + v2 + 1 < T and s[p + v2 + 1] <= s[p + v2]:
            v2 += 1
        w = max(1, min(v1, v2))
        sigma = max(float(np.std(s[max(0, p - w):p + w + 1])), 1e-3)
        width = w / 2
        for t in range(max(0, p - w), min(T, p + w + 1)):
            if s[t] >= s[p] - sigma:
                y[t] += math.exp(-((t - p) ** 2) / (2 * width**2))
    return [min(1.0, v) for v in y]


def _tgs(curve: list[float], threshold: float = 0.2) -> list[float]:
    s = torch.tensor([curve], dtype=torch.float64)
    return tgs_pseudo_labels(s, torch.ones_like(s, dtype=torch.bool), threshold)[0].tolist()


@pytest.mark.parametrize("curve, want", [
    # one peak at 2: v1 = 2, v2 = 3, w = 2 (width 1), σ² = var(.1 .2 .6 .5 .1) = .044; t = 3 passes s_t >= .6 − σ
    ([0.1, 0.2, 0.6, 0.5, 0.1, 0.1], [0, 0, 1, math.exp(-0.5), 0, 0]),
    # two peaks (1 and 6), each w = 1 and alone above s_p − σ
    ([0.1, 0.9, 0.2, 0.1, 0.1, 0.2, 0.8, 0.3], [0, 1, 0, 0, 0, 0, 1, 0]),
    # a plateau: both snippets are peaks, w = 1 (width 1/2), each adds e^-2 to the other; clamped at 1
    ([0.0, 0.5, 0.5, 0.0], [0, 1, 1, 0]),
    # peaks at either edge: v1 (v2) = 0, so w = 1
    ([0.9, 0.5, 0.1, 0.1], [1, 0, 0, 0]),
    ([0.1, 0.1, 0.5, 0.9], [0, 0, 0, 1]),
    # a flat curve and one whose peak does not rise 0.2 above its minimum: no peak
    ([0.5] * 7, [0] * 7),
    ([0.3, 0.4, 0.45, 0.3], [0] * 4),
])
def test_tgs_hand_worked(curve, want):
    np.testing.assert_allclose(_tgs(curve), want, atol=1e-12)
    np.testing.assert_allclose(tgs_loop(curve), want, atol=1e-12)


def test_tgs_gaussian_value_by_hand():
    got = _tgs([0.1, 0.2, 0.6, 0.5, 0.1, 0.1])[3]
    assert got == pytest.approx(0.60653, rel=1e-4)  # exp(−1/(2·1²)): width w/2 = 1 snippet


def test_tgs_spreads_over_a_high_region():
    # peak 4, v1 = v2 = 4, w = 4 (width 2); σ = std of the whole curve = 0.36, so t = 2..6 pass s_t >= .9 − σ;
    # with σ as the width the neighbours would get exp(−1/(2·0.13)) ≈ 0.02
    curve = [0.1, 0.1, 0.8, 0.85, 0.9, 0.85, 0.8, 0.1, 0.1]
    near, far = math.exp(-1 / 8), math.exp(-4 / 8)
    want = [0, 0, far, near, 1, near, far, 0, 0]
    np.testing.assert_allclose(_tgs(curve), want, atol=1e-12)
    np.testing.assert_allclose(tgs_loop(curve), want, atol=1e-12)
    assert min(_tgs(curve)[2:7]) > 0.6


def test_tgs_matches_loop_on_random_padded_batches():
    rng = np.random.default_rng(0)
    lengths = [1, 2, 5, 9, 17, 32, 40, 40]
    T = max(lengths)
    curves = []
    for i, n in enumerate(lengths):
        if i % 2:  # smooth curves with real runs
            curves.append(1 / (1 + np.exp(-np.cumsum(rng.normal(0, 0.8, n)))))
        else:
            curves.append(rng.random(n))
    s = torch.zeros(len(lengths), T, dtype=torch.float64)
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for i, c in enumerate(curves):
        s[i, :len(c)] = torch.from_numpy(c)
        s[i, len(c):] = 5.0  # padding must not count, even when it would be the largest score
        mask[i, :len(c)] = True
    for threshold in (0.0, 0.2, 0.5):
        got = tgs_pseudo_labels(s, mask, threshold)
        assert bool((got[~mask] == 0).all())
        for i, c in enumerate(curves):
            np.testing.assert_allclose(got[i, :len(c)].numpy(), tgs_loop(list(c), threshold), atol=1e-10)


def test_tgs_float32_and_no_grad():
    s = torch.tensor([[0.1, 0.2, 0.6, 0.5, 0.1, 0.1]], requires_grad=True)
    y = tgs_pseudo_labels(s, torch.ones(1, 6, dtype=torch.bool))
    assert y.dtype == torch.float32 and not y.requires_grad
    np.testing.assert_allclose(y[0].numpy(), [0, 0, 1, math.exp(-0.5), 0, 0], atol=1e-6)


def _padded(curves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(c) for c in curves)
    s = torch.full((len(curves), T), 0.99, dtype=torch.float64)
    mask = torch.zeros(len(curves), T, dtype=torch.bool)
    for i, c in enumerate(curves):
        s[i, :len(c)] = torch.from_numpy(c)
        mask[i, :len(c)] = True
    return s, mask


def test_topk_mil_bce_matches_loop_with_variable_lengths_and_gradient():
    rng = np.random.default_rng(1)
    lengths = [1, 15, 16, 17, 31, 32, 33, 70]  # k = 1, 1, 2, 2, 2, 3, 3, 5
    curves = [rng.uniform(0.05, 0.95, n) for n in lengths]
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 1, 1], dtype=torch.float64)
    s, mask = _padded(curves)
    s.requires_grad_(True)
    got = topk_mil_bce(s, mask, labels)
    got.backward()
    leaves = [torch.tensor(c, requires_grad=True) for c in curves]
    terms = []
    for leaf, y in zip(leaves, labels):
        k = len(leaf) // 16 + 1
        p = torch.sort(leaf, descending=True).values[:k].mean()
        terms.append(-(y * torch.log(p) + (1 - y) * torch.log(1 - p)))
    want = torch.stack(terms).mean()
    want.backward()
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
    for i, leaf in enumerate(leaves):
        torch.testing.assert_close(s.grad[i, :len(leaf)], leaf.grad)
        assert bool((s.grad[i, len(leaf):] == 0).all())


def test_topk_mean_by_key_over_trailing_dims():
    values = torch.arange(2 * 5 * 3, dtype=torch.float64).view(2, 5, 3)
    key = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.3], [0.2, 0.1, 0.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    got = topk_mean(values, mask, torch.tensor([2, 1]), key=key)
    torch.testing.assert_close(got, torch.stack([(values[0, 1] + values[0, 3]) / 2, values[1, 0]]))


def test_ranking_hinge_is_the_mean_over_all_pairs():
    s = torch.tensor([[0.2, 0.4, 0.9], [0.7, 0.1, 0.3], [0.5, 0.6, 0.0], [0.3, 0.2, 0.1]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1]], dtype=torch.bool)
    label = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    tops = {0: 0.4, 1: 0.7, 2: 0.6, 3: 0.3}  # the masked 0.9 does not count
    want = np.mean([max(0.0, 1 - tops[a] + tops[n]) for a in (0, 2) for n in (1, 3)])
    assert float(ranking_hinge(s, mask, label)) == pytest.approx(want)
    assert float(ranking_hinge(s[:1], mask[:1], label[:1])) == 0.0  # no pair


def test_smooth_sparse_loop_on_abnormal_videos_only():
    s = torch.tensor([[0.1, 0.5, 0.2, 0.8], [0.9, 0.9, 0.9, 0.9], [0.3, 0.7, 0.6, 0.6]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    label = torch.tensor([1.0, 0.0, 1.0])
    model = ModelConfig(smooth=0.5, sparse=0.25)
    parts = smooth_sparse(model, s, mask, label)
    smooth = np.mean([0.4**2 + 0.3**2, 0.4**2 + 0.1**2 + 0.0**2])
    sparse = np.mean([0.1 + 0.5 + 0.2, 0.3 + 0.7 + 0.6 + 0.6])
    assert float(parts["smooth"]) == pytest.approx(0.5 * smooth)
    assert float(parts["sparse"]) == pytest.approx(0.25 * sparse)


def _expert_batch() -> tuple[VADBatch, VADOutput]:
    g = torch.Generator().manual_seed(0)
    B, T, E = 5, 20, 3
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 12:] = False
    label = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    expert = torch.tensor([-1, 0, 2, -1, 2])
    scores = torch.rand(B, T, E, generator=g, dtype=torch.float64) * 0.9 + 0.05
    extras = {"embedding": torch.randn(B, T, 4, generator=g, dtype=torch.float64),
              "abnormal_memory": torch.rand(B, T, generator=g, dtype=torch.float64),
              "normal_memory": torch.rand(B, T, generator=g, dtype=torch.float64),
              "expert_keep": torch.ones(E, dtype=torch.bool)}
    coarse = torch.rand(B, T, generator=g, dtype=torch.float64)
    out = VADOutput(scores.mean(-1), expert_scores=scores, coarse=coarse, extras=extras)
    return VADBatch(torch.zeros(B, T, 1), mask, label, expert), out


def test_expert_loss_matches_a_per_expert_loop():
    batch, out = _expert_batch()
    model = ModelConfig(arch="experts", fusion="mean", mil_only_epochs=1)
    _, parts = objective(model, out, batch, epoch=1)
    assert set(parts) == {"coarse_mil", "memory", "triplet", "expert_mil", "expert_tgs"}
    mil, tgs = [], []
    for c in range(3):
        own = [b for b in range(5) if batch.label[b] == 0 or batch.expert[b] == c]
        mil.append(np.mean([float(topk_mil_bce(out.expert_scores[b:b + 1, :, c], batch.mask[b:b + 1],
                                               batch.label[b:b + 1])) for b in own]))
        abnormal = [b for b in own if batch.label[b] == 1]
        if abnormal:
            per_video = []
            for b in abnormal:
                n = int(batch.mask[b].sum())
                s = out.expert_scores[b, :n, c]
                y = torch.tensor(tgs_loop(s.tolist(), model.tgs_threshold), dtype=s.dtype)
                per_video.append(float(F.binary_cross_entropy(s, y)))
            tgs.append(np.mean(per_video))
    assert float(parts["expert_mil"]) == pytest.approx(np.mean(mil))
    assert float(parts["expert_tgs"]) == pytest.approx(np.mean(tgs))  # experts 0 and 2 have abnormal videos


def test_masked_expert_leaves_the_expert_loss():
    batch, out = _expert_batch()
    model = ModelConfig(arch="experts", fusion="mean", tgs=False)
    out.extras["expert_keep"] = torch.tensor([True, False, True])
    out.expert_scores[..., 1] = 0.0  # what the network returns for a masked expert
    _, parts = objective(model, out, batch, epoch=0)
    assert math.isfinite(float(parts["expert_mil"]))
    out.expert_scores[..., 1] = 0.5  # its scores no longer matter
    assert float(objective(model, out, batch, epoch=0)[1]["expert_mil"]) == pytest.approx(float(parts["expert_mil"]))


@pytest.mark.parametrize("arch, fusion, named", [
    ("gsmoe", "gate", {"mil", "tgs", "expert_mil", "expert_tgs"}),
    ("experts", "gate", {"mil", "tgs", "expert_mil", "expert_tgs"}),
    ("experts", "mean", {"expert_mil", "expert_tgs"}),
    ("dense", "gate", {"mil", "tgs"}),
])
def test_tgs_starts_after_the_mil_only_epochs_and_parts_sum_to_the_total(arch, fusion, named):
    batch, out = _expert_batch()
    model = ModelConfig(arch=arch, fusion=fusion, mil_only_epochs=2)
    base = {"coarse_mil", "memory", "triplet"}
    for epoch, on in ((0, False), (1, False), (2, True), (5, True)):
        total, parts = objective(model, out, batch, epoch)
        assert set(parts) == base | {n for n in named if on or "tgs" not in n}
        assert float(total) == pytest.approx(float(sum(parts.values())))
    off = ModelConfig(arch=arch, fusion=fusion, tgs=False)
    assert not any("tgs" in name for name in objective(off, out, batch, 9)[1])


def test_objective_refuses_expert_ids_beyond_the_experts():
    batch, out = _expert_batch()
    batch.expert[1] = 3
    with pytest.raises(ValueError, match="batch.expert"):
        objective(ModelConfig(arch="gsmoe"), out, batch, 0)
