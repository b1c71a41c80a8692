"""Balance losses against hand-computed answers."""

import math

import pytest
import torch

from zoo.moe import importance_loss, load_balance_loss, router_z_loss, routing_entropy
from zoo.moe.losses import aux_free_bias_update, expert_fractions

LN3 = math.log(3.0)


def test_load_balance_hand_example():
    # probs [[.25, .75], [.5, .5]] → P = [.375, .625]
    logits = torch.tensor([[0.0, LN3], [0.0, 0.0]])
    both_on_one = torch.tensor([[1], [1]])  # f = [0, 1] → 2 · .625
    assert load_balance_loss(logits, both_on_one).item() == pytest.approx(1.25)
    split = torch.tensor([[1], [0]])  # f = [.5, .5] → 2 · (.5·.375 + .5·.625)
    assert load_balance_loss(logits, split).item() == pytest.approx(1.0)


def test_load_balance_is_one_when_uniform_and_e_when_collapsed():
    E, T = 8, 64
    uniform_ids = torch.arange(T).remainder(E)[:, None]
    assert load_balance_loss(torch.zeros(T, E), uniform_ids).item() == pytest.approx(1.0)
    collapsed = torch.full((T, E), -30.0)
    collapsed[:, 0] = 30.0
    assert load_balance_loss(collapsed, torch.zeros(T, 1, dtype=torch.long)).item() == pytest.approx(E, rel=1e-6)


def test_load_balance_gradient_flows_through_probabilities_only():
    logits = torch.tensor([[0.0, LN3], [0.0, 0.0]], requires_grad=True)
    load_balance_loss(logits, torch.tensor([[1], [1]])).backward()
    # loss = 2 · mean_t p_t1 ; d p_t1 / d logit_t1 = p_t1 (1 − p_t1), d / d logit_t0 = −p_t0 p_t1
    expected = torch.tensor([[-0.1875, 0.1875], [-0.25, 0.25]])
    torch.testing.assert_close(logits.grad, expected)


def test_placeholder_slots_are_ignored():
    ids = torch.tensor([[0, -1], [1, -1], [1, 0]])
    torch.testing.assert_close(expert_fractions(ids, 3), torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(expert_fractions(torch.full((2, 2), -1), 3), torch.zeros(3))


def test_z_loss_known_answer():
    assert router_z_loss(torch.zeros(5, 4)).item() == pytest.approx(math.log(4) ** 2)
    logits = torch.tensor([[0.0, LN3]])  # logsumexp = ln 4
    assert router_z_loss(logits).item() == pytest.approx(math.log(4) ** 2)


def test_importance_loss_known_answer():
    assert importance_loss(torch.zeros(6, 3)).item() == pytest.approx(0.0, abs=1e-12)
    logits = torch.tensor([[0.0, LN3], [0.0, LN3]])  # importance [.5, 1.5]: var .25, mean 1
    assert importance_loss(logits).item() == pytest.approx(0.25)


def test_routing_entropy():
    assert routing_entropy(torch.zeros(3, 8)).item() == pytest.approx(math.log(8))
    logits = torch.tensor([[0.0, LN3]])
    assert routing_entropy(logits).item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))


def test_aux_free_bias_update_direction():
    bias = torch.zeros(4)
    load = torch.tensor([3.0, 1.0, 2.0, 2.0])
    torch.testing.assert_close(aux_free_bias_update(bias, load, 0.1), torch.tensor([-0.1, 0.1, 0.0, 0.0]))
