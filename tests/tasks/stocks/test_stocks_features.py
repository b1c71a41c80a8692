"""Alpha158-subset features and the Qlib label: known answers, no look-ahead, split hygiene, scaling."""

import numpy as np
import pandas as pd
import pytest

from zoo.errors import ZooValueError
from zoo.tasks.stocks.features import (
    RobustScaler,
    alpha158,
    build_features,
    chronological_split,
    cs_zscore,
    next_return,
    wide_fields,
)


def _panel(days=90, stocks=4, seed=0, close_only=False):
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=days)
    rows = []
    for i in range(stocks):
        close = 20 * np.exp(np.cumsum(rng.normal(0, 0.02, days)))
        open_ = close * np.exp(rng.normal(0, 0.005, days))
        high = np.maximum(open_, close) * 1.01
        low = np.minimum(open_, close) * 0.99
        volume = rng.uniform(1e5, 2e5, days)
        for d in range(days):
            rows.append((dates[d], f"S{i}", open_[d], high[d], low[d], close[d], volume[d]))
    df = pd.DataFrame(rows, columns=["date", "instrument", "open", "high", "low", "close", "volume"])
    if close_only:
        df[["open", "high", "low", "volume"]] = np.nan
    return df


def test_known_answers_on_one_stock():
    df = _panel(days=70, stocks=1)
    f = wide_fields(df)
    feats = alpha158(f)
    c, o = f["close"]["S0"], f["open"]["S0"]
    t = 65
    assert feats["KMID"]["S0"].iloc[t] == pytest.approx((c.iloc[t] - o.iloc[t]) / o.iloc[t])
    assert feats["ROC5"]["S0"].iloc[t] == pytest.approx(c.iloc[t - 5] / c.iloc[t])
    assert feats["MA10"]["S0"].iloc[t] == pytest.approx(c.iloc[t - 9:t + 1].mean() / c.iloc[t])
    assert feats["STD20"]["S0"].iloc[t] == pytest.approx(c.iloc[t - 19:t + 1].std() / c.iloc[t])
    moves = np.diff(c.iloc[t - 5:t + 1].to_numpy())
    assert feats["CNTD5"]["S0"].iloc[t] == pytest.approx((moves > 0).mean() - (moves < 0).mean())
    assert np.isnan(feats["MA60"]["S0"].iloc[58]) and np.isfinite(feats["MA60"]["S0"].iloc[59])
    assert next_return(f["close"])["S0"].iloc[t] == pytest.approx(c.iloc[t + 2] / c.iloc[t + 1] - 1)


def test_features_never_look_ahead_and_the_label_looks_exactly_two_days():
    df = _panel()
    base = build_features(df)
    t = 70
    cutoff = base.days[t]
    later = df["date"] > cutoff
    changed = df.copy()
    changed.loc[later, ["open", "high", "low", "close"]] *= 1.5  # rewrite the future
    changed.loc[later, "volume"] *= 3
    moved = build_features(changed)
    np.testing.assert_array_equal(np.isnan(base.x[: t + 1]), np.isnan(moved.x[: t + 1]))
    np.testing.assert_allclose(np.nan_to_num(base.x[: t + 1]), np.nan_to_num(moved.x[: t + 1]), rtol=0, atol=0)
    # the label of day t - 2 reads closes t - 1 and t only: unchanged; day t - 1's reads t + 1: changed
    np.testing.assert_array_equal(base.ret[t - 2], moved.ret[t - 2])
    assert not np.allclose(base.ret[t - 1], moved.ret[t - 1])


def test_close_only_panels_keep_close_features_and_label_is_zscored_per_day():
    fs = build_features(_panel(close_only=True))
    assert len(fs.names) == 28 and all(not n.startswith(("K", "VMA", "CORR")) for n in fs.names)
    full = build_features(_panel())
    assert len(full.names) == 64
    day = full.label[10]
    assert np.nanmean(day) == pytest.approx(0, abs=1e-12) and np.nanstd(day, ddof=1) == pytest.approx(1)


def test_zero_volume_is_not_tradable():
    df = _panel()
    df.loc[(df.instrument == "S1") & (df.date == df.date.unique()[30]), "volume"] = 0
    fs = build_features(df)
    assert not fs.tradable[30, 1] and np.isnan(fs.label[30, 1]) and fs.tradable[30, 0]


def test_cs_zscore_ignores_nan_and_constant_days():
    frame = pd.DataFrame([[1.0, 2.0, 3.0], [5.0, np.nan, 7.0], [2.0, 2.0, 2.0]])
    z = cs_zscore(frame)
    np.testing.assert_allclose(z.iloc[0], [-1, 0, 1])
    np.testing.assert_allclose(z.iloc[1, [0, 2]], [-1 / np.sqrt(2), 1 / np.sqrt(2)])
    assert z.iloc[2].isna().all()


def test_split_is_chronological_and_label_safe():
    days = pd.bdate_range("2020-01-01", periods=160)
    sp = chronological_split(days, (0.6, 0.2, 0.2), first=60)
    assert sp["train"][0] == 60 and sp["train"][-1] + 2 < sp["valid"][0] and sp["valid"][-1] + 2 < sp["test"][0]
    assert sp["test"][-1] == 159 and len(sp["train"]) == 58
    with pytest.raises(ZooValueError, match="too few"):
        chronological_split(days[:65], (0.6, 0.2, 0.2), first=60)


def test_robust_scaler_uses_median_and_mad_and_clips():
    train = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    sc = RobustScaler.fit(train)
    assert sc.median[0] == 3.0 and sc.scale[0] == pytest.approx(1.4826)
    out = sc.transform(np.array([[3.0], [1000.0], [np.nan]]))
    np.testing.assert_allclose(out[:, 0], [0.0, 3.0, 0.0])
