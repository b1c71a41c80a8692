"""``auto`` by measurement (``zoo.kernels.autotune``): buckets, the on-disk cache, reuse without timing, the switch.

Timing is never real here: the candidates are two stand-in backends that advance a fake clock by a fixed cost
per call, so which one "is faster" is decided by the test, not by the machine.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch

import zoo.kernels as K
from zoo.kernels import autotune, moe_ffn, register_backend, resolve_backend
from zoo.kernels.loop import loop_moe_ffn


@pytest.fixture
def clock(monkeypatch):
    """A fake clock, two stand-in backends (``slow``: 5 ms a call, ``quick``: 1 ms) as the only ``auto`` candidates,
    and autotuning on. ``clock['reads']`` counts how often the timer was read."""
    state = {"now": 0.0, "reads": 0, "cost": {"slow": 5e-3, "quick": 1e-3}}

    def timer():
        state["reads"] += 1
        return state["now"]

    def costing(name):
        def fn(*args):
            state["now"] += state["cost"][name]
            return loop_moe_ffn(*args)
        return fn

    for name in [n for n in K._BACKENDS if n != "reference"]:
        del K._BACKENDS[name]
    register_backend("slow", costing("slow"), priority=20)
    register_backend("quick", costing("quick"), priority=10)
    monkeypatch.setattr(autotune, "timer", timer)
    monkeypatch.setenv(autotune.ENV, "1")
    return state


def _call(T=64, E=4, k=2, dtype=torch.float32, grad=True):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T, 8, generator=gen, dtype=dtype, requires_grad=grad)
    ids = torch.randint(0, E, (T, k), generator=gen)
    weights = torch.rand(T, k, generator=gen, dtype=dtype)
    w1 = torch.randn(E, 8, 16, generator=gen, dtype=dtype, requires_grad=grad)
    w2 = torch.randn(E, 16, 8, generator=gen, dtype=dtype, requires_grad=grad)
    y = moe_ffn(x, ids, weights, w1, w2, backend="auto")
    return y, x, w1


def _forget_in_memory():
    """What a new process sees: nothing in memory, the file on disk."""
    autotune._choices.clear()
    autotune._loaded_from = None


def test_tunes_once_picks_the_fastest_and_writes_the_cache(clock):
    y, x, w1 = _call()
    key = autotune.bucket_key(x, 2, w1, None, train=True)
    assert autotune._choices == {key: "quick"}
    assert clock["reads"] == 2 * 2 * autotune.REPEATS  # two candidates, a start and an end read per timed call
    data = json.loads(autotune.cache_path().read_text())
    assert data == {"format": 1, "choices": {key: "quick"}}
    assert resolve_backend("auto", x, w1, None, k=2, training=True).name == "quick"
    # the caller's graph is untouched by the timing: its backward still works
    y.sum().backward()
    assert x.grad is not None


def test_close_call_is_timed_again_taking_turns(clock):
    clock["cost"] = {"slow": 1.1e-3, "quick": 1e-3}  # within CLOSE of each other
    order = []
    for name in ("slow", "quick"):
        fn = K._BACKENDS[name].fn
        K._BACKENDS[name] = dataclasses.replace(K._BACKENDS[name], fn=lambda *a, _n=name, _f=fn: order.append(_n) or _f(*a))
    _call()
    assert clock["reads"] == 2 * 2 * 2 * autotune.REPEATS  # a second pass of REPEATS calls each
    second_pass = order[-2 * autotune.REPEATS - 1:-1]  # the last call is the real one, by the chosen backend
    assert second_pass == ["slow", "quick"] * autotune.REPEATS
    assert list(autotune._choices.values()) == ["quick"]


def test_second_call_and_new_process_reuse_without_timing(clock):
    _call()
    reads = clock["reads"]
    _call()
    _call(T=70)  # T·k/E = 35 rounds to the same log2 bucket as 32
    assert clock["reads"] == reads
    clock["cost"] = {"slow": 1e-3, "quick": 5e-3}  # the machine changed its mind: the cached choice holds
    _forget_in_memory()
    y, x, w1 = _call()
    assert clock["reads"] == reads
    assert resolve_backend("auto", x, w1, None, k=2, training=True).name == "quick"


def test_new_bucket_tunes_again(clock):
    _call()
    reads = clock["reads"]
    _call(grad=False)  # inference is its own bucket
    _call(T=512)  # 8× the rows per expert
    assert clock["reads"] == reads + 2 * 2 * 2 * autotune.REPEATS
    assert len(json.loads(autotune.cache_path().read_text())["choices"]) == 3


def test_cache_written_atomically(clock, monkeypatch):
    writes = []
    real = autotune.atomic_write_text
    monkeypatch.setattr(autotune, "atomic_write_text", lambda path, text: writes.append(path) or real(path, text))
    _call()
    assert writes == [autotune.cache_path()]
    assert [p.name for p in autotune.cache_path().parent.iterdir()] == ["autotune.json"]  # no temporary left


def test_entries_of_other_processes_are_kept(clock):
    path = autotune.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": 1, "choices": {"another machine's bucket": "loop"}}))
    _call()
    assert set(json.loads(path.read_text())["choices"]) >= {"another machine's bucket"}


@pytest.mark.parametrize("content", ["{not json", '{"format": 1, "choices": {"k": 3}}', "[1, 2]"])
def test_corrupt_cache_is_ignored_with_one_line(clock, caplog, content):
    path = autotune.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="zoo.kernels"):
        _call()
        _call()
    lines = [r.getMessage() for r in caplog.records if "unreadable cache" in r.getMessage()]
    assert len(lines) == 1 and str(path) in lines[0] and "\n" not in lines[0]
    assert json.loads(path.read_text())["choices"]  # replaced by a valid file


def test_switched_off_uses_the_static_rule_and_writes_nothing(clock, monkeypatch):
    monkeypatch.setenv(autotune.ENV, "0")
    y, x, w1 = _call()
    assert clock["reads"] == 0 and not autotune.cache_path().exists()
    assert resolve_backend("auto", x, w1, None, k=2).name == "slow"  # the highest priority


def test_default_is_off_under_pytest_deterministic_algorithms_and_pinned_numerics(monkeypatch):
    monkeypatch.delenv(autotune.ENV)
    for name in autotune.PINNED_NUMERICS:
        monkeypatch.delenv(name, raising=False)
    # an earlier test's Trainer(deterministic=True) may have left torch's deterministic mode on for the process
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: False)
    assert not autotune.enabled()  # PYTEST_CURRENT_TEST is set while a test runs
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    assert autotune.enabled()
    monkeypatch.setenv("MKL_CBWR", "AVX2")  # a leaderboard run
    assert not autotune.enabled()
    monkeypatch.delenv("MKL_CBWR")
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)  # a golden trace
    assert not autotune.enabled()
    monkeypatch.setenv(autotune.ENV, "1")
    assert autotune.enabled()


def test_bucket_key():
    def key(T=4096, k=8, E=64, D=256, F_=128, dtype=torch.float32, gated=False, train=True):
        x = torch.empty(T, D, dtype=dtype)
        w1 = torch.empty(E, D, F_, dtype=dtype)
        return autotune.bucket_key(x, k, w1, w1 if gated else None, train)

    base = key()
    assert "rows2^9" in base and "D2^8" in base and "F2^7" in base and "E2^6" in base and "float32" in base
    assert key(T=4500) == base and key(T=3000) == base  # 563 and 375 rows per expert: log2 rounds to 9
    assert key(T=2048, k=16) == base  # the same rows per expert
    for other in (key(T=2048), key(E=128), key(D=512), key(F_=256), key(dtype=torch.bfloat16), key(gated=True),
                  key(train=False)):
        assert other != base
    assert key() == base  # deterministic
