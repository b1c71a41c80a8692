"""SynthVAD: seeded snippet features with anomaly classes that differ in strength and temporal profile, so that
class experts, a gate and temporal pseudo-labels can be tested offline in the layout of real I3D features.

Model, for video i of a split (snippets t = 0..T-1, T uniform in ``t_range``, features in R^D):

- normal content: ``x_t = m + B z_t + 0.3 eta_t`` with a scene mean ``m`` drawn from :data:`SCENES` scenes
  ``~ N(0, I)`` that normal and abnormal videos of every split share (cameras that film both, as in real
  benchmarks, so a video's label cannot be read from its scene), a random orthonormal
  ``D x 8`` basis ``B`` (a per-video low-dimensional subspace) and an AR(1) latent ``z_t = 0.95 z_{t-1} +
  sqrt(1 - 0.95^2) eps_t`` with unit stationary variance;
- benign bursts: :data:`BENIGN_SHARE` of all videos, normal or not, get 1-3 short bursts along random directions
  that are not anomalies, so that "a burst = an anomaly" does not score well;
- anomalies: odd-indexed videos are anomalous (half of a split), their class cycling through :data:`CLASSES`.
  Each holds 1-3 events whose total length is a class-dependent share of T, and inside an event
  ``x_t += a_c p_c(t) u_c`` with the class's fixed unit direction ``u_c`` (shared by all videos and splits of a
  seed), amplitude ``a_c`` and profile ``p_c``. Two classes are strong (a_c = 3, about the spread of a normal
  snippet around its scene, which benign bursts match), two medium (1.8) and two weak (0.9, about two sds of a
  video's normal snippets along ``u_c`` but a quarter of their spread, so only the direction gives them away);
  ``SceneShift``'s direction leans towards the video's scene mean, so it looks different in every scene;
- crops: every crop is the snippet plus independent noise of sd :data:`CROP_NOISE` (ten-crop features are
  augmentations of one snippet).

Training videos carry their class and video label only; test videos also carry frame labels (16 frames per
snippet, every snippet of an event anomalous). Video i of a split is drawn from
``SeedSequence([seed, split id, i])``, so a larger split starts with the videos of a smaller one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from zoo.errors import check_arg

from .features import FRAMES_PER_SNIPPET, NORMAL, VADSplit, Video

SPLITS = ("train", "test")
LATENT_RANK, AR_COEF, NOISE_SD, SCENE_SD, SCENES = 8, 0.95, 0.3, 1.0, 16
CROP_NOISE = 0.05
BENIGN_SHARE, BENIGN_AMPLITUDE, BENIGN_LENGTH = 0.3, 3.0, (1, 4)
_DIRECTIONS_STREAM = 2  # after the split ids, so the class directions never share a seed with a video


class AnomalyClass(NamedTuple):
    """An anomaly class: its amplitude along its direction, its profile and the share of T its events cover."""

    name: str
    amplitude: float
    profile: str
    share: tuple[float, float]


CLASSES = (
    AnomalyClass("Spike", 3.0, "flat", (0.02, 0.05)),  # strong, 1-3 short events
    AnomalyClass("Plateau", 0.9, "flat", (0.2, 0.4)),  # weak and long
    AnomalyClass("Ramp", 1.8, "ramp", (0.1, 0.4)),  # slow drift, 0 -> a_c over the event
    AnomalyClass("Bursts", 3.0, "periodic", (0.1, 0.3)),  # 1, 0.6, 0.2, 0.6, 1, ... times a_c
    AnomalyClass("TwoPhase", 1.8, "two_phase", (0.1, 0.4)),  # +a_c, then -a_c
    AnomalyClass("SceneShift", 0.9, "flat", (0.05, 0.4)),  # weak, scene-dependent direction
)


@dataclass(frozen=True)
class SynthVAD:
    """The generator (module docstring); the defaults are a smoke-sized dataset, the full one is 800 training and
    300 test videos with ``t_range=(64, 256)``."""

    seed: int = 0
    n_train: int = 64
    n_test: int = 32
    t_range: tuple[int, int] = (64, 128)
    crops: int = 1
    dim: int = 64
    directions: np.ndarray = field(init=False, repr=False, compare=False)
    scenes: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_arg(self.n_train >= 0 and self.n_test >= 0, "n_train/n_test", (self.n_train, self.n_test),
                  "non-negative counts")
        low, high = self.t_range
        check_arg(16 <= low <= high, "t_range", self.t_range, "(low, high) with 16 <= low <= high snippets")
        check_arg(self.crops >= 1, "crops", self.crops, "at least 1")
        check_arg(self.dim >= LATENT_RANK, "dim", self.dim, f"at least {LATENT_RANK}")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _DIRECTIONS_STREAM]))
        object.__setattr__(self, "directions", _unit(rng.standard_normal((len(CLASSES), self.dim))))
        object.__setattr__(self, "scenes", rng.normal(0.0, SCENE_SD, (SCENES, self.dim)))

    def split(self, split: str) -> VADSplit:
        """All videos of ``"train"`` or ``"test"``."""
        check_arg(split in SPLITS, "split", split, SPLITS)
        count = self.n_train if split == "train" else self.n_test
        return VADSplit(split, [self.video(split, i) for i in range(count)], tuple(c.name for c in CLASSES))

    def video(self, split: str, index: int) -> Video:
        """Video ``index`` of a split; the same arguments give the same video whatever the split sizes."""
        check_arg(split in SPLITS, "split", split, SPLITS)
        check_arg(index >= 0, "index", index, "a non-negative index")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, SPLITS.index(split), index]))
        steps = int(rng.integers(self.t_range[0], self.t_range[1] + 1))
        scene = self.scenes[rng.integers(SCENES)]
        x = scene + _ar_content(steps, self.dim, rng) + rng.normal(0.0, NOISE_SD, (steps, self.dim))
        if rng.random() < BENIGN_SHARE:
            x += _benign_bursts(steps, self.dim, rng)
        labels = np.zeros(steps, dtype=np.uint8)
        cls, name = NORMAL, f"{NORMAL}_Videos{index:04d}_synth"
        if index % 2:
            spec = CLASSES[(index // 2) % len(CLASSES)]
            direction = self.directions[CLASSES.index(spec)]
            if spec.name == "SceneShift":
                direction = _unit(direction + scene / np.linalg.norm(scene))
            for start, stop in _events(steps, spec.share, rng):
                x[start:stop] += spec.amplitude * _profile(spec.profile, stop - start)[:, None] * direction
                labels[start:stop] = 1
            cls, name = spec.name, f"{spec.name}{index:04d}_synth"
        features = (x[:, None, :] + rng.normal(0.0, CROP_NOISE, (steps, self.crops, self.dim))).astype(np.float32)
        frames = np.repeat(labels, FRAMES_PER_SNIPPET) if split == "test" else None
        return Video(name, features, cls, frames)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _ar_content(steps: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``B z_t``: an AR(1) latent with unit stationary variance in a random LATENT_RANK-dim subspace."""
    basis, _ = np.linalg.qr(rng.standard_normal((dim, LATENT_RANK)))
    shocks = rng.standard_normal((steps, LATENT_RANK)) * np.sqrt(1 - AR_COEF**2)
    z = np.empty((steps, LATENT_RANK))
    z[0] = rng.standard_normal(LATENT_RANK)
    for t in range(1, steps):
        z[t] = AR_COEF * z[t - 1] + shocks[t]
    return z @ basis.T


def _benign_bursts(steps: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros((steps, dim))
    for _ in range(int(rng.integers(1, 4))):
        length = int(rng.integers(BENIGN_LENGTH[0], BENIGN_LENGTH[1] + 1))
        start = int(rng.integers(0, steps - length + 1))
        out[start:start + length] += BENIGN_AMPLITUDE * _unit(rng.standard_normal(dim))
    return out


def _events(steps: int, share: tuple[float, float], rng: np.random.Generator) -> list[tuple[int, int]]:
    """1-3 non-overlapping [start, stop) events covering about ``share`` of the snippets, each at least one."""
    count = int(rng.integers(1, 4))
    total = max(count, round(rng.uniform(*share) * steps))
    cuts = np.sort(rng.choice(np.arange(1, total), size=count - 1, replace=False)) if count > 1 else []
    lengths = np.diff([0, *cuts, total])
    # Stars and bars: count sorted slots among the free snippets + count place the events with gaps >= 0.
    slots = np.sort(rng.choice(steps - total + count, size=count, replace=False))
    starts = slots - np.arange(count) + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return [(int(s), int(s + n)) for s, n in zip(starts, lengths)]


def _profile(kind: str, length: int) -> np.ndarray:
    k = np.arange(length)
    if kind == "ramp":
        return (k + 1) / length
    if kind == "periodic":
        return 0.6 + 0.4 * np.cos(np.pi * k / 2)
    if kind == "two_phase":
        return np.where(k < length / 2, 1.0, -1.0)
    return np.ones(length)
