"""A reader for large aerial scenes in the layout of the Mega-NeRF release (Turki et al., CVPR 2022: Mill-19
Building/Rubble, UrbanScene3D), so the nerf task trains on real captures as well as on ``transforms.json`` scenes;
:func:`load_scene` picks the reader from what the path holds. A Mega-NeRF scene folder holds ``coordinates.pt``
(``origin_drb``, ``pose_scale_factor``: the metric frame, already applied to the poses) and ``train/`` and ``val/``
folders, each with ``metadata/<stem>.pt`` (a dict of ``W``, ``H``, a 3x4 ``c2w`` and ``intrinsics`` (fx, fy, cx, cy))
and ``rgbs/<stem>.jpg|png``. Their ``c2w`` has OpenGL camera axes (right, up, back: their rays are
``[(u - cx) / fx, -(v - cy) / fy, -1]`` through pixel centres, rotated by ``c2w``) in a world frame whose axes point
down, right and back (``drb``); we rotate that world to a z-up one (:data:`DRB_TO_Z_UP`) like ProceduralCity's.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zoo.errors import ZooValueError, check_arg

from .cameras import SPLITS, Views, check_pose, load_transforms, read_image

#: World rotation from Mega-NeRF's (x down, y right, z back) to ours (x right, y forward, z up): the pose we return
#: is ``[[A R, A t], [0, 1]]`` for their ``[R | t]`` (camera axes are OpenGL's in both, so only the world turns).
DRB_TO_Z_UP = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
#: Our split names and the Mega-NeRF folders holding them.
FOLDERS = {"train": "train", "test": "val"}
#: Image extensions tried for ``rgbs/<stem>``, in Mega-NeRF's order.
EXTENSIONS = (".jpg", ".JPG", ".png", ".PNG")
METADATA_KEYS = ("W", "H", "c2w", "intrinsics")
COORDINATE_KEYS = ("origin_drb", "pose_scale_factor")


def _torch_dict(path: Path, keys: tuple[str, ...]) -> dict:
    """Load a dict of tensors and numbers saved with ``torch.save`` and check it has ``keys``."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise ZooValueError(f"{path}: cannot be read with torch.load(weights_only=True) ({type(e).__name__}); "
                            "expected a torch.save'd dict of tensors and numbers") from None
    if not isinstance(data, dict):
        raise ZooValueError(f"{path}: holds a {type(data).__name__}; expected a dict with keys {list(keys)}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ZooValueError(f"{path}: missing key(s) {missing}; expected {list(keys)}")
    return data


def _array(data: dict, key: str, shapes: tuple[tuple[int, ...], ...], path: Path) -> np.ndarray:
    """``data[key]`` as a finite float64 array of one of ``shapes``."""
    value = data[key]
    try:
        arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape not in shapes or not np.isfinite(arr).all():
        wanted = " or ".join(dict.fromkeys("a finite number" if np.prod(s) == 1 else
                                           f"{'x'.join(map(str, s))} finite numbers" for s in shapes))
        got = (f"a {type(value).__name__}" if arr is None else f"shape {list(arr.shape)}" if arr.shape not in shapes
               else "non-finite entries")
        raise ZooValueError(f"{path}: {key} is not {wanted}; got {got}")
    return arr


def _size(data: dict, key: str, path: Path) -> int:
    value = float(_array(data, key, ((),), path))
    if value != int(value) or value < 1:
        raise ZooValueError(f"{path}: {key}={value:g} is not allowed; expected a positive integer")
    return int(value)


def _check_coordinates(root: Path) -> None:
    path = root / "coordinates.pt"
    if not path.is_file():
        raise ZooValueError(f"{path}: not found; a Mega-NeRF scene folder holds coordinates.pt, train/ and val/")
    data = _torch_dict(path, COORDINATE_KEYS)
    _array(data, "origin_drb", ((3,), (1, 3)), path)
    if float(_array(data, "pose_scale_factor", ((), (1,)), path).reshape(())) <= 0:
        raise ZooValueError(f"{path}: pose_scale_factor must be positive")


def _metadata_files(root: Path) -> dict[str, list[Path]]:
    """The metadata files of each split, sorted by name."""
    files = {}
    for split, folder in FOLDERS.items():
        metadata = root / folder / "metadata"
        files[split] = sorted(metadata.glob("*.pt")) if metadata.is_dir() else []
        if not files[split]:
            raise ZooValueError(f"{metadata}: no <stem>.pt metadata files; expected one per image in "
                                f"{root / folder / 'rgbs'}")
    return files


def _find_rgb(metadata: Path) -> Path:
    rgbs = metadata.parent.parent / "rgbs"
    for ext in EXTENSIONS:
        candidate = rgbs / (metadata.stem + ext)
        if candidate.is_file():
            return candidate
    raise ZooValueError(f"{metadata}: image file {rgbs / metadata.stem}.jpg not found (also tried .JPG, .png, .PNG)")


def _box_downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` pixel blocks (Pillow's box filter, per channel in float)."""
    height, width = image.shape[0] // factor, image.shape[1] // factor
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c])).resize((width, height), Image.Resampling.BOX))
                for c in range(image.shape[-1])]
    return np.stack(channels, axis=-1)


def load_meganerf(path: str | Path, split: str, downscale: int = 1) -> Views:
    """Read one split of a scene in the Mega-NeRF layout.

    Poses are converted to our z-up world (:data:`DRB_TO_Z_UP`); translations stay in Mega-NeRF's normalised units
    (metric = ``t * pose_scale_factor + origin_drb`` in their frame). The optional ``distortion`` entry is ignored, as
    Mega-NeRF does: its converter stores undistorted images. Images must have the metadata's W x H, all the same.

    Args:
        path: the scene folder (holding ``coordinates.pt``, ``train/`` and ``val/``).
        split: ``"train"`` or ``"test"`` (the ``val/`` folder).
        downscale: integer factor dividing W and H; images are box-filtered and intrinsics divided by it.

    Returns:
        The views, ordered by metadata file name; ``appearance`` is the image's index among the metadata file names
        of train and val sorted together (Mega-NeRF's image index, stable across splits); ``names`` are the image
        paths relative to ``path``.
    """
    check_arg(split in SPLITS, "split", split, SPLITS)
    check_arg(isinstance(downscale, int) and not isinstance(downscale, bool) and downscale >= 1, "downscale",
              downscale, "a positive int")
    root = Path(path)
    _check_coordinates(root)
    files = _metadata_files(root)
    both = sorted({p.name for p in files["train"]} & {p.name for p in files["test"]})
    if both:
        raise ZooValueError(f"{root}: {both[0]} is in both train/metadata and val/metadata; expected each image in "
                            "one split")
    every = sorted(p.name for paths in files.values() for p in paths)
    index = {name: i for i, name in enumerate(every)}
    poses, intrinsics, rgbs, size = [], [], [], None
    for meta in files[split]:
        data = _torch_dict(meta, METADATA_KEYS)
        width, height = _size(data, "W", meta), _size(data, "H", meta)
        if size is None:
            size = (width, height)
        elif (width, height) != size:
            raise ZooValueError(f"{meta}: W x H = {width}x{height} but {files[split][0].name} has {size[0]}x{size[1]}; "
                                "all images of a split must share a size")
        if width % downscale or height % downscale:
            raise ZooValueError(f"{meta}: W x H = {width}x{height} is not divisible by downscale={downscale}")
        fx, fy, cx, cy = _array(data, "intrinsics", ((4,),), meta)
        if fx <= 0 or fy <= 0:
            raise ZooValueError(f"{meta}: intrinsics fx={fx:g}, fy={fy:g}; expected positive focal lengths")
        c2w = np.eye(4)
        c2w[:3] = _array(data, "c2w", ((3, 4), (4, 4)), meta)[:3]
        c2w = check_pose(c2w, f"{meta}: c2w")
        c2w[:3] = DRB_TO_Z_UP @ c2w[:3]
        poses.append(c2w)
        intrinsics.append(np.array([fx, fy, cx, cy]) / downscale)
        rgbs.append(_find_rgb(meta))
    width, height = size
    images = np.empty((len(rgbs), height // downscale, width // downscale, 3), dtype=np.float32)
    for i, (meta, rgb) in enumerate(zip(files[split], rgbs)):
        image = read_image(rgb, str(meta))
        if image.shape[:2] != (height, width):
            raise ZooValueError(f"{rgb}: image is {image.shape[1]}x{image.shape[0]} but {meta.name} says W x H = "
                                f"{width}x{height}")
        images[i] = image if downscale == 1 else _box_downscale(image, downscale)
    return Views(images, np.stack(poses).astype(np.float32), np.stack(intrinsics).astype(np.float32),
                 np.array([index[p.name] for p in files[split]], dtype=np.int64),
                 [rgb.relative_to(root).as_posix() for rgb in rgbs])


def load_scene(path: str | Path, split: str, downscale: int = 1) -> Views:
    """Read one split of a scene in either supported layout.

    Args:
        path: a ``transforms.json`` file or a folder holding one (:func:`.cameras.load_transforms`, every 8th frame
            held out for test), else a Mega-NeRF scene folder holding ``coordinates.pt`` (:func:`load_meganerf`).
        split: ``"train"`` or ``"test"``.
        downscale: integer image downscale factor (Mega-NeRF layout only).

    Returns:
        The views.
    """
    check_arg(split in SPLITS, "split", split, SPLITS)
    path = Path(path)
    if (path.is_file() and path.suffix == ".json") or (path / "transforms.json").is_file():
        if downscale != 1:
            raise ZooValueError(f"{path}: downscale={downscale!r} is not supported for transforms.json scenes; "
                                "expected 1 (write smaller images instead)")
        return load_transforms(path, split)
    if (path / "coordinates.pt").is_file():
        return load_meganerf(path, split, downscale)
    raise ZooValueError(f"{path}: not a scene; expected a transforms.json file or a folder holding one, or a "
                        "Mega-NeRF folder holding coordinates.pt, train/ and val/")
