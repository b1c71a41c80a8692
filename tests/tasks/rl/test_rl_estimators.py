"""The comparison estimators: which parameters each one trains, known-answer densities, and that each routes the
critic's signal where its paper says."""

import pytest
import torch

from zoo.tasks.rl.config import ESTIMATOR_NAMES
from zoo.tasks.rl.estimators import ESTIMATORS, actor_losses, gumbel_losses, mean_losses, score_losses
from zoo.tasks.rl.policy import GaussianMixturePolicy, mixture_log_prob, squashed_log_prob
from zoo.tasks.rl.sac import TwinQ


def _policy(K=3, combine="mixture", seed=0):
    torch.manual_seed(seed)
    return GaussianMixturePolicy(5, 2, num_experts=K, hidden=16, combine=combine)


def _critic(obs, act):  # pays for actions near (0.5, 0.5)
    return -((act - 0.5) ** 2).sum(-1)


def test_mixture_log_prob_of_presquash_actions_matches_the_atanh_path():
    policy = _policy()
    obs = torch.randn(6, 5)
    u = torch.randn(6, 2) * 0.7
    torch.testing.assert_close(mixture_log_prob(policy(obs), u), policy.log_prob(obs, torch.tanh(u)), rtol=1e-4, atol=1e-4)


def test_mean_combine_is_one_gaussian_with_gate_averaged_parameters():
    policy = _policy(combine="mean")
    obs = torch.randn(4, 5)
    dist = policy(obs)
    mu = sum(dist.weights[:, k, None] * dist.mu[:, k] for k in range(3))
    log_std = sum(dist.weights[:, k, None] * dist.log_std[:, k] for k in range(3))
    torch.testing.assert_close(policy.act(obs, deterministic=True), torch.tanh(mu))
    a = torch.rand(4, 2) * 1.6 - 0.8
    torch.testing.assert_close(policy.log_prob(obs, a), squashed_log_prob(torch.atanh(a), mu, log_std), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("estimator", ["gumbel", "score", "mean"])
def test_gradient_estimators_train_the_gate_through_the_actor_loss(estimator):
    policy = _policy(combine="mean" if estimator == "mean" else "mixture")
    losses = actor_losses(estimator, policy, _critic, torch.randn(64, 5), alpha=0.1)
    assert float(losses.gate) == 0.0 and losses.best.shape == (64,)
    losses.actor.backward()
    assert policy.gate.gate.weight.grad.abs().sum() > 0
    assert policy.trunk[0].weight.grad.abs().sum() > 0


def test_gumbel_takes_exactly_one_experts_action_forward():
    policy = _policy()
    obs = torch.randn(8, 5)
    seen = {}

    def critic(o, a):
        seen["a"] = a
        return _critic(o, a)

    torch.manual_seed(1)
    gumbel_losses(policy, critic, obs, alpha=0.0)
    torch.manual_seed(1)
    dist = policy(obs)
    u_all = dist.mu + dist.log_std.exp() * torch.randn_like(dist.mu)
    candidates = torch.tanh(u_all)  # the forward action is one of these rows exactly
    match = (candidates - seen["a"][:, None]).abs().amax(-1).min(-1).values
    assert match.max() < 1e-6


def test_score_function_gate_gradient_favours_the_expert_with_higher_value():
    torch.manual_seed(0)
    policy = _policy(K=2)
    with torch.no_grad():  # expert 0 acts near the critic's optimum, expert 1 far from it
        policy.heads.weight.zero_()  # rows 0-3: expert 0's (μ, log σ); rows 4-7: expert 1's
        policy.heads.bias.copy_(torch.tensor([0.55, 0.55, -3.0, -3.0, -2.0, -2.0, -3.0, -3.0]))
    opt = torch.optim.SGD(policy.gate.parameters(), lr=0.5)
    obs = 1.0 + 0.1 * torch.randn(256, 5)  # one region of state space
    for _ in range(30):
        loss = score_losses(policy, _critic, obs, alpha=0.0).actor
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert policy(obs).weights[:, 0].mean() > 0.9


def test_mean_estimator_refuses_a_mixture_policy_and_unknown_names_are_listed():
    with pytest.raises(ValueError, match="combine"):
        actor_losses("mean", _policy(), _critic, torch.randn(2, 5), alpha=0.1)
    with pytest.raises(ValueError, match="estimator"):
        actor_losses("nope", _policy(), _critic, torch.randn(2, 5), alpha=0.1)
    assert set(ESTIMATORS) == set(ESTIMATOR_NAMES)  # the config validates against the names
    assert mean_losses(_policy(combine="mean"), _critic, torch.randn(3, 5), 0.1).actor.ndim == 0


def test_twin_q_heads_are_two_independent_mlps():
    torch.manual_seed(0)
    q = TwinQ(4, 2, hidden=8)
    obs, act = torch.randn(5, 4), torch.randn(5, 2)
    q1, q2 = q(obs, act)
    x = torch.cat([obs, act], -1)
    for head, got in ((0, q1), (1, q2)):
        h = x
        for i, (w, b) in enumerate(zip(q.weights, q.biases)):
            h = h @ w[head] + b[head, 0]
            h = torch.relu(h) if i < 2 else h
        torch.testing.assert_close(got, h.squeeze(-1))
    q1.sum().backward()
    assert q.weights[0].grad[1].abs().sum() == 0 and q.weights[0].grad[0].abs().sum() > 0
    torch.testing.assert_close(q.min(obs, act), torch.minimum(q1, q2).detach())
