"""Crash-safe training: a ``zoo train`` killed with SIGKILL after a checkpoint, or stopped with Ctrl-C, continues with
``zoo train TASK --resume RUN`` to the weights, test metrics and expert load of an uninterrupted run, bit for bit
(CPU, ``trainer.deterministic=true``, one thread). Runs are subprocesses of a few seconds, started in pairs (the
uninterrupted reference beside the one that is stopped) to halve the wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from zoo import api
from zoo.callbacks import save_checkpoint
from zoo.config import resolve_config
from zoo.task import fit_and_test, write_run_files

# The smoke recipes with a few epochs, sized so the run after the first checkpoint lasts a second or more.
RUNS = {
    "forecasting": ["--recipe", "moe_e8k2_m3-monthly", "--set", "trainer.max_epochs=8",
                    "--set", "trainer.checkpoint_every_n_steps=5"],  # 12 steps an epoch
    "stocks": ["--recipe", "moe_e16k2_style-panel", "--set", "trainer.max_epochs=2", "--set", "data.max_days=250",
               "--set", "trainer.checkpoint_every_n_steps=40"],  # 112 steps an epoch; keeps its best epoch
    "recsys": ["--recipe", "home_ml100k", "--set", "trainer.max_epochs=2",
               "--set", "trainer.checkpoint_every_n_steps=5"],  # 18 steps an epoch; keeps its best epoch
}
EXACT = ["--smoke", "--set", "trainer.deterministic=true"]
QUIET = ["--threads", "1", "--no-progress"]


def zoo_train(cwd: Path, *args: str) -> subprocess.Popen:
    """``zoo train ARGS`` in the background, its output in ``cwd/<n>.log``."""
    log = cwd / f"{len(list(cwd.glob('*.log')))}.log"
    env = {**os.environ, "ZOO_OFFLINE": "1"}
    with open(log, "w") as out:
        # SIGINT back to its default: a parent started in the background (`cmd &` without job control, as CI
        # scripts are) passes it down ignored, and Python then installs no KeyboardInterrupt handler.
        proc = subprocess.Popen([sys.executable, "-m", "zoo", "train", *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.log = log  # type: ignore[attr-defined]
    return proc


def start(task: str, run: Path) -> subprocess.Popen:
    return zoo_train(run.parent, task, *RUNS[task], *EXACT, *QUIET, "--out", str(run))


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    proc.wait(timeout)
    return proc.returncode, proc.log.read_text()


def wait_until(ready, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    """Poll ``ready()`` every few milliseconds while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before {what}:\n{proc.log.read_text()}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.005)


def progress(run: Path) -> tuple[int, int, int]:
    """(epoch, global step, batches of the epoch done; 0 at an epoch's end) of ``last.ckpt``."""
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["epoch"], ckpt["global_step"], ckpt["callbacks"]["RunCheckpoint"]["batches_done"]


def assert_same_run(run: Path, reference: Path) -> None:
    """Bitwise-equal last and best weights, equal test metrics and expert load history."""
    names = sorted(p.name for p in (reference / "checkpoints").glob("*.ckpt"))
    assert sorted(p.name for p in (run / "checkpoints").glob("*")) == names  # no temporary files left either
    for name in names:
        got = torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)["state_dict"]
        want = torch.load(reference / "checkpoints" / name, map_location="cpu", weights_only=True)["state_dict"]
        assert got.keys() == want.keys()
        different = [k for k in want if not torch.equal(got[k], want[k])]
        assert not different, f"{name}: {different}"
    for name in ("results.json", "expert_load.json"):
        if (reference / name).exists() or name == "results.json":
            got, want = (json.loads((r / name).read_text()) for r in (run, reference))
            assert without_clock(got.get("metrics", got)) == without_clock(want.get("metrics", want)), name
    if (reference / "val_curve.csv").exists():  # every validation's losses, the resumed part's rows continuing
        got, want = (without_clock(pd.read_csv(r / "val_curve.csv")) for r in (run, reference))
        pd.testing.assert_frame_equal(got, want)


def without_clock(table):
    """Metrics (a dict, or a validation curve's columns) without the wall-clock ones, which differ run to run."""
    if isinstance(table, dict):
        return {k: v for k, v in table.items() if not k.startswith("fit/seconds")}
    return table.drop(columns=["seconds"])


@pytest.mark.parametrize("task", list(RUNS))
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(task, tmp_path):
    reference, killed = tmp_path / "straight", tmp_path / "killed"
    straight = start(task, reference)
    victim = start(task, killed)
    wait_until((killed / "checkpoints" / "last.ckpt").exists, victim, "the first checkpoint")
    victim.send_signal(signal.SIGKILL)
    assert finish(victim)[0] == -signal.SIGKILL
    assert not (killed / "results.json").exists(), "the run had finished before it was killed"
    at_kill = progress(killed)
    print(f"{task}: killed at (epoch, step, batches done) {at_kill}")  # shown with -s or on failure

    code, log = finish(zoo_train(tmp_path, task, "--resume", str(killed), *QUIET))
    assert code == 0, log
    code, log = finish(straight)
    assert code == 0, log
    assert progress(killed) == progress(reference)
    assert_same_run(killed, reference)


def test_ctrl_c_saves_a_checkpoint_exits_130_and_the_run_resumes_exactly(tmp_path):
    reference, stopped = tmp_path / "straight", tmp_path / "stopped"
    straight = start("forecasting", reference)
    # checkpoints at epoch ends only, so the one Ctrl-C writes is the only one within an epoch
    proc = zoo_train(tmp_path, "forecasting", *RUNS["forecasting"], *EXACT, *QUIET, "--out", str(stopped),
                     "--set", "trainer.checkpoint_every_n_steps=0")
    wait_until((stopped / "checkpoints" / "last.ckpt").exists, proc, "the first checkpoint")
    proc.send_signal(signal.SIGINT)
    code, log = finish(proc)
    assert code == 130, log
    assert "zoo: interrupted" in log and f"--resume {stopped}" in log and "Traceback" not in log, log
    assert not (stopped / "results.json").exists()
    epoch, step, batches = progress(stopped)
    assert "stopping at the next step" in log and 0 < step < 96 and batches > 0  # written where Ctrl-C stopped it

    code, log = finish(zoo_train(tmp_path, "forecasting", "--resume", str(stopped), *QUIET))
    assert code == 0, log
    assert finish(straight)[0] == 0
    assert_same_run(stopped, reference)


def test_ctrl_c_before_the_first_checkpoint_removes_the_run_dir(tmp_path):
    run = tmp_path / "early"
    proc = start("forecasting", run)
    wait_until(lambda: "run dir: " in proc.log.read_text(), proc, "the run dir")  # then data, model, training
    proc.send_signal(signal.SIGINT)
    code, log = finish(proc)
    assert code == 130, log
    assert log.rstrip().endswith("zoo: interrupted") and "Traceback" not in log, log
    assert f"removed {run}" in log and not run.exists()


@pytest.mark.parametrize("trainer", [
    {"max_epochs": 3},
    {"max_epochs": -1, "max_steps": 31, "accumulate_grad_batches": 2},  # Lightning restarts these otherwise
])
def test_every_checkpoint_of_a_run_resumes_to_its_final_weights(trainer, tmp_path, monkeypatch):
    """In process: each checkpoint the run wrote (mid-epoch and at epoch ends) resumed in a copy of the run dir."""
    spec = api.load_task("forecasting")
    sets = ["trainer.deterministic=true", "trainer.checkpoint_every_n_steps=5",
            *(f"trainer.{k}={v}" for k, v in trainer.items())]
    cfg, _ = resolve_config(spec.config_cls, "forecasting", "moe_e8k2_m3-monthly", None, sets, smoke=True)
    snapshots: list[Path] = []

    def keep_every_checkpoint(trainer, path, weights_only=False):
        save_checkpoint(trainer, path, weights_only)
        if Path(path).name == "last.ckpt":
            snapshots.append(Path(shutil.copy(path, tmp_path / f"{len(snapshots)}.ckpt")))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.setattr("zoo.callbacks.save_checkpoint", keep_every_checkpoint)
        full = fit_and_test(spec, cfg, tmp_path / "full", progress=False)
        monkeypatch.undo()
        assert len(snapshots) >= 6
        for i, snapshot in enumerate(snapshots[:-1]):
            run = tmp_path / f"resume{i}"
            write_run_files(run, cfg)
            (run / "checkpoints").mkdir()
            shutil.copy(snapshot, run / "checkpoints" / "last.ckpt")
            resumed = fit_and_test(spec, cfg, run, resume=run / "checkpoints" / "last.ckpt", progress=False)
            assert without_clock(resumed.metrics) == without_clock(full.metrics), f"checkpoint {i}: {progress(run)}"
            assert_same_run(run, tmp_path / "full")
    finally:
        torch.set_num_threads(threads)


class _Trainer:
    """What :func:`save_checkpoint` needs of a trainer: one that dies halfway through writing."""

    is_global_zero = True

    def save_checkpoint(self, path, weights_only=False):
        Path(path).write_bytes(b"half a checkp")
        raise OSError("disk full")


def test_a_checkpoint_is_replaced_whole_or_not_at_all(tmp_path):
    last = tmp_path / "last.ckpt"
    last.write_bytes(b"the previous checkpoint")
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_Trainer(), last)
    assert last.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_the_checkpoint_interval_is_validated(tmp_path):
    from zoo.errors import ZooValueError
    from zoo.task import build_trainer
    from zoo.tasks.forecasting.config import ForecastingConfig

    with pytest.raises(ZooValueError, match="checkpoint_every_n_steps"):
        build_trainer(ForecastingConfig(trainer={"checkpoint_every_n_steps": -1}), tmp_path, progress=False)
