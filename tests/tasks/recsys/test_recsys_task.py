"""The recsys task end to end: masked losses, batches, training by name through the zoo flow on a MovieLens-100K
subset, the simulator and MMoE synthetic, test metrics with their NaN policy, collapse diagnostics streamed over
batches, the model info (complete: published weights rank items with the data hidden; round trips), top-N
prediction and its plot, and one-line errors for bad input."""

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import api, hub, modelinfo
from zoo.config import config_sha256, resolve_config, to_dict
from zoo.errors import ZooValueError
from zoo.task import build_from_config, build_from_info, fit_and_test
from zoo.tasks.recsys import TASK
from zoo.tasks.recsys.config import RecsysConfig
from zoo.tasks.recsys.data import RecsysDataModule
from zoo.tasks.recsys.evaluation import CollapseCounter, SplitScores, metrics_from_scores
from zoo.tasks.recsys.metrics import min_shared_usage, zero_activation_ratio
from zoo.tasks.recsys.models import Diagnostics
from zoo.tasks.recsys.module import masked_task_losses
from zoo.tasks.recsys.movielens import TASKS

FIXTURES = Path(__file__).parent / "fixtures"
QUIET = {"trainer.num_sanity_val_steps": 0}

def config(recipe: str | None = None, smoke: bool = True, **dotted) -> RecsysConfig:
    """A recipe (with its smoke overrides unless ``smoke=False``), then ``dotted`` overrides on top of them."""
    overrides = resolve_config(RecsysConfig, "recsys", recipe)[1] if recipe and smoke else {}
    cfg, _ = resolve_config(RecsysConfig, "recsys", recipe, layers=[QUIET, overrides, dotted])
    return cfg


# ------------------------------------------------------------------------------------------------------ loss


def test_masked_bce_is_the_mean_over_defined_labels_only():
    logits = torch.tensor([[0.0, 2.0, 1.0], [1.0, -1.0, 3.0], [-2.0, 0.5, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, float("nan"), 1.0]])
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    got = masked_task_losses(logits, labels, mask)
    bce = lambda z, y: -(y * math.log(1 / (1 + math.exp(-z))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-z))))  # noqa: E731
    assert got[0].item() == pytest.approx((bce(0.0, 1) + bce(1.0, 0)) / 2)
    assert got[1].item() == pytest.approx(bce(2.0, 0))  # only row 0 is defined
    assert got[2].item() == 0.0  # no defined label: no loss, no NaN
    flipped = torch.where(mask, labels, 1 - torch.nan_to_num(labels))  # masked labels changed: same loss
    torch.testing.assert_close(masked_task_losses(logits, flipped, mask), got)
    sq = masked_task_losses(logits, torch.zeros_like(logits), mask, regression=True)
    assert sq.tolist() == pytest.approx([(0 + 1) / 2, 4.0, 0.0])


# ----------------------------------------------------------------------------------------------------- batches


@pytest.fixture(scope="module")
def dm():
    module = RecsysDataModule(config("mmoe_e8_ml100k").data)
    module.setup("fit")
    return module


def test_batches_hold_what_the_models_read(dm):
    batch = next(iter(dm.loader("train", shuffle=True)))
    B, T, L = 1024, len(TASKS), dm.cfg.max_history
    assert batch["sparse"].shape == (B, 1 + len(dm.user_fields) + len(dm.item_fields))
    assert batch["dense"].shape == (B, dm.item_dense.shape[1]) and batch["hist"].shape == (B, L)
    assert batch["labels"].shape == batch["label_mask"].shape == (B, T)
    assert (batch["sparse"][:, 0] == batch["user"]).all() and int(batch["user"].max()) <= 100
    # rating tasks are undefined on the sampled watch negatives, defined on every rated row
    watch = batch["labels"][:, 0] > 0
    assert batch["label_mask"][:, 0].all() and (batch["label_mask"][:, 1:].all(1) == watch).all()
    spec = dm.input_spec(16)
    assert spec.vocab_sizes[0] == dm.data.vocab["user"] and spec.item_vocab == dm.data.vocab["item"]
    assert dm.task_groups == [[0], [1, 2, 3, 4]]
    assert sum(len(dm.dataset(s)) for s in ("train", "val", "test")) == sum(
        int((getattr(dm.data, s).user <= 100).sum()) for s in ("train", "val", "test"))


# ------------------------------------------------------------------------------------------ training by name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The MMoE recipe's smoke run (100 users, 1 epoch) through the zoo flow, published as safetensors + YAML
    with its model info (as ``zoo weights publish`` does)."""
    root = tmp_path_factory.mktemp("recsys")
    torch.set_num_threads(1)
    cfg = config("mmoe_e8_ml100k")
    result = fit_and_test(TASK, cfg, root / "run", progress=False)
    plain, tensors = modelinfo.split(modelinfo.load_run(root / "run"))
    art = hub.publish({**result.module.model.state_dict(), **tensors}, to_dict(cfg), arch="mmoe_e8",
                      tag="ml100k-smoke", out_dir=root / "w",
                      extra={"task": "recsys", "config_sha256": config_sha256(cfg), "model_info": plain})
    return result, art, root


def test_smoke_run_reports_auc_and_gauc_for_every_task(trained):
    result, _, root = trained
    m = result.metrics
    for task in TASKS:
        for key in (f"test/auc/{task}", f"test/gauc/{task}", f"test/longtail/auc/{task}"):
            assert math.isfinite(m[key]) and 0 <= m[key] <= 1, key
        assert m[f"test/gauc_users/{task}"] >= 1 and m[f"test/gauc_excluded/{task}"] >= 0
    assert m["test/gauc_excluded/watch"] == 0  # every user has a rated and a sampled row
    assert m["test/mean_gauc"] == pytest.approx(np.mean([m[f"test/gauc/{t}"] for t in TASKS]))
    assert m["test/tasks_without_positives"] == 0 and "test/sparse/mean_auc" not in m  # hate is 6 %: not sparse
    assert 0 <= m["test/zero_act"] <= 1 and m["test/min_shared_usage"] == pytest.approx(1.0)  # MMoE: all shared
    assert m["train/best_epoch"] == 0 and math.isfinite(m["val/best_loss"])
    assert (root / "run" / "checkpoints" / "best.ckpt").is_file()


def test_simulator_rows_train_and_report_sparse_tasks(tmp_path, caplog):
    cfg = config("cgc_ml100k", **{"data.source": "simulator", "data.simulator": {"n_users": 200, "n_items": 100},
                                  "data.max_users": None})
    with caplog.at_level(logging.WARNING, logger="zoo.tasks.recsys"):
        result = fit_and_test(TASK, cfg, tmp_path / "run", progress=False)
    m = result.metrics
    assert {"test/auc/follow", "test/gauc/comment", "test/sparse/mean_auc", "test/sparse/mean_gauc"} <= set(m)
    assert math.isfinite(m["test/sparse/mean_auc"]) and 0 < m["test/min_shared_usage"] < 1  # CGC's shared experts
    # a sparse task without a test positive on this small population: NaN, counted, warned; nothing crashes
    nan_tasks = [t for t in ("like", "comment", "forward", "follow") if math.isnan(m[f"test/auc/{t}"])]
    assert m["test/tasks_without_positives"] == len(nan_tasks)
    assert all(any(f"{t!r} has no positive label in the test split" in r.message for r in caplog.records)
               for t in nan_tasks)


def test_mmoe_synthetic_reports_test_mse(tmp_path):
    result = fit_and_test(TASK, config("mmoe_e8_synthetic"), tmp_path / "run", progress=False)
    m = result.metrics
    assert {"test/mse/task1", "test/mse/task2", "test/mse_mean"} <= set(m) and "test/auc/task1" not in m
    assert all(math.isfinite(m[k]) and m[k] > 0 for k in ("test/mse/task1", "test/mse/task2"))
    assert m["test/mse_mean"] == pytest.approx((m["test/mse/task1"] + m["test/mse/task2"]) / 2, rel=1e-5)


def test_movielens_folder_source_trains_on_the_fixture(tmp_path):
    """GroupLens files at data.path: 3 users, so the test split lacks classes; metrics are NaN, not a crash."""
    cfg = config("mmoe_e8_ml100k", **{"data.source": "movielens", "data.path": str(FIXTURES / "ml-raw"),
                                      "data.max_users": None, "data.max_history": 5})
    result = fit_and_test(TASK, cfg, tmp_path / "run", progress=False)
    assert "test/gauc/hate" in result.metrics and result.metrics["test/tasks_without_positives"] >= 1


# ------------------------------------------------------------------------------------------------- metrics


def test_a_task_without_positives_is_nan_and_counted(caplog):
    rng = np.random.default_rng(0)
    labels = np.stack([rng.integers(0, 2, 40), np.zeros(40)], 1).astype(np.float32)
    scores = SplitScores(rng.normal(size=(40, 2)), labels, np.ones((40, 2), bool), np.repeat(np.arange(8), 5),
                        np.arange(40) < 10, CollapseCounter())
    with caplog.at_level(logging.WARNING, logger="zoo.tasks.recsys"):
        m = metrics_from_scores(scores, ("click", "follow"), regression=False, sparse_tasks=("follow",))
    assert math.isnan(m["auc/follow"]) and math.isnan(m["gauc/follow"]) and m["gauc_users/follow"] == 0
    assert m["gauc_excluded/follow"] == 8 and m["tasks_without_positives"] == 1
    assert m["mean_gauc"] == m["gauc/click"] and math.isnan(m["sparse/mean_auc"])
    assert m["longtail/users"] == 2 and m["longtail/rows"] == 10
    assert "'follow' has no positive label in the test split" in caplog.text
    assert "zero_act" not in m and "min_shared_usage" not in m  # no experts, no gates: absent, not NaN


def test_collapse_counter_streams_the_metrics_of_the_whole_split():
    rng = np.random.default_rng(1)
    acts = {"a": torch.from_numpy(rng.normal(size=(50, 3, 4)) - 1.5), "b": torch.from_numpy(rng.normal(size=(50, 2, 5)))}
    gates = [torch.softmax(torch.from_numpy(rng.normal(size=(50, 4))), 1) for _ in range(2)]
    counter = CollapseCounter()
    for lo in (0, 20):
        hi = 20 if lo == 0 else 50
        counter.update(Diagnostics([g[lo:hi] for g in gates], [1, 3], expert_acts={k: v[lo:hi] for k, v in acts.items()}),
                       hi - lo)
    units = [a[:, e] for a in acts.values() for e in range(a.shape[1])]
    assert counter.zero_activation_ratio() == pytest.approx(zero_activation_ratio(units))
    assert counter.min_shared_usage() == pytest.approx(min_shared_usage(gates, [1, 3]))


# ------------------------------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def loaded(trained):
    """The published smoke weights, rebuilt from their YAML and safetensors alone (no datamodule)."""
    loaded = api.load_weights(str(trained[1].weights_path))
    assert loaded.datamodule is None
    return loaded


@pytest.fixture
def no_data(monkeypatch):
    """Reading any recsys source (the recbole carrier, a MovieLens folder, the generators) fails."""
    def hidden(*args, **kwargs):
        raise AssertionError("predict read the training data")

    monkeypatch.setattr("zoo.tasks.recsys.data.load_source", hidden)
    monkeypatch.setattr("zoo.tasks.recsys.movielens.read_movielens", hidden)
    monkeypatch.setattr("zoo.carriers.carrier_file", hidden)


def test_predict_ranks_unrated_items_with_every_task_score(loaded, dm, no_data, tmp_path):
    rows = TASK.predict(loaded, None, user="7", top=10, out=tmp_path / "top.csv")
    assert [r["rank"] for r in rows] == list(range(1, 11))
    assert list(rows[0]) == ["rank", "item", *(f"{t}_score" for t in TASKS)]
    watch = [r["watch_score"] for r in rows]
    assert watch == sorted(watch, reverse=True) and all(0 < r[f"{t}_score"] < 1 for r in rows for t in TASKS)
    uid = list(dm.data.user_tokens).index("7")
    train = dm.data.train
    rated = {str(dm.data.item_tokens[i]) for i in train.item[(train.user == uid) & np.isfinite(train.values["rating"])]}
    assert rated and not rated & {r["item"] for r in rows}
    csv = (tmp_path / "top.csv").read_text().splitlines()
    assert csv[0] == "rank,item," + ",".join(f"{t}_score" for t in TASKS) and len(csv) == 11
    by_like = TASK.predict(loaded, None, user=7, top=3, rank_by="like")
    assert [r["like_score"] for r in by_like] == sorted((r["like_score"] for r in by_like), reverse=True)
    # a list of candidates (an already rated item included: the caller asked for it)
    items = tmp_path / "items.txt"
    items.write_text("item_id:token\n50\n\n" + sorted(rated)[0] + "\n")
    chosen = TASK.predict(loaded, str(items), user="7", top=10)
    assert sorted(r["item"] for r in chosen) == sorted(["50", sorted(rated)[0]])


def test_model_info_holds_the_training_context(loaded, dm):
    """Users' history after training, seen items and feature tables equal what the datamodule holds."""
    info = loaded.info
    n_users, n_items = dm.data.vocab["user"], dm.data.vocab["item"]
    assert info["user_tokens"] == list(dm.data.user_tokens[1:]) and len(info["item_tokens"]) == n_items - 1
    assert info["history"].shape == (n_users, dm.cfg.max_history) and info["history"].dtype == torch.int32
    torch.testing.assert_close(info["user_features"].long(), dm.user_table)
    torch.testing.assert_close(info["item_dense"], dm.item_dense)
    train = dm.data.train
    for uid in (1, 7, 100):
        rated = train.item[(train.user == uid) & np.isfinite(train.values["rating"])]
        lo, hi = info["seen_indptr"][uid], info["seen_indptr"][uid + 1]
        assert info["seen_items"][lo:hi].tolist() == sorted(rated.tolist())
        last = rated[-dm.cfg.max_history:]  # train rows are in time order per user
        assert info["history"][uid].tolist() == [0] * (dm.cfg.max_history - len(last)) + last.tolist()
    assert int(info["seen_indptr"][-1]) == len(info["seen_items"])
    assert not info["history"][101:].any()  # users above data.max_users have no training context


def test_a_model_rebuilt_from_its_info_predicts_the_same(trained, loaded):
    """Fresh from data, from the run dir's info and from the published weights: one model, one ranking."""
    result, _, root = trained
    cfg = loaded.config
    fresh = build_from_config(TASK, cfg)
    from_run = build_from_info(TASK, cfg, modelinfo.load_run(root / "run"))
    state = result.module.model.state_dict()
    for built in (fresh, from_run):
        built.module.model.load_state_dict(state)
    expected = TASK.predict(fresh, None, user="12", top=20, rank_by="love")
    assert TASK.predict(from_run, None, user="12", top=20, rank_by="love") == expected
    assert TASK.predict(loaded, None, user="12", top=20, rank_by="love") == expected


def test_model_info_round_trips(trained, tmp_path, assert_same_info):
    info = modelinfo.load_run(trained[2] / "run")
    plain, tensors = modelinfo.split(info)
    assert set(tensors) == {f"model_info.{k}" for k in ("user_features", "item_features", "item_dense", "history",
                                                        "seen_indptr", "seen_items")}
    assert plain["inputs"]["item_vocab"] == len(plain["item_tokens"]) + 1 and plain["regression"] is False
    assert_same_info(modelinfo.join(plain, tensors), info)
    modelinfo.save_run(tmp_path, info)
    assert_same_info(modelinfo.load_run(tmp_path), info)


def test_regression_info_has_no_arrays_and_rebuilds(tmp_path):
    built = build_from_config(TASK, config("mmoe_e8_synthetic"))
    plain, tensors = modelinfo.split(built.info)
    assert not tensors and plain == {"regression": True, "tasks": ["task1", "task2"], "task_groups": [[0, 1]],
                                     "inputs": {"vocab_sizes": [], "dense_dim": 100, "item_vocab": None}}
    modelinfo.save_run(tmp_path, built.info)
    rebuilt = build_from_info(TASK, built.config, modelinfo.load_run(tmp_path))
    rebuilt.module.model.load_state_dict(built.module.model.state_dict())
    batch = next(iter(built.datamodule.loader("test")))
    built.module.model.eval()
    rebuilt.module.model.eval()
    torch.testing.assert_close(rebuilt.module.model(batch).pred, built.module.model(batch).pred)


def test_predict_plot_is_a_png_of_the_listed_items(loaded, tmp_path):
    rows = TASK.predict(loaded, None, user="7", top=5, plot=tmp_path / "top.png")
    assert len(rows) == 5 and (tmp_path / "top.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    many = TASK.predict(loaded, None, user="7", top=120, plot=tmp_path / "many.png")  # labels thinned, no values
    assert len(many) == 120 and (tmp_path / "many.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("kwargs, message", [
    ({"user": "99999"}, "unknown user id '99999'"),
    ({"user": "200"}, "not among the 100 users kept by data.max_users"),
    ({}, "needs --user"),
    ({"user": "7", "rank_by": "click"}, "--rank-by 'click' is not a task"),
    ({"user": "7", "top": 0}, "--top=0"),
])
def test_predict_bad_input_is_one_line(loaded, kwargs, message, tmp_path):
    with pytest.raises(ZooValueError, match=message) as err:
        TASK.predict(loaded, None, out=tmp_path / "top.csv", plot=tmp_path / "top.png", **kwargs)
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing written


def test_predict_refuses_unknown_item_ids(loaded, tmp_path):
    items = tmp_path / "items.txt"
    items.write_text("50\nnot-a-film\n")
    with pytest.raises(ZooValueError, match="unknown item id 'not-a-film'"):
        TASK.predict(loaded, str(items), user="7")
    with pytest.raises(ZooValueError, match="no such file"):
        TASK.predict(loaded, str(tmp_path / "missing.txt"), user="7")


def test_predict_refuses_an_info_without_the_users(loaded):
    info = {k: v for k, v in loaded.info.items() if k not in ("history", "seen_items")}
    stripped = build_from_info(TASK, loaded.config, info)
    with pytest.raises(ZooValueError, match="lacks history, seen_items; republish"):
        TASK.predict(stripped, None, user="7")


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_config_and_data_are_one_line_errors(tmp_path):
    with pytest.raises(ZooValueError, match="data.source"):
        config(**{"data.source": "kuairand"})
    with pytest.raises(ZooValueError, match="data.path"):
        config(**{"data.source": "movielens"})
    with pytest.raises(ZooValueError, match="model.arch"):
        config(**{"model.arch": "moe"})
    with pytest.raises(ZooValueError, match="recsys model 'mmoe'"):
        build_from_config(TASK, config("mmoe_e8_ml100k", **{"model.kwargs.num_expert": 4}))
    with pytest.raises(ZooValueError, match="data.simulator"):
        build_from_config(TASK, config("mmoe_e8_ml100k", **{"data.source": "simulator", "data.simulator": {"users": 5}}))
    # ratings out of range in a GroupLens folder, a missing column in an atomic file
    raw = shutil.copytree(FIXTURES / "ml-raw", tmp_path / "raw")
    (raw / "u.data").write_text((raw / "u.data").read_text().replace("1\t6\t5\t105", "1\t6\t6\t105"))
    with pytest.raises(ZooValueError, match=r"u.data:1: rating 6.0 is outside the declared range \[1, 5\]"):
        build_from_config(TASK, config(**{"data.source": "movielens", "data.path": str(raw)}))
    tiny = shutil.copytree(FIXTURES / "ml-tiny", tmp_path / "tiny")
    lines = (tiny / "ml-tiny.inter").read_text().splitlines()
    (tiny / "ml-tiny.inter").write_text("\n".join("\t".join(line.split("\t")[:3]) for line in lines) + "\n")
    with pytest.raises(ZooValueError, match="missing required column 'timestamp'"):
        build_from_config(TASK, config(**{"data.source": "movielens", "data.path": str(tiny)}))
    sim = config(smoke=False, **{"data.source": "simulator", "data.simulator": {"n_users": 50, "n_items": 40}})
    loaded = build_from_config(TASK, sim)
    synthetic = build_from_config(TASK, config("mmoe_e8_synthetic"))
    with pytest.raises(ZooValueError, match="no users or items"):
        TASK.predict(synthetic, None, user="1")
    assert TASK.predict(loaded, None, user="1", top=2)[0]["rank"] == 1  # simulator users are 1..n


def test_zoo_predict_recsys_cli(trained, no_data, capsys, tmp_path):
    from zoo.cli import main

    _, art, _ = trained
    weights = str(art.weights_path)
    code = main(["predict", "recsys", "--weights", weights, "--user", "7", "--top", "3", "--rank-by", "love",
                 "--plot", str(tmp_path / "top.png"), "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2, 3] and "hate_score" in rows[0]
    assert (tmp_path / "top.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["predict", "recsys", "--weights", weights, "--user", "nobody"]) == 2
    err = capsys.readouterr().err
    assert "unknown user id 'nobody'" in err and "Traceback" not in err


def test_shipped_weights_rank_items_with_the_data_hidden(no_data):
    loaded = api.load_weights("recsys/home.ml100k")
    rows = TASK.predict(loaded, None, user="196", top=10)
    assert [r["rank"] for r in rows] == list(range(1, 11)) and loaded.info["dataset"] == "ml-100k"
    assert len(loaded.info["user_tokens"]) == 943 and len(loaded.info["item_tokens"]) == 1682


@pytest.mark.requires_carrier("recbole")
def test_shipped_weights_reproduce_their_published_test_gauc(capsys):
    from zoo.cli import main

    (entry,) = [e for e in api.task_entries("recsys") if e.id == "recsys/home.ml100k"]
    assert main(["eval", "recsys", "--weights", entry.id, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    for key in ("test/mean_gauc", "test/gauc/watch", "test/gauc/hate", "test/zero_act"):
        assert metrics[key] == pytest.approx(entry.metrics[key], abs=1e-4), key
