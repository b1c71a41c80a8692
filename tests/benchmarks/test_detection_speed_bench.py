"""The detection speed benchmark keeps working: a one-step run reports training and inference images/s for every
decoder row, with the dense row as the ratio's base."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "detection_speed.py"


def test_one_step_run_reports_every_row(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "1", "--steps", "1", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["rows"]) == {"dense", "moe", "split", "per_dataset"}
    for row in result["rows"].values():
        assert row["train_img_s"] > 0 and row["infer_img_s"] > 0
    assert result["header"]["threads"] == 1 and result["header"]["data_img_s"] > 0
    assert "train img/s" in proc.stdout and "× dense" in proc.stdout
