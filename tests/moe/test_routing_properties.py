"""Property tests: every registered router keeps the routing contract for any sizes, options and inputs.

The contract (docs/architecture.md, "The MoE contract"): ``ids[T, k]`` int64 in [−1, E) with no expert twice in
a row, ``weights[T, k]`` finite, ≥ 0 and 0 where the id is −1, fp32 ``logits[T, E]``, finite aux losses and
finite gradients. How much weight a token carries is each router's documented rule (:func:`check_mass`).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.moe import ROUTERS, build_router
from zoo.moe.routing import capacity

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True)
EPS = 1e-5


@st.composite
def router_options(draw, name: str, E: int) -> dict:
    """The keyword arguments ``name`` takes, drawn over their documented ranges."""
    k = draw(st.integers(1, E))
    capacity_factor = draw(st.none() | st.floats(0.05, 3.0))
    k_max = draw(st.none() | st.integers(1, E))
    if name == "top_k":
        noise = draw(st.booleans())
        return {"k": k, "capacity_factor": capacity_factor, "renormalize": draw(st.none() | st.booleans()),
                "noise": noise, "noise_std": None if noise else draw(st.none() | st.floats(0.0, 2.0))}
    if name == "aux_free":
        return {"k": k, "capacity_factor": capacity_factor, "score": draw(st.sampled_from(["sigmoid", "softmax"])),
                "renormalize": draw(st.none() | st.booleans())}
    if name == "expert_choice":
        return {"capacity_factor": draw(st.floats(0.05, 4.0))}
    if name == "top_p":
        return {"p": draw(st.floats(1e-3, 1.0)), "k_max": k_max}
    if name == "threshold":
        return {"threshold": draw(st.floats(1e-3, 1.0)), "k_max": k_max, "renormalize": draw(st.booleans())}
    if name == "hash":
        return {"k": k, "hash_bits": draw(st.integers(1, 62)), "seed": draw(st.integers(0, 100))}
    if name == "dense_to_sparse":
        tau_end = draw(st.floats(0.05, 2.0))
        return {"k": k, "tau_start": tau_end * draw(st.floats(1.0, 10.0)), "tau_end": tau_end,
                "anneal_steps": draw(st.integers(0, 8)), "threshold": draw(st.floats(0.0, 0.5))}
    return {}


@st.composite
def cases(draw, name: str):
    """A router ``name`` (built, with random state where it has some) and a batch ``x[T, D]`` for it."""
    T, D, E = draw(st.integers(1, 33)), draw(st.integers(1, 17)), draw(st.integers(1, 9))
    options = draw(router_options(name, E))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    router = build_router(name, D, E, **options).train(draw(st.booleans()))
    if name == "aux_free":
        router.bias.copy_(torch.randn(E) * draw(st.sampled_from([0.0, 0.1, 10.0])))
    if name == "dense_to_sparse":
        router.on_optimizer_step(draw(st.integers(-1, 10)))
    x = torch.randn(T, D) * draw(st.sampled_from([1e-4, 1.0, 30.0, 1e3]))
    token_ids = torch.randint(-(2**62), 2**62, (T,)) if name == "hash" and draw(st.booleans()) else None
    if name == "domain":
        token_ids = torch.randint(0, E, (T,))
    return router, x, token_ids


def check_contract(routing, T: int, E: int) -> None:
    ids, weights = routing.ids, routing.weights
    assert ids.dtype == torch.int64 and ids.shape == weights.shape and ids.shape[0] == T
    assert 1 <= ids.shape[1] <= E
    assert routing.logits.shape == (T, E) and routing.logits.dtype == torch.float32
    assert ((ids >= -1) & (ids < E)).all(), ids
    assert torch.isfinite(weights).all() and (weights >= 0).all(), weights
    assert (weights[ids < 0] == 0).all(), "a slot with no expert carries weight"
    for row in ids:
        valid = row[row >= 0]
        assert len(valid.unique()) == len(valid), f"an expert twice in one token's slots: {row.tolist()}"
    for key, value in routing.aux.items():
        assert torch.isfinite(value).all(), key
    if routing.drop_rate is not None:
        assert 0 <= float(routing.drop_rate) <= 1


def check_capacity(name: str, router, routing, T: int, E: int) -> None:
    """Top-k and aux-free drop beyond ``ceil(cf·T·k/E)`` per expert; expert choice fills exactly ``C`` per expert."""
    counts = torch.bincount(routing.ids[routing.ids >= 0], minlength=E)
    if name == "expert_choice":
        assert (counts == min(T, math.ceil(T * router.capacity_factor / E))).all(), counts
        unpicked = (routing.ids < 0).all(1).float().mean()
        assert torch.allclose(routing.drop_rate, unpicked), "drop_rate is the fraction of tokens no expert took"
    elif getattr(router, "capacity_factor", None) is not None:
        assert (counts <= capacity(T, router.k, E, router.capacity_factor)).all(), counts
        kept = routing.ids >= 0
        assert (routing.ids[kept] == routing.requested_ids[kept]).all(), "capacity may drop a choice, never change it"


def check_mass(name: str, router, routing) -> None:
    """Each router's documented rule for the weight a token carries (``sum`` over its slots)."""
    weights, ids = routing.weights, routing.ids
    total = weights.sum(1)
    dropped = ((ids < 0).any(1) if routing.requested_ids is not None else torch.zeros_like(total, dtype=torch.bool))
    if name in ("soft", "hash", "domain"):
        assert torch.allclose(total, torch.ones_like(total), atol=EPS), total
    elif name in ("top_k", "aux_free"):
        if router.renormalize:  # the k kept scores renormalised; a capacity drop leaves less than 1
            assert torch.allclose(total[~dropped], torch.ones_like(total[~dropped]), atol=EPS), total
            assert (total <= 1 + EPS).all(), total
        elif name == "aux_free" and router.score == "sigmoid":  # raw sigmoid scores, each ≤ 1
            assert (weights <= 1 + EPS).all(), weights
        else:  # raw softmax probabilities of the kept experts
            assert (total <= 1 + EPS).all(), total
    elif name == "top_p":  # the smallest prefix whose mass reaches p, the crossing expert included
        assert (total <= 1 + EPS).all(), total
        if router.k_max is None:
            assert (total >= router.p - EPS).all(), (total, router.p)
    elif name == "threshold" and router.renormalize:
        assert torch.allclose(total, torch.ones_like(total), atol=EPS), total
    else:  # threshold, expert choice, dense-to-sparse: raw probabilities or gates of the kept experts
        assert (total <= 1 + EPS).all(), total


@pytest.mark.parametrize("name", sorted(ROUTERS))
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_every_router_keeps_the_contract(name, data, seed):
    router, x, token_ids = data.draw(cases(name))
    T, E = x.shape[0], router.num_experts
    routing = router(x.requires_grad_(), token_ids)
    check_contract(routing, T, E)
    check_capacity(name, router, routing, T, E)
    check_mass(name, router, routing)
    if router.learned and name != "domain":  # domain weights are constant 1: nothing to differentiate
        c = torch.randn(routing.weights.shape, generator=torch.Generator().manual_seed(seed))
        ((routing.weights * c).sum() + sum(routing.aux.values(), torch.zeros(()))).backward()
        for pname, param in [("x", x), *router.named_parameters()]:
            assert param.grad is None or torch.isfinite(param.grad).all(), f"non-finite gradient of {pname}"


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 33), st.sampled_from([1e-4, 1.0, 1e3]))
def test_k_equal_to_e_routes_every_token_to_every_expert(E, T, scale):
    """With k = E the fixed-k routers pick every expert exactly once per token."""
    x = torch.randn(T, 5) * scale
    for name in ("top_k", "aux_free", "hash", "dense_to_sparse"):
        routing = build_router(name, 5, E, k=E).eval()(x)
        assert (routing.ids.sort(1).values == torch.arange(E)).all(), name


@pytest.mark.parametrize("E, k", [(1, 1), (3, 2)])
def test_aux_free_renormalised_weights_sum_to_one_when_scores_underflow(E, k):
    """Chosen sigmoid scores that are all 0 in fp32 (sigmoid of −200) still share a weight of 1 between them."""
    router = build_router("aux_free", 1, E, k=k, renormalize=True).eval()
    router.gate.weight.data.fill_(-200.0)
    routing = router(torch.ones(4, 1))
    torch.testing.assert_close(routing.weights.sum(1), torch.ones(4))
