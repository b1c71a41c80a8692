"""The ``compiled`` backend compiled for real (Inductor C++), its padded layout, and its fall-back without a compiler.

tests/kernels/test_moe_ffn.py runs the backend's chain eagerly over the whole backend matrix (conftest sets
``compiled.EAGER``); here it is compiled: once per dtype, checked against the per-token reference with every
gradient, −1 slots, an empty expert and odd sizes, then called at other T and routings without recompiling.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch._dynamo.utils import counters

import zoo.kernels as K
from zoo.kernels import BackendDeclined, autotune, compiled, moe_ffn
from zoo.kernels.compiled import capacity, padded_maps

GRAD_NAMES = ("x", "weights", "w1", "w2", "w3")


def _inputs(T, D, F_, E, k, dtype, gated, seed=0, unused_expert=None):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.rand(T, E, generator=gen).argsort(dim=1)[:, :k]
    if unused_expert is not None:
        ids = torch.where(ids == unused_expert, (unused_expert + 1) % E, ids)
    ids = ids.masked_fill(torch.rand(T, k, generator=gen) < 0.2, -1)
    x = torch.randn(T, D, generator=gen).to(dtype)
    weights = torch.rand(T, k, generator=gen).to(dtype)
    w1 = (torch.randn(E, D, F_, generator=gen) / D**0.5).to(dtype)
    w2 = (torch.randn(E, F_, D, generator=gen) / F_**0.5).to(dtype)
    w3 = (torch.randn(E, D, F_, generator=gen) / D**0.5).to(dtype) if gated else None
    grad = torch.randn(T, D, generator=gen).to(dtype)
    return dict(x=x, ids=ids, weights=weights, w1=w1, w2=w2, w3=w3), grad


def _run(inputs, backend, grad, activation):
    leaves = {n: inputs[n].clone().requires_grad_(True) for n in GRAD_NAMES if inputs[n] is not None}
    args = {**inputs, **leaves}
    y = moe_ffn(args["x"], args["ids"], args["weights"], args["w1"], args["w2"], args["w3"], activation,
                backend=backend)
    y.backward(grad)
    return y.detach(), {n: t.grad for n, t in leaves.items()}


@pytest.fixture
def really_compiled(monkeypatch):
    monkeypatch.setattr(compiled, "EAGER", False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small shapes: intra-op threads only add contention on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("dtype", "activation", "tol"), [(torch.float32, "swiglu", 1e-4), (torch.bfloat16, "gelu", 3e-2)])
def test_compiled_matches_reference_and_does_not_recompile(really_compiled, dtype, activation, tol):
    gated = activation == "swiglu"
    inputs, grad = _inputs(37, 20, 44, 6, 3, dtype, gated, unused_expert=4)
    assert not (inputs["ids"] == 4).any()  # an expert with no rows
    want = _run(inputs, "reference", grad, activation)
    got = _run(inputs, "compiled", grad, activation)
    for name, a, b in [("y", want[0], got[0]), *((n, want[1][n], got[1][n]) for n in want[1])]:
        scale = max(1.0, float(a.float().abs().max()))
        torch.testing.assert_close(b.float(), a.float(), rtol=tol, atol=tol * scale, msg=name)
    graphs = counters["stats"]["unique_graphs"]
    for T, seed in [(50, 1), (123, 2), (9, 3)]:  # other T, other loads: other capacities
        more, more_grad = _inputs(T, 20, 44, 6, 3, dtype, gated, seed=seed)
        _run(more, "compiled", more_grad, activation)
    assert counters["stats"]["unique_graphs"] == graphs, "a new T or capacity recompiled the chain"


def test_many_layer_shapes_stay_compiled(really_compiled):
    """Each layer shape is its own compiled variant; past torch's recompile limit dynamo would run the chain
    eagerly without a word, so the backend raises the limit for its own calls."""
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(recompile_limit=1):
        for D in (8, 12, 16):
            inputs, _ = _inputs(11, D, 8, 3, 2, torch.float32, gated=False, seed=D)
            with torch.no_grad():
                moe_ffn(inputs["x"], inputs["ids"], inputs["weights"], inputs["w1"], inputs["w2"], None, "gelu",
                        backend="compiled")
    assert counters["stats"]["unique_graphs"] >= graphs + 3


def test_capacity_buckets():
    assert [capacity(n) for n in (1, 7, 15, 16, 17, 100, 512, 570)] == [1, 7, 15, 16, 18, 104, 512, 576]
    for n in range(1, 5000):
        c = capacity(n)
        assert n <= c <= n + max(1, n // 8)


def test_padded_maps_hand_example():
    ids = torch.tensor([[1, 0], [1, -1], [0, 1]])  # expert 0: slots 1, 4; expert 1: slots 0, 2, 5
    src_P, pos_S, C = padded_maps(ids, 3, 3)
    assert C == 3
    # padded rows: expert 0 reads tokens 0, 2, pad; expert 1: tokens 0, 1, 2; expert 2 (empty): pads
    assert src_P.tolist() == [0, 2, 3, 0, 1, 2, 3, 3, 3]
    # slot -> padded row; the −1 slot reads the zero row E·C = 9
    assert pos_S.tolist() == [3, 0, 4, 9, 1, 5]


def test_no_compiler_falls_back(monkeypatch, caplog):
    """A compile step that fails (as Inductor does without a C++ compiler): ``auto`` logs one warning and runs
    another backend; an explicit request raises one line naming the backends that can run the inputs."""

    def no_compiler(fn):
        def raising(*args, **kwargs):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found in torch._inductor.config.cpp.cxx")
        return raising

    monkeypatch.setattr(compiled, "EAGER", False)
    monkeypatch.setattr(compiled, "_compiled_chain", None)
    monkeypatch.setattr(compiled, "compile_chain", no_compiler)
    monkeypatch.setattr(K, "_prepared", {})  # an earlier test may have compiled it in this process already
    inputs, _ = _inputs(16, 8, 8, 4, 2, torch.float32, False)
    args = (inputs["x"], inputs["ids"], inputs["weights"], inputs["w1"], inputs["w2"])
    with pytest.raises(BackendDeclined) as err:
        moe_ffn(*args, backend="compiled")
    message = str(err.value)
    assert "\n" not in message and "failed to compile" in message and "InvalidCxxCompiler" in message
    assert set(err.value.alternatives) >= {"loop", "fused"} and "compiled" not in err.value.alternatives

    # under autotuning ``compiled`` is a candidate: its failure is one warning, and another backend runs
    K._prepared.clear()
    monkeypatch.setenv(autotune.ENV, "1")
    with caplog.at_level(logging.INFO, logger="zoo.kernels"):
        for _ in range(2):
            y = moe_ffn(*args, backend="auto")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "'compiled'" in r.getMessage()]
    assert len(warnings) == 1
    assert "compiled" not in autotune._choices.values()
    torch.testing.assert_close(y, moe_ffn(*args, backend="reference"), rtol=1e-5, atol=1e-5)
