"""PPO checkpoints and normalisation: N steps + ``--resume`` + M steps equals N + M steps (returns, curve and
parameters), reward scaling against gymnasium's own ``NormalizeReward`` wrapper, advantage standardisation on and
off, and the checkpoint refusing the other learner."""

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

import gymnasium as gym  # noqa: E402

from zoo.config import resolve_config  # noqa: E402
from zoo.errors import ZooValueError  # noqa: E402
from zoo.task import build_from_config  # noqa: E402
from zoo.tasks.rl import TASK  # noqa: E402
from zoo.tasks.rl import training as rl_train  # noqa: E402
from zoo.tasks.rl.ppo import PPOAgent, PPOConfig, ReturnScaler  # noqa: E402

TINY = {"algo": "ppo", "env": "TwoGoal-v0", "ppo.num_experts": 2, "ppo.hidden": 16, "ppo.rollout": 64,
        "ppo.num_envs": 2, "ppo.epochs": 2, "ppo.minibatch": 32, "ppo.norm_reward": True,
        "train.eval_every": 96, "train.eval_episodes": 2, "train.checkpoint_every": 64, "train.normalize_obs": True}


def _cfg(steps, **sets):
    overrides = [f"{k}={v}" for k, v in {**TINY, "train.steps": steps, **sets}.items()]
    cfg, _ = resolve_config(TASK.config_cls, "rl", "ppo_k1_hopper-v5", None, overrides)
    return cfg


def _train(cfg, run_dir, resume=None):
    torch.manual_seed(0)
    built = build_from_config(TASK, cfg)
    metrics = rl_train.train(cfg, built.module, built.datamodule, run_dir, resume=resume, progress=False)
    return metrics, built.module


def test_n_steps_then_resume_then_m_steps_equals_n_plus_m_steps(tmp_path):
    whole, whole_module = _train(_cfg(320), tmp_path / "whole")
    _train(_cfg(128), tmp_path / "split")  # ends mid-episode: TwoGoal episodes last up to 30 steps
    resumed, resumed_module = _train(_cfg(320), tmp_path / "split", resume=tmp_path / "split/checkpoints/last.ckpt")
    curve = {k: v for k, v in whole.items() if k.startswith("curve/")}
    assert curve and curve == {k: v for k, v in resumed.items() if k.startswith("curve/")}
    assert whole["train/episodes"] == resumed["train/episodes"] and whole["train/auc"] == resumed["train/auc"]
    for (name, a), (_, b) in zip(whole_module.state_dict().items(), resumed_module.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_a_checkpoint_is_written_past_every_checkpoint_step_and_refuses_sac(tmp_path, monkeypatch):
    saved = []
    real = rl_train.save_checkpoint
    monkeypatch.setattr(rl_train, "save_checkpoint", lambda d, m, state, e: saved.append(state["step"]) or real(d, m, state, e))
    _train(_cfg(192, **{"train.checkpoint_every": 100}), tmp_path)
    assert saved == [128, 192]  # the first update past 100, and the end
    sac_cfg, _ = resolve_config(TASK.config_cls, "rl", "pmoe-sac_k4_two-goal")
    with pytest.raises(ZooValueError, match="a PPO checkpoint; this config trains with algo: sac"):
        rl_train.load_loop_state(tmp_path / "checkpoints/last.ckpt", build_from_config(TASK, sac_cfg).module, "TwoGoal-v0")


class _Scripted(gym.Env):
    """Rewards from a fixed table; episodes of uneven length end by termination or truncation."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
    action_space = gym.spaces.Box(-1.0, 1.0, (1,))

    def __init__(self, offset):
        self.offset, self.t, self.calls = offset, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        self.calls += 1
        reward = float(np.sin(self.calls * 0.7 + self.offset) * 3 + self.offset)
        return np.zeros(1, np.float32), reward, self.t == 5 + self.offset, self.t == 7, {}


def test_reward_scaler_matches_gymnasium_normalize_reward():
    from zoo.tasks.rl.ppo import vectorize

    def envs():
        return vectorize([lambda: _Scripted(0), lambda: _Scripted(1), lambda: _Scripted(3)])

    wrapped = gym.wrappers.vector.NormalizeReward(envs(), gamma=0.9)
    plain, scaler = envs(), ReturnScaler(3, gamma=0.9)
    wrapped.reset(seed=0)
    plain.reset(seed=0)
    actions = np.zeros((3, 1), np.float32)
    for _ in range(40):
        _, want, *_ = wrapped.step(actions)
        _, reward, terminated, truncated, _ = plain.step(actions)
        np.testing.assert_allclose(scaler(reward, terminated, np.logical_or(terminated, truncated)), want, rtol=1e-6)


@pytest.mark.parametrize("norm_adv", [True, False])
def test_advantage_standardisation_is_an_option(norm_adv):
    torch.manual_seed(0)
    agent = PPOAgent(3, 2, PPOConfig(num_experts=1, hidden=8, norm_adv=norm_adv))
    obs, act = torch.randn(16, 3), torch.rand(16, 2) * 1.8 - 0.9
    with torch.no_grad():
        logp = agent.actor.log_prob(obs, act)
    adv = torch.linspace(-2.0, 6.0, 16)  # ratio 1: the surrogate is −mean of the (standardised) advantages
    policy = agent.losses(obs, act, logp, adv, torch.zeros(16)).policy
    want = 0.0 if norm_adv else -float(adv.mean())
    assert float(policy.detach()) == pytest.approx(want, abs=1e-5)
