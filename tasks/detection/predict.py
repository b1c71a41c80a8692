"""``zoo predict detection``: boxes on one image or every image of a folder, as COCO-style results.

Each image is read as RGB (grayscale repeated, alpha dropped, 16-bit scaled) and letterboxed to the weights' input
size; an image more than :data:`LARGE` times that size gets a line on stderr, since its objects may shrink far
below the training objects' size and detected; boxes are mapped back to the image's own pixels. Rows are one per box with a
score at or above ``--score-thr``. ``--out`` writes them as a COCO results list (``image_id`` = the image's index
in sorted order, ``file_name``, ``category_id`` = the unified label index, ``category_name``, ``bbox`` as
``[x, y, w, h]``, ``score``); ``--plot`` (one image) or ``--out-dir`` (any number) write PNGs with the boxes and
class names drawn. Rows that need an image's dataset (oracle routing, per-dataset heads or models) take it from
``--dataset``. Files are written only after every image was detected.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.errors import ZooValueError
from zoo.io import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
DEFAULT_SCORE_THR = 0.3
LARGE = 4  # an image this many times larger than the input size is reported as shrunk


def predict(loaded: Any, input_path: str | Path, *, out: str | Path | None = None, plot: str | Path | None = None,
            out_dir: str | Path | None = None, score_thr: float = DEFAULT_SCORE_THR,
            dataset: str | None = None) -> list[dict]:
    """Detect objects in ``input_path`` (module docstring).

    Args:
        loaded: a :class:`zoo.task.LoadedModel` of the detection task.
        input_path: an image file or a folder of them.
        out: JSON path for the COCO-style results.
        plot: PNG path for the one input image with its boxes drawn.
        out_dir: folder for one ``<image stem>.png`` with boxes per input image.
        score_thr: the lowest score kept, in [0, 1].
        dataset: the mix dataset the images come from, for rows that route or restrict labels by dataset.

    Returns:
        One dict per kept box: ``image``, ``class``, ``label``, ``score``, ``x1``, ``y1``, ``x2``, ``y2``.

    Raises:
        ZooValueError: a bad option, a missing or unreadable image, an empty folder; nothing is written then.
    """
    if not 0.0 <= score_thr <= 1.0:
        raise ZooValueError(f"--score-thr={score_thr} is not allowed; scores are in [0, 1]")
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise ZooValueError(f"--plot {plot}: the plot is a PNG; give a path ending in .png")
    files = image_files(Path(input_path))
    if plot is not None and len(files) > 1:
        raise ZooValueError(f"--plot draws one image but {input_path} holds {len(files)}; use --out-dir DIR")
    info, module = loaded.info, loaded.module
    dataset_id = dataset_index(info, loaded.config.model, dataset)
    size = int(info["image_size"])
    detections, pictures = [], []
    for file in files:
        from .structures import read_image

        image = read_image(file)
        if max(image.shape[:2]) > LARGE * size:
            print(f"{file.name}: {image.shape[1]}×{image.shape[0]} pixels shrunk to {size} px, the weights' input "
                  "size; objects far smaller than the training objects are lost", file=sys.stderr)
        boxes, scores, labels = detect_image(module, image, size, dataset_id, int(info["experts"][dataset_id]))
        keep = scores >= score_thr
        detections.append((file, boxes[keep], scores[keep], labels[keep]))
        if plot is not None or out_dir is not None:
            pictures.append(draw(image, boxes[keep], labels[keep], scores[keep], info["classes"]))
    rows = [{"image": file.name, "class": info["classes"][int(label)], "label": int(label),
             "score": round(float(score), 4), **dict(zip(("x1", "y1", "x2", "y2"), map(_round, box), strict=True))}
            for file, boxes, scores, labels in detections for box, score, label in zip(boxes, scores, labels,
                                                                                    strict=True)]
    payloads: list[tuple[Path, bytes]] = []
    if out is not None:
        payloads.append((Path(out), coco_results(detections, info["classes"])))
    if plot is not None:
        payloads.append((Path(plot), pictures[0]))
    if out_dir is not None:
        folder = Path(out_dir)
        if folder.exists() and not folder.is_dir():
            raise ZooValueError(f"--out-dir {folder}: exists and is not a folder")
        payloads += [(folder / f"{file.stem}.png", png) for (file, *_), png in zip(detections, pictures, strict=True)]
    for target, data in payloads:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    return rows


def image_files(path: Path) -> list[Path]:
    """``path`` itself, or the image files directly inside the folder ``path``, sorted by name."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ZooValueError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return files
    if not path.is_file():
        raise ZooValueError(f"{path}: no such image file or folder")
    return [path]


def dataset_index(info: Mapping[str, Any], model_cfg: Any, dataset: str | None) -> int:
    """The index of ``--dataset`` in the weights' mix; required by rows that use the dataset at test time."""
    names = list(info["datasets"])
    needs = model_cfg.routing == "oracle" or model_cfg.dataset_heads or model_cfg.per_dataset
    if dataset is None:
        if needs:
            raise ZooValueError(f"these weights need the images' dataset: add --dataset NAME ({', '.join(names)})")
        return 0
    if dataset not in names:
        raise ZooValueError(f"--dataset {dataset!r} is not in the weights' mix; expected one of {', '.join(names)}")
    return names.index(dataset)


@torch.inference_mode()
def detect_image(module: Any, image: np.ndarray, size: int, dataset_id: int,
                 expert_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes ``[N, 4]`` xyxy in the image's pixels, scores ``[N]`` and unified labels ``[N]``, best first."""
    from .models import postprocess
    from .transforms import letterbox, normalize

    module.eval()
    tensor, _, scale = letterbox(image, None, size)
    out = module.run(normalize(tensor)[None], torch.tensor([dataset_id]), torch.tensor([expert_id]))
    (pred,) = postprocess(out, torch.tensor([[size, size]]))
    boxes = pred["boxes"].numpy() / scale
    height, width = image.shape[:2]
    boxes = np.clip(boxes, 0, [width, height, width, height])
    order = np.argsort(-pred["scores"].numpy(), kind="stable")
    return boxes[order], pred["scores"].numpy()[order], pred["labels"].numpy()[order]


def short_name(name: str) -> str:
    """``miniuodb/shapes/circle`` → ``circle``: the class without its dataset prefix, for drawing."""
    return name.rsplit("/", 1)[-1]


def draw(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
         classes: Sequence[str]) -> bytes:
    """PNG bytes of ``image`` with the boxes and their class names and scores drawn."""
    from PIL import Image

    from .plots import draw_detections

    pixels = draw_detections(image, boxes, labels, scores, [short_name(c) for c in classes])
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def coco_results(detections: Sequence[tuple[Path, np.ndarray, np.ndarray, np.ndarray]],
                 classes: Sequence[str]) -> bytes:
    """The detections as a COCO results list (module docstring), UTF-8 JSON bytes."""
    results = []
    for image_id, (file, boxes, scores, labels) in enumerate(detections):
        for box, score, label in zip(boxes, scores, labels, strict=True):
            x1, y1, x2, y2 = map(_round, box)
            results.append({"image_id": image_id, "file_name": file.name, "category_id": int(label),
                            "category_name": classes[int(label)], "bbox": [x1, y1, _round(x2 - x1), _round(y2 - y1)],
                            "score": round(float(score), 4)})
    return (json.dumps(results, indent=1) + "\n").encode("utf-8")


def _round(value: float) -> float:
    return round(float(value), 2)
