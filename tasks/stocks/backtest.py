"""TopK-dropout backtest of the stocks task (Qlib's ``TopkDropoutStrategy`` on an equal-weight book) and its risk
report.

Input is a long panel, one row per (``date``, ``instrument``), with the model's ``score`` and ``ret``, the raw return
``close[t+2]/close[t+1] − 1`` that a position chosen with the day-``t`` score earns (Qlib's timing: signal at day
``t``, trade at ``t+1``'s close, hold to ``t+2``'s close). Rows may come in any order; days are replayed in date
order and the decision of a day uses that day's scores only.

Rules of one day (Qlib's ``method_sell="bottom"``, ``method_buy="top"``):

1. ``candidates`` = the best ``n_drop + topk − len(held)`` non-held stocks by score (so the first day buys the
   top ``topk``).
2. ``combined`` = the scored held stocks and the candidates, best first; the held stocks among the last ``n_drop``
   of ``combined`` are sold, so a held stock is only dropped for a better-ranked candidate.
3. The best candidates are bought, as many as were sold plus the open slots ``topk − len(held)``.

Zoo conventions where Qlib's exchange simulation has no direct equivalent:

- Every position weighs ``1/topk`` every day (no price drift between trades); ``portfolio`` is the mean ``ret``
  of the held stocks, and a held stock whose ``ret`` is NaN contributes 0 that day.
- A held stock with no score that day (no row, or a NaN score: suspended or missing) is kept and cannot be sold
  that day; it still fills its slot. Only stocks with a score form the day's universe, which must hold at least
  ``topk`` of them.
- Qlib can sell more stocks than it can replace when a day has fewer than ``topk + n_drop`` scored stocks, leaving
  cash. Here the sells are capped at the number of candidates free to replace them (the worst-ranked go first),
  so the book always holds ``topk`` stocks; with ``topk + n_drop`` or more scored stocks the two agree.
- ``turnover`` = (number bought + number sold) / ``topk``: the traded value over the book's value, as in Qlib's
  report (the first day's full buy is 1, a swap of one stock is ``2/topk``).
- ``cost`` = (bought · ``open_cost`` + sold · ``close_cost``) / ``topk``, a fraction of the book's value.
- Score ties are broken by instrument name, so results do not depend on row order.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from zoo.errors import ZooValueError, check_arg

BACKTEST_COLUMNS = ("date", "instrument", "score", "ret")
QLIB_PERIODS = 238  # trading days per year in Qlib's risk_analysis; 252 is the usual figure elsewhere


def _check_book(topk: int, n_drop: int) -> None:
    check_arg(topk >= 1, "topk", topk, "an integer >= 1")
    check_arg(0 <= n_drop <= topk, "n_drop", n_drop, f"an integer from 0 to topk={topk}")


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """The panel's needed columns sorted by date then instrument, after checking they exist and are unique."""
    missing = [c for c in BACKTEST_COLUMNS if c not in df.columns]
    if missing:
        raise ZooValueError(f"the panel lacks the columns {missing}; expected {list(BACKTEST_COLUMNS)}")
    if df.empty:
        raise ZooValueError("the panel has no rows; the backtest needs at least one day")
    dup = df.duplicated(["date", "instrument"])
    if dup.any():
        first = df.loc[dup].iloc[0]
        raise ZooValueError(f"{int(dup.sum())} duplicated (date, instrument) rows, e.g. "
                            f"({first['date']}, {first['instrument']}); each stock needs one row per day")
    return df[list(BACKTEST_COLUMNS)].sort_values(["date", "instrument"])


def _ranked(scores: pd.Series) -> list[str]:
    """Instruments best score first, ties by name (the index is already sorted, and the sort is stable)."""
    return list(scores.sort_values(ascending=False, kind="stable").index)


def _last(items: list[str], n: int) -> list[str]:
    return items[len(items) - n:] if n > 0 else []


def _rebalance(held: set[str], scores: pd.Series, topk: int, n_drop: int) -> tuple[list[str], list[str]]:
    """``(sell, buy)`` of one day under the rules of the module docstring; ``scores`` holds scored stocks only."""
    ranked = _ranked(scores)
    open_slots = topk - len(held)
    candidates = [s for s in ranked if s not in held][: n_drop + open_slots]
    in_play = held | set(candidates)
    combined = [s for s in ranked if s in in_play]
    sell = [s for s in _last(combined, n_drop) if s in held]
    replaceable = max(len(candidates) - open_slots, 0)
    sell = _last(sell, min(len(sell), replaceable))
    return sell, candidates[: len(sell) + open_slots]


def _day_row(rets: pd.Series, held: set[str], n_sold: int, n_bought: int, topk: int,
             open_cost: float, close_cost: float) -> dict[str, float]:
    portfolio = float(rets.reindex(sorted(held)).fillna(0.0).mean())
    benchmark = float(rets.mean())
    cost = (n_bought * open_cost + n_sold * close_cost) / topk
    return {"portfolio": portfolio, "benchmark": benchmark, "cost": cost, "turnover": (n_bought + n_sold) / topk,
            "excess": portfolio - benchmark - cost, "held": len(held)}


def topk_dropout(df: pd.DataFrame, topk: int, n_drop: int, open_cost: float = 0.0005,
                 close_cost: float = 0.0015) -> pd.DataFrame:
    """Replay Qlib's TopK-dropout strategy over the panel; one row per date.

    Columns: ``portfolio`` (gross return of the book), ``benchmark`` (mean ``ret`` over the stocks with a ``ret``
    that day, the equal-weight universe; NaN when none has one), ``cost``, ``turnover``, ``excess`` = portfolio −
    benchmark − cost, and ``held`` (stocks in the book). The conventions are in the module docstring; Qlib's
    CSI300 setting is ``topk=50, n_drop=5`` (:func:`scaled_topk` adapts it to other universes).
    """
    _check_book(topk, n_drop)
    check_arg(open_cost >= 0, "open_cost", open_cost, "a cost >= 0")
    check_arg(close_cost >= 0, "close_cost", close_cost, "a cost >= 0")
    held: set[str] = set()
    rows: dict[pd.Timestamp, dict[str, float]] = {}
    for date, day in _prepare(df).groupby("date", sort=True):
        day = day.set_index("instrument")
        scores = day["score"].dropna()
        if len(scores) < topk:
            raise ZooValueError(f"on {date} only {len(scores)} stocks have a score, fewer than topk={topk}")
        sell, buy = _rebalance(held, scores, topk, n_drop)
        held = (held - set(sell)) | set(buy)
        rows[date] = _day_row(day["ret"], held, len(sell), len(buy), topk, open_cost, close_cost)
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("date")


def risk_summary(excess: pd.Series, periods: int = QLIB_PERIODS) -> dict[str, float]:
    """Qlib's risk report of a daily return series (``mode="sum"``, its default): returns add up, not compound.

    ``annualized_return`` = periods · mean, ``information_ratio`` = √periods · mean / std (``ddof=1``; NaN with
    fewer than 2 days or no variation), ``max_drawdown`` = min over t of ``C_t − max_{s≤t} C_s`` with ``C`` the
    cumulative sum (≤ 0), and ``days``. NaN days (no benchmark) are left out. ``periods=238`` is Qlib's current
    trading-year length; pass 252 for the usual convention elsewhere.
    """
    check_arg(periods >= 1, "periods", periods, "an integer >= 1")
    r = pd.Series(excess, dtype=np.float64).dropna()
    mean = float(r.mean()) if len(r) else float("nan")
    std = float(r.std(ddof=1)) if len(r) >= 2 else float("nan")
    cum = r.cumsum()
    drawdown = float((cum - cum.cummax()).min()) if len(r) else float("nan")
    return {"annualized_return": periods * mean,
            "information_ratio": math.sqrt(periods) * mean / std if std > 0 else float("nan"),
            "max_drawdown": drawdown, "days": len(r)}


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def scaled_topk(universe_size: int, topk: int = 50, n_drop: int = 5, reference: int = 300) -> tuple[int, int]:
    """``(topk, n_drop)`` for a universe of ``universe_size`` stocks, scaled from a setting made for ``reference``
    stocks (Qlib's CSI300 default: 50 and 5 of 300), so a smaller universe is not held almost whole.

    Both are scaled by ``universe_size / reference`` and rounded half up; ``topk`` is then kept within
    ``[1, universe_size // 2]`` and ``n_drop`` within ``[1, topk]``. E.g. 300 → (50, 5), 150 → (25, 3),
    30 → (5, 1), 20 → (3, 1). The result always leaves ``topk + n_drop <= universe_size``, where
    :func:`topk_dropout` follows Qlib exactly.
    """
    check_arg(universe_size >= 2, "universe_size", universe_size, "an integer >= 2")
    check_arg(reference >= 1, "reference", reference, "an integer >= 1")
    _check_book(topk, n_drop)
    scale = universe_size / reference
    k = max(1, min(_round_half_up(topk * scale), universe_size // 2))
    return k, max(1, min(_round_half_up(n_drop * scale), k))
