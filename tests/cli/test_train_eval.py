"""The ``zoo`` CLI end to end on the forecasting task: train → eval → resume → publish → weights → API.

Everything is written under tmp dirs: ``--out`` for runs, ``ZOO_WEIGHTS_DIR`` / ``ZOO_HOME`` for weights, and
``zoo.api.manifest_path`` for the manifest, so the repository is never touched (checked at teardown).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import zoo.api
from zoo.cli import main
from zoo.config import config_sha256, from_dict, recipe_names, repo_root, to_dict
from zoo.tasks.forecasting.config import ForecastingConfig

RECIPE = "moe_e8k2_m3-monthly"
FAST = ["--smoke", "--set", "data.max_series=12", "--set", "trainer.max_epochs=1", "--no-progress"]
WEIGHT_ID = "forecasting/moe_e8k2.test"

# Resuming a copied run dir: Lightning notes that the checkpoint callback's dirpath changed (harmless here).
pytestmark = pytest.mark.filterwarnings("ignore:The dirpath has changed")


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``zoo ARGV`` in process; argparse usage errors (SystemExit) count like returned codes."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(result, code: int, *fragments: str) -> str:
    rc, _, err = result
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("zoo: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert rc == code, err
    return lines[0]


def last_json(out: str):
    """The JSON document that ends ``out`` (``train --json`` prints a 'run dir:' line before it)."""
    return json.loads(out[out.index("{") :])


def ckpt_progress(run: Path) -> tuple[int, int]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["epoch"], ckpt["global_step"]


def assert_same_metrics(a: dict, b: dict, tol: float = 1e-6) -> None:
    """Equal test metrics; ``fit/*`` (how the training went: its validation curve and seconds) are left out, since
    an evaluation fits nothing."""
    a, b = ({k: v for k, v in m.items() if not k.startswith("fit/")} for m in (a, b))
    assert set(a) == set(b)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=0, abs=tol), key


def leaked_into_repo() -> list[str]:
    """Our artifacts (tag ``test``) found in the in-tree weights dir or manifest; others' files are ignored."""
    root = repo_root()
    weights = root / "data" / "weights"
    leaked = [str(p) for p in weights.glob("*.test-*")] if weights.is_dir() else []
    manifest = root / "tasks" / "forecasting" / "weights.yaml"
    if manifest.exists() and WEIGHT_ID in manifest.read_text():
        leaked.append(str(manifest))
    return leaked


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Private weights dir, ZOO_HOME, manifest and cwd for the whole module; the repo must stay unchanged."""
    base = tmp_path_factory.mktemp("zoo_env")
    assert not leaked_into_repo()
    manifests = base / "manifests"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_WEIGHTS_DIR", str(base / "weights"))
        mp.setenv("ZOO_HOME", str(base / "home"))
        mp.setenv("ZOO_OFFLINE", "1")
        mp.setattr(zoo.api, "manifest_path", lambda task: manifests / task / "weights.yaml")
        cwd = base / "cwd"
        cwd.mkdir()
        mp.chdir(cwd)
        yield base
        assert not (cwd / "runs").exists(), "a command wrote runs/ into the working directory despite --out"
    assert not leaked_into_repo(), "the tests published into the repository's manifest or data/weights"


@pytest.fixture(scope="module")
def run(env) -> Path:
    """One trained smoke run, shared by the read-only tests below."""
    out = env / "runs" / "main"
    assert main(["train", "forecasting", "--recipe", RECIPE, *FAST, "--out", str(out), "--json"]) == 0
    return out


@pytest.fixture(scope="module")
def published(env, run) -> str:
    code = main(["weights", "publish", "--task", "forecasting", "--run", str(run), "--arch", "moe_e8k2", "--tag", "test"])
    assert code == 0
    return WEIGHT_ID


# ------------------------------------------------------------------------------------------------ train


def test_train_writes_the_run_dir(run):
    for name in ("config.yaml", "run.json", "checkpoints/last.ckpt", "metrics.csv", "results.json"):
        assert (run / name).is_file(), name

    saved = yaml.safe_load((run / "config.yaml").read_text())
    cfg = from_dict(ForecastingConfig, saved)
    assert cfg.data.max_series == 12 and cfg.trainer == {"max_epochs": 1, "gradient_clip_val": 1.0}
    assert cfg.moe.num_experts == 8 and cfg.moe.k == 2 and cfg.model.arch == "moe"
    assert saved == to_dict(cfg)

    info = json.loads((run / "run.json").read_text())
    assert isinstance(info["command"], list) and all(isinstance(c, str) for c in info["command"])
    assert info["torch"] == torch.__version__
    assert "git_commit" in info and (info["git_commit"] is None or len(info["git_commit"]) == 40)
    assert info["config_sha256"] == config_sha256(cfg)
    assert info["recipe"] == RECIPE and info["smoke"] is True
    assert isinstance(info["threads"], int) and info["threads"] >= 1

    results = json.loads((run / "results.json").read_text())
    assert results["config_sha256"] == info["config_sha256"]
    metrics = results["metrics"]
    assert {"test/smape", "test/mase", "test/mase_median", "test/owa"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    assert 0 <= metrics["test/smape"] <= 200 and metrics["test/mase"] > 0

    assert ckpt_progress(run)[0] == 1  # one epoch done
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("train/loss_epoch") for r in rows) and any(r.get("val/loss") for r in rows)
    assert float([r for r in rows if r.get("test/smape")][-1]["test/smape"]) == pytest.approx(metrics["test/smape"])


def test_run_json_records_the_zoo_command(run):
    command = json.loads((run / "run.json").read_text())["command"]
    assert "train" in command and RECIPE in command


def test_train_json_output_is_pure_json(env, capsys):
    code, out, _ = cli(capsys, "train", "forecasting", "--recipe", "snaive_m3-monthly", *FAST, "--out", env / "runs" / "json", "--json")
    assert code == 0
    json.loads(out)


def test_train_refuses_a_non_empty_out_dir(env, capsys):
    out = env / "runs" / "full"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("x")
    result = cli(capsys, "train", "forecasting", "--recipe", RECIPE, *FAST, "--out", out)
    assert_one_line_error(result, 2, "directory exists and is not empty")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


# ------------------------------------------------------------------------------------------------ eval


def test_eval_run_reproduces_the_test_metrics(run, env, capsys):
    out_file = env / "eval_run.json"
    code, out, _ = cli(capsys, "eval", "forecasting", "--run", run, "--results-out", out_file, "--json")
    assert code == 0
    expected = json.loads((run / "results.json").read_text())["metrics"]
    written = json.loads(out_file.read_text())
    assert written["source"] == str(run)
    assert written["torch"] == torch.__version__ and "git_commit" in written
    assert_same_metrics(written["metrics"], expected)
    assert_same_metrics(json.loads(out)["metrics"], expected)


# ------------------------------------------------------------------------------------------------ resume


def test_resume_of_a_finished_run_only_retests(run, env, capsys):
    """The saved config's max_epochs is already reached: no more steps, the same test metrics, results rewritten."""
    copy = env / "runs" / "resume_finished"
    shutil.copytree(run, copy)
    before = ckpt_progress(copy)
    code, out, err = cli(capsys, "train", "forecasting", "--resume", copy, "--no-progress", "--json")
    assert code == 0
    assert f"run dir: {copy}" in err
    assert json.loads(out)["run_dir"] == str(copy)
    assert ckpt_progress(copy) == before
    original = json.loads((run / "results.json").read_text())
    again = json.loads((copy / "results.json").read_text())
    assert again["config_sha256"] == original["config_sha256"]
    assert_same_metrics(again["metrics"], original["metrics"])


def test_resume_continues_to_a_raised_max_epochs(env, capsys):
    """1 epoch + resume (config.yaml edited to max_epochs=2) matches 2 uninterrupted epochs."""
    first = env / "runs" / "resume_1"
    straight = env / "runs" / "straight_2"
    assert cli(capsys, "train", "forecasting", "--recipe", RECIPE, *FAST, "--out", first)[0] == 0
    one_epoch = ckpt_progress(first)
    assert one_epoch[0] == 1 and one_epoch[1] > 0
    after_one = json.loads((first / "results.json").read_text())["metrics"]
    saved = yaml.safe_load((first / "config.yaml").read_text())
    saved["trainer"]["max_epochs"] = 2
    (first / "config.yaml").write_text(yaml.safe_dump(saved))

    code, out, _ = cli(capsys, "train", "forecasting", "--resume", first, "--no-progress", "--json")
    assert code == 0
    assert ckpt_progress(first) == (2, 2 * one_epoch[1])

    assert cli(capsys, "train", "forecasting", "--recipe", RECIPE, *FAST, "--set", "trainer.max_epochs=2", "--out", straight)[0] == 0
    assert ckpt_progress(straight) == (2, 2 * one_epoch[1])
    resumed = json.loads((first / "results.json").read_text())["metrics"]
    uninterrupted = json.loads((straight / "results.json").read_text())["metrics"]
    for key in uninterrupted:
        if not key.startswith("fit/seconds"):  # wall-clock
            assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-4), key
    assert resumed["test/mase"] != after_one["test/mase"]  # the second epoch really trained


def test_resume_keeps_the_training_log(run, env, capsys):
    copy = env / "runs" / "resume_log"
    shutil.copytree(run, copy)
    with open(copy / "metrics.csv", newline="") as f:
        assert any(r.get("train/loss_epoch") for r in csv.DictReader(f))
    assert cli(capsys, "train", "forecasting", "--resume", copy, "--no-progress")[0] == 0
    with open(copy / "metrics.csv", newline="") as f:
        assert any(r.get("train/loss_epoch") for r in csv.DictReader(f))


def test_resume_does_not_silently_drop_set(run, env, capsys):
    copy = env / "runs" / "resume_set"
    shutil.copytree(run, copy)
    code, _, _ = cli(capsys, "train", "forecasting", "--resume", copy, "--set", "trainer.max_epochs=2", "--no-progress")
    assert code == 2 or ckpt_progress(copy)[0] == 2


# ------------------------------------------------------------------------------------------------ weights


def test_publish_list_verify_and_eval_weights(run, published, env, capsys):
    weights_dir = env / "weights"
    files = sorted(p.name for p in weights_dir.iterdir())
    assert len(files) == 2 and files[0].startswith("moe_e8k2.test-") and files[0].endswith(".safetensors")
    assert files[1] == files[0].replace(".safetensors", ".yaml")
    manifest = yaml.safe_load((env / "manifests" / "forecasting" / "weights.yaml").read_text())
    assert [e["id"] for e in manifest["weights"]] == [published]

    code, out, _ = cli(capsys, "weights", "list", "--json")
    assert code == 0
    (entry,) = [e for e in json.loads(out) if e["id"] == published]
    run_metrics = json.loads((run / "results.json").read_text())["metrics"]
    assert entry["file"] == files[0] and entry["metrics"] == run_metrics
    assert 0 < entry["params_active"] < entry["params_total"]  # top-2 of 8 experts
    code, out, _ = cli(capsys, "list", "weights", "forecasting/*", "--json")
    assert code == 0 and [e["id"] for e in json.loads(out)] == [published]
    code, out, _ = cli(capsys, "info", "forecasting", "--json")
    assert code == 0 and json.loads(out)["weights"] == [published]

    code, out, _ = cli(capsys, "weights", "verify", published)
    assert code == 0 and out.startswith(f"ok  {published}") and files[0] in out
    code, out, _ = cli(capsys, "weights", "path", published)
    assert code == 0 and Path(out.strip()) == weights_dir / files[0]

    code, out, _ = cli(capsys, "eval", "forecasting", "--weights", published, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["source"] == published
    assert_same_metrics(result["metrics"], run_metrics)


def test_publishing_the_same_run_again_is_a_no_op(run, published, env, capsys):
    code, out, _ = cli(capsys, "weights", "publish", "--task", "forecasting", "--run", run, "--arch", "moe_e8k2", "--tag", "test")
    assert code == 0 and published in out
    manifest = yaml.safe_load((env / "manifests" / "forecasting" / "weights.yaml").read_text())
    assert [e["id"] for e in manifest["weights"]] == [published]
    assert len(list((env / "weights").iterdir())) == 2


def test_create_model_pretrained_equals_the_run(run, published):
    model = zoo.api.create_model(published, pretrained=True)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    expected = {k.removeprefix("model."): v for k, v in ckpt.items() if k.startswith("model.")}
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    assert published in zoo.api.list_models("forecasting/*", pretrained=True)


def test_create_model_from_recipes_without_weights():
    from zoo.moe import MoELayer

    dense = zoo.api.create_model("forecasting/dense_m3-monthly", pretrained=False)
    moe = zoo.api.create_model(f"forecasting/{RECIPE}", pretrained=False)
    assert not any(isinstance(m, MoELayer) for m in dense.modules())
    assert sum(isinstance(m, MoELayer) for m in moe.modules()) == 1
    x = torch.randn(3, 15)
    assert dense(x).pred.shape == moe(x).pred.shape == (3, 18)  # M3 monthly: lookback 15, horizon 18
    assert zoo.api.list_models("forecasting/*") == [f"forecasting/{r}" for r in recipe_names("forecasting")]


def test_verify_missing_file_offline_exits_3(published, env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    entry = zoo.api.find_entry(published)
    line = assert_one_line_error(cli(capsys, "weights", "verify", published), 3, entry.file, entry.sha256[:12])
    assert str(tmp_path / "empty") in line
    # With an HTTP source in the manifest, offline mode skips it instead of connecting.
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"weights": [{**entry.to_dict(), "sources": ["http://127.0.0.1:9/"]}]}))
    monkeypatch.setattr(zoo.api, "manifest_path", lambda task: manifest)
    assert_one_line_error(cli(capsys, "weights", "verify", published), 3, "skipped because ZOO_OFFLINE=1")
    assert_one_line_error(cli(capsys, "eval", "forecasting", "--weights", published), 3, entry.file)


def test_corrupt_weights_file_exits_4(published, env, tmp_path, monkeypatch, capsys):
    corrupt_dir = tmp_path / "weights"
    shutil.copytree(env / "weights", corrupt_dir)
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(corrupt_dir))
    entry = zoo.api.find_entry(published)
    target = corrupt_dir / entry.file
    target.write_bytes(b"garbage" * 100)
    assert_one_line_error(cli(capsys, "weights", "verify", published), 4, "sha256 mismatch", entry.sha256)
    assert_one_line_error(cli(capsys, "eval", "forecasting", "--weights", published), 4, "sha256 mismatch")
    assert target.read_bytes() == b"garbage" * 100  # a local file is reported, never deleted


# ------------------------------------------------------------------------------------------------ listing


def test_list_info_and_config_show_json(env, capsys):
    code, out, _ = cli(capsys, "list", "--json")
    assert code == 0
    tasks = {d["task"]: d["description"] for d in json.loads(out)}
    assert "forecasting" in tasks and "M3" in tasks["forecasting"]

    code, out, _ = cli(capsys, "list", "recipes", "forecasting/*", "--json")
    assert code == 0
    assert json.loads(out) == [{"task": "forecasting", "recipe": r} for r in recipe_names("forecasting")]

    code, out, _ = cli(capsys, "info", "forecasting", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["task"] == "forecasting"
    assert info["config_sections"] == ["data", "model", "moe", "optim", "trainer", "online", "target_val_loss", "seed"]
    assert info["recipes"] == sorted(p.stem for p in (repo_root() / "configs" / "forecasting").glob("*.yaml"))
    assert {"dense_m3-monthly", "moe_e8k2_m3-monthly", "snaive_m3-monthly"} <= set(info["recipes"])
    assert info["extras"] == ["forecasting"]

    code, out, _ = cli(capsys, "config", "show", "forecasting", "--recipe", "dense_m3-monthly", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["model"]["arch"] == "dense"  # from the recipe
    assert shown["moe"]["num_experts"] == 8 and shown["optim"]["scheduler"] == "cosine"  # from its base
    assert shown["trainer"] == {"max_epochs": 20, "gradient_clip_val": 1.0}
    assert shown["data"]["max_series"] is None and "smoke" not in shown and "base" not in shown
    assert from_dict(ForecastingConfig, shown).model.arch == "dense"

    extra = env / "extra.yaml"
    extra.write_text("model: {d_model: 32}\n")
    code, out, _ = cli(
        capsys, "config", "show", "forecasting", "--recipe", "dense_m3-monthly", "--config", extra,
        "--set", "seed=9", "--smoke", "--json",
    )
    assert code == 0
    shown = json.loads(out)
    assert shown["model"] == {**shown["model"], "arch": "dense", "d_model": 32}
    assert shown["seed"] == 9 and shown["data"]["max_series"] == 60 and shown["trainer"]["max_epochs"] == 2

    code, out, _ = cli(capsys, "config", "show", "forecasting", "--recipe", RECIPE)
    assert code == 0 and yaml.safe_load(out)["model"]["arch"] == "moe"


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "forcasting"],
        ["info", "forcasting"],
        ["config", "show", "forcasting"],
        ["eval", "forcasting", "--run", "x"],
    ],
)
def test_unknown_task_exits_2(env, capsys, argv):
    assert_one_line_error(cli(capsys, *argv), 2, "unknown task 'forcasting'", "did you mean 'forecasting'")


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["train", "forecasting", "--recipe", "moe_e8k2_m3-montly"], ["unknown recipe", "did you mean 'moe_e8k2_m3-monthly'"]),
        (["train", "forecasting", "--recipe", RECIPE, "--set", "moe.num_expert=4"], ["did you mean 'moe.num_experts'"]),
        (["train", "forecasting", "--recipe", RECIPE, "--set", "trainer.max_epoch=1"], ["did you mean 'trainer.max_epochs'"]),
        (["train", "forecasting", "--set", "oops"], ["--set 'oops': expected KEY=VALUE"]),
        (["train", "forecasting", "--set", "optim.betas=[0.9,"], ["not valid YAML"]),
        (["train", "forecasting", "--set", "seed=x"], ["seed='x' has the wrong type; expected int"]),
        (["config", "show", "forecasting", "--set", "model.arch=densee"], ["model.arch='densee' is not allowed"]),
    ],
)
def test_bad_config_input_exits_2(env, capsys, argv, fragments):
    assert_one_line_error(cli(capsys, *argv), 2, *fragments)


def test_malformed_config_file_exits_2(env, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nmodel: [dense\n")
    assert_one_line_error(cli(capsys, "train", "forecasting", "--config", bad), 2, str(bad), "line 3", "malformed YAML")


def test_resume_of_a_missing_dir_exits_2(env, tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    assert_one_line_error(cli(capsys, "train", "forecasting", "--resume", missing), 2, str(missing), "not a run directory")
    assert not missing.exists()


def test_resume_without_checkpoint_exits_2(env, tmp_path, capsys):
    run_dir = tmp_path / "untrained"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(ForecastingConfig())))
    assert_one_line_error(cli(capsys, "train", "forecasting", "--resume", run_dir), 2, "no checkpoints/last.ckpt")


def test_eval_run_without_checkpoints_exits_2(env, tmp_path, capsys):
    run_dir = tmp_path / "untrained"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(ForecastingConfig())))
    assert_one_line_error(cli(capsys, "eval", "forecasting", "--run", run_dir), 2, "no checkpoints/last.ckpt")
    assert_one_line_error(cli(capsys, "eval", "forecasting", "--run", tmp_path / "nothing"), 2, "no config.yaml")


def test_eval_unknown_weights_id_exits_2(env, capsys):
    line = assert_one_line_error(cli(capsys, "eval", "forecasting", "--weights", "forecasting/nope.none"), 2)
    assert "unknown weights id 'forecasting/nope.none'" in line
    assert_one_line_error(cli(capsys, "weights", "verify", "forecasting/nope.none"), 2, "unknown weights id")


def test_eval_needs_exactly_one_source(env, capsys):
    assert_one_line_error(cli(capsys, "eval", "forecasting"), 2, "one of the arguments --run --weights is required")


@pytest.mark.parametrize(
    "argv, missing",
    [
        (["weights", "publish"], "--task"),
        (["weights", "publish", "--task", "forecasting"], "--run"),
        (["weights", "publish", "--task", "forecasting", "--run", "x", "--arch", "moe_e8k2"], "--tag"),
    ],
)
def test_publish_missing_flags_exits_2(env, capsys, argv, missing):
    before = sorted((env / "weights").glob("*")) if (env / "weights").exists() else []
    assert_one_line_error(cli(capsys, *argv), 2, f"{missing}=None is not allowed")
    assert (sorted((env / "weights").glob("*")) if (env / "weights").exists() else []) == before  # nothing written


def test_weights_verify_without_an_id_verifies_all(env, published, capsys):
    code, out, _ = cli(capsys, "weights", "verify", "--json")
    rows = {r["id"]: r for r in json.loads(out)}
    assert code == 0 and rows[published]["status"] == "ok"
    assert set(rows) == {e.id for e in zoo.api.all_entries()}


def test_weights_verify_all_fails_with_the_worst_code(env, published, tmp_path, monkeypatch, capsys):
    entry = zoo.api.find_entry(published)
    path = Path(env / "weights" / entry.file)
    saved = path.read_bytes()
    try:
        path.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
        code, out, err = cli(capsys, "weights", "verify")
        assert code == 4 and "error 4" in out and published in out
    finally:
        path.write_bytes(saved)


def test_published_weights_carry_their_model_info(env, published):
    entry = zoo.api.find_entry(published)
    meta = yaml.safe_load((env / "weights" / entry.config).read_text())
    assert set(meta["model_info"]) >= {"lookback", "horizon"}
    loaded = zoo.api.load_weights(published)
    assert loaded.datamodule is None and loaded.info["horizon"] == meta["model_info"]["horizon"]


def test_eval_prints_the_headline_metrics_unless_verbose(env, run, capsys):
    code, out, _ = cli(capsys, "eval", "forecasting", "--run", run)
    assert code == 0 and "test/smape" in out and "test/mase_median" not in out and "--verbose shows all" in out
    code, verbose, _ = cli(capsys, "eval", "forecasting", "--run", run, "--verbose")
    assert code == 0 and "test/mase_median" in verbose and "--verbose shows all" not in verbose


def test_run_dir_keeps_threads_and_expert_load(run):
    info = json.loads((run / "run.json").read_text())
    assert isinstance(info["threads"], int) and info["threads"] >= 1
    assert (run / "expert_load.json").exists() and (run / "expert_load.png").exists()
    assert (run / "model_info.yaml").exists()


def test_eval_set_takes_data_keys_only(env, run, capsys):
    assert_one_line_error(cli(capsys, "eval", "forecasting", "--run", run, "--set", "model.d_model=8"), 2,
                          "data.* overrides only")


def test_train_on_a_user_csv_and_bad_csv_leaves_no_run_dir(capsys, tmp_path):
    good = tmp_path / "my.csv"
    lines = ["id,timestamp,value"] + [
        f"{sid},{2000 + i // 12}-{i % 12 + 1:02d}-01,{100 + 10 * math.sin(i / 2) + k * i:.3f}"
        for k, sid in enumerate("ab", start=1) for i in range(48)
    ]
    good.write_text("\n".join(lines) + "\n")
    csv_set = ["--set", "data.source=csv", "--set", f"data.path={good}", "--set", "data.horizon=6"]
    code, out, _ = cli(capsys, "train", "forecasting", "--recipe", RECIPE, *FAST, *csv_set, "--out",
                       tmp_path / "run", "--json")
    assert code == 0 and set(last_json(out)["metrics"]) >= {"test/smape", "test/mase", "test/owa"}
    bad = tmp_path / "dup.csv"
    bad.write_text("id,timestamp,value\na,2020-01-01,1\na,2020-01-01,2\na,2020-02-01,3\n")
    rc, _, err = cli(capsys, "train", "forecasting", "--recipe", RECIPE, *FAST, "--set", "data.source=csv",
                     "--set", f"data.path={bad}", "--set", "data.horizon=6", "--out", tmp_path / "bad")
    assert rc == 2 and "duplicate timestamp" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
    rc, _, err = cli(capsys, "train", "forecasting", "--recipe", RECIPE, *FAST, "--set", "data.source=csv",
                     "--set", f"data.path={good}", "--out", tmp_path / "nohorizon")
    assert rc == 2 and "data.horizon" in err
