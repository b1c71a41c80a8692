"""Seeded recsys generators: (A) MMoE's synthetic task-correlation benchmark and (B) a
Kuaishou-like feed simulator with sparse interaction tasks, delivered as :class:`~.movielens.RecData` like
MovieLens so that models and the datamodule do not care where the rows come from.

Seeding: these generators draw a population or a split as a whole, each random component from its own stream
``default_rng(SeedSequence([seed, stream]))`` (the MMoE splits: stream = split id), and changing one component
(another target rate, a longer test split) leaves the others' draws as they were.

**(A) MMoE synthetic** (Ma et al., KDD 2018, §3.2, steps 1-5): ``u1``, ``u2`` ∈ R^d orthogonal unit vectors;
given a scale constant ``c`` and a correlation score −1 ≤ ``p`` ≤ 1, ``w1 = c·u1``, ``w2 = c·(p·u1 +
sqrt(1 − p²)·u2)``; every element of ``x`` ~ N(0, 1); ``y_t = w_tᵀx + Σ_{i≤m} sin(α_i·w_tᵀx + β_i) + ε_t`` with
``ε1``, ``ε2`` i.i.d. N(0, 0.01). The paper calls ``α_i``, ``β_i`` "given parameters that control the shape of
the sinusoidal functions" and gives no values for ``c``, ``m``, ``α_i``, ``β_i``, nor says whether 0.01 is a
variance or a standard deviation; its §5.1 uses d = 100. Our choices, all data-config fields: ``c`` = 1 (so
``w_tᵀx`` ~ N(0, 1)), ``m`` = 10, ``α_i``, ``β_i`` drawn once per data seed from N(0, 1) (``sine_sd``; shared by
both tasks, as the paper's equations share them), ``ε`` standard deviation 0.1 (``noise_sd``: 0.01 read as the
variance). ``u1``, ``u2``, ``α``, ``β``, ``x`` and ``ε`` do not depend on ``p``, so a sweep over ``p`` changes
only how the tasks relate. The labels' Pearson correlation grows with ``p`` (the paper's Figure 2 plots it
against ``p``; it is exactly ``p`` when ``m`` = 0 and there is no noise): 0.99, 0.68, 0.09, 0.00 at p = 1, 0.9,
0.5, 0 (seed 0, 10,000 rows).

**(B) Kuaishou-like simulator** (:func:`kuaishou_sim`):

- users and items: 16-d factors around 20 shared cluster centres (``centre ~ N(0, I)``, spread
  :data:`CLUSTER_SD`), so users like their own cluster's items; each user has an interaction propensity
  (:data:`USER_BIAS_SD`), which makes AUC and GAUC differ as on real logs.
- exposure: ``n_u`` impressions per user, log-normal around ``mean_impressions`` (at least 5: a long tail of
  light users); a share ``random_exposure`` (20 %) of them are uniform over the items the user was not shown
  (KuaiRand's ``is_rand``), the rest picked by a recommender that samples without replacement ∝
  exp(a), ``a`` = ⟨u, v⟩ standardised over random (user, item) pairs (Gumbel top-k). Times are uniform over two weeks.
- watch: ``watch_time = duration · σ(SIGNAL·a + WATCH_OFFSET + noise)``, ``noise ~ N(0, 1)`` (the offset
  keeps most videos from being watched to the end); ``long_view`` = watch ratio ≥ ``long_view_threshold`` (0.7:
  about 30 % of impressions, 7 % of the random ones).
- interactions: ``t ~ Bernoulli(σ(SIGNAL·a_t + bias_u + b_t))`` with ``a_t`` = ⟨u, W_t v⟩ standardised, ``W_t =
  W_group + TASK_SPREAD·Δ_t`` and ``W_group = I + G`` (``G``, ``Δ_t`` Gaussian with the scale of ``I``): a
  group's tasks share most of ``W``, and they relate to watching through ``I``. ``b_t`` is set by bisection so
  that the expected positive rate over the impressions is the target (:data:`RATES`); the drawn rate differs
  from it only by sampling noise.

Tasks and groups: ``watch`` = {long_view}, ``interact`` = {click, like, comment, forward, follow} (KuaiRand's
watch vs interaction split). The split, long-tail users (at most 20 impressions in train) and
history are MovieLens's (:func:`.movielens.time_split`; history = the user's clicked items strictly earlier). Features: user ``segment`` (the user's cluster, replaced by a
random one for 30 % of users: an observable but noisy profile), item ``category`` (its cluster), ``duration``
(bucket, :data:`DURATION_EDGES`) and the ``tags`` multi-hot (its category and one random other tag).
Generating the default 2,000 users × 1,000 items (≈ 100k impressions) takes about a second on one core.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from zoo.errors import ZooValueError, check_arg

from .movielens import RecData, RecSplit, behaviour_history, bucket, long_tail_users, time_split

# --- (A) MMoE synthetic
MMOE_C, MMOE_M = 1.0, 10  # our choices: the paper leaves c and m unspecified
MMOE_SINE_SD = 1.0  # α_i, β_i ~ N(0, 1): our choice for the paper's "given parameters"
MMOE_NOISE_SD = 0.1  # ε ~ N(0, 0.01), 0.01 read as the variance
CONSTANTS, TRAIN, TEST = 0, 1, 2  # streams

# --- (B) Kuaishou-like simulator
SIM_TASKS = ("long_view", "click", "like", "comment", "forward", "follow")
SIM_GROUPS = {"watch": ("long_view",), "interact": ("click", "like", "comment", "forward", "follow")}
RATES = {"click": 0.40, "like": 0.03, "comment": 0.005, "forward": 0.003, "follow": 0.002}
DIM, CLUSTERS = 16, 20
CLUSTER_SD = 0.7  # users' and items' spread around their cluster centre (centres have unit variance)
USER_BIAS_SD = 0.5  # per-user interaction propensity, shared by the interaction tasks
TASK_SPREAD = 0.3  # the task-specific part of W_t, relative to the group's
SIGNAL = 2.0  # standard deviation of a task's logit from the factors, before b_t
SHARPNESS = 1.0  # the recommender samples ∝ exp(SHARPNESS · a): shown items have a ≈ +1 on average
WATCH_OFFSET = -2.0  # most videos are left before the end: median watch ratio 0.44 if recommended, 0.1 if random
IMPRESSIONS_SD = 0.8  # log-normal spread of impressions per user
SEGMENT_NOISE = 0.3  # share of users whose observed segment is a random one
DURATION_MEDIAN, DURATION_SD = 30.0, 0.6  # seconds, log-normal
DURATION_EDGES = (10.0, 20.0, 30.0, 60.0, 120.0)  # seconds
DAYS = 14
FACTORS, EXPOSURE, LABELS, FEATURES = 0, 1, 2, 3  # streams


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


# --------------------------------------------------------------------------------------------------------------
# (A) MMoE synthetic


@dataclass
class MMoESynthetic:
    """Two regression tasks of correlation ``p``: ``x_*`` [N, d] float32, ``y_*`` [N, 2] float32 (columns task 1,
    task 2); ``w`` [2, d] the tasks' weight vectors, ``u`` [2, d] the orthonormal directions they are built from;
    ``alpha``, ``beta`` [m] the sine parameters."""

    p: float
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    w: np.ndarray
    u: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray


def mmoe_synthetic(p: float, *, n_train: int = 10_000, n_test: int = 1_000, dim: int = 100, c: float = MMOE_C,
                   m: int = MMOE_M, sine_sd: float = MMOE_SINE_SD, noise_sd: float = MMOE_NOISE_SD,
                   seed: int = 0) -> MMoESynthetic:
    """MMoE's synthetic data (see the module docstring).

    Args:
        p: task correlation, the cosine similarity of ``w1`` and ``w2``, in [-1, 1].
        n_train, n_test: rows of the training and test streams.
        dim: input dimension d.
        c: scale constant, ``|w_t| = c``.
        m: number of sine terms.
        sine_sd: standard deviation of the ``α_i``, ``β_i`` draws.
        noise_sd: standard deviation of the label noise ``ε``.
        seed: data seed.
    """
    check_arg(-1.0 <= p <= 1.0, "p", p, "a task correlation in [-1, 1]")
    check_arg(dim >= 2, "dim", dim, "at least 2 (two orthonormal directions)")
    check_arg(n_train >= 1 and n_test >= 1, "n_train, n_test", (n_train, n_test), "at least 1 row each")
    check_arg(c > 0 and m >= 0 and sine_sd >= 0 and noise_sd >= 0, "c, m, sine_sd, noise_sd",
              (c, m, sine_sd, noise_sd), "c > 0 and m, sine_sd, noise_sd >= 0")
    rng = _rng(seed, CONSTANTS)
    u = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T  # [2, d], orthonormal rows
    alpha, beta = rng.normal(0.0, sine_sd, size=(2, m))
    w = c * np.stack([u[0], p * u[0] + np.sqrt(1.0 - p * p) * u[1]])

    def draw(n: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        split_rng = _rng(seed, stream)
        x = split_rng.normal(size=(n, dim))
        z = x @ w.T  # [N, 2]
        y = z + np.sin(alpha * z[..., None] + beta).sum(-1) + split_rng.normal(0.0, noise_sd, size=(n, 2))
        return x.astype(np.float32), y.astype(np.float32)

    return MMoESynthetic(p, *draw(n_train, TRAIN), *draw(n_test, TEST), w, u, alpha, beta)


# --------------------------------------------------------------------------------------------------------------
# (B) Kuaishou-like simulator


def calibrate_bias(logit: np.ndarray, target: float, tol: float = 1e-10) -> float:
    """The offset ``b`` with ``mean(σ(logit + b)) = target``, by bisection (the mean increases with ``b``)."""
    check_arg(0.0 < target < 1.0, "target rate", target, "a rate strictly between 0 and 1")
    lo, hi = -50.0 - float(logit.max()), 50.0 - float(logit.min())
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if sigmoid(logit + mid).mean() < target else (lo, mid)
    return 0.5 * (lo + hi)


def _dots(a: np.ndarray, b: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Row-wise ⟨a[i], b[j]⟩."""
    return (a[i] * b[j]).sum(axis=1)


def _standardiser(u: np.ndarray, w: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """Mean and sd of ⟨u, W v⟩ over random (user, item) pairs, so every task's logit has the same scale."""
    i, j = rng.integers(len(u), size=65536), rng.integers(len(v), size=65536)
    scores = _dots(u @ w, v, i, j)
    return float(scores.mean()), float(scores.std())


def _exposures(u: np.ndarray, v: np.ndarray, sharpness: float, n_rec: np.ndarray, n_rand: np.ndarray,
               rng: np.random.Generator, chunk: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, random flag) of every impression: per user, ``n_rec`` items sampled without replacement ∝
    exp(sharpness · ⟨u, v⟩) (Gumbel top-k), then ``n_rand`` uniform among the rest. Users in chunks bound
    memory."""
    users, items, rand = [], [], []
    for lo in range(0, len(u), chunk):
        idx = np.arange(lo, min(lo + chunk, len(u)))
        keys = sharpness * (u[idx] @ v.T) + rng.gumbel(size=(len(idx), len(v)))
        ranked = np.argsort(-keys, axis=1)
        shown = np.arange(len(v)) < n_rec[idx, None]
        random_keys = rng.random((len(idx), len(v))) + shown  # shown items sort after every unshown one
        random_ranked = np.take_along_axis(ranked, np.argsort(random_keys, axis=1), axis=1)
        for picked, count, flag in ((ranked, n_rec, False), (random_ranked, n_rand, True)):
            take = np.arange(len(v)) < count[idx, None]
            users.append(np.broadcast_to(idx[:, None], take.shape)[take])
            items.append(picked[take])
            rand.append(np.full(int(take.sum()), flag))
    return np.concatenate(users), np.concatenate(items), np.concatenate(rand)


def kuaishou_sim(n_users: int = 2000, n_items: int = 1000, *, seed: int = 0, mean_impressions: int = 50,
                 rates: Mapping[str, float] | None = None, random_exposure: float = 0.2,
                 long_view_threshold: float = 0.7, max_history: int = 50, val_frac: float = 0.1,
                 test_frac: float = 0.1, long_tail_max: int = 20) -> RecData:
    """The Kuaishou-like feed (see the module docstring) as :class:`RecData` named ``kuaishou_sim``.

    ``rates`` overrides target positive rates of interaction tasks (:data:`RATES`); ``values`` of the splits
    hold ``watch_time``, ``duration`` (seconds) and ``random_exposure`` (1.0 for a uniformly exposed impression).
    """
    check_arg(n_users >= 1 and n_items >= 2, "n_users, n_items", (n_users, n_items), "at least 1 user, 2 items")
    check_arg(mean_impressions >= 1, "mean_impressions", mean_impressions, "at least 1")
    check_arg(0.0 <= random_exposure <= 1.0, "random_exposure", random_exposure, "a share in [0, 1]")
    check_arg(0.0 < long_view_threshold < 1.0, "long_view_threshold", long_view_threshold, "a watch ratio in (0, 1)")
    unknown = sorted(set(rates or {}) - set(RATES))
    if unknown:
        raise ZooValueError(f"rates for unknown tasks {unknown}; the interaction tasks are {list(RATES)}")
    targets = {**RATES, **(rates or {})}

    rng = _rng(seed, FACTORS)
    centres = rng.normal(size=(CLUSTERS, DIM))
    user_cluster, item_cluster = rng.integers(CLUSTERS, size=n_users), rng.integers(CLUSTERS, size=n_items)
    u = centres[user_cluster] + CLUSTER_SD * rng.normal(size=(n_users, DIM))
    v = centres[item_cluster] + CLUSTER_SD * rng.normal(size=(n_items, DIM))
    user_bias = USER_BIAS_SD * rng.normal(size=n_users)
    w_group = np.eye(DIM) + rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    w_task = {t: w_group + TASK_SPREAD * rng.normal(size=(DIM, DIM)) / np.sqrt(DIM) for t in RATES}
    duration = DURATION_MEDIAN * np.exp(DURATION_SD * rng.normal(size=n_items))
    scale = {t: _standardiser(u, w, v, rng) for t, w in {"watch": np.eye(DIM), **w_task}.items()}

    rng = _rng(seed, EXPOSURE)
    n_shown = np.exp(np.log(mean_impressions) - IMPRESSIONS_SD**2 / 2 + IMPRESSIONS_SD * rng.normal(size=n_users))
    n_shown = np.clip(np.round(n_shown), 5, n_items).astype(np.int64)
    n_rand = rng.binomial(n_shown, random_exposure)
    mean, sd = scale["watch"]
    user, item, is_rand = _exposures(u, v, SHARPNESS / sd, n_shown - n_rand, n_rand, rng)
    time = rng.uniform(0.0, DAYS * 86400.0, size=len(user))

    rng = _rng(seed, LABELS)
    ratio = sigmoid(SIGNAL * (_dots(u, v, user, item) - mean) / sd + WATCH_OFFSET + rng.normal(size=len(user)))
    labels = np.zeros((len(user), len(SIM_TASKS)), np.float32)
    labels[:, 0] = ratio >= long_view_threshold
    for t, task in enumerate(RATES, 1):
        mean, sd = scale[task]
        score = (_dots(u @ w_task[task], v, user, item) - mean) / sd
        logit = SIGNAL * score + user_bias[user]
        labels[:, t] = rng.random(len(user)) < sigmoid(logit + calibrate_bias(logit, targets[task]))

    rng = _rng(seed, FEATURES)
    segment = np.where(rng.random(n_users) < SEGMENT_NOISE, rng.integers(CLUSTERS, size=n_users), user_cluster)
    tags = np.zeros((n_items + 1, CLUSTERS), np.float32)
    tags[np.arange(1, n_items + 1), item_cluster] = 1.0
    tags[np.arange(1, n_items + 1), (item_cluster + rng.integers(1, CLUSTERS, size=n_items)) % CLUSTERS] = 1.0

    user, item = user + 1, item + 1  # ids start at 1; 0 is padding
    split = time_split(user, time, val_frac, test_frac)
    click = labels[:, SIM_TASKS.index("click")] > 0
    history, length = behaviour_history(user, time, item, click, max_history)
    tail = long_tail_users(user, split == 0, n_users, long_tail_max)
    values = {"watch_time": duration[item - 1] * ratio, "duration": duration[item - 1],
              "random_exposure": is_rand.astype(np.float64)}
    rows = RecSplit(user, item, time, labels, np.ones_like(labels, dtype=bool), history, length, tail[user], values)
    order = np.lexsort((time, user))
    vocab = {"user": n_users + 1, "item": n_items + 1, "segment": CLUSTERS + 1, "category": CLUSTERS + 1,
             "duration": len(DURATION_EDGES) + 2, "tags": CLUSTERS}
    return RecData("kuaishou_sim", SIM_TASKS, dict(SIM_GROUPS),
                   *(rows.subset(order[split[order] == k]) for k in range(3)), vocab,
                   {"segment": np.r_[0, segment + 1]},
                   {"category": np.r_[0, item_cluster + 1], "duration": np.r_[0, bucket(duration, DURATION_EDGES)]},
                   {"tags": tags}, np.array(["", *map(str, range(1, n_users + 1))]),
                   np.array(["", *map(str, range(1, n_items + 1))]))
