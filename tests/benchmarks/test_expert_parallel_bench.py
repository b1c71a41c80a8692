"""The expert-parallel benchmark keeps working: one and two gloo ranks time the zoo's layer and count its all-to-all
bytes against the uniform-routing formula; ``--deepspeed`` without DeepSpeed installed says how to get it."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "expert_parallel.py"


def test_two_ranks_send_the_uniform_formulas_bytes(tmp_path):
    out = tmp_path / "ep.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--worlds", "1,2", "--repeats", "1", "--warmup", "0",
                           "--tokens", "256", "--d-model", "32", "--hidden", "64", "--timeout", "120", "--json",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["impl"], r["world"], r["tokens_per_rank"]) for r in rows] == [("zoo", 1, 256), ("zoo", 2, 128)]
    two = rows[1]
    assert abs(two["fwd_bytes"] - two["uniform_bytes"]) < 0.25 * two["uniform_bytes"]  # random routing is near-uniform
    assert two["bwd_bytes"] == two["fwd_bytes"]


def test_deepspeed_comparison_needs_deepspeed(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("expert_parallel_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    assert module.main(["--deepspeed", "--worlds", "1"]) == 2
    assert "DeepSpeed is not installed (pip install deepspeed" in capsys.readouterr().err
