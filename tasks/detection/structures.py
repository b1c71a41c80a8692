"""The sample and dataset structures every detection reader returns, so that COCO, VOC, the packaged real sets and
Mini-UODB mix through one interface.

A :class:`DetDataset` keeps its annotations in memory and its images either in memory (generated sets) or as file
paths read on access (real sets), so a large dataset's boxes can be counted and mixed without decoding an image.
Images come out as uint8 ``[H, W, 3]`` RGB (:func:`to_rgb`): grayscale is repeated over three channels, an alpha
channel is dropped (not composited), a palette is expanded, and 16-bit or float images are scaled linearly from
their minimum to their maximum onto 0-255 (a constant image becomes black). Boxes are float32 ``[N, 4]``
``x1, y1, x2, y2`` in continuous pixel coordinates (pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``), labels int64
``[N]`` indices into the dataset's own ``classes``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import ZooValueError

PathLike = str | os.PathLike


@dataclass(frozen=True)
class DetSample:
    """One image and its boxes: ``image`` uint8 ``[H, W, 3]`` RGB, ``boxes`` float32 ``[N, 4]`` xyxy pixels,
    ``labels`` int64 ``[N]`` dataset-local class indices, ``name`` the image's name in its dataset."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    name: str


@dataclass(frozen=True)
class DetEntry:
    """The annotations of one image and where its pixels are: an RGB array or a file read on access."""

    name: str
    boxes: np.ndarray
    labels: np.ndarray
    image: np.ndarray | Path


@dataclass
class DetDataset:
    """A named detection dataset: its class names and entries, in a fixed order; ``dataset[i]`` is a
    :class:`DetSample` (an image file is read then)."""

    name: str
    classes: tuple[str, ...]
    entries: list[DetEntry]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> DetSample:
        entry = self.entries[index]
        image = entry.image if isinstance(entry.image, np.ndarray) else read_image(entry.image)
        return DetSample(image, entry.boxes, entry.labels, entry.name)

    @property
    def num_boxes(self) -> int:
        return sum(len(e.boxes) for e in self.entries)

    def class_counts(self) -> np.ndarray:
        """``[len(classes)]`` boxes per class."""
        labels = [e.labels for e in self.entries]
        return np.bincount(np.concatenate(labels) if labels else np.zeros(0, np.int64), minlength=len(self.classes))


def make_entry(name: str, boxes: list | np.ndarray, labels: list | np.ndarray, image: np.ndarray | Path) -> DetEntry:
    """An entry with boxes and labels in their dtypes and shapes (``[0, 4]`` and ``[0]`` when empty)."""
    return DetEntry(name, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64),
                    image)


def to_rgb(array: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` from ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` of any numeric dtype
    (module docstring)."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ZooValueError(f"an image of shape {array.shape}; expected [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]")
    array = array[..., :3] if array.shape[2] == 4 else array
    if array.dtype != np.uint8:
        values = array.astype(np.float64)
        low, high = values.min(), values.max()
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        array = np.rint(scaled).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(array, (*array.shape[:2], 3)))


def read_image(path: Path) -> np.ndarray:
    """The RGB pixels of an image file (PIL); an unreadable file is one ZooValueError line."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                return to_rgb(np.asarray(image))
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise ZooValueError(f"{path}: no such image file") from None
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ZooValueError(f"{path}: not a readable image ({str(err).strip()})") from None


def image_size(path: Path, where: str) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header; a missing or unreadable file is one line."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ZooValueError(f"{where}: image file {path} does not exist")
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ZooValueError(f"{where}: image file {path} is not a readable image ({str(err).strip()})") from None
