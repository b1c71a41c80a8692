"""Box drawing: the outline lands on the box's border pixels in its class's colour, small images are enlarged, the
PNG is written whole and reads back; the examples figure draws every box and keeps its texts apart."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.errors import ZooValueError
from zoo.tasks.detection.plots import MIN_DRAW, class_colors, draw_detections, examples_figure

NAMES = ["circle", "square", "triangle"]


def test_border_pixels_take_the_class_colour():
    image = np.zeros((100, 300, 3), np.uint8)
    out = draw_detections(image, np.array([[10.0, 20.0, 50.0, 60.0], [200.2, 30.5, 260.0, 90.0]]), [1, 2],
                          [0.9, 0.5], NAMES)
    assert out.shape == image.shape  # no enlargement at >= MIN_DRAW px
    square, triangle = class_colors(3)[1:]
    # continuous [10, 50) x [20, 60) outlines pixel columns 10..49 and rows 20..59, one pixel wide
    for row, col in [(40, 10), (40, 49), (59, 30), (50, 10)]:
        assert tuple(out[row, col]) == square
    for row, col in [(40, 9), (40, 50), (60, 30), (40, 30), (19, 30)]:
        assert tuple(out[row, col]) == (0, 0, 0)
    assert tuple(out[60, 200]) == triangle and tuple(out[89, 230]) == triangle and tuple(out[60, 259]) == triangle
    assert square != triangle


def test_colour_per_class_and_label_text():
    image = np.zeros((300, 300, 3), np.uint8)
    boxes = np.array([[10, 100, 60, 150], [100, 100, 150, 150], [200, 100, 250, 150]], np.float32)
    out = draw_detections(image, boxes, [0, 0, 1], [0.9, 0.8, 0.7], NAMES)
    assert tuple(out[125, 10]) == tuple(out[125, 100]) != tuple(out[125, 200])
    names_only = draw_detections(image, boxes, [0, 0, 1], None, NAMES)
    label_rows = slice(101, 115)
    assert not np.array_equal(out[label_rows], names_only[label_rows])  # "circle 0.90" is wider than "circle"
    assert np.array_equal(out[120:], names_only[120:])  # the boxes below the labels are the same


def test_small_images_enlarged_nearest():
    image = np.zeros((32, 64, 3), np.uint8)
    image[0, 0] = (255, 255, 255)
    out = draw_detections(image, np.array([[8.0, 8.0, 16.0, 16.0]]), [0], [0.5], NAMES)
    factor = MIN_DRAW // 64
    assert out.shape == (32 * factor, 64 * factor, 3)
    assert (out[:factor, :factor] == 255).all() and (out[factor, factor] == 0).all()
    assert tuple(out[12 * factor, 8 * factor]) == class_colors(1)[0]  # the box scaled with the image
    assert tuple(out[12 * factor, 16 * factor - 1]) == class_colors(1)[0]


def test_empty_boxes_tensor_inputs_and_grayscale():
    gray = np.full((300, 280), 7, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = draw_detections(gray, np.zeros((0, 4)), [], [], NAMES)
    assert out.shape == (300, 280, 3) and (out == 7).all()
    out = draw_detections(gray, torch.tensor([[1.0, 1.0, 100.0, 100.0]]), torch.tensor([2]), torch.tensor([0.3]),
                          NAMES)
    assert tuple(out[50, 1]) == class_colors(3)[2]


def test_png_written_atomically(tmp_path: Path):
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    path = tmp_path / "plots" / "one.png"
    out = draw_detections(image, np.array([[5.0, 5.0, 30.0, 25.0]]), [1], [0.87], NAMES, path=path)
    with Image.open(path) as read:
        assert read.format == "PNG"
        np.testing.assert_array_equal(np.asarray(read), out)
    assert sorted(p.name for p in path.parent.iterdir()) == ["one.png"]  # no temporary file left
    with pytest.raises(ZooValueError, match="cannot write"):
        draw_detections(image, np.zeros((0, 4)), [], None, NAMES, path=tmp_path / "plots")  # a folder
    assert sorted(p.name for p in path.parent.iterdir()) == ["one.png"]


@pytest.mark.parametrize("labels,scores,match", [([0, 1], [0.5], "scores"), ([0], None, "labels"),
                                                 ([0, 3], None, "class names")])
def test_bad_inputs(labels, scores, match):
    boxes = np.array([[0, 0, 5, 5], [1, 1, 6, 6]], np.float32)[:max(len(labels), 2)]
    with pytest.raises(ZooValueError, match=match):
        draw_detections(np.zeros((10, 10, 3), np.uint8), boxes, labels, scores, NAMES)


def test_examples_figure_draws_every_box_and_stays_readable(overlapping_texts):
    rng = np.random.default_rng(0)
    names = [f"miniuodb/domain{d}/class{c}" for d in range(6) for c in range(5)]
    samples = []
    for i in range(6):
        xy = rng.uniform(0, 48, (10, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(4, 16, (10, 2))], 1)
        pred = {"boxes": torch.from_numpy(boxes[:7]), "labels": torch.from_numpy(rng.integers(0, 30, 7)),
                "scores": torch.rand(7)}
        target = {"boxes": boxes, "labels": rng.integers(0, 30, 10)}
        samples.append((rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), pred, target, f"miniuodb/domain{i}"))
    fig = examples_figure(samples, names)
    visible = fig.axes
    assert len(visible) == 6
    for ax in visible:
        styles = [p.get_linestyle() for p in ax.patches]
        assert styles.count("-") == 7 and styles.count("--") == 10
    assert overlapping_texts(fig) == []
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["predicted", "ground truth"] and set(legend[2:]) <= set(names)


def test_examples_figure_needs_samples():
    with pytest.raises(ZooValueError, match="no samples"):
        examples_figure([], NAMES)
