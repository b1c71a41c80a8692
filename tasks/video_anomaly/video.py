"""From video files to snippet features in the ``[T, crops, D]`` layout of :mod:`.features`: PyAV decodes the
frames (downscaled while decoding, so a long or large video never sits in memory at full size; OpenCV, when
installed, reads files PyAV cannot open), a frozen timm backbone embeds each frame, and every
:data:`FRAMES_PER_SNIPPET` frames pool into one snippet feature.

A snippet feature is appearance and motion, the two streams of I3D in one vector: the mean of its 16 frame
embeddings, concatenated with the mean absolute difference of consecutive frame embeddings, so a sudden movement
raises the second half and a frozen video zeroes it (``D = 2 x`` the backbone's width). A video's last incomplete
snippet is dropped, as in the I3D feature releases. Crops follow the ten-crop protocol of those releases: frames
are resized so their shorter side is ``8/7`` of the crop size (256 for 224), then cut into the centre crop
(``crops=1``), the four corners and the centre (``5``), or those five and their mirror images (``10``).

The backbone is randomly initialised from ``seed`` unless a local ``.safetensors`` state dict is given (weights are
never downloaded): random convolutional features are fixed, deterministic and sensitive to appearance and motion,
which is what the seeded pixel anomalies of :mod:`.clips` need, but they are no substitute for pretrained
features on real footage. timm's initialisation zeroes the last layer of every residual block, so a random
residual network reaches its output through the stem and strided 1x1 shortcuts only, which sample the frame on a
grid as coarse as the network's stride (32 px): a detail smaller than that can fall between the samples, and
crops much below the default 112 px see little of the frame. :attr:`SnippetEncoder.key` names the backbone, crop
size and a sha256 of its weights, so cached features and trained models can be matched to the encoder that
produced them.

:func:`extract_features` keeps its results under ``$ZOO_HOME/video_anomaly/features`` (``~/.cache/zoo/...``) keyed
by the video file's sha256, the encoder key and the crop count, written atomically; an unreadable cache file is
recomputed. Every failure a user can cause is one :class:`ZooValueError` line naming the file.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zoo.errors import ZooValueError, check_arg
from zoo.io import atomic_write_bytes

from .features import FRAMES_PER_SNIPPET

if TYPE_CHECKING:
    import torch

PathLike = str | os.PathLike

DEFAULT_BACKBONE = "regnetx_002"  # 0.2 GFLOPs at 224 px: the fastest of the small timm CNNs measured
DEFAULT_IMAGE_SIZE = 112
CROPS = (1, 5, 10)
RESIZE_RATIO = 8 / 7  # shorter side / crop side, I3D's 256 / 224
BATCH_IMAGES = 128  # crops embedded per forward pass
DECODE_CHUNK = 4 * FRAMES_PER_SNIPPET  # frames decoded before they are embedded


def feature_cache_dir() -> Path:
    """``$ZOO_HOME/video_anomaly/features`` (``ZOO_HOME`` defaults to ``~/.cache/zoo``)."""
    from zoo.hub import cache_dir

    return cache_dir().parent / "video_anomaly" / "features"


# ---------------------------------------------------------------------------------------------------------------
# Decoding


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video before decoding: frames per second (0 when unknown) and its frame
    count (0 when the container does not store it)."""

    fps: float
    frames: int


def _undecodable(path: Path, err: BaseException) -> ZooValueError:
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return ZooValueError(f"{path}: not a video PyAV can decode ({reason})")


def video_file(path: PathLike) -> Path:
    """``path`` as a Path when it names a file; a folder or a missing file is one ZooValueError line."""
    path = Path(path)
    if not path.is_file():
        raise ZooValueError(f"{path}: {'a folder' if path.is_dir() else 'no such file'}; expected a video file")
    return path


def _scaled(width: int, height: int, max_side: int | None, short_side: int | None) -> tuple[int, int]:
    """(width, height) shrunk, never enlarged, so the longer side fits ``max_side`` and the shorter ``short_side``."""
    bounds = ((max_side, max(width, height)), (short_side, min(width, height)))
    scale = min([1.0, *(side / extent for side, extent in bounds if side is not None)])
    return max(1, round(width * scale)), max(1, round(height * scale))


@contextmanager
def open_video(path: PathLike, *, max_side: int | None = None,
               short_side: int | None = None) -> Iterator[tuple[VideoInfo, Iterator[np.ndarray]]]:
    """Open a video for streaming: its :class:`VideoInfo` and an iterator of uint8 RGB frames ``[H, W, 3]``.

    PyAV decodes; a file it cannot open goes to OpenCV when ``cv2`` is importable (its own backends may read it),
    and fails with PyAV's reason otherwise.

    Args:
        path: the video file.
        max_side: downscale (never upscale) while decoding so that the longer side is at most this many pixels.
        short_side: likewise for the shorter side; with both, the smaller scale wins.

    Raises:
        ZooValueError: a missing file, a file neither decoder can open, or one without a video stream; decoding
            errors surface while iterating.
    """
    import av

    for name, side in (("max_side", max_side), ("short_side", short_side)):
        check_arg(side is None or (isinstance(side, int) and side >= 1), name, side, "None or a positive int")
    path = video_file(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        opened = _opencv_capture(path)
        if opened is None:
            raise _undecodable(path, err) from None
        capture, info, first = opened
        try:
            yield info, _opencv_frames(capture, first, max_side, short_side)
        finally:
            capture.release()
        return
    with container:
        if not container.streams.video:
            raise ZooValueError(f"{path}: holds no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        info = VideoInfo(float(rate) if rate else 0.0, int(stream.frames or 0))
        yield info, _av_frames(container, stream, path, max_side, short_side)


def _av_frames(container, stream, path: Path, max_side: int | None,  # noqa: ANN001 - PyAV objects
               short_side: int | None) -> Iterator[np.ndarray]:
    import av

    decoded = 0
    try:
        for frame in container.decode(stream):
            width, height = _scaled(frame.width, frame.height, max_side, short_side)
            yield frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
            decoded += 1
    except (av.FFmpegError, OSError) as err:
        where = f"after {decoded} frames" if decoded else "at the first frame"
        raise ZooValueError(f"{path}: decoding failed {where} ({getattr(err, 'strerror', None) or err})") from None


def _opencv_capture(path: Path):  # noqa: ANN202 - (cv2.VideoCapture, VideoInfo, first frame) or None
    """The fallback decoder: an open ``cv2.VideoCapture`` that read a first frame, or None without OpenCV or when
    it cannot read the file either."""
    try:
        import cv2
    except ImportError:
        return None
    capture = cv2.VideoCapture(str(path))
    ok, first = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        capture.release()
        return None
    info = VideoInfo(float(capture.get(cv2.CAP_PROP_FPS) or 0.0), int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    return capture, info, first


def _opencv_frames(capture, frame: np.ndarray, max_side: int | None,  # noqa: ANN001 - a cv2.VideoCapture
                   short_side: int | None) -> Iterator[np.ndarray]:
    import cv2

    while True:
        height, width = frame.shape[:2]
        size = _scaled(width, height, max_side, short_side)
        if size != (width, height):
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        yield np.ascontiguousarray(frame[..., ::-1])  # BGR -> RGB
        ok, frame = capture.read()
        if not ok:
            return


def probe_fps(path: PathLike) -> float:
    """Frames per second the container states (0 when it does not); opens the file without decoding it."""
    with open_video(path) as (info, _):
        return info.fps


def read_video(path: PathLike, *, max_side: int | None = None) -> tuple[np.ndarray, float]:
    """All frames of a video, uint8 RGB ``[N, H, W, 3]``, and its frames per second (0 when unknown).

    Args:
        path: the video file (any container and codec FFmpeg reads).
        max_side: downscale while decoding so that the longer side is at most this many pixels (None: full size).

    Raises:
        ZooValueError: a missing file, a file PyAV cannot decode (not a video, truncated, empty) or no frames.
    """
    with open_video(path, max_side=max_side) as (info, frames):
        decoded = list(frames)
    if not decoded:
        raise ZooValueError(f"{path}: the video holds no frames")
    return np.stack(decoded), info.fps


# ---------------------------------------------------------------------------------------------------------------
# Encoder


def snippet_features(embeddings: np.ndarray) -> np.ndarray:
    """Pool frame embeddings ``[N, crops, F]`` into snippet features ``[N // 16, crops, 2F]`` (module docstring):
    per snippet, the mean embedding and the mean ``|e_{t+1} - e_t|`` over its 15 consecutive pairs. Frames past the
    last complete snippet are dropped."""
    steps = len(embeddings) // FRAMES_PER_SNIPPET
    e = embeddings[:steps * FRAMES_PER_SNIPPET].reshape(steps, FRAMES_PER_SNIPPET, *embeddings.shape[1:])
    motion = np.abs(np.diff(e, axis=1)).mean(axis=1)
    return np.concatenate([e.mean(axis=1), motion], axis=-1).astype(np.float32)


def _weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict, in name order."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class SnippetEncoder:
    """A frozen timm backbone that turns frames into snippet features (module docstring).

    Args:
        backbone: a timm model name; its pooled features (``num_classes=0``) are the frame embeddings.
        image_size: the crop side in pixels; frames are resized so their shorter side is ``8/7`` of it.
        seed: seed of the random initialisation (ignored with ``pretrained_path``).
        pretrained_path: a local ``.safetensors`` state dict of ``backbone`` (e.g. timm's ImageNet weights, saved
            by the user); classifier weights in it are ignored. None: random initialisation from ``seed``.

    Attributes:
        key: backbone, crop size, seed (or ``pretrained``) and the weights' sha256: the identity of the features.
        dim: D, the snippet feature width (twice the backbone's).
        resize_size: the shorter side frames are resized to before cropping.
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0,
                 pretrained_path: PathLike | None = None) -> None:
        import timm
        import torch

        check_arg(isinstance(image_size, int) and image_size >= 16, "image_size", image_size, "an int >= 16")
        check_arg(isinstance(seed, int) and seed >= 0, "seed", seed, "a non-negative int")
        check_arg(isinstance(backbone, str) and timm.is_model(backbone), "backbone", backbone,
                  "a timm model name (timm.list_models())")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(backbone, pretrained=False, num_classes=0)
        if pretrained_path is not None:
            _load_weights(model, Path(pretrained_path))
        self.model = model.eval().requires_grad_(False)
        self.backbone, self.image_size, self.seed = backbone, image_size, seed
        self.resize_size = round(image_size * RESIZE_RATIO)
        with torch.inference_mode():  # the pooled width: num_features misses heads such as MobileNetV3's conv_head
            self.width = int(model(torch.zeros(1, 3, image_size, image_size)).shape[-1])
        self.dim = 2 * self.width
        origin = "pretrained" if pretrained_path is not None else f"seed{seed}"
        self.key = f"{backbone}@{image_size}px/{origin}/{_weights_sha256(model.state_dict())}"
        config = timm.data.resolve_model_data_config(model)
        self._mean, self._std = list(config["mean"]), list(config["std"])

    def __repr__(self) -> str:
        return f"SnippetEncoder({self.key})"

    def spec(self) -> dict[str, object]:
        """What rebuilds this encoder elsewhere (:meth:`from_spec`); it travels in a model's info."""
        return {"backbone": self.backbone, "image_size": self.image_size, "seed": self.seed, "key": self.key,
                "dim": self.dim}

    @classmethod
    def from_spec(cls, spec: dict[str, object]) -> SnippetEncoder:
        """The encoder a :meth:`spec` describes; its weights must hash as they did where the spec was written.

        Raises:
            ZooValueError: pretrained weights (not rebuildable from a spec), or a random initialisation that
                differs here (another timm or torch version draws other weights).
        """
        if "/pretrained/" in str(spec.get("key", "")):
            raise ZooValueError("these weights were trained on features of a pretrained backbone file, which does "
                                "not travel with them; extract .npy features with that backbone and predict on those")
        encoder = cls(str(spec["backbone"]), int(spec["image_size"]), int(spec["seed"]))
        if encoder.key != spec["key"]:
            raise ZooValueError(f"the snippet encoder built here ({encoder.key}) differs from the one the weights "
                                f"were trained with ({spec['key']}): install the timm and torch versions of training")
        return encoder

    def _transform(self, crops: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """uint8 ``[N, 3, H, W]`` → normalised float ``[N, crops, 3, s, s]``."""
        import torch
        from torchvision.transforms import v2

        resize = v2.Resize(self.resize_size, antialias=True)
        cut = {1: v2.CenterCrop, 5: v2.FiveCrop, 10: v2.TenCrop}[crops](self.image_size)
        normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(self._mean, self._std)])

        def transform(x: torch.Tensor) -> torch.Tensor:
            views = cut(resize(x))
            views = torch.stack(views if isinstance(views, (tuple, list)) else [views], dim=1)
            return normalize(views)

        return transform

    def embed_frames(self, frames: np.ndarray, crops: int = 1) -> np.ndarray:
        """Frame embeddings ``[N, crops, F]`` float32 of uint8 RGB frames ``[N, H, W, 3]`` (one frame size).

        Args:
            frames: the frames.
            crops: 1 (centre), 5 (corners + centre) or 10 (those and their mirror images).
        """
        import torch

        check_arg(crops in CROPS, "crops", crops, CROPS)
        check_arg(frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8, "frames",
                  f"{frames.dtype} array of shape {frames.shape}", "uint8 [N, H, W, 3]")
        transform = self._transform(crops)
        step = max(1, BATCH_IMAGES // crops)
        out = []
        with torch.inference_mode():
            for start in range(0, len(frames), step):
                x = torch.from_numpy(np.ascontiguousarray(frames[start:start + step])).permute(0, 3, 1, 2)
                views = transform(x).flatten(0, 1)
                # Pad to whole snippets: the CPU backend builds (and keeps) kernels for every batch shape it sees.
                padded = min(step, -(-len(x) // FRAMES_PER_SNIPPET) * FRAMES_PER_SNIPPET)
                views = torch.cat([views, views.new_zeros(((padded - len(x)) * crops, *views.shape[1:]))])
                y = self.model(views)[:len(x) * crops].reshape(len(x), crops, self.width)
                out.append(y.float().numpy())
        return np.concatenate(out) if out else np.zeros((0, crops, self.width), np.float32)

    def encode(self, frames: np.ndarray, crops: int = 1) -> np.ndarray:
        """Snippet features ``[N // 16, crops, D]`` of consecutive frames ``[N, H, W, 3]``."""
        return snippet_features(self.embed_frames(frames, crops))


def _load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a local state dict into ``model``; head weights the pooled model lacks are ignored, missing or
    mis-shaped backbone weights are an error."""
    from zoo.hub import load_state_dict

    state = load_state_dict(path)
    own = model.state_dict()
    missing = [name for name in own if name not in state]
    if missing:
        raise ZooValueError(f"{path}: not weights of this backbone; {len(missing)} tensors missing, e.g. "
                            f"{missing[0]!r}")
    for name, tensor in own.items():
        if state[name].shape != tensor.shape:
            raise ZooValueError(f"{path}: {name} has shape {tuple(state[name].shape)}, the backbone expects "
                                f"{tuple(tensor.shape)}")
    model.load_state_dict({name: state[name] for name in own})


# ---------------------------------------------------------------------------------------------------------------
# Cached extraction


def cached_array(path: Path, compute: Callable[[], np.ndarray], shape_ok: Callable[[tuple[int, ...]], bool]) -> np.ndarray:
    """The float32 array cached at ``path``, or ``compute()`` written there atomically when the file is missing,
    unreadable, non-finite or of a shape ``shape_ok`` refuses."""
    try:
        array = np.load(path, allow_pickle=False)
        if array.dtype == np.float32 and shape_ok(array.shape) and np.isfinite(array).all():
            return array
    except (OSError, ValueError, EOFError):
        pass
    array = np.ascontiguousarray(compute(), dtype=np.float32)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return array


def cache_name(*parts: object) -> str:
    """A file-name-safe digest of the parts that determine a cached array."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def extract_features(path: PathLike, encoder: SnippetEncoder, *, cache_dir: PathLike | None = None, crops: int = 1,
                     progress: bool = False) -> np.ndarray:
    """Snippet features ``[T, crops, D]`` float32 of a video file, from the cache when it holds them.

    Args:
        path: the video file.
        encoder: the frozen encoder.
        cache_dir: where features are kept (None: :func:`feature_cache_dir`).
        crops: 1, 5 or 10 (module docstring).
        progress: show a progress bar of the frames embedded on stderr.

    Raises:
        ZooValueError: an unreadable video (:func:`open_video`) or one shorter than one snippet (16 frames).
    """
    from zoo.hub import sha256_file

    check_arg(crops in CROPS, "crops", crops, CROPS)
    path = video_file(path)
    root = Path(cache_dir) if cache_dir is not None else feature_cache_dir()
    file = root / f"{sha256_file(path)}.{cache_name(encoder.key, crops)}.npy"
    return cached_array(file, lambda: _extract(path, encoder, crops, progress),
                        lambda shape: len(shape) == 3 and shape[0] >= 1 and shape[1:] == (crops, encoder.dim))


def _extract(path: Path, encoder: SnippetEncoder, crops: int, progress: bool) -> np.ndarray:
    """Decode, embed and pool one video a chunk of snippets at a time, so memory does not grow with its length."""
    snippets, chunk, seen = [], [], 0
    with open_video(path, short_side=encoder.resize_size) as (info, frames), _progress(progress, info, path) as bar:
        for frame in frames:
            chunk.append(frame)
            seen += 1
            if len(chunk) == DECODE_CHUNK:
                snippets.append(encoder.encode(np.stack(chunk), crops))
                chunk.clear()
                if bar is not None:
                    bar.advance(bar.task_ids[0], DECODE_CHUNK)
        if len(chunk) >= FRAMES_PER_SNIPPET:
            snippets.append(encoder.encode(np.stack(chunk), crops))
    if seen < FRAMES_PER_SNIPPET:
        raise ZooValueError(f"{path}: the video has {seen} frames; a snippet feature needs at least "
                            f"{FRAMES_PER_SNIPPET}")
    return np.concatenate(snippets)


def _progress(show: bool, info: VideoInfo, path: Path):  # noqa: ANN202 - a rich Progress context or a null one
    if not show:
        return nullcontext()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    bar.add_task(f"embedding {path.name}", total=info.frames or None)
    return bar
