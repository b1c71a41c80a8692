"""MMoE's synthetic generator (Ma et al., KDD 2018, §3.2) against a plain per-row loop of the paper's steps,
its construction (orthonormal u, |w_t| = c, cos(w1, w2) = p, w1 ⟂ u2), the label Pearson correlation against p
(exactly p in the linear, noise-free case, as the paper says; growing with p otherwise, the relation its
Figure 2 plots), and its config fields."""

import numpy as np
import pytest

from zoo.errors import ZooValueError
from zoo.tasks.recsys.config import DataConfig
from zoo.tasks.recsys.data import load_source
from zoo.tasks.recsys.synthetic import mmoe_synthetic


def pearson(y: np.ndarray) -> float:
    return float(np.corrcoef(y.T)[0, 1])


@pytest.mark.parametrize("p", [1.0, 0.5, 0.0, -0.7])
def test_weights_are_built_from_orthonormal_directions(p):
    d = mmoe_synthetic(p, n_train=10, n_test=10, dim=20, c=2.5)
    u1, u2 = d.u
    assert u1 @ u2 == pytest.approx(0.0, abs=1e-12)
    assert np.linalg.norm(d.u, axis=1) == pytest.approx([1.0, 1.0])
    np.testing.assert_allclose(d.w[0], 2.5 * u1)
    np.testing.assert_allclose(d.w[1], 2.5 * (p * u1 + np.sqrt(1 - p * p) * u2))
    assert np.linalg.norm(d.w, axis=1) == pytest.approx([2.5, 2.5])  # |w_t| = c
    assert d.w[0] @ u2 == pytest.approx(0.0, abs=1e-12)  # w1 ⟂ u2
    assert d.w[0] @ d.w[1] / 2.5**2 == pytest.approx(p)  # cos(w1, w2) = p


def test_labels_match_a_plain_loop_over_the_papers_formula():
    d = mmoe_synthetic(0.3, n_train=40, n_test=5, dim=8, c=1.5, m=4, noise_sd=0.0, seed=3)
    assert d.alpha.shape == d.beta.shape == (4,)
    for x, y in zip(d.x_train.astype(np.float64), d.y_train):
        for t in range(2):
            z = d.w[t] @ x
            expected = z + sum(np.sin(d.alpha[i] * z + d.beta[i]) for i in range(4))
            assert y[t] == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_noise_has_the_configured_standard_deviation():
    clean = mmoe_synthetic(0.5, n_train=20_000, n_test=1, dim=10, noise_sd=0.0)
    noisy = mmoe_synthetic(0.5, n_train=20_000, n_test=1, dim=10, noise_sd=0.1)
    np.testing.assert_array_equal(clean.x_train, noisy.x_train)
    assert (noisy.y_train - clean.y_train).std(0) == pytest.approx([0.1, 0.1], rel=0.03)


@pytest.mark.parametrize("p", [1.0, 0.9, 0.5, 0.0, -0.5])
def test_linear_noise_free_labels_have_pearson_correlation_p(p):
    """The paper: with y_t = w_tᵀx (+ noise) the label Pearson correlation is exactly p."""
    d = mmoe_synthetic(p, n_train=50_000, n_test=1, dim=10, m=0, noise_sd=0.0)
    assert pearson(d.y_train) == pytest.approx(p, abs=0.015)


def test_label_correlation_grows_with_p():
    ps = (-0.5, 0.0, 0.5, 0.9, 1.0)
    corr = [pearson(mmoe_synthetic(p).y_train) for p in ps]
    assert corr == sorted(corr)
    assert corr[-1] > 0.95  # p = 1: the same function, independent noise
    assert abs(corr[1]) < 0.05  # p = 0: independent projections
    a, b = mmoe_synthetic(1.0), mmoe_synthetic(0.5)
    np.testing.assert_array_equal(a.x_train, b.x_train)  # only the tasks' relation moves with p
    np.testing.assert_array_equal(a.alpha, b.alpha)
    assert a.x_train.shape == (10_000, 100) and a.y_test.shape == (1_000, 2)


def test_sines_are_not_nearly_linear_with_the_default_parameters():
    """α_i, β_i ~ N(0, 1): a linear fit leaves a large share of the label variance unexplained."""
    d = mmoe_synthetic(0.0, n_train=20_000, n_test=1, dim=10)
    z = d.x_train.astype(np.float64) @ d.w[0]
    residual = d.y_train[:, 0] - np.polyval(np.polyfit(z, d.y_train[:, 0], 1), z)
    assert residual.var() / d.y_train[:, 0].var() > 0.2


def test_config_fields_reach_the_generator():
    cfg = DataConfig(source="mmoe_synthetic", p=-0.2, n_train=30, n_val=10, n_test=5, dim=6, c=3.0, m=2,
                     sine_sd=0.5, noise_sd=0.0)
    d = load_source(cfg)
    assert d.x_train.shape == (40, 6) and d.alpha.shape == (2,)
    assert np.linalg.norm(d.w, axis=1) == pytest.approx([3.0, 3.0]) and d.w[0] @ d.w[1] / 9 == pytest.approx(-0.2)


@pytest.mark.parametrize("kwargs, message", [
    ({"p": 1.5}, "data.p"), ({"c": 0.0}, "data.c/m/sine_sd/noise_sd"), ({"m": -1}, "data.c/m/sine_sd/noise_sd"),
    ({"noise_sd": -0.1}, "data.c/m/sine_sd/noise_sd"),
])
def test_bad_generator_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ZooValueError, match=message):
        DataConfig(source="mmoe_synthetic", **kwargs)
    with pytest.raises(ZooValueError):
        mmoe_synthetic(**{"p": 0.5, **kwargs}, n_train=5, n_test=5)
