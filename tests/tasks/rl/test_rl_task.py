"""The ``rl`` task through the zoo's flow: train by name, checkpoints and resume, publish (observation statistics
and model info in the weights), predict with a video and a plot, and one-line errors for bad input. Two-goal runs of a few hundred steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

import zoo.api  # noqa: E402
from zoo.cli import main  # noqa: E402
from zoo.config import from_dict, read_yaml, resolve_config  # noqa: E402
from zoo.errors import ZooValueError  # noqa: E402
from zoo.task import build_from_config  # noqa: E402
from zoo.tasks.rl import TASK  # noqa: E402
from zoo.tasks.rl import training as rl_train  # noqa: E402
from zoo.tasks.rl.training import load_loop_state  # noqa: E402

RECIPE = "pmoe-sac_k4_two-goal"
TINY = ["--smoke", "--set", "train.steps=400", "--set", "train.start_steps=200", "--set", "train.eval_every=200",
        "--set", "train.checkpoint_every=200", "--set", "test_episodes=3", "--no-progress"]


def cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(result, *fragments: str) -> None:
    """Exit 2 with one ``zoo: error:`` line (``train`` prints its run dir, and that it removed it, before)."""
    code, _, err = result
    lines = [line for line in err.strip().splitlines() if not line.startswith(("run dir: ", "removed "))]
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and lines[0].startswith("zoo: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    base = tmp_path_factory.mktemp("rl")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_WEIGHTS_DIR", str(base / "weights"))
        mp.setenv("ZOO_HOME", str(base / "home"))
        mp.setenv("ZOO_OFFLINE", "1")
        mp.setattr(zoo.api, "manifest_path", lambda task: base / "manifests" / task / "weights.yaml")
        mp.chdir(base)
        yield base
    assert not (base / "MUJOCO_LOG.TXT").exists()


@pytest.fixture(scope="module")
def run(workdir) -> Path:
    out = workdir / "runs" / "main"
    assert main(["train", "rl", "--recipe", RECIPE, *TINY, "--out", str(out), "--json"]) == 0
    return out


def test_train_by_name_writes_checkpoints_curve_and_metrics(run):
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    for key in ("train/auc", "train/env_steps_per_s", "train/updates_per_s", "test/return_mean", "test/return_std",
                "test/routing_entropy", "test/success"):
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["test/routing_entropy"] <= np.log(4) + 1e-6
    replays = [p.name for p in (run / "checkpoints").glob("replay*.npz")]
    assert (run / "checkpoints" / "last.ckpt").is_file() and len(replays) == 1  # only the one last.ckpt names
    assert (run / "curve.csv").read_text().splitlines()[1:] and (run / "learning_curve.png").stat().st_size > 1000


def _cfg(**sets):
    overrides = [f"{k}={v}" for k, v in {"train.steps": 400, "train.start_steps": 100, "train.eval_every": 200,
                                           "train.checkpoint_every": 200, **sets}.items()]
    cfg, _ = resolve_config(TASK.config_cls, "rl", RECIPE, None, overrides, True)
    return cfg


def test_resume_continues_the_interrupted_run_with_its_buffer_and_optimisers(tmp_path, monkeypatch):
    cfg = _cfg()
    real = rl_train.train_off_policy

    def interrupted(*args, on_step, **kwargs):
        def stop_after_300(state):
            on_step(state)
            if state.step == 300:
                raise KeyboardInterrupt

        return real(*args, on_step=stop_after_300, **kwargs)

    torch.manual_seed(0)
    first = build_from_config(TASK, cfg)
    monkeypatch.setattr(rl_train, "train_off_policy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rl_train.train(cfg, first.module, first.datamodule, tmp_path, progress=False)
    monkeypatch.setattr(rl_train, "train_off_policy", real)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    saved = load_loop_state(ckpt, build_from_config(TASK, cfg).module, cfg.env)
    assert saved.step == 200 and len(saved.buffer) == 200

    second = build_from_config(TASK, cfg)
    metrics = rl_train.train(cfg, second.module, second.datamodule, tmp_path, resume=ckpt, progress=False)
    final = load_loop_state(ckpt, build_from_config(TASK, cfg).module, cfg.env)
    assert final.step == 400 and len(final.buffer) == 400
    np.testing.assert_array_equal(final.buffer.obs[:200], saved.buffer.obs[:200])  # the saved transitions are kept
    assert final.log.eval_steps == [200, 400] and metrics["train/episodes"] >= len(saved.log.episode_returns)
    assert second.module.model.agent.actor_opt.state_dict()["state"], "optimiser state restored and stepped"
    load = json.loads((tmp_path / "expert_load.json").read_text())["actor.gate"]  # the mixture's load, resumed too
    assert load["steps"] == [200, 400] and load["num_ffn"] == cfg.sac.num_experts
    assert all(abs(sum(row) - 1) < 1e-5 for row in load["load"]) and (tmp_path / "expert_load.png").exists()


def test_a_checkpoint_of_another_environment_is_refused(run, tmp_path):
    cfg = _cfg(env="Pendulum-v1", **{"sac.num_experts": 4})
    module = build_from_config(TASK, cfg).module
    with pytest.raises(ZooValueError, match="TwoGoal-v0"):
        load_loop_state(run / "checkpoints" / "last.ckpt", module, cfg.env)


def test_published_weights_carry_observation_statistics_and_model_info_and_render_a_video(run, workdir, capsys):
    code, _, err = cli(capsys, "weights", "publish", "--task", "rl", "--run", run, "--arch", "pmoe-sac_k4", "--tag", "test")
    assert code == 0, err
    loaded = zoo.api.load_weights("rl/pmoe-sac_k4.test")
    assert loaded.datamodule is None and loaded.info == {"obs_dim": 2, "act_dim": 2, "action_high": [1.0, 1.0]}
    state = loaded.module.model.state_dict()
    assert {"obs_norm.mean", "obs_norm.var", "obs_norm.count"} <= set(state)
    video, plot = workdir / "agent.gif", workdir / "routing.png"
    code, out, err = cli(capsys, "predict", "rl", "--weights", "rl/pmoe-sac_k4.test", "--episodes", 2, "--video", video,
                         "--plot", plot, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["episode"] for r in rows] == [0, 1] and all(r["env"] == "TwoGoal-v0" and r["length"] >= 1 for r in rows)
    import imageio.v3 as iio

    frames = iio.imread(video, index=None)
    assert frames.shape[0] >= rows[0]["length"] + 1 and frames.shape[-1] == 3
    assert plot.read_bytes().startswith(b"\x89PNG")
    one_line_error(cli(capsys, "predict", "rl", "Hopper-v5", "--weights", "rl/pmoe-sac_k4.test"), "cannot act in Hopper-v5")
    one_line_error(cli(capsys, "predict", "rl", "--weights", "rl/pmoe-sac_k4.test", "--video", workdir / "a.avi"), ".mp4")


@pytest.mark.parametrize(("sets", "fragment"), [
    (["env=Hoper-v5"], "did you mean"),
    (["env=CartPole-v1"], "Discrete action space"),
    (["sac.estimator=reinforce"], "sac.estimator"),
])
def test_bad_input_is_one_line_exit_2(workdir, capsys, sets, fragment):
    argv = ["train", "rl", "--recipe", RECIPE, *TINY, "--out", workdir / "runs" / f"bad-{len(sets[0])}"]
    for s in sets:
        argv += ["--set", s]
    one_line_error(cli(capsys, *argv), fragment)


def test_training_and_evaluation_leave_the_callers_thread_count(tmp_path):
    cfg = _cfg(**{"train.steps": 120, "train.start_steps": 60, "train.eval_every": 60, "test_episodes": 1})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        built = build_from_config(TASK, cfg)
        rl_train.train(cfg, built.module, built.datamodule, tmp_path, progress=False)
        TASK.evaluate(cfg, None, built.module, built.datamodule)
        TASK.trace(cfg, built.module, built.datamodule, 2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_killed_run_resumes_to_completion_from_its_last_checkpoint(tmp_path):
    """SIGKILL after the first checkpoint, then ``--resume``: the run continues from the saved step with the saved
    replay buffer, optimisers, RNG states and log, and completes. The episode in progress at the checkpoint
    restarts, so the result is not bitwise the uninterrupted run's (README, RL)."""
    run, steps = tmp_path / "killed", 600
    args = ["--recipe", RECIPE, "--smoke", "--set", f"train.steps={steps}", "--set", "train.start_steps=200",
            "--set", "train.eval_every=200", "--set", "train.checkpoint_every=100", "--set", "test_episodes=3"]
    env = {**os.environ, "ZOO_OFFLINE": "1"}
    zoo_train = [sys.executable, "-m", "zoo", "train", "rl", "--no-progress", "--threads", "1"]
    victim = subprocess.Popen([*zoo_train, *args, "--out", str(run)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt, deadline = run / "checkpoints" / "last.ckpt", time.monotonic() + 60
    while not ckpt.exists():
        assert victim.poll() is None, victim.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (run / "results.json").exists(), "the run had finished before it was killed"

    cfg = from_dict(TASK.config_cls, read_yaml(run / "config.yaml"))
    saved = load_loop_state(ckpt, build_from_config(TASK, cfg).module, cfg.env)
    assert 0 < saved.step < steps and saved.step % 100 == 0 and len(saved.buffer) == saved.step

    resumed = subprocess.run([*zoo_train, "--resume", str(run)], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    final = load_loop_state(ckpt, build_from_config(TASK, cfg).module, cfg.env)
    assert final.step == steps and len(final.buffer) == steps
    for field in ("obs", "act", "rew", "next_obs", "done"):  # the saved transitions are kept, the rest appended
        np.testing.assert_array_equal(getattr(final.buffer, field)[: saved.step], getattr(saved.buffer, field)[: saved.step])
    assert final.log.eval_steps == [200, 400, 600]
    assert final.log.episode_returns[: len(saved.log.episode_returns)] == saved.log.episode_returns
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    assert np.isfinite(metrics["test/return_mean"]) and np.isfinite(metrics["train/auc"])
