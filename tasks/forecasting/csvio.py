"""Users' own series from a CSV file: format detection, frequency inference, missing values, future timestamps.

Formats (detected from the header; column names are compared after stripping spaces, case-insensitively):

- **long**: one row per observation, columns ``id,timestamp,value``. ``timestamp`` may be left out (each series'
  rows are then in time order; rows of different series may interleave) and so may ``id`` (one series, named
  ``series``). Synonyms: ``date``, ``ds``, ``time`` for ``timestamp``; ``y`` for ``value``; ``unique_id``,
  ``series`` for ``id``. No other column is allowed, so a typo cannot be silently ignored.
- **wide**: one row per time step and one column per series (the column name is the series id), optionally with
  one timestamp column (named like ``timestamp`` above, normally the first column). Without a timestamp column
  every column is a series and rows are in time order. A series' leading and trailing empty cells are ignored,
  so series may start and end at different times.

Detection rule, in this order: a column named like ``value`` → long; otherwise a column named like ``id`` → an
error (a long file without its value column); otherwise → wide. More than one column of the same role, duplicate
column names, or a header made only of numbers (a file without a header) are errors.

Timestamps: ISO 8601 dates or date-times (``2020-01-31``, ``2020-01``, ``1990``, ``2020-01-31 12:30``), or any
other single format pandas can infer from the first one (``01/31/2020``); a column whose cells carry different
UTC offsets (``+01:00`` then ``+02:00`` across daylight saving) is converted to UTC. Within a series rows are sorted by
timestamp; a timestamp may appear only once per series. The step is inferred per series:

1. :func:`pandas.infer_freq` when the timestamps are exactly regular (this also finds business days);
2. else, when the median difference is at least 27 days and all times are midnight, a calendar step of the
   median number of whole months, anchored on month ends or month starts when at least half of the timestamps
   are, or on the day of the month when all share it;
3. else the most common difference (the shorter on a tie).

Every timestamp must lie on the grid of that step through the series' span (else: an "irregular" error naming
the first one off it); grid points without a row are gaps, i.e. missing values. A series with a single
timestamp takes the step most common among the file's other series. The step maps to the zoo's period names
(:data:`.data.SEASONALITY`): 1, 3 and 12 months → ``MONTHLY``, ``QUARTERLY``, ``YEARLY``; 7 days, 1 day,
1 hour, 30, 10 and 1 minute(s) → ``WEEKLY``, ``DAILY``, ``HOURLY``, ``HALF_HOURLY``, ``10_MINUTES``,
``MINUTELY``; anything else (business days, 15 minutes, 2 days...) → ``OTHER``. Without timestamps the period
is ``OTHER``. The step is kept in ``Series.attrs["freq"]`` (a pandas alias such as ``ME``, ``MS``, ``W-SUN``,
``30min``, or ``DateOffset(months=k)`` for a fixed day of the month) for :func:`timestamps` and
:func:`future_timestamps`.

Lines with only empty cells are skipped, except in a one-column file where an empty line is an empty cell.
Missing values are empty cells, ``NA``, ``N/A``, ``NaN``, ``null`` or ``None`` (any case), and gaps in the
timestamps. Leading and trailing missing values of a series are dropped under every policy: a series is the
span it was observed in (trailing ones in a long file are logged, as they may be rows meant for the forecast).
Inner ones follow ``fill``:

- ``"error"`` (default): refuse, naming the series and the line (or the missing timestamp), because a forecast
  from silently repaired data is worse than no forecast;
- ``"interpolate"``: linear interpolation in time (by position when there are no timestamps), after re-indexing
  onto the regular grid so that gaps are interpolated too;
- ``"ffill"``: carry the last observed value forward, also across gaps.

Even when filling, a series whose grid would be more than half gaps is refused: that is a wrong step, not a few
missing readings.

Every problem raises one :class:`~zoo.errors.ZooValueError` line naming the file, the series and, where it
applies, the CSV line (line 1 is the header; lines are physical lines, so a quoted cell spanning lines shifts
them).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from zoo.errors import ZooValueError, check_arg

from .config import FILL_POLICIES
from .data import Series, seasonality

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

TIME_NAMES = ("timestamp", "date", "ds", "time")
VALUE_NAMES = ("value", "y")
ID_NAMES = ("id", "unique_id", "series")
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})
DEFAULT_ID = "series"

# Period names by step length, for steps of whole months and for fixed-length steps.
_MONTH_PERIODS = {12: "YEARLY", 3: "QUARTERLY", 1: "MONTHLY"}
_FIXED_PERIODS = {
    pd.Timedelta(days=7): "WEEKLY",
    pd.Timedelta(days=1): "DAILY",
    pd.Timedelta(hours=1): "HOURLY",
    pd.Timedelta(minutes=30): "HALF_HOURLY",
    pd.Timedelta(minutes=10): "10_MINUTES",
    pd.Timedelta(minutes=1): "MINUTELY",
}
_DAY_OF_MONTH = re.compile(r"DateOffset\(months=(\d+)\)")


# --------------------------------------------------------------------------------------------------------------
# Public API


def load_csv(path: PathLike, *, fill: str = "error") -> list[Series]:
    """Read every series of a user CSV (long or wide, see the module docstring) as full histories.

    Args:
        path: the CSV file (UTF-8, comma-separated, with a header).
        fill: what to do with inner missing values and gaps: ``"error"``, ``"interpolate"`` or ``"ffill"``.

    Returns:
        One :class:`Series` per series, in order of first appearance, with ``values`` = the whole observed span
        (after ``fill``), ``test=None``, ``horizon=None``, ``period``/``m`` from the inferred step (``OTHER``/1
        without timestamps), ``start`` = first timestamp in ISO format (None without timestamps) and
        ``attrs["freq"]`` = the step (absent without timestamps).

    Raises:
        ZooValueError: one line naming the file, series and CSV line of the first problem found.
    """
    check_arg(fill in FILL_POLICIES, "fill", fill, FILL_POLICIES)
    path = Path(path)
    header, cells = _read_cells(path)
    layout = _detect(path, header)
    raw = _split(path, header, cells, layout)
    inferred = {sid: _infer_step(r.times) for sid, r in raw.items() if r.times is not None and len(r.times) > 1}
    out = []
    for sid, r in raw.items():
        step, exact = inferred.get(sid, (None, False))
        if r.times is not None and step is None:
            step = _borrowed_step(path, sid, [st for st, _ in inferred.values()])
        out.append(_finish(path, sid, r, step, fill, exact=exact))
    return out


def timestamps(series: Series) -> pd.DatetimeIndex | None:
    """Timestamps of ``series.values`` (None when the series was read without timestamps)."""
    step = _step_of(series)
    if step is None:
        return None
    return _grid_from(pd.Timestamp(series.start), step, len(series.values))


def future_timestamps(series: Series, horizon: int) -> pd.DatetimeIndex | None:
    """The ``horizon`` timestamps that follow the last value of ``series`` on its step (None without timestamps).

    Month-end, month-start and same-day-of-month steps stay anchored (31 Jan → 29 Feb → 31 Mar for month ends).
    """
    check_arg(isinstance(horizon, int) and horizon >= 1, "horizon", horizon, "an integer >= 1")
    step = _step_of(series)
    if step is None:
        return None
    return _grid_from(pd.Timestamp(series.start), step, len(series.values) + horizon)[len(series.values):]


def format_timestamp(ts: pd.Timestamp, date_only: bool) -> str:
    """ISO text of a timestamp: ``2020-01-31`` when ``date_only``, else ``2020-01-31T12:30:00``."""
    return ts.strftime("%Y-%m-%d") if date_only else ts.isoformat()


def is_date_only(index: pd.DatetimeIndex) -> bool:
    """Whether every timestamp is at midnight, so that dates alone say everything (and read better)."""
    return bool((index == index.normalize()).all())


def check_length(series_list: Sequence[Series], min_len: int, what: str, *, purpose: str = "to train",
                 source: PathLike | None = None) -> None:
    """Refuse series shorter than ``min_len`` with one line saying what the length is needed for.

    ``check_length(series, 33, "lookback 15 + horizon 18")`` raises "series 'X' has 7 points; lookback 15 +
    horizon 18 = 33 are needed to train" (plus how many other series are short), prefixed with ``source``.
    """
    short = [s for s in series_list if len(s.values) < min_len]
    if not short:
        return
    first = short[0]
    more = f" ({len(short) - 1} more series are shorter too)" if len(short) > 1 else ""
    prefix = f"{source}: " if source is not None else ""
    raise ZooValueError(f"{prefix}series {first.id!r} has {len(first.values)} point(s); {what} = {min_len} are "
                        f"needed {purpose}{more}")


# --------------------------------------------------------------------------------------------------------------
# Reading and format detection


@dataclass
class _Layout:
    """Which header columns play which role; ``series_cols`` is set for wide files only."""

    kind: str  # "long" or "wide"
    time_col: int | None
    id_col: int | None = None
    value_col: int | None = None
    series_cols: tuple[int, ...] = ()


@dataclass
class _Raw:
    """One series after parsing: sorted by time, NaN where a value is missing."""

    values: np.ndarray
    times: pd.DatetimeIndex | None
    lines: np.ndarray


def _read_cells(path: Path) -> tuple[list[str], pd.DataFrame]:
    """Header (stripped) and the data cells as strings; data row ``i`` is on CSV line ``i + 2``."""
    if path.is_dir():
        raise ZooValueError(f"{path}: a directory; expected a CSV file")
    if not path.is_file():
        raise ZooValueError(f"{path}: no such file")
    try:
        table = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=False,
                            encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise ZooValueError(f"{path}: the file is empty; expected a CSV with a header") from None
    except pd.errors.ParserError as err:
        raise ZooValueError(f"{path}: not a valid CSV: {str(err).strip().splitlines()[-1]}") from None
    except UnicodeDecodeError:
        raise ZooValueError(f"{path}: not UTF-8 text") from None
    header = [str(c).strip() for c in table.iloc[0]]
    _refuse_short_rows(path, len(header))
    cells = table.iloc[1:].reset_index(drop=True)
    if cells.shape[1] > 1:  # blank lines; in a one-column file they are empty cells, i.e. missing values
        cells = cells[~(cells.apply(lambda col: col.str.strip()) == "").all(axis=1)]
    if cells.empty:
        raise ZooValueError(f"{path}: only a header ({','.join(header)}), no data rows")
    return header, cells


def _refuse_short_rows(path: Path, width: int) -> None:
    """A row with fewer fields than the header would read as missing values in its last columns: refuse it (an
    empty cell, ``a,,b``, is how a missing value is written). Blank lines are skipped."""
    import csv

    with path.open(encoding="utf-8-sig", newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if row and len(row) < width:
                raise ZooValueError(f"{path}:{line}: {len(row)} fields, but the header has {width}; write a missing "
                                    "value as an empty cell")


def _role(name: str) -> str | None:
    key = name.lower()
    for role, names in (("time", TIME_NAMES), ("value", VALUE_NAMES), ("id", ID_NAMES)):
        if key in names:
            return role
    return None


def _detect(path: Path, header: list[str]) -> _Layout:
    if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
        raise ZooValueError(f"{path}: the header {header[0]!r} looks separated by ';' or tabs; use commas")
    if any(not h for h in header):
        raise ZooValueError(f"{path}: column {header.index('') + 1} of the header has no name")
    lowered = [h.lower() for h in header]
    dup = next((h for i, h in enumerate(header) if lowered[i] in lowered[:i]), None)
    if dup is not None:
        raise ZooValueError(f"{path}: column {dup!r} appears twice in the header")
    if all(_is_number(h) for h in header):
        raise ZooValueError(f"{path}: the first line {','.join(header)!r} is all numbers; the file needs a header "
                            "(long: id,timestamp,value; wide: timestamp,<series>,...)")
    roles: dict[str, list[int]] = {}
    for i, h in enumerate(header):
        role = _role(h)
        if role is not None:
            roles.setdefault(role, []).append(i)
    for role, cols in roles.items():
        if len(cols) > 1:
            raise ZooValueError(f"{path}: columns {', '.join(repr(header[c]) for c in cols)} all mean {role}; "
                                "keep one")
    time_col = roles.get("time", [None])[0]
    if "value" in roles:
        extra = [h for i, h in enumerate(header) if _role(h) is None]
        if extra:
            raise ZooValueError(f"{path}: unexpected column(s) {', '.join(map(repr, extra))} in a long CSV; expected "
                                "id,timestamp,value (id and timestamp optional; timestamp may be "
                                "called date, ds or time, value y)")
        return _Layout("long", time_col, id_col=roles.get("id", [None])[0], value_col=roles["value"][0])
    if "id" in roles:
        raise ZooValueError(f"{path}: expected a header with a 'value' column (long format id,timestamp,value; "
                            f"'y' also works), got {','.join(header)}")
    series_cols = tuple(i for i in range(len(header)) if i != time_col)
    if not series_cols:
        raise ZooValueError(f"{path}: only a timestamp column; add one column per series (wide) or id,value (long)")
    return _Layout("wide", time_col, series_cols=series_cols)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------------------------
# Parsing cells


def _in_series(sids: str | np.ndarray | None, i: int) -> str:
    """`` (series 'X')`` for messages about row ``i``; nothing for a wide file's shared timestamp column."""
    if sids is None:
        return ""
    return f" (series {sids if isinstance(sids, str) else str(sids[i])!r})"


def _parse_values(path: Path, texts: pd.Series, lines: np.ndarray, sids: str | np.ndarray) -> np.ndarray:
    """Floats with NaN for missing tokens; the first non-numeric or infinite cell is an error naming its series
    (``sids``: the one series of the column, or the series of each row)."""
    raw = texts.str.strip()
    missing = raw.str.lower().isin(MISSING_TOKENS).to_numpy()
    numbers = pd.to_numeric(raw.where(~missing, "nan"), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~missing & ~np.isfinite(numbers)
    if bad.any():
        i = int(np.argmax(bad))
        what = "is not finite" if _is_number(raw.iloc[i]) else "is not a number"
        raise ZooValueError(f"{path}:{lines[i]}: value {raw.iloc[i]!r} {what}{_in_series(sids, i)}")
    return np.where(missing, np.nan, numbers)


def _parse_times(path: Path, texts: pd.Series, lines: np.ndarray, sids: str | np.ndarray | None) -> pd.DatetimeIndex:
    """The timestamp column, parsed as ISO 8601 or else in the one format pandas infers from its first cell."""
    texts = texts.str.strip()
    empty = (texts == "").to_numpy()
    if empty.any():
        i = int(np.argmax(empty))
        raise ZooValueError(f"{path}:{lines[i]}: empty timestamp{_in_series(sids, i)}")
    parsed = _to_datetime(texts, format="ISO8601")
    if parsed.isna().any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "could not infer format": reported below instead
            inferred = _to_datetime(texts)
        if inferred.isna().sum() < parsed.isna().sum():
            parsed = inferred
    if parsed.isna().any():
        i = int(np.argmax(parsed.isna().to_numpy()))
        raise ZooValueError(f"{path}:{lines[i]}: timestamp {texts.iloc[i]!r} is not a date in the format of the "
                            f"first one, {texts.iloc[0]!r}{_in_series(sids, i)}; use ISO dates like "
                            "2020-01-31, or drop the column to take rows in order")
    return pd.DatetimeIndex(parsed)


def _to_datetime(texts: pd.Series, **kwargs: str) -> pd.Series:
    """Timestamps or NaT; UTC when the cells carry different UTC offsets (daylight saving), which pandas would
    otherwise refuse."""
    try:
        return pd.to_datetime(texts, errors="coerce", **kwargs)
    except ValueError:
        return pd.to_datetime(texts, errors="coerce", utc=True, **kwargs)


def _split(path: Path, header: list[str], cells: pd.DataFrame, layout: _Layout) -> dict[str, _Raw]:
    """Parse the cells (whole columns at once, which is what keeps files of many series fast) and split them into
    series, in order of first appearance."""
    lines = cells.index.to_numpy() + 2
    if layout.kind == "wide":
        times = _parse_times(path, cells[layout.time_col], lines, None) if layout.time_col is not None else None
        return {header[c]: _tidy(path, header[c], _parse_values(path, cells[c], lines, header[c]), times, lines,
                                 layout) for c in layout.series_cols}
    if layout.id_col is None:
        sids: str | np.ndarray = DEFAULT_ID
        groups = {DEFAULT_ID: np.arange(len(cells))}
    else:
        ids = cells[layout.id_col].str.strip()
        empty = (ids == "").to_numpy()
        if empty.any():
            raise ZooValueError(f"{path}:{lines[int(np.argmax(empty))]}: empty {header[layout.id_col]!r} cell; every "
                                "row needs a series id")
        sids = ids.to_numpy(dtype=object)
        groups = ids.groupby(ids, sort=False).indices
    values = _parse_values(path, cells[layout.value_col], lines, sids)
    times = _parse_times(path, cells[layout.time_col], lines, sids) if layout.time_col is not None else None
    return {sid: _tidy(path, sid, values[rows], times[rows] if times is not None else None, lines[rows], layout)
            for sid, rows in groups.items()}


def _tidy(path: Path, sid: str, values: np.ndarray, times: pd.DatetimeIndex | None, lines: np.ndarray,
          layout: _Layout) -> _Raw:
    """Sort a series by time, refuse duplicate timestamps, drop leading and trailing missing values."""
    if times is not None:
        order = np.argsort(times.asi8, kind="stable")
        values, lines, times = values[order], lines[order], times[order]
        dup = times.duplicated(keep=False)
        if dup.any():
            i, j = np.flatnonzero(dup)[:2]  # sorted, so the first two flagged rows share their timestamp
            raise ZooValueError(f"{path}:{lines[j]}: duplicate timestamp {_show(times[j])} in series {sid!r} "
                                f"(also on line {lines[i]})")
    observed = np.flatnonzero(np.isfinite(values))
    if not len(observed):
        raise ZooValueError(f"{path}: series {sid!r} has no observed value")
    end = observed[-1] + 1
    if end < len(values) and layout.kind == "long":
        log.warning("%s: series %r ends with %d missing value(s); they are dropped", path, sid, len(values) - end)
    keep = slice(observed[0], end)
    return _Raw(values[keep], times[keep] if times is not None else None, lines[keep])


def _show(ts: pd.Timestamp) -> str:
    """A timestamp as people write it in messages: the date alone at midnight."""
    return format_timestamp(ts, ts == ts.normalize())


# --------------------------------------------------------------------------------------------------------------
# Steps (frequencies)


def _infer_step(ts: pd.DatetimeIndex) -> tuple[pd.DateOffset, bool]:
    """The step of a series' sorted timestamps (at least two; see the module docstring), and whether they are
    exactly regular on it (then they are their own grid, which saves building one)."""
    if len(ts) >= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas 3 announces that infer_freq will return an offset
            alias = pd.infer_freq(ts)
        if alias is not None:
            return to_offset(alias), True
    return _guess_step(ts), False


def _guess_step(ts: pd.DatetimeIndex) -> pd.DateOffset:
    """Steps 2 and 3 of the module docstring, for timestamps with gaps or odd ones out."""
    if (ts[1:] - ts[:-1]).median() >= pd.Timedelta(days=27):
        months = np.diff(ts.year.to_numpy() * 12 + ts.month.to_numpy())
        k = int(np.median(months))
        if k >= 1 and (ts == ts.normalize()).all():
            # A majority decides the anchor, so that the odd timestamp out is the one reported as irregular.
            if ts.is_month_end.mean() >= 0.5:
                return to_offset(f"{k}ME")
            if (ts.day == 1).mean() >= 0.5:
                return to_offset(f"{k}MS")
            if (ts.day == ts[0].day).all():
                return pd.DateOffset(months=k)
    diffs = pd.Series(ts[1:] - ts[:-1])
    step = diffs.mode().iloc[0]  # modes come sorted, so ties go to the shorter step
    if step % pd.Timedelta(days=1) == pd.Timedelta(0):
        return pd.offsets.Day(step.days)
    return to_offset(step)


def _borrowed_step(path: Path, sid: str, steps: list[pd.DateOffset]) -> pd.DateOffset:
    """The step most common among the other series, for a series with a single timestamp."""
    if not steps:
        raise ZooValueError(f"{path}: series {sid!r} has a single timestamp and no other series has two, so the "
                            "frequency cannot be inferred; add observations or drop the timestamp column")
    names = pd.Series([_step_text(s) for s in steps])
    return _parse_step(names.mode().iloc[0])


def _step_text(step: pd.DateOffset) -> str:
    if type(step) is pd.DateOffset:
        return f"DateOffset(months={step.kwds['months']})"
    return step.freqstr


def _parse_step(text: str) -> pd.DateOffset:
    match = _DAY_OF_MONTH.fullmatch(text)
    return pd.DateOffset(months=int(match.group(1))) if match else to_offset(text)


def _step_of(series: Series) -> pd.DateOffset | None:
    freq = series.attrs.get("freq")
    if freq is None or series.start is None:
        return None
    return _parse_step(freq)


def _months(step: pd.DateOffset) -> int | None:
    """Length of a calendar step in months, None for other steps."""
    o = pd.offsets
    if type(step) is pd.DateOffset:
        return int(step.kwds.get("months", 0)) + 12 * int(step.kwds.get("years", 0)) or None
    for classes, months in (((o.YearEnd, o.YearBegin, o.BYearEnd, o.BYearBegin), 12),
                            ((o.QuarterEnd, o.QuarterBegin, o.BQuarterEnd, o.BQuarterBegin), 3),
                            ((o.MonthEnd, o.MonthBegin, o.BusinessMonthEnd, o.BusinessMonthBegin), 1)):
        if isinstance(step, classes):
            return months * step.n
    return None


def period_of(step: pd.DateOffset) -> str:
    """The zoo's period name of a step (see the module docstring); ``OTHER`` when none fits."""
    months = _months(step)
    if months is not None:
        return _MONTH_PERIODS.get(months, "OTHER")
    if isinstance(step, pd.offsets.Week):
        return "WEEKLY" if step.n == 1 else "OTHER"
    try:
        length = pd.Timedelta(step)
    except (TypeError, ValueError):  # business days and other calendar-dependent steps
        return "OTHER"
    return _FIXED_PERIODS.get(length, "OTHER")


def _grid_from(start: pd.Timestamp, step: pd.DateOffset, n: int) -> pd.DatetimeIndex:
    if type(step) is pd.DateOffset:  # same day of the month: offsets from the start, so no day drift
        k = step.kwds["months"]
        return pd.DatetimeIndex([start + pd.DateOffset(months=k * i) for i in range(n)])
    return pd.date_range(start, periods=n, freq=step)


def _grid_between(start: pd.Timestamp, end: pd.Timestamp, step: pd.DateOffset) -> pd.DatetimeIndex:
    if type(step) is pd.DateOffset:
        k = step.kwds["months"]
        n = ((end.year - start.year) * 12 + end.month - start.month) // k + 1
        return _grid_from(start, step, n)
    return pd.date_range(start, end, freq=step)


# --------------------------------------------------------------------------------------------------------------
# Regular grid and missing values


def _finish(path: Path, sid: str, raw: _Raw, step: pd.DateOffset | None, fill: str, *, exact: bool) -> Series:
    """Put a parsed series on its regular grid, apply ``fill`` and build the :class:`Series` (``exact``: the
    timestamps are known to be their own grid)."""
    missing = ~np.isfinite(raw.values)
    if missing.any() and fill == "error":
        line = raw.lines[int(np.argmax(missing))]
        _refuse_missing(f"{path}:{line}", sid, "a missing value (an empty or NA cell)")
    if raw.times is None:
        return Series(id=sid, values=_fill(pd.Series(raw.values), fill), test=None, horizon=None, period="OTHER",
                      m=seasonality("OTHER"))
    assert step is not None
    ts = raw.times
    grid = ts if exact else _grid_between(ts[0], ts[-1], step)
    period = period_of(step)
    label = f"step {_step_text(step)!r} ({period.lower()})"
    off = ts.difference(grid)
    if len(off):
        line = raw.lines[ts.get_loc(off[0])]
        raise ZooValueError(f"{path}:{line}: irregular timestamps in series {sid!r}: {_show(off[0])} is not on the "
                            f"inferred {label} from {_show(ts[0])}")
    gaps = grid.difference(ts)
    if len(gaps) > len(ts):
        raise ZooValueError(f"{path}: series {sid!r} would be more than half gaps on the inferred {label} "
                            f"({len(gaps)} missing timestamps, first {_show(gaps[0])}); check its timestamps")
    if len(gaps) and fill == "error":
        after = raw.lines[int(ts.searchsorted(gaps[0]))]
        _refuse_missing(f"{path}:{after}", sid, f"a gap before this line: no row for {_show(gaps[0])} on the inferred "
                                                f"{label}")
    values = _fill(pd.Series(raw.values, index=ts).reindex(grid), fill)
    return Series(id=sid, values=values, test=None, horizon=None, period=period, m=seasonality(period),
                  start=format_timestamp(ts[0], is_date_only(ts)), attrs={"freq": _step_text(step)})


def _refuse_missing(where: str, sid: str, what: str) -> None:
    raise ZooValueError(f"{where}: series {sid!r} has {what}; pass fill='interpolate' or 'ffill' (zoo predict: "
                        "--fill) to fill missing values")


def _fill(values: pd.Series, fill: str) -> np.ndarray:
    """Fill inner NaN (both ends are observed): forward, or linearly in time (DatetimeIndex) or by position."""
    if values.notna().all():
        return values.to_numpy(dtype=np.float64)
    if fill == "ffill":
        values = values.ffill()
    else:
        values = values.interpolate(method="time" if isinstance(values.index, pd.DatetimeIndex) else "linear")
    return values.to_numpy(dtype=np.float64)
