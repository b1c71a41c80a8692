"""The nerf task end to end on a tiny ProceduralCity: every recipe builds and renders, a 3-step HMoHE run through the
zoo flow reports its PSNR, timing and routing metrics and writes its renders and figures, a dense run reports no
routing, ``zoo train nerf`` in both argument orders with one-line errors for bad settings, and published weights
that render the same pixels without the scene."""

import json
import math

import numpy as np
import pytest
import torch

from zoo import api, hub, modelinfo
from zoo.cli import main
from zoo.config import recipe_names, resolve_config
from zoo.task import fit_and_test
from zoo.tasks.nerf import TASK
from zoo.tasks.nerf import data as nerf_data
from zoo.tasks.nerf.config import MOE_FIELDS, NerfConfig
from zoo.tasks.nerf.evaluation import EXPERTS_FILE, VIEWS_FILE, render_image, view_rays
from zoo.tasks.nerf.module import NerfModule
from zoo.tasks.nerf.plots import RENDERS_FILE, RENDERS_KEYS

TINY = {"data.views": 16, "data.size": 64, "data.batch_rays": 64, "trainer.max_steps": 3,
        "eval.appearance_steps": 2, "eval.appearance_rays": 64, "render.samples": 4, "render.importance": 4,
        "model.width": 16, "model.color_width": 16, "model.depth": 2, "model.levels": 2, "model.gate_levels": 2,
        "model.log2_table": 10}
#: Held-out views of a 16-view city (every 8th) and their side.
TEST_VIEWS, SIZE = 2, 64
RECIPES = {"mlp_city": "mlp", "hash_city": "hash", "voronoi_city": "voronoi", "switch_city": "switch",
           "hash-moe_city": "hash_moe", "hmohe_city": "hash_moe"}
ROUTING = ("test/load_max", "test/purity", "test/downtown_finest")
PNG = b"\x89PNG\r\n\x1a\n"


def _config(recipe="hmohe_city", **layer):
    cfg, _ = resolve_config(NerfConfig, "nerf", recipe, layers=[{**TINY, **layer}])
    return cfg


def _train_and_publish(root, recipe, **layer):
    cfg = _config(recipe, **layer)
    result = fit_and_test(TASK, cfg, root / "run", progress=False)
    plain, tensors = modelinfo.split(modelinfo.load_run(root / "run"))
    art = hub.publish({**result.module.model.state_dict(), **tensors}, cfg, arch=recipe.replace("_", "-"),
                      tag="tiny", out_dir=root / "w", extra={"task": "nerf", "model_info": plain})
    return result, art, cfg


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: two OpenMP threads on a shared 2-core machine wait for each other at every layer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step HMoHE field on a 16-view city (its 20 dB target out of reach), published as safetensors + YAML."""
    root = tmp_path_factory.mktemp("nerf")
    result, art, cfg = _train_and_publish(root, "hmohe_city")
    return result, art, root, cfg


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A 3-step dense MLP field whose 1 dB target is reached at the first step."""
    root = tmp_path_factory.mktemp("nerf-dense")
    return fit_and_test(TASK, _config("mlp_city", **{"eval.target_psnr": 1.0}), root / "run", progress=False)


def _info(num_images=6):
    """A model info made by hand, so a recipe's full-size model builds without rendering its scene."""
    return {"box": [[-1.0, -1.0, 0.0], [1.0, 1.0, 0.5]], "num_images": num_images,
            "train_appearance": list(range(num_images - 1)), "image_size": [SIZE, SIZE],
            "orbit": {"centre": [0.0, 0.0, 0.1], "radius": 2.0, "height": 1.5, "focal": 77.0}}


def test_the_recipes_are_the_six_rows():
    assert sorted(recipe_names("nerf")) == sorted(RECIPES)


@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_builds_a_field_that_renders_with_gradients(recipe, smoke):
    cfg, smoke_overrides = resolve_config(NerfConfig, "nerf", recipe, smoke=smoke)
    full, _ = resolve_config(NerfConfig, "nerf", recipe)
    assert cfg.model.field == RECIPES[recipe] and smoke_overrides
    if smoke:
        assert cfg.trainer["max_steps"] < full.trainer["max_steps"] and cfg.data.views < full.data.views
        assert cfg.model == full.model  # smoke shrinks the data and the budget, never the model
    module = TASK.build_module(cfg, _info())
    rays = 8
    origins = torch.tensor([[0.3 * i - 1.0, 0.1, 2.0] for i in range(rays)])
    directions = torch.nn.functional.normalize(torch.tensor([[0.05 * i, 0.0, -1.0] for i in range(rays)]), dim=-1)
    appearance = torch.arange(rays) % 6
    module.train()
    out = module.render(origins, directions, appearance, jitter=True)
    assert out.rgb.shape == (rays, 3) and ((out.rgb >= 0) & (out.rgb <= 1)).all()
    assert torch.isfinite(out.depth).all() and ((out.opacity >= 0) & (out.opacity <= 1 + 1e-6)).all()
    loss = torch.mean((out.rgb - 0.5) ** 2) + sum(out.aux.values(), torch.zeros(()))
    loss.backward()
    grads = [p.grad for p in module.model.field.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    if cfg.model.field in MOE_FIELDS:
        assert ((out.expert >= -1) & (out.expert < cfg.model.num_experts)).all()
    else:
        assert (out.expert == -1).all()


def test_moe_run_reports_finite_metrics_and_no_time_to_an_unreached_target(trained):
    result, _, root, cfg = trained
    m = result.metrics
    for key in ("test/psnr", "test/ssim", "test/psnr_downtown", "test/psnr_suburb", "test/render_ms",
                "test/render_rays_per_s", "test/train_s", "test/train_rays_per_s", "test/dropped_pct", *ROUTING):
        assert math.isfinite(m[key]), key
    assert 0 < m["test/psnr"] < cfg.eval.target_psnr and -1 <= m["test/ssim"] <= 1
    assert m["test/render_ms"] > 0 and m["test/train_s"] > 0 and 0 <= m["test/dropped_pct"] <= 100
    assert 1 / cfg.model.num_experts <= m["test/load_max"] <= 1 and 0 <= m["test/purity"] <= 1
    assert 0 <= m["test/downtown_finest"] <= 1
    assert "test/train_s_to_target" not in m  # 3 steps never reach 20 dB: left out, not NaN
    figures = result.module.training_figures()
    assert int(result.module.steps_done) == cfg.trainer["max_steps"]
    rays = cfg.trainer["max_steps"] * cfg.data.batch_rays
    assert figures["train_rays_per_s"] == pytest.approx(rays / figures["train_s"])
    saved = json.loads((root / "run" / "results.json").read_text())["metrics"]
    assert saved.keys() == m.keys()
    assert all(saved[k] == pytest.approx(v, nan_ok=True) for k, v in m.items())


def test_moe_run_writes_renders_and_figures(trained):
    result, _, root, cfg = trained
    run = root / "run"
    assert (run / VIEWS_FILE).read_bytes()[:8] == PNG and (run / EXPERTS_FILE).read_bytes()[:8] == PNG
    with np.load(run / RENDERS_FILE) as f:
        renders = {k: f[k] for k in f.files}
    assert set(renders) == set(RENDERS_KEYS)
    assert renders["gt"].shape == renders["pred"].shape == (TEST_VIEWS, SIZE, SIZE, 3)
    assert renders["experts"].shape == (TEST_VIEWS, SIZE, SIZE) and renders["experts"].dtype == np.int16
    assert renders["experts"].min() >= -1 and renders["experts"].max() < cfg.model.num_experts
    assert (renders["experts"] >= 0).any()
    assert list(renders["names"]) == ["images/frame_0000.png", "images/frame_0008.png"]
    right = slice(SIZE // 2, SIZE)
    for i in range(TEST_VIEWS):  # each view's PSNR is its right half's, where no appearance was fitted
        mse = np.mean((renders["pred"][i, :, right].astype(np.float64) - renders["gt"][i, :, right]) ** 2)
        assert renders["psnr"][i] == pytest.approx(-10 * np.log10(mse), abs=1e-4)
    pooled = np.mean((renders["pred"][:, :, right].astype(np.float64) - renders["gt"][:, :, right]) ** 2)
    assert result.metrics["test/psnr"] == pytest.approx(-10 * np.log10(pooled), abs=1e-4)


def test_dense_run_has_no_routing_and_times_its_target(dense):
    m = dense.metrics
    assert not any(key in m for key in ROUTING)
    assert m["test/dropped_pct"] == 0 and math.isfinite(m["test/psnr"])
    assert 0 < m["test/train_s_to_target"] <= m["test/train_s"]
    assert not (dense.run_dir / EXPERTS_FILE).exists() and (dense.run_dir / VIEWS_FILE).exists()
    with np.load(dense.run_dir / RENDERS_FILE) as f:
        assert (f["experts"] == -1).all()


def test_training_figures_of_an_untrained_module():
    cfg = _config("hash_city")
    module = TASK.build_module(cfg, _info())
    assert isinstance(module, NerfModule)
    figures = module.training_figures()
    assert figures["train_s"] == 0 and math.isnan(figures["train_s_to_target"])
    assert math.isnan(figures["train_rays_per_s"]) and math.isnan(figures["dropped_pct"])


def _cli(capsys, argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _tiny_sets():
    sets = []
    for key, value in TINY.items():
        sets += ["--set", f"{key}={value}"]
    return sets


@pytest.mark.parametrize("order", ["options_first", "options_last"])
def test_train_by_name_in_both_argument_orders(tmp_path, capsys, order):
    run = tmp_path / "run"
    options = ["--recipe", "hmohe_city", "--smoke", *_tiny_sets(), "--out", run, "--no-progress", "--threads", 1,
               "--json"]
    argv = ["train", *options, "nerf"] if order == "options_first" else ["train", "nerf", *options]
    code, out, err = _cli(capsys, argv)
    assert code == 0, err
    printed = json.loads(out[out.index("{"):])
    assert printed["run_dir"] == str(run) and math.isfinite(printed["metrics"]["test/purity"])
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["smoke"] is True and cfg["recipe"] == "hmohe_city"
    for name in ("config.yaml", "results.json", RENDERS_FILE, VIEWS_FILE, EXPERTS_FILE, "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert "max_steps: 3" in (run / "config.yaml").read_text()  # --set wins over --smoke


@pytest.mark.parametrize("setting, fragment", [
    ("model.field=bogus", "model.field"),
    ("data.box=[[0,0,0],[1,0,1]]", "data.box"),
    ("model.expert_resolutions=[[16,128],[32,256]]", "model.expert_resolutions"),
    ("data.scene=/nonexistent/path", "/nonexistent/path"),
])
def test_bad_settings_are_one_line_and_leave_no_run_dir(tmp_path, capsys, setting, fragment):
    run = tmp_path / "run"
    code, _, err = _cli(capsys, ["train", "nerf", "--recipe", "hmohe_city", "--smoke", *_tiny_sets(), "--set",
                                 setting, "--out", run, "--no-progress", "--threads", 1])
    lines = [line for line in err.strip().splitlines() if not line.startswith(("run dir: ", "removed "))]
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and lines[0].startswith("zoo: error: "), err
    assert fragment in lines[0], lines[0]
    assert not run.exists()


def test_published_weights_render_the_same_pixels_without_the_scene(trained, monkeypatch):
    result, art, _, cfg = trained
    views = nerf_data.load_views(cfg.data, "test")

    def no_scene(*args, **kwargs):
        raise AssertionError("loading published weights read the scene")

    monkeypatch.setattr(nerf_data, "load_views", no_scene)
    monkeypatch.setattr(nerf_data, "city", no_scene)
    loaded = api.load_weights(str(art.weights_path))
    assert loaded.datamodule is None and loaded.info["box"] == result.module.info["box"]
    loaded.module.eval()
    result.module.eval()
    rays = view_rays(views, 1)
    got = render_image(loaded.module, *rays, SIZE, SIZE)
    want = render_image(result.module, *rays, SIZE, SIZE)
    for key in ("rgb", "depth", "expert", "opacity"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_training_figures_are_kept_before_the_checkpoint_callbacks_run(tmp_path):
    """Callbacks (the run checkpoint among them) see a batch's step, rays and timing already counted, so a checkpoint
    saved at batch end holds them and a run resumed from it loses none."""
    import lightning as L

    from zoo.task import build_from_config

    seen = []

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append((trainer.global_step, int(pl_module.steps_done), int(pl_module.rays_done),
                         float(pl_module.train_seconds)))

    cfg = _config("switch_city")
    built = build_from_config(TASK, cfg)
    trainer = L.Trainer(max_steps=3, callbacks=[Probe()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(built.module, datamodule=built.datamodule)
    assert [(g, s, r) for g, s, r, _ in seen] == [(1, 1, 64), (2, 2, 128), (3, 3, 192)]
    assert all(t > 0 for *_, t in seen) and seen[0][3] < seen[1][3] < seen[2][3]
