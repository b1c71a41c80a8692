"""Reader of COCO-format detection annotations (the JSON of MS COCO, Objects365, LVIS and most detection
releases), so that any such dataset joins a mix as a :class:`.DetDataset`.

Format: one JSON object with ``images`` (``id``, ``file_name`` relative to the images folder, ``width``,
``height``), ``annotations`` (``image_id``, ``category_id``, ``bbox`` = ``[x, y, w, h]`` in pixels, optional
``iscrowd``) and ``categories`` (``id``, ``name``). Category ids map to contiguous labels in increasing id order
(COCO's ids 1..90 with gaps become 0..79). Crowd annotations (``iscrowd`` = 1) mark regions of many objects under
one box and are skipped, as detectors trained on COCO do. A box may reach at most :data:`EDGE_TOLERANCE` pixels past
the image (float rounding in converted annotations) and is clipped to it; farther out is an error. Images are kept
in file order, those without boxes too; their headers are read at load (size and readability), their pixels on
access. Every failure is one :class:`ZooValueError` line naming the file and the entry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ZooValueError

from .structures import DetDataset, PathLike, image_size, make_entry

EDGE_TOLERANCE = 1.0


def load_coco(annotations_json: PathLike, images_dir: PathLike, name: str | None = None) -> DetDataset:
    """The dataset a COCO annotation file describes (module docstring).

    Args:
        annotations_json: the COCO JSON file.
        images_dir: the folder ``file_name`` is relative to.
        name: the dataset's name; the JSON file's stem by default.

    Raises:
        ZooValueError: invalid JSON, a missing key, a duplicate id, a box with non-positive width or height or
            outside its image, an unknown category or image id, a missing or unreadable image, or an image whose
            size differs from its entry.
    """
    path, images_dir = Path(annotations_json), Path(images_dir)
    data = _read_json(path)
    ids = sorted(_unique_ids(path, "categories", data["categories"], ("id", "name")))
    categories = {c["id"]: c for c in data["categories"]}
    label_of = {cat_id: label for label, cat_id in enumerate(ids)}
    images = _unique_ids(path, "images", data["images"], ("id", "file_name", "width", "height"))
    boxes: dict[Any, list[list[float]]] = {image_id: [] for image_id in images}
    labels: dict[Any, list[int]] = {image_id: [] for image_id in images}
    for index, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{index}]"
        _require(ann, ("image_id", "category_id", "bbox"), where)
        if ann.get("iscrowd", 0):
            continue
        if ann["image_id"] not in images:
            raise ZooValueError(f"{where} names image_id {ann['image_id']!r}, which is not in 'images'")
        if ann["category_id"] not in label_of:
            raise ZooValueError(f"{where} names category_id {ann['category_id']!r}, which is not in 'categories'")
        boxes[ann["image_id"]].append(_xyxy(ann["bbox"], images[ann["image_id"]], where))
        labels[ann["image_id"]].append(label_of[ann["category_id"]])
    entries = []
    for index, (image_id, image) in enumerate(images.items()):
        where = f"{path}: images[{index}] (id {image_id!r})"
        file = images_dir / str(image["file_name"])
        if image_size(file, where) != (image["width"], image["height"]):
            raise ZooValueError(f"{where}: {file} is {image_size(file, where)} pixels, the entry says "
                                f"{(image['width'], image['height'])}")
        entries.append(make_entry(str(image["file_name"]), boxes[image_id], labels[image_id], file))
    classes = tuple(str(categories[cat_id]["name"]) for cat_id in ids)
    return DetDataset(name or path.stem, classes, entries)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ZooValueError(f"{path}: no such file; expected COCO annotations (JSON)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ZooValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ZooValueError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    _require(data, ("images", "annotations", "categories"), str(path))
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise ZooValueError(f"{path}: '{key}' is a {type(data[key]).__name__}; expected a list")
    return data


def _require(entry: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(entry, dict):
        raise ZooValueError(f"{where} is not a JSON object")
    missing = [key for key in keys if key not in entry]
    if missing:
        raise ZooValueError(f"{where} lacks the key(s) {', '.join(map(repr, missing))}")


def _unique_ids(path: Path, key: str, entries: list, required: tuple[str, ...]) -> dict[Any, dict]:
    by_id: dict[Any, dict] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: {key}[{index}]"
        _require(entry, required, where)
        if entry["id"] in by_id:
            raise ZooValueError(f"{where}: id {entry['id']!r} appears twice in '{key}'")
        if key == "images" and not all(isinstance(entry[k], int) and entry[k] > 0 for k in ("width", "height")):
            raise ZooValueError(f"{where}: width and height must be positive integers, got "
                                f"{entry['width']!r} x {entry['height']!r}")
        by_id[entry["id"]] = entry
    return by_id


def _xyxy(bbox: Any, image: dict, where: str) -> list[float]:
    """``[x, y, w, h]`` → ``[x1, y1, x2, y2]`` inside the image."""
    ok = isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)
    if not ok or not np.isfinite(bbox).all():
        raise ZooValueError(f"{where}: bbox {bbox!r} is not four finite numbers [x, y, w, h]")
    x, y, w, h = map(float, bbox)
    if w <= 0 or h <= 0:
        raise ZooValueError(f"{where}: bbox {bbox!r} has a non-positive width or height")
    width, height = image["width"], image["height"]
    if x < -EDGE_TOLERANCE or y < -EDGE_TOLERANCE or x + w > width + EDGE_TOLERANCE or \
            y + h > height + EDGE_TOLERANCE:
        raise ZooValueError(f"{where}: bbox {bbox!r} lies outside its {width}x{height} image {image['file_name']!r}")
    box = [max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)]
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ZooValueError(f"{where}: bbox {bbox!r} lies outside its {width}x{height} image {image['file_name']!r}")
    return box
