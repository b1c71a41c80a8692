"""Mini-UODB: six seeded 64x64 RGB detection datasets of different visual domains with exact boxes, a small
offline stand-in for the Universal Object Detection Benchmark (Wang et al., CVPR 2019) that DAMEX mixes, so a
dataset-aware mixture of experts can be trained and tested on a CPU.

Domains (index, name, classes, training images at ``scale=1``):

0. ``digits``: scikit-learn's 8x8 ``load_digits`` glyphs, upscaled (nearest) and drawn in a random colour on
   uniform noise; classes ``0``..``9``; 3,000. Training images use the first 1,500 glyphs, test images the other 297.
1. ``shapes``: filled circle, square and triangle on crops of scikit-learn's two sample photos
   (``load_sample_images``, 64-192 px crops resized to 64 by nearest sampling); classes ``circle``, ``square``,
   ``triangle``; 2,000.
2. ``comic``: the same three classes in flat palette colours with 2-px black outlines on a pastel halftone
   background (dots on a 4-px grid); 200 (scarce). Its class names equal those of ``shapes``: a
   :class:`.DatasetMix` keeps them apart unless asked to merge names.
3. ``faces``: skin-toned ellipses with two eyes and a mouth, class ``face``, plus 0-3 plain ellipses that carry no
   box (distractors) on a smooth gradient; 1,500.
4. ``signs``: ``prohibitory`` (red ring, white disc), ``warning`` (yellow diamond, black rim), ``information``
   (blue square) and ``stop`` (red octagon) over sky and road, plus 0-3 distractors of the same shapes in other
   colours (green, grey, brown) that carry no box; 400 (scarce).
5. ``rects``: rectangles at random angles on a sine-grating texture; ``long`` (aspect 2.5-4) and ``squat``
   (aspect 1-1.5); 800.

Every image holds 1-8 labelled objects (plus distractors) whose box has a longer side of 6-28 px, placed so that no
two boxes (labelled or not) have IoU above :data:`MAX_IOU`; a placement that fails :data:`PLACEMENT_TRIES` times is
dropped, the first object never is. A box is the bounds of its object's drawn pixels, outline included (for ``rects``
the axis-aligned bounds of the rotated shape), in continuous coordinates: ``[c0, r0, c1 + 1, r1 + 1]`` for pixel rows
r0..r1 and columns c0..c1. Objects are drawn in order, later ones over earlier ones. Then each image gets a colour
jitter (a per-channel gain in [0.85, 1.15] and an offset in [-15, 15]) and Gaussian pixel noise (sd 4), and is rounded
to uint8. Test sets hold 200 images each. Image i of domain d and split s is drawn from ``SeedSequence([seed, d, s,
i])`` (s = 0 train, 1 test), so a larger split starts with the images of a smaller one and every image can be drawn
alone. The sizes scale with ``scale`` (at least one image each). """

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from zoo.errors import check_arg, check_seed

from .structures import DetDataset, make_entry

SIZE = 64
OBJECTS = (1, 8)
EXTENT = (6, 28)
MAX_IOU = 0.3
PLACEMENT_TRIES = 20
NOISE_SD = 4.0
SPLITS = ("train", "test")
TEST_SIZE = 200
_SHAPES3 = ("circle", "square", "triangle")


@dataclass(frozen=True)
class Domain:
    """One Mini-UODB dataset: its name, class names and training size at ``scale=1``."""

    name: str
    classes: tuple[str, ...]
    train_size: int


DOMAINS = (
    Domain("digits", tuple(str(d) for d in range(10)), 3000),
    Domain("shapes", _SHAPES3, 2000),
    Domain("comic", _SHAPES3, 200),
    Domain("faces", ("face",), 1500),
    Domain("signs", ("prohibitory", "warning", "information", "stop"), 400),
    Domain("rects", ("long", "squat"), 800),
)

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5  # pixel centres


@dataclass(frozen=True)
class MiniUODB:
    """The generator (module docstring).

    Args:
        seed: the seed of every image.
        scale: multiplies every split size (1.0: 3,000/2,000/200/1,500/400/800 training, 200 test images).
    """

    seed: int = 0
    scale: float = 1.0

    def __post_init__(self) -> None:
        check_seed(self.seed)
        check_arg(isinstance(self.scale, int | float) and self.scale > 0, "scale", self.scale, "a number > 0")

    def size(self, index_or_name: int | str, split: str) -> int:
        """Number of images of one domain's split."""
        domain = DOMAINS[self.domain_index(index_or_name)]
        check_arg(split in SPLITS, "split", split, SPLITS)
        return max(1, round((domain.train_size if split == "train" else TEST_SIZE) * self.scale))

    @staticmethod
    def domain_index(index_or_name: int | str) -> int:
        names = [d.name for d in DOMAINS]
        ok = index_or_name in names or (isinstance(index_or_name, int) and 0 <= index_or_name < len(DOMAINS))
        check_arg(ok, "dataset", index_or_name, f"an index in [0, {len(DOMAINS)}) or one of {', '.join(names)}")
        return names.index(index_or_name) if isinstance(index_or_name, str) else index_or_name

    def dataset(self, index_or_name: int | str, split: str = "train") -> DetDataset:
        """One domain's split, drawn in memory, named ``miniuodb/<domain>``."""
        index = self.domain_index(index_or_name)
        entries = []
        for i in range(self.size(index, split)):
            image, boxes, labels, _ = self.render(index, split, i)
            entries.append(make_entry(f"{DOMAINS[index].name}_{split}_{i:05d}", boxes, labels, image))
        return DetDataset(f"miniuodb/{DOMAINS[index].name}", DOMAINS[index].classes, entries)

    def render(self, index_or_name: int | str, split: str, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                             np.ndarray]:
        """Image i of a domain's split: uint8 ``[64, 64, 3]``, boxes ``[N, 4]``, labels ``[N]`` and the boolean
        pixel masks ``[N, 64, 64]`` of the labelled objects as drawn (before later objects covered them)."""
        index = self.domain_index(index_or_name)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, index, SPLITS.index(split), i]))
        canvas = _BACKGROUNDS[index](rng, split)
        drawn = _draw_objects(rng, canvas, _OBJECTS[index], split, index)
        gain = rng.uniform(0.85, 1.15, 3)
        offset = rng.uniform(-15, 15, 3)
        noisy = canvas * gain + offset + rng.normal(0.0, NOISE_SD, canvas.shape)
        image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        boxes = np.array([b for b, lab, _ in drawn if lab >= 0], np.float32).reshape(-1, 4)
        labels = np.array([lab for _, lab, _ in drawn if lab >= 0], np.int64)
        masks = np.array([m for _, lab, m in drawn if lab >= 0], bool).reshape(-1, SIZE, SIZE)
        return image, boxes, labels, masks


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` IoU of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def mask_box(mask: np.ndarray) -> list[float]:
    """The continuous-coordinate bounds of a mask's pixels."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


# An object: (label or -1 for a distractor, layers) where each layer is (mask, RGB colour) painted in order;
# the box is the bounds of the first layer (the outermost).
Layers = list[tuple[np.ndarray, np.ndarray]]
ObjectFn = Callable[[np.random.Generator, str, float, float, float], tuple[int, Layers]]


def _draw_objects(rng: np.random.Generator, canvas: np.ndarray, make: ObjectFn, split: str,
                  domain: int) -> list[tuple[list[float], int, np.ndarray]]:
    wanted = int(rng.integers(OBJECTS[0], OBJECTS[1] + 1))
    distractors = int(rng.integers(0, 4)) if domain in (3, 4) else 0
    kinds = [True] * wanted + [False] * distractors
    drawn: list[tuple[list[float], int, np.ndarray]] = []
    for labelled in kinds:
        for _ in range(PLACEMENT_TRIES) if drawn else itertools.count():  # the first object always finds a place
            extent = float(rng.uniform(*EXTENT))
            cx, cy = rng.uniform(extent / 2, SIZE - extent / 2, 2)
            label, layers = make(rng, split, extent, cx, cy) if labelled else _distractor(domain, rng, extent, cx, cy)
            if not layers[0][0].any():
                continue
            box = mask_box(layers[0][0])
            if not EXTENT[0] <= max(box[2] - box[0], box[3] - box[1]) <= EXTENT[1]:
                continue
            if not drawn or box_iou(np.array([box]), np.array([b for b, _, _ in drawn])).max() <= MAX_IOU:
                break
        else:
            continue
        for mask, colour in layers:
            canvas[mask] = colour
        drawn.append((box, label if labelled else -1, layers[0][0]))
    return drawn


def _colour(rng: np.random.Generator, base: tuple[float, float, float], jitter: float = 20.0) -> np.ndarray:
    return np.clip(np.array(base, np.float32) + rng.uniform(-jitter, jitter, 3), 0, 255)


def _bright(rng: np.random.Generator) -> np.ndarray:
    """A saturated random colour (one channel high, one low)."""
    colour = rng.uniform(0, 255, 3)
    colour[rng.integers(3)] = rng.uniform(200, 255)
    colour[rng.integers(3)] = rng.uniform(0, 60)
    return colour.astype(np.float32)


# Shapes as masks over the image's pixel centres; `grow` widens the shape by that many pixels (outlines).

def _disc(cx: float, cy: float, r: float, grow: float = 0.0) -> np.ndarray:
    return (_XX - cx) ** 2 + (_YY - cy) ** 2 <= (r + grow) ** 2


def _ellipse(cx: float, cy: float, a: float, b: float) -> np.ndarray:
    return ((_XX - cx) / a) ** 2 + ((_YY - cy) / b) ** 2 <= 1.0


def _polygon(cx: float, cy: float, vertices: np.ndarray, grow: float = 0.0) -> np.ndarray:
    """A convex polygon (vertices in either turning order, relative to the centre) grown outwards."""
    mask = np.ones((SIZE, SIZE), bool)
    following = np.roll(vertices, -1, axis=0)
    turn = np.sign(np.sum(vertices[:, 0] * following[:, 1] - following[:, 0] * vertices[:, 1]))
    for (x0, y0), (x1, y1) in zip(vertices, following):
        nx, ny = turn * (y1 - y0), turn * (x0 - x1)
        norm = np.hypot(nx, ny)
        mask &= ((_XX - cx - x0) * nx + (_YY - cy - y0) * ny) / norm <= grow
    return mask


def _regular(sides: int, radius: float, angle: float) -> np.ndarray:
    theta = angle - 2 * np.pi * np.arange(sides) / sides
    return np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)


def _shape(kind: str, cx: float, cy: float, extent: float, grow: float = 0.0) -> np.ndarray:
    half = extent / 2
    if kind == "circle":
        return _disc(cx, cy, half, grow)
    if kind == "square":
        return _polygon(cx, cy, _regular(4, half * np.sqrt(2), np.pi / 4), grow)
    return _polygon(cx, cy, _regular(3, half, -np.pi / 2), grow)  # triangle, apex up


# Backgrounds: float32 [64, 64, 3] in 0-255.

def _noise_background(rng: np.random.Generator, split: str) -> np.ndarray:
    return rng.uniform(0, 160, (SIZE, SIZE, 3)).astype(np.float32)


@cache
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(np.asarray(image, np.float32) for image in load_sample_images().images)


def _photo_background(rng: np.random.Generator, split: str) -> np.ndarray:
    photo = _photos()[int(rng.integers(len(_photos())))]
    crop = int(rng.integers(64, 193))
    top, left = rng.integers(0, photo.shape[0] - crop + 1), rng.integers(0, photo.shape[1] - crop + 1)
    index = np.arange(SIZE) * crop // SIZE
    return photo[top + index[:, None], left + index[None, :]].copy()


def _halftone_background(rng: np.random.Generator, split: str) -> np.ndarray:
    paper = rng.uniform(200, 255, 3).astype(np.float32)
    ink = _bright(rng) * 0.5 + paper * 0.5
    radius = rng.uniform(0.8, 1.6)
    dots = (_XX % 4 - 2) ** 2 + (_YY % 4 - 2) ** 2 <= radius ** 2
    return np.where(dots[..., None], ink, paper).astype(np.float32)


def _gradient_background(rng: np.random.Generator, split: str) -> np.ndarray:
    top, bottom = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    t = (_YY / SIZE)[..., None]
    return (top * (1 - t) + bottom * t).astype(np.float32)


def _street_background(rng: np.random.Generator, split: str) -> np.ndarray:
    horizon = rng.uniform(24, 44)
    sky = _colour(rng, (130, 180, 230), 25)
    road = _colour(rng, (90, 90, 90), 20)
    return np.where((_YY < horizon)[..., None], sky, road).astype(np.float32)


def _texture_background(rng: np.random.Generator, split: str) -> np.ndarray:
    texture = np.zeros((SIZE, SIZE), np.float32)
    for _ in range(3):
        angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.2, 0.9), rng.uniform(0, 2 * np.pi)
        texture += np.sin(freq * (_XX * np.cos(angle) + _YY * np.sin(angle)) + phase)
    base, tint = rng.uniform(70, 150, 3), rng.uniform(10, 30, 3)
    return (base + tint * texture[..., None]).astype(np.float32)


_BACKGROUNDS = (_noise_background, _photo_background, _halftone_background, _gradient_background,
                _street_background, _texture_background)


# Labelled objects, one function per domain: (rng, split, extent, cx, cy) -> (label, layers).

@cache
def _glyphs() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


def _digit(rng: np.random.Generator, split: str, extent: float, cx: float, cy: float) -> tuple[int, Layers]:
    images, targets = _glyphs()
    pick = int(rng.integers(0, 1500)) if split == "train" else int(rng.integers(1500, len(images)))
    side = int(round(extent))
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    index = np.arange(side) * 8 // side
    mask = np.zeros((SIZE, SIZE), bool)
    mask[top:top + side, left:left + side] = images[pick][index[:, None], index[None, :]] > 4
    return int(targets[pick]), [(mask, _bright(rng))]


def _plain_shape(rng: np.random.Generator, split: str, extent: float, cx: float, cy: float) -> tuple[int, Layers]:
    label = int(rng.integers(3))
    return label, [(_shape(_SHAPES3[label], cx, cy, extent), _bright(rng))]


_PALETTE = np.array([(230, 40, 40), (40, 90, 220), (250, 210, 30), (40, 180, 70), (240, 130, 20), (170, 60, 200)],
                    np.float32)


def _comic_shape(rng: np.random.Generator, split: str, extent: float, cx: float, cy: float) -> tuple[int, Layers]:
    label = int(rng.integers(3))
    kind = _SHAPES3[label]
    fill = _PALETTE[rng.integers(len(_PALETTE))]
    return label, [(_shape(kind, cx, cy, extent), np.zeros(3, np.float32)), (_shape(kind, cx, cy, extent, -2.0),
                                                                             fill)]


def _face(rng: np.random.Generator, split: str, extent: float, cx: float, cy: float) -> tuple[int, Layers]:
    b = extent / 2
    a = b * rng.uniform(0.7, 0.85)
    dark = _colour(rng, (40, 25, 20), 15)
    eye = max(0.9, 0.16 * a)
    layers = [(_ellipse(cx, cy, a, b), _colour(rng, (225, 180, 145), 25)),
              (_disc(cx - 0.4 * a, cy - 0.25 * b, eye), dark), (_disc(cx + 0.4 * a, cy - 0.25 * b, eye), dark),
              (_ellipse(cx, cy + 0.45 * b, 0.45 * a, max(0.6, 0.1 * b)), _colour(rng, (150, 40, 40), 20))]
    return 0, layers


def _sign(rng: np.random.Generator, split: str, extent: float, cx: float, cy: float) -> tuple[int, Layers]:
    label = int(rng.integers(4))
    half = extent / 2
    rim = max(1.0, 0.15 * half)
    if label == 0:  # prohibitory: red ring around a white disc
        return 0, [(_disc(cx, cy, half), _colour(rng, (220, 30, 30))), (_disc(cx, cy, half - rim),
                                                                         _colour(rng, (245, 245, 245), 10))]
    if label == 1:  # warning: yellow diamond with a black rim
        outline = _regular(4, half, 0.0)
        return 1, [(_polygon(cx, cy, outline), _colour(rng, (20, 20, 20), 10)),
                   (_polygon(cx, cy, outline, -rim), _colour(rng, (250, 210, 20)))]
    if label == 2:  # information: blue square
        return 2, [(_shape("square", cx, cy, extent), _colour(rng, (30, 80, 210)))]
    return 3, [(_polygon(cx, cy, _regular(8, half / np.cos(np.pi / 8), np.pi / 8)), _colour(rng, (200, 20, 20)))]


def _rect(rng: np.random.Generator, split: str, extent: float, cx: float, cy: float) -> tuple[int, Layers]:
    label = int(rng.integers(2))
    aspect = rng.uniform(2.5, 4.0) if label == 0 else rng.uniform(1.0, 1.5)
    angle = rng.uniform(0, np.pi)
    cos, sin = abs(np.cos(angle)), abs(np.sin(angle))
    length = extent / max(cos + sin / aspect, sin + cos / aspect)  # the rotated bounds' longer side is `extent`
    width = max(2.0, length / aspect)
    corners = np.array([(length, width), (-length, width), (-length, -width), (length, -width)]) / 2
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return label, [(_polygon(cx, cy, corners @ rotation.T), _bright(rng))]


def _distractor(domain: int, rng: np.random.Generator, extent: float, cx: float, cy: float) -> tuple[int, Layers]:
    if domain == 3:  # a plain ellipse
        half = extent / 2
        return -1, [(_ellipse(cx, cy, half * rng.uniform(0.5, 1.0), half), _colour(rng, (200, 160, 130), 50))]
    colour = (60, 170, 60) if rng.random() < 0.4 else (130, 130, 130) if rng.random() < 0.5 else (120, 80, 40)
    kind = _SHAPES3[int(rng.integers(3))]
    return -1, [(_shape(kind, cx, cy, extent), _colour(rng, colour))]


_OBJECTS: tuple[ObjectFn, ...] = (_digit, _plain_shape, _comic_shape, _face, _sign, _rect)
