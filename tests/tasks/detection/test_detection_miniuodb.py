"""Mini-UODB: seeded and prefix-stable, boxes inside the image and exactly bounding the drawn pixels, bounded
overlap and object sizes, the documented split sizes and class names."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import ZooValueError
from zoo.tasks.detection.miniuodb import DOMAINS, MAX_IOU, MiniUODB, box_iou

SMALL = MiniUODB(seed=3, scale=0.01)


def test_sizes_and_classes():
    full = MiniUODB()
    assert [full.size(d, "train") for d in range(6)] == [3000, 2000, 200, 1500, 400, 800]
    assert [full.size(d.name, "test") for d in DOMAINS] == [200] * 6
    assert [SMALL.size(d, "train") for d in range(6)] == [30, 20, 2, 15, 4, 8]
    assert MiniUODB(scale=0.001).size("comic", "test") == 1
    assert DOMAINS[1].classes == DOMAINS[2].classes == ("circle", "square", "triangle")
    assert [len(d.classes) for d in DOMAINS] == [10, 3, 3, 1, 4, 2]
    dataset = SMALL.dataset("signs", "test")
    assert dataset.name == "miniuodb/signs" and len(dataset) == 2 and dataset.classes == DOMAINS[4].classes


def test_same_seed_same_images_and_larger_split_extends_smaller():
    small, large = MiniUODB(seed=3, scale=0.01).dataset(0), MiniUODB(seed=3, scale=0.02).dataset(0)
    assert len(large) == 2 * len(small)
    for a, b in zip(small.entries, large.entries):
        assert a.name == b.name
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
    other = MiniUODB(seed=4, scale=0.01).dataset(0)
    assert not np.array_equal(other.entries[0].image, small.entries[0].image)
    train, test = SMALL.render(0, "train", 0), SMALL.render(0, "test", 0)
    assert not np.array_equal(train[0], test[0])


@pytest.mark.parametrize("domain", range(6))
def test_boxes_bound_the_drawn_objects(domain: int):
    counts = np.zeros(len(DOMAINS[domain].classes), int)
    for i in range(40):
        image, boxes, labels, masks = SMALL.render(domain, "train", i)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert boxes.dtype == np.float32 and labels.dtype == np.int64 and 1 <= len(boxes) <= 8
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        assert ((sides >= 6) & (sides <= 28)).all()
        for box, mask in zip(boxes.astype(int), masks):
            x1, y1, x2, y2 = box
            assert mask[:, :x1].sum() == mask[:, x2:].sum() == mask[:y1].sum() == mask[y2:].sum() == 0
            assert mask[y1].any() and mask[y2 - 1].any() and mask[:, x1].any() and mask[:, x2 - 1].any()
        iou = box_iou(boxes, boxes)
        assert (iou[~np.eye(len(boxes), dtype=bool)] <= MAX_IOU + 1e-6).all()
        counts += np.bincount(labels, minlength=len(counts))
    assert (counts > 0).all()  # every class is drawn


@pytest.mark.parametrize("domain", ["shapes", "rects"])
def test_the_topmost_mask_is_where_its_flat_colour_is_drawn(domain: str):
    """The last-drawn object is one flat colour plus noise over its whole mask, so the mask (and the box, its
    bounds) is where the shape is in the pixels."""
    for i in range(20):
        image, _, _, masks = SMALL.render(domain, "test", i)
        pixels = image[masks[-1]].astype(float)
        assert np.abs(pixels - np.median(pixels, axis=0)).max() <= 6 * 4.0  # 6 sd of the pixel noise


def test_bad_arguments_are_one_line():
    with pytest.raises(ZooValueError, match="dataset='nope' is not allowed"):
        SMALL.dataset("nope")
    with pytest.raises(ZooValueError, match="dataset=6 is not allowed"):
        SMALL.dataset(6)
    with pytest.raises(ZooValueError, match="split='val' is not allowed"):
        SMALL.dataset(0, "val")
    with pytest.raises(ZooValueError, match="scale=0 is not allowed"):
        MiniUODB(scale=0)
    with pytest.raises(ZooValueError, match="seed=-1 is not allowed"):
        MiniUODB(seed=-1)
