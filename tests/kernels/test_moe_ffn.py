"""``zoo.kernels.moe_ffn`` and its backends against the per-token oracle ``backend="reference"``.

Contract, rules and test plan: docs/kernels.md (§1-§3; grouped_mm's CPU quirks under §2).
Every non-reference backend in ``backends()`` is checked (forward and all gradients, with a random dense
upstream gradient), so a newly registered backend is tested without touching this file. The reference is a
Python loop over T·k slots, so large T comes with small D/F.

A backend may decline inputs (``supports``): every test that runs a backend first asks ``skip_if_declined``,
which skips legitimate declines (``triton`` on CPU tensors without ``TRITON_INTERPRET``, as on a GPU CI box) and
fails wrong ones. Backends in ``SAMPLED`` run a representative subset of the matrix here: on the CPU they run in
an interpreter (milliseconds per program) and have a file of their own that tests them in depth.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import zoo.kernels as K
from zoo.errors import ZooValueError
from zoo.kernels import backends, moe_ffn, register_backend, resolve_backend, weighted_sum
from zoo.kernels.dispatch import combine, sort_slots
from zoo.kernels.triton import interpreter_requested

f32, bf16 = torch.float32, torch.bfloat16

# Backends under test: everything registered except the oracle (evaluated at collection time).
BACKENDS = [b for b in backends() if b != "reference"]

# Backends slow here (the Triton interpreter on the CPU) and tested in depth by a file of their own (the value):
# they run only the representative values of the parametrized tests (``with_backends``), and not the tests
# decorated with ``full_matrix_only``.
SAMPLED = {"triton": "tests/kernels/test_triton_backend.py"}


def with_backends(values, representative, ids=str):
    """``(value, backend)`` params: every value for the full backends, the ``representative`` ones (a subset of
    ``values``) for the SAMPLED backends. Test ids read ``<value id>-<backend>``."""
    assert all(v in values for v in representative), "representative values must come from values"
    return [
        pytest.param(v, b, id=f"{ids(v)}-{b}")
        for v in values for b in BACKENDS
        if b not in SAMPLED or v in representative
    ]


# Parametrizes ``backend`` over the backends not in SAMPLED (those cover the test in their own file).
full_matrix_only = pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in SAMPLED])

# (rtol, atol); atol is scaled by the magnitude of the expected tensor (at least 1).
TOL = {f32: (1e-4, 1e-4), bf16: (2e-2, 2e-2)}

GRAD_NAMES = ("x", "weights", "w1", "w2", "w3")


# --------------------------------------------------------------------------------------------- helpers


def make_inputs(
    T, D, F_, E, k, activation="gelu", dtype=f32, *, weight_dtype=None, ids=None, p_empty=0.0, seed=0
):
    """Random inputs with O(1) activations: ``x ~ N(0, 1)``, fan-in-scaled expert weights, fp32 router
    weights.

    Default ids are k distinct experts per row (like a top-k router); ``p_empty`` turns slots into −1 (their
    weight set to 0, as the contract asks).
    """
    gen = torch.Generator().manual_seed(seed)
    wdt = weight_dtype or dtype
    x = torch.randn(T, D, generator=gen).to(dtype)
    if ids is None:
        ids = torch.rand(T, E, generator=gen).argsort(dim=1)[:, :k]
        if p_empty:
            ids = ids.masked_fill(torch.rand(T, k, generator=gen) < p_empty, -1)
    weights = torch.rand(T, ids.shape[1], generator=gen).masked_fill(ids < 0, 0.0)
    w1 = (torch.randn(E, D, F_, generator=gen) / D**0.5).to(wdt)
    w2 = (torch.randn(E, F_, D, generator=gen) / F_**0.5).to(wdt)
    w3 = (torch.randn(E, D, F_, generator=gen) / D**0.5).to(wdt) if activation == "swiglu" else None
    grad = torch.randn(T, D, generator=gen).to(dtype)  # dense upstream gradient, never .sum()
    return dict(x=x, ids=ids, weights=weights, w1=w1, w2=w2, w3=w3, activation=activation), grad


@contextlib.contextmanager
def _one_thread(enabled=True):
    """The oracle is thousands of tiny ops: with intra-op threads they slow down many times over whenever the
    cores are shared (measured 0.7 s → 20 s with a busy neighbour), so it runs on one thread."""
    threads = torch.get_num_threads()
    if enabled:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# Tests that keep torch's default intra-op thread count (a nondeterministic parallel reduction shows only there).
ALL_THREADS = {"test_bitwise_deterministic"}


@pytest.fixture(autouse=True)
def _one_intra_op_thread(request):
    """Every test but ``ALL_THREADS`` runs on one intra-op thread. The backends' results do not depend on it, and
    the shapes here are small: on a shared 2-core machine two OpenMP threads made them 5–50× slower (the E64 k8
    cases took 4.8 s instead of 0.1 s), most of this file's time."""
    with _one_thread(request.node.originalname not in ALL_THREADS):
        yield


def run(inputs, backend, grad=None):
    """Forward (and backward with ``grad``) on fresh leaf copies; missing grads are reported as zeros."""
    with _one_thread(backend == "reference"):
        return _run(inputs, backend, grad)


def _run(inputs, backend, grad):
    leaves = {n: inputs[n].detach().clone().requires_grad_() for n in GRAD_NAMES if inputs[n] is not None}
    y = moe_ffn(
        leaves["x"], inputs["ids"], leaves["weights"], leaves["w1"], leaves["w2"], leaves.get("w3"),
        activation=inputs["activation"], backend=backend,
    )
    grads = {}
    if grad is not None:
        y.backward(grad)
        grads = {n: t.grad if t.grad is not None else torch.zeros_like(t) for n, t in leaves.items()}
    return y.detach(), grads


def assert_close(got, want, dtype, what):
    rtol, atol = TOL[dtype]
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    scale = max(1.0, float(want.float().abs().max())) if want.numel() else 1.0
    torch.testing.assert_close(
        got.float(), want.float(), rtol=rtol, atol=atol * scale, msg=lambda m: f"{what}: {m}"
    )


def assert_matches(got, want, dtype, label=""):
    """Compare a (y, grads) pair with the oracle's, every gradient included."""
    assert_close(got[0], want[0], dtype, f"{label} y")
    assert set(got[1]) == set(want[1])
    for name in want[1]:
        assert_close(got[1][name], want[1][name], dtype, f"{label} d{name}")


def _grouped_mm_available() -> bool:
    return hasattr(F, "grouped_mm") or hasattr(torch, "_grouped_mm")


def expected_decline(backend, x, w1) -> bool | None:
    """Whether ``backend`` may legitimately refuse these inputs (True: it must, False: it must not); None where
    the rules leave it open, or for backends this file knows nothing of.

    Written from the documented rules, not from the backend's own ``supports`` check: grouped_mm needs 16-byte
    aligned rows, fp32/bf16, torch ≥ 2.9; the Triton kernels need CUDA tensors (CPU ones only under
    ``TRITON_INTERPRET``) in fp32/fp16/bf16, and triton ≥ 3.6 installed (left open here).
    """
    if backend in ("loop", "reference"):
        return False
    if backend == "grouped":
        if not _grouped_mm_available() or x.dtype not in (f32, bf16):
            return True
        align = 16 // x.element_size()
        return bool(w1.shape[1] % align or w1.shape[2] % align)
    if backend == "triton":
        if x.dtype not in (f32, torch.float16, bf16):
            return True
        if x.device.type == "cpu" and not interpreter_requested():
            return True
    return None


def skip_if_declined(backend, x, w1, w3=None):
    """Skip if ``backend`` declines inputs it is allowed to decline; fail if it declines (or accepts) wrongly.

    An explicitly requested backend that declines must say so with a clear ``ZooValueError``.
    """
    w1 = w1.to(x.dtype)
    legit = expected_decline(backend, x, w1)
    try:
        resolve_backend(backend, x, w1, w3.to(x.dtype) if w3 is not None else None)
    except ZooValueError as err:
        assert str(err).startswith(f"backend={backend!r} cannot run these inputs: "), err
        if legit is False:
            pytest.fail(f"{backend} declined inputs it must run: {err}")
        pytest.skip(f"{backend} legitimately declines: {err}")
    if legit is True:
        pytest.fail(f"{backend} accepted inputs it cannot run (D={w1.shape[1]}, F={w1.shape[2]}, {x.dtype}, "
                    f"{x.device})")


def run_or_skip(inputs, backend, grad):
    """``skip_if_declined``, then run ``backend``."""
    skip_if_declined(backend, inputs["x"], inputs["w1"], inputs["w3"])
    return run(inputs, backend, grad)


def dense_oracle(inputs):
    """A second, vectorised oracle for the dense k = E case: every expert on every token, one einsum each."""
    x, w1, w2, w3 = (inputs[n].float() if inputs[n] is not None else None for n in ("x", "w1", "w2", "w3"))
    ids, weights = inputs["ids"], inputs["weights"].float()
    E = w1.shape[0]
    gate_TE = torch.zeros(x.shape[0], E).scatter_add_(1, ids, weights)
    h_ETF = torch.einsum("td,edf->etf", x, w1)
    act = {"gelu": F.gelu, "silu": F.silu, "relu": F.relu}
    if inputs["activation"] == "swiglu":
        a_ETF = F.silu(h_ETF) * torch.einsum("td,edf->etf", x, w3)
    else:
        a_ETF = act[inputs["activation"]](h_ETF)
    y_ETD = torch.einsum("etf,efd->etd", a_ETF, w2)
    return torch.einsum("etd,te->td", y_ETD, gate_TE).to(inputs["x"].dtype)


# ------------------------------------------------------------------------------ forward + all gradients

# (T, D, F, E, k, activation, dtype, weight dtype or None). Not a cartesian product: every T, D/F (including
# the non-tile multiples 100, 511, 600), E, k and activation appears, in fp32 and bf16; T·k stays small
# where D/F is large, since the oracle loops over slots in Python.
CASES = [
    (1, 16, 32, 4, 1, "gelu", f32, None),
    (1, 100, 600, 64, 8, "swiglu", f32, None),  # 16-byte aligned in fp32, not a tile multiple
    (33, 100, 511, 8, 2, "gelu", f32, None),  # F=511: grouped must decline
    (33, 511, 100, 4, 2, "silu", f32, None),  # D=511: grouped must decline
    (33, 600, 100, 8, 1, "relu", f32, None),
    (33, 64, 128, 8, 2, "swiglu", f32, None),
    (33, 32, 48, 64, 8, "silu", f32, None),
    (256, 16, 24, 64, 8, "gelu", f32, None),
    (256, 32, 64, 8, 2, "swiglu", f32, None),
    (256, 20, 36, 4, 1, "relu", f32, None),
    (1, 64, 32, 4, 2, "silu", bf16, None),
    (33, 64, 128, 8, 2, "swiglu", bf16, None),
    (33, 100, 600, 8, 2, "gelu", bf16, None),  # D=100 is not 16-byte aligned in bf16: grouped must decline
    (33, 600, 511, 4, 1, "relu", bf16, None),
    (256, 32, 64, 64, 2, "relu", bf16, None),
    (33, 64, 128, 8, 2, "swiglu", bf16, f32),  # bf16 activations, fp32 master weights
]


def _case_id(case):
    T, D, F_, E, k, act, dtype, wdt = case
    return f"T{T}-D{D}-F{F_}-E{E}-k{k}-{act}-{str(dtype)[6:]}" + (f"-w{str(wdt)[6:]}" if wdt else "")


@functools.lru_cache(maxsize=None)
def _reference_case(case):
    T, D, F_, E, k, act, dtype, wdt = case
    inputs, grad = make_inputs(T, D, F_, E, k, act, dtype, weight_dtype=wdt, seed=T * 1000 + D + F_ + E + k)
    return inputs, grad, run(inputs, "reference", grad)


# SAMPLED backends: fp32 and bf16, gated and not, k = 1 and 2, T = 1 / 33 / 256, D = 511 (not a tile multiple),
# fp32 master weights.
REPRESENTATIVE_CASES = [CASES[0], CASES[3], CASES[5], CASES[9], CASES[10], CASES[15]]


@pytest.mark.parametrize(("case", "backend"), with_backends(CASES, REPRESENTATIVE_CASES, _case_id))
def test_matches_reference(case, backend):
    inputs, grad, want = _reference_case(case)
    got = run_or_skip(inputs, backend, grad)
    assert_matches(got, want, case[6], backend)
    # Gradients come back in the dtype of their leaf (fp32 master weights keep fp32 grads).
    for name, g in got[1].items():
        assert g.dtype == inputs[name].dtype, name


def test_reference_matches_dense_oracle():
    """The oracle itself against an independent vectorised computation (k = E, every activation)."""
    for act in ("gelu", "silu", "relu", "swiglu"):
        E = 4
        ids = torch.stack([torch.randperm(E) for _ in range(9)])
        inputs, _ = make_inputs(9, 24, 40, E, E, act, ids=ids)
        torch.testing.assert_close(run(inputs, "reference")[0], dense_oracle(inputs), rtol=1e-5, atol=1e-5)


def test_grouped_declines_misaligned_and_auto_falls_back():
    """D=100, F=511: grouped refuses (explicitly named, it raises), auto runs loop and matches the oracle."""
    if "grouped" not in backends():
        pytest.skip("grouped not registered")
    inputs, grad = make_inputs(33, 100, 511, 8, 2, "swiglu")
    x, w1, w3 = inputs["x"], inputs["w1"], inputs["w3"]
    assert K._BACKENDS["grouped"].supports(x, w1, w3) is not None
    with pytest.raises(ZooValueError, match=r"^backend='grouped' cannot run these inputs: .*511"):
        resolve_backend("grouped", x, w1, w3)
    with pytest.raises(ZooValueError, match=r"^backend='grouped'"):
        run(inputs, "grouped", grad)
    assert resolve_backend("auto", x, w1, w3).name == "loop"
    assert_matches(run(inputs, "auto", grad), run(inputs, "reference", grad), f32, "auto")


def test_grouped_declines_unaligned_bf16_only():
    """D=100 is a multiple of 4 (fine for fp32 rows) but not of 8 (bf16): the check is per dtype."""
    if "grouped" not in backends() or not _grouped_mm_available():
        pytest.skip("grouped_mm unavailable")
    x, w1 = torch.randn(3, 100), torch.randn(4, 100, 96)
    assert resolve_backend("auto", x, w1).name == "grouped"
    assert resolve_backend("auto", x.bfloat16(), w1.bfloat16()).name == "loop"
    assert resolve_backend("auto", x.half(), w1.half()).name == "loop"  # fp16 is not a grouped dtype here


# ------------------------------------------------------------------------------------------ edge cases


@pytest.mark.parametrize("backend", BACKENDS)
def test_experts_with_zero_tokens(backend):
    """Route only to experts {1, 2, 5} of 8: six experts (the first and last among them) get no rows."""
    T, E, k = 33, 8, 2
    used = torch.tensor([1, 2, 5])
    ids = used[torch.stack([torch.randperm(3)[:k] for _ in range(T)])]
    inputs, grad = make_inputs(T, 32, 64, E, k, "swiglu", ids=ids)
    got = run_or_skip(inputs, backend, grad)
    assert_matches(got, run(inputs, "reference", grad), f32, backend)
    unused = [e for e in range(E) if e not in used.tolist()]
    for name in ("w1", "w2", "w3"):
        assert torch.all(got[1][name][unused] == 0), f"d{name} of an expert with no tokens is not exactly 0"
        assert torch.all(got[1][name][used].abs().sum((1, 2)) > 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("expert", [0, 7])
def test_all_tokens_on_one_expert(backend, expert):
    T, E = 33, 8
    inputs, grad = make_inputs(T, 32, 48, E, 1, "gelu", ids=torch.full((T, 1), expert))
    got = run_or_skip(inputs, backend, grad)
    assert_matches(got, run(inputs, "reference", grad), f32, backend)
    others = [e for e in range(E) if e != expert]
    assert torch.all(got[1]["w1"][others] == 0) and torch.all(got[1]["w2"][others] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_placeholder_slots_and_empty_rows(backend):
    """−1 slots contribute nothing; rows whose slots are all −1 give exactly 0 output and 0 gradients."""
    T, E, k = 33, 8, 2
    inputs, grad = make_inputs(T, 32, 48, E, k, "silu", p_empty=0.4, seed=3)
    empty_rows = [0, 5, 32]
    inputs["ids"][empty_rows] = -1
    inputs["weights"][empty_rows] = 0.0
    assert (inputs["ids"] == -1).any(1).sum() > len(empty_rows)  # also partially filled rows
    got = run_or_skip(inputs, backend, grad)
    assert_matches(got, run(inputs, "reference", grad), f32, backend)
    y, grads = got
    assert torch.all(y[empty_rows] == 0)
    assert torch.all(grads["x"][empty_rows] == 0)
    assert torch.all(grads["weights"][inputs["ids"] < 0] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nonzero_weight_on_placeholder_is_ignored(backend):
    """The weight of a −1 slot is ignored, not multiplied in, even when it is inf or NaN."""
    inputs, grad = make_inputs(17, 32, 48, 8, 2, "gelu", p_empty=0.5, seed=4)
    want = run(inputs, "reference", grad)
    for junk in (123.0, float("inf"), float("nan")):
        inputs["weights"] = inputs["weights"].masked_fill(inputs["ids"] < 0, junk)
        got = run_or_skip(inputs, backend, grad)
        assert_close(got[0], want[0], f32, "y")
        for name in ("x", "w1", "w2"):
            assert_close(got[1][name], want[1][name], f32, f"d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_slot_placeholder(backend):
    """A batch with no FFN work at all: zeros out, and backward runs with all-zero (or absent) gradients."""
    T, E, k = 6, 4, 2
    inputs, grad = make_inputs(T, 16, 32, E, k, "swiglu", ids=torch.full((T, k), -1))
    skip_if_declined(backend, inputs["x"], inputs["w1"], inputs["w3"])
    y_ref, _ = run(inputs, "reference")
    y, grads = run(inputs, backend, grad)
    assert y.shape == (T, 16) and y.dtype == f32
    assert torch.equal(y, y_ref) and torch.all(y == 0)
    for name, g in grads.items():
        assert torch.all(g == 0), name


DENSE_CASES = [(4, "swiglu", f32), (8, "gelu", f32), (8, "relu", bf16)]


@pytest.mark.parametrize(
    ("dense_case", "backend"),
    with_backends(DENSE_CASES, DENSE_CASES[:1], lambda c: f"E{c[0]}-{c[1]}-{str(c[2])[6:]}"),
)
def test_dense_k_equals_E(dense_case, backend):
    E, activation, dtype = dense_case
    T = 33
    ids = torch.stack([torch.randperm(E) for _ in range(T)])
    inputs, grad = make_inputs(T, 32, 64, E, E, activation, dtype, ids=ids)
    got = run_or_skip(inputs, backend, grad)
    assert_matches(got, run(inputs, "reference", grad), dtype, backend)
    assert_close(got[0], dense_oracle(inputs), dtype, "y vs dense oracle")


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicate_ids_in_a_row(backend):
    """The same expert twice in a row counts twice: equal to one slot carrying the summed weight."""
    T, E = 33, 4
    ids = torch.randint(0, E, (T, 3))
    ids[:, 1] = ids[:, 0]
    inputs, grad = make_inputs(T, 32, 48, E, 3, "swiglu", ids=ids)
    got = run_or_skip(inputs, backend, grad)
    assert_matches(got, run(inputs, "reference", grad), f32, backend)
    merged = dict(inputs, ids=ids[:, [0, 2]], weights=torch.stack(
        [inputs["weights"][:, 0] + inputs["weights"][:, 1], inputs["weights"][:, 2]], 1))
    y_merged, grads_merged = run(merged, backend, grad)
    assert_close(got[0], y_merged, f32, "y vs merged slots")
    for name in ("x", "w1", "w2", "w3"):
        assert_close(got[1][name], grads_merged[name], f32, f"d{name} vs merged slots")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sum_backward(backend):
    """A stride-0 upstream grad (``y.sum().backward()``) must work too: grouped_mm alone rejects it."""
    inputs, _ = make_inputs(9, 32, 64, 4, 2, "swiglu")
    skip_if_declined(backend, inputs["x"], inputs["w1"], inputs["w3"])
    ones = torch.ones(9, 32)
    want = run(inputs, "reference", ones)
    leaves = {n: inputs[n].clone().requires_grad_() for n in ("x", "weights", "w1", "w2", "w3")}
    y = moe_ffn(leaves["x"], inputs["ids"], leaves["weights"], leaves["w1"], leaves["w2"], leaves["w3"],
                activation="swiglu", backend=backend)
    y.sum().backward()
    for name, t in leaves.items():
        assert_close(t.grad, want[1][name], f32, f"d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_int32_ids(backend):
    inputs, grad = make_inputs(17, 32, 64, 8, 2, "gelu")
    want = run_or_skip(inputs, backend, grad)
    got = run(dict(inputs, ids=inputs["ids"].int()), backend, grad)
    assert torch.equal(got[0], want[0])


# ----------------------------------------------------------------------------------------- determinism


@full_matrix_only  # triton: test_triton_backend.py::test_bitwise_deterministic
@pytest.mark.parametrize("dtype", [f32, bf16])
def test_bitwise_deterministic(backend, dtype):
    inputs, grad = make_inputs(64, 32, 64, 8, 2, "swiglu", dtype, p_empty=0.2)
    first = run_or_skip(inputs, backend, grad)
    second = run(inputs, backend, grad)
    assert torch.equal(first[0], second[0])
    for name in first[1]:
        assert torch.equal(first[1][name], second[1][name]), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_permutation_equivariance(backend):
    T = 64
    inputs, grad = make_inputs(T, 32, 64, 8, 2, "gelu", p_empty=0.2, seed=7)
    base = run_or_skip(inputs, backend, grad)
    perm = torch.randperm(T)
    permuted = dict(inputs, x=inputs["x"][perm], ids=inputs["ids"][perm], weights=inputs["weights"][perm])
    y, grads = run(permuted, backend, grad[perm])
    assert_close(y, base[0][perm], f32, "y")
    assert_close(grads["x"], base[1]["x"][perm], f32, "dx")
    assert_close(grads["weights"], base[1]["weights"][perm], f32, "dweights")
    for name in ("w1", "w2"):
        assert_close(grads[name], base[1][name], f32, f"d{name}")


# ------------------------------------------------------------------------------------------- bad input


def _good():
    return make_inputs(5, 8, 12, 4, 2, "gelu")[0]


BAD_INPUTS = [
    ("x 1-D", dict(x=torch.randn(8)), "x.shape"),
    ("x 3-D", dict(x=torch.randn(5, 8, 1)), "x.shape"),
    ("x integer", dict(x=torch.ones(5, 8, dtype=torch.long)), "x.dtype"),
    ("w1 wrong D", dict(w1=torch.randn(4, 9, 12)), "w1.shape"),
    ("w1 2-D", dict(w1=torch.randn(8, 12)), "w1.shape"),
    ("w2 wrong F", dict(w2=torch.randn(4, 11, 8)), "w2.shape"),
    ("w2 wrong E", dict(w2=torch.randn(3, 12, 8)), "w2.shape"),
    ("w2 wrong D", dict(w2=torch.randn(4, 12, 9)), "w2.shape"),
    ("w3 wrong shape", dict(activation="swiglu", w3=torch.randn(4, 8, 13)), "w3.shape"),
    ("ids 1-D", dict(ids=torch.zeros(5, dtype=torch.long)), "ids.shape"),
    ("ids wrong T", dict(ids=torch.zeros(6, 2, dtype=torch.long), weights=torch.ones(6, 2)), "ids.shape"),
    ("ids float", dict(ids=torch.zeros(5, 2)), "ids.dtype"),
    ("ids bool", dict(ids=torch.zeros(5, 2, dtype=torch.bool)), "ids.dtype"),
    ("ids == E", dict(ids=torch.tensor([[0, 1], [2, 3], [4, 0], [1, 1], [0, -1]])), "ids"),
    ("ids == -2", dict(ids=torch.tensor([[0, 1], [2, 3], [-2, 0], [1, 1], [0, -1]])), "ids"),
    ("weights wrong k", dict(weights=torch.ones(5, 3)), "weights.shape"),
    ("weights 1-D", dict(weights=torch.ones(5)), "weights.shape"),
    ("unknown activation", dict(activation="tanh"), "activation"),
    ("swiglu without w3", dict(activation="swiglu"), "w3"),
    ("w3 with gelu", dict(w3=torch.randn(4, 8, 12)), "activation"),
]


@pytest.mark.parametrize(("changes", "name"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
@pytest.mark.parametrize("backend", ["auto", "reference", *BACKENDS])
def test_bad_input_raises(changes, name, backend):
    inputs = dict(_good(), **changes)
    with pytest.raises(ZooValueError, match=rf"^{re.escape(name)}=") as err:
        moe_ffn(inputs["x"], inputs["ids"], inputs["weights"], inputs["w1"], inputs["w2"], inputs["w3"],
                activation=inputs["activation"], backend=backend)
    assert isinstance(err.value, ValueError)


# ----------------------------------------------------------------------------- host syncs, torch.compile


def _validated_identity(x, ids, weights, w1, w2):
    K._validate(x, ids, weights, w1, w2, None, "gelu")
    return x + 0


def test_id_range_check_traces_without_graph_break():
    """Under ``torch.compile(fullgraph=True)`` the id range check reads nothing back to the host (that would
    break the graph); out-of-range ids still raise, from the compiled graph's assert."""
    g = _good()
    args = (g["x"], g["ids"], g["weights"], g["w1"], g["w2"])
    torch._dynamo.reset()
    compiled = torch.compile(_validated_identity, backend="eager", fullgraph=True)
    assert torch.equal(compiled(*args), g["x"])
    for bad in (4, -2):
        ids = g["ids"].clone()
        ids[2, 0] = bad
        with pytest.raises(RuntimeError, match=r"ids out of range"):
            compiled(g["x"], ids, *args[2:])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_validation_does_not_sync_on_cuda():
    """On CUDA the id range check is a device assert: validating in-range ids never waits for the GPU."""
    g = {n: t.cuda() if isinstance(t, torch.Tensor) else t for n, t in _good().items()}
    torch.cuda.set_sync_debug_mode("error")  # any host sync raises
    try:
        K._validate(g["x"], g["ids"], g["weights"], g["w1"], g["w2"], None, "gelu")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_moe_ffn_triton_compiles_fullgraph():
    """``moe_ffn(..., backend="triton")`` (validation, registry, routing, kernels) traces under
    ``torch.compile(fullgraph=True)``, and the compiled forward and backward match eager bitwise. On the CPU this
    needs the Triton interpreter (skipped otherwise). Compiled first: run alone, the trace also loads the kernels."""
    if "triton" not in BACKENDS:
        pytest.skip("triton not registered")
    inputs, grad = make_inputs(9, 16, 32, 4, 2, "swiglu", p_empty=0.2)
    skip_if_declined("triton", inputs["x"], inputs["w1"], inputs["w3"])
    torch._dynamo.reset()
    compiled = torch.compile(moe_ffn, backend="aot_eager", fullgraph=True)
    leaves = {n: inputs[n].detach().clone().requires_grad_() for n in GRAD_NAMES}
    y = compiled(leaves["x"], inputs["ids"], leaves["weights"], leaves["w1"], leaves["w2"], leaves["w3"],
                 activation="swiglu", backend="triton")
    y.backward(grad)
    want = run(inputs, "triton", grad)
    assert torch.equal(y.detach(), want[0])
    for name, t in leaves.items():
        assert torch.equal(t.grad, want[1][name]), name


def test_unknown_backend():
    inputs = _good()
    with pytest.raises(ValueError, match=r"^backend='nope' is not allowed.*'loop'") as err:
        moe_ffn(inputs["x"], inputs["ids"], inputs["weights"], inputs["w1"], inputs["w2"], backend="nope")
    assert isinstance(err.value, ZooValueError)
    with pytest.raises(ZooValueError, match=r"^backend="):
        resolve_backend("nope", inputs["x"], inputs["w1"])


def test_auto_is_reserved():
    with pytest.raises(ZooValueError, match="auto"):
        register_backend("auto", K._BACKENDS["loop"].fn)
    assert "auto" not in backends()


# -------------------------------------------------------------------------------------------- registry


def test_backends_listing():
    names = backends()
    assert {"reference", "loop", "grouped"} <= set(names)
    assert names[-1] == "reference"  # oracle-only backends last
    assert names.index("grouped") < names.index("loop")  # auto tries grouped first
    assert K._BACKENDS["reference"].priority is None


def test_auto_picks_grouped_for_aligned_fp32_and_loop_otherwise():
    if not _grouped_mm_available():
        pytest.skip("no grouped_mm in this torch")
    x, w1, w3 = torch.randn(3, 64), torch.randn(4, 64, 128), torch.randn(4, 64, 128)
    assert resolve_backend("auto", x, w1).name == "grouped"
    assert resolve_backend("auto", x, w1, w3).name == "grouped"
    assert resolve_backend("auto", x.bfloat16(), w1.bfloat16()).name == "grouped"
    assert resolve_backend("auto", torch.randn(3, 100), torch.randn(4, 100, 511)).name == "loop"
    assert resolve_backend("auto", torch.randn(3, 511), torch.randn(4, 511, 64)).name == "loop"
    assert resolve_backend("loop", x, w1).name == "loop"
    assert resolve_backend("reference", x, w1).name == "reference"


def test_auto_fallback_logged_once(caplog):
    if not _grouped_mm_available():
        pytest.skip("no grouped_mm in this torch")
    x, w1 = torch.randn(3, 100), torch.randn(4, 100, 511)
    with caplog.at_level(logging.INFO, logger="zoo.kernels"):
        for _ in range(3):
            assert resolve_backend("auto", x, w1).name == "loop"
    declines = [r for r in caplog.records if "'grouped' declined" in r.getMessage()]
    assert len(declines) == 1 and "511" in declines[0].getMessage()


def _marker_backend(calls, value):
    def fn(x, ids, weights, w1, w2, w3, activation):
        calls.append(dict(x=x, ids=ids, w1=w1, w2=w2, w3=w3, activation=activation))
        return torch.full_like(x, value)

    return fn


def test_custom_backend_chosen_by_auto():
    calls = []
    register_backend("custom_high", _marker_backend(calls, 7.0), priority=1000)
    assert backends()[0] == "custom_high"
    inputs = _good()
    x = inputs["x"].bfloat16()
    y = moe_ffn(x, inputs["ids"].int(), inputs["weights"], inputs["w1"], inputs["w2"])
    assert torch.all(y == 7.0) and len(calls) == 1
    # moe_ffn hands backends long ids and weights cast to x's dtype.
    assert calls[0]["ids"].dtype == torch.long
    assert calls[0]["w1"].dtype == bf16 and calls[0]["w2"].dtype == bf16
    assert calls[0]["activation"] == "gelu" and calls[0]["w3"] is None


def test_declining_custom_backend_skipped_by_auto():
    calls = []
    picky = _marker_backend(calls, 7.0)
    register_backend("custom_picky", picky, lambda x, w1, w3: "never today", priority=1000)
    inputs, grad = make_inputs(9, 32, 64, 4, 2, "gelu")
    assert resolve_backend("auto", inputs["x"], inputs["w1"]).name != "custom_picky"
    assert_matches(run(inputs, "auto", grad), run(inputs, "reference", grad), f32, "auto")
    assert calls == []
    with pytest.raises(ZooValueError, match=r"^backend='custom_picky' cannot run these inputs: never today"):
        run(inputs, "custom_picky")


def test_oracle_only_backend_not_auto_but_explicit():
    calls = []
    register_backend("custom_oracle", _marker_backend(calls, 3.0), priority=None)
    assert set(backends()[-2:]) == {"custom_oracle", "reference"}  # after every auto candidate
    inputs = _good()
    assert resolve_backend("auto", inputs["x"], inputs["w1"]).name != "custom_oracle"
    assert torch.all(run(inputs, "custom_oracle")[0] == 3.0) and len(calls) == 1


def test_auto_prefers_fused_for_bf16_inference():
    x, w1 = torch.empty(4096, 256, dtype=bf16), torch.empty(64, 256, 128, dtype=bf16, requires_grad=True)
    with torch.no_grad():
        assert resolve_backend("auto", x, w1).name == "fused"
    assert resolve_backend("auto", x, w1.detach()).name == "fused"  # nothing to differentiate


def test_auto_when_limits_auto_but_not_explicit_requests():
    calls = []
    register_backend("custom_narrow", _marker_backend(calls, 5.0), priority=1000, auto_when=lambda x, w1, w3: w1.shape[0] >= 8)
    coarse, fine = _good(), make_inputs(4, 8, 12, 8, 2, "gelu")[0]
    assert resolve_backend("auto", coarse["x"], coarse["w1"]).name != "custom_narrow"  # E = 4: not wanted
    assert resolve_backend("auto", fine["x"], fine["w1"]).name == "custom_narrow"
    assert torch.all(run(coarse, "custom_narrow")[0] == 5.0) and len(calls) == 1


@pytest.mark.parametrize(
    ("T", "E", "F_", "dtype", "want"),
    [
        (4096, 64, 128, f32, "fused"),
        (1024, 64, 128, f32, "grouped"),
        (4096, 8, 512, f32, "grouped"),
        (4096, 64, 128, bf16, "grouped"),
        (4096, 128, 64, bf16, "fused"),
    ],
)
def test_auto_prefers_fused_where_the_board_measured_it_faster(T, E, F_, dtype, want):
    if want == "grouped" and not _grouped_mm_available():
        pytest.skip("no grouped_mm in this torch")
    x, w1 = torch.empty(T, 256, dtype=dtype), torch.empty(E, 256, F_, dtype=dtype, requires_grad=True)
    assert resolve_backend("auto", x, w1).name == want


def test_reregistering_replaces():
    register_backend("custom_x", _marker_backend([], 1.0), priority=1000)
    register_backend("custom_x", _marker_backend([], 2.0), priority=1000)
    assert backends().count("custom_x") == 1
    assert torch.all(run(_good(), "auto")[0] == 2.0)


def test_auto_falls_back_to_reference_when_everything_declines():
    for name in list(K._BACKENDS):
        b = K._BACKENDS[name]
        if b.priority is not None:
            register_backend(name, b.fn, lambda x, w1, w3: "declines for the test", b.priority)
    inputs, grad = make_inputs(5, 8, 12, 4, 2, "relu")
    assert resolve_backend("auto", inputs["x"], inputs["w1"]).name == "reference"
    assert_matches(run(inputs, "auto", grad), run(inputs, "reference", grad), f32, "auto")


def test_registry_fixture_cleans_up():
    """Runs after the registering tests in file order: nothing they added is left."""
    assert not any(n.startswith("custom_") for n in backends())
    assert set(backends()) >= {"grouped", "loop", "reference"}


# ------------------------------------------------------------------------------------ dispatch helpers


def test_sort_slots_hand_example():
    ids = torch.tensor([[2, -1], [0, 2], [-1, -1], [1, 0]])
    s = sort_slots(ids, 4)
    assert s.slot_idx_N.tolist() == [2, 7, 6, 0, 3]  # stable: expert 0 from slots 2, 7; expert 2 from 0, 3
    assert s.token_idx_N.tolist() == [1, 3, 3, 0, 1]
    assert s.counts_E.tolist() == [2, 1, 2, 0]
    assert s.offsets_E.tolist() == [2, 3, 5, 5] and s.offsets_E.dtype == torch.int32
    assert s.num_rows == 5


@pytest.mark.parametrize(("T", "E", "k", "p_empty"), [(100, 64, 8, 0.3), (33, 4, 2, 0.0), (50, 8, 3, 1.0)])
def test_sort_slots_properties(T, E, k, p_empty):
    ids = torch.randint(0, E, (T, k))  # duplicates allowed
    ids = ids.masked_fill(torch.rand(T, k) < p_empty, -1)
    flat = ids.reshape(-1)
    valid = (flat >= 0).nonzero().squeeze(1)
    s = sort_slots(ids, E)
    assert s.num_rows == valid.numel()
    assert sorted(s.slot_idx_N.tolist()) == valid.tolist()  # every valid slot once, no placeholder
    assert torch.equal(s.counts_E, torch.bincount(flat[valid], minlength=E))
    assert torch.equal(s.offsets_E, torch.cumsum(s.counts_E, 0).to(torch.int32))
    assert torch.equal(s.token_idx_N, s.slot_idx_N // k)
    experts = flat[s.slot_idx_N]
    assert torch.all(experts[1:] >= experts[:-1])  # grouped by expert
    same = experts[1:] == experts[:-1]
    assert torch.all(s.slot_idx_N[1:][same] > s.slot_idx_N[:-1][same])  # stable within an expert
    for e in range(E):  # each expert's rows live in [offsets[e-1], offsets[e])
        lo = int(s.offsets_E[e - 1]) if e else 0
        assert torch.all(experts[lo:int(s.offsets_E[e])] == e)


@pytest.mark.parametrize("dtype", [f32, bf16])
def test_combine_matches_manual_loop(dtype):
    T, E, k, D = 21, 6, 3, 5
    ids = torch.randint(0, E, (T, k)).masked_fill(torch.rand(T, k) < 0.3, -1)
    ids[4] = -1
    weights = torch.rand(T, k)
    s = sort_slots(ids, E)
    y_ND = torch.randn(s.num_rows, D).to(dtype)
    out = combine(y_ND, s, weights, dtype)
    want = torch.zeros(T, D)
    for n in range(s.num_rows):
        slot = int(s.slot_idx_N[n])
        t, j = divmod(slot, k)
        want[t] += weights[t, j] * y_ND[n].float()
    assert out.dtype == dtype and out.shape == (T, D)
    rtol = 1e-5 if dtype == f32 else 1e-2
    torch.testing.assert_close(out.float(), want.to(dtype).float(), rtol=rtol, atol=1e-5)
    assert torch.all(out[4] == 0)


# ---------------------------------------------------------------------------------------------- memory


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b in ("loop", "grouped")])
def test_dispatch_gathers_only_valid_slots(backend, monkeypatch):
    """The sorted backends gather exactly one row per valid slot (N = sort_slots(...).num_rows ≤ T·k)."""
    import importlib

    module = importlib.import_module(f"zoo.kernels.{backend}")
    seen = {}

    def spy_sort(ids, E):
        seen["slots"] = sort_slots(ids, E)
        return seen["slots"]

    def spy_combine(y_ND, slots, weights, dtype):
        seen["rows"] = y_ND.shape[0]
        return combine(y_ND, slots, weights, dtype)

    monkeypatch.setattr(module, "sort_slots", spy_sort)
    monkeypatch.setattr(module, "combine", spy_combine)
    inputs, grad = make_inputs(40, 32, 16, 64, 2, "gelu", p_empty=0.25)
    run_or_skip(inputs, backend, grad)
    n_valid = int((inputs["ids"] >= 0).sum())
    assert 0 < n_valid < 40 * 2
    assert seen["slots"].num_rows == n_valid
    assert seen["rows"] == n_valid


class _MaxNumel(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.max_numel, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() > self.max_numel:
                self.max_numel, self.op = t.numel(), func
        return out


@full_matrix_only  # triton: its buffers are O(T·k·max(D, F)) by construction (zoo.kernels.triton.ops)
def test_no_T_E_D_allocation(backend):
    """No tensor in forward or backward is O(T·E·D): the largest one is the (E, D, F) weight or its grad."""
    T, D, F_, E, k = 64, 64, 8, 64, 1
    inputs, grad = make_inputs(T, D, F_, E, k, "swiglu")
    run_or_skip(inputs, backend, None)
    with _MaxNumel() as mode:
        run(inputs, backend, grad)
    assert mode.max_numel <= E * D * F_ < T * E * D // 4, f"{mode.op} made {mode.max_numel} elements"


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@pytest.mark.parametrize(("T", "k"), [(0, 2), (3, 0)])
def test_empty_batches(backend, T, k):
    """No tokens, or no slots: an all-zero ``[T, D]`` output, no error."""
    x, w1 = torch.randn(T, 16, requires_grad=True), torch.randn(4, 16, 32)
    skip_if_declined(backend, x, w1)
    y = moe_ffn(x, torch.zeros(T, k, dtype=torch.long), torch.zeros(T, k), w1, torch.randn(4, 32, 16),
                backend=backend)
    assert y.shape == (T, 16) and torch.all(y == 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("T", "k"), [(0, 2), (3, 2)])
def test_empty_batches_backpropagate(backend, T, k):
    """No tokens, or every slot empty: the backward runs and gives zero gradients (a rank of an expert-parallel
    layer that receives nothing still takes part in the backward)."""
    x = torch.randn(T, 16, requires_grad=True)
    w1, w2 = torch.randn(4, 16, 32, requires_grad=True), torch.randn(4, 32, 16, requires_grad=True)
    skip_if_declined(backend, x, w1)
    y = moe_ffn(x, torch.full((T, k), -1 if T else 0, dtype=torch.long), torch.rand(T, k), w1, w2, backend=backend)
    y.sum().backward()
    assert torch.all(x.grad == 0)
    assert all(w.grad is None or torch.all(w.grad == 0) for w in (w1, w2))


def test_reference_backpropagates_rows_without_work():
    inputs, grad = make_inputs(4, 16, 32, 4, 2, "gelu", ids=torch.full((4, 2), -1))
    _, grads = run(inputs, "reference", grad)
    assert torch.all(grads["x"] == 0)


# --------------------------------------------------------------------------------------- per-slot outputs


@pytest.mark.parametrize(
    ("activation", "backend"),
    [pytest.param(a, "reference", id=f"{a}-reference") for a in ("gelu", "swiglu")]
    + with_backends(["gelu", "swiglu"], ["swiglu"]),
)
def test_per_slot_outputs_match_reference_and_combine(activation, backend):
    """``weights=None`` returns unweighted slot outputs; weighted_sum of them equals the fused combine."""
    inputs, _ = make_inputs(21, 32, 48, 6, 3, activation, p_empty=0.3, seed=7)
    args = (inputs["w1"], inputs["w2"], inputs["w3"])
    skip_if_declined(backend, inputs["x"], inputs["w1"], inputs["w3"])
    x = inputs["x"].clone().requires_grad_()
    w1 = inputs["w1"].clone().requires_grad_()
    slots = moe_ffn(x, inputs["ids"], None, w1, *args[1:], activation=activation, backend=backend)
    with _one_thread():
        x_ref = inputs["x"].clone().requires_grad_()
        w1_ref = inputs["w1"].clone().requires_grad_()
        ref = moe_ffn(x_ref, inputs["ids"], None, w1_ref, *args[1:], activation=activation, backend="reference")
    assert slots.shape == (21, 3, 32)
    assert torch.all(slots[inputs["ids"] < 0] == 0)
    assert_close(slots.detach(), ref.detach(), f32, "slots")
    fused = moe_ffn(inputs["x"], inputs["ids"], inputs["weights"], *args, activation=activation, backend=backend)
    assert_close(weighted_sum(slots.detach(), inputs["weights"], f32), fused, f32, "combine")
    g = torch.randn_like(ref)
    slots.backward(g)
    ref.backward(g)
    assert_close(x.grad, x_ref.grad, f32, "dx")
    assert_close(w1.grad, w1_ref.grad, f32, "dw1")
