"""The letterbox and the training augmentation: boxes stay on their objects through every geometric op (a white
square drawn at the box on black, found again after the transform), the letterbox maps back to the original
pixels, any channel layout goes in, empty boxes pass, and a seed fixes the result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from zoo.errors import ZooValueError
from zoo.tasks.detection.transforms import MEAN, STD, Letterbox, letterbox, normalize, train_transform

torch.set_num_threads(1)


def square_image(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Black ``[H, W, 3]`` uint8 with the pixels of the integer xyxy ``box`` white."""
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def assert_box_on_object(image: torch.Tensor, box: torch.Tensor, slack: float = 1.0) -> None:
    """The bright pixels (> 50 %) of ``image [3, H, W]`` lie inside ``box`` widened by ``slack`` px, and the box
    lies inside the extent of the non-black pixels widened by ``slack``: the box covers the object, tightly."""
    gray = image.float().mean(0)
    gray = gray / 255 if image.dtype == torch.uint8 else gray
    rows, cols = torch.nonzero(gray > 0.5, as_tuple=True)
    assert len(rows), "the object left the image"
    x1, y1, x2, y2 = box.tolist()
    assert x1 - slack <= cols.min() and cols.max() + 1 <= x2 + slack
    assert y1 - slack <= rows.min() and rows.max() + 1 <= y2 + slack
    rows, cols = torch.nonzero(gray > 0.02, as_tuple=True)
    assert cols.min() - slack <= x1 and x2 <= cols.max() + 1 + slack
    assert rows.min() - slack <= y1 and y2 <= rows.max() + 1 + slack


def sample(height: int = 48, width: int = 80, box: tuple[int, int, int, int] = (30, 12, 50, 30)):
    image = torch.from_numpy(square_image(height, width, box)).permute(2, 0, 1).contiguous()
    boxes = tv_tensors.BoundingBoxes(torch.tensor([box], dtype=torch.float32), format="XYXY",
                                     canvas_size=(height, width))
    return image, boxes, torch.tensor([7])


@pytest.mark.parametrize("shape,box", [((48, 80), (30, 12, 50, 30)), ((90, 40), (5, 60, 25, 85)),
                                       ((20, 20), (4, 4, 10, 12))])
def test_letterbox_box_on_object(shape, box):
    image = square_image(*shape, box)
    out, boxes, scale = letterbox(image, np.array([box], np.float32), 64)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert scale == pytest.approx(64 / max(shape))
    assert_box_on_object(out, boxes[0])
    height, width = round(shape[0] * scale), round(shape[1] * scale)
    assert out[:, height:].abs().sum() == 0 and out[:, :, width:].abs().sum() == 0  # zero padding bottom/right


@pytest.mark.parametrize("shape,size", [((48, 80), 64), ((300, 200), 64), ((37, 61), 128), ((413, 97), 96)])
def test_letterbox_round_trip(shape, size):
    rng = np.random.default_rng(0)
    height, width = shape
    x = np.sort(rng.uniform(0, width, (20, 2)), axis=1)
    y = np.sort(rng.uniform(0, height, (20, 2)), axis=1)
    boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1).astype(np.float32)
    _, out, scale = letterbox(np.zeros((height, width, 3), np.uint8), boxes, size)
    back = out.numpy() / scale
    # exact along the longer side; the shorter side's rounding moves a coordinate by at most half an output pixel
    np.testing.assert_allclose(back, boxes, atol=max(1e-3, 0.5 / scale))
    if scale >= 0.5:
        np.testing.assert_allclose(back, boxes, atol=1.0)
    longer = 0 if width >= height else 1
    np.testing.assert_allclose(back[:, longer::2], boxes[:, longer::2], atol=1e-3)


@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_letterbox_any_channels(channels):
    """Grayscale, single-channel, RGB and RGBA (alpha dropped) through ``to_rgb``; 16-bit scaled to [0, 1]."""
    gray = np.zeros((30, 40), np.uint16)
    gray[5:15, 10:30] = 4000
    image = gray if channels is None else np.repeat(gray[..., None], min(channels, 3), 2)
    if channels == 4:
        image = np.concatenate([image, np.zeros_like(image[..., :1])], 2)
    out, boxes, _ = letterbox(image, np.array([[10, 5, 30, 15]]), 40)
    assert out.shape == (3, 40, 40)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert out.max() == 1.0
    assert_box_on_object(out, boxes[0])


def test_letterbox_without_and_empty_boxes():
    image = np.zeros((10, 20, 3), np.uint8)
    _, boxes, scale = letterbox(image, None, 32)
    assert boxes.shape == (0, 4) and scale == 1.6
    _, boxes, _ = letterbox(image, np.zeros((0, 4)), 32)
    assert boxes.shape == (0, 4)
    with pytest.raises(ZooValueError, match="size"):
        letterbox(image, None, 0)


def geometric_steps(flip: bool) -> list[v2.Transform]:
    steps = train_transform(64, flip).transforms
    return [s for s in steps if isinstance(s, Letterbox | v2.RandomAffine | v2.RandomHorizontalFlip)]


def test_pipeline_steps():
    """Letterbox first, the affine without rotation, a flip only when asked, sanitising last."""
    with_flip, without = train_transform(64, True).transforms, train_transform(64, False).transforms
    assert isinstance(with_flip[0], Letterbox) and isinstance(with_flip[-1], v2.SanitizeBoundingBoxes)
    assert any(isinstance(s, v2.RandomHorizontalFlip) for s in with_flip)
    assert not any(isinstance(s, v2.RandomHorizontalFlip) for s in without)
    affine = next(s for s in with_flip if isinstance(s, v2.RandomAffine))
    assert list(affine.degrees) == [0.0, 0.0]


@pytest.mark.parametrize("index", range(3))
def test_each_geometric_op_keeps_box_on_object(index):
    step = geometric_steps(flip=True)[index]
    if isinstance(step, v2.RandomHorizontalFlip):
        step = v2.RandomHorizontalFlip(1.0)
    image, boxes, _ = sample(64, 64, (20, 10, 44, 30))
    for seed in range(10):
        torch.manual_seed(seed)
        out, out_boxes = step(image, boxes)
        assert_box_on_object(out, out_boxes[0], slack=1.5)


def test_flip_mirrors_box():
    image, boxes, _ = sample(64, 64, (20, 10, 44, 30))
    _, out = v2.RandomHorizontalFlip(1.0)(image, boxes)
    assert out.tolist() == [[20.0, 10.0, 44.0, 30.0]]  # symmetric about the centre: 64 - 44 = 20
    image, boxes, _ = sample(64, 64, (2, 10, 12, 30))
    _, out = v2.RandomHorizontalFlip(1.0)(image, boxes)
    assert out.tolist() == [[52.0, 10.0, 62.0, 30.0]]


@pytest.mark.parametrize("flip", [True, False])
def test_train_transform_keeps_box_on_object(flip):
    transform = train_transform(64, flip)
    image, boxes, labels = sample()
    for seed in range(20):
        torch.manual_seed(seed)
        out, out_boxes, out_labels = transform(image, boxes, labels)
        assert out.shape == (3, 64, 64) and out.dtype == torch.uint8
        assert out_boxes.canvas_size == (64, 64)
        assert out_labels.tolist() == [7]
        # colour jitter may dim the square below half brightness: find it with its own darkest level instead
        lit = out.float().mean(0) > 0.5 * out.float().mean(0).max()
        assert_box_on_object(lit[None].float().expand(3, -1, -1), out_boxes[0], slack=1.5)


def test_sanitize_drops_boxes_pushed_off_with_labels():
    """A box at the border that a shift pushes off the canvas is dropped with its label; the other stays."""
    transform = train_transform(64, flip=False)
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[0.0, 0, 2, 64], [20, 20, 40, 40]]), format="XYXY",
                                     canvas_size=(64, 64))
    kept = set()
    for seed in range(30):
        torch.manual_seed(seed)
        _, out_boxes, labels = transform(image, boxes, torch.tensor([1, 2]))
        assert len(out_boxes) == len(labels)
        widths = out_boxes[:, 2] - out_boxes[:, 0]
        assert (widths >= 2).all() and (out_boxes >= 0).all() and (out_boxes <= 64).all()
        kept.add(tuple(labels.tolist()))
    assert (2,) in kept and (1, 2) in kept


def test_train_transform_empty_boxes():
    transform = train_transform(32, True)
    image = torch.randint(0, 256, (3, 20, 50), dtype=torch.uint8)
    boxes = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(20, 50))
    out, out_boxes, labels = transform(image, boxes, torch.zeros(0, dtype=torch.int64))
    assert out.shape == (3, 32, 32) and out_boxes.shape == (0, 4) and labels.shape == (0,)


def test_train_transform_deterministic_under_seed():
    transform = train_transform(64, True)
    image, boxes, labels = sample()
    image = image | torch.randint(0, 120, image.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        runs.append(transform(image, boxes, labels))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_normalize():
    x = torch.rand(2, 3, 4, 5)
    out = normalize(x)
    for c in range(3):
        torch.testing.assert_close(out[:, c], (x[:, c] - MEAN[c]) / STD[c])
    torch.testing.assert_close(normalize(x[0]), out[0])
