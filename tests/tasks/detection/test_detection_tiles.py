"""The real sets cut into tiles: fixed counts, every box inside its tile, training and test windows that share no
pixel, the half-area rule against a plain loop over the source boxes, and tile pixels equal to the source crop."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import ZooValueError
from zoo.tasks.detection.tiles import (EMPTY_EVERY, _source, _tiles, crop_boxes, held_out_rows, real_tiles,
                                       windows)

# (tiles, boxes) per set and split at tile=128, out_size=64
COUNTS = {("deepforest", "train"): (945, 2584), ("deepforest", "test"): (109, 232),
          ("stardist", "train"): (35, 247), ("stardist", "test"): (4, 33)}


def origin(entry_name: str) -> tuple[str, int, int]:
    """``(source image stem, row, col)`` from a tile's name ``<stem>@r<row>c<col>``."""
    stem, where = entry_name.rsplit("@", 1)
    row, col = where[1:].split("c")
    return stem, int(row), int(col)


@pytest.mark.parametrize("name,split", list(COUNTS))
def test_counts_fixed_and_deterministic(name, split):
    data = real_tiles(name, split)
    assert data.name == f"real/{name}"
    assert (len(data), data.num_boxes) == COUNTS[name, split]
    again = _tiles.__wrapped__(name, split, 128, 64)
    assert [e.name for e in again.entries] == [e.name for e in data.entries]
    for a, b in zip(again.entries, data.entries):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.image, b.image)
    assert real_tiles(name, split) is data  # cached


def test_classes_are_the_readers():
    assert real_tiles("deepforest", "train").classes == ("Alive", "Dead", "Tree")
    assert real_tiles("stardist", "test").classes == ("nucleus",)
    assert all(real_tiles("deepforest", s).class_counts().min() > 0 for s in ("train", "test"))


@pytest.mark.parametrize("name,split", list(COUNTS))
def test_boxes_inside_tiles(name, split):
    for entry in real_tiles(name, split).entries:
        assert entry.image.shape == (64, 64, 3) and entry.image.dtype == np.uint8
        assert entry.boxes.dtype == np.float32 and len(entry.boxes) == len(entry.labels)
        if len(entry.boxes):
            assert (entry.boxes >= 0).all() and (entry.boxes <= 64).all()
            assert (entry.boxes[:, 2:] > entry.boxes[:, :2]).all()


@pytest.mark.parametrize("name", ["deepforest", "stardist"])
def test_train_and_test_pixel_disjoint(name):
    """Rasterise every window of each source image: no pixel is covered by both a training and a test tile."""
    source = _source(name)
    stems = {e.name.rsplit(".", 1)[0]: e.image.shape[:2] for e in source.entries}
    cover = {stem: np.zeros((2, *shape), bool) for stem, shape in stems.items()}
    for k, split in enumerate(("train", "test")):
        for entry in real_tiles(name, split).entries:
            stem, row, col = origin(entry.name)
            cover[stem][k, row:row + 128, col:col + 128] = True
    for stem, mask in cover.items():
        assert not (mask[0] & mask[1]).any(), stem
        assert mask[1].any() and mask[0].any()


def test_windows_by_hand():
    """A 400 x 400 image, tile 128: the bottom 128 rows are test (3 windows, 16 columns unused); training rows
    0-271 at stride 64 with a last window flush at 144."""
    assert held_out_rows(400, 128) == 128 and held_out_rows(2472, 128) == 640 and held_out_rows(512, 256) == 256
    assert windows(400, 400, 128, "test") == [(272, 0), (272, 128), (272, 256)]
    train = windows(400, 400, 128, "train")
    assert sorted({r for r, _ in train}) == [0, 64, 128, 144]
    assert sorted({c for _, c in train}) == [0, 64, 128, 192, 256, 272]
    assert len(train) == 24
    assert windows(100, 100, 128, "train") == [] and windows(100, 100, 128, "test") == []
    assert windows(100, 300, 128, "test") == []  # shorter than one tile: no window, not a negative row


def test_half_area_rule_against_a_loop():
    boxes = np.array([[0, 0, 10, 10], [-6, 0, 4, 10], [-4, 0, 6, 10], [-5, 0, 5, 10], [95, 95, 110, 101]], np.float32)
    clipped, keep = crop_boxes(boxes + 100, 100, 100, 100)
    assert keep.tolist() == [True, False, True, True, False]
    np.testing.assert_array_equal(clipped, [[0, 0, 10, 10], [0, 0, 6, 10], [0, 0, 5, 10]])


@pytest.mark.parametrize("name,split", [("stardist", "train"), ("deepforest", "test")])
def test_tiles_match_a_plain_loop(name, split):
    """Each tile's boxes are, in source order, the source boxes with >= half their area in its window (an explicit
    intersection per box), clipped and scaled by out_size / tile; its pixels are the source crop at out_size=tile."""
    source = {e.name.rsplit(".", 1)[0]: e for e in _source(name).entries}
    full = real_tiles(name, split, tile=128, out_size=128)
    small = real_tiles(name, split)
    assert [e.name for e in full.entries] == [e.name for e in small.entries]
    for big, entry in zip(full.entries, small.entries):
        stem, row, col = origin(entry.name)
        src = source[stem]
        np.testing.assert_array_equal(big.image, src.image[row:row + 128, col:col + 128])
        expected, labels = [], []
        for (x1, y1, x2, y2), label in zip(src.boxes.tolist(), src.labels.tolist()):
            ix1, iy1, ix2, iy2 = max(x1, col), max(y1, row), min(x2, col + 128), min(y2, row + 128)
            inside = max(0.0, ix2 - ix1) * max(0.0, iy2 - iy1)
            if inside >= 0.5 * (x2 - x1) * (y2 - y1):
                expected.append([(ix1 - col) / 2, (iy1 - row) / 2, (ix2 - col) / 2, (iy2 - row) / 2])
                labels.append(label)
        np.testing.assert_allclose(entry.boxes, np.array(expected, np.float32).reshape(-1, 4), atol=1e-4)
        assert entry.labels.tolist() == labels


def test_empty_tiles_kept_as_documented():
    """Test keeps every empty window; training keeps one in EMPTY_EVERY, so a few but not all."""
    source = {e.name.rsplit(".", 1)[0]: e for e in _source("deepforest").entries}
    for split in ("train", "test"):
        empty_windows = sum(len(crop_boxes(e.boxes, r, c, 128)[0]) == 0 for e in source.values()
                            for r, c in windows(*e.image.shape[:2], 128, split))
        kept = sum(len(e.boxes) == 0 for e in real_tiles("deepforest", split).entries)
        want = empty_windows if split == "test" else -(-empty_windows // EMPTY_EVERY)
        assert kept == want and kept > 0


@pytest.mark.parametrize("kwargs,match", [({"name": "coco"}, "name"), ({"split": "val"}, "split"),
                                          ({"tile": 1}, "tile"), ({"out_size": 0}, "out_size")])
def test_bad_arguments(kwargs, match):
    args = {"name": "stardist", "split": "train"} | kwargs
    with pytest.raises(ZooValueError, match=match):
        real_tiles(**args)
