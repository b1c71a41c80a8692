"""Tests of the NeRF metrics: PSNR and SSIM against references (torchmetrics' PSNR, a numpy SSIM written from the
formula), the half-image split, surface regions against the city's own renderer, and the routing tables against
plain loops and hand-worked examples."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

from zoo.errors import ZooValueError
from zoo.tasks.nerf.cameras import Views
from zoo.tasks.nerf.city import DOWNTOWN, SKY_REGION, SUBURB, ProceduralCity
from zoo.tasks.nerf.metrics import (
    MIN_SSIM_SIDE,
    downtown_share,
    expert_region_table,
    halves,
    load_shares,
    psnr,
    purity,
    region_psnr,
    ssim,
    surface_regions,
)


@pytest.fixture(scope="module")
def city():
    return ProceduralCity(seed=3, boxes=(6, 12), size=16, views=16)


def _ssim_reference(pred: np.ndarray, target: np.ndarray) -> float:
    """SSIM from its formula: 11x11 Gaussian window (sigma 1.5) over reflect-padded images, per channel, averaged."""
    x = np.arange(11) - 5.0
    g = np.exp(-x**2 / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for a, b in zip(pred.astype(np.float64), target.astype(np.float64)):
        for ch in range(3):
            pa = np.pad(a[..., ch], 5, mode="reflect")
            pb = np.pad(b[..., ch], 5, mode="reflect")

            def blur(img):
                patches = np.lib.stride_tricks.sliding_window_view(img, (11, 11))
                return np.einsum("ijkl,kl->ij", patches, window)

            mu_a, mu_b = blur(pa), blur(pb)
            var_a, var_b = blur(pa * pa) - mu_a**2, blur(pb * pb) - mu_b**2
            cov = blur(pa * pb) - mu_a * mu_b
            ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
            values.append(ssim_map.mean())
    return float(np.mean(values))


def test_psnr_known_answers_and_torchmetrics():
    target = np.full((2, 4, 4, 3), 0.5)
    assert psnr(target + 0.1, target) == pytest.approx(20.0)
    assert psnr(target, target) == pytest.approx(100.0)  # MSE floored at 1e-10
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=(3, 8, 8, 3)), rng.uniform(size=(3, 8, 8, 3))
    reference = peak_signal_noise_ratio(torch.from_numpy(a), torch.from_numpy(b), data_range=1.0)
    assert psnr(a, b) == pytest.approx(float(reference), rel=1e-6)
    with pytest.raises(ZooValueError, match="same"):
        psnr(a, b[:2])
    with pytest.raises(ZooValueError, match="at least one pixel"):
        psnr(np.zeros((0, 3)), np.zeros((0, 3)))


def test_ssim_matches_the_formula_on_random_and_structured_images():
    rng = np.random.default_rng(1)
    noise = rng.uniform(size=(2, 40, 36, 3))
    noisy = np.clip(noise + rng.normal(0, 0.2, noise.shape), 0, 1)
    assert ssim(noisy, noise) == pytest.approx(_ssim_reference(noisy, noise), abs=1e-6)
    # Structured: checkerboards, gradients and a ProceduralCity view against shifted / darkened / noisy copies.
    v, u = np.mgrid[0:48, 0:40]
    checker = np.repeat((((v // 4) + (u // 4)) % 2)[..., None], 3, -1).astype(np.float64)
    gradient = np.stack([u / 39, v / 47, (u + v) / 86], -1)
    view = np.asarray(ProceduralCity(seed=0, boxes=(10, 20), size=48, views=2).views().images[0])[:, :40]
    clean = np.stack([checker, gradient, view])
    damaged = np.stack([np.roll(checker, 1, axis=1), gradient * 0.7, np.clip(view + rng.normal(0, 0.05, view.shape),
                                                                             0, 1)])
    expected = _ssim_reference(damaged, clean)
    assert ssim(damaged, clean) == pytest.approx(expected, abs=1e-6)
    assert 0.0 < expected < 0.99
    assert ssim(clean, clean) == pytest.approx(1.0, abs=1e-6)


def test_ssim_takes_the_right_half_of_a_64_pixel_view_and_refuses_narrower():
    rng = np.random.default_rng(2)
    image = rng.uniform(size=(64, 64, 3))
    _, right = halves(64)
    half = image[:, right]
    assert half.shape[1] == MIN_SSIM_SIDE == 32
    other = np.clip(half + 0.1, 0, 1)
    assert ssim(other, half) == pytest.approx(_ssim_reference(other[None], half[None]), abs=1e-6)  # one [H, W, 3]
    with pytest.raises(ZooValueError, match="at least 32x32"):
        ssim(half[:, :31], half[:, :31])
    with pytest.raises(ZooValueError, match="at least 32x32"):
        ssim(half[:20], half[:20])
    with pytest.raises(ZooValueError, match=r"\[N, H, W, 3\]"):
        ssim(half[..., :2], half[..., :2])


def test_halves_split_the_columns():
    assert halves(64) == (slice(0, 32), slice(32, 64))
    left, right = halves(7)
    columns = np.arange(7)
    assert columns[left].tolist() == [0, 1, 2] and columns[right].tolist() == [3, 4, 5, 6]
    for bad in (1, 6.0, True):
        with pytest.raises(ZooValueError, match="width"):
            halves(bad)


def test_surface_regions_match_the_city_renderer(city):
    views = city.views()
    regions = surface_regions(views)
    assert regions.dtype == np.int64 and regions.shape == (16, 16, 16)
    for i in range(len(views)):
        _, _, reference = city.render(views.c2w[i], views.intrinsics[i], 16, 16)
        np.testing.assert_array_equal(regions[i], reference)
    assert set(np.unique(regions).tolist()) == {SKY_REGION, DOWNTOWN, SUBURB}
    no_depth = Views(views.images, views.c2w, views.intrinsics, views.appearance, views.names)
    assert surface_regions(no_depth) is None


def test_region_psnr_known_answers():
    target = np.full((1, 2, 3, 3), 0.5)
    pred = target.copy()
    regions = np.array([[[DOWNTOWN, DOWNTOWN, SUBURB], [SKY_REGION, SUBURB, SUBURB]]])
    pred[regions == DOWNTOWN] += 0.1
    pred[regions == SUBURB] += 0.01
    pred[regions == SKY_REGION] = 0.0  # the sky does not count
    out = region_psnr(pred, target, regions)
    assert out == {"downtown": pytest.approx(20.0), "suburb": pytest.approx(40.0)}
    only_suburb = region_psnr(pred, target, np.where(regions == DOWNTOWN, SUBURB, regions))
    assert math.isnan(region_psnr(pred, target, np.zeros_like(regions))["downtown"])
    assert only_suburb["suburb"] == pytest.approx(psnr(pred[regions > 0], target[regions > 0]))
    with pytest.raises(ZooValueError, match="regions has shape"):
        region_psnr(pred, target, regions[0])


def test_expert_region_table_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    ids = rng.integers(-1, 4, (3, 9, 11))
    regions = rng.integers(0, 3, (3, 9, 11))
    table = expert_region_table(ids, regions, 4)
    reference = np.zeros((4, 2), np.int64)
    for e, r in zip(ids.ravel(), regions.ravel()):
        if e >= 0 and r != SKY_REGION:
            reference[e, 0 if r == DOWNTOWN else 1] += 1
    assert table.dtype == np.int64
    np.testing.assert_array_equal(table, reference)
    assert table.sum() == ((ids >= 0) & (regions > 0)).sum()
    np.testing.assert_array_equal(expert_region_table(np.zeros(0, np.int64), np.zeros(0, np.int64), 2), 0)
    with pytest.raises(ZooValueError, match=r"0\.\.2"):
        expert_region_table(ids, regions, 3)
    with pytest.raises(ZooValueError, match="regions has shape"):
        expert_region_table(ids, regions[0], 4)
    with pytest.raises(ZooValueError, match="integer"):
        expert_region_table(ids.astype(float), regions, 4)


def test_shares_purity_and_downtown_share_known_answers():
    table = np.array([[30, 10], [0, 60], [0, 0]])
    np.testing.assert_allclose(load_shares(table), [0.4, 0.6, 0.0])
    assert purity(table) == pytest.approx(0.9)  # 0.4 * 0.75 + 0.6 * 1.0
    assert downtown_share(table, 0) == pytest.approx(1.0)
    assert downtown_share(table, 1) == 0.0
    assert purity(np.array([[5, 5], [5, 5]])) == pytest.approx(0.5)
    assert purity(np.array([[7, 0], [0, 3]])) == pytest.approx(1.0)
    assert downtown_share(np.array([[1, 2], [3, 4]]), 1) == pytest.approx(0.75)


def test_no_points_give_nan_and_bad_tables_are_refused():
    empty = np.zeros((3, 2), np.int64)
    assert np.isnan(load_shares(empty)).all() and load_shares(empty).shape == (3,)
    assert math.isnan(purity(empty))
    assert math.isnan(downtown_share(empty, 0))
    assert math.isnan(downtown_share(np.array([[0, 4], [0, 1]]), 0))
    for bad in (np.zeros((3, 3)), np.zeros(2), np.zeros((0, 2)), np.array([[1, -1]])):
        with pytest.raises(ZooValueError, match=r"\[E, 2\]"):
            purity(bad)
    for expert in (2, -1, True, 0.0):
        with pytest.raises(ZooValueError, match="expert"):
            downtown_share(np.ones((2, 2)), expert)
