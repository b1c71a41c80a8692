"""The detection task end to end on a tiny Mini-UODB: training by name through the zoo flow, per-dataset AP and
routing metrics, every recipe, self-contained weights, ``zoo predict detection`` on images and folders in every
argument order, its drawings and COCO results, and one-line errors for bad input."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from zoo import api, hub, modelinfo
from zoo.cli import main
from zoo.config import resolve_config
from zoo.errors import ZooValueError
from zoo.task import LoadedModel, build_from_info, fit_and_test
from zoo.tasks.detection import TASK
from zoo.tasks.detection.config import DetectionConfig
from zoo.tasks.detection.evaluation import CONFUSION_FILE, EXAMPLES_FILE
from zoo.tasks.detection.miniuodb import MiniUODB

TINY = {"data.miniuodb": ["digits", "comic", "faces"], "data.real": [], "data.scale": 0.02, "data.batch_size": 8,
        "model.d_model": 32, "model.ffn_hidden": 32, "model.queries": 8, "trainer.max_epochs": 1}


def _config(recipe="damex_miniuodb", **layer):
    cfg, _ = resolve_config(DetectionConfig, "detection", recipe, layers=[{**TINY, **layer}])
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch DAMEX detector on three tiny Mini-UODB domains, published as safetensors + YAML."""
    root = tmp_path_factory.mktemp("det")
    cfg = _config()
    result = fit_and_test(TASK, cfg, root / "run", progress=False)
    info = modelinfo.load_run(root / "run")
    plain, tensors = modelinfo.split(info)
    art = hub.publish({**result.module.model.state_dict(), **tensors}, cfg, arch="damex", tag="tiny",
                      out_dir=root / "w", extra={"task": "detection", "model_info": plain})
    return result, art, root, cfg, info


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two images not in the repo: a Mini-UODB test image drawn with another data seed, saved as PNG, and its
    grayscale twin; plus a folder holding both."""
    folder = tmp_path_factory.mktemp("images")
    image, _, _, _ = MiniUODB(seed=7).render("digits", "test", 3)
    Image.fromarray(image).save(folder / "a.png")
    Image.fromarray(image).convert("L").save(folder / "b_gray.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_training_reports_per_dataset_ap_and_routing(trained):
    result, _, root, _, info = trained
    for name in info["datasets"]:
        assert f"test/ap/{name}" in result.metrics and f"test/ap50/{name}" in result.metrics
    for key in ("test/ap_mean", "test/ap50_mean", "test/routing_acc", "test/usage_entropy_norm",
                "test/images_per_s"):
        assert np.isfinite(result.metrics[key]), key
    assert 0 <= result.metrics["test/routing_acc"] <= 1
    for name in (CONFUSION_FILE, EXAMPLES_FILE):
        assert (root / "run" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_info_is_enough_to_rebuild(trained, images):
    result, _, _, cfg, info = trained
    assert info["datasets"] == ["miniuodb/digits", "miniuodb/comic", "miniuodb/faces"]
    assert info["experts"] == [0, 1, 2] and info["num_experts"] == 3 and len(info["classes"]) == 14
    assert info["dataset_labels"][1] == [10, 11, 12]
    rebuilt = build_from_info(TASK, cfg, info)
    assert rebuilt.datamodule is None
    rebuilt.module.model.load_state_dict(result.module.model.state_dict())
    want = TASK.predict(LoadedModel(TASK, cfg, result.module, info), images / "a.png", score_thr=0.0)
    assert TASK.predict(rebuilt, images / "a.png", score_thr=0.0) == want


@pytest.mark.parametrize("order", ["options_last", "options_first", "mixed"])
def test_predict_cli_in_every_argument_order(trained, images, tmp_path, capsys, order):
    _, art, _, _, info = trained
    out, plots = tmp_path / "results.json", tmp_path / "drawn"
    weights, rest = ["--weights", str(art.weights_path)], ["--out", str(out), "--out-dir", str(plots), "--json"]
    argv = {"options_last": ["predict", "detection", str(images), *weights, "--score-thr", "0", *rest],
            "options_first": ["predict", *weights, "--score-thr", "0", *rest, "detection", str(images)],
            "mixed": ["predict", *weights, "detection", "--score-thr", "0", str(images), *rest]}[order]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    results = json.loads(out.read_text())
    assert len(results) == len(printed) > 0
    assert {r["file_name"] for r in results} == {"a.png", "b_gray.png"}
    for r in results:
        assert set(r) == {"image_id", "file_name", "category_id", "category_name", "bbox", "score"}
        assert r["category_name"] == info["classes"][r["category_id"]] and r["bbox"][2] >= 0 and r["bbox"][3] >= 0
    assert sorted(p.name for p in plots.iterdir()) == ["a.png", "b_gray.png"]
    assert Image.open(plots / "a.png").size[0] >= 256  # upscaled so the labels can be read


def test_predict_draws_boxes_on_one_image(trained, images, tmp_path):
    _, art, _, _, _ = trained
    loaded = api.load_weights(str(art.weights_path))
    png = tmp_path / "boxes.png"
    rows = TASK.predict(loaded, images / "a.png", plot=png, score_thr=0.0)
    assert rows and all(0 <= r["x1"] <= r["x2"] <= 64 and 0 <= r["y1"] <= r["y2"] <= 64 for r in rows)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    drawn = np.asarray(Image.open(png).convert("RGB"))
    plain = np.asarray(Image.open(images / "a.png").convert("RGB").resize(drawn.shape[1::-1], Image.NEAREST))
    assert (drawn != plain).any()


def test_predict_maps_boxes_back_to_a_large_image(trained, tmp_path, capsys):
    _, art, _, _, _ = trained
    loaded = api.load_weights(str(art.weights_path))
    image, _, _, _ = MiniUODB(seed=3).render("faces", "test", 0)
    big = tmp_path / "big.png"
    Image.fromarray(image).resize((640, 320)).convert("RGBA").save(big)
    rows = TASK.predict(loaded, big, score_thr=0.0)
    assert "shrunk to 64 px" in capsys.readouterr().err
    assert rows and max(r["x2"] for r in rows) <= 640 and max(r["y2"] for r in rows) <= 320


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.png", "no such image file or folder"),
    (lambda d: _write(d / "broken.png", b"\x89PNG\r\n\x1a\n garbage"), "not a readable image"),
    (lambda d: _write(d / "text.jpg", b"hello"), "not a readable image"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no image files"),
])
def test_bad_predict_input_is_one_line_exit_2_and_writes_nothing(trained, tmp_path, capsys, make, message):
    _, art, _, _, _ = trained
    out, png = tmp_path / "o.json", tmp_path / "o.png"
    code = main(["predict", "detection", str(make(tmp_path)), "--weights", str(art.weights_path),
                 "--out", str(out), "--plot", str(png)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not out.exists() and not png.exists()


@pytest.mark.parametrize("options, message", [({"plot": "a.jpg"}, "ending in .png"),
                                              ({"score_thr": 1.5}, "--score-thr"),
                                              ({"dataset": "nope"}, "not in the weights' mix")])
def test_bad_predict_options_are_refused(trained, images, options, message):
    result, _, _, cfg, info = trained
    with pytest.raises(ZooValueError, match=message):
        TASK.predict(LoadedModel(TASK, cfg, result.module, info), images / "a.png", **options)


def test_plot_of_a_folder_is_refused(trained, images):
    result, _, _, cfg, info = trained
    with pytest.raises(ZooValueError, match="use --out-dir"):
        TASK.predict(LoadedModel(TASK, cfg, result.module, info), images, plot="x.png")


@pytest.mark.parametrize("recipe", ["dense_miniuodb", "dense-heads_miniuodb", "per-dataset_miniuodb",
                                    "vanilla_miniuodb", "split_miniuodb", "damex-oracle_miniuodb"])
def test_every_recipe_trains_and_tests(recipe, tmp_path):
    cfg = _config(recipe, **{"model.split_epochs": 0})
    result = fit_and_test(TASK, cfg, tmp_path / "run", progress=False)
    assert 0 <= result.metrics["test/ap50_mean"] <= 1
    assert ("test/routing_acc" in result.metrics) == (recipe in ("vanilla_miniuodb", "damex-oracle_miniuodb"))
    assert ("test/usage_entropy" in result.metrics) == (recipe in ("vanilla_miniuodb", "split_miniuodb",
                                                                    "damex-oracle_miniuodb"))


def test_rows_that_use_the_dataset_at_test_time_need_it_in_predict(tmp_path, images):
    cfg = _config("dense-heads_miniuodb")
    result = fit_and_test(TASK, cfg, tmp_path / "run", progress=False)
    loaded = LoadedModel(TASK, cfg, result.module, result.module.info)
    with pytest.raises(ZooValueError, match="add --dataset NAME"):
        TASK.predict(loaded, images / "a.png")
    rows = TASK.predict(loaded, images / "a.png", dataset="miniuodb/digits", score_thr=0.001)
    assert rows and all(r["class"].startswith("miniuodb/digits/") for r in rows)


def test_training_is_reproducible(tmp_path):
    cfg = _config("dense_miniuodb")
    a = fit_and_test(TASK, cfg, tmp_path / "a", progress=False)
    b = fit_and_test(TASK, cfg, tmp_path / "b", progress=False)
    assert a.metrics.keys() == b.metrics.keys()
    for (name, x), y in zip(a.module.state_dict().items(), b.module.state_dict().values()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("layer, message", [
    ({"data.miniuodb": ["digits", "cats"]}, "data.miniuodb"),
    ({"data.image_size": 60}, "data.image_size"),
    ({"data.experts": {"miniuodb/digits": 0}}, "gives no expert"),
    ({"model.routing": "oracle", "model.decoder": "dense"}, "model.routing"),
    ({"model.moe_layers": [5]}, "model.moe_layers"),
    ({"model.decoder": "split"}, "model.routing_loss"),
    ({"model.per_dataset": True, "model.routing": "oracle"}, "model.routing"),
    ({"model.d_model": 30, "model.heads": 2}, "model.d_model"),
    ({"model.num_experts": 2}, "model.num_experts"),
])
def test_bad_configs_are_one_line(layer, message):
    with pytest.raises(ZooValueError, match=message):
        cfg = _config(**layer)
        dm = TASK.build_datamodule(cfg)
        dm.setup("fit")
        TASK.build_module(cfg, TASK.model_info(cfg, dm))


def test_task_metadata_imports_no_heavy_module():
    code = ("import sys, zoo.tasks.detection as t; t.TASK.config_cls(); "
            "print(sorted(m for m in ('torch', 'lightning', 'torchvision', 'timm', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _coco_split(folder, domain, split, count):
    """``count`` Mini-UODB images of one domain written as PNGs with a COCO JSON, as a user's dataset would be."""
    gen = MiniUODB(seed=11)
    classes = gen.dataset(domain, "test").classes
    images, annotations = [], []
    for i in range(count):
        image, boxes, labels, _ = gen.render(domain, split, i)
        name = f"{split}_{i}.png"
        Image.fromarray(image).save(folder / name)
        images.append({"id": i, "file_name": name, "width": 64, "height": 64})
        for box, label in zip(boxes.tolist(), labels.tolist()):
            annotations.append({"id": len(annotations), "image_id": i, "category_id": label + 1, "iscrowd": 0,
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    categories = [{"id": c + 1, "name": name} for c, name in enumerate(classes)]
    path = folder / f"{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_a_users_coco_dataset_trains_from_the_command_line(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    train, test = _coco_split(folder, "signs", "train", 24), _coco_split(folder, "signs", "test", 8)
    spec = f"[{{name: mine, annotations: {train}, images: {folder}, test_annotations: {test}}}]"
    argv = ["train", "detection", "--recipe", "dense_miniuodb", "--set", f"data.coco={spec}", "--set",
            "data.miniuodb=[]", "--set", "data.real=[]", "--set", "trainer.max_epochs=1", "--set",
            "model.d_model=32", "--out", str(tmp_path / "run"), "--no-progress", "--json"]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    metrics = metrics.get("metrics", metrics)
    assert 0 <= metrics["test/ap50/mine"] <= 1 and metrics["test/ap50_mean"] == metrics["test/ap50/mine"]
    info = modelinfo.load_run(tmp_path / "run")
    assert info["datasets"] == ["mine"] and info["classes"][0] == "mine/prohibitory"


def test_a_users_coco_dataset_without_a_test_split_is_one_line(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    train = _coco_split(folder, "faces", "train", 4)
    with pytest.raises(ZooValueError, match="test_annotations"):
        _config(**{"data.coco": [{"name": "mine", "annotations": str(train), "images": str(folder)}],
                   "data.miniuodb": [], "data.real": []})


def test_a_test_split_with_other_categories_fails_before_training(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    train, test = _coco_split(folder, "faces", "train", 4), _coco_split(folder, "signs", "test", 4)
    cfg = _config(**{"data.coco": [{"name": "mine", "annotations": str(train), "images": str(folder),
                                    "test_annotations": str(test)}], "data.miniuodb": [], "data.real": []})
    with pytest.raises(ZooValueError, match="test datasets' classes differ"):
        TASK.build_datamodule(cfg).setup("fit")
