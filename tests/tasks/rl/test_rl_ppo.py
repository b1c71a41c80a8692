"""PMOE-PPO: the clipped surrogate and GAE against hand computations, same-step autoreset bootstrapping on a
counter environment, K = 1 against a hand-written plain PPO loss, the Q-net steering the gate, checkpoints, and
a short learning run on the two-goal task."""

import io
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

gym = pytest.importorskip("gymnasium")

from zoo.errors import ZooValueError  # noqa: E402
from zoo.tasks.rl import ppo  # noqa: E402
from zoo.tasks.rl.envs import TWO_GOAL_ID, make_env  # noqa: E402
from zoo.tasks.rl.loop import RunningNorm, TrainLog  # noqa: E402
from zoo.tasks.rl.policy import squashed_log_prob  # noqa: E402
from zoo.tasks.rl.ppo import (  # noqa: E402
    PPOAgent,
    PPOConfig,
    RolloutCollector,
    clipped_surrogate,
    gae,
    train_on_policy,
    vectorize,
)


def test_clipped_surrogate_matches_a_hand_computed_example():
    ratio = torch.tensor([0.5, 1.0, 1.5, 1.1, 0.5])
    adv = torch.tensor([1.0, -1.0, 2.0, -2.0, -1.0])
    logp_old = torch.tensor([-1.0, -2.0, 0.5, -0.3, 1.0])
    logp = (logp_old + ratio.log()).requires_grad_(True)
    # per sample min(ρA, clip(ρ, 0.8, 1.2)A): 0.5, −1, min(3, 2.4) = 2.4, −2.2, min(−0.5, −0.8) = −0.8
    loss = clipped_surrogate(logp, logp_old, adv, clip=0.2)
    assert loss.item() == pytest.approx(-(0.5 - 1 + 2.4 - 2.2 - 0.8) / 5)
    loss.backward()  # dρA/dlogp = ρA where unclipped; the clipped samples (2 and 4) get no gradient
    torch.testing.assert_close(logp.grad, torch.tensor([-0.5, 1.0, 0.0, 2.2, 0.0]) / 5)


def test_gae_matches_a_per_step_loop_with_a_truncation_and_a_termination():
    T, N, gamma, lam = 7, 2, 0.9, 0.8
    g = torch.Generator().manual_seed(0)
    rewards, values, next_values = (torch.randn(T, N, generator=g) for _ in range(3))
    terminated, truncated = torch.zeros(T, N), torch.zeros(T, N)
    truncated[2, 0] = 1  # env 0: time limit at step 2, terminal state at step 4
    terminated[4, 0] = 1
    terminated[1, 1] = 1  # env 1: terminal state at step 1
    dones = torch.clamp(terminated + truncated, max=1)
    adv, ret = gae(rewards, values, next_values, terminated, dones, gamma, lam)

    for i in range(N):  # forward sums Σ_l (γλ)^l δ_{t+l}, stopping after the first end of an episode
        for t in range(T):
            want, discount = 0.0, 1.0
            for s in range(t, T):
                bootstrap = 0.0 if terminated[s, i] else gamma * float(next_values[s, i])
                want += discount * (float(rewards[s, i]) + bootstrap - float(values[s, i]))
                if dones[s, i]:
                    break
                discount *= gamma * lam
            assert float(adv[t, i]) == pytest.approx(want, abs=1e-5), (t, i)
    # the truncated step bootstraps from V(final obs); the terminated one does not bootstrap at all
    assert float(adv[2, 0]) == pytest.approx(float(rewards[2, 0] + gamma * next_values[2, 0] - values[2, 0]), abs=1e-6)
    assert float(adv[4, 0]) == pytest.approx(float(rewards[4, 0] - values[4, 0]), abs=1e-6)
    torch.testing.assert_close(ret, adv + values)


class _CounterEnv(gym.Env):
    """Observation = steps since reset; reward 1 per step; terminates or truncates after a fixed count."""

    def __init__(self, terminate_at=None, truncate_at=None):
        self.observation_space = gym.spaces.Box(0.0, 100.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)
        self.terminate_at, self.truncate_at, self.t, self.actions = terminate_at, truncate_at, 0, []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.actions.append(np.array(action))
        self.t += 1
        return (np.array([self.t], np.float32), 1.0, self.t == self.terminate_at, self.t == self.truncate_at, {})


def _identity_value(agent):
    """Make V(s) = s[0] exactly (for s ≥ 0) through the ReLU MLP."""
    with torch.no_grad():
        for layer in agent.value[::2]:
            layer.weight.zero_()
            layer.bias.zero_()
            layer.weight[0, 0] = 1.0


def test_same_step_autoreset_bootstraps_truncation_from_the_final_observation():
    torch.manual_seed(0)
    envs = vectorize([lambda: _CounterEnv(truncate_at=3), lambda: _CounterEnv(terminate_at=2)])
    agent = PPOAgent(1, 1, PPOConfig(num_experts=2, hidden=8))
    _identity_value(agent)
    log = TrainLog()
    roll = RolloutCollector(envs, norm=None, seed=0).collect(agent, 5, log)

    assert roll.rewards.eq(1).all()  # every transition is real: no zero-reward reset step (NEXT_STEP's)
    assert roll.obs[:, 0, 0].tolist() == [0, 1, 2, 0, 1] and roll.obs[:, 1, 0].tolist() == [0, 1, 0, 1, 0]
    assert roll.dones[:, 0].tolist() == [0, 0, 1, 0, 0] and roll.terminated[:, 0].eq(0).all()
    assert roll.terminated[:, 1].tolist() == [0, 1, 0, 1, 0] and roll.dones[:, 1].tolist() == [0, 1, 0, 1, 0]
    torch.testing.assert_close(roll.values, roll.obs[..., 0])
    # env 0 was truncated at its 3rd step: bootstrap from V(final obs = 3), not V(reset obs = 0)
    assert roll.next_values[:, 0].tolist() == [1, 2, 3, 1, 2]
    assert sorted(log.episode_returns) == [2.0, 2.0, 3.0]
    sent = np.concatenate(envs.envs[0].actions)  # actions reach the env scaled by the action space's high
    np.testing.assert_allclose(sent, 2.0 * roll.act[:, 0, 0].numpy(), rtol=1e-6)


def _batch(agent, n=96, obs_dim=3, act_dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, obs_dim, generator=g)
    act = torch.rand(n, act_dim, generator=g) * 1.8 - 0.9
    with torch.no_grad():
        logp_old = agent.actor.log_prob(obs, act) + 0.3 * torch.randn(n, generator=g)  # ratios away from 1
    return {"obs": obs, "act": act, "logp": logp_old, "adv": torch.randn(n, generator=g) * 3 + 1,
            "ret": torch.randn(n, generator=g)}


def test_k1_has_no_frequency_loss_and_its_objective_is_plain_ppo():
    torch.manual_seed(0)
    agent = PPOAgent(3, 2, PPOConfig(num_experts=1, hidden=16, ent_coef=0.01))
    b = _batch(agent)
    out = agent.losses(b["obs"], b["act"], b["logp"], b["adv"], b["ret"])
    assert out.best is None and float(out.frequency) == 0.0 and float(out.q) == 0.0

    # plain PPO with one tanh-Gaussian, written out: normalised advantages, clipped surrogate, MSE value, entropy
    dist = agent.actor(b["obs"])
    mu, log_std = dist.mu[:, 0], dist.log_std[:, 0]
    logp = squashed_log_prob(torch.atanh(b["act"]), mu, log_std)
    adv = (b["adv"] - b["adv"].mean()) / (b["adv"].std() + 1e-8)
    ratio = (logp - b["logp"]).exp()
    policy = -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
    value = ((agent.value(b["obs"]).squeeze(-1) - b["ret"]) ** 2).mean()
    entropy = Normal(mu, log_std.exp()).entropy().sum(-1).mean()
    torch.testing.assert_close(out.policy, policy)
    torch.testing.assert_close(out.entropy, entropy)
    torch.testing.assert_close(out.total, policy + 0.5 * value - 0.01 * entropy)
    q_before = [p.detach().clone() for p in agent.q.parameters()]
    info = agent.update(b, np.random.default_rng(0))
    assert info["gradient_steps"] == agent.cfg.epochs * math.ceil(96 / agent.cfg.minibatch)
    assert all(torch.equal(p, q) for p, q in zip(agent.q.parameters(), q_before))  # K = 1 never uses the Q-net


@pytest.mark.parametrize("sign, preferred", [(1.0, 0), (-1.0, 1)])
def test_the_gate_moves_toward_the_expert_the_q_net_prefers(sign, preferred):
    """Expert 0 acts at a₀ ≈ +0.96, expert 1 at a₀ ≈ −0.96; returns are sign·a₀ and advantages zero, so only the
    Q-net (trained on those returns) and the frequency loss can move the gate."""
    torch.manual_seed(0)
    agent = PPOAgent(3, 2, PPOConfig(num_experts=2, hidden=32, lr=1e-2, q_lr=1e-2, epochs=10, minibatch=64))
    with torch.no_grad():
        agent.actor.heads.weight.zero_()  # rows 0-3: expert 0's (μ, log σ); rows 4-7: expert 1's
        agent.actor.heads.bias.copy_(torch.tensor([2.0, 0.0, -1.0, -1.0, -2.0, 0.0, -1.0, -1.0]))
        agent.actor.gate.gate.weight.zero_()  # the gate starts at (0.5, 0.5)
    obs = torch.randn(1, 3).expand(256, 3).contiguous()
    act = torch.rand(256, 2) * 2 - 1
    with torch.no_grad():
        logp = agent.actor.log_prob(obs, act)
    start = float(agent.actor(obs[:1]).weights[0, preferred].detach())
    agent.update({"obs": obs, "act": act, "logp": logp, "adv": torch.zeros(256), "ret": sign * act[:, 0]},
                 np.random.default_rng(0))
    dist = agent.actor(obs[:64])
    assert (agent.best_expert(obs[:64], dist.mu, dist.log_std) == preferred).all()
    assert float(dist.weights[0, preferred].detach()) > max(start + 0.2, 0.8)


def test_checkpoint_round_trip_restores_weights_and_optimizer_state():
    torch.manual_seed(0)
    cfg = PPOConfig(num_experts=2, hidden=16, epochs=2)
    agent = PPOAgent(3, 2, cfg)
    agent.update(_batch(agent), np.random.default_rng(0))  # Adam moments exist now
    buf = io.BytesIO()
    torch.save({"state": agent.state_dict(), "opt": {k: o.state_dict() for k, o in agent.optimizers().items()}}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in saved["state"].values())  # publishable as safetensors
    clone = PPOAgent(3, 2, cfg)
    clone.load_state_dict(saved["state"])
    for k, opt in clone.optimizers().items():
        opt.load_state_dict(saved["opt"][k])
    batch = _batch(agent, seed=1)
    for a in (agent, clone):
        torch.manual_seed(1)
        a.update(batch, np.random.default_rng(1))
    for p, q in zip(agent.parameters(), clone.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def _two_goal_run(steps, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = PPOConfig(num_experts=2, hidden=32, lr=1e-2, q_lr=1e-2, rollout=128, epochs=4, minibatch=32)
    agent = PPOAgent(2, 2, cfg)
    log = train_on_policy(TWO_GOAL_ID, agent, steps, num_envs=2, seed=seed, norm=RunningNorm(2), **kw)
    return agent, log


def test_short_run_on_two_goal_improves_the_episode_return():
    seen = []
    _, log = _two_goal_run(1600, eval_every=800, eval_episodes=2, on_episode=lambda s, r: seen.append(s))
    returns = np.asarray(log.episode_returns)
    assert len(returns) >= 40 and len(seen) == len(returns)
    assert returns[-20:].mean() > returns[:20].mean() + 5  # seed 0: about −31 → −8; reaching a goal is ≈ 0
    assert log.eval_steps == [800, 1600] and np.isfinite(log.eval_returns).all()
    assert log.updates == 4 * (12 * 4 + 2)  # 4 epochs × (12 rollouts of 128 + one of 64) / minibatch 32
    assert log.env_seconds > 0 and log.update_seconds > 0


def test_training_is_deterministic_given_the_seed():
    a1, log1 = _two_goal_run(256, eval_every=256, eval_episodes=1)
    a2, log2 = _two_goal_run(256, eval_every=256, eval_episodes=1)
    assert log1.episode_returns == log2.episode_returns and log1.eval_returns == log2.eval_returns
    for p, q in zip(a1.parameters(), a2.parameters(), strict=True):
        assert torch.equal(p, q)


class _NaNAfter(gym.Wrapper):
    def __init__(self, env, after):
        super().__init__(env)
        self.after, self.t = after, 0

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.t += 1
        return (obs * np.nan if self.t >= self.after else obs), r, term, trunc, info


def test_nan_observations_are_refused_with_one_line(monkeypatch):
    monkeypatch.setattr(ppo, "make_env", lambda env_id, seed=None: _NaNAfter(make_env(env_id), 3))
    agent = PPOAgent(2, 2, PPOConfig(num_experts=2, hidden=8, rollout=16))
    with pytest.raises(ZooValueError, match=r"^step 6: .*non-finite observation[^\n]*$"):
        train_on_policy(TWO_GOAL_ID, agent, 64, num_envs=2, eval_every=1000)
