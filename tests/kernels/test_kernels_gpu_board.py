"""The GPU run, checked on a machine without one: ``kernels_board.py run --device cuda`` and ``moe_layer.py
--device cuda`` say that no CUDA device is present and exit 2; ``benchmarks/gpu_check.sh`` handles its arguments
and exits 2 without CUDA; the board renders a GPU section from ``gpu.json`` (and "no GPU measured yet" without
one); a variant that raises on its warm-up call is reported ``error``, not fatal to the run."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
GPU_CHECK = BENCH / "gpu_check.sh"
CPU_RESULTS = ROOT / "leaderboards" / "results" / "kernels" / "cpu.json"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA device")


def _load(name: str):
    sys.path.insert(0, str(BENCH))  # kernels_board imports moe_layer from its own folder
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


board = _load("kernels_board")
ml = board.ml


def _run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=full_env, cwd=ROOT)


@no_cuda
@pytest.mark.parametrize(("script", "args"), [("kernels_board.py", ["run", "--quick"]), ("moe_layer.py", ["--quick"])])
def test_device_cuda_without_cuda_exits_2_with_one_line(script, args, tmp_path):
    proc = _run([sys.executable, str(BENCH / script), *args, "--device", "cuda"])
    assert proc.returncode == 2, proc.stderr
    assert "no CUDA device is present" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown argument '--bogus'"),
        (["--repeats", "0"], "--repeats needs a positive integer, got '0'"),
        (["--repeats", "many"], "--repeats needs a positive integer"),
        (["--repeats"], "--repeats needs a positive integer"),
        (["--results"], "--results needs a folder"),
        (["--skip-tests", "--skip-board"], "leave nothing to run"),
    ],
)
def test_gpu_check_rejects_bad_arguments(args, message):
    proc = _run(["bash", str(GPU_CHECK), *args])
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_gpu_check_help_and_missing_python():
    helped = _run(["bash", str(GPU_CHECK), "--help"])
    assert helped.returncode == 0 and helped.stdout.startswith("usage: benchmarks/gpu_check.sh")
    missing = _run(["bash", str(GPU_CHECK)], PYTHON="/nonexistent/python")
    assert missing.returncode == 2 and "no Python at /nonexistent/python" in missing.stderr


@no_cuda
def test_gpu_check_without_cuda_exits_2_before_running_anything(tmp_path):
    proc = _run(["bash", str(GPU_CHECK), "--results", str(tmp_path)], PYTHON=sys.executable)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no CUDA device is present" in proc.stderr and "Traceback" not in proc.stderr
    assert "==" not in proc.stdout and not list(tmp_path.iterdir())  # neither step started


def _gpu_results() -> dict:
    """The committed CPU results dressed up as a GPU run (the renderer reads only the fields)."""
    data = json.loads(CPU_RESULTS.read_text())
    data |= {"device": "cuda", "machine": "torch 2.14.1+cu130 · CUDA 13.0 · NVIDIA H100 80GB HBM3 (sm_90)",
             "command": "python benchmarks/kernels_board.py run --device cuda --repeats 5"}
    for m in data["memory"]:
        if m["variant"] == "fused":
            m["variant"] = "triton"
    return data


def test_board_renders_a_gpu_section_from_gpu_json(tmp_path):
    shutil.copy(CPU_RESULTS, tmp_path / "cpu.json")
    without = board.render_markdown(board.load_sections(tmp_path))
    assert "## GPU\n\nNo GPU measured yet." in without and "gpu_check.sh" in without

    (tmp_path / "gpu.json").write_text(json.dumps(_gpu_results()))
    sections = board.load_sections(tmp_path)
    assert [s["device"] for s in sections] == ["cpu", "cuda"]
    text = board.render_markdown(sections)
    assert "No GPU measured yet" not in text
    cpu_at, gpu_at = text.index("## CPU: "), text.index("## GPU: torch 2.14.1+cu130 · CUDA 13.0 · NVIDIA H100")
    assert cpu_at < gpu_at
    gpu = text[gpu_at:]
    assert "Peak CUDA-allocator growth" in gpu and "| hf_loop | loop | grouped | triton |" in gpu
    assert "self GPU kernel time by op" in gpu and "self CPU time by op" in text[:gpu_at]
    assert "`python benchmarks/kernels_board.py run --device cuda --repeats 5`" in gpu


def test_render_check_covers_the_gpu_section(tmp_path):
    shutil.copy(CPU_RESULTS, tmp_path / "cpu.json")
    (tmp_path / "gpu.json").write_text(json.dumps(_gpu_results()))
    md = tmp_path / "kernels.md"
    assert board.main(["render", "--results", str(tmp_path), "--board", str(md)]) == 0
    assert board.main(["render", "--check", "--results", str(tmp_path), "--board", str(md)]) == 0
    (tmp_path / "gpu.json").unlink()
    assert board.main(["render", "--check", "--results", str(tmp_path), "--board", str(md)]) == 6


def test_committed_board_says_no_gpu_yet():
    committed = (ROOT / "leaderboards" / "kernels.md").read_text()
    assert committed == board.render_markdown(board.load_sections(board.RESULTS))
    if not (board.RESULTS / "gpu.json").exists():
        assert "No GPU measured yet" in committed


def test_profile_error_renders_as_one_line():
    assert board.profile_table({"error": "RuntimeError: CUPTI unavailable"}, "cuda") == [
        "The profile of `auto` failed: RuntimeError: CUPTI unavailable"
    ]


def test_a_variant_that_raises_is_reported_not_fatal():
    x = torch.randn(4, 3, requires_grad=True)

    def broken() -> torch.Tensor:
        raise RuntimeError("grouped_mm: no kernel for this GPU\nsecond line")

    cases = {
        "ok": ml.Case(lambda: x * 2, [x], torch.ones(4, 3)),
        "broken": ml.Case(broken, [], torch.ones(4, 3)),
    }
    medians, outputs, errors = ml.measure(cases, backward=True, repeats=2)
    assert set(medians) == {"ok"} and set(outputs) == {"ok"}
    assert errors == {"broken": ml.Status("error", "RuntimeError: grouped_mm: no kernel for this GPU")}


def test_inputs_are_the_same_numbers_on_any_device():
    """``make_moe_inputs`` seeds on the CPU and moves, so a GPU board times the CPU board's inputs."""
    shape = ml.Shape(8, 16, 32, 4, 2)
    cpu = ml.make_moe_inputs(shape, torch.float32, gated=True, grad=True, seed=3)
    moved = ml.make_moe_inputs(shape, torch.float32, gated=True, grad=True, seed=3, device="meta")
    assert moved.x_TD.device.type == "meta" and moved.x_TD.requires_grad and moved.ids_TK.device.type == "meta"
    again = ml.make_moe_inputs(shape, torch.float32, gated=True, grad=True, seed=3, device="cpu")
    torch.testing.assert_close(cpu.w3_EDF, again.w3_EDF, rtol=0, atol=0)


def _fake_python(tmp_path: Path) -> Path:
    """A stand-in interpreter that 'has' CUDA: it logs its arguments and exits with FAKE_TESTS_RC for pytest,
    FAKE_BOARD_RC for the board, 0 otherwise; the script's sequencing and exit codes are what is tested."""
    fake = tmp_path / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {tmp_path}/calls\n'
        'case "$*" in\n'
        '  *"-m pytest"*) exit "${FAKE_TESTS_RC:-0}" ;;\n'
        '  *kernels_board.py*) exit "${FAKE_BOARD_RC:-0}" ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize(
    ("tests_rc", "board_rc", "want_rc", "said"),
    [
        ("0", "0", 0, "all steps passed"),
        ("1", "0", 1, "FAILED: triton tests (exit 1)"),
        ("0", "124", 1, "the board ran past 260 s"),
    ],
)
def test_gpu_check_runs_both_steps_and_reports_failures(tmp_path, tests_rc, board_rc, want_rc, said):
    fake = _fake_python(tmp_path)
    proc = _run(["bash", str(GPU_CHECK), "--repeats", "2"], PYTHON=str(fake), FAKE_TESTS_RC=tests_rc,
                FAKE_BOARD_RC=board_rc)
    assert proc.returncode == want_rc, proc.stdout + proc.stderr
    assert said in proc.stdout + proc.stderr
    calls = (tmp_path / "calls").read_text()
    assert "-m pytest" in calls and "tests/kernels/test_triton_backend.py" in calls
    assert "benchmarks/kernels_board.py run --device cuda --repeats 2 --no-progress" in calls
    if want_rc == 0:
        assert "figures in leaderboards/results/kernels/gpu.json, board rendered in leaderboards/kernels.md" in proc.stdout


def test_gpu_check_exports_triton_interpret_0(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(f'#!/usr/bin/env bash\necho "TRITON_INTERPRET=$TRITON_INTERPRET" >> {tmp_path}/env\n')
    fake.chmod(0o755)
    proc = _run(["bash", str(GPU_CHECK), "--skip-board"], PYTHON=str(fake), TRITON_INTERPRET="1")
    assert proc.returncode == 0, proc.stderr
    assert set((tmp_path / "env").read_text().split()) == {"TRITON_INTERPRET=0"}
