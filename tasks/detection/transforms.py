"""Image and box transforms of the detection task, in torchvision v2 so that every geometric op moves the boxes with
the pixels: the letterbox every image goes through before the network, the training augmentation and the input
normalisation.

Letterbox: the longer side is resized to ``size`` (aspect kept, antialiased) and the bottom and right are padded
with zeros to ``size x size``; boxes follow the resize exactly (per axis), so mapping back with the single
``scale`` (original = letterboxed / scale) is exact on the longer axis and off by at most half a letterboxed pixel
on the shorter one, where the resized length was rounded. Training augmentation, in order: letterbox (first, so
every later op runs on the small ``size x size`` canvas whatever the source resolution), colour jitter, a mild
random affine (shift up to 10 %, scale 0.75-1.25, no rotation, which would inflate axis-aligned boxes), an optional
horizontal flip, then :class:`~torchvision.transforms.v2.SanitizeBoundingBoxes`, which drops the boxes pushed off
the canvas or clipped below 2 px, with their labels. The SSD-style zoom-out plus IoU crop is not used: zooming out
shrinks 10-20 px objects up to fourfold until they vanish at a 64 px input, and the crop drops many objects. All
randomness comes from torch's global RNG, so ``torch.manual_seed`` fixes the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from zoo.errors import check_arg

from .structures import to_rgb

#: Per-channel RGB mean and standard deviation of the network input (ImageNet statistics).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: Boxes narrower or shorter than this many output pixels after augmentation are dropped.
MIN_BOX = 2.0

TrainTransform = Callable[[torch.Tensor, tv_tensors.BoundingBoxes, torch.Tensor],
                          tuple[torch.Tensor, tv_tensors.BoundingBoxes, torch.Tensor]]


class Letterbox(v2.Transform):
    """Resize the longer side to ``size`` and pad the bottom and right with zeros to ``size x size`` (module
    docstring); boxes follow."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        scale = self.size / max(height, width)
        resized = [max(1, round(height * scale)), max(1, round(width * scale))]
        return {"resized": resized, "padding": [0, 0, self.size - resized[1], self.size - resized[0]]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.pad(F.resize(inpt, params["resized"], antialias=True), params["padding"], fill=0)


def letterbox(image: np.ndarray, boxes: np.ndarray | None, size: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """An image letterboxed to ``size`` (module docstring) as the network sees it, before :func:`normalize`.

    Args:
        image: ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` pixels (made RGB uint8 by ``to_rgb``).
        boxes: ``[N, 4]`` xyxy pixels of ``image``, or None.
        size: the side of the square output.

    Returns:
        The float image ``[3, size, size]`` in [0, 1], the boxes ``[N, 4]`` in its pixels (``[0, 4]`` for None) and
        ``scale``: original coordinates are letterboxed ones divided by it.
    """
    check_arg(isinstance(size, int) and size >= 1, "size", size, "a positive int")
    pixels = to_rgb(image)
    height, width = pixels.shape[:2]
    tensor = tv_tensors.Image(torch.tensor(pixels).permute(2, 0, 1).contiguous())
    given = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4)
    box_tensor = tv_tensors.BoundingBoxes(torch.from_numpy(given), format="XYXY", canvas_size=(height, width))
    out, out_boxes = Letterbox(size)(tensor, box_tensor)
    out = F.to_dtype(out.as_subclass(torch.Tensor), torch.float32, scale=True)
    return out, out_boxes.as_subclass(torch.Tensor), size / max(height, width)


def _labels_of(inputs: tuple[Any, ...]) -> Any:
    """The labels of an ``(image, boxes, labels)`` sample, for ``SanitizeBoundingBoxes``."""
    return inputs[2]


def train_transform(size: int, flip: bool) -> TrainTransform:
    """The training augmentation of the module docstring, ending letterboxed to ``size``.

    Args:
        size: the side of the square output.
        flip: mirror half of the images horizontally (only for datasets whose classes survive a mirror).

    Returns:
        A callable ``(image uint8 [3, H, W], BoundingBoxes xyxy, labels [N]) -> (image uint8 [3, size, size],
        BoundingBoxes [M, 4], labels [M])``; ``M <= N`` after sanitising.
    """
    check_arg(isinstance(size, int) and size >= 1, "size", size, "a positive int")
    steps: list[v2.Transform] = [
        Letterbox(size),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
        v2.RandomAffine(degrees=0.0, translate=(0.1, 0.1), scale=(0.75, 1.25),
                        interpolation=v2.InterpolationMode.BILINEAR, fill=0),
    ]
    if flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    steps.append(v2.SanitizeBoundingBoxes(min_size=MIN_BOX, labels_getter=_labels_of))
    return v2.Compose(steps)


def normalize(tensor: torch.Tensor) -> torch.Tensor:
    """``(x - MEAN) / STD`` per channel of a float ``[3, H, W]`` or ``[B, 3, H, W]`` image in [0, 1]."""
    mean = torch.tensor(MEAN, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(STD, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    return (tensor - mean) / std
