"""``zoo train`` over 2 CPU ranks, started by torchrun or by the zoo itself, makes exactly one run dir, and the
epoch metrics rank 0 writes are those of the whole split.

torchrun (``python -m torch.distributed.run``) starts two ranks of ``python -m zoo train`` with expert parallelism
2: neither is spawned again, rank 0 makes the run dir and the other rank uses it. Its validation loss (rank 0's
``metrics.csv``) is checked against the trained checkpoint validated in one process on the whole validation set,
and against rank 0's half of it alone (what an unreduced log would give). Plain DDP without expert parallelism goes
through the zoo's launcher, not Lightning's re-run of the command per rank. Every run is a subprocess in its own
session, killed with its ranks when it outlives ``RUN_TIMEOUT_S``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from zoo.distributed import ExpertParallelStrategy, ZooDDPStrategy, _Launcher, external_environment, \
    is_rank_zero, local_ranks, rank_zero_value, trainer_strategy
from zoo.errors import ZooValueError
from zoo.task import remove_run_dir, write_run_files

RUN_TIMEOUT_S = 100
RECIPE = ["forecasting", "--recipe", "moe_e8k2_m3-monthly", "--smoke", "--no-progress"]
DDP_CPU = ["--set", "trainer.devices=2", "--set", "trainer.strategy=ddp", "--set", "trainer.accelerator=cpu",
           "--set", "data.batch_size=128"]
TORCHELASTIC_RANK1 = {"TORCHELASTIC_RUN_ID": "t", "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
                      "GROUP_RANK": "0", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], cwd: Path, returncode: int = 0) -> str:
    """Run a command in ``cwd`` in its own session; its output, after asserting that it exited in time with
    ``returncode`` (any non-zero one for -1)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True, text=True)
    try:
        log, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its ranks
        log, _ = proc.communicate()
        pytest.fail(f"{' '.join(args[:6])} … took over {RUN_TIMEOUT_S} s:\n{log[-4000:]}")
    assert proc.returncode != 0 if returncode == -1 else proc.returncode == returncode, log[-4000:]
    return log


def _only_run_dir(cwd: Path) -> Path:
    recipe_dir = cwd / "runs" / "forecasting" / "moe_e8k2_m3-monthly"
    run_dirs = sorted(recipe_dir.iterdir())
    assert len(run_dirs) == 1, run_dirs
    run_dir = run_dirs[0]
    for name in ("config.yaml", "run.json", "model_info.yaml", "metrics.csv", "results.json", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    return run_dir


@pytest.fixture(scope="module")
def torchrun_dir(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("torchrun")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(_free_port())]
    log = _run([*launcher, "-m", "zoo", "train", *RECIPE, *DDP_CPU, "--set", "moe.expert_parallel=2"], cwd)
    run_dir = _only_run_dir(cwd)
    assert log.count(f"run dir: {run_dir.relative_to(cwd)}") == 2, log[-4000:]  # both ranks use rank 0's
    return run_dir


def test_torchrun_ranks_share_one_run_dir(torchrun_dir: Path) -> None:
    results = json.loads((torchrun_dir / "results.json").read_text())
    assert set(results["metrics"]) >= {"test/smape", "test/mase"}
    ckpt = torch.load(torchrun_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    banks = [v for k, v in ckpt["state_dict"].items() if k.endswith("experts.w1")]
    assert banks and all(v.shape[0] == 8 for v in banks)  # the full bank of 8 experts, not a rank's 4


def _last_epoch_value(metrics_csv: Path, key: str) -> float:
    with open(metrics_csv, newline="") as f:
        values = [float(row[key]) for row in csv.DictReader(f) if row.get(key)]
    assert values, key
    return values[-1]


def test_torchrun_val_metrics_are_those_of_the_whole_split(torchrun_dir: Path) -> None:
    from zoo import api
    from zoo.task import quiet_trainer

    spec = api.load_task("forecasting")
    loaded = api.load_run(torchrun_dir, spec, prefer_best=False)
    dm = spec.build_datamodule(loaded.config)
    dm.prepare_data()
    dm.setup("fit")
    (whole,) = quiet_trainer(devices=1).validate(loaded.module, datamodule=dm, verbose=False)
    rank0_rows = torch.utils.data.Subset(dm.dataset("val"), range(0, len(dm.dataset("val")), 2))
    half = torch.utils.data.DataLoader(rank0_rows, batch_size=128, collate_fn=dm.val_dataloader().collate_fn)
    (rank0,) = quiet_trainer(devices=1).validate(loaded.module, half, verbose=False)
    assert len(dm.dataset("val")) % 2 == 0  # the distributed sampler repeats no window to even the ranks out
    for key in ("val/task_loss", "val/mase"):  # a logged loss (sync_dist) and a torchmetrics metric
        logged = _last_epoch_value(torchrun_dir / "metrics.csv", key)
        assert logged == pytest.approx(whole[key], rel=1e-5), (key, logged, whole[key], rank0[key])
        assert abs(rank0[key] - whole[key]) > 0.01 * abs(whole[key]), (key, rank0[key], whole[key])
    # the test metrics: the task's own evaluation of the whole test split, the same on every rank
    results = json.loads((torchrun_dir / "results.json").read_text())["metrics"]
    expected = spec.test(loaded.config, quiet_trainer(devices=1), loaded.module, dm)
    for key in ("test/smape", "test/mase"):
        assert results[key] == pytest.approx(expected[key], rel=1e-5), (key, results[key], expected[key])


def test_torchrun_refusal_on_rank_zero_reaches_every_rank(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(_free_port())]
    log = _run([*launcher, "-m", "zoo", "train", *RECIPE, *DDP_CPU, "--out", "taken"], tmp_path, returncode=-1)
    assert log.count("zoo: error: --out taken: directory exists and is not empty") == 2, log[-4000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_plain_ddp_goes_through_the_zoo_launcher(tmp_path: Path) -> None:
    log = _run([sys.executable, "-m", "zoo", "train", *RECIPE, *DDP_CPU], tmp_path)
    _only_run_dir(tmp_path)
    assert log.count("run dir:") == 1, log[-4000:]  # one `zoo train`: the ranks did not re-run the command


def test_trainer_strategy_picks_the_zoo_launcher_for_several_ranks() -> None:
    plain = trainer_strategy("ddp", 1, "cpu", ranks=2)
    assert type(plain) is ZooDDPStrategy and plain.process_group_backend == "gloo"
    assert type(trainer_strategy("auto", 1, "cpu", ranks=2)) is ZooDDPStrategy
    assert type(trainer_strategy("ddp_spawn", 1, "cpu", ranks=4)) is ZooDDPStrategy
    assert trainer_strategy("auto", 1, "cpu", ranks=1) == "auto" and trainer_strategy("ddp", 1, ranks=1) == "ddp"
    assert trainer_strategy("fsdp", 1, ranks=2) == "fsdp"  # other strategies are Lightning's
    unused = trainer_strategy("ddp_find_unused_parameters_true", 2, "cpu", ranks=2)
    assert isinstance(unused, ExpertParallelStrategy) and unused._ddp_kwargs["find_unused_parameters"] is True
    ep = trainer_strategy("ddp", 2, "cpu", ranks=2)
    assert isinstance(ep, ExpertParallelStrategy) and ep.expert_parallel == 2 and ep.process_group_backend == "gloo"
    with pytest.raises(ZooValueError, match="trainer.strategy='fsdp' is not supported"):
        trainer_strategy("fsdp", 2, ranks=2)


def test_local_ranks_reads_every_form_of_devices() -> None:
    assert local_ranks(2) == 2 and local_ranks("3") == 3 and local_ranks([0, 1]) == 2 and local_ranks("0,1,") == 2
    assert local_ranks("auto", "cpu") == 1 and local_ranks(-1, "cpu") == 1


def test_ranks_started_outside_are_detected_and_not_spawned(monkeypatch, tmp_path: Path) -> None:
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=ZooDDPStrategy(process_group_backend="gloo"),
                        logger=False)
    assert isinstance(trainer.strategy.launcher, _Launcher)
    assert external_environment() is None and is_rank_zero()
    assert rank_zero_value(lambda: "made here") == "made here"  # no process group needed

    for key, value in TORCHELASTIC_RANK1.items():
        monkeypatch.setenv(key, value)
    assert external_environment().global_rank() == 1 and not is_rank_zero()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=ZooDDPStrategy(process_group_backend="gloo"),
                        logger=False)
    assert trainer.strategy.launcher is None and trainer.global_rank == 1  # this process is rank 1
    write_run_files(tmp_path, {"seed": 0})  # rank 1 writes nothing into rank 0's run dir, nor removes it
    remove_run_dir(tmp_path, prune_parents=False)
    assert tmp_path.is_dir() and not any(tmp_path.iterdir())


def test_slurm_with_several_tasks_is_external(monkeypatch) -> None:
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert external_environment() is None  # one task: the zoo starts the ranks itself
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    monkeypatch.setenv("SLURM_PROCID", "2")
    env = external_environment()
    assert env is not None and env.creates_processes_externally and env.world_size() == 4 and not is_rank_zero()
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation: Lightning does not detect SLURM
    assert external_environment() is None
