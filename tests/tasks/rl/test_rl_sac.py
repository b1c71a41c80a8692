"""SAC with the PMOE actor: replay buffer semantics, known-answer critic targets, Polyak updates, temperature
direction, and a one-step bandit whose best action is known."""

import numpy as np
import torch

from zoo.tasks.rl.sac import ReplayBuffer, SACAgent, SACConfig


def test_replay_buffer_wraps_and_samples():
    buf = ReplayBuffer(3, 2, size=4)
    for i in range(6):
        buf.add(np.full(3, i), np.full(2, i), float(i), np.full(3, i + 1), i == 5)
    assert len(buf) == 4 and buf.full and buf.pos == 2
    assert sorted(buf.rew.tolist()) == [2.0, 3.0, 4.0, 5.0]  # the two oldest were overwritten
    batch = buf.sample(16, np.random.default_rng(0))
    assert batch["obs"].shape == (16, 3) and batch["act"].shape == (16, 2) and set(batch["rew"].tolist()) <= {2.0, 3.0, 4.0, 5.0}
    torch.testing.assert_close(batch["next_obs"][:, 0], batch["obs"][:, 0] + 1)  # rows stay aligned


def _batch(n=64, obs_dim=3, act_dim=2, reward=1.0, done=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(n, obs_dim, generator=g), "act": torch.rand(n, act_dim, generator=g) * 2 - 1,
            "rew": torch.full((n,), reward), "next_obs": torch.randn(n, obs_dim, generator=g), "done": torch.full((n,), done)}


def test_critic_learns_the_terminal_reward_and_targets_follow_by_tau():
    torch.manual_seed(0)
    agent = SACAgent(3, 2, SACConfig(num_experts=2, hidden=32, lr=3e-3))
    before = [p.detach().clone() for p in agent.critic_target.parameters()]
    agent.update(_batch())
    for old, p, tp in zip(before, agent.critic.parameters(), agent.critic_target.parameters()):
        torch.testing.assert_close(tp, old + agent.cfg.tau * (p.detach() - old))
    for i in range(600):
        agent.update(_batch(seed=i))
    held_out = _batch(seed=999)
    q1, q2 = agent.critic(held_out["obs"], held_out["act"])
    for q in (q1, q2):  # terminal transitions: Q = r exactly, whatever the next state
        assert (q - 1).abs().mean() < 0.05 and (q - 1).abs().max() < 0.25


def test_temperature_falls_while_entropy_is_above_target():
    torch.manual_seed(0)
    agent = SACAgent(3, 2, SACConfig(num_experts=2, hidden=32, target_entropy=-20.0))
    start = float(agent.alpha)
    info = agent.update(_batch())
    assert info["entropy"] > -20.0 and float(agent.alpha) < start


def test_one_step_bandit_moves_the_policy_to_the_best_action():
    """Reward −(a − 0.5)² in every dimension, episodes of one step: the deterministic action should near 0.5."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    agent = SACAgent(1, 1, SACConfig(num_experts=2, hidden=32, lr=3e-3, init_alpha=0.01, target_entropy=-3.0))
    buf = ReplayBuffer(1, 1, 5000)
    obs = np.zeros(1, np.float32)
    for step in range(1500):
        a = agent.actor.act(torch.from_numpy(obs)[None])[0].numpy() if step >= 200 else rng.uniform(-1, 1, 1)
        buf.add(obs, a, -float((a[0] - 0.5) ** 2), obs, True)
        if step >= 200:
            agent.update(buf.sample(64, rng))
    best = agent.actor.act(torch.zeros(1, 1), deterministic=True)
    assert abs(float(best) - 0.5) < 0.15
