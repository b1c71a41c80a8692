"""Qlib-style features and label for a stock panel: an Alpha158 subset, the next-day return label, and the
processors Qlib's Alpha158 workflows use (robust z-score fitted on the training days, clipped; label z-scored
per day).

Everything is computed on wide ``[day, instrument]`` frames over the panel's calendar (the union of its days),
as Qlib aligns every instrument to the market calendar: a day an instrument did not trade is NaN, and a rolling
window that covers it is NaN too. Every operator looks backwards only (``rolling``, ``shift(+d)``), so a
feature of day t uses prices up to t; only the label looks ahead (``tests/tasks/stocks/test_stocks_features.py``
proves both).

Feature list (Qlib's Alpha158 names and definitions, ``tasks/stocks/features.py:FEATURES``):

* K-bar, 9: KMID (close−open)/open, KLEN (high−low)/open, KMID2 (close−open)/(high−low), KUP, KUP2, KLOW, KLOW2,
  KSFT, KSFT2 (upper/lower shadows and their balance, over open or over the day's range);
* price, 3: OPEN0, HIGH0, LOW0 = open/high/low over close;
* for each window d ∈ {5, 10, 20, 60}, 13: ROC (close d days ago / close), MA, STD (mean, std of close / close),
  MAX (max high / close), MIN (min low / close), QTLU, QTLD (80 % and 20 % quantiles of close / close), RSV
  ((close − min low) / (max high − min low)), CNTD (share of up days − share of down days), SUMD (sum of gains −
  sum of losses over sum of absolute moves), CORR (correlation of close with log volume), VMA, VSTD (mean and
  std of volume over today's volume).

Close-only panels (no open/high/low) keep the 28 features that need only the close; panels without volume drop
the volume features. Label: ``Ref(close, −2) / Ref(close, −1) − 1`` — bought at the next close, sold at the one
after — z-scored across the day's instruments for training (IC is unchanged by that); the raw return is kept
for the backtest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from zoo.errors import ZooValueError

WINDOWS = (5, 10, 20, 60)
EPS = 1e-12
CLIP = 3.0  # RobustZScoreNorm(clip_outlier=True) clips at ±3

Wide = dict[str, pd.DataFrame]  # field (open, high, low, close, volume) → [day, instrument]


def _kbar(f: Wide) -> dict[str, pd.DataFrame]:
    o, h, low, c = f["open"], f["high"], f["low"], f["close"]
    rng = h - low + EPS
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    return {
        "KMID": (c - o) / o,
        "KLEN": (h - low) / o,
        "KMID2": (c - o) / rng,
        "KUP": (h - top) / o,
        "KUP2": (h - top) / rng,
        "KLOW": (bottom - low) / o,
        "KLOW2": (bottom - low) / rng,
        "KSFT": (2 * c - h - low) / o,
        "KSFT2": (2 * c - h - low) / rng,
        "OPEN0": o / c,
        "HIGH0": h / c,
        "LOW0": low / c,
    }


def _close_window(f: Wide, d: int) -> dict[str, pd.DataFrame]:
    c = f["close"]
    roll = c.rolling(d, min_periods=d)
    move = c - c.shift(1)
    up, down = (move > 0).astype(float).where(move.notna()), (move < 0).astype(float).where(move.notna())
    gains, losses = move.clip(lower=0).rolling(d, min_periods=d).sum(), (-move).clip(lower=0).rolling(d, min_periods=d).sum()
    return {
        f"ROC{d}": c.shift(d) / c,
        f"MA{d}": roll.mean() / c,
        f"STD{d}": roll.std() / c,
        f"QTLU{d}": roll.quantile(0.8) / c,
        f"QTLD{d}": roll.quantile(0.2) / c,
        f"CNTD{d}": up.rolling(d, min_periods=d).mean() - down.rolling(d, min_periods=d).mean(),
        f"SUMD{d}": (gains - losses) / (gains + losses + EPS),
    }


def _range_window(f: Wide, d: int) -> dict[str, pd.DataFrame]:
    c = f["close"]
    hi, lo = f["high"].rolling(d, min_periods=d).max(), f["low"].rolling(d, min_periods=d).min()
    return {f"MAX{d}": hi / c, f"MIN{d}": lo / c, f"RSV{d}": (c - lo) / (hi - lo + EPS)}


def _volume_window(f: Wide, d: int) -> dict[str, pd.DataFrame]:
    c, v = f["close"], f["volume"]
    vol_roll = v.rolling(d, min_periods=d)
    return {
        f"CORR{d}": c.rolling(d, min_periods=d).corr(np.log(v + 1)),
        f"VMA{d}": vol_roll.mean() / (v + EPS),
        f"VSTD{d}": vol_roll.std() / (v + EPS),
    }


@dataclass(frozen=True)
class FeatureGroup:
    needs: tuple[str, ...]
    build: Callable[[Wide], dict[str, pd.DataFrame]]


GROUPS = [
    FeatureGroup(("open", "high", "low"), _kbar),
    *(FeatureGroup((), lambda f, d=d: _close_window(f, d)) for d in WINDOWS),
    *(FeatureGroup(("high", "low"), lambda f, d=d: _range_window(f, d)) for d in WINDOWS),
    *(FeatureGroup(("volume",), lambda f, d=d: _volume_window(f, d)) for d in WINDOWS),
]


def wide_fields(prices: pd.DataFrame) -> Wide:
    """``[day, instrument]`` frames of each price field over the panel's calendar (the union of its days)."""
    wide = prices.pivot(index="date", columns="instrument")
    return {name: wide[name].astype("float64") for name in ("open", "high", "low", "close", "volume")}


def available(fields: Wide) -> set[str]:
    """The optional fields the panel has: a field that is NaN everywhere counts as absent."""
    return {name for name in ("open", "high", "low", "volume") if fields[name].notna().to_numpy().any()}


def alpha158(fields: Wide) -> dict[str, pd.DataFrame]:
    """Every feature of the subset the panel's fields allow, as ``[day, instrument]`` frames (raw, unscaled)."""
    have = available(fields)
    out: dict[str, pd.DataFrame] = {}
    for group in GROUPS:
        if set(group.needs) <= have:
            out.update(group.build(fields))
    return {name: frame.replace([np.inf, -np.inf], np.nan) for name, frame in out.items()}


def next_return(close: pd.DataFrame) -> pd.DataFrame:
    """Qlib's label ``Ref(close, −2) / Ref(close, −1) − 1``: the return of buying at the next close."""
    return close.shift(-2) / close.shift(-1) - 1


def cs_zscore(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-day (row) z-score across instruments, NaN-aware (Qlib's CSZScoreNorm)."""
    mean, std = frame.mean(axis=1), frame.std(axis=1)
    return frame.sub(mean, axis=0).div(std.where(std > 0), axis=0)


@dataclass
class RobustScaler:
    """Qlib's RobustZScoreNorm: ``(x − median) / (1.4826 · MAD)`` per feature, fitted on training days only,
    then clipped to ±3; NaN (missing history) becomes 0 afterwards (Qlib's Fillna)."""

    median: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> RobustScaler:
        """``values[..., F]``: every training (day, instrument) row."""
        flat = values.reshape(-1, values.shape[-1])
        median = np.nanmedian(flat, axis=0)
        mad = np.nanmedian(np.abs(flat - median), axis=0) * 1.4826
        median = np.where(np.isfinite(median), median, 0.0)
        return cls(median, np.where(np.isfinite(mad) & (mad > EPS), mad, 1.0))

    @classmethod
    def from_arrays(cls, median: ArrayLike, scale: ArrayLike) -> RobustScaler:
        """The scaler of stored statistics (a model's info: numpy or CPU torch arrays), never refitted."""
        return cls(np.asarray(median, dtype=np.float64), np.asarray(scale, dtype=np.float64))

    def transform(self, values: np.ndarray) -> np.ndarray:
        scaled = np.clip((values - self.median) / self.scale, -CLIP, CLIP)
        return np.nan_to_num(scaled, nan=0.0).astype(np.float32)


@dataclass
class FeatureSet:
    """Features, labels and tradability of a panel, as dense arrays over ``[day, instrument]``.

    ``x[day, inst, F]`` raw features (NaN where undefined); ``label``: z-scored next return (NaN where the
    return or the day's cross-section is undefined); ``ret``: the raw next return; ``tradable``: the instrument
    has a close that day and did not have zero volume (a suspension); days and instruments label the axes.
    """

    days: pd.DatetimeIndex
    instruments: pd.Index
    names: list[str]
    x: np.ndarray
    label: np.ndarray
    ret: np.ndarray
    tradable: np.ndarray


def build_features(prices: pd.DataFrame) -> FeatureSet:
    """Features, label and tradability of a validated long price frame (see ``panel.validate_prices``)."""
    if prices.empty:
        raise ZooValueError("the price panel is empty")
    fields = wide_fields(prices)
    feats = alpha158(fields)
    if not feats:
        raise ZooValueError("no feature can be computed: the panel needs at least a close price")
    close = fields["close"]
    ret = next_return(close)
    tradable = close.notna()
    if "volume" in available(fields):
        tradable &= ~(fields["volume"] == 0)
    label = cs_zscore(ret.where(tradable))
    names = list(feats)
    x = np.stack([feats[n].to_numpy(np.float64) for n in names], axis=-1)
    return FeatureSet(close.index, close.columns, names, x, label.to_numpy(), ret.to_numpy(), tradable.to_numpy())


def chronological_split(days: pd.DatetimeIndex, fractions: tuple[float, float, float], first: int = 0) -> dict[str, np.ndarray]:
    """Day indices of train/valid/test: consecutive blocks in time, after skipping ``first`` warm-up days.

    The last two days of a block carry labels that look into the next block (the label needs two closes ahead),
    so they are dropped from train and valid: no training label is computed from a validation or test price.
    """
    total = len(days) - first
    if total < 10:
        raise ZooValueError(f"only {total} days after the {first}-day warm-up: too few to split into train/valid/test")
    n_train = int(round(total * fractions[0]))
    n_valid = int(round(total * fractions[1]))
    idx = np.arange(first, len(days))
    train, valid, test = idx[:n_train], idx[n_train:n_train + n_valid], idx[n_train + n_valid:]
    return {"train": train[:-2], "valid": valid[:-2], "test": test}
