"""``zoo predict video_anomaly``: per-frame anomaly scores of one video, from its snippet features or its pixels.

INPUT is either a ``.npy`` feature file in the layout of the weights' training data (``[T, crops, D]`` or
``[T, D]``, 16 frames per snippet) or a video file. A video is decoded and embedded by the snippet encoder the
weights were trained with, which travels in their model info (weights trained on precomputed features cannot read
pixels: the one-line error says so). A video's features are cached under ``$ZOO_HOME/video_anomaly/features``
(keyed by the file's sha256 and the encoder), so scoring it again decodes nothing. Every frame takes its
snippet's score (crops averaged); the last ``frames mod 16`` frames of a video form no full snippet and are not
scored, as in the I3D feature releases.

Output rows and the ``--out`` CSV: ``frame,time_s,score``. ``--plot`` draws the score over time with the frames
at or above ``--threshold`` shaded. Files are written only after everything was computed.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ZooValueError
from zoo.io import atomic_write_bytes

from .data import standardize
from .evaluation import score_videos
from .features import FRAMES_PER_SNIPPET, NORMAL, Video

COLUMNS = ("frame", "time_s", "score")
DEFAULT_FPS = 30.0  # I3D releases of UCF-Crime are at 30 frames/s


def predict(loaded: Any, input_path: str | Path, *, out: str | Path | None = None, plot: str | Path | None = None,
            threshold: float = 0.5, fps: float | None = None) -> list[dict]:
    """Score ``input_path`` (module docstring).

    Args:
        loaded: a :class:`zoo.task.LoadedModel` of the video_anomaly task.
        input_path: a ``.npy`` feature file or a video file.
        out: CSV path for the rows (columns :data:`COLUMNS`).
        plot: PNG path for the score over time.
        threshold: frames with a score at or above it are shaded in the plot.
        fps: frames per second of the video the features came from (``.npy`` input; default 30); a video file
            gives its own unless this overrides it.

    Returns:
        One dict per scored frame, in order.

    Raises:
        ZooValueError: a bad option, an unreadable or ill-shaped input; nothing is written then.
    """
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise ZooValueError(f"--plot {plot}: the plot is a PNG; give a path ending in .png")
    if not 0.0 <= threshold <= 1.0:
        raise ZooValueError(f"--threshold={threshold} is not allowed; scores are in [0, 1]")
    if fps is not None and not fps > 0:
        raise ZooValueError(f"--fps={fps} is not allowed; give a positive number of frames per second")
    path = Path(input_path)
    if path.suffix.lower() == ".npy":
        features, file_fps = read_features(path, loaded.info), None
    else:
        features, file_fps = video_features(path, loaded.info)
    rate = fps or file_fps or DEFAULT_FPS
    features = standardize(features, loaded.info)
    (scores,) = score_videos(loaded.module.model, [Video(path.stem, features, NORMAL)])
    frame_scores = np.repeat(scores, FRAMES_PER_SNIPPET)
    rows = [{"frame": f, "time_s": round(f / rate, 4), "score": round(float(s), 6)} for f, s in enumerate(frame_scores)]
    payloads: list[tuple[str | Path, bytes]] = []
    if out is not None:
        lines = [",".join(COLUMNS)] + [f"{r['frame']},{r['time_s']},{r['score']}" for r in rows]
        payloads.append((out, ("\n".join(lines) + "\n").encode("utf-8")))
    if plot is not None:
        payloads.append((plot, plot_png(rows, threshold, path.name)))
    for target, data in payloads:
        atomic_write_bytes(target, data)
    return rows


def read_features(path: Path, info: Mapping[str, Any]) -> np.ndarray:
    """A ``.npy`` of ``[T, D]`` or ``[T, crops, D]`` finite floats whose D is the weights' feature size."""
    if not path.is_file():
        raise ZooValueError(f"{path}: no such file")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ZooValueError(f"{path}: not a readable .npy array ({err})") from None
    if array.ndim == 2:
        array = array[:, None, :]
    dim = int(info["dim"])
    if array.ndim != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ZooValueError(f"{path}: features must be [T, D] or [T, crops, D] with T >= 1, got {array.shape}")
    if array.shape[2] != dim:
        raise ZooValueError(f"{path}: features have D={array.shape[2]}, the weights expect D={dim}")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise ZooValueError(f"{path}: features must be finite numbers")
    return array.astype(np.float32)


def video_features(path: Path, info: Mapping[str, Any]) -> tuple[np.ndarray, float]:
    """Snippet features of a video file by the weights' encoder, and the video's frame rate."""
    spec = info.get("encoder")
    if not spec:
        raise ZooValueError(f"{path}: these weights were trained on precomputed {info['dim']}-dim features, not on "
                            "video; give a .npy feature file, or weights trained on video (data.source=clips)")
    from .video import SnippetEncoder, extract_features, probe_fps

    encoder = SnippetEncoder.from_spec(dict(spec))
    features = extract_features(path, encoder, crops=int(info.get("crops", 1)))
    return features, probe_fps(path)


def plot_png(rows: Sequence[Mapping[str, Any]], threshold: float, title: str) -> bytes:
    """The score over time with the frames at or above ``threshold`` shaded, as PNG bytes."""
    from matplotlib.figure import Figure

    t = np.array([r["time_s"] for r in rows])
    s = np.array([r["score"] for r in rows])
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(t, s, color="tab:blue", lw=1.2, label="anomaly score")
    ax.axhline(threshold, color="tab:red", lw=0.8, ls="--", label=f"threshold {threshold:g}")
    above = s >= threshold
    ax.fill_between(t, 0, 1, where=above, color="tab:red", alpha=0.15, step="mid",
                    transform=ax.get_xaxis_transform(), label=f"{int(above.sum())} frames at or above")
    ax.set(xlabel="time (s)", ylabel="score", ylim=(0, 1), xlim=(t[0], t[-1] if len(t) > 1 else t[0] + 1),
           title=f"{title}: {len(rows)} frames scored")
    ax.legend(loc="upper right", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
