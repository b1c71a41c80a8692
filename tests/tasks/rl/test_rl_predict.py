"""The RL model info and ``predict``: weights rebuild from the info alone (no environment made to size the network)
and act exactly as the trained module, the info round-trips through its stored forms, the routing plot is a PNG
and bad options are one-line errors. A two-goal agent trained for a few hundred steps."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

pytest.importorskip("gymnasium")

from zoo import modelinfo  # noqa: E402
from zoo.config import resolve_config  # noqa: E402
from zoo.errors import ZooValueError  # noqa: E402
from zoo.task import build_from_config, build_from_info  # noqa: E402
from zoo.tasks.rl import TASK  # noqa: E402
from zoo.tasks.rl import module as rl_module  # noqa: E402
from zoo.tasks.rl import training as rl_train  # noqa: E402

RECIPE = "pmoe-sac_k4_two-goal"
TWO_GOAL_INFO = {"obs_dim": 2, "act_dim": 2, "action_high": [1.0, 1.0]}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A briefly trained agent with observation normalisation on (so the normaliser's state matters)."""
    sets = {"train.steps": 300, "train.start_steps": 100, "train.eval_every": 300, "train.normalize_obs": "true",
            "test_episodes": 2}
    cfg, _ = resolve_config(TASK.config_cls, "rl", RECIPE, None, [f"{k}={v}" for k, v in sets.items()], False)
    torch.manual_seed(0)
    loaded = build_from_config(TASK, cfg)
    rl_train.train(cfg, loaded.module, loaded.datamodule, tmp_path_factory.mktemp("rl-run"), progress=False)
    return loaded


def _rebuilt(trained, info, monkeypatch):
    """The trained weights in a module built from ``info`` alone; making an environment would fail the test."""

    def no_env(*args, **kwargs):
        raise AssertionError("building from the model info must not make an environment")

    monkeypatch.setattr(rl_module, "make_env", no_env)
    rebuilt = build_from_info(TASK, trained.config, info)
    monkeypatch.undo()
    rebuilt.module.model.load_state_dict(trained.module.model.state_dict())
    assert rebuilt.datamodule is None
    return rebuilt


def test_the_info_holds_the_spaces_and_round_trips_through_its_stored_forms(trained, tmp_path):
    assert trained.info == TWO_GOAL_INFO
    plain, tensors = modelinfo.split(trained.info)
    assert plain == TWO_GOAL_INFO and tensors == {}  # all YAML: the published block alone rebuilds the network
    assert modelinfo.join(plain, tensors) == trained.info
    modelinfo.save_run(tmp_path, trained.info)
    assert modelinfo.load_run(tmp_path) == trained.info


def test_a_model_rebuilt_from_the_info_predicts_exactly_as_the_trained_one(trained, tmp_path, monkeypatch):
    modelinfo.save_run(tmp_path, trained.info)
    rebuilt = _rebuilt(trained, modelinfo.load_run(tmp_path), monkeypatch)
    assert rebuilt.module.model.obs_norm.count > 1  # the normaliser's statistics came with the state dict
    expected = TASK.predict(trained, episodes=3)
    assert TASK.predict(rebuilt, episodes=3) == expected
    assert len(expected) == 3 and all(r["env"] == "TwoGoal-v0" for r in expected)


def test_predict_writes_the_routing_plot_and_the_rows(trained, tmp_path):
    plot, out = tmp_path / "routing.png", tmp_path / "rows.csv"
    rows = TASK.predict(trained, None, episodes=2, plot=str(plot), out=str(out))
    assert plot.read_bytes().startswith(PNG_MAGIC) and plot.stat().st_size > 10_000
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(rows[0]) == "episode,env,return,length,routing_entropy,goal_reached" and len(lines) == 3


@pytest.mark.parametrize(("options", "fragment"), [
    ({"episodes": 0}, "--episodes 0"),
    ({"video": "agent.avi"}, ".mp4 or .gif"),
    ({"plot": "routing.jpg"}, "ending in .png"),
])
def test_bad_options_are_one_line_errors_and_write_nothing(trained, tmp_path, options, fragment):
    options = {k: str(tmp_path / v) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(ZooValueError, match=fragment) as err:
        TASK.predict(trained, **options)
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())


def test_an_environment_with_other_spaces_is_refused(trained):
    with pytest.raises(ZooValueError, match=r"cannot act in Pendulum-v1 \(observations 3, actions 1\)"):
        TASK.predict(trained, "Pendulum-v1")
    wider = dataclasses.replace(trained, info={**trained.info, "action_high": [2.0, 2.0]})
    with pytest.raises(ZooValueError, match=r"actions up to \[2.0, 2.0\]\) cannot act in TwoGoal-v0"):
        TASK.predict(wider)


def test_an_info_without_the_sizes_is_a_one_line_error(trained):
    with pytest.raises(ZooValueError, match="lacks obs_dim, action_high"):
        build_from_info(TASK, trained.config, {"act_dim": 2})


def test_importing_the_task_loads_neither_torch_nor_gymnasium():
    code = ("import sys, zoo.tasks.rl as t; t.TASK.config_cls(); "
            "print(sorted(m for m in ('torch', 'lightning', 'gymnasium', 'mujoco') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
