"""The kernel board script: a --quick run writes complete results and a board that ``render --check`` accepts,
a stale board is caught, and the target verdicts follow the numbers."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels_board.py"


def _load_script():
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports moe_layer from its own folder
    spec = importlib.util.spec_from_file_location("kernels_board", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


board = _load_script()


def _run(*args, tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )


def test_quick_run_renders_and_checks(tmp_path):
    results, md = tmp_path / "results", tmp_path / "kernels.md"
    proc = _run("run", "--quick", "--repeats", "1", "--no-progress", "--results", results, "--board", md, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((results / "cpu.json").read_text())
    assert {"board", "scaling", "memory", "profiles", "machine", "load_average", "commit"} <= set(data)
    variants = {r["variant"] for r in data["board"]}
    assert {"hf_loop", "loop", "grouped", "fused", "compiled", "auto", "ideal_mm", "ideal_bmm"} <= variants
    assert {r["mode"] for r in data["scaling"]} == {"fwd+bwd"}
    memory = [m for m in data["memory"] if m["status"] == "ok"]
    assert {m["variant"] for m in memory} >= {"hf_loop", "loop", "fused"}
    assert all(m["peak_growth_mb"] >= 0 and m["tkd_mb"] > 0 for m in memory)
    for profile in data["profiles"]:
        assert profile["ops"] and sum(o["share"] for o in profile["ops"]) <= 1.0 + 1e-9
        assert 0.0 <= profile["gemm_share"] <= 1.0
    text = md.read_text()
    assert "### Targets" in text and "| T64 D32 F64 E4 k2 | fp32 | fwd+bwd |" in text
    assert (tmp_path / "kernels.scaling.png").stat().st_size > 0
    check = ("render", "--check", "--results", results, "--board", md)
    assert _run(*check, tmp_path=tmp_path).returncode == 0
    md.write_text(text.replace("fwd+bwd", "fwd + bwd", 1))
    stale = _run(*check, tmp_path=tmp_path)
    assert stale.returncode == 6 and "stale" in stale.stderr


def _rec(shape, dtype, variant, ms, fraction, auto="fused"):
    return dict(shape=shape, dtype=dtype, mode="fwd+bwd", variant=variant, status="ok", median_ms=ms,
                fraction_of_ideal=fraction, auto_backend=auto, E=int(shape.split("E")[1].split()[0]))


def test_target_verdicts_follow_the_numbers():
    fine, coarse, wide = "T4096 D256 F128 E64 k8", "T4096 D256 F512 E8 k2", "T4096 D256 F128 E128 k8"
    results = {
        "board": [
            _rec(coarse, "fp32", "auto", 10.0, 0.95, "grouped"),
            _rec(coarse, "bf16", "auto", 10.0, 0.70, "grouped"),
            _rec(fine, "bf16", "auto", 100.0, 0.40),
            _rec(fine, "bf16", "hf_loop", 350.0, 0.11),
        ],
        "scaling": [_rec("T4096 D256 F1024 E8 k1", "fp32", "auto", 10.0, 0.9), _rec(fine, "fp32", "auto", 12.0, 0.8),
                    _rec("T4096 D256 F1024 E8 k1", "bf16", "auto", 10.0, 0.9), _rec(fine, "bf16", "auto", 12.0, 0.6)],
        "memory": [
            dict(shape=fine, variant="fused", status="ok", peak_growth_mb=40.0, tkd_mb=32.0, ted_mb=256.0),
            dict(shape=wide, variant="fused", status="ok", peak_growth_mb=42.0, tkd_mb=32.0, ted_mb=512.0),
            dict(shape=fine, variant="loop", status="ok", peak_growth_mb=40.0, tkd_mb=32.0, ted_mb=256.0),
            dict(shape=wide, variant="loop", status="ok", peak_growth_mb=80.0, tkd_mb=32.0, ted_mb=512.0),
        ],
    }
    lines = "\n".join(board.targets(results))
    assert "| fwd+bwd ≥ 0.9× ideal, T4096 D256 F512 E8 k2, fp32 | 0.95 (grouped) | yes |" in lines
    assert "| fwd+bwd ≥ 0.9× ideal, T4096 D256 F512 E8 k2, bf16 | 0.70 (grouped) | **no** |" in lines
    assert "| fwd+bwd ≥ 0.8× ideal, T4096 D256 F128 E64 k8, bf16 | 0.40 (fused) | **no** |" in lines
    assert "3.50× (fused) | yes |" in lines
    assert "≤ 2.00× (worst: loop) | **no** |" in lines  # loop's peak doubled with E: O(T·E·D)
    # the scaling target compares fractions of the ideal: E64's over E8's
    assert "the fraction at T4096 D256 F1024 E8 k1, fp32 | 0.80 / 0.90 = 0.89× | yes |" in lines
    assert "the fraction at T4096 D256 F1024 E8 k1, bf16 | 0.60 / 0.90 = 0.67× | **no** |" in lines
    # auto against the fastest backend of each row
    results["board"].append(_rec(fine, "bf16", "grouped", 80.0, 0.5))
    assert "worst: 1.25× the fastest (T4096 D256 F128 E64 k8 bf16 fwd+bwd) | **no** |" in "\n".join(board.targets(results))
