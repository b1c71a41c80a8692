"""Signal metrics of the stocks task, as Qlib reports them: IC, ICIR, Rank IC, Rank ICIR, plus routing NMI.

Input is a long panel: one row per (``date``, ``instrument``) with the model's ``score`` and the ``label`` (Qlib's
next-next-day return ``close[t+2]/close[t+1] − 1``, raw or z-scored per day: a per-day affine rescaling leaves the
correlation unchanged).

- **IC** of a day: Pearson correlation of score and label across that day's stocks. **Rank IC**: the same on
  per-day average ranks (ties share the mean of their ranks), i.e. Spearman's correlation.
- A day with fewer than 2 rows where both score and label are present, or where either column is constant over
  those rows, has no defined correlation: :func:`daily_ic` gives NaN for it and :func:`ic_summary` leaves it out.
  A column is constant exactly when its ranks are, so IC and Rank IC are NaN on the same days.
- **ICIR** = mean / standard deviation (``ddof=1``, as Qlib and pandas use) of the daily series over the days
  kept; NaN with fewer than 2 such days or a zero deviation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import normalized_mutual_info_score

from zoo.errors import ZooValueError, check_arg

METHODS = ("pearson", "spearman")
IC_COLUMNS = ("date", "score", "label")


def _require_columns(df: pd.DataFrame, need: tuple[str, ...]) -> None:
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ZooValueError(f"the panel lacks the columns {missing}; expected {list(need)} (got {list(df.columns)})")


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation, NaN when either side is constant (checked exactly: centring a constant column can
    leave rounding noise that would otherwise turn into a spurious ±1)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    return float(xc @ yc / np.sqrt((xc @ xc) * (yc @ yc)))


def _day_ic(day: pd.DataFrame, method: str) -> float:
    pairs = day[["score", "label"]].dropna()
    if len(pairs) < 2:
        return float("nan")
    if method == "spearman":
        pairs = pairs.rank(method="average")
    return _correlation(pairs["score"].to_numpy(np.float64), pairs["label"].to_numpy(np.float64))


def daily_ic(df: pd.DataFrame, method: str = "pearson") -> pd.Series:
    """Cross-sectional correlation of ``score`` and ``label`` per day, indexed by date in ascending order.

    ``method="pearson"`` gives the IC, ``"spearman"`` the Rank IC. Undefined days are NaN, not dropped, so the
    series still shows which days were unusable (see the module docstring).
    """
    check_arg(method in METHODS, "method", method, METHODS)
    _require_columns(df, IC_COLUMNS)
    values = {date: _day_ic(day, method) for date, day in df.groupby("date", sort=True)}
    return pd.Series(values, dtype=np.float64, name="rank_ic" if method == "spearman" else "ic").rename_axis("date")


def _mean_and_ir(daily: pd.Series) -> tuple[float, float]:
    kept = daily.dropna()
    mean = float(kept.mean()) if len(kept) else float("nan")
    std = float(kept.std(ddof=1)) if len(kept) >= 2 else float("nan")
    return mean, (mean / std if std > 0 else float("nan"))


def ic_summary(df: pd.DataFrame) -> dict[str, float]:
    """Qlib's signal report: ``ic``, ``icir``, ``rank_ic``, ``rank_icir`` and ``days``, the number of days with a
    defined IC (the same days for both kinds, see the module docstring)."""
    ic = daily_ic(df, "pearson")
    rank_ic = daily_ic(df, "spearman")
    ic_mean, icir = _mean_and_ir(ic)
    rank_mean, rank_icir = _mean_and_ir(rank_ic)
    return {"ic": ic_mean, "icir": icir, "rank_ic": rank_mean, "rank_icir": rank_icir, "days": int(ic.notna().sum())}


def routing_nmi(assigned: ArrayLike, truth: ArrayLike) -> float:
    """Normalized mutual information (arithmetic normalisation) between the experts a router picked and the true
    groups (styles, sectors): 1 when the routing recovers the groups up to relabelling, about 0 when unrelated.

    Both arguments are 1-D sequences of labels of any hashable kind, one per sample.
    """
    assigned, truth = np.asarray(assigned).reshape(-1), np.asarray(truth).reshape(-1)
    if len(assigned) != len(truth):
        raise ZooValueError(f"assigned and truth differ in length: {len(assigned)} vs {len(truth)}")
    if len(assigned) == 0:
        raise ZooValueError("assigned and truth are empty; NMI needs at least one sample")
    return float(normalized_mutual_info_score(truth, assigned, average_method="arithmetic"))
