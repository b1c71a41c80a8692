"""Recsys models: shapes, gates that sum to 1, HoME's hierarchy mask / feature gate / self-gate, MMoE against a
per-sample loop, AW-MoE's contrastive loss, gradients to every weighted expert, a seeded learning check and the
ablation flags."""

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import ZooValueError
from zoo.moe import FFNExperts, ModuleExperts
from zoo.tasks.recsys.config import ARCHS
from zoo.tasks.recsys.models import (
    MODELS,
    AWMoE,
    Diagnostics,
    FeatureGate,
    HoME,
    InputSpec,
    MMoE,
    RecsysOutput,
    build_model,
    info_nce,
    param_counts,
)

SPEC = InputSpec([7, 11, 5], embed_dim=8, dense_dim=3, item_vocab=30)
T = 3
GROUPS = [[0], [1, 2]]
SMALL = {
    "shared_bottom": {"hidden": 16},
    "mmoe": {"num_experts": 4, "expert_hidden": 16},
    "cgc": {"num_shared": 2, "experts_per_task": 1, "expert_hidden": 16},
    "ple": {"num_shared": 2, "experts_per_task": 1, "expert_hidden": 16},
    "home": {"task_groups": GROUPS, "expert_hidden": 16, "feature_gate_rank": 4},
    "din": {"mlp_hidden": (16,)},
    "moe_user_gate": {"num_experts": 4, "expert_hidden": 16},
    "awmoe": {"num_experts": 4, "expert_hidden": 16},
}
GATED = ["mmoe", "cgc", "ple", "home", "moe_user_gate", "awmoe"]



def make_batch(B: int = 16, L: int = 6, seed: int = 0, spec: InputSpec = SPEC) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {"sparse": torch.stack([torch.randint(0, v, (B,), generator=g) for v in spec.vocab_sizes], 1)}
    if spec.dense_dim:
        batch["dense"] = torch.randn(B, spec.dense_dim, generator=g)
    if spec.item_vocab:
        batch["item"] = torch.randint(1, spec.item_vocab, (B,), generator=g)
        hist = torch.randint(1, spec.item_vocab, (B, L), generator=g)
        lengths = torch.randint(0, L + 1, (B,), generator=g)
        batch["hist"] = torch.where(torch.arange(L) < lengths[:, None], hist, 0)  # padded with 0, some rows empty
    return batch


def build(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model(name, SPEC, T, **{**SMALL[name], **kw})


def test_registry_names():
    assert MODELS.names() == sorted(SMALL) == sorted(ARCHS)  # config.py checks model.arch without torch


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_and_outputs(name):
    model, batch = build(name), make_batch()
    for train in (True, False):
        model.train(train)
        out = model(batch)
        assert isinstance(out, RecsysOutput) and out.logits.shape == (16, T) and torch.isfinite(out.logits).all()
        assert isinstance(out.diagnostics, Diagnostics) and all(torch.isfinite(v).all() for v in out.aux.values())
        assert ("nce" in out.aux) == (name == "awmoe" and train)


def test_dense_only_inputs_for_the_synthetic_board():
    spec = InputSpec([], dense_dim=10)
    batch = {"dense": torch.randn(8, 10)}
    for name, kw in (("shared_bottom", {}), ("mmoe", {}), ("mmoe", {"one_gate": True})):
        out = build_model(name, spec, 2, **kw)(batch)
        assert out.logits.shape == (8, 2)


def test_embedding_pools_history_over_real_items_only():
    model = build("mmoe")
    batch = make_batch()
    batch["hist"][0] = 0
    batch["hist"][1] = torch.tensor([3, 4, 0, 0, 0, 0])
    emb = model.embedding(batch)
    assert emb.context.shape == (16, 3 * 8 + 3) and emb.flat().shape == (16, model.embedding.d_out)
    pooled = emb.mean_history()
    assert torch.equal(pooled[0], torch.zeros(8))
    torch.testing.assert_close(pooled[1], model.embedding.items.weight[[3, 4]].mean(0))


@pytest.mark.parametrize("name", GATED)
def test_every_gate_sums_to_one(name):
    out = build(name)(make_batch())
    diag = out.diagnostics
    assert len(diag.task_gates) == T and diag.gates
    for g in [*diag.task_gates, *diag.gates.values()]:
        assert (g >= 0).all()
        torch.testing.assert_close(g.sum(-1), torch.ones(g.shape[0]))


def _visible(model: HoME, t: int) -> set[int]:
    g = model.group_of[t]
    return {i for bank in ("global", f"group{g}", f"task{t}") for i in model.tasks.expert_ids(bank)}


def test_home_hierarchy_mask_gives_zero_weight_outside_the_group():
    masked, unmasked = build("home"), build("home", hierarchy_mask=False)
    diag = masked(make_batch()).diagnostics
    E = masked.tasks.num_experts
    for t, gate in enumerate(diag.task_gates):
        seen = sorted(_visible(masked, t))
        hidden = sorted(set(range(E)) - set(seen))
        assert hidden and (gate[:, hidden] == 0).all() and (gate[:, seen] > 0).all()
    for g in range(len(GROUPS)):  # meta layer: group g's gate mixes global + group g only
        assert masked.meta.routers[f"group{g}"].num_experts == 2 + 2
        assert diag.gates[f"meta/group{g}"].shape[1] == 4
    assert masked.meta.routers["shared"].num_experts == masked.meta.num_experts
    for gate in unmasked(make_batch()).diagnostics.task_gates:
        assert (gate > 0).all()


def test_feature_gate_is_identity_at_init_and_learns():
    torch.manual_seed(0)
    fg, v = FeatureGate(12, 4), torch.randn(32, 12)
    assert torch.equal(fg(v), v)
    fg(v).pow(2).sum().backward()
    assert fg.up.grad.abs().sum() > 0  # the zero factor gets a gradient, so the gate can move
    with torch.no_grad():
        fg.up.normal_()
    ratio = fg(v) / v
    assert not torch.allclose(ratio, torch.ones_like(ratio)) and (ratio > 0).all() and (ratio < 2).all()
    model = build("home")
    x = model.embedding(make_batch()).flat()
    for expert in model.meta.banks["global"].experts:
        assert isinstance(expert[0], FeatureGate) and torch.equal(expert[0](x), x)


@pytest.mark.parametrize("num_per_task", [1, 2])
@pytest.mark.parametrize("self_gate", [True, False])
def test_home_self_gate_is_added_to_the_task_mixture(num_per_task, self_gate):
    model = build("home", num_per_task=num_per_task, self_gate=self_gate)
    seen = {}
    hooks = [tower.register_forward_hook(lambda m, args, out, t=t: seen.__setitem__(t, args[0].detach()))
             for t, tower in enumerate(model.towers)]
    diag = model(make_batch()).diagnostics
    for h in hooks:
        h.remove()
    for t in range(T):
        g = model.group_of[t]
        acts = torch.cat([diag.expert_acts[f"task/{b}@{g}"] for b in ("global", f"group{g}", f"task{t}")], dim=1)
        want = (diag.gates[f"task/task{t}"].unsqueeze(-1) * acts).sum(1)
        assert (f"task/task{t}" in diag.self_gates) == self_gate
        if self_gate:
            s = diag.self_gates[f"task/task{t}"]
            assert s.shape == (16, num_per_task)
            if num_per_task == 1:
                assert ((s > 0) & (s < 1)).all()  # sigmoid
            else:
                torch.testing.assert_close(s.sum(-1), torch.ones(16))  # softmax
            want = want + (s.unsqueeze(-1) * diag.expert_acts[f"task/task{t}@{g}"]).sum(1)
        torch.testing.assert_close(seen[t], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("expert_norm", [False, True])
def test_mmoe_equals_a_per_sample_loop(expert_norm):
    model = build("mmoe", expert_norm=expert_norm)
    model.train()
    model(make_batch(seed=3))  # move the BatchNorm running statistics away from their init
    model.eval()
    batch = make_batch()
    logits = model(batch).logits
    x = model.embedding(batch).flat()
    experts = model.level.banks["experts"].experts
    for b in range(x.shape[0]):
        xb = x[b:b + 1]
        for t in range(T):
            w = torch.softmax(xb @ model.level.routers[f"task{t}"].gate.weight.T, dim=-1)[0]
            z = sum(w[e] * experts[e](xb) for e in range(len(experts)))
            torch.testing.assert_close(logits[b, t], model.towers[t](z)[0, 0], rtol=1e-5, atol=1e-6)


def test_info_nce_matches_the_formula():
    torch.manual_seed(0)
    g, h, tau = torch.rand(5, 4).softmax(-1), torch.rand(5, 4).softmax(-1), 0.15
    cos = torch.tensor([[float(F.cosine_similarity(g[i], h[j], dim=0)) for j in range(5)] for i in range(5)])
    want = -sum(float(torch.log(torch.exp(cos[i, i] / tau) / torch.exp(cos[i] / tau).sum())) for i in range(5)) / 5
    assert float(info_nce(g, h, tau)) == pytest.approx(want, rel=1e-5)


def test_awmoe_contrastive_loss():
    model, batch = build("awmoe"), make_batch()
    model.train()
    out = model(batch)
    nce = out.aux["nce"]
    assert nce > 0
    nce.backward()
    assert model.router.gate.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.attention.parameters())
    model.eval()
    assert "nce" not in model(batch).aux
    off = build("awmoe", contrastive=False)
    off.train()
    off_out = off(batch)
    assert "nce" not in off_out.aux
    torch.testing.assert_close(off_out.logits, out.logits)  # the flag adds a loss, nothing else
    assert param_counts(off) == param_counts(model)


def test_awmoe_masking_drops_about_the_rate_and_never_adds_items():
    torch.manual_seed(0)
    model = AWMoE(SPEC, 1, mask_rate=0.4)
    mask = torch.rand(200, 50) < 0.7
    kept = model.mask_history(mask)
    assert not (kept & ~mask).any()
    assert 1 - kept.sum() / mask.sum() == pytest.approx(0.4, abs=0.03)


def _expert_weights(model) -> list[torch.Tensor]:
    """Per expert, its first weight matrix's gradient."""
    grads = []
    for m in model.modules():
        if isinstance(m, ModuleExperts):
            for expert in m.experts:
                linear = next(layer for layer in expert if isinstance(layer, torch.nn.Linear))
                grads.append(linear.weight.grad)
        elif isinstance(m, FFNExperts):
            grads += [m.w1.grad[e] for e in range(m.num_experts)] + [m.w2.grad[e] for e in range(m.num_experts)]
    return grads


@pytest.mark.parametrize("name", GATED)
def test_gradients_reach_every_expert_that_gets_weight(name):
    model = build(name)
    model.train()
    out = model(make_batch())
    (out.logits.pow(2).sum() + sum(out.aux.values(), torch.zeros(()))).backward()
    grads = _expert_weights(model)
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    routers = [m for m in model.modules() if type(m).__name__ == "SoftRouter"]
    assert routers and all(r.gate.weight.grad.abs().sum() > 0 for r in routers)


def _tiny_problem(seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Three tasks that depend on the features by simple rules (one needs a sparse × dense interaction)."""
    batch = make_batch(B=128, seed=seed)
    s, d = batch["sparse"], batch["dense"]
    return batch, torch.stack([s[:, 0] < 3, s[:, 1] % 2 == 0, (d[:, 0] > 0) & (s[:, 2] < 3)], 1).float()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_few_adam_steps_learn_a_tiny_problem(name):
    held_out, y_held_out = _tiny_problem(1000)
    model = build(name, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def held_out_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = F.binary_cross_entropy_with_logits(model(held_out).logits, y_held_out)
        model.train()
        return float(loss)

    before = held_out_loss()
    for step in range(40):
        batch, y = _tiny_problem(step)  # fresh rows every step: nothing to memorise
        out = model(batch)
        loss = F.binary_cross_entropy_with_logits(out.logits, y) + sum(out.aux.values(), torch.zeros(()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.3 * before, (before, after)  # on rows never seen in training


def test_home_ablation_flags_change_the_parameter_count_as_expected():
    base = param_counts(build("home"))["total"]
    H, r, G = 16, 4, len(GROUPS)
    D = SPEC.embed_dim * 5 + SPEC.dense_dim  # 3 fields + item + pooled history, + dense
    meta_experts, task_experts = 2 + 2 * G, 2 + 1 * G + 1 * T
    no_fg = param_counts(build("home", feature_gate=False))["total"]
    assert base - no_fg == meta_experts * 2 * D * r + task_experts * 2 * (2 * H) * r
    no_norm = param_counts(build("home", expert_norm=False))["total"]
    assert base - no_norm == (meta_experts + task_experts) * 2 * H  # BatchNorm weight + bias
    no_self = param_counts(build("home", self_gate=False))["total"]
    assert base - no_self == G * (2 * D) + T * (2 * H + 1)  # softmax over 2 group experts; sigmoid for 1 task expert
    no_mask = param_counts(build("home", hierarchy_mask=False))["total"]
    assert no_mask - base == G * D * (meta_experts - 4) + T * 2 * H * (task_experts - 4)  # wider gates


def test_other_flags_and_the_matched_shared_bottom():
    def total(name, **kw):
        return param_counts(build(name, **kw))["total"]

    D, H = SPEC.embed_dim * 5 + SPEC.dense_dim, 16
    assert total("mmoe", expert_norm=True) - total("mmoe") == 4 * 2 * H
    assert total("mmoe") - total("mmoe", one_gate=True) == (T - 1) * D * 4
    assert total("ple", levels=1) == total("cgc") < total("ple") < total("ple", levels=3)
    mmoe = total("mmoe", num_experts=8)
    shared_bottom = build("shared_bottom")
    assert abs(param_counts(shared_bottom)["total"] - mmoe) / mmoe < 0.02 and shared_bottom.bottom_hidden > H


def test_diagnostic_metrics():
    acts = torch.ones(10, 2, 2)
    acts[:, 0, 0] = -1.0  # dead on every row
    acts[:9, 0, 1] = 0.0  # ≤ 0 on 90 % of rows: dead
    acts[:8, 1, 0] = -2.0  # 80 %: alive
    gates = [torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.1, 0.8]]), torch.tensor([[0.0, 0.0, 1.0], [0.2, 0.2, 0.6]])]
    diag = Diagnostics(gates, [2], expert_acts={"x": acts})
    assert len(diag.unit_activations()) == 2 and diag.unit_activations()[1].shape == (10, 2)
    assert diag.min_shared_usage() == pytest.approx(0.4) and diag.zero_activation_ratio() == 0.5
    assert Diagnostics().min_shared_usage() is None and Diagnostics().zero_activation_ratio() is None
    relu = build("mmoe")(make_batch()).diagnostics
    assert relu.expert_acts["experts@0"].shape == (16, 4, 16) and (relu.expert_acts["experts@0"] >= 0).all()
    assert 0 <= relu.zero_activation_ratio() <= 1 and relu.min_shared_usage() == pytest.approx(1.0)
    cgc = build("cgc")(make_batch()).diagnostics
    assert cgc.shared_experts == [3, 4] and 0 < cgc.min_shared_usage() < 1


def test_factory_errors():
    with pytest.raises(ZooValueError, match="did you mean 'mmoe'"):
        build_model("mmeo", SPEC, T)
    with pytest.raises(ZooValueError, match="num_expert"):
        build_model("mmoe", SPEC, T, num_expert=4)
    with pytest.raises(ZooValueError, match="target attention"):
        build_model("din", InputSpec([5, 5]), 1)
    with pytest.raises(ZooValueError, match="task_groups"):
        HoME(SPEC, T, task_groups=[[0], [1]])
    with pytest.raises(ZooValueError, match="levels"):
        build_model("cgc", SPEC, T, levels=2)
    assert isinstance(build_model("mmoe", {"vocab_sizes": [3], "embed_dim": 4}, 2), MMoE)
    batch = make_batch()
    del batch["hist"]
    with pytest.raises(ZooValueError, match="lacks \\['hist'\\]"):
        build("mmoe")(batch)
