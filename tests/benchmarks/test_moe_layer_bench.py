"""The benchmark script keeps working: a --quick run finishes and reports every variant for every row, and
backends that decline the inputs, or would only run in an interpreter, are reported with a reason, never timed."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo.kernels as K
from zoo.kernels import Backend

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "moe_layer.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("moe_layer_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load_script()


def test_quick_run_writes_complete_results(tmp_path):
    """Under ``TRITON_INTERPRET=1`` (what tests/conftest.py sets on machines without a GPU) triton is skipped,
    not timed in the interpreter; grouped declines the bf16 shape with D=36. One thread: a smoke run, not a
    measurement, and two OpenMP threads on a shared 2-core machine make it many times slower."""
    out = tmp_path / "bench.json"
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeats", "1", "--json", str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    records = json.loads(out.read_text())
    variants = {r["variant"] for r in records}
    assert {"hf_loop", "reference", "loop", "grouped", "auto", *K.backends()} <= variants
    assert {r["status"] for r in records} <= {"ok", "n/a", "skipped"}
    ok = [r for r in records if r["status"] == "ok"]
    assert ok and all(r["median_ms"] > 0 and r["fraction_of_ideal"] > 0 for r in ok)
    for name in ("hf_loop", "loop", "reference", "auto", "ideal_mm", "ideal_bmm"):  # never decline here
        assert all(r["status"] == "ok" for r in records if r["variant"] == name), name
    untimed = [r for r in records if r["status"] != "ok"]
    assert all(r["reason"] and r["median_ms"] is None for r in untimed)
    assert any(r["variant"] == "grouped" and r["status"] == "n/a" and r["dtype"] == "bf16" for r in untimed)
    triton = [r for r in records if r["variant"] == "triton"]
    assert triton and all(r["status"] == "skipped" and "interpreter" in r["reason"] for r in triton)
    assert "triton skipped (every row)" in proc.stdout


def _tiny_inputs():
    return bench.make_moe_inputs(bench.Shape(8, 16, 32, 4, 2), torch.float32, gated=False, grad=False, seed=0)


def test_declining_backends_are_na_with_their_reason(monkeypatch):
    """Any backend that declines is reported ``n/a`` with its own message, not only grouped; triton on CPU tensors
    declines without the interpreter and is skipped with it."""
    monkeypatch.setitem(K._BACKENDS, "picky", Backend("picky", K._BACKENDS["loop"].fn, lambda x, w1, w3: "not today", 0))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cases, statuses = bench.variant_cases(bench.Shape(8, 16, 32, 4, 2), _tiny_inputs(), "gelu", False)
    assert {"hf_loop", "loop", "auto"} <= set(cases) and "picky" not in cases
    assert statuses["picky"] == bench.Status("n/a", "backend='picky' cannot run these inputs: not today")
    if "triton" in K.backends():
        assert "triton" not in cases
        assert statuses["triton"].status == "n/a" and "tensors on cpu" in statuses["triton"].reason

        monkeypatch.setenv("TRITON_INTERPRET", "1")
        cases, statuses = bench.variant_cases(bench.Shape(8, 16, 32, 4, 2), _tiny_inputs(), "gelu", False)
        assert "triton" not in cases
        assert statuses["triton"].status == "skipped" and "interpreter" in statuses["triton"].reason


def test_auto_resolving_to_an_interpreted_backend_is_skipped(monkeypatch):
    if "triton" not in K.backends():
        pytest.skip("triton not registered")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    for name, b in list(K._BACKENDS.items()):  # everything but triton declines, so auto would pick it
        if name != "triton" and b.priority is not None:
            monkeypatch.setitem(K._BACKENDS, name, Backend(name, b.fn, lambda x, w1, w3: "declines", b.priority))
    cases, statuses = bench.variant_cases(bench.Shape(8, 16, 32, 4, 2), _tiny_inputs(), "gelu", False)
    assert "auto" not in cases and statuses["auto"].status == "skipped"
    assert statuses["auto"].reason.startswith("resolves to triton: ")
