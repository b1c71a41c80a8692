"""Video anomaly data: the RTFM/UR-DMU feature layout round-trips through the loader with UCF-Crime-style frame
labels and refuses bad input in one line; SynthVAD is deterministic per (seed, split, index), balanced, and its
strong classes stand out from normal snippets far more than its weak ones."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import ZooValueError
from zoo.tasks.video_anomaly.features import NORMAL, class_from_name, load_features
from zoo.tasks.video_anomaly.synthvad import CLASSES, SynthVAD

D = 8


def _write_layout(root, videos: dict[str, np.ndarray], crop_files: bool = False) -> None:
    """One ``.npy`` per video ([T, crops, D]), or with ``crop_files`` one per crop named ``<video>__<k>.npy``."""
    lines = []
    for name, features in videos.items():
        if crop_files:
            for k in range(features.shape[1]):
                np.save(root / f"{name}__{k}.npy", features[:, k])
                lines.append(f"{name}__{k}.npy")
        else:
            np.save(root / f"{name}.npy", features)
            lines.append(str(root / f"{name}.npy"))
    (root / "test.list").write_text("\n".join(lines) + "\n")


@pytest.fixture
def real(tmp_path):
    """Two abnormal + two normal test videos (4, 3, 2, 5 snippets; 2 crops) and their annotations."""
    rng = np.random.default_rng(0)
    videos = {name: rng.standard_normal((steps, 2, D)).astype(np.float32) for name, steps in
              [("Abuse028_x264", 4), ("Arson011_x264", 3), ("Normal_Videos_003_x264", 2),
               ("Normal_Videos_015_x264", 5)]}
    (tmp_path / "ann.txt").write_text(
        "Abuse028_x264.mp4  Abuse  10  20  40  70\n"
        "Arson011_x264.mp4  Arson  0  60  -1  -1\n"  # ends past 3 * 16 = 48 frames, within the dropped snippet
        "Normal_Videos_003_x264.mp4  Normal  -1  -1  -1  -1\n"
        "Normal_Videos_015_x264.mp4  Normal  -1  -1  -1  -1\n")
    return tmp_path, videos


@pytest.mark.parametrize("crop_files", [False, True])
def test_loader_round_trip(real, crop_files):
    root, videos = real
    _write_layout(root, videos, crop_files)
    split = load_features(root / "test.list", root / "ann.txt")
    assert split.split == "test" and split.classes == ("Abuse", "Arson") and (split.crops, split.dim) == (2, D)
    assert [v.name for v in split.videos] == list(videos)
    for video in split.videos:
        np.testing.assert_array_equal(video.features, videos[video.name])
        assert video.features.dtype == np.float32
    assert [v.cls for v in split.videos] == ["Abuse", "Arson", NORMAL, NORMAL]
    assert [v.label for v in split.videos] == [1, 1, 0, 0]
    expected = np.zeros(4 * 16 + 3 * 16 + 2 * 16 + 5 * 16, dtype=np.uint8)
    expected[10:20] = expected[40:64] = expected[64:64 + 48] = 1
    np.testing.assert_array_equal(np.concatenate([v.frame_labels for v in split.videos]), expected)
    np.testing.assert_array_equal(split.videos[0].snippet_labels, [1, 1, 1, 1])
    np.testing.assert_array_equal(split.videos[1].snippet_labels, [1, 1, 1])


def test_training_split_and_one_crop(tmp_path):
    np.save(tmp_path / "Shooting002_x264_i3d.npy", np.ones((6, D)))
    (tmp_path / "train.list").write_text("Shooting002_x264_i3d.npy\n")
    split = load_features(tmp_path / "train.list")
    (video,) = split.videos
    assert split.split == "train" and video.name == "Shooting002_x264" and video.features.shape == (6, 1, D)
    assert video.frame_labels is None and video.snippet_labels is None and video.cls == "Shooting"
    custom = load_features(tmp_path / "train.list", class_of=lambda name: "Violence")
    assert custom.videos[0].cls == "Violence"


def test_class_from_name():
    assert class_from_name("RoadAccidents001_x264") == "RoadAccidents"
    assert class_from_name("Normal_Videos308_3_x264") == NORMAL
    assert class_from_name("A.Beautiful.Mind.2001__#00-01-45_00-02-50_label_A") == NORMAL
    assert class_from_name("Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6") == "G"


def _bad(root, text: str, name: str = "bad.list") -> object:
    (root / name).write_text(text)
    return root / name


@pytest.mark.parametrize("case, match", [
    ("empty list", "names no feature files"),
    ("missing file", "no such file"),
    ("corrupt npy", "not a readable .npy"),
    ("wrong rank", r"expected \[T, D\]"),
    ("nan", "NaN"),
    ("dim mismatch", r"\[crops, D\]"),
    ("duplicate", "listed twice"),
    ("crop lengths", "snippets, its other crops"),
])
def test_bad_features(real, case, match):
    root, videos = real
    _write_layout(root, videos)
    lines = (root / "test.list").read_text()
    if case == "corrupt npy":
        (root / "Abuse028_x264.npy").write_bytes(b"not an array")
    elif case == "wrong rank":
        np.save(root / "Abuse028_x264.npy", np.zeros(4))
    elif case == "nan":
        np.save(root / "Abuse028_x264.npy", np.full((4, 2, D), np.nan))
    elif case == "dim mismatch":
        np.save(root / "Abuse028_x264.npy", np.zeros((4, 2, D + 1)))
    elif case == "crop lengths":
        np.save(root / "Extra_x264__0.npy", np.zeros((4, D)))
        np.save(root / "Extra_x264__1.npy", np.zeros((5, D)))
    text = {"empty list": "\n\n", "missing file": lines + "Gone_x264.npy\n",
            "duplicate": lines + lines.splitlines()[0] + "\n",
            "crop lengths": lines + "Extra_x264__0.npy\nExtra_x264__1.npy\n"}.get(case, lines)
    with pytest.raises(ZooValueError, match=match) as err:
        load_features(_bad(root, text))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("annotation, match", [
    ("Abuse028_x264.mp4  Abuse  10  100  -1  -1", "outside video"),  # 4 snippets = 64 frames (+16 tolerated)
    ("Abuse028_x264.mp4  Abuse  64  70  -1  -1", "outside video"),
    ("Abuse028_x264.mp4  Abuse  20  10  -1  -1", "start < end"),
    ("Abuse028_x264.mp4  Abuse  10  x  -1  -1", "integer frames"),
    ("Abuse028_x264.mp4  Abuse  10  20  -1", "integer frames"),
    ("Abuse028_x264.mp4  Abuse  10  20\nAbuse028_x264.mp4  Abuse  10  20", "annotated twice"),
    ("Arson011_x264.mp4  Arson  0  10  -1  -1", "no annotation line"),
])
def test_bad_annotations(real, annotation, match):
    root, videos = real
    _write_layout(root, {"Abuse028_x264": videos["Abuse028_x264"]})
    with pytest.raises(ZooValueError, match=match) as err:
        load_features(root / "test.list", _bad(root, annotation + "\n", "ann.txt"))
    assert "\n" not in str(err.value)


def test_synthvad_round_trips_through_the_loader(tmp_path):
    split = SynthVAD(n_test=6, crops=2, dim=D).split("test")
    _write_layout(tmp_path, {v.name: v.features for v in split.videos})
    spans = []
    for v in split.videos:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], v.frame_labels, [0]])))
        spans.append(f"{v.name}.mp4  {v.cls}  " + "  ".join(map(str, edges)) if len(edges) else
                     f"{v.name}.mp4  {v.cls}  -1  -1")
    (tmp_path / "ann.txt").write_text("\n".join(spans) + "\n")
    loaded = load_features(tmp_path / "test.list", tmp_path / "ann.txt")
    for a, b in zip(split.videos, loaded.videos):
        assert (a.name, a.cls) == (b.name, b.cls)
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.frame_labels, b.frame_labels)


def test_synthvad_shapes_and_supervision():
    gen = SynthVAD(n_train=24, n_test=12, t_range=(20, 30), crops=3, dim=D)
    train, test = gen.split("train"), gen.split("test")
    assert len(train.videos) == 24 and len(test.videos) == 12 and train.classes == tuple(c.name for c in CLASSES)
    for video in train.videos + test.videos:
        steps = video.features.shape[0]
        assert 20 <= steps <= 30 and video.features.shape == (steps, 3, D) and video.features.dtype == np.float32
    assert all(v.frame_labels is None for v in train.videos)
    for video in test.videos:
        assert video.frame_labels.shape == (16 * len(video.features),)
        assert video.snippet_labels.any() == bool(video.label)
    labels = [v.label for v in train.videos]
    assert sum(labels) == 12
    assert sorted(v.cls for v in train.videos if v.label) == sorted([c.name for c in CLASSES] * 2)


def test_synthvad_is_deterministic_and_prefix_stable():
    small, large = SynthVAD(seed=3, n_test=4), SynthVAD(seed=3, n_test=10)
    for a, b in zip(small.split("test").videos, large.split("test").videos):
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.frame_labels, b.frame_labels)
    np.testing.assert_array_equal(small.directions, large.directions)
    assert not np.array_equal(small.video("train", 1).features, SynthVAD(seed=4).video("train", 1).features)
    assert small.video("train", 0).name != small.video("train", 1).name


def test_synthvad_strong_classes_separate_weak_ones_less():
    """Per video, the shift of anomalous snippets along the class direction in sds of its normal snippets:
    strong classes several sds, weak ones one to three; TwoPhase's two phases cancel in the mean."""
    gen = SynthVAD(seed=0, n_test=144)
    names = [c.name for c in CLASSES]
    shift: dict[str, list[float]] = {name: [] for name in names}
    for video in gen.split("test").videos:
        if video.label:
            anomalous = video.snippet_labels.astype(bool)
            proj = video.features.mean(axis=1) @ gen.directions[names.index(video.cls)]
            shift[video.cls].append((proj[anomalous].mean() - proj[~anomalous].mean()) / proj[~anomalous].std())
    mean = {name: float(np.mean(values)) for name, values in shift.items()}
    assert min(mean["Spike"], mean["Bursts"]) > 4
    assert 1 < min(mean["Plateau"], mean["SceneShift"]) and max(mean["Plateau"], mean["SceneShift"]) < 3
    assert abs(mean["TwoPhase"]) < 0.5


@pytest.mark.parametrize("kwargs", [{"t_range": (8, 20)}, {"t_range": (40, 30)}, {"crops": 0}, {"dim": 4},
                                    {"n_train": -1}])
def test_synthvad_bad_arguments(kwargs):
    with pytest.raises(ZooValueError):
        SynthVAD(**kwargs)
    with pytest.raises(ZooValueError):
        SynthVAD().split("val")
