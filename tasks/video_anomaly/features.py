"""Snippet features in the layout the weakly supervised video anomaly detection code of RTFM (Tian et al., ICCV
2021) and UR-DMU (Zhou et al., AAAI 2023) publishes for UCF-Crime and XD-Violence, so that those feature releases
and the seeded :mod:`.synthvad` generator load into one structure.

Format:

- a list file, one ``.npy`` path per line (a relative path is taken from the list file's folder);
- one array per file: ``[T, crops, D]`` for a whole video, or ``[T, D]`` for one crop. Files whose names end in
  ``__<k>`` (UR-DMU's ``Abuse028_x264__3.npy``) are crop k of one video and are stacked, in crop order, into
  ``[T, crops, D]``; a lone ``[T, D]`` file is a video with one crop. A trailing ``_i3d`` (RTFM's names) is
  dropped from the video name too;
- for the test split, a temporal annotation file in UCF-Crime's layout (Sultani et al., CVPR 2018,
  ``Temporal_Anomaly_Annotation_for_Testing_Videos.txt``): ``name class start1 end1 start2 end2 ...`` with ``-1 -1``
  for no event. Frame spans are half-open ``[start, end)``, as VadCLIP's ``list/make_gt_ucf.py`` builds its
  frame labels, and each snippet covers :data:`FRAMES_PER_SNIPPET` frames. A span may reach up to one snippet past
  ``T * 16`` frames, since feature extraction drops a video's last incomplete snippet; the frames past the end are
  clipped.

The class of a video comes from its name (:func:`class_from_name`; pass ``class_of=`` for another rule). Every
failure is one :class:`ZooValueError` line naming the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import ZooValueError

PathLike = str | os.PathLike

NORMAL = "Normal"
FRAMES_PER_SNIPPET = 16  # I3D snippets of UCF-Crime and XD-Violence features
_FILE_NAME = re.compile(r"^(?P<video>.+?)(?:_i3d)?(?:__(?P<crop>\d+))?$")


@dataclass
class Video:
    """One video: features ``[T, crops, D]`` float32, its class (:data:`NORMAL` for a normal video) and, for the
    test split, 0/1 labels of its ``T * 16`` frames (``None`` for training videos: weak supervision)."""

    name: str
    features: np.ndarray
    cls: str
    frame_labels: np.ndarray | None = None

    @property
    def label(self) -> int:
        """The video-level label: 1 for an anomalous class."""
        return int(self.cls != NORMAL)

    @property
    def snippet_labels(self) -> np.ndarray | None:
        """``[T]`` 0/1: a snippet is anomalous when any of its frames is."""
        if self.frame_labels is None:
            return None
        return self.frame_labels.reshape(len(self.features), FRAMES_PER_SNIPPET).max(axis=1)


@dataclass
class VADSplit:
    """The videos of one split, in list order, and the anomaly classes (without :data:`NORMAL`)."""

    split: str
    videos: list[Video]
    classes: tuple[str, ...]

    @property
    def crops(self) -> int:
        return self.videos[0].features.shape[1]

    @property
    def dim(self) -> int:
        return self.videos[0].features.shape[2]


def class_from_name(name: str) -> str:
    """The class encoded in a video name: XD-Violence's ``..._label_A`` is normal and ``..._label_B2-0-0`` is
    ``B2`` (its first label); otherwise UCF-Crime's leading letters (``Abuse028_x264`` → ``Abuse``,
    ``Normal_Videos_003_x264`` → :data:`NORMAL`)."""
    if "_label_" in name:
        code = name.rsplit("_label_", 1)[1].split("-")[0]
        return NORMAL if code == "A" else code
    match = re.match(r"[A-Za-z]+", name)
    if match is None:
        raise ZooValueError(f"cannot tell the class of video {name!r} from its name; pass class_of=")
    return match.group(0)


def load_features(list_file: PathLike, annotations: PathLike | None = None, *,
                  class_of: Callable[[str], str] = class_from_name) -> VADSplit:
    """The videos a list file names (module docstring); with ``annotations`` the test split, each video with
    frame labels, and without it the training split, with video labels and classes only.

    Raises:
        ZooValueError: an empty list, a missing or unreadable ``.npy``, an array that is not ``[T, D]`` or
            ``[T, crops, D]`` of finite numbers, crops of one video with different T, a video listed twice, videos
            with different D or crop counts, or an annotation that is malformed, missing for a video or outside
            its frames.
    """
    list_file = Path(list_file)
    crops = _read_list(list_file)
    videos = []
    for name, parts in crops.items():
        features = _stack_crops(name, parts)
        videos.append(Video(name, features, class_of(name)))
    _check_shapes(videos, list_file)
    if annotations is not None:
        spans = _read_annotations(Path(annotations))
        for video in videos:
            video.frame_labels = _frame_labels(video, spans, Path(annotations))
    classes = tuple(sorted({v.cls for v in videos} - {NORMAL}))
    return VADSplit("train" if annotations is None else "test", videos, classes)


def _read_list(list_file: Path) -> dict[str, list[tuple[int | None, np.ndarray, str]]]:
    """Video name → its files' (crop index, array as ``[T, crops, D]``, where), in list order."""
    if not list_file.is_file():
        raise ZooValueError(f"{list_file}: no such file; expected a list of .npy feature files, one per line")
    videos: dict[str, list[tuple[int | None, np.ndarray, str]]] = {}
    lines = list_file.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{list_file}:{number}"
        path = Path(line.strip())
        path = path if path.is_absolute() else list_file.parent / path
        match = _FILE_NAME.match(path.name.removesuffix(".npy"))
        name, crop = match["video"], None if match["crop"] is None else int(match["crop"])
        parts = videos.setdefault(name, [])
        if (crop is None and parts) or (crop is not None and any(c in (None, crop) for c, _, _ in parts)):
            raise ZooValueError(f"{where}: video {name!r} (crop {crop}) is listed twice")
        parts.append((crop, _load_array(path, where), where))
    if not videos:
        raise ZooValueError(f"{list_file}: the list names no feature files")
    return videos


def _load_array(path: Path, where: str) -> np.ndarray:
    if not path.is_file():
        raise ZooValueError(f"{where}: {path}: no such file")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ZooValueError(f"{where}: {path} is not a readable .npy file ({str(err).strip()})") from None
    if array.ndim not in (2, 3) or array.shape[0] < 1 or not np.issubdtype(array.dtype, np.number):
        raise ZooValueError(f"{where}: {path} holds a {array.dtype} array of shape {array.shape}; expected "
                            "[T, D] or [T, crops, D] numbers")
    if not np.isfinite(array).all():
        raise ZooValueError(f"{where}: {path} holds NaN or infinite values")
    return np.asarray(array, dtype=np.float32).reshape(array.shape[0], -1, array.shape[-1])


def _stack_crops(name: str, parts: list[tuple[int | None, np.ndarray, str]]) -> np.ndarray:
    parts = sorted(parts, key=lambda part: part[0] or 0)
    steps = parts[0][1].shape[0]
    for _, array, where in parts:
        if array.shape[0] != steps:
            raise ZooValueError(f"{where}: crop of video {name!r} has {array.shape[0]} snippets, its other crops "
                                f"{steps}")
    return np.concatenate([array for _, array, _ in parts], axis=1)


def _check_shapes(videos: list[Video], list_file: Path) -> None:
    first = videos[0]
    for video in videos[1:]:
        if video.features.shape[1:] != first.features.shape[1:]:
            raise ZooValueError(f"{list_file}: video {video.name!r} has [crops, D] = {list(video.features.shape[1:])}"
                                f", video {first.name!r} {list(first.features.shape[1:])}")


def _read_annotations(path: Path) -> dict[str, tuple[list[tuple[int, int]], str]]:
    """Video name (the annotated file name without its extension) → (its frame spans, where)."""
    if not path.is_file():
        raise ZooValueError(f"{path}: no such file; expected a temporal annotation file")
    spans: dict[str, tuple[list[tuple[int, int]], str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        try:
            bounds = [int(f) for f in fields[2:]]
        except ValueError:
            bounds = None
        if len(fields) < 2 or bounds is None or len(bounds) % 2:
            raise ZooValueError(f"{where}: expected 'name class start1 end1 [start2 end2 ...]' with integer frames, "
                                f"got {line.strip()!r}")
        pairs = [(s, e) for s, e in zip(bounds[::2], bounds[1::2]) if (s, e) != (-1, -1)]
        if any(not 0 <= s < e for s, e in pairs):
            raise ZooValueError(f"{where}: a span is not 0 <= start < end (or -1 -1 for none): {line.strip()!r}")
        name = Path(fields[0]).stem
        if name in spans:
            raise ZooValueError(f"{where}: video {name!r} is annotated twice")
        spans[name] = pairs, where
    return spans


def _frame_labels(video: Video, spans: dict[str, tuple[list[tuple[int, int]], str]], path: Path) -> np.ndarray:
    if video.name not in spans:
        raise ZooValueError(f"{path}: no annotation line for video {video.name!r}")
    pairs, where = spans[video.name]
    frames = len(video.features) * FRAMES_PER_SNIPPET
    labels = np.zeros(frames, dtype=np.uint8)
    for start, end in pairs:
        if start >= frames or end > frames + FRAMES_PER_SNIPPET:
            raise ZooValueError(f"{where}: span {start}-{end} is outside video {video.name!r}, which has "
                                f"{len(video.features)} snippets = {frames} frames")
        labels[start:end] = 1
    return labels
