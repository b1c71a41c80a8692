"""Stocks signal metrics: hand-computed IC / Rank IC / ICIR, scipy cross-checks, undefined days, routing NMI."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from zoo.errors import ZooValueError
from zoo.tasks.stocks.metrics import daily_ic, ic_summary, routing_nmi

D1, D2, D3 = pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03"), pd.Timestamp("2024-01-04")


def panel(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["date", "instrument", "score", "label"])


# Day 1: score 1,2,3 vs label 2,3,1 → centred (−1,0,1)·(0,1,−1) = −1 over √(2·2) → IC −1/2; the values are their
#        own ranks, so Rank IC −1/2 too.
# Day 2: score 0,1,5 vs label 1,0,2 → centred (−2,−1,3)·(0,−1,1) = 4 over √(14·2) → IC 4/√28 = 2/√7;
#        ranks 1,2,3 vs 2,1,3 → (−1,0,1)·(0,−1,1) = 1 over √(2·2) → Rank IC 1/2.
HAND = panel([
    (D1, "A", 1.0, 2.0), (D1, "B", 2.0, 3.0), (D1, "C", 3.0, 1.0),
    (D2, "A", 0.0, 1.0), (D2, "B", 1.0, 0.0), (D2, "C", 5.0, 2.0),
])
IC_D2 = 2.0 / math.sqrt(7.0)  # 0.755929


def test_daily_ic_by_hand():
    ic = daily_ic(HAND)
    assert list(ic.index) == [D1, D2]
    np.testing.assert_allclose(ic.to_numpy(), [-0.5, IC_D2])
    np.testing.assert_allclose(daily_ic(HAND, "spearman").to_numpy(), [-0.5, 0.5])


def test_ic_summary_by_hand():
    s = ic_summary(HAND)
    # IC: mean (−1/2 + 2/√7)/2; std (ddof=1) of two values a, b is |a − b|/√2
    ic = (-0.5 + IC_D2) / 2.0
    assert s["ic"] == pytest.approx(ic)
    assert s["icir"] == pytest.approx(ic / ((IC_D2 + 0.5) / math.sqrt(2.0)))
    # Rank IC: mean (−1/2 + 1/2)/2 = 0, std 1/√2 → Rank ICIR 0
    assert s["rank_ic"] == pytest.approx(0.0)
    assert s["rank_icir"] == pytest.approx(0.0)
    assert s["days"] == 2


def random_panel(seed: int, days: int = 6, stocks: int = 25) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2023-03-01", periods=days, freq="B")
    df = pd.DataFrame({"date": np.repeat(dates, stocks), "instrument": np.tile([f"S{i:02d}" for i in range(stocks)], days),
                       "score": rng.normal(size=days * stocks)})
    df["label"] = 0.3 * df["score"] + rng.normal(size=len(df))
    return df


def test_daily_ic_matches_scipy_on_random_data():
    df = random_panel(0)
    shuffled = df.sample(frac=1.0, random_state=1)
    ic, rank_ic = daily_ic(shuffled, "pearson"), daily_ic(shuffled, "spearman")
    for date, day in df.groupby("date"):
        assert ic[date] == pytest.approx(pearsonr(day["score"], day["label"]).statistic)
        assert rank_ic[date] == pytest.approx(spearmanr(day["score"], day["label"]).statistic)
    # ICIR is the mean over the standard deviation (ddof=1) of the daily series
    s = ic_summary(df)
    assert s["icir"] == pytest.approx(ic.mean() / ic.std(ddof=1))
    assert s["rank_icir"] == pytest.approx(rank_ic.mean() / rank_ic.std(ddof=1))
    assert s["days"] == 6


def test_spearman_averages_ties():
    # score ranks 1.5,1.5,3,4 vs label ranks 1,2,3,4: centred (−1,−1,½,1.5)·(−1.5,−½,½,1.5) = 4.5,
    # sums of squares 4.5 and 5 → 4.5/√22.5 = √0.9
    df = panel([(D1, "A", 1.0, 10.0), (D1, "B", 1.0, 20.0), (D1, "C", 2.0, 30.0), (D1, "D", 3.0, 40.0)])
    rank_ic = daily_ic(df, "spearman")[D1]
    assert rank_ic == pytest.approx(math.sqrt(0.9))
    assert rank_ic == pytest.approx(spearmanr(df["score"], df["label"]).statistic)


def test_missing_values_drop_their_row_only():
    df = panel([
        # day 1: C lacks a score, D a label → the pairs A, B remain: two points correlate perfectly (−1 here)
        (D1, "A", 1.0, 2.0), (D1, "B", 2.0, 1.0), (D1, "C", np.nan, 5.0), (D1, "D", 3.0, np.nan),
        # day 2: one complete pair → undefined
        (D2, "A", 1.0, 2.0), (D2, "B", np.nan, 1.0),
    ])
    ic = daily_ic(df)
    assert ic[D1] == pytest.approx(-1.0)
    assert math.isnan(ic[D2])
    assert ic_summary(df)["days"] == 1


def test_constant_day_is_nan_and_left_out_of_summaries():
    # 0.1 three times: centring it in floating point leaves rounding noise, which must not read as ±1
    constant = [(D3, "A", 0.1, 1.0), (D3, "B", 0.1, 3.0), (D3, "C", 0.1, 2.0)]
    df = pd.concat([HAND, panel(constant)], ignore_index=True)
    assert math.isnan(daily_ic(df)[D3])
    assert math.isnan(daily_ic(df, "spearman")[D3])
    assert ic_summary(df) == pytest.approx(ic_summary(HAND))


def test_icir_needs_two_days():
    s = ic_summary(HAND[HAND["date"] == D2])
    assert s["ic"] == pytest.approx(IC_D2)
    assert math.isnan(s["icir"]) and math.isnan(s["rank_icir"])
    assert s["days"] == 1


def test_bad_input_raises():
    with pytest.raises(ZooValueError, match="method"):
        daily_ic(HAND, "kendall")
    with pytest.raises(ZooValueError, match="label"):
        ic_summary(HAND.drop(columns="label"))


def test_nmi_is_one_for_a_relabelled_perfect_routing():
    truth = ["bank", "bank", "tech", "tech", "energy", "energy"]
    assert routing_nmi([2, 2, 0, 0, 1, 1], truth) == pytest.approx(1.0)


def test_nmi_is_near_zero_for_independent_routing():
    rng = np.random.default_rng(0)
    assert routing_nmi(rng.integers(0, 4, 20000), rng.integers(0, 5, 20000)) < 0.01


def test_nmi_rejects_mismatched_or_empty_input():
    with pytest.raises(ZooValueError, match="length"):
        routing_nmi([0, 1, 1], [0, 1])
    with pytest.raises(ZooValueError, match="empty"):
        routing_nmi([], [])
