"""Routers against per-token references (selection, weights, gate gradients), properties, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.errors import ZooValueError
from zoo.moe import (
    ROUTERS,
    AuxFreeRouter,
    DenseToSparseRouter,
    ExpertChoiceRouter,
    HashRouter,
    SoftRouter,
    ThresholdRouter,
    TopKRouter,
    TopPRouter,
    build_router,
)
from zoo.moe.losses import load_balance_loss
from zoo.moe.routing import capacity

D = 12

# ---------------------------------------------------------------- per-token references
# Each returns, for one token's probability row (a differentiable tensor), the list of (expert, weight) it keeps.


def ref_top_k(p, k, renormalize):
    chosen = sorted(range(len(p)), key=lambda e: -float(p[e].detach()))[:k]
    total = sum(p[e] for e in chosen)
    return [(e, p[e] / total if renormalize else p[e]) for e in chosen]


def ref_top_p(p, top_p):
    kept, mass = [], 0.0
    for e in sorted(range(len(p)), key=lambda e: -float(p[e].detach())):
        if mass >= top_p:
            break
        kept.append((e, p[e]))
        mass += float(p[e].detach())
    return kept


def ref_threshold(p, threshold):
    best = max(range(len(p)), key=lambda e: float(p[e].detach()))
    return [(e, p[e]) for e in range(len(p)) if float(p[e].detach()) >= threshold or e == best]


def routed_pairs(routing, t):
    return {int(e): w for e, w in zip(routing.ids[t], routing.weights[t]) if int(e) >= 0}


def assert_matches_reference(router, x, rule):
    """Selections equal the rule's per token; the gate gradient of Σ w·c equals the reference's."""
    router.eval()
    c = torch.randn(x.shape[0], router.num_experts)
    routing = router(x)
    loss = sum(w * c[t, e] for t in range(x.shape[0]) for e, w in routed_pairs(routing, t).items())
    (grad,) = torch.autograd.grad(loss, router.gate.weight)

    ref_loss = 0.0
    for t in range(x.shape[0]):
        logits_t = router.gate.weight @ x[t]
        pairs = dict(rule(torch.softmax(logits_t, -1)))
        got = routed_pairs(routing, t)
        assert set(got) == set(pairs), f"token {t}: routed {sorted(got)}, reference {sorted(pairs)}"
        for e, w in pairs.items():
            torch.testing.assert_close(got[e], w, rtol=1e-5, atol=1e-6)
            ref_loss = ref_loss + w * c[t, e]
    (ref_grad,) = torch.autograd.grad(ref_loss, router.gate.weight)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("renormalize", [True, False])
def test_top_k_matches_reference(k, renormalize):
    router = TopKRouter(D, 6, k, renormalize=renormalize)
    assert_matches_reference(router, torch.randn(17, D), lambda p: ref_top_k(p, k, renormalize))


@pytest.mark.parametrize("p", [0.1, 0.4, 0.9, 1.0])
def test_top_p_keeps_the_crossing_expert(p):
    router = TopPRouter(D, 7, p=p)
    assert_matches_reference(router, torch.randn(19, D) * 2, lambda probs: ref_top_p(probs, p))


@pytest.mark.parametrize("threshold", [0.05, 0.2, 0.9])
def test_threshold_matches_reference(threshold):
    router = ThresholdRouter(D, 6, threshold=threshold)
    assert_matches_reference(router, torch.randn(15, D) * 2, lambda p: ref_threshold(p, threshold))


def test_soft_router_uses_every_expert():
    router = SoftRouter(D, 5)
    assert_matches_reference(router, torch.randn(9, D), lambda p: [(e, p[e]) for e in range(len(p))])


def test_dense_to_sparse_in_eval_is_top_k_without_renormalisation():
    router = DenseToSparseRouter(D, 6, k=2, anneal_steps=10)
    assert_matches_reference(router, torch.randn(11, D), lambda p: ref_top_k(p, 2, renormalize=False))


def test_aux_free_weights_ignore_the_bias():
    router = AuxFreeRouter(D, 6, k=2)
    router.bias.copy_(torch.tensor([0.5, -0.5, 0.0, 0.3, -0.2, 0.1]))
    router.eval()
    x = torch.randn(13, D)
    routing = router(x)
    for t in range(13):
        s = torch.sigmoid(router.gate.weight @ x[t])
        chosen = sorted(range(6), key=lambda e: -float(s[e].detach() + router.bias[e]))[:2]
        got = routed_pairs(routing, t)
        assert set(got) == set(chosen)
        total = sum(s[e] for e in chosen)
        for e in chosen:
            torch.testing.assert_close(got[e], s[e] / total)


def test_expert_choice_matches_reference():
    T, E, c = 20, 5, 2.0
    router = ExpertChoiceRouter(D, E, capacity_factor=c).eval()
    x = torch.randn(T, D)
    routing = router(x)
    probs = torch.softmax(x @ router.gate.weight.t(), -1)
    C = math.ceil(T * c / E)
    expected = {t: {} for t in range(T)}
    for e in range(E):
        for t in sorted(range(T), key=lambda t: -float(probs[t, e].detach()))[:C]:
            expected[t][e] = probs[t, e]
    for t in range(T):
        got = routed_pairs(routing, t)
        assert set(got) == set(expected[t])
        for e, w in expected[t].items():
            torch.testing.assert_close(got[e], w)
    unpicked = sum(1 for t in range(T) if not expected[t])
    assert float(routing.drop_rate) == pytest.approx(unpicked / T)


def test_capacity_drops_overflow_first_choices_first():
    T, E, k, cf = 12, 3, 2, 0.5
    router = TopKRouter(D, E, k, capacity_factor=cf).eval()
    x = torch.randn(T, D)
    dropless = TopKRouter(D, E, k).eval()
    dropless.gate.weight.data.copy_(router.gate.weight)
    full = dropless(x)
    C = capacity(T, k, E, cf)
    used = [0] * E
    keep = torch.zeros(T, k, dtype=torch.bool)
    for s in range(k):  # GShard priority: every token's first choice, then second choices
        for t in range(T):
            e = int(full.ids[t, s])
            if used[e] < C:
                used[e] += 1
                keep[t, s] = True
    got = router(x)
    torch.testing.assert_close(got.ids, torch.where(keep, full.ids, -1))
    torch.testing.assert_close(got.weights, torch.where(keep, full.weights, 0.0))
    assert float(got.drop_rate) == pytest.approx(1 - keep.float().mean().item())


def test_top_1_keeps_raw_probabilities_so_the_gate_learns_from_the_task():
    router = TopKRouter(D, 4, 1)
    x = torch.randn(16, D)
    routing = router(x)
    assert not torch.allclose(routing.weights, torch.ones_like(routing.weights))
    routing.weights.sum().backward()
    assert router.gate.weight.grad.abs().sum() > 0


def test_balance_loss_counts_the_requested_choices_before_capacity_drops():
    T, E = 32, 4
    router = TopKRouter(D, E, 1, capacity_factor=0.25, balance_coef=1.0).eval()
    router.gate.weight.data.zero_()
    router.gate.weight.data[0, 0] = 10.0  # every token wants expert 0
    x = torch.randn(T, D)
    x[:, 0] = x[:, 0].abs() + 1
    routing = router(x)
    assert float(routing.drop_rate) > 0.5
    expected = load_balance_loss(routing.logits, routing.requested_ids)
    torch.testing.assert_close(routing.aux["balance"], expected)
    assert (routing.requested_ids == 0).all()


def test_aux_free_bias_stays_fp32_in_a_bf16_model():
    router = AuxFreeRouter(D, 4, 2).to(torch.bfloat16)
    assert router.bias.dtype == torch.float32 and router.gate.weight.dtype == torch.bfloat16
    router.train()
    router(torch.randn(8, D, dtype=torch.bfloat16))
    router.bias.fill_(1.0)
    router.on_optimizer_step(0)
    assert (router.bias != 1.0).any(), "a 1e-3 update must survive"


def test_empty_batch_gives_finite_losses():
    for name in ROUTERS:
        routing = build_router(name, D, 4, k=2)(torch.randn(0, D), torch.zeros(0, dtype=torch.long))
        for key, value in routing.aux.items():
            assert torch.isfinite(value), (name, key)


def test_noise_only_in_training_and_learnable():
    router = TopKRouter(D, 6, 2, noise=True)
    x = torch.randn(64, D)
    router.noise.weight.data.fill_(0.5)
    router.eval()
    torch.testing.assert_close(router(x).ids, router(x).ids)
    router.train()
    assert not torch.equal(router(x).ids, router(x).ids)
    router(x).weights.sum().backward()
    assert router.noise.weight.grad is not None and router.noise.weight.grad.abs().sum() > 0


def test_router_runs_in_fp32_under_autocast():
    router = TopKRouter(D, 4, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        routing = router(torch.randn(8, D).bfloat16())
    assert routing.logits.dtype == torch.float32 and routing.weights.dtype == torch.float32


# ---------------------------------------------------------------- stateful routers


def test_aux_free_bias_update_once_per_optimizer_step():
    router = AuxFreeRouter(D, 4, k=1, bias_rate=0.1)
    router.gate.weight.data.zero_()
    router.gate.weight.data[0] = 1.0  # expert 0 wins for most tokens
    x = torch.randn(32, D).abs()
    router.train()
    router(x)
    router(x)  # two micro-batches of one accumulated step
    load = router.pending_load.clone()
    assert load.sum() == 64
    router.on_optimizer_step(0)
    expected = 0.1 * torch.sign(load.mean() - load)
    torch.testing.assert_close(router.bias, expected)
    assert router.pending_load.sum() == 0
    router.eval()
    router(x)
    assert router.pending_load.sum() == 0, "eval forwards must not count load"
    assert "bias" in router.state_dict(), "the bias must travel with checkpoints"


def test_aux_free_bias_evens_a_skewed_load():
    router = AuxFreeRouter(D, 4, k=1, bias_rate=0.02)
    router.gate.weight.data.normal_(std=0.1)
    router.gate.weight.data[0] += 0.5
    x = torch.randn(256, D).abs()
    router.train()

    def spread():
        counts = torch.bincount(router(x).ids.flatten(), minlength=4).float()
        return float(counts.max() - counts.min())

    before = spread()
    for step in range(300):
        router(x)
        router.on_optimizer_step(step)
    assert spread() < 0.5 * before


def test_dense_to_sparse_schedule():
    router = DenseToSparseRouter(D, 8, k=1, tau_start=2.0, tau_end=0.1, anneal_steps=100, threshold=0.02)
    x = torch.randn(256, D)
    router.train()
    assert router.temperature == pytest.approx(2.0)
    dense_active = float((router(x).ids >= 0).sum(1).float().mean())
    router.on_optimizer_step(49)
    assert router.temperature == pytest.approx(2.0 * (0.1 / 2.0) ** 0.5)
    router.on_optimizer_step(99)
    assert router.temperature == pytest.approx(0.1) and not router.is_dense_phase
    assert router(x).ids.shape[1] == 1, "after annealing the router is top-k"
    assert dense_active > 4, f"the early phase should be dense, got {dense_active:.1f} experts per token"
    router.on_optimizer_step(0)
    router.eval()
    assert router(x).ids.shape[1] == 1, "eval is top-k"


def test_hash_router_with_token_ids():
    router = HashRouter(D, 8, k=2)
    assert list(router.parameters()) == []
    ids = torch.arange(4000)
    x = torch.randn(4000, D)
    routing = router(x, ids)
    again = router(torch.randn(4000, D), ids)
    torch.testing.assert_close(routing.ids, again.ids)  # depends on the id only
    assert (routing.ids[:, 0] != routing.ids[:, 1]).all()
    counts = torch.bincount(routing.ids.flatten(), minlength=8).float()
    assert counts.min() > 0.8 * counts.mean(), counts
    torch.testing.assert_close(routing.weights, torch.full((4000, 2), 0.5))


def test_hash_router_without_ids_is_locality_sensitive():
    router = HashRouter(D, 8)
    x = torch.randn(100, D)
    torch.testing.assert_close(router(x).ids, router(3 * x).ids)  # same projection signs → same bucket
    assert len(torch.unique(router(x).ids)) > 1


# ---------------------------------------------------------------- properties


@st.composite
def router_case(draw):
    T = draw(st.integers(1, 40))
    E = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
    gen = torch.Generator().manual_seed(seed)
    return T, E, torch.randn(T, D, generator=gen) * scale


def _common_properties(routing, E):
    ids, w = routing.ids, routing.weights
    assert ids.dtype == torch.int64 and ids.shape == w.shape
    assert ((ids >= -1) & (ids < E)).all()
    assert (w >= 0).all()
    assert (w[ids < 0] == 0).all()
    for row in ids:
        valid = row[row >= 0]
        assert len(torch.unique(valid)) == len(valid), "an expert appears twice in one token's slots"


@settings(max_examples=30, deadline=None)
@given(router_case(), st.sampled_from(sorted(ROUTERS)), st.data())
def test_every_router_respects_the_contract(case, name, data):
    T, E, x = case
    k = data.draw(st.integers(1, E))
    router = build_router(name, D, E, k=k).eval()
    token_ids = torch.randint(0, E, (x.shape[0],)) if name == "domain" else None
    _common_properties(router(x, token_ids), E)


@settings(max_examples=40, deadline=None)
@given(router_case(), st.floats(0.01, 1.0))
def test_top_p_mass_reaches_p(case, p):
    T, E, x = case
    routing = TopPRouter(D, E, p=p)(x)
    assert (routing.weights.sum(1) >= p - 1e-5).all()
    # minimal: dropping the smallest kept expert would fall below p
    smallest = torch.where(routing.ids >= 0, routing.weights, torch.inf).min(1).values
    assert (routing.weights.sum(1) - smallest < p + 1e-6).all()


@settings(max_examples=40, deadline=None)
@given(router_case(), st.floats(0.1, 4.0))
def test_expert_choice_capacity_respected(case, c):
    T, E, x = case
    routing = ExpertChoiceRouter(D, E, capacity_factor=c)(x)
    C = min(T, math.ceil(T * c / E))
    counts = torch.bincount(routing.ids[routing.ids >= 0], minlength=E)
    assert (counts == C).all()


@settings(max_examples=40, deadline=None)
@given(router_case(), st.floats(0.1, 2.0), st.integers(1, 3))
def test_top_k_capacity_respected(case, cf, k):
    T, E, x = case
    k = min(k, E)
    routing = TopKRouter(D, E, k, capacity_factor=cf)(x)
    counts = torch.bincount(routing.ids[routing.ids >= 0], minlength=E)
    assert (counts <= capacity(T, k, E, cf)).all()


@settings(max_examples=40, deadline=None)
@given(router_case(), st.integers(0, 2**16))
def test_aux_free_bias_leaves_weights_unchanged(case, seed):
    T, E, x = case
    router = AuxFreeRouter(D, E, k=min(2, E)).eval()
    unbiased = router(x)
    router.bias.copy_(torch.randn(E, generator=torch.Generator().manual_seed(seed)))
    biased = router(x)
    scores = torch.sigmoid(router.router_logits(x))
    for t in range(T):
        for routing in (unbiased, biased):
            chosen = routing.ids[t]
            expected = scores[t, chosen] / scores[t, chosen].sum() if router.k > 1 else scores[t, chosen]
            torch.testing.assert_close(routing.weights[t], expected)
        same = set(unbiased.ids[t].tolist()) == set(biased.ids[t].tolist())
        if same:
            torch.testing.assert_close(unbiased.weights[t].sort().values, biased.weights[t].sort().values)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: TopKRouter(D, 4, 5), "k"),
        (lambda: TopKRouter(D, 4, 0), "k"),
        (lambda: TopKRouter(D, 4, 2, capacity_factor=0), "capacity_factor"),
        (lambda: TopKRouter(D, 4, 2, capacity_factor=-1.0), "capacity_factor"),
        (lambda: TopPRouter(D, 4, p=0.0), "p"),
        (lambda: TopPRouter(D, 4, p=1.5), "p"),
        (lambda: ThresholdRouter(D, 4, threshold=0.0), "threshold"),
        (lambda: ExpertChoiceRouter(D, 4, capacity_factor=0), "capacity_factor"),
        (lambda: AuxFreeRouter(D, 4, 2, score="relu"), "score"),
        (lambda: DenseToSparseRouter(D, 4, tau_start=0.1, tau_end=1.0), "tau_start"),
        (lambda: TopKRouter(0, 4, 1), "d_model"),
        (lambda: TopKRouter(D, 0, 1), "num_experts"),
        (lambda: TopKRouter(D, 4, 1, balance_coef=-1), "balance_coef"),
        (lambda: HashRouter(D, 4, k=9), "k"),
        (lambda: build_router("top_kk", D, 4), "router"),
    ],
)
def test_bad_arguments_are_named(make, argument):
    with pytest.raises(ZooValueError, match=argument):
        make()


def test_unknown_router_suggests_the_closest_name():
    with pytest.raises(ValueError, match="did you mean 'top_p'"):
        build_router("top-p", D, 4)


def test_wrong_input_width():
    with pytest.raises(ZooValueError, match=r"x\.shape"):
        TopKRouter(D, 4, 2)(torch.randn(3, D + 1))
