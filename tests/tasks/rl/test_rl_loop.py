"""The off-policy loop and the evaluation protocol on the two-goal task: known answers and one-line errors."""

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

from zoo.errors import ZooValueError  # noqa: E402
from zoo.tasks.rl.envs import TWO_GOAL_ID, make_env  # noqa: E402
from zoo.tasks.rl.loop import RunningNorm, curve_auc, evaluate, train_off_policy  # noqa: E402
from zoo.tasks.rl.policy import GaussianMixturePolicy  # noqa: E402
from zoo.tasks.rl.sac import SACAgent, SACConfig  # noqa: E402


def test_running_norm_matches_numpy_over_all_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3, 2, size=(n, 4)) for n in (5, 17, 1, 40)]
    norm = RunningNorm(4)
    for b in batches:
        norm.update(b)
    data = np.concatenate(batches)
    np.testing.assert_allclose(norm.mean, data.mean(0), rtol=1e-4)
    np.testing.assert_allclose(norm.var, data.var(0), rtol=1e-3)
    assert np.abs(norm.normalize(data)).max() <= 10.0


def test_curve_auc_known_answer():
    # flat at 1 over [0, 10], then a trapezoid from 1 to 3 over [10, 20]: (10 + 20) / 20
    assert curve_auc([10, 20], [1.0, 3.0], budget=20) == pytest.approx(1.5)


def test_evaluate_is_deterministic_and_uses_the_experts_mean_action():
    torch.manual_seed(0)
    policy = GaussianMixturePolicy(2, 2, num_experts=2, hidden=8)
    with torch.no_grad():
        policy.heads.weight.zero_()  # every expert's mean is tanh(10) ≈ (1, 1), with a wide std
        policy.heads.bias.copy_(torch.tensor([10.0, 10.0, 1.0, 1.0] * 2))
    env = make_env(TWO_GOAL_ID)
    mean, std = evaluate(env, policy, episodes=5)
    assert std < 0.05 and mean > 0  # straight to the right goal (+10 bonus) every time: no sampling noise


class _NaNAfter:
    """A wrapper whose observation turns NaN after a few steps."""

    def __init__(self, env, after):
        self.env, self.after, self.t = env, after, 0
        self.action_space, self.observation_space = env.action_space, env.observation_space

    def reset(self, **kw):
        self.t = 0
        return self.env.reset(**kw)

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.t += 1
        return (obs * np.nan if self.t >= self.after else obs), r, term, trunc, info


def test_train_loop_collects_updates_evaluates_and_refuses_nan_observations():
    torch.manual_seed(0)
    agent = SACAgent(2, 2, SACConfig(num_experts=2, hidden=32, batch_size=32))
    seen = []
    log = train_off_policy(make_env(TWO_GOAL_ID), agent, 300, start_steps=100, eval_every=100,
                           eval_env=make_env(TWO_GOAL_ID), eval_episodes=2, norm=RunningNorm(2),
                           on_episode=lambda step, ret: seen.append(step))
    assert log.updates == 200 and log.eval_steps == [100, 200, 300] and len(log.eval_returns) == 3
    assert log.episode_returns and len(seen) == len(log.episode_returns)
    with pytest.raises(ZooValueError, match="non-finite observation"):
        train_off_policy(_NaNAfter(make_env(TWO_GOAL_ID), 3), agent, 20, start_steps=10)
