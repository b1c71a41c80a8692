"""fp64 exactness and the registry's refusals and fall-backs.

Every backend that accepts fp64 computes in fp64: ``torch.autograd.gradcheck`` passes on it and it matches the
per-token reference (itself fp64 on fp64 inputs) to fp64 rounding; the others decline fp64 with one line that
names the backends that can run it. An explicit request a backend declines (dtype, device) names the
alternatives; a backend whose compile step raises is skipped by ``auto`` with one logged warning, never a crash.
"""

from __future__ import annotations

import logging
import sys

import pytest
import torch

import zoo.kernels as K
from zoo.errors import ZooValueError
from zoo.kernels import BackendDeclined, backends, moe_ffn, register_backend, resolve_backend

f64 = torch.float64
# E=4 with expert 3 never routed, k=2, -1 slots (one row of -1 only), a duplicate pair of ids
IDS = torch.tensor([[0, 2], [1, -1], [2, 0], [-1, -1], [1, 1], [0, 2]])
GRAD_NAMES = ("x", "weights", "w1", "w2", "w3")


def _inputs(activation: str, ids: torch.Tensor = IDS, D: int = 3, F_: int = 4, E: int = 4, dtype=f64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    T, k = ids.shape

    def randn(*size):
        return torch.randn(*size, generator=gen, dtype=f64).to(dtype)

    return dict(
        x=randn(T, D),
        weights=torch.rand(T, k, generator=gen, dtype=f64).to(dtype),
        w1=randn(E, D, F_) / D**0.5,
        w2=randn(E, F_, D) / F_**0.5,
        w3=randn(E, D, F_) / D**0.5 if activation == "swiglu" else None,
    )


def _fp64_backends() -> list[str]:
    """The registered backends that accept fp64 CPU inputs (the oracle included)."""
    i = _inputs("gelu")
    return [n for n in backends() if K._BACKENDS[n].supports(i["x"], i["w1"], None) is None]


def test_fp64_capable_backends_are_the_documented_ones():
    assert {"loop", "fused", "reference"} <= set(_fp64_backends())
    assert "grouped" not in _fp64_backends()


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
@pytest.mark.parametrize("backend", _fp64_backends())
def test_gradcheck_fp64(backend, activation):
    i = _inputs(activation)
    names = [n for n in GRAD_NAMES if i[n] is not None]
    leaves = [i[n].clone().requires_grad_() for n in names]

    def f(*tensors):
        t = dict(zip(names, tensors, strict=True))
        return moe_ffn(t["x"], IDS, t["weights"], t["w1"], t["w2"], t.get("w3"), activation, backend=backend)

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("backend", _fp64_backends())
def test_fp64_matches_reference_to_fp64_rounding(backend):
    """The old fp32-inside paths were ~3e-7 off; fp64 throughout agrees to ~1e-15, forward and gradients."""
    ids = torch.randint(-1, 6, (40, 3), generator=torch.Generator().manual_seed(1))  # expert 7 gets no token
    i = _inputs("swiglu", ids=ids, D=24, F_=20, E=8, seed=1)
    g = torch.randn(40, 24, dtype=f64, generator=torch.Generator().manual_seed(2))
    results = {}
    for b in (backend, "reference"):
        leaves = {n: t.clone().requires_grad_() for n, t in i.items() if t is not None}
        y = moe_ffn(leaves["x"], ids, leaves["weights"], leaves["w1"], leaves["w2"], leaves["w3"], "swiglu", backend=b)
        y.backward(g)
        assert y.dtype == f64
        results[b] = (y.detach(), {n: t.grad for n, t in leaves.items()})
    (y, grads), (y_ref, grads_ref) = results[backend], results["reference"]
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for n, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[n], rtol=1e-12, atol=1e-12, msg=f"d{n}")


def test_fp64_per_slot_outputs_and_weighted_sum_stay_fp64():
    i = _inputs("gelu")
    per_slot = moe_ffn(i["x"], IDS, None, i["w1"], i["w2"], backend="loop")
    y = K.weighted_sum(per_slot, i["weights"].masked_fill(IDS < 0, 0.0), f64)
    want = moe_ffn(i["x"], IDS, i["weights"], i["w1"], i["w2"], backend="reference")
    assert per_slot.dtype == f64
    torch.testing.assert_close(y, want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backend", [b for b in backends() if b not in _fp64_backends()])
def test_fp64_declined_with_the_backends_that_can(backend):
    i = _inputs("gelu")
    with pytest.raises(BackendDeclined) as info:
        moe_ffn(i["x"], IDS, i["weights"], i["w1"], i["w2"], backend=backend)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, ZooValueError)
    assert message.startswith(f"backend={backend!r} cannot run these inputs: ")
    assert "float64" in message or "tensors on cpu" in message
    assert message.endswith("; backends that can: " + ", ".join(_fp64_backends()))


@pytest.mark.parametrize(("T", "E", "want"), [(6, 4, "loop"), (4096, 32, "fused")])
def test_auto_picks_an_fp64_backend(T, E, want):
    x, w1 = torch.zeros(T, 8, dtype=f64), torch.zeros(E, 8, 16, dtype=f64)
    chosen = resolve_backend("auto", x, w1)
    assert chosen.name == want and chosen.name in _fp64_backends()


def test_auto_fp64_call_is_exact():
    i = _inputs("gelu")
    y = moe_ffn(i["x"], IDS, i["weights"], i["w1"], i["w2"])
    want = moe_ffn(i["x"], IDS, i["weights"], i["w1"], i["w2"], backend="reference")
    assert y.dtype == f64
    torch.testing.assert_close(y, want, rtol=1e-14, atol=1e-14)


# ---------------------------------------------------------------------------------------- refusals, fall-backs


def test_unsupported_device_names_the_backends_that_support_it():
    """Meta tensors stand in for a device the CPU-only ``fused`` declines."""
    x, w1 = torch.empty(8, 16, device="meta"), torch.empty(4, 16, 32, device="meta")
    with pytest.raises(BackendDeclined, match=r"^backend='fused' cannot run these inputs: tensors on meta") as info:
        resolve_backend("fused", x, w1)
    able = [n for n in backends() if K._BACKENDS[n].supports(x, w1, None) is None]
    assert "fused" not in able and "loop" in able
    assert info.value.alternatives == able and str(info.value).endswith("backends that can: " + ", ".join(able))


def test_unsupported_dtype_alternatives_exclude_the_declining_backend():
    x, w1 = torch.zeros(8, 16, dtype=torch.float16), torch.zeros(4, 16, 32, dtype=torch.float16)
    with pytest.raises(BackendDeclined, match=r"dtype torch\.float16") as info:
        resolve_backend("grouped", x, w1)
    assert info.value.backend == "grouped" and "grouped" not in info.value.alternatives
    assert {"loop", "reference"} <= set(info.value.alternatives)


def _failing_compile(calls: list[int]):
    def prepare(x, w1, w3):
        calls.append(1)
        raise RuntimeError("ptxas fatal: unsupported GPU architecture\nmore detail that stays out of the log")

    return prepare


def test_failed_compile_falls_back_with_one_warning(caplog):
    calls: list[int] = []
    register_backend("fragile", K._BACKENDS["loop"].fn, priority=1000, prepare=_failing_compile(calls))
    i = _inputs("gelu", dtype=torch.float32)
    with caplog.at_level(logging.INFO, logger="zoo.kernels"):
        ys = [moe_ffn(i["x"], IDS, i["weights"], i["w1"], i["w2"]) for _ in range(3)]
    want = moe_ffn(i["x"], IDS, i["weights"], i["w1"], i["w2"], backend="reference")
    for y in ys:
        torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    assert calls == [1]  # the compile step runs once per (device, dtype, gated)
    lines = [r for r in caplog.records if "fragile" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "failed to compile for cpu torch.float32 (RuntimeError: ptxas fatal" in lines[0].getMessage()
    assert "more detail" not in lines[0].getMessage()
    with pytest.raises(BackendDeclined, match=r"^backend='fragile' cannot run these inputs: failed to compile.*"
                                              r"backends that can: .*loop"):
        moe_ffn(i["x"], IDS, i["weights"], i["w1"], i["w2"], backend="fragile")
    assert calls == [1]


def test_compile_step_runs_per_dtype_and_reregistering_forgets_failures():
    calls: list[int] = []
    register_backend("fragile", K._BACKENDS["loop"].fn, priority=1000, prepare=_failing_compile(calls))
    for dtype in (torch.float32, f64, torch.float32):
        i = _inputs("gelu", dtype=dtype)
        assert resolve_backend("auto", i["x"], i["w1"]).name != "fragile"
    assert len(calls) == 2
    ok: list[int] = []
    register_backend("fragile", K._BACKENDS["loop"].fn, priority=1000, prepare=lambda x, w1, w3: ok.append(1))
    i = _inputs("gelu", dtype=torch.float32)
    assert resolve_backend("auto", i["x"], i["w1"]).name == "fragile"
    assert resolve_backend("auto", i["x"], i["w1"]).name == "fragile" and ok == [1]


def test_triton_that_cannot_load_its_kernels_falls_back(monkeypatch, caplog):
    """The real ``triton`` compile step, with its kernel module made unimportable (as a broken toolchain would),
    ranked above everything as on a GPU: ``auto`` warns once and runs the next backend."""
    if "triton" not in backends():
        pytest.skip("triton backend not registered")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setitem(sys.modules, "zoo.kernels.triton.moe", None)  # import of the kernels raises ImportError
    triton = K._BACKENDS["triton"]
    i = _inputs("gelu", dtype=torch.float32)
    if triton.supports(i["x"], i["w1"], None) is not None:
        pytest.skip(f"triton declines before compiling here: {triton.supports(i['x'], i['w1'], None)}")
    register_backend("triton", triton.fn, triton.supports, priority=1000, prepare=triton.prepare)
    with caplog.at_level(logging.INFO, logger="zoo.kernels"):
        y = moe_ffn(i["x"], IDS, i["weights"], i["w1"], i["w2"])
        moe_ffn(i["x"], IDS, i["weights"], i["w1"], i["w2"])
    want = moe_ffn(i["x"], IDS, i["weights"], i["w1"], i["w2"], backend="reference")
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "'triton'" in r.getMessage()]
    assert len(warnings) == 1 and "failed to compile" in warnings[0].getMessage()
    assert "ModuleNotFoundError" in warnings[0].getMessage()


# ------------------------------------------------------------------------------------------ on a GPU (gpu_check.sh)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
def test_cuda_fp64_is_declined_by_triton_and_exact_on_loop():
    i = {n: t.cuda() if t is not None else None for n, t in _inputs("swiglu").items()}
    ids = IDS.cuda()
    with pytest.raises(BackendDeclined, match=r"float64") as info:
        resolve_backend("triton", i["x"], i["w1"], i["w3"])
    assert "loop" in info.value.alternatives and "fused" not in info.value.alternatives
    assert resolve_backend("auto", i["x"], i["w1"], i["w3"]).name in info.value.alternatives
    leaves = [i[n].clone().requires_grad_() for n in GRAD_NAMES]

    def f(x, weights, w1, w2, w3):
        return moe_ffn(x, ids, weights, w1, w2, w3, "swiglu", backend="loop")

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.gpu
@needs_cuda
def test_triton_is_compiled_for_the_gpu_and_picked_by_auto():
    x, w1 = torch.randn(8, 64, device="cuda"), torch.randn(4, 64, 128, device="cuda")
    reason = K._BACKENDS["triton"].supports(x, w1, None) if "triton" in backends() else "not registered"
    if reason is not None:
        pytest.skip(f"triton declines CUDA fp32 here: {reason}")
    assert resolve_backend("auto", x, w1).name == "triton"
    assert K._prepared[("triton", "cuda", torch.float32, False)] is None  # the compile step ran and passed
    from zoo.kernels.triton import kernels

    assert not kernels.INTERPRETED, "TRITON_INTERPRET was on: the GPU run would test the interpreter"
