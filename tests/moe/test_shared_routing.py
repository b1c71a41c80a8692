"""Top-p routing that also weights the shared experts (UniMoE-Audio) and router-input jitter.

The layer is checked against a plain per-token loop written from the definition: softmax over the routable
("dynamic") logits, sort, keep ``k = 1 + #{j : cumsum_j < p}``, then one softmax over the kept and the shared
logits together, ``y = Σ_i w_i E_i(x) + Σ_s w_s Shared_s(x)`` with null experts contributing 0.
"""

from __future__ import annotations

import math

import pytest
import torch

from references import ffn_ref

from zoo.errors import ZooValueError
from zoo.moe import FFNExperts, MoEConfig, MoELayer, SharedExperts, TopPRouter
from zoo.moe.losses import load_balance_loss, routing_entropy


def build(D, E, *, num_null=0, num_shared=2, p=0.7, d_hidden=5, activation="swiglu", router_kwargs=None):
    cfg = MoEConfig(num_experts=E, d_hidden=d_hidden, activation=activation, router="top_p", num_null=num_null,
                    num_shared=num_shared, shared_routed=True, router_kwargs={"p": p, **(router_kwargs or {})})
    return MoELayer.from_config(cfg, D)


def reference(layer, x_TD, x_route_TD=None):
    """Per-token loop; the router reads ``x_route_TD`` (jittered input) when given, the experts read ``x_TD``."""
    router, bank, shared = layer.router, layer.experts, layer.shared
    x_route_TD = x_TD if x_route_TD is None else x_route_TD
    F_, S = shared.d_hidden, shared.num_shared
    ys, ks = [], []
    for t in range(x_TD.shape[0]):
        x, xr = x_TD[t], x_route_TD[t].float()
        z = router.gate.weight @ xr
        z_shared = router.shared_gate.weight @ xr
        probs = torch.softmax(z, -1)
        order = sorted(range(len(z)), key=lambda e: -float(probs[e].detach()))
        cumsum = torch.cumsum(probs.detach()[order], 0)
        k = min(1 + int((cumsum < router.p).sum()), router.k_max or len(z))
        kept = order[:k]
        ks.append(k)
        top = max([float(z[e].detach()) for e in kept] + [float(v) for v in z_shared.detach()])
        num = {e: torch.exp(z[e] - top) for e in kept}
        num_shared = [torch.exp(z_shared[s] - top) for s in range(S)]
        denom = sum(num.values()) + sum(num_shared)
        y = torch.zeros_like(x)
        for e, n in num.items():
            if e < bank.num_experts:  # a null expert outputs 0
                w3 = bank.w3[e] if bank.w3 is not None else None
                y = y + (n / denom) * ffn_ref(x, bank.w1[e], bank.w2[e], w3, bank.activation)
        for s in range(S):
            cols = slice(s * F_, (s + 1) * F_)
            w3 = shared.w3[:, cols] if shared.w3 is not None else None
            y = y + (num_shared[s] / denom) * ffn_ref(x, shared.w1[:, cols], shared.w2[cols], w3, shared.activation)
        ys.append(y)
    return torch.stack(ys), ks


def inputs_avoiding(layer, T, dead_expert, seed):
    """Tokens with a positive component along ``u`` and a gate row ``-10·u`` for ``dead_expert``: it gets none."""
    gen = torch.Generator().manual_seed(seed)
    D = layer.d_model
    u = torch.randn(D, generator=gen)
    u = u / u.norm()
    x = torch.randn(T, D, generator=gen) * 1.5
    x = x - (x @ u)[:, None] * u + (1.0 + torch.rand(T, generator=gen))[:, None] * u
    with torch.no_grad():
        layer.router.gate.weight[dead_expert] = -10.0 * u
    return x


def params_of(layer):
    names, params = zip(*[(n, p) for n, p in layer.named_parameters()])
    return list(names), list(params)


CASES = [  # D, T, E, num_null, num_shared, p, activation, k_max
    pytest.param(7, 13, 8, 1, 2, 0.7, "swiglu", None, id="unimoe_audio"),
    pytest.param(6, 11, 5, 0, 1, 0.9, "gelu", None, id="one_shared"),
    pytest.param(5, 9, 6, 2, 3, 0.95, "silu", 2, id="k_max"),
]


@pytest.mark.parametrize("D, T, E, num_null, num_shared, p, activation, k_max", CASES)
def test_layer_and_gradients_match_per_token_loop(D, T, E, num_null, num_shared, p, activation, k_max):
    torch.manual_seed(0)
    layer = build(D, E, num_null=num_null, num_shared=num_shared, p=p, activation=activation,
                  router_kwargs={"k_max": k_max} if k_max else None).eval()
    dead = 1
    x = inputs_avoiding(layer, T, dead, seed=1).requires_grad_()
    g = torch.randn(T, D)
    names, params = params_of(layer)

    out = layer(x)
    y_ref, ks = reference(layer, x)
    torch.testing.assert_close(out.y, y_ref, rtol=1e-5, atol=1e-6)

    ids = out.routing.ids
    assert sorted(int((ids[t] >= 0).sum()) for t in range(T)) == sorted(ks)
    assert max(ks) > 1, "the case should route some tokens to several experts"
    assert not (ids == dead).any(), "the dead expert should get no token"
    if num_null:
        assert (ids >= E).any(), "some token should pick a null expert"
    if k_max:
        assert out.routing.k <= k_max
    total = out.routing.weights.sum(-1) + out.routing.shared_weights.sum(-1)
    torch.testing.assert_close(total, torch.ones(T))

    grads = torch.autograd.grad((out.y * g).sum(), [x, *params], allow_unused=True)
    grads_ref = torch.autograd.grad((y_ref * g).sum(), [x, *params], allow_unused=True)
    for name, a, b in zip(["x", *names], grads, grads_ref):
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"grad of {n}: {m}")
    by_name = dict(zip(["x", *names], grads))
    assert by_name["router.gate.weight"].abs().sum() > 0 and by_name["router.shared_gate.weight"].abs().sum() > 0
    assert torch.all(by_name["experts.w1"][dead] == 0), "an expert without tokens gets no gradient"


def test_router_outputs_and_aux_losses_use_routable_logits_only():
    torch.manual_seed(0)
    D, E, S = 7, 9, 2
    router = TopPRouter(D, E, p=0.7, shared=S, balance_coef=0.01, entropy_coef=1e-4)
    plain = TopPRouter(D, E, p=0.7, balance_coef=0.01, entropy_coef=1e-4)
    plain.gate.weight.data.copy_(router.gate.weight.data)
    assert router.shared_gate.weight.shape == (S, D) and router.shared_gate.weight.dtype == torch.float32
    x = torch.randn(13, D) * 2
    got, want = router(x), plain(x)
    assert torch.equal(got.ids, want.ids) and torch.equal(got.logits, want.logits)
    assert got.logits.shape == (13, E) and got.shared_weights.shape == (13, S)
    assert torch.equal(got.weights == 0, want.weights == 0)
    assert got.aux.keys() == want.aux.keys() == {"balance", "entropy"}
    torch.testing.assert_close(got.aux["balance"], 0.01 * load_balance_loss(got.logits, got.ids))
    torch.testing.assert_close(got.aux["entropy"], 1e-4 * routing_entropy(got.logits))
    for t in range(13):  # the joint softmax rescales the kept probabilities by one factor per token
        kept = got.ids[t] >= 0
        ratio = got.weights[t][kept] / want.weights[t][kept]
        torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))


def test_without_shared_routing_outputs_are_the_old_ones():
    torch.manual_seed(0)
    D, E = 7, 6
    router = TopPRouter(D, E, p=0.6).train()
    assert not hasattr(router, "shared_gate") and router.num_shared == 0
    x = torch.randn(13, D)
    rng = torch.get_rng_state()
    routing = router(x)
    assert torch.equal(torch.get_rng_state(), rng), "no jitter: no random draw"
    assert routing.shared_weights is None
    probs = torch.softmax(x @ router.gate.weight.t(), -1)
    kept = routing.ids >= 0
    assert torch.equal(routing.weights, torch.where(kept, probs.gather(1, routing.ids.clamp_min(0)), 0.0))

    cfg = MoEConfig(num_experts=E, d_hidden=5, activation="swiglu", router="top_p", num_shared=2)
    layer = MoELayer.from_config(cfg, D).eval()
    assert layer.router.num_shared == 0
    out = layer(x)
    assert out.routing.shared_weights is None
    shared = layer.shared
    old_shared = (torch.nn.functional.silu(x @ shared.w1) * (x @ shared.w3)) @ shared.w2
    assert torch.equal(shared(x), old_shared)
    assert torch.equal(out.y, layer.experts(x, out.routing.ids, out.routing.weights) + old_shared)


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_weighted_shared_experts_match_per_expert_loop(activation):
    torch.manual_seed(0)
    D, F_, S, T = 7, 4, 3, 13
    shared = SharedExperts(D, F_, S, activation)
    x, w = torch.randn(T, D), torch.rand(T, S)
    y = shared(x, w)
    for t in range(T):
        want = sum(w[t, s] * ffn_ref(x[t], shared.w1[:, s * F_:(s + 1) * F_], shared.w2[s * F_:(s + 1) * F_],
                                     None if shared.w3 is None else shared.w3[:, s * F_:(s + 1) * F_], activation)
                   for s in range(S))
        torch.testing.assert_close(y[t], want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shared(x, torch.ones(T, S)), shared(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ZooValueError, match=r"^shared weights.shape=\(13, 2\)"):
        shared(x, torch.rand(T, 2))


def test_jitter_is_training_only_seeded_and_spares_the_experts():
    torch.manual_seed(0)
    D, E, T, eps = 7, 8, 13, 0.01
    layer = build(D, E, num_null=1, router_kwargs={"jitter": eps})
    assert layer.router.jitter == eps
    x = torch.randn(T, D)

    layer.eval()
    clean = layer(x)
    layer.router.jitter = 0.0
    assert torch.equal(clean.y, layer(x).y), "eval is never jittered"
    layer.router.jitter = eps

    layer.train()
    torch.manual_seed(5)
    first = layer(x)
    torch.manual_seed(5)
    again = layer(x)
    assert torch.equal(first.y, again.y) and torch.equal(first.routing.logits, again.routing.logits)
    assert not torch.equal(first.routing.logits, clean.routing.logits)

    torch.manual_seed(5)
    x_route = x * torch.empty_like(x).uniform_(1 - eps, 1 + eps)
    assert torch.all((x_route / x - 1).abs() <= eps * (1 + 1e-6))
    torch.testing.assert_close(first.routing.logits, x_route @ layer.router.gate.weight.t())
    y_ref, _ = reference(layer, x, x_route)
    torch.testing.assert_close(first.y, y_ref, rtol=1e-5, atol=1e-6)


def test_empty_batch_and_bf16_autocast():
    torch.manual_seed(0)
    layer = build(8, 8, num_null=1, router_kwargs={"jitter": 0.01}).train()
    empty = layer(torch.randn(0, 8))
    assert empty.y.shape == (0, 8) and empty.routing.shared_weights.shape == (0, 2)
    assert all(torch.isfinite(v) for v in empty.aux.values())
    x = torch.randn(3, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.routing.weights.dtype == out.routing.shared_weights.dtype == torch.float32
    assert out.y.shape == x.shape and torch.isfinite(out.y).all()


def test_config_builds_the_unimoe_audio_layer():
    layer = build(7, 8, num_null=1, num_shared=2, router_kwargs={"jitter": 0.01})
    assert layer.router.num_experts == 9 and layer.router.num_shared == 2 and layer.router.p == 0.7
    assert layer.shared.num_shared == 2 and layer.shared.w1.shape == (7, 10) and layer.shared.gate is None
    assert layer.special.counts["null"] == 1
    assert math.isclose(layer.router.jitter, 0.01)


@pytest.mark.parametrize("overrides", [
    {"num_shared": 0},
    {"router": "top_k"},
    {"shared_gated": True},
], ids=["no_shared", "not_top_p", "gated"])
def test_config_rejects_shared_routing_it_cannot_build(overrides):
    kwargs = {"router": "top_p", "num_shared": 2, "shared_routed": True, **overrides}
    with pytest.raises(ZooValueError, match=r"^moe.shared_routed=True is not allowed; expected moe.num_shared >= 1"):
        MoEConfig(**kwargs)


def test_layer_and_router_reject_mismatched_shared_experts():
    D, E = 7, 4
    router = TopPRouter(D, E, shared=2)
    bank = FFNExperts(E, D, 5)
    with pytest.raises(ZooValueError, match=r"^shared.num_shared=1 is not allowed; expected 2"):
        MoELayer(router, bank, shared=SharedExperts(D, 5, 1))
    with pytest.raises(ZooValueError, match=r"^shared.num_shared=0 is not allowed; expected 2"):
        MoELayer(router, bank)
    MoELayer(TopPRouter(D, E), bank, shared=SharedExperts(D, 5, 1))  # unrouted shared experts stay allowed
    with pytest.raises(ZooValueError, match=r"^shared=-1"):
        TopPRouter(D, E, shared=-1)
    with pytest.raises(ZooValueError, match=r"^jitter=1.5"):
        TopPRouter(D, E, jitter=1.5)
