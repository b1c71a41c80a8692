"""Routing statistics: counts vs bincount, load, drop rate, entropy, active FFN experts, logger scalars."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.moe import ExpertStats, FFNExperts, MoELayer, SpecialExperts, TopKRouter, routing_stats
from zoo.moe.routing import capacity

D = 6


def manual_entropy(logits):
    rows = []
    for t in range(logits.shape[0]):
        p = torch.softmax(logits[t], -1)
        rows.append(-sum(float(p[e]) * math.log(float(p[e])) for e in range(logits.shape[1])))
    return sum(rows) / len(rows)


def test_counts_load_and_active_experts_by_hand():
    E, num_ffn = 5, 3  # ids 3 and 4 are special experts
    ids = torch.tensor([[0, 2], [1, -1], [4, 0], [3, -1]])
    ffn_ids = torch.where(ids >= num_ffn, -1, ids)
    logits = torch.randn(4, E)
    stats = routing_stats(ids, logits, ffn_ids, num_ffn)
    torch.testing.assert_close(stats.tokens, torch.tensor([2, 1, 1, 1, 1]))
    torch.testing.assert_close(stats.load, torch.tensor([2, 1, 1, 1, 1]) / 6.0)
    assert float(stats.active_experts) == pytest.approx(4 / 4), (
        "only FFN slots count: 4 of them over 4 tokens"
    )
    assert float(stats.drop_rate) == 0.0
    assert float(stats.entropy) == pytest.approx(manual_entropy(logits), rel=1e-5)
    assert stats.num_experts == E and stats.num_ffn == num_ffn


def test_random_routing_matches_bincount():
    torch.manual_seed(20)
    T, k, E, num_ffn = 50, 3, 9, 6
    ids = torch.randint(-1, E, (T, k))
    ffn_ids = torch.where(ids >= num_ffn, -1, ids)
    logits = torch.randn(T, E, requires_grad=True)
    stats = routing_stats(ids, logits, ffn_ids, num_ffn, drop_rate=torch.tensor(0.125))
    valid = ids[ids >= 0]
    torch.testing.assert_close(stats.tokens, torch.bincount(valid, minlength=E))
    assert float(stats.load.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(stats.load, torch.bincount(valid, minlength=E).float() / valid.numel())
    ffn_slots = sum(1 for e in ids.flatten().tolist() if 0 <= e < num_ffn)
    assert float(stats.active_experts) == pytest.approx(ffn_slots / T)
    assert float(stats.drop_rate) == 0.125
    for field in (stats.tokens, stats.load, stats.drop_rate, stats.entropy, stats.active_experts):
        assert not field.requires_grad, "statistics are detached"


def test_entropy_of_uniform_router_and_empty_routing():
    stats = routing_stats(torch.full((4, 2), -1), torch.zeros(4, 8), torch.full((4, 2), -1), 8)
    assert float(stats.entropy) == pytest.approx(math.log(8))
    assert torch.all(stats.tokens == 0) and torch.all(stats.load == 0)
    assert float(stats.active_experts) == 0.0
    assert float(stats.load_cv()) == 0.0


def test_load_cv():
    E = 4
    balanced = torch.arange(2 * E).remainder(E).reshape(-1, 2)  # every expert exactly twice
    stats = routing_stats(balanced, torch.randn(E, E), balanced, E)
    assert float(stats.load_cv()) == pytest.approx(0.0, abs=1e-7)
    skewed = torch.tensor([[0, 0], [0, 1], [0, 2], [0, 0]])
    stats = routing_stats(skewed, torch.randn(4, E), skewed, E)
    load = [6 / 8, 1 / 8, 1 / 8, 0.0]
    mean = sum(load) / E
    std = math.sqrt(sum((v - mean) ** 2 for v in load) / E)  # population std
    assert float(stats.load_cv()) == pytest.approx(std / mean, rel=1e-5)


def test_as_scalars_keys_and_values():
    ids = torch.tensor([[0, 1], [2, -1], [0, 3]])
    stats = routing_stats(ids, torch.randn(3, 4), torch.where(ids >= 3, -1, ids), 3, torch.tensor(0.25))
    scalars = stats.as_scalars()
    assert set(scalars) == {
        "drop_rate",
        "entropy",
        "active_experts",
        "load_cv",
        "load/e0",
        "load/e1",
        "load/e2",
        "load/e3",
    }
    assert all(type(v) is float for v in scalars.values())
    assert scalars["drop_rate"] == 0.25 and scalars["active_experts"] == pytest.approx(4 / 3)
    assert [scalars[f"load/e{i}"] for i in range(4)] == pytest.approx([0.4, 0.2, 0.2, 0.2])
    assert scalars["load_cv"] == pytest.approx(float(stats.load_cv()))


def test_stats_are_frozen():
    stats = routing_stats(
        torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 2), torch.zeros(2, 1, dtype=torch.long), 2
    )
    assert isinstance(stats, ExpertStats)
    with pytest.raises(AttributeError):
        stats.num_ffn = 3


# ---------------------------------------------------------------- stats produced by the layer


def test_layer_drop_rate_passed_through_from_capacity():
    torch.manual_seed(21)
    T, E, k, cf = 16, 4, 2, 0.5
    layer = MoELayer(TopKRouter(D, E, k, capacity_factor=cf), FFNExperts(E, D, 8)).eval()
    out = layer(torch.randn(2, T // 2, D))
    stats, routing = out.stats, out.routing
    kept = int((routing.ids >= 0).sum())
    assert kept <= E * capacity(T, k, E, cf) < T * k
    assert float(stats.drop_rate) == pytest.approx(1 - kept / (T * k))
    assert float(stats.drop_rate) > 0
    torch.testing.assert_close(stats.drop_rate, routing.drop_rate.float())
    torch.testing.assert_close(stats.tokens, torch.bincount(routing.ids[routing.ids >= 0], minlength=E))
    assert int(stats.tokens.max()) <= capacity(T, k, E, cf)
    assert float(stats.active_experts) == pytest.approx(kept / T)


def test_layer_stats_exclude_special_slots_from_active_experts():
    torch.manual_seed(22)
    num_ffn = 3
    special = SpecialExperts(D, num_ffn, num_zero=1, num_copy=1, num_null=1)
    router = TopKRouter(D, num_ffn + 3, k=2)
    layer = MoELayer(router, FFNExperts(num_ffn, D, 8), special).eval()
    with torch.no_grad():
        router.gate.weight.mul_(3.0)
    x = torch.randn(24, D)
    out = layer(x)
    ids = out.routing.ids
    n_special = int((ids >= num_ffn).sum())
    assert n_special > 0, "the test needs some special slots"
    stats = out.stats
    assert stats.num_experts == num_ffn + 3 and stats.num_ffn == num_ffn
    torch.testing.assert_close(stats.tokens, torch.bincount(ids.flatten(), minlength=num_ffn + 3))
    assert float(stats.active_experts) == pytest.approx((ids.numel() - n_special) / 24)
    assert float(stats.active_experts) < 2.0
    assert float(stats.load.sum()) == pytest.approx(1.0)
    assert float(stats.drop_rate) == 0.0
    assert float(stats.entropy) == pytest.approx(manual_entropy(out.routing.logits.detach()), rel=1e-5)
