"""Stocks TopK-dropout backtest: a hand-worked replay, Qlib's rule on random data, edge cases, risk report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from zoo.errors import ZooValueError
from zoo.tasks.stocks.backtest import risk_summary, scaled_topk, topk_dropout

D1, D2, D3 = pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03"), pd.Timestamp("2024-01-04")
NAN = float("nan")


def panel(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["date", "instrument", "score", "ret"])


# topk=2, n_drop=1, costs 0.0005 to open and 0.0015 to close, weights 1/2.
# Day 1: buy the top 2, A and B. Portfolio (.01+.02)/2 = .015; benchmark (.01+.02+.03−.01+0)/5 = .01;
#        turnover 2/2 = 1; cost 2·.0005/2 = .0005; excess .015 − .01 − .0005 = .0045.
# Day 2: the best non-held candidate is C (.5); combined C .5, B .4, A .1 → A is last: sell A, buy C. Book {B, C}:
#        portfolio (−.01+.02)/2 = .005; benchmark (.05−.01+.02+0+.04)/5 = .02; turnover (1+1)/2 = 1;
#        cost (.0005+.0015)/2 = .001; excess .005 − .02 − .001 = −.016.
# Day 3: candidate A (.3) ranks below both held stocks → no trade. Portfolio (.03+.01)/2 = .02; D's ret is NaN,
#        so the benchmark is (.1+.03+.01+.02)/4 = .04; excess −.02.
HAND = panel([
    (D1, "A", 0.5, 0.01), (D1, "B", 0.4, 0.02), (D1, "C", 0.3, 0.03), (D1, "D", 0.2, -0.01), (D1, "E", 0.1, 0.0),
    (D2, "A", 0.1, 0.05), (D2, "B", 0.4, -0.01), (D2, "C", 0.5, 0.02), (D2, "D", 0.2, 0.0), (D2, "E", 0.3, 0.04),
    (D3, "A", 0.3, 0.1), (D3, "B", 0.5, 0.03), (D3, "C", 0.4, 0.01), (D3, "D", 0.2, NAN), (D3, "E", 0.1, 0.02),
])


def test_hand_worked_three_days():
    out = topk_dropout(HAND, topk=2, n_drop=1)
    assert list(out.index) == [D1, D2, D3]
    np.testing.assert_allclose(out["portfolio"], [0.015, 0.005, 0.02])
    np.testing.assert_allclose(out["benchmark"], [0.01, 0.02, 0.04])
    np.testing.assert_allclose(out["turnover"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(out["cost"], [0.0005, 0.001, 0.0])
    np.testing.assert_allclose(out["excess"], [0.0045, -0.016, -0.02])
    assert list(out["held"]) == [2, 2, 2]


def random_panel(seed: int, days: int = 8, stocks: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2023-03-01", periods=days, freq="B")
    return pd.DataFrame({"date": np.repeat(dates, stocks), "instrument": np.tile([f"S{i:02d}" for i in range(stocks)], days),
                         "score": rng.normal(size=days * stocks), "ret": rng.normal(0.0, 0.02, size=days * stocks)})


def qlib_reference(df: pd.DataFrame, topk: int, n_drop: int) -> pd.DataFrame:
    """Qlib's TopkDropoutStrategy selection (method_sell="bottom", method_buy="top") written out with its own
    pandas steps, for a full universe where every stock has a score and a ret."""
    held = pd.Index([], dtype=object)
    rows = {}
    for date, day in df.groupby("date"):
        day = day.set_index("instrument")
        last = day["score"].reindex(held).sort_values(ascending=False).index
        today = day["score"][~day.index.isin(last)].sort_values(ascending=False).index[: n_drop + topk - len(last)]
        comb = day["score"].reindex(last.union(today)).sort_values(ascending=False).index
        sell = last[last.isin(comb[len(comb) - n_drop:])]
        buy = today[: len(sell) + topk - len(last)]
        held = last.difference(sell).union(buy)
        rows[date] = {"portfolio": day["ret"][held].mean(), "turnover": (len(sell) + len(buy)) / topk}
    return pd.DataFrame.from_dict(rows, orient="index")


@pytest.mark.parametrize("topk,n_drop", [(5, 2), (8, 1), (4, 4)])
def test_follows_qlib_rule_on_random_data(topk, n_drop):
    df = random_panel(topk)
    out, ref = topk_dropout(df, topk, n_drop), qlib_reference(df, topk, n_drop)
    np.testing.assert_allclose(out["portfolio"], ref["portfolio"])
    np.testing.assert_allclose(out["turnover"], ref["turnover"])
    assert (out["held"] == topk).all()


def test_n_drop_zero_keeps_the_first_book():
    df = random_panel(1)
    out = topk_dropout(df, topk=4, n_drop=0)
    first = df[df["date"] == df["date"].min()].nlargest(4, "score")["instrument"]
    expected = df[df["instrument"].isin(first)].groupby("date")["ret"].mean()
    np.testing.assert_allclose(out["portfolio"], expected)
    np.testing.assert_allclose(out["turnover"], [1.0] + [0.0] * 7)


def test_benchmark_is_the_mean_ret_and_zero_costs_leave_the_spread():
    df = random_panel(2)
    df.loc[::7, "ret"] = NAN  # a NaN ret leaves the benchmark and counts 0 in the portfolio
    out = topk_dropout(df, topk=5, n_drop=2, open_cost=0.0, close_cost=0.0)
    np.testing.assert_allclose(out["benchmark"], df.groupby("date")["ret"].mean())
    np.testing.assert_allclose(out["excess"], out["portfolio"] - out["benchmark"])
    assert (out["cost"] == 0.0).all()


def test_row_order_does_not_matter():
    df = random_panel(3)
    shuffled = df.sample(frac=1.0, random_state=0).reset_index(drop=True)
    pd.testing.assert_frame_equal(topk_dropout(shuffled, 5, 2), topk_dropout(df, 5, 2))


def test_held_stock_without_a_score_is_kept():
    # topk=2, n_drop=1. Day 1 buys A, B. Day 2 has no row for B: B stays (earning 0) and only the scored A competes:
    # candidate C (.4) beats A (.1) → swap A for C; portfolio (0 + .02)/2 = .01.
    # Day 3: B is back with a NaN score (kept again, its ret .05 counts); candidate A (.5) beats C (.1) → swap;
    # portfolio (.04 + .05)/2 = .045; the benchmark counts B's ret: (.04+.05+0+.01)/4 = .025.
    df = panel([
        (D1, "A", 0.4, 0.0), (D1, "B", 0.3, 0.0), (D1, "C", 0.2, 0.0), (D1, "D", 0.1, 0.0),
        (D2, "A", 0.1, 0.01), (D2, "C", 0.4, 0.02), (D2, "D", 0.3, 0.03),
        (D3, "A", 0.5, 0.04), (D3, "B", NAN, 0.05), (D3, "C", 0.1, 0.0), (D3, "D", 0.2, 0.01),
    ])
    out = topk_dropout(df, topk=2, n_drop=1)
    np.testing.assert_allclose(out["portfolio"], [0.0, 0.01, 0.045])
    np.testing.assert_allclose(out["benchmark"], [0.0, 0.02, 0.025])
    np.testing.assert_allclose(out["turnover"], [1.0, 1.0, 1.0])
    assert list(out["held"]) == [2, 2, 2]


def test_small_universe_sells_only_what_it_can_replace():
    # 3 stocks, topk=2, n_drop=2. Day 2 ranks C, A, B: both held stocks sit in the last 2 of the combined list, but
    # only C can replace one, so only the worse, B, is sold (Qlib would sell both and hold cash). Book {A, C}.
    df = panel([
        (D1, "A", 0.3, 0.0), (D1, "B", 0.2, 0.0), (D1, "C", 0.1, 0.0),
        (D2, "A", 0.2, 0.02), (D2, "B", 0.1, 0.08), (D2, "C", 0.3, 0.04),
    ])
    out = topk_dropout(df, topk=2, n_drop=2)
    np.testing.assert_allclose(out["portfolio"], [0.0, 0.03])
    np.testing.assert_allclose(out["turnover"], [1.0, 1.0])
    assert list(out["held"]) == [2, 2]


def test_bad_input_raises():
    with pytest.raises(ZooValueError, match=r"2024-01-03.* only 1 stocks .* topk=2"):
        topk_dropout(HAND[(HAND["date"] != D2) | (HAND["instrument"] == "A")], topk=2, n_drop=1)
    with pytest.raises(ZooValueError, match="duplicated"):
        topk_dropout(pd.concat([HAND, HAND.iloc[[4]]]), topk=2, n_drop=1)
    with pytest.raises(ZooValueError, match="topk"):
        topk_dropout(HAND, topk=0, n_drop=0)
    with pytest.raises(ZooValueError, match="n_drop"):
        topk_dropout(HAND, topk=2, n_drop=-1)
    with pytest.raises(ZooValueError, match="n_drop"):
        topk_dropout(HAND, topk=2, n_drop=3)
    with pytest.raises(ZooValueError, match="ret"):
        topk_dropout(HAND.drop(columns="ret"), topk=2, n_drop=1)
    with pytest.raises(ZooValueError, match="no rows"):
        topk_dropout(HAND.iloc[:0], topk=2, n_drop=1)


def test_risk_summary_by_hand():
    # mean .01/4 = .0025 → annualized 238·.0025 = .595. Deviations .0075, −.0225, .0275, −.0125: squares sum to
    # .001475, so std = √(.001475/3). Cumulative sums .01, −.01, .02, .01 against running peaks .01, .01, .02, .02
    # → drawdowns 0, −.02, 0, −.01 → max drawdown −.02.
    s = risk_summary(pd.Series([0.01, -0.02, 0.03, -0.01]))
    assert s["annualized_return"] == pytest.approx(0.595)
    assert s["information_ratio"] == pytest.approx(math.sqrt(238) * 0.0025 / math.sqrt(0.001475 / 3))
    assert s["max_drawdown"] == pytest.approx(-0.02)
    assert s["days"] == 4
    assert risk_summary(pd.Series([0.01, -0.02, 0.03, -0.01]), periods=252)["annualized_return"] == pytest.approx(0.63)


def test_risk_summary_edges():
    # drawdowns run from the first day's level, as in Qlib: −.01 then −.03 → peak −.01 → max drawdown −.02
    assert risk_summary(pd.Series([-0.01, -0.02]))["max_drawdown"] == pytest.approx(-0.02)
    one = risk_summary(pd.Series([0.01, NAN]))
    assert one["days"] == 1 and one["annualized_return"] == pytest.approx(2.38)
    assert math.isnan(one["information_ratio"])


@pytest.mark.parametrize("size,expected", [(300, (50, 5)), (500, (83, 8)), (150, (25, 3)), (30, (5, 1)),
                                           (20, (3, 1)), (4, (1, 1)), (2, (1, 1))])
def test_scaled_topk(size, expected):
    # 150 → n_drop 2.5 rounds half up to 3; 30 → n_drop 0.5 rounds to 1; 20 → 3.33 and 0.33 → (3, at least 1)
    assert scaled_topk(size) == expected


def test_scaled_topk_rejects_a_single_stock():
    with pytest.raises(ZooValueError, match="universe_size"):
        scaled_topk(1)
