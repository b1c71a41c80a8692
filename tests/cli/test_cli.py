"""The console script: version, help, the demo, and one-line errors with exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from zoo.cli import main

BIN = Path(sys.executable).parent


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"zoo {zoo.__version__}"
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_installed_console_script_and_imports():
    out = subprocess.run([BIN / "zoo", "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: zoo" in out
    code = "import zoo.moe, zoo.kernels, zoo.tasks; print(sorted(zoo.kernels.backends()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "grouped" in out and "reference" in out


def test_usage_errors_are_one_line_with_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and "Traceback" not in err
    assert main(["demo", "--steps", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "zoo: error: --steps=0 is not allowed; expected a positive int"


def test_demo_trains_and_writes_plots(tmp_path, capsys):
    assert main(["demo", "--steps", "20", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for variant in ("moe_e8k2", "moe_e8k2_nobalance", "dense"):
        assert variant in out
    assert (tmp_path / "moe_e8k2" / "expert_load.png").exists()
    assert (tmp_path / "moe_e8k2_nobalance" / "expert_load.json").exists()
