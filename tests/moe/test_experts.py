"""Expert banks against plain per-token Python references: forward and gradients of every parameter and of x.

Each reference loops over tokens and slots and writes the expert maths out by hand, so a bug in sorting,
dispatch or combine cannot hide in the reference too.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from references import ffn_ref

from zoo.errors import ZooValueError
from zoo.moe import FFNExperts, ModuleExperts, SharedExperts, SpecialExperts

ACTS = ("gelu", "silu", "relu", "swiglu")

# ---------------------------------------------------------------- references



def bank_ref(x, ids, weights, expert_fn):
    """``y[t] = Σ_s weights[t, s] · expert_{ids[t, s]}(x[t])`` with −1 slots skipped, one token at a time."""
    rows = []
    for t in range(x.shape[0]):
        y = None
        for s in range(ids.shape[1]):
            e = int(ids[t, s])
            if e < 0:
                continue
            term = weights[t, s] * expert_fn(e, x[t])
            y = term if y is None else y + term
        rows.append(y if y is not None else expert_fn(0, x[t]) * 0.0)
    return torch.stack(rows)


def run_backward(fn, leaves, g):
    """Forward ``fn()``, ``y.backward(g)``; return y and the grads of ``leaves`` (zeros where none arrived)."""
    for leaf in leaves:
        leaf.grad = None
    y = fn()
    y.backward(g)
    grads = [leaf.grad.clone() if leaf.grad is not None else torch.zeros_like(leaf) for leaf in leaves]
    for leaf in leaves:
        leaf.grad = None
    return y.detach(), grads


def assert_grads_close(got, want, names, **tol):
    for n, a, b in zip(names, got, want):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, n=n: f"grad of {n}: {m}")


def routed_inputs(T, k, num_experts, used, D, *, p_empty=0.25):
    """ids in ``used`` (a subset of experts, so the rest get zero tokens) with −1 slots, positive weights."""
    used_t = torch.tensor(used)
    ids = used_t[torch.randint(len(used), (T, k))]
    ids = torch.where(torch.rand(T, k) < p_empty, torch.full_like(ids, -1), ids)
    ids[0] = -1  # one token with no work at all
    ids[1 : 1 + len(used), 0] = used_t  # every listed expert gets at least one token
    weights = torch.rand(T, k)
    x = torch.randn(T, D)
    return x, ids, weights


# ---------------------------------------------------------------- FFNExperts


# Odd D/F: ``auto`` resolves to ``loop`` (grouped_mm needs aligned rows); aligned: ``auto`` runs ``grouped``.
CASES = [
    (13, 37, 1, "loop"),
    (13, 37, 3, "loop"),
    (13, 37, 2, "reference"),
    (16, 32, 2, "auto"),
    (16, 32, 3, "loop"),
]


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("D,F,k,backend", CASES)
def test_ffn_experts_match_per_token_reference(activation, backend, D, F, k):
    torch.manual_seed(1)
    E, T = 5, 11
    bank = FFNExperts(E, D, F, activation, backend)
    x, ids, w = routed_inputs(T, k, E, used=[0, 2, 3], D=D)  # experts 1 and 4 get no tokens
    x.requires_grad_(True)
    w.requires_grad_(True)
    params = [bank.w1, bank.w2] + ([bank.w3] if bank.w3 is not None else [])
    leaves, names = [x, w, *params], ["x", "weights", "w1", "w2", "w3"][: 2 + len(params)]
    g = torch.randn(T, D)

    y, grads = run_backward(lambda: bank(x, ids, w), leaves, g)
    w3 = bank.w3
    y_ref, grads_ref = run_backward(
        lambda: bank_ref(
            x,
            ids,
            w,
            lambda e, xt: ffn_ref(xt, bank.w1[e], bank.w2[e], w3[e] if w3 is not None else None, activation),
        ),
        leaves,
        g,
    )
    assert y.shape == (T, D) and y.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    assert_grads_close(grads, grads_ref, names, rtol=1e-4, atol=1e-5)
    assert torch.all(y[0] == 0), "a token whose slots are all -1 gets nothing"
    for n, gr in zip(
        names[2:], grads[2:]
    ):  # experts without tokens get exactly zero gradient, used ones some
        assert torch.all(gr[[1, 4]] == 0), n
        assert all(gr[e].abs().sum() > 0 for e in (0, 2, 3)), n


def test_ffn_experts_grouped_backend_on_aligned_shapes():
    torch.manual_seed(2)
    D, F, E, T, k = 16, 24, 4, 9, 2
    bank = FFNExperts(E, D, F, "swiglu", "grouped")
    x, ids, w = routed_inputs(T, k, E, used=[0, 1, 3], D=D)
    x.requires_grad_(True)
    leaves = [x, bank.w1, bank.w2, bank.w3]
    g = torch.randn(T, D)
    y, grads = run_backward(lambda: bank(x, ids, w), leaves, g)
    y_ref, grads_ref = run_backward(
        lambda: bank_ref(x, ids, w, lambda e, xt: ffn_ref(xt, bank.w1[e], bank.w2[e], bank.w3[e], "swiglu")),
        leaves,
        g,
    )
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    assert_grads_close(grads, grads_ref, ["x", "w1", "w2", "w3"], rtol=1e-4, atol=1e-5)


def test_ffn_experts_ignore_the_weight_of_placeholder_slots():
    """A −1 slot contributes nothing even with a non-zero weight, and its weight gets no gradient."""
    torch.manual_seed(3)
    bank = FFNExperts(3, 7, 9, "gelu")
    x = torch.randn(4, 7)
    ids = torch.tensor([[0, -1], [-1, 2], [1, -1], [-1, -1]])
    w = torch.full((4, 2), 0.7, requires_grad=True)
    y = bank(x, ids, w)
    zeroed = bank(x, ids, torch.where(ids >= 0, w.detach(), 0.0))
    torch.testing.assert_close(y, zeroed)
    y.backward(torch.randn_like(y))
    assert torch.all(w.grad[ids < 0] == 0)
    assert torch.all(w.grad[ids >= 0] != 0)


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_ffn_experts_bf16_input_fp32_weights(activation):
    torch.manual_seed(4)
    D, F, E, T, k = 16, 32, 4, 10, 2
    bank = FFNExperts(E, D, F, activation)
    x32, ids, w = routed_inputs(T, k, E, used=[0, 1, 2], D=D)
    x = x32.bfloat16().requires_grad_(True)
    y = bank(x, ids, w)
    assert y.dtype == torch.bfloat16
    w3 = bank.w3
    with torch.no_grad():
        y_ref = bank_ref(
            x.float(),
            ids,
            w,
            lambda e, xt: ffn_ref(xt, bank.w1[e], bank.w2[e], w3[e] if w3 is not None else None, activation),
        )
    torch.testing.assert_close(y.float(), y_ref, atol=2e-2, rtol=2e-2)
    y.float().sum().backward()
    assert bank.w1.dtype == torch.float32 and bank.w1.grad.dtype == torch.float32, "master weights stay fp32"
    assert x.grad.dtype == torch.bfloat16


def test_ffn_experts_init_and_shapes():
    bank = FFNExperts(3, 13, 37, "swiglu")
    assert bank.w1.shape == (3, 13, 37) and bank.w2.shape == (3, 37, 13) and bank.w3.shape == (3, 13, 37)
    assert bank.w1.abs().max() <= 1 / math.sqrt(13) and bank.w2.abs().max() <= 1 / math.sqrt(37)
    assert FFNExperts(3, 13, 37, "relu").w3 is None
    assert bank.num_experts == 3


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"num_experts": 0}, "num_experts"),
        ({"num_experts": -2}, "num_experts"),
        ({"d_model": 0}, "d_model"),
        ({"d_hidden": -1}, "d_hidden"),
        ({"d_hidden": 2.5}, "d_hidden"),
        ({"activation": "tanh"}, "activation"),
        ({"backend": "cuda_magic"}, "backend"),
    ],
)
def test_ffn_experts_bad_args(kwargs, name):
    args = {"num_experts": 4, "d_model": 8, "d_hidden": 16, **kwargs}
    with pytest.raises(ZooValueError, match=rf"^{name}="):
        FFNExperts(**args)


def test_ffn_experts_explicit_grouped_declines_odd_shapes():
    bank = FFNExperts(2, 13, 37, "gelu", "grouped")
    with pytest.raises(ZooValueError, match="grouped"):
        bank(torch.randn(3, 13), torch.zeros(3, 1, dtype=torch.long), torch.ones(3, 1))


# ---------------------------------------------------------------- ModuleExperts


def hetero_experts(D, out=3):
    return [
        nn.Linear(D, out),
        nn.Sequential(nn.Linear(D, 5), nn.Tanh(), nn.Linear(5, out)),
        nn.Linear(D, out, bias=False),
        nn.Sequential(nn.LayerNorm(D), nn.Linear(D, out)),  # gets no tokens below
    ]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_module_experts_match_per_token_loop(k):
    torch.manual_seed(5)
    D, T = 6, 10
    bank = ModuleExperts(hetero_experts(D))
    x, ids, w = routed_inputs(T, k, 4, used=[0, 1, 2], D=D)
    x.requires_grad_(True)
    w.requires_grad_(True)
    names, params = zip(*bank.named_parameters())
    leaves = [x, w, *params]
    g = torch.randn(T, 3)
    y, grads = run_backward(lambda: bank(x, ids, w), leaves, g)
    y_ref, grads_ref = run_backward(
        lambda: bank_ref(x, ids, w, lambda e, xt: bank.experts[e](xt[None])[0]), leaves, g
    )
    assert y.shape == (T, 3)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    assert_grads_close(grads, grads_ref, ["x", "weights", *names], rtol=1e-5, atol=1e-6)
    for n, gr in zip(names, grads[2:]):
        if n.startswith("experts.3."):
            assert torch.all(gr == 0), f"{n}: an expert with no tokens must get no gradient"
        else:
            assert gr.abs().sum() > 0, f"{n} got no gradient"


def test_module_experts_all_placeholders_and_bad_args():
    bank = ModuleExperts(hetero_experts(4))
    y = bank(torch.randn(3, 4), torch.full((3, 2), -1), torch.ones(3, 2))
    assert y.shape == (3, 3) and torch.all(y == 0)
    assert bank.num_experts == 4
    with pytest.raises(ZooValueError, match="^experts="):
        ModuleExperts([])


# ---------------------------------------------------------------- SpecialExperts

N_FFN = 3  # special ids: 3 zero, 4 copy, 5 and 6 constant, 7 null
KIND = {3: "zero", 4: "copy", 5: "constant", 6: "constant", 7: "null"}


def make_special(**kw):
    special = SpecialExperts(6, N_FFN, num_zero=1, num_copy=1, num_constant=2, num_null=1, **kw)
    return special


def special_ref(special, x, ids, weights, zero_renormalize):
    """Per-token reference: returns (y_special, ffn_ids, ffn_weights) built one token and one slot at a time.

    MoE++ zero-expert renormalisation: in a row that picked a zero expert, that weight becomes 0 and the other
    weights are divided by their sum; a row left with no weight stays 0.
    """
    T, k = ids.shape
    ys, fids, fws = [], [], []
    for t in range(T):
        row_ids = [int(e) for e in ids[t]]
        w = [weights[t, s] for s in range(k)]
        if zero_renormalize and any(KIND.get(e) == "zero" for e in row_ids):
            w = [w[s] * 0.0 if KIND.get(row_ids[s]) == "zero" else w[s] for s in range(k)]
            total = sum(w[s] for s in range(k) if row_ids[s] >= 0)
            if float(total.detach()) > 0:
                w = [w[s] / total for s in range(k)]
        y = x[t] * 0.0
        fid, fw = [], []
        for s, e in enumerate(row_ids):
            kind = KIND.get(e)
            if kind == "copy":
                y = y + w[s] * x[t]
            elif kind == "constant":
                c = e - 5
                alpha = torch.softmax(x[t] @ special.constant_mix[c], dim=-1)
                y = y + w[s] * (alpha[0] * x[t] + alpha[1] * special.constant_vectors[c])
            fid.append(e if 0 <= e < N_FFN else -1)
            fw.append(w[s] if 0 <= e < N_FFN else w[s] * 0.0)
        ys.append(y)
        fids.append(fid)
        fws.append(torch.stack(fw))
    return torch.stack(ys), torch.tensor(fids), torch.stack(fws)


def normalised_weights(ids):
    """Positive leaf ``a`` and router-like weights from it: 0 on −1 slots (the router contract), the others
    ``a / Σa`` so each row sums to 1, as a renormalising top-k router gives."""
    a = (torch.rand(ids.shape) + 0.1).requires_grad_(True)

    def weights():
        b = torch.where(ids >= 0, a, 0.0)
        return b / b.sum(-1, keepdim=True).clamp_min(1e-9)

    return a, weights


def test_special_id_ranges():
    special = make_special()
    assert special.num_experts == 5
    assert [special.id_range(kind) for kind in ("zero", "copy", "constant", "null")] == [
        (3, 4),
        (4, 5),
        (5, 7),
        (7, 8),
    ]
    with pytest.raises(KeyError):
        special.id_range("nope")


@pytest.mark.parametrize("zero_renormalize", [True, False])
def test_special_experts_match_per_token_reference(zero_renormalize):
    torch.manual_seed(6)
    T, k = 14, 3
    special = make_special(zero_renormalize=zero_renormalize)
    x = torch.randn(T, 6, requires_grad=True)
    ids = torch.randint(-1, N_FFN + 5, (T, k))
    ids[0] = torch.tensor([3, -1, 3])  # only zero experts
    ids[1] = torch.tensor([3, 0, 4])  # zero + ffn + copy
    ids[2] = torch.tensor([5, 6, 7])  # both constants + null
    ids[3] = torch.tensor([0, 1, 2])  # FFN only
    a, weights_fn = normalised_weights(ids)
    names = ["x", "a", "constant_vectors", "constant_mix"]
    leaves = [x, a, special.constant_vectors, special.constant_mix]
    g_y, g_w = torch.randn(T, 6), torch.randn(T, k)

    def run(fn):
        out = fn()
        loss = (out[0] * g_y).sum() + (out[2] * g_w).sum()
        for leaf in leaves:
            leaf.grad = None
        loss.backward()
        return [o.detach() for o in out], [leaf.grad.clone() for leaf in leaves]

    (y, fid, fw), grads = run(lambda: special(x, ids, weights_fn()))
    (y_ref, fid_ref, fw_ref), grads_ref = run(
        lambda: special_ref(special, x, ids, weights_fn(), zero_renormalize)
    )
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fid, fid_ref)
    torch.testing.assert_close(fw, fw_ref, rtol=1e-5, atol=1e-6)
    assert_grads_close(grads, grads_ref, names, rtol=1e-4, atol=1e-6)
    assert grads[2].abs().sum() > 0 and grads[3].abs().sum() > 0, "gradients must reach the constant experts"
    # ffn ids only in [0, N_FFN) ∪ {-1}, weight 0 wherever the id is -1
    assert int(fid.max()) < N_FFN and int(fid.min()) >= -1
    assert torch.all(fw[fid < 0] == 0)
    # rows with only zero experts stay zero
    assert torch.all(y[0] == 0) and torch.all(fw[0] == 0)


def test_zero_renormalize_semantics():
    special_on, special_off = make_special(zero_renormalize=True), make_special(zero_renormalize=False)
    x = torch.randn(3, 6)
    ids = torch.tensor([[0, 3], [3, 3], [1, 2]])
    w = torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.7, 0.3]])
    y_on, fid_on, fw_on = special_on(x, ids, w)
    y_off, fid_off, fw_off = special_off(x, ids, w)
    torch.testing.assert_close(fid_on, torch.tensor([[0, -1], [-1, -1], [1, 2]]))
    torch.testing.assert_close(fid_off, fid_on)
    # picking the zero expert removes compute without shrinking the output: the FFN weight becomes 1
    torch.testing.assert_close(fw_on, torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.7, 0.3]]))
    # without renormalisation the zero expert's weight is simply lost
    torch.testing.assert_close(fw_off, torch.tensor([[0.6, 0.0], [0.0, 0.0], [0.7, 0.3]]))
    assert torch.all(y_on == 0) and torch.all(y_off == 0)


def test_null_experts_are_not_renormalised_away():
    """AdaMoE null experts output 0 and keep their weight: the FFN weight is not rescaled."""
    special = SpecialExperts(4, 2, num_null=2)
    ids = torch.tensor([[0, 2], [3, 1]])
    w = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
    y, fid, fw = special(torch.randn(2, 4), ids, w)
    torch.testing.assert_close(fid, torch.tensor([[0, -1], [-1, 1]]))
    torch.testing.assert_close(fw, torch.tensor([[0.6, 0.0], [0.0, 0.7]]))
    assert torch.all(y == 0)


def test_copy_and_constant_outputs():
    special = SpecialExperts(5, 1, num_copy=1, num_constant=1)
    x = torch.randn(4, 5)
    ids = torch.tensor([[1], [2], [0], [-1]])
    w = torch.tensor([[0.5], [0.8], [1.0], [0.9]])
    with torch.no_grad():
        special.constant_mix.zero_()  # α = (½, ½)
        y, fid, _ = special(x, ids, w)
    torch.testing.assert_close(y[0], 0.5 * x[0])
    torch.testing.assert_close(y[1], 0.8 * (0.5 * x[1] + 0.5 * special.constant_vectors[0].detach()))
    assert torch.all(y[2:] == 0)
    torch.testing.assert_close(fid, torch.tensor([[-1], [-1], [0], [-1]]))


def test_special_experts_keep_input_dtype():
    special = make_special()
    x = torch.randn(5, 6).bfloat16()
    y, _, _ = special(x, torch.randint(-1, 8, (5, 2)), torch.rand(5, 2))
    assert y.dtype == torch.bfloat16


def test_special_experts_bad_args():
    with pytest.raises(ZooValueError, match="^num_copy="):
        SpecialExperts(4, 2, num_copy=-1)
    with pytest.raises(ZooValueError, match="^num_null="):
        SpecialExperts(4, 2, num_null=1.5)


# ---------------------------------------------------------------- SharedExperts


def shared_ref(shared, x, num_shared, F, activation):
    """Σ over the ``num_shared`` experts (column blocks of the stacked weights) of their FFN, per token, gated."""
    rows = []
    for t in range(x.shape[0]):
        y = 0.0
        for i in range(num_shared):
            cols = slice(i * F, (i + 1) * F)
            w3 = shared.w3[:, cols] if shared.w3 is not None else None
            y = y + ffn_ref(x[t], shared.w1[:, cols], shared.w2[cols, :], w3, activation)
        if shared.gate is not None:
            y = y * torch.sigmoid(x[t] @ shared.gate.weight[0])
        rows.append(y)
    return torch.stack(rows)


@pytest.mark.parametrize("num_shared", [1, 2])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_shared_experts_match_direct_math(num_shared, gated, activation):
    torch.manual_seed(7)
    D, F, T = 7, 5, 6
    shared = SharedExperts(D, F, num_shared, activation, gated)
    assert shared.w1.shape == (D, num_shared * F) and shared.w2.shape == (num_shared * F, D)
    assert (shared.w3 is not None) == (activation == "swiglu") and (shared.gate is not None) == gated
    x = torch.randn(T, D, requires_grad=True)
    names, params = zip(*shared.named_parameters())
    leaves = [x, *params]
    g = torch.randn(T, D)
    y, grads = run_backward(lambda: shared(x), leaves, g)
    y_ref, grads_ref = run_backward(lambda: shared_ref(shared, x, num_shared, F, activation), leaves, g)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    assert_grads_close(grads, grads_ref, ["x", *names], rtol=1e-4, atol=1e-6)
    assert all(gr.abs().sum() > 0 for gr in grads)


def test_shared_experts_bad_args():
    with pytest.raises(ZooValueError, match="^num_shared="):
        SharedExperts(4, 8, num_shared=0)
    with pytest.raises(ZooValueError, match="^activation="):
        SharedExperts(4, 8, activation="tanh")


# ---------------------------------------------------------------- zero-expert renormalisation and id checks


def test_zero_renormalize_leaves_rows_without_a_zero_expert_alone():
    special = SpecialExperts(4, 2, num_zero=1)
    ids = torch.tensor([[0, 1], [0, 2]])
    w = torch.tensor([[0.3, 0.2], [0.3, 0.2]])  # raw probabilities, not renormalised (Switch, top-p)
    _, _, fw = special(torch.randn(2, 4), ids, w)
    torch.testing.assert_close(fw[0], w[0])  # row 0 has no zero expert: its weights are untouched
    torch.testing.assert_close(fw[1], torch.tensor([1.0, 0.0]))  # row 1 did: the zero expert's share moves over


def test_zero_renormalize_ignores_the_weight_of_placeholder_slots():
    special = SpecialExperts(4, 2, num_zero=1)
    ids = torch.tensor([[0, 2, -1]])
    _, _, fw = special(torch.randn(1, 4), ids, torch.tensor([[0.5, 0.25, 0.25]]))
    torch.testing.assert_close(fw, torch.tensor([[1.0, 0.0, 0.0]]))


def test_module_experts_reject_out_of_range_ids():
    experts = ModuleExperts([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])
    with pytest.raises(ZooValueError, match="^ids="):
        experts(torch.randn(2, 4), torch.tensor([[5], [1]]), torch.ones(2, 1))
    with pytest.raises(ZooValueError, match="^ids="):
        experts(torch.randn(2, 4), torch.tensor([[-2], [1]]), torch.ones(2, 1))


def test_special_and_gated_shared_experts_are_exact_in_fp64():
    """fp64 inputs are computed in fp64 (the fp32 paths accumulate in fp32 as before): gradcheck passes."""
    torch.manual_seed(0)
    special = make_special().double()
    ids = torch.tensor([[0, 4], [5, 6], [3, 1], [7, 2]])
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.rand(4, 2, dtype=torch.float64, requires_grad=True)
    assert special(x, ids, w)[0].dtype == torch.float64
    assert torch.autograd.gradcheck(lambda x, w: special(x, ids, w)[0], (x, w))
    shared = SharedExperts(6, 5, num_shared=2, gated=True).double()
    assert torch.autograd.gradcheck(lambda x: shared(x), (x,))
