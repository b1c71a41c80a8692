"""PMOE's mixture actor and estimator against torch.distributions and per-sample loops."""

import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from zoo.tasks.rl.policy import GaussianMixturePolicy, frequency_loss, pmoe_losses, squashed_log_prob


def _policy(K=3, obs_dim=5, act_dim=2, seed=0):
    torch.manual_seed(seed)
    return GaussianMixturePolicy(obs_dim, act_dim, num_experts=K, hidden=16)


def test_squashed_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    mu, log_std = torch.randn(6, 3), torch.randn(6, 3) * 0.5
    u = mu + log_std.exp() * torch.randn(6, 3)
    dist = TransformedDistribution(Normal(mu, log_std.exp()), [TanhTransform(cache_size=1)])
    a = dist.transforms[0](u)
    want = dist.log_prob(a).sum(-1)
    torch.testing.assert_close(squashed_log_prob(u, mu, log_std), want, rtol=1e-4, atol=1e-4)


def test_mixture_log_prob_matches_a_per_sample_loop():
    policy = _policy()
    obs, actions = torch.randn(4, 5), torch.rand(4, 2) * 1.8 - 0.9
    got = policy.log_prob(obs, actions)
    dist = policy(obs)
    for b in range(4):
        density = 0.0
        for k in range(3):
            comp = TransformedDistribution(Normal(dist.mu[b, k], dist.log_std[b, k].exp()), [TanhTransform()])
            density = density + dist.weights[b, k] * comp.log_prob(actions[b]).sum().exp()
        torch.testing.assert_close(got[b], torch.log(density), rtol=1e-4, atol=1e-4)


def test_sample_all_gives_one_action_per_expert_with_its_component_density():
    policy = _policy()
    obs = torch.randn(7, 5)
    actions, logp, dist = policy.sample_all(obs)
    assert actions.shape == (7, 3, 2) and logp.shape == (7, 3) and actions.abs().max() < 1
    u = torch.atanh(actions.clamp(-1 + 1e-6, 1 - 1e-6))
    torch.testing.assert_close(logp, squashed_log_prob(u, dist.mu, dist.log_std), rtol=1e-3, atol=1e-3)


def test_only_the_best_expert_gets_the_actor_gradient_and_only_the_gate_the_frequency_loss():
    policy = _policy(K=3)
    obs = torch.randn(32, 5)
    with torch.no_grad():  # make expert 1 the clear winner: its mean sits where the critic pays most
        policy.heads.bias[4:6] += 3.0  # expert 1's μ (rows 2A·k … 2A·k + A)
    losses = pmoe_losses(policy, lambda o, a: a.sum(-1), obs, alpha=0.1)
    assert (losses.best == 1).all()
    policy.zero_grad()
    losses.actor.backward(retain_graph=True)
    grads = policy.heads.weight.grad.unflatten(0, (3, 4)).abs().sum((1, 2))
    assert grads[1] > 0 and grads[0] == 0 and grads[2] == 0
    assert policy.gate.gate.weight.grad is None or not policy.gate.gate.weight.grad.abs().any()
    policy.zero_grad()
    losses.gate.backward()
    assert policy.gate.gate.weight.grad.abs().sum() > 0
    assert policy.heads.weight.grad is None


def test_frequency_loss_drives_the_gate_to_the_winning_frequencies():
    torch.manual_seed(0)
    policy = _policy(K=2)
    obs = torch.randn(1, 5).expand(200, 5)
    best = torch.tensor([0] * 140 + [1] * 60)  # expert 0 wins 70 % of the time at this state
    opt = torch.optim.Adam(policy.gate.parameters(), lr=0.05)
    for _ in range(300):
        loss = frequency_loss(policy(obs).weights, best)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(policy(obs[:1]).weights[0], torch.tensor([0.7, 0.3]), atol=0.02, rtol=0)


def test_deterministic_action_is_the_most_probable_experts_mean_and_k1_is_unimodal_sac():
    policy = _policy()
    obs = torch.randn(5, 5)
    dist = policy(obs)
    k = dist.logits.argmax(-1)
    torch.testing.assert_close(policy.act(obs, deterministic=True), torch.tanh(dist.mu[torch.arange(5), k]))
    single = _policy(K=1)
    losses = pmoe_losses(single, lambda o, a: -(a**2).sum(-1), torch.randn(8, 5), alpha=0.2)
    assert (losses.best == 0).all() and float(losses.gate.detach()) == 0.0
