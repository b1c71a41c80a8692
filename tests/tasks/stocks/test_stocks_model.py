"""Stock scorers against plain loops and libraries: correlations vs scipy, MIGA's combination vs a per-stock loop,
inner-group attention stays inside groups, oracle routing, gradients, and the −IC training step."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from zoo.moe import MoEConfig
from zoo.tasks.stocks.data import DayBatch
from zoo.tasks.stocks.metrics import ic_summary
from zoo.tasks.stocks.model import MIGA, DailyIC, GRUScorer, MoEScorer, StocksModule, pearson, ranks


def test_pearson_and_ranks_match_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert float(pearson(torch.tensor(a), torch.tensor(b))) == pytest.approx(stats.pearsonr(a, b)[0])
    tied = np.array([3.0, 1.0, 3.0, 2.0, 1.0])
    np.testing.assert_allclose(ranks(torch.tensor(tied)).numpy() + 1, stats.rankdata(tied))
    with_nan = torch.tensor([1.0, float("nan"), 3.0, 4.0])
    assert float(pearson(with_nan, torch.tensor([1.0, 5.0, 2.0, 3.0]))) == pytest.approx(stats.pearsonr([1, 3, 4], [1, 2, 3])[0])


def test_daily_ic_metric_matches_ic_summary():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"date": np.repeat(pd.bdate_range("2021-01-01", periods=6), 20),
                          "score": rng.normal(size=120), "label": rng.normal(size=120)})
    ic, ric = DailyIC(), DailyIC(rank=True)
    for _, day in frame.groupby("date"):
        ic.update(torch.tensor(day.score.to_numpy()), torch.tensor(day.label.to_numpy()))
        ric.update(torch.tensor(day.score.to_numpy()), torch.tensor(day.label.to_numpy()))
    want = ic_summary(frame)
    assert float(ic.compute()) == pytest.approx(want["ic"]) and float(ric.compute()) == pytest.approx(want["rank_ic"])


def _loop_miga(model: MIGA, x: torch.Tensor) -> torch.Tensor:
    """MIGA without IGA, one stock and one chosen expert at a time."""
    h = model.encoder(x)
    routing = model.router(h)
    out = []
    for s in range(h.shape[0]):
        total = h.new_zeros(())
        for j, w in zip(routing.ids[s].tolist(), routing.weights[s]):
            y = F.gelu(h[s] @ model.experts.w1[j]) @ model.experts.w2[j]
            total = total + w * model.head(y).squeeze()
        out.append(total)
    return torch.stack(out)


def test_miga_without_iga_matches_a_per_stock_loop_with_gradients():
    torch.manual_seed(0)
    model = MIGA(5, 16, groups=3, experts_per_group=2, k=2, d_expert=8, heads=2, iga=False)
    x = torch.randn(7, 4, 5)
    got = model(x).pred
    want = _loop_miga(model, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    g = torch.randn(7)
    grads = torch.autograd.grad(got, list(model.parameters()), g, allow_unused=True)
    want_grads = torch.autograd.grad(want, list(model.parameters()), g, allow_unused=True)
    for a, b in zip(grads, want_grads):
        if a is None or b is None:
            assert (a is None or not a.abs().any()) and (b is None or not b.abs().any())
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_inner_group_attention_stays_inside_its_group():
    torch.manual_seed(0)
    model = MIGA(5, 16, groups=2, experts_per_group=3, k=2, d_expert=8, heads=2)
    h = torch.randn(4, 16)
    before = model.expert_outputs(h)
    with torch.no_grad():
        model.experts.w2[3:].mul_(2.0)  # change group 1's experts only
    after = model.expert_outputs(h)
    torch.testing.assert_close(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3:], after[:, 3:])


def test_oracle_routes_by_true_style_and_needs_it():
    torch.manual_seed(0)
    model = MIGA(5, 16, groups=2, experts_per_group=2, k=1, d_expert=8, heads=2, oracle=True)
    x, group = torch.randn(6, 3, 5), torch.tensor([0, 1, 1, 0, 1, 0])
    out = model(x, group)
    scores = model.head(model.expert_outputs(model.encoder(x))).squeeze(-1)
    want = torch.stack([scores[s, 2 * g:2 * g + 2].mean() for s, g in enumerate(group.tolist())])
    torch.testing.assert_close(out.pred, want)
    assert out.extras["cluster"].tolist() == group.tolist() and out.aux == {}
    with pytest.raises(ValueError, match="style"):
        model(x, torch.full((6,), -1))


def _day(S=12, L=4, F_=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return DayBatch(torch.randn(S, L, F_, generator=gen), torch.randn(S, generator=gen), torch.zeros(S),
                    torch.zeros(S, dtype=torch.long), torch.arange(S), 0)


@pytest.mark.parametrize("make", [
    lambda: GRUScorer(5, 8),
    lambda: MoEScorer(5, 8, MoEConfig(num_experts=4, k=2, d_hidden=8, balance_coef=0.01)),
    lambda: MIGA(5, 8, groups=2, experts_per_group=2, k=2, d_expert=8, heads=2),
])
def test_step_loss_is_minus_ic_plus_aux_and_reaches_every_trained_parameter(make):
    torch.manual_seed(0)
    module = StocksModule(make())
    batch = _day()
    out = module.step(batch)
    assert float(out.loss.detach()) == pytest.approx(-float(pearson(out.preds, batch.y)), abs=1e-6)
    total = out.loss + sum(out.aux.values(), torch.zeros(()))
    total.backward()
    missing = [n for n, p in module.model.named_parameters() if p.grad is None]
    assert not missing, missing
