"""The NeRF speed benchmark keeps working: a one-step run reports training and rendering rays/s for every field,
with Switch-NeRF as the ratio's base and the paper's ratios beside them."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "nerf_speed.py"


def test_one_step_run_reports_every_row(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "1", "--steps", "1", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["rows"]) == {"mlp", "hash", "voronoi", "switch", "hash_moe", "hmohe"}
    for row in result["rows"].values():
        assert row["train_rays_s"] > 0 and row["render_rays_s"] > 0 and row["render_ms"] > 0
    assert result["header"]["threads"] == 1 and result["paper"] == {"train": 8.0, "render": 16.0}
    assert "× switch" in proc.stdout and "16× rendering" in proc.stdout
