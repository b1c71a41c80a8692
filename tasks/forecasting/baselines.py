"""Classical per-series forecasters: the statistical rows of the forecasting board.

Every method has one interface, ``forecast(values, horizon, m) -> float64 [horizon]`` (always finite), and is
registered by name in :data:`BASELINES`; :func:`forecast_all` runs one over a list of series. Definitions follow
the M4 Competitor's Guide (M4 Team, 2018, "M4 Competitor's Guide: Prizes and Rules", benchmarks and OWA) and
Makridakis, Spiliotis & Assimakopoulos (2020), "The M4 Competition: 100,000 time series and 61 forecasting
methods", IJF 36(1):

- ``naive`` (M4 "Naïve 1"): the last observation, ``ŷ_{T+h} = y_T``.
- ``seasonal_naive`` (M4 "Seasonal Naïve"): the last observed season repeated, ``ŷ_{T+h} = y_{T+h−m⌈h/m⌉}``;
  ``m = 1`` or fewer than ``m`` points (zoo choice) → ``naive``.
- ``naive2`` (M4 "Naïve 2"): ``naive`` on the seasonally adjusted series, re-seasonalised. The series is adjusted
  (:func:`deseasonalize`) with classical multiplicative decomposition only when it is seasonal by the M4 90%
  autocorrelation test (:func:`seasonality_test`: ``n ≥ 3m`` and ``|r_m| > 1.645·sqrt((1 + 2·Σ_{k=1}^{m−1}
  r_k²)/n)``); ``m = 1`` or data with a value ≤ 0 → plain ``naive``.
- ``ses``: simple exponential smoothing (statsmodels ``SimpleExpSmoothing``, smoothing parameter and initial level
  estimated by least squares, i.e. the Gaussian MLE of ETS(A,N,N)), on the seasonally adjusted series and
  re-seasonalised, as the M4 benchmark "SES" is (the Monash archive's SES, R ``forecast::ses``, skips the
  adjustment).
- ``theta``: the Theta method of Assimakopoulos & Nikolopoulos (2000) in the form of Hyndman & Billah (2003), i.e.
  SES with drift ``b0/2`` (``b0`` = OLS slope of the adjusted series on time) — statsmodels ``ThetaModel`` with
  ``theta=2`` and its own deseasonalisation switched off, run on the series adjusted by :func:`deseasonalize` (the
  M4 test and decomposition, which statsmodels' built-in test does not reproduce: it lacks the factor 2 and the
  ``n ≥ 3m`` condition), then re-seasonalised. This is what R ``forecast::thetaf`` computes (the M3/M4 "Theta"
  benchmark up to SES initialisation details).
- ``ets``: exponential smoothing state-space models (statsmodels ``ETSModel``, smoothing parameters by maximum
  likelihood), the one with the smallest AICc among a small set (Hyndman et al. 2002, without R's full 30-model
  search): error A or M × trend none or additive damped × season none or (only when the series is seasonal by
  :func:`seasonality_test`) A for additive error / M for multiplicative error, i.e. ANN, AAdN, MNN, MAdN, ANA,
  AAdA, MNM, MAdM. Multiplicative models need strictly positive data; a model needs more points than its
  parameters + 2 for AICc. Initial states come from statsmodels' heuristic (Hyndman et al. 2008, §2.6.1) when
  ``n ≥ 10`` and are estimated otherwise (zoo choice; R ``forecast::ets`` estimates them: on the 1,428 M3 monthly
  series the heuristic was 6× faster, 32 s vs 195 s, for the same accuracy, sMAPE 14.09 vs 14.10, MASE 0.875 vs
  0.883). If no candidate fits (or none gives a finite forecast), ``ets`` falls back to ``ses``, counted in
  :data:`FALLBACKS` (:func:`forecast_all` warns once with the count).

Degenerate inputs never raise (zoo choices): a constant series, or fewer than 3 points, gives ``naive`` for the
smoothing methods (``ses``, ``theta``, ``ets``); a statsmodels failure in ``ses``/``theta`` falls back to
``naive2`` (counted in :data:`FALLBACKS`). Inputs must be finite (NaN/inf → :class:`~zoo.errors.ZooValueError`),
non-empty, with ``horizon ≥ 1`` and ``m ≥ 1``.

Seasonal positions are counted from the start of the series (position ``t mod m``), so the forecast at step ``h``
uses the index of position ``(n + h − 1) mod m``; the calendar is never needed.

Cost over the 1,428 M3 monthly series (H = 18, one core of a 2-core CPU, BLAS limited to one thread by
:func:`forecast_all`): naive, seasonal naive, Naïve 2 < 0.1 s; ses 4 s; theta 7 s; ets 32 s (17 s with
``n_jobs=2``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from zoo.errors import ZooValueError, check_arg

log = logging.getLogger(__name__)

Forecaster = Callable[[np.ndarray, int, int], np.ndarray]

STATSMODELS_INSTALL = "pip install 'statsmodels>=0.14'"

# One-sided 95% normal quantile: the two-sided 90% band of the M4 seasonality test.
Z90 = 1.645

# Number of times each method fell back to a simpler one (``"ets"``: to SES; ``"ses"``/``"theta"``: to Naïve 2)
# in this process since import or the last ``FALLBACKS.clear()``.
FALLBACKS: Counter[str] = Counter()


# --------------------------------------------------------------------------------------------------------------
# validation and seasonal adjustment


def _check(values: Any, horizon: int, m: int) -> tuple[np.ndarray, int, int]:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ZooValueError("values is empty; a forecast needs at least one observation")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise ZooValueError(f"values has {bad} NaN/inf value(s); fill or drop them before forecasting "
                            "(data.fill_missing interpolates inner gaps)")
    check_arg(isinstance(horizon, int | np.integer) and horizon >= 1, "horizon", horizon, "an integer >= 1")
    check_arg(isinstance(m, int | np.integer) and m >= 1, "m", m, "an integer >= 1")
    return x, int(horizon), int(m)


def acf(values: np.ndarray, nlags: int) -> np.ndarray:
    """Sample autocorrelations ``r_0..r_nlags`` (``r_k = Σ_t d_t d_{t+k} / Σ_t d_t²``, ``d = x − mean(x)``, as
    R ``acf`` and statsmodels ``acf(adjusted=False)``); all zero past ``r_0`` for a constant series."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    d = x - x.mean()
    den = float(d @ d)
    r = np.zeros(nlags + 1)
    r[0] = 1.0
    if den <= 0.0:
        return r
    for k in range(1, min(nlags, len(x) - 1) + 1):
        r[k] = float(d[:-k] @ d[k:]) / den
    return r


def seasonality_test(values: np.ndarray, m: int) -> bool:
    """M4 90% autocorrelation test for seasonality at lag ``m``.

    Seasonal when ``m > 1``, ``n ≥ 3m`` and ``|r_m| > 1.645 · sqrt((1 + 2·Σ_{k=1}^{m−1} r_k²) / n)``, ``r_k`` the
    sample autocorrelations (:func:`acf`); the bound is Bartlett's standard error of ``r_m`` under an MA(m−1).
    A constant series is not seasonal.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    n, m = len(x), int(m)
    if m <= 1 or n < 3 * m:
        return False
    r = acf(x, m)
    limit = Z90 * np.sqrt((1.0 + 2.0 * float(np.sum(r[1:m] ** 2))) / n)
    return bool(abs(r[m]) > limit)


def seasonal_indices(values: np.ndarray, m: int) -> np.ndarray:
    """Classical multiplicative decomposition's seasonal indices ``[m]`` (index ``i`` for positions ``t ≡ i mod
    m``, counted from the series' start), normalised to mean 1.

    Trend = centred moving average of order ``m`` (``2×m`` for even ``m``: weights ``1/2m, 1/m, …, 1/m, 1/2m``);
    index ``i`` = mean of ``x_t / trend_t`` over the positions ``t ≡ i`` where the trend is defined. Needs
    strictly positive ``x`` and ``n ≥ 2m`` (every position then has a ratio).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    m = int(m)
    check_arg(m >= 1 and len(x) >= 2 * m, "m", m, f"an integer with 2m <= n = {len(x)}")
    if m % 2 == 0:
        w = np.full(m + 1, 1.0 / m)
        w[0] = w[-1] = 0.5 / m
    else:
        w = np.full(m, 1.0 / m)
    half = m // 2
    trend = np.convolve(x, w, mode="valid")  # trend[j] is centred on t = j + half
    t = np.arange(half, half + len(trend))
    ratio = x[t] / trend
    idx = np.array([ratio[t % m == i].mean() for i in range(m)])
    return idx / idx.mean()


def deseasonalize(values: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``(adjusted series [n], seasonal index of each position [m])`` as in the M4 benchmarks.

    Adjusted only when ``m > 1``, every value is > 0 and :func:`seasonality_test` says seasonal; otherwise the
    series is returned as is with indices all 1 (``[1]`` when ``m = 1``).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    m = max(1, int(m))
    if m == 1 or x.min() <= 0.0 or not seasonality_test(x, m):
        return x, np.ones(m)
    idx = seasonal_indices(x, m)
    return x / idx[np.arange(len(x)) % m], idx


def reseasonalize(forecast_adj: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    """Multiply an adjusted forecast ``[H]`` of a series of ``n`` points by the index of its positions."""
    h = np.arange(len(forecast_adj))
    return np.asarray(forecast_adj, dtype=np.float64) * idx[(n + h) % len(idx)]


# --------------------------------------------------------------------------------------------------------------
# forecasters


def naive(values: np.ndarray, horizon: int, m: int = 1) -> np.ndarray:
    """M4 Naïve 1: ``ŷ_{T+h} = y_T`` (``m`` is ignored)."""
    x, horizon, _ = _check(values, horizon, m)
    return np.full(horizon, x[-1])


def seasonal_naive(values: np.ndarray, horizon: int, m: int = 1) -> np.ndarray:
    """M4 Seasonal Naïve: the last ``m`` observations repeated; ``naive`` when ``m = 1`` or ``n < m``."""
    x, horizon, m = _check(values, horizon, m)
    if m == 1 or len(x) < m:
        return np.full(horizon, x[-1])
    return np.resize(x[-m:], horizon).astype(np.float64)


def naive2(values: np.ndarray, horizon: int, m: int = 1) -> np.ndarray:
    """M4 Naïve 2: ``naive`` on the series adjusted by :func:`deseasonalize`, times the seasonal indices."""
    x, horizon, m = _check(values, horizon, m)
    adj, idx = deseasonalize(x, m)
    return reseasonalize(np.full(horizon, adj[-1]), idx, len(x))


def _require_statsmodels() -> None:
    if importlib.util.find_spec("statsmodels") is None:
        raise ZooValueError(f"the ses, theta and ets baselines need statsmodels; run: {STATSMODELS_INSTALL}")


def _degenerate(x: np.ndarray) -> bool:
    """Too short or constant for a fitted model: the smoothing methods return ``naive``."""
    return len(x) < 3 or float(np.ptp(x)) == 0.0


def _finite_or_none(f: Any, horizon: int) -> np.ndarray | None:
    f = np.asarray(f, dtype=np.float64).reshape(-1)
    return f if f.shape == (horizon,) and np.isfinite(f).all() else None


def _ses_level(x: np.ndarray, horizon: int) -> np.ndarray | None:
    """SES forecast of ``x`` (flat), or None when statsmodels fails."""
    _require_statsmodels()
    from statsmodels.tsa.holtwinters import SimpleExpSmoothing

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = SimpleExpSmoothing(x, initialization_method="estimated").fit()
            return _finite_or_none(res.forecast(horizon), horizon)
    except Exception as e:  # noqa: BLE001 - any statsmodels failure means "fall back"
        log.debug("SES failed: %s", e)
        return None


def ses(values: np.ndarray, horizon: int, m: int = 1) -> np.ndarray:
    """M4 SES benchmark: simple exponential smoothing of the seasonally adjusted series, re-seasonalised.

    Constant or < 3 points → ``naive``; a statsmodels failure → ``naive2`` (counted in :data:`FALLBACKS`).
    """
    x, horizon, m = _check(values, horizon, m)
    if _degenerate(x):
        return np.full(horizon, x[-1])
    adj, idx = deseasonalize(x, m)
    f = _ses_level(adj, horizon)
    if f is None:
        FALLBACKS["ses"] += 1
        f = np.full(horizon, adj[-1])
    return reseasonalize(f, idx, len(x))


def theta(values: np.ndarray, horizon: int, m: int = 1) -> np.ndarray:
    """Theta (θ = 2; SES with drift ``b0/2``, Hyndman & Billah 2003) on the M4-adjusted series, re-seasonalised.

    Constant or < 3 points → ``naive``; a statsmodels failure → ``naive2`` (counted in :data:`FALLBACKS`).
    """
    x, horizon, m = _check(values, horizon, m)
    if _degenerate(x):
        return np.full(horizon, x[-1])
    _require_statsmodels()
    from statsmodels.tsa.forecasting.theta import ThetaModel

    adj, idx = deseasonalize(x, m)
    f = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ThetaModel(adj, deseasonalize=False).fit()
            f = _finite_or_none(res.forecast(horizon, theta=2.0), horizon)
    except Exception as e:  # noqa: BLE001
        log.debug("Theta failed: %s", e)
    if f is None:
        FALLBACKS["theta"] += 1
        f = np.full(horizon, adj[-1])
    return reseasonalize(f, idx, len(x))


# (error, trend, seasonal) of the ETS candidates; seasonal ones only for seasonal series. Trend "Ad" = additive
# damped.
ETS_CANDIDATES: tuple[tuple[str, str, str], ...] = (
    ("A", "N", "N"), ("A", "Ad", "N"), ("M", "N", "N"), ("M", "Ad", "N"),
    ("A", "N", "A"), ("A", "Ad", "A"), ("M", "N", "M"), ("M", "Ad", "M"),
)


# Below this length statsmodels' heuristic initialisation is not available; initial states are then estimated.
ETS_HEURISTIC_MIN_N = 10


def _ets_num_params(trend: str, season: str, m: int, init: str) -> int:
    """Free parameters of an ETS model as statsmodels' AICc counts them: the smoothing parameters (α; β, φ; γ),
    the initial states when they are estimated (level; slope; m − 1 seasonal), and the error variance."""
    k = 1 + 1  # alpha, sigma²
    k += 2 if trend == "Ad" else 0  # beta, phi
    k += 1 if season != "N" else 0  # gamma
    if init == "estimated":
        k += 1 + (trend == "Ad") + (m - 1 if season != "N" else 0)
    return k


def ets_select(values: np.ndarray, horizon: int, m: int) -> tuple[str, np.ndarray] | None:
    """``(name like "MAdM", forecast [H])`` of the AICc-best admissible candidate of :data:`ETS_CANDIDATES`,
    or None when none fits.

    Initial states: statsmodels' heuristic (Hyndman et al. 2008, §2.6.1: regression on the first cycles) for
    every candidate when ``n ≥ 10``, else estimated with the other parameters; one rule per series so that the
    candidates' AICc count the same kind of parameters.
    """
    _require_statsmodels()
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    positive = bool(x.min() > 0.0)
    seasonal = seasonality_test(x, m)
    init = "heuristic" if n >= ETS_HEURISTIC_MIN_N else "estimated"
    best: tuple[float, str, np.ndarray] | None = None
    for error, trend, season in ETS_CANDIDATES:
        if season != "N" and not seasonal:
            continue
        if (error == "M" or season == "M") and not positive:
            continue
        if n <= _ets_num_params(trend, season, m, init) + 2:
            continue
        kwargs: dict[str, Any] = {"error": "add" if error == "A" else "mul", "initialization_method": init}
        if trend == "Ad":
            kwargs.update(trend="add", damped_trend=True)
        if season != "N":
            kwargs.update(seasonal="add" if season == "A" else "mul", seasonal_periods=m)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                res = ETSModel(x, **kwargs).fit(disp=False)
                aicc = float(res.aicc)
                f = _finite_or_none(res.forecast(horizon), horizon)
        except Exception as e:  # noqa: BLE001
            log.debug("ETS(%s,%s,%s) failed: %s", error, trend, season, e)
            continue
        if f is None or not np.isfinite(aicc):
            continue
        if best is None or aicc < best[0]:
            best = (aicc, f"{error}{trend}{season}", f)
    return None if best is None else (best[1], best[2])


def ets(values: np.ndarray, horizon: int, m: int = 1) -> np.ndarray:
    """Automatic ETS: the AICc-best of :data:`ETS_CANDIDATES` (see the module docstring).

    Constant or < 3 points → ``naive``; no admissible candidate → ``ses`` (counted in :data:`FALLBACKS`).
    """
    x, horizon, m = _check(values, horizon, m)
    if _degenerate(x):
        return np.full(horizon, x[-1])
    chosen = ets_select(x, horizon, m)
    if chosen is None:
        FALLBACKS["ets"] += 1
        return ses(x, horizon, m)
    return chosen[1]


BASELINES: dict[str, Forecaster] = {
    "naive": naive,
    "seasonal_naive": seasonal_naive,
    "naive2": naive2,
    "ses": ses,
    "theta": theta,
    "ets": ets,
}


def forecast(values: np.ndarray, horizon: int, m: int, method: str) -> np.ndarray:
    """Forecast one series with the baseline called ``method`` (a key of :data:`BASELINES`)."""
    check_arg(method in BASELINES, "method", method, tuple(BASELINES))
    return BASELINES[method](values, horizon, m)


# --------------------------------------------------------------------------------------------------------------
# many series


def _progress(total: int, label: str, force: bool = False):
    """A rich progress bar (on stderr) when stderr is a TTY or ``force``, else ``None``."""
    if not (force or sys.stderr.isatty()):
        return None
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    progress.add_task(label, total=total)
    return progress


def _single_threaded_blas() -> Any:
    """Context limiting BLAS to one thread (threadpoolctl, if installed; it comes with scikit-learn).

    The fits are tiny: a second BLAS thread only spins (CPU time doubles), and on a busy 2-core machine ETS over
    M3 monthly took 187 s with default threads against 32 s with one.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _init_worker() -> None:
    """Process-pool initializer: one BLAS thread per worker for the worker's lifetime."""
    _single_threaded_blas().__enter__()


def _one(job: tuple[str, np.ndarray, int, int]) -> tuple[np.ndarray, int]:
    """Worker: ``(forecast, fallbacks it caused)``; module-level so a process pool can pickle it."""
    method, x, horizon, m = job
    before = FALLBACKS[method]
    f = BASELINES[method](x, horizon, m)
    return f, FALLBACKS[method] - before


def forecast_all(series_list: Sequence[Any], horizon: int, method: str, *, m: int | None = None,
                 n_jobs: int = 1, progress: bool | None = None) -> np.ndarray:
    """Forecast every series with one baseline: float64 ``[N, horizon]``, row ``i`` for ``series_list[i]``.

    Args:
        series_list: :class:`~zoo.tasks.forecasting.data.Series` (their ``values`` and ``m``) or 1-D arrays.
        horizon: H.
        method: a key of :data:`BASELINES`.
        m: seasonal period for every series; default each Series' ``m`` (required for plain arrays).
        n_jobs: worker processes (1 = in this process).
        progress: show a rich progress bar; None = when stderr is a TTY.

    Warns (``UserWarning``) once with the number of series whose method fell back to a simpler one.
    """
    check_arg(method in BASELINES, "method", method, tuple(BASELINES))
    check_arg(isinstance(n_jobs, int) and n_jobs >= 1, "n_jobs", n_jobs, "an integer >= 1")
    jobs = []
    for i, s in enumerate(series_list):
        values = getattr(s, "values", s)
        mi = m if m is not None else getattr(s, "m", None)
        if mi is None:
            raise ZooValueError(f"series {i} is a plain array; pass m= (its seasonal period)")
        x, h, mi = _check(values, horizon, mi)
        jobs.append((method, x, h, mi))
    out = np.empty((len(jobs), int(horizon)), dtype=np.float64)
    bar = None if progress is False else _progress(len(jobs), f"{method} ({len(jobs)} series)", bool(progress))
    pooled = n_jobs > 1 and len(jobs) > 1
    fallbacks = 0
    with contextlib.ExitStack() as stack:  # closes in reverse: the bar, then the pool or the BLAS limit
        if pooled:
            from concurrent.futures import ProcessPoolExecutor

            pool = stack.enter_context(ProcessPoolExecutor(max_workers=n_jobs, initializer=_init_worker))
            results = pool.map(_one, jobs, chunksize=max(1, len(jobs) // (8 * n_jobs)))
        else:
            stack.enter_context(_single_threaded_blas())
            results = map(_one, jobs)
        if bar is not None:
            stack.enter_context(bar)
        for i, (f, fb) in enumerate(results):
            out[i] = f
            fallbacks += fb
            if bar is not None:
                bar.advance(bar.task_ids[0])
    if pooled:  # the workers' counters are theirs; serial runs have counted already
        FALLBACKS[method] += fallbacks
    if fallbacks:
        simpler = "ses" if method == "ets" else "naive2"
        warnings.warn(f"{method}: {fallbacks} of {len(jobs)} series fell back to {simpler} (no model fitted)",
                      stacklevel=2)
    return out

