"""The audio task's proxy metrics: CER against hand-worked answers and a plain Levenshtein loop, the Fréchet distance
against the closed form for diagonal Gaussians, scipy's matrix root and torchmetrics' FID formula, and the token
NLL against ``F.cross_entropy``."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.errors import ZooValueError
from zoo.tasks.audio.metrics import cer, frechet_distance, gaussian_frechet_distance, nll_sums, token_nll


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


@pytest.mark.parametrize(("hyps", "refs", "expected"), [
    (["abc"], ["abc"], 0.0),
    (["sitting"], ["kitten"], 3 / 6),  # two substitutions and one insertion over 6 reference characters
    (["kitten"], ["sitting"], 3 / 7),  # two substitutions and one deletion
    (["abcd"], ["abc"], 1 / 3),
    ([""], ["abc"], 1.0),
    (["xyz xyz"], ["a"], 7.0),  # insertions can exceed the reference length
    (["ab", "c"], ["abc", "c"], 1 / 4),  # edits and characters are pooled over the corpus
    (["", "the cat"], ["", "the hat"], 1 / 7),  # an empty pair adds nothing
])
def test_cer_known_answers(hyps, refs, expected):
    assert cer(hyps, refs) == pytest.approx(expected)


def test_cer_matches_a_plain_levenshtein_loop():
    rng = np.random.default_rng(0)
    alphabet = list("ab c.")
    hyps = ["".join(rng.choice(alphabet, rng.integers(0, 12))) for _ in range(40)]
    refs = ["".join(rng.choice(alphabet, rng.integers(1, 12))) for _ in range(40)]
    expected = sum(_levenshtein(h, r) for h, r in zip(hyps, refs)) / sum(map(len, refs))
    assert cer(hyps, refs) == pytest.approx(expected)


@pytest.mark.parametrize(("hyps", "refs"), [(["a"], ["a", "b"]), ("a", "a"), ([""], [""]), ([1], ["a"])])
def test_cer_refuses_bad_input(hyps, refs):
    with pytest.raises(ZooValueError):
        cer(hyps, refs)


def test_gaussian_frechet_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(1)
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    var_a, var_b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = gaussian_frechet_distance(*map(torch.tensor, (mu_a, np.diag(var_a), mu_b, np.diag(var_b))))
    assert got == pytest.approx(expected, rel=1e-10)


def _random_cov(rng, d, rank=None):
    m = rng.normal(size=(d, rank or d))
    return m @ m.T / d


def test_gaussian_frechet_matches_scipy_sqrtm_and_torchmetrics():
    linalg = pytest.importorskip("scipy.linalg")
    from torchmetrics.image.fid import _compute_fid

    rng = np.random.default_rng(2)
    mu_a, mu_b = rng.normal(size=8), rng.normal(size=8)
    cov_a, cov_b = _random_cov(rng, 8), _random_cov(rng, 8)
    root = linalg.sqrtm(cov_a @ cov_b)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * np.real(root))
    got = gaussian_frechet_distance(*map(torch.tensor, (mu_a, cov_a, mu_b, cov_b)))
    assert got == pytest.approx(expected, rel=1e-8)
    reference = _compute_fid(*map(torch.tensor, (mu_a, cov_a, mu_b, cov_b)))
    assert got == pytest.approx(float(reference), rel=1e-8)


def test_gaussian_frechet_is_real_and_zero_for_singular_equal_covariances():
    rng = np.random.default_rng(3)
    cov = _random_cov(rng, 10, rank=3)  # rank-deficient: its eigenvalues include rounding noise around 0
    mu = rng.normal(size=10)
    assert gaussian_frechet_distance(*map(torch.tensor, (mu, cov, mu, cov))) == pytest.approx(0.0, abs=1e-7)


def test_frechet_distance_of_embeddings_uses_sample_mean_and_covariance():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(50, 5)), rng.normal(1.0, 2.0, size=(70, 5))
    expected = gaussian_frechet_distance(*map(torch.tensor, (a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T))))
    assert frechet_distance(a, b) == pytest.approx(expected)
    assert frechet_distance(torch.tensor(a, dtype=torch.float32), b) == pytest.approx(expected, rel=1e-5)
    assert frechet_distance(b, a) == pytest.approx(expected)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_grows_with_the_gap():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(400, 4))
    near, far = rng.normal(size=(400, 4)), rng.normal(3.0, 1.0, size=(400, 4))
    assert frechet_distance(a, near) < 0.2 < 30 < frechet_distance(a, far)


def test_frechet_distance_one_dimension():
    a, b = np.array([[0.0], [2.0]]), np.array([[1.0], [5.0]])  # means 1 and 3, sample variances 2 and 8
    assert frechet_distance(a, b) == pytest.approx(4 + (np.sqrt(2) - np.sqrt(8)) ** 2)


@pytest.mark.parametrize(("a", "b"), [
    (np.zeros((1, 3)), np.zeros((4, 3))),
    (np.zeros((4, 3)), np.zeros((4, 2))),
    (np.zeros(4), np.zeros(4)),
    (np.full((4, 3), np.nan), np.zeros((4, 3))),
])
def test_frechet_distance_refuses_bad_shapes(a, b):
    with pytest.raises(ZooValueError):
        frechet_distance(a, b)


def test_token_nll_matches_cross_entropy_with_a_mask():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 4, 11, generator=g)
    targets = torch.randint(0, 11, (3, 5, 4), generator=g)
    mask = torch.rand(3, 5, 4, generator=g) < 0.6
    expected = F.cross_entropy(logits[mask], targets[mask])
    assert token_nll(logits, targets, mask) == pytest.approx(float(expected), rel=1e-6)
    assert token_nll(logits, targets) == pytest.approx(float(F.cross_entropy(logits.flatten(0, 2),
                                                                             targets.flatten())), rel=1e-6)
    assert np.isnan(token_nll(logits, targets, torch.zeros_like(mask)))


def test_nll_sums_per_group_match_a_loop():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 7, 9, generator=g)
    targets = torch.randint(0, 9, (6, 7), generator=g)
    mask = torch.rand(6, 7, generator=g) < 0.7
    groups = torch.tensor([0, 2, 0, 2, 2, 0])
    total, count = nll_sums(logits, targets, groups, 3, mask)
    for k in range(3):
        rows = groups == k
        nll = F.cross_entropy(logits[rows][mask[rows]], targets[rows][mask[rows]], reduction="sum")
        assert float(total[k]) == pytest.approx(float(nll), rel=1e-6)
        assert float(count[k]) == mask[rows].sum()
    assert total[1] == 0 and count[1] == 0


def test_nll_sums_refuses_bad_groups_and_shapes():
    logits, targets = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ZooValueError):
        nll_sums(logits, targets, torch.tensor([0, 2]), 2)
    with pytest.raises(ZooValueError):
        nll_sums(logits, targets[:, :2], torch.tensor([0, 1]), 2)
