"""Forecasting metrics: hand-computed answers for the numpy reference, and the torchmetrics classes against it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics import MetricCollection

from zoo.errors import ZooValueError
from zoo.tasks.forecasting.metrics import MASE, SMAPE, aggregate, mae, mase, mase_scale, rmse, smape

Y = [1.0, 2.0, 3.0]
YHAT = [1.0, 3.0, 2.0]  # |errors| = 0, 1, 1 → MAE 2/3


def test_smape_by_hand():
    # terms 2|ŷ−y|/(|ŷ|+|y|): 0/2 = 0; 2·1/(3+2) = 0.4; 2·1/(2+3) = 0.4 → mean 0.8/3 → ×100 = 26.67 %
    assert smape(Y, YHAT) == pytest.approx(80.0 / 3.0)
    # 0/0 counts as 0: y=[0,1], ŷ=[0,3] → terms 0 and 2·2/(3+1) = 1 → mean 0.5 → 50 %
    assert smape([0.0, 1.0], [0.0, 3.0]) == pytest.approx(50.0)
    assert smape([0.0, 0.0], [0.0, 0.0]) == 0.0
    # opposite signs hit the 200 % ceiling: 2·2/(1+1) = 2
    assert smape([1.0], [-1.0]) == pytest.approx(200.0)
    # leading dimensions are kept: one value per row
    np.testing.assert_allclose(smape([Y, [0.0, 1.0, 1.0]], [YHAT, [0.0, 3.0, 1.0]]), [80.0 / 3.0, 100.0 / 3.0])


def test_mae_rmse_by_hand():
    assert mae(Y, YHAT) == pytest.approx(2.0 / 3.0)
    assert rmse(Y, YHAT) == pytest.approx(math.sqrt(2.0 / 3.0))  # squared errors 0, 1, 1


def test_mase_by_hand():
    # m=1, insample [1,2,4,7]: |diffs| 1,2,3 → scale 2; MAE 2/3 → MASE 1/3
    assert mase_scale([1, 2, 4, 7], 1) == pytest.approx(2.0)
    assert mase(Y, YHAT, [1, 2, 4, 7], 1) == pytest.approx(1.0 / 3.0)
    # m=2, insample [1,2,3,5,4,6]: x_t − x_{t−2} = 2,3,1,1 → scale 7/4; MASE (2/3)/(7/4) = 8/21
    assert mase(Y, YHAT, [1, 2, 3, 5, 4, 6], 2) == pytest.approx(8.0 / 21.0)


def test_mase_short_history_falls_back_to_m1():
    # 3 points ≤ m=4 → m=1: |diffs| 2,4 → scale 3; MASE (2/3)/3 = 2/9
    assert mase(Y, YHAT, [2, 4, 8], 4) == pytest.approx(2.0 / 9.0)


def test_mase_zero_denominators():
    # exactly periodic with m=2: seasonal scale 0 → lag-1 scale: |diffs| all 4 → 4; MASE (2/3)/4 = 1/6
    assert mase(Y, YHAT, [1, 5, 1, 5, 1, 5], 2) == pytest.approx(1.0 / 6.0)
    # constant history: lag-1 scale 0 too → NaN; a single point: undefined → NaN
    assert math.isnan(mase(Y, YHAT, [3, 3, 3], 1))
    assert math.isnan(mase_scale([3.0], 1))
    assert math.isnan(mase_scale([], 12))


def test_aggregate_leaves_out_nan_and_counts_them():
    assert aggregate([1.0, float("nan"), 3.0, 8.0]) == (pytest.approx(4.0), 1)
    assert aggregate([1.0, float("nan"), 3.0, 8.0], "median") == (pytest.approx(3.0), 1)
    assert aggregate([4.0, 1.0, 3.0, 2.0], "median") == (pytest.approx(2.5), 0)  # even count: middle average
    value, excluded = aggregate([float("nan")])
    assert math.isnan(value) and excluded == 1
    with pytest.raises(ZooValueError, match="reduction"):
        aggregate([1.0], "max")


def test_metric_shape_errors():
    with pytest.raises(ZooValueError, match="shape"):
        smape([1.0, 2.0], [1.0])
    with pytest.raises(ZooValueError, match=r"\[B, H\]"):
        SMAPE().update(torch.ones(3), torch.ones(3))
    with pytest.raises(ZooValueError, match="mase_scale"):
        MASE().update(torch.ones(2, 3), torch.ones(2, 3), torch.arange(2))


def _random_problem(num_series=7, H=5, seed=0):
    rng = np.random.default_rng(seed)
    insample = [rng.uniform(1, 10, size=rng.integers(3, 30)) for _ in range(num_series)]
    y = rng.uniform(1, 10, size=(num_series, H))
    yhat = y + rng.normal(0, 2, size=(num_series, H))
    return insample, y, yhat


@pytest.mark.parametrize("reduction", ["mean", "median"])
def test_torchmetrics_equal_numpy(reduction):
    insample, y, yhat = _random_problem()
    m = 4
    ref_smape = aggregate([smape(y[i], yhat[i]) for i in range(len(y))], reduction)[0]
    ref_mase = aggregate([mase(y[i], yhat[i], insample[i], m) for i in range(len(y))], reduction)[0]
    order = np.random.default_rng(1).permutation(len(y))  # series arrive out of order, in uneven batches
    scales = torch.tensor([mase_scale(x, m) for x in insample], dtype=torch.float32)
    s_metric = SMAPE(reduction=reduction)
    by_history = MASE(insample=insample, m=m, reduction=reduction)
    by_batch = MASE(reduction=reduction)
    for chunk in np.split(order, [2, 3]):
        idx = torch.from_numpy(chunk)
        p, t = torch.from_numpy(yhat[chunk]).float(), torch.from_numpy(y[chunk]).float()
        s_metric.update(p, t, idx)
        by_history.update(p, t, idx)
        by_batch.update(p, t, idx, mase_scale=scales[idx])
    assert float(s_metric.compute()) == pytest.approx(ref_smape, rel=1e-5)
    assert float(by_history.compute()) == pytest.approx(ref_mase, rel=1e-5)
    assert float(by_batch.compute()) == pytest.approx(ref_mase, rel=1e-5)


def test_windows_of_a_series_are_averaged_before_reducing_over_series():
    # row 3: y=[0,1,1], ŷ=[0,3,1] → terms 0, 2·2/4 = 1, 0 → sMAPE 100/3
    # series 0 has two windows (80/3 and 0), series 1 one (100/3): mean over series ((80/3 + 0)/2 + 100/3)/2 = 70/3
    preds = torch.tensor([YHAT, Y, [0.0, 3.0, 1.0]])
    target = torch.tensor([Y, Y, [0.0, 1.0, 1.0]])
    metric = SMAPE()
    metric.update(preds, target, torch.tensor([0, 0, 1]))
    assert float(metric.compute()) == pytest.approx(70.0 / 3.0)
    ids, values = metric.per_series()
    assert ids.tolist() == [0, 1]
    np.testing.assert_allclose(values.numpy(), [40.0 / 3.0, 100.0 / 3.0])
    # without series ids every row is its own series: (80/3 + 0 + 100/3)/3 = 20
    metric = SMAPE()
    metric.update(preds, target)
    assert float(metric.compute()) == pytest.approx(20.0)


def test_mase_metric_excludes_undefined_series_and_counts_them():
    insample = [[1, 2, 4, 7], [3, 3, 3], [1, 2, 3, 5, 4, 6]]  # scales 2, NaN (constant), 1 (m=1: 1,1,2,1,2 → 7/5)
    metric = MASE(insample=insample, m=1)
    metric.update(torch.tensor([YHAT] * 3), torch.tensor([Y] * 3), torch.arange(3))
    expected = ((2.0 / 3.0) / 2.0 + (2.0 / 3.0) / (7.0 / 5.0)) / 2.0
    assert float(metric.compute()) == pytest.approx(expected)
    assert metric.num_excluded() == 1
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(float(metric.compute()))


def test_metric_collection_keeps_metrics_apart_and_routes_kwargs():
    insample, y, yhat = _random_problem(num_series=4, H=3)
    scales = torch.tensor([mase_scale(x, 1) for x in insample])
    coll = MetricCollection({"smape": SMAPE(), "mase": MASE(), "mase_median": MASE(reduction="median")})
    p, t = torch.from_numpy(yhat).float(), torch.from_numpy(y).float()
    for _ in range(2):  # a second update would reveal metrics merged into one compute group
        coll.update(p, t, series=torch.arange(4), mase_scale=scales)
    out = coll.compute()
    per_mase = [mase(y[i], yhat[i], insample[i], 1) for i in range(4)]
    assert float(out["smape"]) == pytest.approx(float(np.mean(smape(y, yhat))), rel=1e-5)
    assert float(out["mase"]) == pytest.approx(float(np.mean(per_mase)), rel=1e-5)
    assert float(out["mase_median"]) == pytest.approx(float(np.median(per_mase)), rel=1e-5)
