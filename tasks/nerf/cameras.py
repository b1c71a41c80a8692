"""Posed images for NeRF: the :class:`Views` container, a reader for the nerfstudio / Blender ``transforms.json``
format that refuses bad input with one line naming the file and frame, an every-k-th train/test split and pinhole
ray generation. Poses are camera-to-world matrices in the OpenGL/Blender convention (the camera looks down its -z
axis, +y is up, +x right); pixel (row v, column u) is sampled at its centre (u + 0.5, v + 0.5).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.errors import ZooValueError, check_arg

SPLITS = ("train", "test")
#: Every HOLDOUT-th frame (0, 8, 16, ...) is a test frame, the usual LLFF / Mip-NeRF 360 convention.
HOLDOUT = 8
#: Largest deviation of R^T R from the identity (and of det R from 1) accepted in a pose's rotation.
ROTATION_TOL = 1e-3
#: nerfstudio's OPENCV / OPENCV_FISHEYE distortion coefficients; only zeros are accepted.
DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")
_EXTENSIONS = ("", ".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


@dataclass
class Views:
    """A set of posed images of one scene.

    Args:
        images: float32 [N, H, W, 3] in [0, 1].
        c2w: float32 [N, 4, 4] camera-to-world matrices (OpenGL convention).
        intrinsics: float32 [N, 4] as (fx, fy, cx, cy) in pixels.
        appearance: int64 [N], the index of each image in its source (kept by :meth:`subset`), for per-image
            appearance embeddings.
        names: one name per image (its file path as written in ``transforms.json``).
        depth: optional float32 [N, H, W], distance along the unit ray to the first surface (inf: none).
    """

    images: np.ndarray
    c2w: np.ndarray
    intrinsics: np.ndarray
    appearance: np.ndarray
    names: list[str] = field(default_factory=list)
    depth: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def hw(self) -> tuple[int, int]:
        """Image height and width."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def subset(self, index: Sequence[int] | np.ndarray) -> Views:
        """The views at ``index``, in that order."""
        index = np.asarray(index, dtype=np.int64)
        return Views(self.images[index], self.c2w[index], self.intrinsics[index], self.appearance[index],
                     [self.names[i] for i in index], None if self.depth is None else self.depth[index])


def split_every(views: Views, k: int = HOLDOUT) -> tuple[Views, Views]:
    """Hold out every ``k``-th view (indices 0, k, 2k, ...) as the test set.

    Args:
        views: the views to split.
        k: the hold-out period (at least 2).

    Returns:
        ``(train, test)``.
    """
    check_arg(isinstance(k, int) and k >= 2, "k", k, "an int >= 2")
    index = np.arange(len(views))
    return views.subset(index[index % k != 0]), views.subset(index[index % k == 0])


def camera_rays(c2w: np.ndarray, intrinsics: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rays through the pixel centres of one pinhole camera.

    Args:
        c2w: [4, 4] (or [3, 4]) camera-to-world matrix, OpenGL convention.
        intrinsics: (fx, fy, cx, cy) in pixels.
        height: image height H.
        width: image width W.

    Returns:
        ``(origins, directions)``, float64 [H, W, 3] each; directions have unit length.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    local = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], axis=-1)
    directions = local @ c2w[:3, :3].T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    origins = np.broadcast_to(c2w[:3, 3], directions.shape).copy()
    return origins, directions


def rays(views: Views, index: int | Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rays through the pixel centres of some views.

    Args:
        views: the posed images.
        index: one view (gives [H, W, 3]), a sequence of views (gives [len, H, W, 3]) or None for all.

    Returns:
        ``(origins, directions)`` as float32; directions have unit length.
    """
    height, width = views.hw
    if index is None or not np.isscalar(index):
        chosen = np.arange(len(views)) if index is None else np.asarray(index, dtype=np.int64)
        pairs = [camera_rays(views.c2w[i], views.intrinsics[i], height, width) for i in chosen]
        empty = np.zeros((0, height, width, 3), np.float32)
        return (np.stack([o for o, _ in pairs]).astype(np.float32) if pairs else empty,
                np.stack([d for _, d in pairs]).astype(np.float32) if pairs else empty)
    check_arg(-len(views) <= int(index) < len(views), "index", index, f"a view index below {len(views)}")
    o, d = camera_rays(views.c2w[index], views.intrinsics[index], height, width)
    return o.astype(np.float32), d.astype(np.float32)


def check_pose(matrix: object, where: str) -> np.ndarray:
    """Parse a 4x4 rigid camera-to-world matrix or raise one line naming ``where``."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise ZooValueError(f"{where}: transform_matrix is not a 4x4 matrix of numbers") from None
    if m.shape != (4, 4):
        raise ZooValueError(f"{where}: transform_matrix has shape {list(m.shape)}; expected 4x4")
    if not np.isfinite(m).all():
        raise ZooValueError(f"{where}: transform_matrix has non-finite entries")
    if np.abs(m[3] - [0, 0, 0, 1]).max() > ROTATION_TOL:
        raise ZooValueError(f"{where}: transform_matrix last row is {m[3].tolist()}; expected [0, 0, 0, 1]")
    r = m[:3, :3]
    err = np.abs(r.T @ r - np.eye(3)).max()
    det = np.linalg.det(r)
    if err > ROTATION_TOL or abs(det - 1) > ROTATION_TOL:
        raise ZooValueError(f"{where}: transform_matrix rotation is not rigid (|R^T R - I| = {err:.3g}, "
                            f"det = {det:.3g}); expected an orthonormal rotation with det +1")
    return m


def read_image(path: Path, where: str) -> np.ndarray:
    """Read an image as float32 [H, W, 3] in [0, 1]; transparent pixels are composited on white (Blender's
    convention for its RGBA renders)."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                grey = np.asarray(img, dtype=np.float32) / 65535.0
                return np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=-1)
            has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            arr = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError) as e:
        raise ZooValueError(f"{where}: cannot read image {path} ({type(e).__name__}: {e})") from None
    if has_alpha:
        alpha = arr[..., 3:]
        return arr[..., :3] * alpha + (1.0 - alpha)
    return arr


def _number(source: dict, key: str, where: str) -> float | None:
    if key not in source:
        return None
    value = source[key]
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not number or (value <= 0 and key not in ("cx", "cy")):
        raise ZooValueError(f"{where}: {key}={value!r} is not allowed; expected a finite positive number")
    return float(value)


def _intrinsics(meta: dict, frame: dict, height: int, width: int, where: str) -> tuple[float, float, float, float]:
    def get(key: str) -> float | None:
        value = _number(frame, key, where)
        return _number(meta, key, where) if value is None else value

    for key, actual in (("w", width), ("h", height)):
        stated = get(key)
        if stated is not None and int(stated) != actual:
            raise ZooValueError(f"{where}: {key}={int(stated)} but the image is {width}x{height} (WxH)")
    model = frame.get("camera_model", meta.get("camera_model", "OPENCV"))
    if model not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
        raise ZooValueError(f"{where}: camera_model={model!r} is not supported; expected a pinhole camera")
    for key in DISTORTION:
        if frame.get(key, meta.get(key, 0)) != 0:
            raise ZooValueError(f"{where}: lens distortion {key}={frame.get(key, meta.get(key))!r} is not supported; "
                                "expected undistorted images (distortion 0)")
    fx, fy = get("fl_x"), get("fl_y")
    if fx is None:
        angle_x = get("camera_angle_x")
        if angle_x is None:
            raise ZooValueError(f"{where}: no focal length; expected fl_x or camera_angle_x (global or per frame)")
        if angle_x >= math.pi:
            raise ZooValueError(f"{where}: camera_angle_x={angle_x!r} is not allowed; expected radians below pi")
        fx = 0.5 * width / math.tan(0.5 * angle_x)
    if fy is None:
        angle_y = get("camera_angle_y")
        fy = fx if angle_y is None else 0.5 * height / math.tan(0.5 * angle_y)
    cx, cy = get("cx"), get("cy")
    return fx, fy, width / 2 if cx is None else cx, height / 2 if cy is None else cy


def _find_image(root: Path, file_path: str, where: str) -> Path:
    base = root / file_path
    for ext in _EXTENSIONS:
        candidate = base.with_name(base.name + ext)
        if candidate.is_file():
            return candidate
    raise ZooValueError(f"{where}: image file {base} not found (also tried .png and .jpg)")


def load_transforms(path: str | Path, split: str | None = None) -> Views:
    """Read a nerfstudio or Blender ``transforms.json`` and its images.

    Intrinsics come from ``fl_x``/``fl_y``/``cx``/``cy`` (per frame, else global; ``fl_y`` defaults to ``fl_x``,
    the centre to the image centre) or from Blender's ``camera_angle_x`` (fx = 0.5 W / tan(0.5 angle)). ``w``/``h``
    when present must match the images. ``file_path`` is relative to the file's folder, with or without extension;
    an optional ``depth_file_path`` names a ``.npy`` [H, W] map of distances along the unit rays (as
    :meth:`.city.ProceduralCity.write` stores). RGBA images are composited on white. Only undistorted pinhole cameras
    are read (nonzero distortion coefficients or another ``camera_model`` are refused).

    Args:
        path: the ``transforms.json`` file, or a folder holding one.
        split: None for all frames, ``"train"`` or ``"test"`` for the every-8th hold-out (:func:`split_every`).

    Returns:
        The views; ``appearance`` is each frame's index in the file.
    """
    check_arg(split is None or split in SPLITS, "split", split, SPLITS)
    path = Path(path)
    if path.is_dir():
        path = path / "transforms.json"
    try:
        meta = json.loads(path.read_text())
    except OSError as e:
        raise ZooValueError(f"{path}: cannot read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ZooValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise ZooValueError(f"{path}: expected a JSON object with a non-empty 'frames' list")
    images, poses, intrinsics, names, depths = [], [], [], [], []
    for i, frame in enumerate(meta["frames"]):
        where = f"{path}: frame {i}"
        if not isinstance(frame, dict):
            raise ZooValueError(f"{where}: expected an object with file_path and transform_matrix")
        for key in ("file_path", "transform_matrix"):
            if key not in frame:
                raise ZooValueError(f"{where}: missing key {key!r}")
        name = str(frame["file_path"])
        where = f"{path}: frame {i} ({name})"
        poses.append(check_pose(frame["transform_matrix"], where))
        image = read_image(_find_image(path.parent, name, where), where)
        if images and image.shape != images[0].shape:
            raise ZooValueError(f"{where}: image is {image.shape[1]}x{image.shape[0]} but frame 0 is "
                                f"{images[0].shape[1]}x{images[0].shape[0]} (WxH); all images must share a size")
        intrinsics.append(_intrinsics(meta, frame, image.shape[0], image.shape[1], where))
        images.append(image)
        names.append(name)
        if "depth_file_path" in frame:
            depths.append(_read_depth(path.parent / str(frame["depth_file_path"]), image.shape[:2], where))
    if depths and len(depths) != len(images):
        raise ZooValueError(f"{path}: {len(depths)} of {len(images)} frames have depth_file_path; expected all or none")
    views = Views(np.stack(images).astype(np.float32), np.stack(poses).astype(np.float32),
                  np.asarray(intrinsics, dtype=np.float32), np.arange(len(images), dtype=np.int64), names,
                  np.stack(depths).astype(np.float32) if depths else None)
    if split is None:
        return views
    train, test = split_every(views)
    return train if split == "train" else test


def _read_depth(path: Path, shape: tuple[int, ...], where: str) -> np.ndarray:
    if path.suffix != ".npy":
        raise ZooValueError(f"{where}: depth file {path} is not supported; expected a .npy array")
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ZooValueError(f"{where}: cannot read depth file {path} ({e})") from None
    if depth.shape != tuple(shape):
        raise ZooValueError(f"{where}: depth file {path} has shape {list(depth.shape)}; expected {list(shape)}")
    return depth
