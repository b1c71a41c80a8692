"""Forecasting models: expert-specific losses against hand-computed values, per-expert forecasts, baselines."""

import math

import pytest
import torch

from zoo.moe import MoEConfig
from zoo.tasks.forecasting.model import ForecastModule, MoEForecaster, SeasonalNaive, expert_loss

# Two windows, K = 2 experts, H = 2. Expert MAEs per window: window 0 → [1, 3], window 1 → [2, 2].
Y = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
PRED = torch.tensor([[[1.0, -1.0], [3.0, 3.0]], [[3.0, -1.0], [-1.0, 3.0]]])
GATE = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
MASK = torch.ones(2, 2, dtype=torch.bool)


def test_uniform_and_gate_weighted_known_answers():
    # uniform: mean(2, 2) = 2; gate: window 0 → .75·1 + .25·3 = 1.5, window 1 → 2; mean 1.75
    assert expert_loss(PRED, Y, GATE, MASK, "uniform").item() == pytest.approx(2.0)
    assert expert_loss(PRED, Y, GATE, MASK, "gate").item() == pytest.approx(1.75)


def test_best_expert_known_answer():
    tau = 1.0
    # window 0: best 1; target softmax(−[1, 3]) = [e^-1, e^-3]/Σ; KL(target ‖ [.75, .25])
    t0 = torch.softmax(torch.tensor([-1.0, -3.0]), 0)
    kl0 = float((t0 * (t0.log() - torch.tensor([0.75, 0.25]).log())).sum())
    # window 1: best 2; target [.5, .5] equals the gate: KL 0
    expected = ((1 + kl0) + (2 + 0.0)) / 2
    assert expert_loss(PRED, Y, GATE, MASK, "best", tau=tau).item() == pytest.approx(expected, rel=1e-6)


def test_masked_slots_do_not_count():
    mask = torch.tensor([[True, False], [True, True]])
    # uniform: window 0 → 1 (expert 1 masked), window 1 → 2; gate: window 0 → 1, window 1 → 2
    assert expert_loss(PRED, Y, GATE, mask, "uniform").item() == pytest.approx(1.5)
    assert expert_loss(PRED, Y, GATE, mask, "gate").item() == pytest.approx(1.5)


def test_gate_weighted_loss_moves_the_gate_towards_the_better_expert():
    logits = torch.zeros(1, 2, requires_grad=True)
    gate = torch.softmax(logits, -1)
    expert_loss(PRED[:1], Y[:1], gate, MASK[:1], "gate").backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1], "raising expert 0 (MAE 1) must lower the loss"


def test_per_expert_forecasts_combine_to_the_forecast_with_a_softmax_gate():
    torch.manual_seed(0)
    model = MoEForecaster(15, 6, 16, MoEConfig(num_experts=4, k=2, d_hidden=8, router="soft"), expert_forecasts=True)
    out = model(torch.randn(5, 15))
    e = out.extras
    assert e["expert_pred"].shape == (5, 4, 6) and e["gate"].shape == (5, 4) and e["expert_mask"].all()
    combined = (e["gate"].unsqueeze(-1) * e["expert_pred"]).sum(1)
    torch.testing.assert_close(combined, out.pred, rtol=1e-5, atol=1e-6)


def test_expert_loss_enters_the_objective():
    torch.manual_seed(0)
    model = MoEForecaster(15, 6, 16, MoEConfig(num_experts=4, k=2, d_hidden=8, router="soft"), expert_forecasts=True)
    module = ForecastModule(model, "mae", expert_loss="gate", expert_loss_weight=0.5)
    batch = {"x": torch.randn(8, 15), "y": torch.randn(8, 6), "scale": torch.ones(8), "series": torch.arange(8)}
    step = module.step(batch)
    out = model(batch["x"])
    e = out.extras
    expected = 0.5 * expert_loss(e["expert_pred"], batch["y"], e["gate"], e["expert_mask"], "gate")
    torch.testing.assert_close(step.aux["expert_loss"], expected)
    assert math.isfinite(step.loss.item())


def test_seasonal_naive_repeats_the_last_season():
    x = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7]])
    torch.testing.assert_close(SeasonalNaive(5, 3)(x).pred, torch.tensor([[5.0, 6, 7, 5, 6]]))
    torch.testing.assert_close(SeasonalNaive(2, 1)(x).pred, torch.tensor([[7.0, 7]]))
