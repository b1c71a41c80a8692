"""Domain routing, fixed-std top-k jitter and Shazeer's importance and smooth load losses against plain loops."""

from __future__ import annotations

import math

import pytest
import torch
from references import ffn_ref

from zoo.errors import ZooValueError
from zoo.moe import (
    ROUTERS,
    DomainRouter,
    FFNExperts,
    MoELayer,
    TopKRouter,
    build_router,
    count_params,
    importance_loss,
    smooth_load_loss,
)

D = 6


# ---------------------------------------------------------------- domain router


def test_domain_router_sends_each_token_to_its_id_with_weight_one():
    torch.manual_seed(0)
    router = DomainRouter(D, 5)
    x, ids = torch.randn(9, D), torch.tensor([4, 0, 2, 2, 1, 3, 0, 4, 4])
    routing = router(x, ids)
    assert routing.ids.tolist() == [[i] for i in ids.tolist()]
    assert torch.equal(routing.weights, torch.ones(9, 1))
    torch.testing.assert_close(routing.logits, x @ router.gate.weight.t())
    assert routing.aux == {} and routing.requested_ids is None


def test_domain_router_gate_never_changes_the_choice_but_learns_from_a_loss_on_its_logits():
    torch.manual_seed(1)
    router = DomainRouter(D, 3)
    x, ids = torch.randn(12, D), torch.randint(0, 3, (12,))
    before = router(x, ids).ids
    router.gate.weight.data.normal_(std=30.0)
    assert torch.equal(router(x, ids).ids, before)
    torch.nn.functional.cross_entropy(router(x, ids).logits, ids).backward()
    assert router.gate.weight.grad is not None and router.gate.weight.grad.abs().sum() > 0


def test_domain_router_is_registered_with_k_one():
    assert ROUTERS["domain"] is DomainRouter
    router = build_router("domain", D, 4, k=3)  # k is not one of its arguments: ignored like for soft gates
    assert isinstance(router, DomainRouter) and router.k == 1


def test_domain_layer_equals_each_token_through_its_expert():
    torch.manual_seed(2)
    layer = MoELayer(DomainRouter(D, 4), FFNExperts(4, D, 5))
    x, ids = torch.randn(2, 7, D), torch.randint(0, 4, (2, 7))
    out = layer(x, ids)
    bank = layer.experts
    ref = torch.stack([ffn_ref(x_D, bank.w1[int(e)], bank.w2[int(e)], None, "gelu")
                       for x_D, e in zip(x.reshape(-1, D), ids.reshape(-1))]).reshape(x.shape)
    torch.testing.assert_close(out.y, ref, rtol=1e-5, atol=1e-6)
    assert out.stats.tokens.tolist() == torch.bincount(ids.reshape(-1), minlength=4).tolist()


def test_domain_layer_counts_one_expert_active():
    layer = MoELayer(DomainRouter(D, 4), FFNExperts(4, D, 5))
    total, active = count_params(layer)
    per_expert = 2 * D * 5
    assert total == 4 * per_expert + D * 4 and active == per_expert + D * 4


def test_domain_router_refuses_missing_or_bad_ids():
    router = DomainRouter(D, 3)
    x = torch.randn(4, D)
    with pytest.raises(ZooValueError, match="token_ids"):
        router(x)
    with pytest.raises(ZooValueError, match=r"expert ids in \[0, 3\)"):
        router(x, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ZooValueError, match=r"expert ids in \[0, 3\)"):
        router(x, torch.tensor([0, -1, 2, 0]))
    with pytest.raises(ZooValueError, match="token_ids.shape"):
        router(x, torch.tensor([0, 1]))


# ---------------------------------------------------------------- fixed-std jitter


def test_noise_std_jitters_selection_in_training_only_and_keeps_clean_logits():
    torch.manual_seed(3)
    router = TopKRouter(D, 4, 1, noise_std=0.25)
    x = torch.randn(2000, D) * 0.1  # small logits: the jitter decides many choices
    clean = (x @ router.gate.weight.t()).detach()
    router.eval()
    routing = router(x)
    assert torch.equal(routing.ids[:, 0], clean.argmax(-1))
    router.train()
    first, second = router(x), router(x)
    assert not torch.equal(first.ids, second.ids)
    torch.testing.assert_close(first.logits, clean)
    with torch.no_grad():
        noise = router.selection_scores(clean, x) - clean
    assert abs(float(noise.std()) - 0.25) < 0.01 and abs(float(noise.mean())) < 0.01


def test_noise_std_weights_are_the_noisy_softmax_of_the_chosen_expert():
    torch.manual_seed(4)
    router = TopKRouter(D, 5, 2, noise_std=0.2, renormalize=False).train()
    x = torch.randn(50, D)
    torch.manual_seed(5)
    routing = router(x)
    torch.manual_seed(5)
    scores = router.selection_scores(x @ router.gate.weight.t(), x)
    probs = torch.softmax(scores, -1)
    torch.testing.assert_close(routing.weights, probs.gather(1, routing.ids))
    assert torch.equal(routing.ids, probs.topk(2, -1).indices)


def test_noise_std_and_learned_noise_are_exclusive():
    with pytest.raises(ZooValueError, match="exclusive"):
        TopKRouter(D, 4, 1, noise=True, noise_std=0.25)
    with pytest.raises(ZooValueError, match="noise_std"):
        TopKRouter(D, 4, 1, noise_std=-1.0)


# ---------------------------------------------------------------- importance and smooth load losses


def cv2_loop(values):
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values) / mean**2


def importance_loop(logits):
    T, E = logits.shape
    return cv2_loop([sum(torch.softmax(logits[t], -1)[e] for t in range(T)) for e in range(E)])


def smooth_load_loop(logits, k, sigma):
    """``load_e = Σ_t Φ((z_te − kth largest of the other experts' logits) / σ)``, written out per token."""
    T, E = logits.shape
    loads = []
    for e in range(E):
        load = 0.0
        for t in range(T):
            others = sorted((logits[t, j] for j in range(E) if j != e), key=lambda v: float(v.detach()), reverse=True)
            z = (logits[t, e] - others[k - 1]) / sigma
            load = load + 0.5 * (1 + torch.erf(z / math.sqrt(2)))
        loads.append(load)
    return cv2_loop(loads)


def test_importance_loss_equals_the_loop():
    torch.manual_seed(6)
    logits = torch.randn(11, 4)
    torch.testing.assert_close(importance_loss(logits), importance_loop(logits))


@pytest.mark.parametrize("k, sigma", [(1, 0.25), (2, 1.0), (3, 0.5)])
def test_smooth_load_loss_and_its_gradient_equal_the_loop(k, sigma):
    torch.manual_seed(7 + k)
    logits = torch.randn(13, 5, requires_grad=True)
    got = smooth_load_loss(logits, k, sigma)
    (grad,) = torch.autograd.grad(got, logits)
    ref = smooth_load_loop(logits, k, sigma)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-7)


def test_smooth_load_loss_edges():
    assert smooth_load_loss(torch.zeros(8, 4), 1, 0.25).item() == pytest.approx(0.0, abs=1e-12)
    assert smooth_load_loss(torch.randn(6, 3), 3, 0.25).item() == 0.0  # k = E: every expert always chosen
    assert smooth_load_loss(torch.randn(0, 3), 1, 0.25).item() == 0.0
    collapsed = torch.tensor([[20.0, 0.0, 0.0]] * 4)  # load [4, 0, 0]: CV² = Var / mean² = 2
    assert smooth_load_loss(collapsed, 1, 0.1).item() == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ZooValueError, match="k="):
        smooth_load_loss(torch.randn(4, 3), 4, 0.25)
    with pytest.raises(ZooValueError, match="noise_std"):
        smooth_load_loss(torch.randn(4, 3), 1, 0.0)


def test_eval_dropless_lifts_the_capacity_limit_in_eval_mode_only():
    torch.manual_seed(0)
    router = TopKRouter(8, 4, 1, capacity_factor=1.0, eval_dropless=True)
    x = torch.randn(64, 8)
    with torch.no_grad():
        router.gate.weight.zero_()
        router.gate.weight[0, 0] = 10.0
    x[:, 0] = x[:, 0].abs() + 1.0  # expert 0's logit is the only positive one: every token's first choice
    router.train()
    assert (router(x).ids == -1).any()
    router.eval()
    routed = router(x)
    assert (routed.ids[:, 0] == 0).all() and routed.drop_rate is None
    strict = TopKRouter(8, 4, 1, capacity_factor=1.0).eval()
    strict.load_state_dict(router.state_dict())
    assert (strict(x).ids == -1).any()


def test_domain_router_capacity_drops_like_top_k_and_lifts_in_eval_when_asked():
    from zoo.moe.routing import apply_capacity

    torch.manual_seed(0)
    ids = torch.tensor([0, 0, 0, 0, 1, 2, 0, 1])
    router = DomainRouter(4, 3, capacity_factor=1.0, eval_dropless=True).train()
    routing = router(torch.randn(8, 4), ids)
    want_ids, want_weights, want_drop = apply_capacity(ids[:, None], torch.ones(8, 1), 3, 1.0)
    assert torch.equal(routing.ids, want_ids) and torch.equal(routing.weights, want_weights)
    assert (routing.ids[:, 0] == -1).sum() == 2 and float(routing.drop_rate) == float(want_drop)
    assert torch.equal(routing.requested_ids[:, 0], ids)
    router.eval()
    assert torch.equal(router(torch.randn(8, 4), ids).ids[:, 0], ids)
    with pytest.raises(ZooValueError, match="capacity_factor"):
        DomainRouter(4, 3, capacity_factor=0.0)
