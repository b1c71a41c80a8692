"""RL environments: ids checked with one-line errors, MuJoCo warnings routed to logging, the two-goal task."""

import logging

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from zoo.errors import ZooValueError  # noqa: E402
from zoo.tasks.rl.envs import TWO_GOAL_ID, TwoGoalEnv, make_env, route_mujoco_warnings  # noqa: E402


def test_unknown_id_names_close_matches():
    with pytest.raises(ZooValueError, match=r"unknown environment id 'Hoper-v5'; did you mean .*Hopper-v5"):
        make_env("Hoper-v5")


def test_discrete_action_space_is_refused():
    with pytest.raises(ZooValueError, match="Discrete action space"):
        make_env("CartPole-v1")


def test_mujoco_env_steps_and_leaves_no_log_file(tmp_path, monkeypatch):
    pytest.importorskip("mujoco")
    monkeypatch.chdir(tmp_path)
    env = make_env("Hopper-v5", seed=0)
    for _ in range(5):
        env.step(env.action_space.sample())
    env.close()
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_mujoco_warnings_go_to_logging(caplog):
    mujoco = pytest.importorskip("mujoco")
    route_mujoco_warnings()
    handler = mujoco.get_mju_user_warning()
    with caplog.at_level(logging.WARNING, logger="zoo.tasks.rl.envs"):
        handler("Nan, Inf or huge value in QACC at DOF 0\n")
        handler("Nan, Inf or huge value in QACC at DOF 0\n")  # repeated: logged once
    assert caplog.text.count("mujoco: Nan, Inf or huge value in QACC at DOF 0") == 1


def test_two_goal_rewards_either_goal_and_punishes_the_middle():
    env = make_env(TWO_GOAL_ID, seed=0)
    obs, _ = env.reset(seed=0)
    assert np.abs(obs).max() < 0.1
    returns = {}
    for name, action in (("left", [-1, 1]), ("right", [1, 1]), ("middle", [0, 1])):
        env.reset(seed=0)
        total, done, info = 0.0, False, {}
        while not done:
            _, reward, terminated, truncated, info = env.step(np.array(action, dtype=np.float32))
            total += reward
            done = terminated or truncated
        returns[name] = (total, info["goal"])
    assert returns["left"][1] == 0 and returns["right"][1] == 1 and returns["middle"][1] == -1
    assert abs(returns["left"][0] - returns["right"][0]) < 0.1  # mirror symmetry: equally good optima
    assert returns["middle"][0] < min(returns["left"][0], returns["right"][0]) - TwoGoalEnv.bonus
