"""MoELayer against a per-token reference (router → special → FFN → shared), its config, aux losses and errors."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from references import ffn_ref

from zoo.errors import ZooValueError
from zoo.kernels.reference import reference_moe_ffn
from zoo.moe import (
    ROUTERS,
    ExpertChoiceRouter,
    FFNExperts,
    HashRouter,
    ModuleExperts,
    MoEConfig,
    MoELayer,
    SharedExperts,
    SpecialExperts,
    TopKRouter,
    build_router,
    collect,
    count_params,
    load_balance_loss,
    router_z_loss,
    routers,
    total_aux_loss,
)

D = 7

# ---------------------------------------------------------------- per-token reference



def special_kinds(layer):
    """``{global id: (kind, index within kind)}`` for the layer's special experts."""
    kinds = {}
    if layer.special is not None:
        for kind in ("zero", "copy", "constant", "null"):
            lo, hi = layer.special.id_range(kind)
            kinds.update({e: (kind, e - lo) for e in range(lo, hi)})
    return kinds


def token_ref(layer, x_D, row_ids, row_w):
    """One token through the layer, given the router's choice ``row_ids`` (ints) and weights ``row_w`` (list)."""
    kinds = special_kinds(layer)
    special, bank, shared = layer.special, layer.experts, layer.shared
    k = len(row_ids)
    if (
        special is not None
        and special.zero_renormalize
        and any(kinds.get(e, ("",))[0] == "zero" for e in row_ids)
    ):
        row_w = [row_w[s] * 0.0 if kinds.get(row_ids[s], ("",))[0] == "zero" else row_w[s] for s in range(k)]
        total = sum(row_w[s] for s in range(k) if row_ids[s] >= 0)
        if float(total.detach()) > 0:
            row_w = [w / total for w in row_w]
    y = x_D * 0.0
    for e, w in zip(row_ids, row_w):
        if e < 0:
            continue
        if e < bank.num_experts:
            if isinstance(bank, FFNExperts):
                w3 = bank.w3[e] if bank.w3 is not None else None
                y = y + w * ffn_ref(x_D, bank.w1[e], bank.w2[e], w3, bank.activation)
            else:
                y = y + w * bank.experts[e](x_D[None])[0]
            continue
        kind, i = kinds[e]
        if kind == "copy":
            y = y + w * x_D
        elif kind == "constant":
            alpha = torch.softmax(x_D @ special.constant_mix[i], dim=-1)
            y = y + w * (alpha[0] * x_D + alpha[1] * special.constant_vectors[i])
    if shared is not None:
        s = ffn_ref(x_D, shared.w1, shared.w2, shared.w3, shared.activation)
        if shared.gate is not None:
            s = s * torch.sigmoid(x_D @ shared.gate.weight[0])
        y = y + s
    return y


def layer_ref(layer, x, routing):
    """The whole layer token by token from a routing decision; returns ``[..., D]`` like the layer."""
    x_TD = x.reshape(-1, x.shape[-1])
    rows = [
        token_ref(
            layer,
            x_TD[t],
            [int(e) for e in routing.ids[t]],
            [routing.weights[t, s] for s in range(routing.k)],
        )
        for t in range(x_TD.shape[0])
    ]
    return torch.stack(rows).reshape(x.shape)


def composed(layer, x, routing):
    """The layer rebuilt from the library's parts: special → reference_moe_ffn (the oracle) → shared."""
    x_TD = x.reshape(-1, x.shape[-1])
    y, ids, w = x_TD.new_zeros(x_TD.shape), routing.ids, routing.weights
    if layer.special is not None:
        y, ids, w = layer.special(x_TD, ids, w)
    bank = layer.experts
    y = y + reference_moe_ffn(x_TD, ids, w, bank.w1, bank.w2, bank.w3, bank.activation)
    if layer.shared is not None:
        y = y + layer.shared(x_TD)
    return y.reshape(x.shape)


def config(router, **kw):
    base = {"num_experts": 4, "k": 2, "d_hidden": 9, "activation": "swiglu", "router": router}
    base.update(kw)
    return MoEConfig(**base)


# ---------------------------------------------------------------- forward vs reference, every router


@pytest.mark.parametrize("name", sorted(ROUTERS))
def test_every_router_layer_matches_per_token_reference(name):
    torch.manual_seed(10)
    extras = {"num_copy": 1, "num_constant": 1, "num_null": 1, "num_shared": 1, "shared_gated": True}
    layer = MoELayer.from_config(config(name, **extras), D).eval()
    x = torch.randn(2, 5, D)
    token_ids = torch.randint(0, 4 + 3, (2, 5)) if name == "domain" else None
    out = layer(x, token_ids)
    assert out.y.shape == x.shape and out.y.dtype == x.dtype
    ids = out.routing.ids
    assert ids.shape[0] == 10 and ids.dtype == torch.int64
    assert int(ids.min()) >= -1 and int(ids.max()) < 4 + 3
    assert torch.all(out.routing.weights[ids < 0] == 0)
    torch.testing.assert_close(
        layer.router(x.reshape(-1, D), None if token_ids is None else token_ids.reshape(-1)).ids, ids,
        msg="eval routing must be deterministic",
    )
    with torch.no_grad():
        torch.testing.assert_close(out.y, layer_ref(layer, x, out.routing), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.y, composed(layer, x, out.routing), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(ROUTERS))
def test_every_router_layer_with_zero_experts_matches_composition(name):
    torch.manual_seed(11)
    layer = MoELayer.from_config(config(name, num_zero=2, num_copy=1, num_shared=2), D).eval()
    x = torch.randn(3, 4, D)
    out = layer(x, torch.randint(0, 4 + 3, (3, 4)) if name == "domain" else None)
    assert out.y.shape == x.shape
    with torch.no_grad():
        torch.testing.assert_close(out.y, composed(layer, x, out.routing), rtol=1e-4, atol=1e-5)


def test_layer_built_directly_equals_from_config():
    torch.manual_seed(12)
    cfg = config(
        "top_k", k=3, num_zero=1, num_copy=1, num_constant=1, num_null=1, num_shared=2, shared_gated=True
    )
    built = MoELayer.from_config(cfg, D)
    assert isinstance(built.router, TopKRouter) and built.router.k == 3 and built.router.num_experts == 8
    assert (
        isinstance(built.experts, FFNExperts)
        and built.experts.num_experts == 4
        and built.experts.d_hidden == 9
    )
    assert (
        built.special.counts == {"zero": 1, "copy": 1, "constant": 1, "null": 1}
        and built.special.first_id == 4
    )
    assert built.shared.w1.shape == (D, 18) and built.shared.gate is not None

    router = TopKRouter(D, 8, k=3)
    direct = MoELayer(
        router,
        FFNExperts(4, D, 9, "swiglu"),
        SpecialExperts(D, 4, num_zero=1, num_copy=1, num_constant=1, num_null=1),
        SharedExperts(D, 9, 2, "swiglu", gated=True),
    )
    direct.load_state_dict(built.state_dict())
    x = torch.randn(2, 3, D)
    a, b = built.eval()(x), direct.eval()(x)
    torch.testing.assert_close(a.y, b.y)
    torch.testing.assert_close(a.routing.ids, b.routing.ids)
    assert set(a.aux) == set(b.aux) == {"balance"}


def test_layer_with_heterogeneous_module_experts():
    torch.manual_seed(13)
    experts = ModuleExperts(
        [nn.Linear(D, D), nn.Sequential(nn.Linear(D, 4), nn.ReLU(), nn.Linear(4, D)), nn.Linear(D, D)]
    )
    layer = MoELayer(TopKRouter(D, 4, k=2), experts, SpecialExperts(D, 3, num_copy=1)).eval()
    x = torch.randn(9, D)
    out = layer(x)
    with torch.no_grad():
        torch.testing.assert_close(out.y, layer_ref(layer, x, out.routing), rtol=1e-5, atol=1e-6)


def test_layer_bf16_input():
    torch.manual_seed(14)
    layer = MoELayer.from_config(config("top_k", d_hidden=16, num_copy=1, num_shared=1), 8).eval()
    x = torch.randn(2, 4, 8)
    out32 = layer(x)
    out16 = layer(x.bfloat16())
    assert out16.y.dtype == torch.bfloat16
    torch.testing.assert_close(out16.routing.ids, out32.routing.ids)
    torch.testing.assert_close(out16.y.float(), out32.y, atol=5e-2, rtol=5e-2)


# ---------------------------------------------------------------- gradients of the whole layer


def topk_layer(extras):
    if not extras:
        return MoELayer(TopKRouter(D, 4, k=2), FFNExperts(4, D, 5, "gelu"))
    special = SpecialExperts(D, 4, num_zero=1, num_copy=1, num_constant=2, num_null=1)
    return MoELayer(
        TopKRouter(D, 9, k=3),
        FFNExperts(4, D, 5, "swiglu"),
        special,
        SharedExperts(D, 3, 2, "swiglu", gated=True),
    )


@pytest.mark.parametrize("extras", [False, True], ids=["ffn_only", "special_and_shared"])
def test_top_k_layer_gradients_match_per_token_reference(extras):
    torch.manual_seed(15)
    layer = topk_layer(extras).eval()
    router = layer.router
    if extras:
        with torch.no_grad():
            router.gate.weight.mul_(3.0)  # sharper routing: special experts actually get picked
    x = torch.randn(2, 6, D, requires_grad=True)
    g = torch.randn(2, 6, D)
    names, params = zip(*layer.named_parameters())
    leaves = [x, *params]

    for leaf in leaves:
        leaf.grad = None
    out = layer(x)
    out.y.backward(g)
    grads = {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in zip(["x", *names], leaves)
    }
    ids = out.routing.ids

    for leaf in leaves:
        leaf.grad = None
    rows = []
    x_TD = x.reshape(-1, D)
    for t in range(x_TD.shape[0]):
        p = torch.softmax(router.gate.weight @ x_TD[t], dim=-1)
        chosen = sorted(range(router.num_experts), key=lambda e: -float(p[e].detach()))[: router.k]
        assert set(chosen) == {int(e) for e in ids[t]}, (
            f"token {t}: router picked {ids[t].tolist()}, reference {chosen}"
        )
        total = sum(p[e] for e in chosen)
        rows.append(token_ref(layer, x_TD[t], chosen, [p[e] / total for e in chosen]))
    y_ref = torch.stack(rows).reshape(x.shape)
    y_ref.backward(g)
    grads_ref = {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in zip(["x", *names], leaves)
    }

    torch.testing.assert_close(out.y.detach(), y_ref.detach(), rtol=1e-4, atol=1e-5)
    for n, grad in grads.items():
        torch.testing.assert_close(
            grad, grads_ref[n], rtol=1e-4, atol=1e-5, msg=lambda m, n=n: f"grad of {n}: {m}"
        )
    assert grads["router.gate.weight"].abs().sum() > 0
    if extras:
        picked = {e for e in ids.flatten().tolist()}
        assert {4, 5, 6, 7} & picked and 3 in picked, (
            f"the test should exercise zero and copy/constant experts: {picked}"
        )
        assert (
            grads["special.constant_vectors"].abs().sum() > 0 and grads["shared.gate.weight"].abs().sum() > 0
        )


# ---------------------------------------------------------------- errors


def test_router_expert_count_mismatch():
    with pytest.raises(ZooValueError, match=r"^router\.num_experts=5 .*expected 4"):
        MoELayer(TopKRouter(D, 5), FFNExperts(4, D, 8))
    with pytest.raises(ZooValueError, match=r"^router\.num_experts=6 .*5 \(= 4 experts \+ 1 special"):
        MoELayer(TopKRouter(D, 6), FFNExperts(4, D, 8), SpecialExperts(D, 4, num_copy=1))


def test_bad_input_names_x():
    layer = MoELayer(TopKRouter(D, 4), FFNExperts(4, D, 8))
    with pytest.raises(ZooValueError, match=r"^x\.shape=\(2, 3, 6\)"):
        layer(torch.randn(2, 3, D - 1))
    with pytest.raises(ZooValueError, match=r"^x\.dtype="):
        layer(torch.ones(2, D, dtype=torch.long))
    with pytest.raises(ZooValueError, match=r"^x\.shape="):
        layer(torch.tensor(1.0))


def test_build_router_unknown_name_suggests():
    with pytest.raises(ZooValueError, match=r"did you mean 'top_k'\?"):
        build_router("top_kk", D, 4)
    with pytest.raises(ZooValueError, match=r"router 'top_p'.*bogus"):
        build_router("top_p", D, 4, bogus=1)
    with pytest.raises(ZooValueError, match="did you mean"):
        MoELayer.from_config(config("expert_choise"), D)
    r = build_router("expert_choice", D, 4, k=2, capacity_factor=1.0)  # k is dropped for routers without it
    assert isinstance(r, ExpertChoiceRouter) and r.capacity_factor == 1.0


# ---------------------------------------------------------------- config coefficients


@pytest.mark.parametrize(
    "router,coef,expected",
    [
        ("expert_choice", None, None),
        ("soft", None, None),
        ("expert_choice", 0.05, 0.05),
        ("top_k", None, 0.01),
        ("top_k", 0.2, 0.2),
    ],
)
def test_balance_coef_none_keeps_router_default(router, coef, expected):
    layer = MoELayer.from_config(config(router, balance_coef=coef), D).eval()
    out = layer(torch.randn(12, D))
    if expected is None:
        assert "balance" not in out.aux
    else:
        want = expected * load_balance_loss(out.routing.logits, out.routing.ids)
        torch.testing.assert_close(out.aux["balance"], want)
        assert layer.router.balance_coef == expected


def test_z_coef_applied_when_given():
    layer = MoELayer.from_config(config("top_k", z_coef=1e-3), D)
    out = layer(torch.randn(8, D))
    torch.testing.assert_close(out.aux["z_loss"], 1e-3 * router_z_loss(out.routing.logits))
    assert "z_loss" not in MoELayer.from_config(config("top_k"), D)(torch.randn(8, D)).aux


# ---------------------------------------------------------------- token ids → hash routing


@pytest.mark.parametrize("k", [1, 2])
def test_token_ids_reach_the_hash_router(k):
    torch.manual_seed(16)
    layer = MoELayer.from_config(config("hash", num_experts=6, k=k), D)
    assert isinstance(layer.router, HashRouter)
    token_ids = torch.tensor([[5, 7, 5, 9, 7, 5], [9, 9, 1, 5, 2, 7]])
    x = torch.randn(2, 6, D)
    out = layer(x, token_ids)
    ids = out.routing.ids
    flat = token_ids.reshape(-1).tolist()
    for a in range(len(flat)):
        for b in range(len(flat)):
            if flat[a] == flat[b]:
                assert torch.equal(ids[a], ids[b]), f"tokens {a} and {b} share id {flat[a]} but not experts"
    torch.testing.assert_close(ids, layer.router(x.reshape(-1, D), token_ids.reshape(-1)).ids)
    torch.testing.assert_close(
        layer(torch.randn_like(x), token_ids).routing.ids, ids, msg="only the token id matters"
    )
    same_x = x[:1, :1].expand(2, 6, D)
    spread = layer(same_x, torch.arange(12).reshape(2, 6)).routing.ids
    assert len(set(spread[:, 0].tolist())) > 1, "identical representations with different ids must spread"


# ---------------------------------------------------------------- aux losses across layers


def test_collect_and_total_aux_loss():
    torch.manual_seed(17)
    enc = MoELayer.from_config(config("top_k", z_coef=1e-2), D)
    dec = MoELayer.from_config(config("top_p"), D)
    x = torch.randn(10, D)
    outputs = {"enc": enc(x), "dec": dec(x)}
    aux, stats = collect(outputs)
    assert set(aux) == {"enc/balance", "enc/z_loss", "dec/balance", "dec/entropy"}
    for key, value in aux.items():
        layer, name = key.split("/")
        assert value is outputs[layer].aux[name]
    assert set(stats) == {"enc", "dec"} and stats["enc"] is outputs["enc"].stats
    total = total_aux_loss(aux)
    manual = sum(v.item() for v in aux.values())
    assert total.shape == () and total.item() == pytest.approx(manual, rel=1e-6)
    total.backward()
    assert enc.router.gate.weight.grad.abs().sum() > 0 and dec.router.gate.weight.grad.abs().sum() > 0
    assert total_aux_loss({}) is None
    assert collect({}) == ({}, {})
    assert set(routers(nn.ModuleList([enc, dec]))) == {enc.router, dec.router}


@pytest.mark.parametrize("field", ["balance_coef", "z_coef"])
def test_loss_coefficients_are_refused_for_the_unlearned_hash_router(field):
    with pytest.raises(ZooValueError, match=f"moe.{field}=.*no learned gate"):
        MoELayer.from_config(MoEConfig(num_experts=4, k=1, d_hidden=8, router="hash", **{field: 0.01}), 8)


@pytest.mark.parametrize("router", ["soft", "top_k", "top_p"])
def test_expert_outputs_are_the_slots_that_y_combines(router):
    """``expert_outputs=True`` returns each routed FFN slot's output; y is unchanged and their weighted sum."""
    torch.manual_seed(3)
    layer = MoELayer.from_config(MoEConfig(num_experts=4, k=2, d_hidden=8, router=router, num_copy=1), D).eval()
    x = torch.randn(3, 4, D)
    plain = layer(x)
    out = layer(x, expert_outputs=True)
    torch.testing.assert_close(out.y, plain.y)
    ids = out.routing.ids.view(3, 4, -1)
    assert out.expert_outputs.shape == (*ids.shape, D)
    bank = layer.experts
    for b in range(3):
        for t in range(4):
            for s, e in enumerate(ids[b, t].tolist()):
                if e < 0 or e >= bank.num_experts:  # empty or special (copy) slot
                    assert torch.all(out.expert_outputs[b, t, s] == 0)
                else:
                    expected = ffn_ref(x[b, t], bank.w1[e], bank.w2[e], None, bank.activation)
                    torch.testing.assert_close(out.expert_outputs[b, t, s], expected, rtol=1e-5, atol=1e-6)


class _OneOf(nn.Module):
    """Runs one of its MoE sub-networks per input, like one model per dataset."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.nets = nn.ModuleList(MoELayer.from_config(MoEConfig(num_experts=4, k=1, d_hidden=8), 6)
                                        for _ in range(n))

    def inactive_params(self) -> int:
        total, active = count_params(self.nets[0])
        return total * len(self.nets) - active


def test_count_params_of_a_module_that_runs_one_sub_network_counts_its_moe_layers_once():
    one = MoELayer.from_config(MoEConfig(num_experts=4, k=1, d_hidden=8), 6)
    total1, active1 = count_params(one)
    assert active1 < total1
    total, active = count_params(nn.Sequential(_OneOf(3), nn.Linear(6, 6)))
    assert total == 3 * total1 + 42 and active == active1 + 42


def test_route_on_routes_by_other_features_than_the_experts_read():
    """Experts read raw 3-D points, the gate scores an 8-d encoding of them (Switch-NeRF); a per-token loop agrees,
    gradients reach the gate through the top-1 weight, and shape mistakes are named."""
    torch.manual_seed(0)
    experts = ModuleExperts([nn.Sequential(nn.Linear(3, 5), nn.Tanh()) for _ in range(3)])
    router = TopKRouter(8, 3, k=1, capacity_factor=None)
    layer = MoELayer(router, experts)
    points = torch.randn(2, 7, 3)
    features = torch.randn(2, 7, 8, requires_grad=True)
    out = layer(points, route_on=features)
    assert out.y.shape == (2, 7, 5)
    probs = torch.softmax(features.detach().reshape(-1, 8) @ router.gate.weight.T, -1)
    for t, (p, x) in enumerate(zip(probs, points.reshape(-1, 3))):
        e = int(p.argmax())
        torch.testing.assert_close(out.y.reshape(-1, 5)[t], p[e] * experts.experts[e](x))
    out.y.sum().backward()
    assert router.gate.weight.grad.abs().sum() > 0 and features.grad.abs().sum() > 0
    with pytest.raises(ZooValueError, match="route_on.shape"):
        layer(points, route_on=torch.randn(2, 6, 8))
    with pytest.raises(ZooValueError, match="x.shape"):
        layer(points)
