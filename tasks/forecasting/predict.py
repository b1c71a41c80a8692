"""``zoo predict forecasting``: forecast users' own series with trained weights, with empirical intervals.

Input: a CSV read by :func:`.csvio.load_csv` (long ``id,timestamp,value``, ``id,value`` or ``value``; or wide,
one column per series; see that module for the formats, frequencies and the ``fill`` policy for missing values).

The lookback ``L``, the trained horizon ``H`` and the training frequency come from the model info (what weights
carry beside their tensors), so nothing of the training data is read.

Point forecasts: each series is fed its last ``L`` values (``L`` = the model's lookback), scaled by their mean
absolute value exactly as in training, and the model's direct forecast of the next ``H`` steps is scaled back.
A series shorter than ``L`` is left-padded with its first value, as the training windows of short series are;
that is logged as a warning and said in the plot, because such a forecast rests on invented history.

Intervals (``lo<level>``/``hi<level>`` for each ``level`` entry, default 80 and 95) are empirical, from the
model's own errors on each series' history, not from a probabilistic model:

1. Backtest: for each series of ``n`` points and each origin ``t`` with a full input window and a complete
   target (``L <= t <= n - H``), the latest :data:`MAX_ORIGINS` of them one step apart, forecast
   ``values[t:t+H]`` from ``values[t-L:t]`` and keep the absolute error of every step ``k`` divided by that input
   window's scale (its mean absolute value).
2. A series with at least :data:`MIN_OWN_ORIGINS` origins uses its own errors; a shorter one uses the errors of
   all series of the file pooled together (a series too short for any origin contributes nothing to the pool).
3. The half-width at step ``k`` is the ``level``-% empirical quantile (numpy's linear interpolation) of the
   step-``k`` scaled errors, times the scale of the series' final input window; the interval is
   ``forecast ± half-width``. Quantiles of the same errors grow with the level, so the bands are nested.

So they are symmetric and describe how far this model has recently been off on series like these; they are not
calibrated probabilities (few origins, overlapping targets, errors in the model's training period for public
data). When no series of the file has ``L + H`` points, there is nothing to measure and the interval cells are
left empty, with a warning. A forecast that is not finite is an error, never a NaN in the output.

Outputs: the rows (one dict per series and step: ``id, step, timestamp, forecast, lo80, hi80, lo95, hi95``;
``timestamp`` None when the input has none), optionally written as CSV (empty cells for None) and a PNG fan chart.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from zoo.errors import ZooValueError
from zoo.io import atomic_write_bytes

from .config import FILL_POLICIES
from .csvio import format_timestamp, future_timestamps, is_date_only, load_csv, timestamps
from .data import Series, window_scale
from .evaluation import model_forecasts

log = logging.getLogger(__name__)

DEFAULT_LEVELS: tuple[float, ...] = (80.0, 95.0)
MAX_ORIGINS = 10  # backtest origins per series (the latest ones), for the interval errors
MIN_OWN_ORIGINS = 5  # a series with fewer origins takes the errors pooled over the file's series
MAX_PLOTTED = 12  # small multiples in the PNG; more would be unreadable
_BATCH = 4096  # windows per forward pass


@dataclass
class SeriesForecast:
    """The forecast of one series, in original units.

    Attributes:
        series: the input series (its full history).
        mean: float64 ``[h]`` point forecast.
        bounds: ``{level: (lo [h], hi [h])}``; empty when no interval could be estimated.
        history_time, future_time: timestamps of the history and of the forecast steps (None without timestamps).
        padded: the series was shorter than the lookback and was left-padded with its first value.
        pooled: its intervals come from the file's pooled errors (too short for its own backtest).
    """

    series: Series
    mean: np.ndarray
    bounds: dict[float, tuple[np.ndarray, np.ndarray]]
    history_time: pd.DatetimeIndex | None
    future_time: pd.DatetimeIndex | None
    padded: bool
    pooled: bool


def predict(
    loaded: Any,
    input_path: str | Path,
    *,
    out: str | Path | None = None,
    horizon: int | None = None,
    plot: str | Path | None = None,
    fill: str = "error",
    level: Sequence[float] = DEFAULT_LEVELS,
) -> list[dict]:
    """Forecast every series of a CSV with a loaded model; optionally write the rows as CSV and a fan chart PNG.

    Args:
        loaded: a :class:`zoo.task.LoadedModel` of the forecasting task; its ``info`` gives the lookback, the
            trained horizon and the training frequency (no data set is read).
        input_path: the CSV (formats: :mod:`.csvio`).
        out: CSV path for the rows (columns ``id,step,timestamp,forecast`` then ``lo<l>,hi<l>`` per level).
        horizon: steps ahead, 1 to the trained horizon (default the trained horizon; the model is direct).
        plot: PNG path for a grid of fan charts (at most :data:`MAX_PLOTTED` series).
        fill: missing-value policy of :func:`.csvio.load_csv`.
        level: interval levels in percent, each strictly between 0 and 100.

    Returns:
        One dict per series and step, in input order, with the CSV's columns as keys (``timestamp`` and the
        interval bounds None where unknown).

    Raises:
        ZooValueError: bad horizon, level, fill or input, or a non-finite forecast; nothing is written then.
    """
    info = loaded.info
    trained_h, lookback = info["horizon"], info["lookback"]
    horizon = trained_h if horizon is None else horizon
    if not 1 <= horizon <= trained_h:
        raise ZooValueError(f"--horizon={horizon} is not allowed; this model forecasts 1..{trained_h} steps directly")
    if fill not in FILL_POLICIES:
        raise ZooValueError(f"--fill={fill!r} is not allowed; expected one of {', '.join(FILL_POLICIES)}")
    levels = _check_levels(level)
    series = load_csv(input_path, fill=fill)
    _warn_other_frequency(series, info["period"])
    results = forecast_series(loaded.module.model, series, lookback, horizon, levels)
    rows = _rows(results, levels)
    payloads: list[tuple[str | Path, bytes]] = []
    if out:
        payloads.append((out, _csv_text(rows, levels).encode("utf-8")))
    if plot:
        payloads.append((plot, _plot_png(results, levels, lookback, horizon)))
    for path, data in payloads:  # both are built before either is written: a failure leaves no partial output
        atomic_write_bytes(path, data)
    return rows


def _warn_other_frequency(series: Sequence[Series], period: str) -> None:
    """Warn when the input's frequency differs from the training one: the model's lags then mean other times
    (``OTHER``, an unknown frequency, is never compared)."""
    other = [s for s in series if "OTHER" not in (s.period, period) and s.period != period]
    if other:
        log.warning("%d series are %s but the model was trained on %s series (e.g. %r); its forecasts assume the "
                    "patterns of %s data", len(other), other[0].period, period, other[0].id, period)


def forecast_series(model: torch.nn.Module, series: Sequence[Series], lookback: int, horizon: int,
                    levels: Sequence[float] = DEFAULT_LEVELS) -> list[SeriesForecast]:
    """Point forecasts and empirical intervals (see the module docstring) of the next ``horizon`` steps."""
    model.eval()
    windows = np.stack([_last_window(s.values, lookback) for s in series])
    mean, scale = _forecast(model, windows, horizon)
    bad = ~np.isfinite(mean).all(axis=1)
    if bad.any():
        s = series[int(np.argmax(bad))]
        raise ZooValueError(f"the forecast of series {s.id!r} is not finite (its largest |value| is "
                            f"{np.abs(s.values).max():.3g}); check the input for extreme values")
    padded = [s for s in series if len(s.values) < lookback]
    if padded:
        log.warning("%d series are shorter than the lookback L=%d and were left-padded with their first value "
                    "(e.g. %r with %d points); their forecasts rest on invented history", len(padded), lookback,
                    padded[0].id, len(padded[0].values))
    errors = backtest_errors(model, series, lookback, horizon)
    measured = [e for e in errors if len(e)]
    pooled = np.concatenate(measured) if measured else None
    if pooled is None:
        log.warning("no series has the L + H = %d points a backtest needs; the interval columns are left empty",
                    lookback + horizon)
    results = []
    for i, s in enumerate(series):
        own = len(errors[i]) >= MIN_OWN_ORIGINS
        bounds: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        if own or pooled is not None:
            q = np.quantile(errors[i] if own else pooled, np.asarray(levels) / 100.0, axis=0)  # [levels, h]
            for level, width in zip(levels, q * scale[i]):
                bounds[level] = (mean[i] - width, mean[i] + width)
            if not all(np.isfinite(b).all() for b in bounds.values()):
                raise ZooValueError(f"the intervals of series {s.id!r} are not finite; check the input for "
                                    "extreme values")
        results.append(SeriesForecast(
            series=s,
            mean=mean[i],
            bounds=bounds,
            history_time=timestamps(s),
            future_time=future_timestamps(s, horizon),
            padded=len(s.values) < lookback,
            pooled=bool(bounds) and not own,
        ))
    return results


def backtest_errors(model: torch.nn.Module, series: Sequence[Series], lookback: int, horizon: int,
                    max_origins: int = MAX_ORIGINS) -> list[np.ndarray]:
    """Scaled absolute errors ``[origins, horizon]`` of each series' latest ``max_origins`` backtest forecasts
    (origins ``L <= t <= n - H``, one step apart; ``[0, horizon]`` when the series is too short)."""
    xs, ys, owner = [], [], []
    for i, s in enumerate(series):
        n = len(s.values)
        for t in range(max(lookback, n - horizon - max_origins + 1), n - horizon + 1):
            xs.append(s.values[t - lookback : t])
            ys.append(s.values[t : t + horizon])
            owner.append(i)
    out = [np.zeros((0, horizon)) for _ in series]
    if not xs:
        return out
    pred, scale = _forecast(model, np.stack(xs), horizon)
    err = np.abs(np.stack(ys) - pred) / scale[:, None]
    owner_arr = np.asarray(owner)
    if not np.isfinite(err).all():
        s = series[int(owner_arr[np.argmax(~np.isfinite(err).all(axis=1))])]
        raise ZooValueError(f"a backtest forecast of series {s.id!r} is not finite; check the input for extreme "
                            "values")
    for i in np.unique(owner_arr):
        out[i] = err[owner_arr == i]
    return out


def _last_window(values: np.ndarray, lookback: int) -> np.ndarray:
    """The last ``lookback`` values, left-padded with the first value when the series is shorter (as training)."""
    pad = lookback - len(values)
    return np.concatenate([np.full(pad, values[0]), values]) if pad > 0 else values[-lookback:]


def _forecast(model: torch.nn.Module, windows: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Forecasts ``[N, horizon]`` in original units and the window scales ``[N]``."""
    scale = window_scale(windows)
    return model_forecasts(model, windows / scale[:, None], scale, batch_size=_BATCH)[:, :horizon], scale


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(v) for v in levels)
    bad = next((v for v in values if not 0 < v < 100), None)
    if not values or bad is not None:
        raise ZooValueError(f"--level {'(none)' if bad is None else f'{bad:g}'} is not allowed; expected percentages "
                            "strictly between 0 and 100, e.g. --level 80,95")
    if len(set(values)) != len(values):
        raise ZooValueError(f"--level {','.join(f'{v:g}' for v in values)} repeats a level")
    return tuple(sorted(values))


def _columns(levels: Sequence[float]) -> list[str]:
    return ["id", "step", "timestamp", "forecast"] + [f"{side}{lv:g}" for lv in levels for side in ("lo", "hi")]


def _rows(results: Sequence[SeriesForecast], levels: Sequence[float]) -> list[dict]:
    rows = []
    for r in results:
        date_only = r.history_time is not None and is_date_only(r.history_time)
        for k in range(len(r.mean)):
            row: dict[str, Any] = {
                "id": r.series.id,
                "step": k + 1,
                "timestamp": format_timestamp(r.future_time[k], date_only) if r.future_time is not None else None,
                "forecast": float(r.mean[k]),
            }
            for level in levels:
                lo, hi = r.bounds[level] if r.bounds else (None, None)
                row[f"lo{level:g}"] = float(lo[k]) if lo is not None else None
                row[f"hi{level:g}"] = float(hi[k]) if hi is not None else None
            rows.append(row)
    return rows


def _csv_text(rows: Sequence[dict], levels: Sequence[float]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(levels), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)  # None is written as an empty cell
    return buffer.getvalue()


def _plot_png(results: Sequence[SeriesForecast], levels: Sequence[float], lookback: int, horizon: int) -> bytes:
    """Small multiples of fan charts: the recent history, the forecast and its nested interval bands."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    shown = results[:MAX_PLOTTED]
    ncols = 1 if len(shown) == 1 else 2 if len(shown) <= 4 else 3
    nrows = math.ceil(len(shown) / ncols)
    width, height = 4.8 * ncols, 2.7 * nrows + 1.3
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    keep = max(lookback, 3 * horizon)  # history shown: enough to judge the forecast, not the whole past
    for ax, r in zip(axes, shown):
        values = r.series.values[-keep:]
        n = len(r.series.values)
        if r.history_time is not None:
            x_hist = r.history_time[-keep:].to_numpy()
            x_fut = r.future_time.to_numpy()  # type: ignore[union-attr]
            locator = AutoDateLocator()
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        else:
            x_hist = np.arange(n - len(values) + 1, n + 1)
            x_fut = np.arange(n + 1, n + horizon + 1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for i, level in enumerate(sorted(r.bounds, reverse=True)):  # widest first, so narrower bands sit on top
            lo, hi = r.bounds[level]
            ax.fill_between(x_fut, lo, hi, color="tab:blue", alpha=0.18 + 0.17 * i, linewidth=0, label=f"{level:g}%")
        ax.plot(x_hist, values, color="0.25", linewidth=1.2, label="history")
        ax.plot(np.concatenate([x_hist[-1:], x_fut]), np.concatenate([values[-1:], r.mean]), color="tab:blue",
                linewidth=1.6, label="forecast")
        title = str(r.series.id)
        if r.padded:
            title += f" (padded: {n} < L={lookback} points)"
        elif r.pooled:
            title += " (pooled intervals)"
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="upper left")
    capped = f"; showing the first {len(shown)} of {len(results)} series" if len(results) > len(shown) else ""
    fig.suptitle(f"Forecast, {horizon} steps ahead{capped}", fontsize=11)
    bands = "/".join(f"{lv:g}%" for lv in levels)
    note = textwrap.wrap(f"Bands: empirical {bands} intervals from the model's backtest errors on the history (not "
                         f"calibrated probabilities). History: last {keep} points at most.", width=int(16 * width))
    # Margins in inches, whatever the grid: the panels are laid out first, then the shared labels and the note
    # are placed in the margins left for them.
    label_y = (0.1 + 0.12 * len(note)) / height
    fig.tight_layout(rect=(0.3 / width, label_y + 0.2 / height, 1, 1))  # it leaves room for the suptitle
    fig.text(0.01, 0.05 / height, "\n".join(note), fontsize=7, color="0.35", va="bottom")
    timed = any(r.history_time is not None for r in shown)
    fig.supxlabel("time" if timed else "step (position in the series)", fontsize=9, y=label_y, va="bottom")
    fig.supylabel("value (the input's units)", fontsize=9, x=0.05 / width, ha="left")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
