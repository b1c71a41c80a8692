"""PMOE's actor as the authors' code builds it (docs/rl-pmoe-fidelity.md): the batched expert heads against
separate per-expert layers, the gate's bias, the head init, the best-of-K update against the all-pairs formulation,
and weights saved in the earlier per-expert layout."""

import torch

from zoo.tasks.rl.policy import HEAD_INIT, LOG_STD_MAX, LOG_STD_MIN, GaussianMixturePolicy, pmoe_losses


def _policy(K=3, obs_dim=5, act_dim=2, seed=0, hidden=16):
    torch.manual_seed(seed)
    return GaussianMixturePolicy(obs_dim, act_dim, num_experts=K, hidden=hidden)


def test_batched_heads_equal_separate_per_expert_heads():
    policy = _policy(K=4, act_dim=3)
    with torch.no_grad():  # leave the ±3e-3 init so that every output differs visibly
        policy.heads.weight.normal_()
        policy.heads.bias.normal_()
    obs = torch.randn(9, 5)
    dist = policy(obs)
    h = policy.trunk(obs)
    for k in range(4):
        out = policy.expert_head(k)(h)
        torch.testing.assert_close(dist.mu[:, k], out[:, :3])
        torch.testing.assert_close(dist.log_std[:, k], out[:, 3:].clamp(LOG_STD_MIN, LOG_STD_MAX))


def test_heads_start_near_zero_as_the_authors_init():
    policy = _policy(K=4, hidden=64)
    assert policy.heads.weight.abs().max() <= HEAD_INIT and policy.heads.bias.abs().max() <= HEAD_INIT
    dist = policy(torch.randn(16, 5))
    assert dist.mu.abs().max() < 0.1 and dist.log_std.abs().max() < 0.1  # every expert ≈ N(0, 1) at the start


def test_gate_has_a_bias_so_it_can_prefer_an_expert_at_the_zero_state():
    policy = _policy(K=3)
    with torch.no_grad():
        policy.gate.gate.weight.zero_()
        policy.gate.gate.weight[:, -1] = torch.tensor([2.0, 0.0, -1.0])  # the column read by the constant input
    weights = policy(torch.zeros(1, 5)).weights[0]
    torch.testing.assert_close(weights, torch.softmax(torch.tensor([2.0, 0.0, -1.0]), -1))


def _all_pairs_loss(policy, q_fn, obs, alpha):
    """The estimator written as the authors' code does: differentiate Q on all B·K sampled actions and take the max."""
    dist = policy(obs)
    u = dist.mu + dist.log_std.exp() * torch.randn_like(dist.mu)
    B, K, A = u.shape
    q = q_fn(obs.repeat_interleave(K, dim=0), torch.tanh(u).reshape(B * K, A)).reshape(B, K)
    q_best, best = q.max(-1)
    normal = torch.distributions.Normal(dist.mu, dist.log_std.exp()).log_prob(u)
    logp = (normal - torch.log(1 - torch.tanh(u) ** 2 + 1e-12)).sum(-1)
    logp_best = logp.gather(1, best[:, None]).squeeze(1)
    return (alpha * logp_best - q_best).mean(), best


def test_scoring_without_grad_gives_the_all_pairs_gradient():
    policy = _policy(K=4, act_dim=2)
    with torch.no_grad():
        policy.heads.weight.normal_(std=0.3)
    target = torch.tensor([0.3, -0.5])

    def q_fn(o, a):
        return -((a - target) ** 2).sum(-1) + 0.1 * o[:, 0]

    obs = torch.randn(32, 5)
    torch.manual_seed(7)
    loss = pmoe_losses(policy, q_fn, obs, alpha=0.2).actor
    loss_grads = torch.autograd.grad(loss, list(policy.parameters()), allow_unused=True)
    torch.manual_seed(7)
    ref, best_ref = _all_pairs_loss(policy, q_fn, obs, alpha=0.2)
    ref_grads = torch.autograd.grad(ref, list(policy.parameters()), allow_unused=True)
    torch.manual_seed(7)
    assert torch.equal(pmoe_losses(policy, q_fn, obs, alpha=0.2).best, best_ref)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(loss_grads, ref_grads, strict=True):
        if r is None:
            assert g is None or not g.abs().any()
        else:
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_weights_saved_with_per_expert_heads_and_a_biasless_gate_load_unchanged():
    policy = _policy(K=3)
    with torch.no_grad():
        policy.heads.weight.normal_()
        policy.gate.gate.weight[:, -1] = 0.0  # the earlier gate had no bias
    old = {k: v for k, v in policy.state_dict().items() if not k.startswith("heads.")}
    old["gate.gate.weight"] = policy.gate.gate.weight[:, :-1].clone()
    for k in range(3):
        head = policy.expert_head(k)
        old[f"heads.experts.{k}.weight"], old[f"heads.experts.{k}.bias"] = head.weight, head.bias
    fresh = _policy(K=3, seed=1)
    fresh.load_state_dict(old)
    obs = torch.randn(6, 5)
    a, b = policy(obs), fresh(obs)
    for name in ("logits", "mu", "log_std"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name))
