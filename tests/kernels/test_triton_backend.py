"""The ``triton`` backend (``zoo.kernels.triton``) against the per-token oracle, on the CPU through the Triton
interpreter, plus its routing metadata, registration, custom ops and ``torch.compile`` tracing.

The kernels are jitted for the interpreter only if ``TRITON_INTERPRET=1`` is set before
``zoo.kernels.triton.kernels`` is first imported. ``tests/conftest.py`` sets it for the whole session on machines
without ``nvidia-smi``; the autouse fixture below also sets it (for this module's tests only) whenever CUDA is
unavailable, and skips if the kernels were already compiled for a GPU. Shapes are tiny and tiles large: every
interpreted program costs milliseconds (docs/kernels.md, "The Triton interpreter"). ``test_moe_ffn.py``
additionally runs a representative subset of its backend matrix on ``triton``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import zoo.kernels as K
from zoo.errors import ZooValueError
from zoo.kernels import backends, moe_ffn, resolve_backend, weighted_sum
from zoo.kernels.triton import TRITON_PRIORITY, triton_unsupported
from zoo.kernels.triton.routing import build_routing, num_row_blocks

f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16
TOL = {f32: 1e-4, f16: 1e-2, bf16: 2e-2}  # rtol = atol, atol scaled by the expected tensor's magnitude
HAS_TRITON = importlib.util.find_spec("triton") is not None
CUDA = torch.cuda.is_available()
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
GRAD_NAMES = ("x", "weights", "w1", "w2", "w3")


@pytest.fixture(autouse=True)
def _interpreter_on_cpu(monkeypatch):
    """Without CUDA, run the kernels in the interpreter (this module's tests only: monkeypatch undoes it)."""
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        mod = sys.modules.get("zoo.kernels.triton.kernels")
        if mod is not None and not mod.INTERPRETED:
            pytest.skip("the Triton kernels were compiled for a GPU before TRITON_INTERPRET was set")


def _device():
    return "cuda" if CUDA else "cpu"


# --------------------------------------------------------------------------------------------- helpers


def make_inputs(T, D, F_, E, k, activation="gelu", dtype=f32, *, ids=None, p_empty=0.0, seed=0, slot_grad=False):
    gen = torch.Generator().manual_seed(seed)
    if ids is None:
        ids = torch.rand(T, E, generator=gen).argsort(dim=1)[:, :k]
        if p_empty:
            ids = ids.masked_fill(torch.rand(T, k, generator=gen) < p_empty, -1)
    weights = torch.rand(T, ids.shape[1], generator=gen).masked_fill(ids < 0, 0.0)
    inputs = dict(
        x=torch.randn(T, D, generator=gen).to(dtype),
        ids=ids,
        weights=weights,
        w1=(torch.randn(E, D, F_, generator=gen) / D**0.5).to(dtype),
        w2=(torch.randn(E, F_, D, generator=gen) / F_**0.5).to(dtype),
        w3=(torch.randn(E, D, F_, generator=gen) / D**0.5).to(dtype) if activation == "swiglu" else None,
        activation=activation,
    )
    grad = torch.randn(*((T, ids.shape[1], D) if slot_grad else (T, D)), generator=gen).to(dtype)
    return inputs, grad


def run(inputs, backend, grad=None, *, per_slot=False, fn=None, device="cpu"):
    """Forward (and backward with a dense ``grad``) on fresh leaves; returns (y, grads) on the CPU."""
    leaves = {
        n: inputs[n].detach().clone().to(device).requires_grad_()
        for n in GRAD_NAMES if inputs[n] is not None and not (per_slot and n == "weights")
    }
    ids = inputs["ids"].to(device)
    args = (leaves["x"], ids, None if per_slot else leaves["weights"], leaves["w1"], leaves["w2"], leaves.get("w3"))
    if fn is None:
        y = moe_ffn(*args, activation=inputs["activation"], backend=backend)
    else:
        y = fn(*args, inputs["activation"])
    grads = {}
    if grad is not None:
        y.backward(grad.to(device))
        grads = {n: (t.grad if t.grad is not None else torch.zeros_like(t)).cpu() for n, t in leaves.items()}
    return y.detach().cpu(), grads


def assert_close(got, want, dtype, what):
    tol = TOL[dtype]
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    scale = max(1.0, float(want.float().abs().max())) if want.numel() else 1.0
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol * scale, msg=lambda m: f"{what}: {m}")


def assert_matches(got, want, dtype, label=""):
    assert_close(got[0], want[0], dtype, f"{label} y")
    assert set(got[1]) == set(want[1])
    for name in want[1]:
        assert_close(got[1][name], want[1][name], dtype, f"{label} d{name}")


def triton_fn(blocks):
    """The backend function with explicit tiles (``moe_ffn`` always uses the defaults)."""
    from zoo.kernels.triton.moe import moe_ffn_triton

    return lambda x, ids, w, w1, w2, w3, act: moe_ffn_triton(x, ids, w, w1, w2, w3, act, blocks)


def small_blocks():
    """16-wide tiles: several row blocks per expert with ragged tails, several K steps and N/D/token tiles."""
    from zoo.kernels.triton.moe import Blocks

    return Blocks(16, 16, 16, 16, 16, 16, 2, 16)


# ------------------------------------------------------------------------------ forward + all gradients

CASES = [  # T, D, F, E, k, activation, dtype
    (1, 12, 20, 1, 1, "gelu", f32),
    (7, 12, 20, 4, 2, "swiglu", f32),
    (33, 16, 32, 8, 2, "silu", f32),
    (33, 20, 12, 4, 1, "relu", f32),
    (7, 16, 32, 8, 2, "swiglu", f16),
    (33, 12, 20, 4, 2, "gelu", bf16),
    (33, 16, 32, 8, 2, "swiglu", bf16),
]


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}-D{}-F{}-E{}-k{}-{}-{}".format(*c[:6], str(c[6])[6:]))
def test_matches_reference(case):
    T, D, F_, E, k, act, dtype = case
    inputs, grad = make_inputs(T, D, F_, E, k, act, dtype, p_empty=0.2, seed=T + D + E)
    got = run(inputs, "triton", grad, device=_device())
    assert_matches(got, run(inputs, "reference", grad), dtype, "triton")
    for name, g in got[1].items():
        assert g.dtype == inputs[name].dtype, name


@needs_triton
@pytest.mark.parametrize(("T", "E", "k", "act"), [(40, 2, 1, "swiglu"), (33, 4, 2, "gelu")])
def test_small_tiles_match_reference(T, E, k, act):
    """16-row blocks: experts span several blocks with a ragged last one; D=20/F=36 need 2–3 K and N tiles."""
    inputs, grad = make_inputs(T, 20, 36, E, k, act, p_empty=0.1, seed=5)
    got = run(inputs, "triton", grad, fn=triton_fn(small_blocks()), device=_device())
    assert_matches(got, run(inputs, "reference", grad), f32, "small tiles")
    r = build_routing(inputs["ids"], E, 16)
    counts = r.expert_end - r.expert_start
    assert counts.max() > 16 and (counts % 16).ne(0).any()  # multi-block experts, ragged tails


# ------------------------------------------------------------------------------------------ edge cases


@needs_triton
def test_experts_with_zero_tokens():
    """Only experts {1, 2, 5} of 8 get tokens: the others' weight gradients are exactly zero."""
    T, E, k = 33, 8, 2
    used = torch.tensor([1, 2, 5])
    ids = used[torch.stack([torch.randperm(3)[:k] for _ in range(T)])]
    inputs, grad = make_inputs(T, 12, 20, E, k, "swiglu", ids=ids)
    got = run(inputs, "triton", grad, device=_device())
    assert_matches(got, run(inputs, "reference", grad), f32, "triton")
    unused = [e for e in range(E) if e not in used.tolist()]
    for name in ("w1", "w2", "w3"):
        assert torch.all(got[1][name][unused] == 0), name
        assert torch.all(got[1][name][used].abs().sum((1, 2)) > 0), name


@needs_triton
@pytest.mark.parametrize("expert", [0, 7])
def test_all_tokens_on_one_expert(expert):
    T, E = 33, 8
    inputs, grad = make_inputs(T, 16, 32, E, 1, "gelu", ids=torch.full((T, 1), expert))
    got = run(inputs, "triton", grad, device=_device())
    assert_matches(got, run(inputs, "reference", grad), f32, "triton")
    others = [e for e in range(E) if e != expert]
    assert torch.all(got[1]["w1"][others] == 0) and torch.all(got[1]["w2"][others] == 0)


@needs_triton
def test_placeholder_slots_and_empty_rows():
    """−1 slots contribute nothing; all-−1 rows give exactly 0 output, 0 dx and 0 gate grads."""
    T, E, k = 33, 4, 2
    inputs, grad = make_inputs(T, 12, 20, E, k, "silu", p_empty=0.4, seed=3)
    empty_rows = [0, 5, 32]
    inputs["ids"][empty_rows] = -1
    inputs["weights"][empty_rows] = 0.0
    assert (inputs["ids"] == -1).any(1).sum() > len(empty_rows)  # partially filled rows too
    got = run(inputs, "triton", grad, device=_device())
    assert_matches(got, run(inputs, "reference", grad), f32, "triton")
    y, grads = got
    assert torch.all(y[empty_rows] == 0) and torch.all(grads["x"][empty_rows] == 0)
    assert torch.all(grads["weights"][inputs["ids"] < 0] == 0)


@needs_triton
def test_every_slot_placeholder():
    T, E, k = 6, 4, 2
    inputs, grad = make_inputs(T, 12, 20, E, k, "swiglu", ids=torch.full((T, k), -1))
    y, grads = run(inputs, "triton", grad, device=_device())
    assert y.shape == (T, 12) and torch.all(y == 0)
    for name, g in grads.items():
        assert torch.all(g == 0), name


@needs_triton
def test_junk_weight_on_placeholder_is_ignored():
    """Called directly (without ``moe_ffn``'s masking), the kernels still skip the weight of a −1 slot."""
    from zoo.kernels.triton.moe import moe_ffn_triton

    inputs, grad = make_inputs(9, 12, 20, 4, 2, "gelu", p_empty=0.5, seed=4)
    want = run(inputs, "reference", grad)
    inputs["weights"] = inputs["weights"].masked_fill(inputs["ids"] < 0, float("nan"))
    got = run(inputs, "triton", grad, fn=moe_ffn_triton, device=_device())
    assert_close(got[0], want[0], f32, "y")
    for name in ("x", "w1", "w2"):
        assert_close(got[1][name], want[1][name], f32, f"d{name}")
    assert torch.all(got[1]["weights"][inputs["ids"] < 0] == 0)


@needs_triton
@pytest.mark.parametrize("activation", ["relu", "swiglu"])
def test_per_slot_outputs(activation):
    """``weights=None``: unweighted ``[T, k, D]`` slot outputs (0 in empty slots) and their gradients."""
    inputs, grad = make_inputs(21, 12, 20, 6, 3, activation, p_empty=0.3, seed=7, slot_grad=True)
    got = run(inputs, "triton", grad, per_slot=True, device=_device())
    want = run(inputs, "reference", grad, per_slot=True)
    assert got[0].shape == (21, 3, 12)
    assert torch.all(got[0][inputs["ids"] < 0] == 0)
    assert_matches(got, want, f32, "per-slot")
    fused = run(inputs, "triton", device=_device())[0]
    assert_close(weighted_sum(got[0], inputs["weights"], f32), fused, f32, "combine")


@needs_triton
def test_strided_inputs_and_stride0_grad():
    """Non-contiguous x and weights, int32 ids, and ``y.sum().backward()`` (a stride-0 upstream grad)."""
    inputs, _ = make_inputs(9, 12, 20, 4, 2, "swiglu", seed=8)
    ones = torch.ones(9, 12)
    want = run(inputs, "reference", ones)
    dev = _device()
    x = torch.stack([inputs["x"], -inputs["x"]], 2).reshape(9, 24)[:, ::2].to(dev).requires_grad_()  # stride (24, 2)
    assert torch.equal(x.detach().cpu(), inputs["x"]) and x.stride() == (24, 2)
    w1 = inputs["w1"].transpose(1, 2).contiguous().transpose(1, 2).to(dev).requires_grad_()  # column-major
    assert not w1.is_contiguous()
    w2, w3, weights = (inputs[n].clone().to(dev).requires_grad_() for n in ("w2", "w3", "weights"))
    y = moe_ffn(x, inputs["ids"].int().to(dev), weights, w1, w2, w3, activation="swiglu", backend="triton")
    y.sum().backward()
    assert_close(y.detach().cpu(), want[0], f32, "y")
    for name, t in dict(x=x, weights=weights, w1=w1, w2=w2, w3=w3).items():
        assert_close(t.grad.cpu(), want[1][name], f32, f"d{name}")


@needs_triton
@pytest.mark.parametrize("dtype", [f32, bf16])
def test_bitwise_deterministic(dtype):
    inputs, grad = make_inputs(33, 16, 32, 4, 2, "swiglu", dtype, p_empty=0.2)
    first, second = (run(inputs, "triton", grad, device=_device()) for _ in range(2))
    assert torch.equal(first[0], second[0])
    for name in first[1]:
        assert torch.equal(first[1][name], second[1][name]), name


@needs_triton
@pytest.mark.parametrize(("T", "k"), [(0, 2), (3, 0)])
def test_empty_batches(T, k):
    x = torch.randn(T, 12, device=_device(), requires_grad=True)
    w1 = torch.randn(4, 12, 20, device=_device(), requires_grad=True)
    y = moe_ffn(x, torch.zeros(T, k, dtype=torch.long, device=_device()), torch.zeros(T, k, device=_device()),
                w1, torch.randn(4, 20, 12, device=_device()), backend="triton")
    assert y.shape == (T, 12) and torch.all(y == 0)
    y.backward(torch.ones_like(y))
    assert torch.all(w1.grad == 0)


# ----------------------------------------------------------------------------- routing metadata, syncs


def _check_routing(ids, E, block_m):
    T, k = ids.shape
    r = build_routing(ids, E, block_m)
    flat = ids.reshape(-1)
    n_valid = int((flat >= 0).sum())
    assert all(t.dtype == torch.int32 for t in r)
    assert int(r.expert_end[-1]) == n_valid if E else n_valid == 0
    experts = flat[r.sorted_slot.long()]
    assert torch.all(experts[:n_valid] >= 0) and torch.all(experts[n_valid:] == -1)  # placeholders last
    assert torch.equal(r.sorted_token.long(), r.sorted_slot.long() // max(k, 1))
    covered = torch.zeros(T * k, dtype=torch.long)
    assert r.blk_expert.numel() == num_row_blocks(T * k, E, block_m)
    for b in range(r.blk_expert.numel()):
        e = int(r.blk_expert[b])
        if e == E:  # unused block
            continue
        lo, hi = int(r.blk_start[b]), min(int(r.blk_start[b]) + block_m, int(r.expert_end[e]))
        assert int(r.expert_start[e]) <= lo < hi
        assert torch.all(experts[lo:hi] == e)
        covered[lo:hi] += 1
    assert torch.all(covered[:n_valid] == 1) and torch.all(covered[n_valid:] == 0)  # every valid row once
    same = experts[1:] == experts[:-1]
    assert torch.all(r.sorted_slot[1:][same] > r.sorted_slot[:-1][same])  # stable
    return r


def test_routing_hand_example():
    ids = torch.tensor([[2, -1], [0, 2], [-1, -1], [1, 0]])
    r = _check_routing(ids, 4, 2)
    assert r.sorted_slot.tolist()[:5] == [2, 7, 6, 0, 3]
    assert r.expert_start.tolist() == [0, 2, 3, 5] and r.expert_end.tolist() == [2, 3, 5, 5]
    # 2 rows per block: experts 0, 1, 2 need one block each; the static grid has min(8, 4 + 4) = 8 blocks
    assert r.blk_expert.tolist() == [0, 1, 2, 4, 4, 4, 4, 4] and r.blk_start.tolist()[:3] == [0, 2, 3]


@pytest.mark.parametrize(("T", "E", "k", "p_empty", "block_m"),
                         [(100, 64, 8, 0.3, 16), (33, 4, 2, 0.0, 16), (33, 4, 2, 0.0, 64), (50, 8, 3, 1.0, 4),
                          (1, 1, 1, 0.0, 16), (40, 1, 2, 0.0, 16)])
def test_routing_properties(T, E, k, p_empty, block_m):
    ids = torch.randint(0, E, (T, k)).masked_fill(torch.rand(T, k) < p_empty, -1)
    _check_routing(ids, E, block_m)


_SYNC_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "bincount", "repeat_interleave")


@needs_triton
def test_no_host_sync_or_data_dependent_shapes():
    """Routing, forward and backward use no op that reads a device value back to the host (``.item()``,
    ``.tolist()``, ``int(t)``) or whose output shape depends on data (``nonzero``, ``bincount``, ...)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from zoo.kernels.triton.moe import moe_ffn_triton

    class Spy(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bad = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if any(name in func.name() for name in _SYNC_OPS):
                self.bad.append(func.name())
            return func(*args, **(kwargs or {}))

    inputs, grad = make_inputs(17, 12, 20, 4, 2, "swiglu", p_empty=0.3)
    run(inputs, "triton", grad, fn=moe_ffn_triton, device=_device())  # load and jit outside the spy
    with Spy() as spy:
        run(inputs, "triton", grad, fn=moe_ffn_triton, device=_device())
    assert spy.bad == []


# ------------------------------------------------------------------------------- registration, declines


def test_registered_with_priority():
    assert "triton" in backends()
    prio = K._BACKENDS["triton"].priority
    assert prio == TRITON_PRIORITY
    if TRITON_PRIORITY > 20:  # GPU machines: above grouped, so auto picks it for CUDA tensors
        assert backends().index("triton") < backends().index("grouped")
    else:  # the interpreter was on when zoo.kernels loaded: never auto-picked on the CPU
        assert backends().index("triton") > backends().index("loop")
        assert resolve_backend("auto", torch.randn(3, 16), torch.randn(4, 16, 32)).name != "triton"


def test_declines_cpu_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, w1 = torch.randn(3, 16), torch.randn(4, 16, 32)
    assert "CUDA" in triton_unsupported(x, w1, None)
    with pytest.raises(ZooValueError, match=r"^backend='triton' cannot run these inputs: tensors on cpu"):
        resolve_backend("triton", x, w1)
    assert resolve_backend("auto", x, w1).name in ("grouped", "loop")


def test_declines_unsupported_dtype_and_missing_triton(monkeypatch):
    import zoo.kernels.triton as T

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x, w1 = torch.randn(3, 16, dtype=torch.float64), torch.randn(4, 16, 32, dtype=torch.float64)
    assert "float64" in T.triton_unsupported(x, w1, None)
    monkeypatch.setattr(T, "_triton_import_error", lambda: "triton is not importable (ImportError: nope)")
    with pytest.raises(ZooValueError, match=r"^backend='triton' cannot run these inputs: triton is not importable"):
        resolve_backend("triton", x.float(), w1.float())


@needs_triton
def test_accepts_cpu_under_interpreter():
    if CUDA:
        pytest.skip("CUDA machine: the interpreter is not used")
    assert triton_unsupported(torch.randn(3, 16), torch.randn(4, 16, 32), None) is None
    assert triton_unsupported(torch.randn(3, 16).half(), torch.randn(4, 16, 32).half(), None) is None


def test_import_is_lazy_and_survives_missing_triton():
    """``import zoo.kernels`` imports no triton; with triton unimportable it still works and ``triton`` declines
    with the reason. A subprocess, so that this interpreter's modules stay as they are."""
    code = textwrap.dedent("""
        import sys, time
        import torch
        t = time.perf_counter()
        import zoo.kernels as K
        took = time.perf_counter() - t
        assert "triton" not in sys.modules and "zoo.kernels.triton.kernels" not in sys.modules, "triton imported"
        assert took < 1.0, f"import zoo.kernels took {took:.2f} s"
        sys.modules["triton"] = None  # now any `import triton` fails
        x, w1 = torch.randn(3, 16), torch.randn(4, 16, 32)
        reason = K._BACKENDS["triton"].supports(x, w1, None)
        assert reason.startswith("triton is not importable"), reason
        y = K.moe_ffn(x, torch.zeros(3, 1, dtype=torch.long), torch.ones(3, 1), w1, torch.randn(4, 32, 16))
        assert y.shape == (3, 16)
        try:
            K.resolve_backend("triton", x, w1)
        except ValueError as err:
            assert "triton is not importable" in str(err)
        else:
            raise AssertionError("no error")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ----------------------------------------------------------------------------- custom ops, torch.compile


@needs_triton
def test_custom_ops_opcheck():
    """Schema, fake (meta) implementation and AOT dispatch of every launcher."""
    from zoo.kernels.triton import ops

    dev = _device()
    T, D, F_, E, k = 9, 12, 20, 4, 2
    ids = torch.tensor([[0, 3], [1, -1], [3, 0], [-1, -1], [2, 1], [0, 1], [3, 2], [1, 0], [2, -1]], device=dev)
    r = build_routing(ids, E, 64)
    S = T * k
    x, w, w1, w3 = (torch.randn(*s, device=dev) for s in ((T, D), (T, k), (E, D, F_), (E, D, F_)))
    h, g = torch.randn(S, F_, device=dev), torch.randn(S, F_, device=dev)
    y = torch.randn(S, D, device=dev)
    meta = (r.blk_expert, r.blk_start, r.expert_end)
    calls = [
        (ops.scatter_mm, (x, w1, None, None, r.sorted_token, None, *meta, S, f32, 64, 256, 256)),
        (ops.scatter_mm, (h, w1.transpose(1, 2), g, w3.transpose(1, 2), None, r.sorted_slot, *meta, S, f32,
                          64, 256, 256)),
        (ops.scatter_mm_dual, (x, w1, w3, r.sorted_token, None, *meta, S, f32, 64, 256, 256)),
        (ops.expert_dw, (h, y, None, r.sorted_slot, r.expert_start, r.expert_end, f32, 64, 256, 256)),
        (ops.expert_dw_dual, (x, h, g, r.sorted_token, None, r.expert_start, r.expert_end, f32, 64, 256, 256)),
        (ops.combine, (y, w, ids, f32, 64, 256)),
        (ops.combine_bwd, (x, y, w, ids, 64, 256)),
    ]
    for op, args in calls:
        torch.library.opcheck(op, args)


@needs_triton
def test_torch_compile_fullgraph():
    """The backend traces under ``torch.compile(fullgraph=True)`` (any host sync or untraceable op would break
    the graph) and the compiled forward and backward match eager."""
    from zoo.kernels.triton.moe import moe_ffn_triton

    inputs, grad = make_inputs(9, 12, 20, 4, 2, "swiglu", p_empty=0.2)
    want = run(inputs, "triton", grad, fn=moe_ffn_triton, device=_device())
    torch._dynamo.reset()
    compiled = torch.compile(moe_ffn_triton, backend="aot_eager", fullgraph=True)
    got = run(inputs, "triton", grad, fn=compiled, device=_device())
    assert torch.equal(got[0], want[0])
    for name in want[1]:
        assert torch.equal(got[1][name], want[1][name]), name


# ------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA or not HAS_TRITON, reason="needs CUDA and triton")
@pytest.mark.parametrize(("T", "D", "F_", "E", "k", "act", "dtype"), [
    (4096, 1024, 512, 64, 8, "swiglu", bf16),
    (4096, 1024, 2048, 8, 2, "gelu", bf16),
    (2048, 1000, 511, 16, 2, "swiglu", f32),  # not tile multiples
    (256, 512, 256, 64, 8, "silu", f16),
])
def test_gpu_realistic_shapes(T, D, F_, E, k, act, dtype):
    """Against ``loop`` (itself checked against the oracle by test_moe_ffn.py) at training shapes, with a few
    empty slots and experts; ``auto`` picks triton on CUDA; no host sync in the backend; bitwise repeatable."""
    from zoo.kernels.triton.moe import moe_ffn_triton

    inputs, grad = make_inputs(T, D, F_, E, k, act, dtype, p_empty=0.05, seed=1)
    inputs["ids"][inputs["ids"] == 3] = 5 % E  # expert 3 gets no tokens
    x = inputs["x"].cuda()
    assert resolve_backend("auto", x, inputs["w1"].cuda(), None if inputs["w3"] is None else inputs["w3"].cuda()
                           ).name == "triton"
    want = run(inputs, "loop", grad, device="cuda")

    leaves = {n: inputs[n].cuda().requires_grad_() for n in GRAD_NAMES if inputs[n] is not None}
    ids, grad_dev = inputs["ids"].cuda(), grad.cuda()

    def triton_run():
        for t in leaves.values():
            t.grad = None
        torch.cuda.set_sync_debug_mode("error")  # any host sync in routing, forward or backward raises
        try:
            y = moe_ffn_triton(leaves["x"], ids, leaves["weights"], leaves["w1"], leaves["w2"], leaves.get("w3"), act)
            y.backward(grad_dev)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return y.detach().cpu(), {n: t.grad.cpu() for n, t in leaves.items()}

    got = triton_run()
    tol = TOL[dtype]
    for name, g, w in [("y", got[0], want[0]), *((n, got[1][n], want[1][n]) for n in want[1])]:
        scale = max(1.0, float(w.float().abs().max()))
        torch.testing.assert_close(g.float(), w.float(), rtol=tol, atol=tol * scale, msg=lambda m, n=name: f"{n}: {m}")
    assert torch.all(got[1]["w1"][3] == 0)
    again = triton_run()
    assert torch.equal(again[0], got[0]) and all(torch.equal(again[1][n], got[1][n]) for n in got[1])
