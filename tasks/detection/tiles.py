"""The packaged real detection sets (:func:`~.voc.deepforest_tiles`, :func:`~.voc.stardist_nuclei`) cut into small
square tiles, so that they join a mix as datasets of many small images whose objects are about Mini-UODB's size.

Each source image is split by rows, so that no pixel of a test tile is in a training tile: the bottom band of
``tile * max(1, round(H / 4 / tile))`` rows (about a quarter of the image, at least one tile) is the test region,
cut into non-overlapping ``tile x tile`` windows from the left (the last ``W mod tile`` columns are not used); the
rows above it are the training region, cut with stride ``tile / 2`` (windows overlap) plus a last window flush with
the region's right and bottom edges. A window keeps the boxes with at least half their area inside it, clipped to
it; it is then resized to ``out_size`` (PIL, antialiased), so a 40 px tree crown or a 25 px nucleus at
``tile=128, out_size=64`` becomes 10-20 px. Tiles with no box are kept in the test split (an empty window still
tests for false positives) and in training one in :data:`EMPTY_EVERY` is kept, in window order. Classes are the
reader's (``Alive``, ``Dead``, ``Tree`` for DeepForest; ``nucleus`` for StarDist). Results are cached in-process
(the 2472x2299 DeepForest PNG takes about 0.2 s to decode, and both splits read it).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from zoo.errors import check_arg

from .config import REAL_SETS
from .structures import DetDataset, DetEntry, make_entry

SPLITS = ("train", "test")
#: One empty training window in this many is kept.
EMPTY_EVERY = 4
#: A box is kept in a window when at least this share of its area lies inside it.
MIN_INSIDE = 0.5


def real_tiles(name: str, split: str, tile: int = 128, out_size: int = 64) -> DetDataset:
    """The ``split`` tiles of a packaged real set (module docstring), named ``real/<name>``.

    Args:
        name: ``deepforest`` or ``stardist``.
        split: ``train`` or ``test``.
        tile: the window side in source pixels.
        out_size: the side each window is resized to.

    Raises:
        ZooValueError: an unknown name or split, or sizes that are not positive ints.
    """
    check_arg(name in REAL_SETS, "name", name, REAL_SETS)
    check_arg(split in SPLITS, "split", split, SPLITS)
    check_arg(isinstance(tile, int) and tile >= 2, "tile", tile, "an int >= 2")
    check_arg(isinstance(out_size, int) and out_size >= 1, "out_size", out_size, "a positive int")
    return _tiles(name, split, tile, out_size)


@cache
def _source(name: str) -> DetDataset:
    """The source set with its images decoded once, held in memory."""
    from .voc import deepforest_tiles, stardist_nuclei

    data = deepforest_tiles() if name == "deepforest" else stardist_nuclei()
    entries = [DetEntry(s.name, s.boxes, s.labels, s.image) for s in (data[i] for i in range(len(data)))]
    return DetDataset(data.name, data.classes, entries)


def held_out_rows(height: int, tile: int) -> int:
    """Rows at the bottom of an image of ``height`` rows that form its test region."""
    return tile * max(1, round(height / 4 / tile))


def windows(height: int, width: int, tile: int, split: str) -> list[tuple[int, int]]:
    """Top-left ``(row, col)`` of the ``split`` windows of an image (module docstring); none when it is too small."""
    band = held_out_rows(height, tile)
    if height < band:
        return []
    if split == "test":
        top = height - band
        return [(top + r, c) for r in range(0, band - tile + 1, tile) for c in range(0, width - tile + 1, tile)]
    return [(r, c) for r in _starts(height - band, tile) for c in _starts(width, tile)]


def _starts(length: int, tile: int) -> list[int]:
    """Window starts along an axis of ``length`` with stride ``tile // 2``, the last one flush with the end."""
    if length < tile:
        return []
    starts = list(range(0, length - tile + 1, tile // 2))
    return starts if starts[-1] == length - tile else [*starts, length - tile]


def crop_boxes(boxes: np.ndarray, row: int, col: int, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """The boxes clipped to a window, in its pixels, and the mask of the boxes kept (>= MIN_INSIDE of the area)."""
    clipped = np.clip(boxes - np.array([col, row, col, row], np.float32), 0, tile)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = inside >= MIN_INSIDE * area
    return clipped[keep], keep


@cache
def _tiles(name: str, split: str, tile: int, out_size: int) -> DetDataset:
    from PIL import Image

    source = _source(name)
    entries, empty_seen = [], 0
    factor = out_size / tile
    for entry in source.entries:
        image = entry.image
        for row, col in windows(*image.shape[:2], tile, split):
            boxes, keep = crop_boxes(entry.boxes, row, col, tile)
            if not len(boxes) and split == "train":
                empty_seen += 1
                if (empty_seen - 1) % EMPTY_EVERY:
                    continue
            window = Image.fromarray(image[row:row + tile, col:col + tile])
            pixels = np.array(window.resize((out_size, out_size), Image.Resampling.BILINEAR))
            entries.append(make_entry(f"{entry.name.rsplit('.', 1)[0]}@r{row}c{col}", boxes * factor,
                                      entry.labels[keep], pixels))
    return DetDataset(f"real/{name}", source.classes, entries)
