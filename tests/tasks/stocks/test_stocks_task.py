"""The stocks task end to end on a tiny style panel: day batches, subsets, the evaluation frame, training by
name through the zoo flow, the model info that makes weights self-contained, publishing and ``zoo predict stocks``
with its plot and one-line errors."""

import csv
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from zoo import api, hub, modelinfo
from zoo.cli import main
from zoo.config import resolve_config
from zoo.errors import ZooValueError
from zoo.task import LoadedModel, build_from_config, build_from_info, fit_and_test
from zoo.tasks.stocks import TASK
from zoo.tasks.stocks.config import StocksConfig
from zoo.tasks.stocks.data import StockDataModule, subset
from zoo.tasks.stocks.evaluation import evaluate_frame
from zoo.tasks.stocks.features import RobustScaler
from zoo.tasks.stocks.panel import load_panel

TINY = {"n_stocks": 24, "n_days": 160}


@pytest.fixture(scope="module")
def dm():
    module = StockDataModule("style_panel", lookback=5, panel_kwargs=TINY)
    module.setup("fit")
    return module


def test_day_batches_are_one_labelled_cross_section(dm):
    train = dm.dataset("train")
    batch = train[0]
    S = batch.inst.numel()
    assert batch.x.shape == (S, 5, dm.num_features) and batch.y.shape == (S,)
    assert np.isfinite(batch.y.numpy()).all() and (batch.group >= 0).all()
    assert dm.num_groups == 4 and dm.group_names == sorted(dm.group_names)
    days = {s: set(dm.dataset(s).days.tolist()) for s in ("train", "valid", "test")}
    assert max(days["train"]) < min(days["valid"]) and max(days["valid"]) < min(days["test"])
    # the scaler saw training days only: refitting it on those rows reproduces it, on all rows it differs
    fs, train = dm.features, dm.splits["train"]
    refit = RobustScaler.fit(fs.x[train][fs.tradable[train]])
    np.testing.assert_array_equal(refit.median, dm.scaler.median)
    assert not np.array_equal(RobustScaler.fit(fs.x[fs.tradable]).median, dm.scaler.median)
    assert np.abs(dm.scaled).max() <= 3.0


def test_subset_keeps_first_instruments_and_last_days():
    panel = load_panel("style_panel", **TINY)
    small = subset(panel, 5, 50)
    assert small.prices["instrument"].nunique() == 5 and small.prices["date"].nunique() == 50
    assert small.prices["date"].max() == panel.prices["date"].max()
    assert len(small.groups) == len(small.prices)


def test_evaluate_frame_reports_ic_backtest_and_nmi():
    rng = np.random.default_rng(0)
    dates = np.repeat(pd.bdate_range("2021-01-01", periods=30), 20)
    label = rng.normal(size=600)
    frame = pd.DataFrame({"date": dates, "instrument": np.tile([f"S{i}" for i in range(20)], 30),
                          "score": label + rng.normal(size=600), "label": label, "ret": label / 100,
                          "group": np.tile(np.arange(20) % 4, 30), "cluster": np.tile(np.arange(20) % 4, 30)})
    metrics, daily = evaluate_frame(frame, StocksConfig())
    assert metrics["ic"] > 0.5 and metrics["nmi"] == pytest.approx(1.0)
    assert metrics["topk"] == 3 and metrics["excess_return"] > 0 and len(daily) == 30


def _tiny_config(**layer):
    cfg, _ = resolve_config(StocksConfig, "stocks", "miga_g4e4_style-panel",
                            layers=[{"data.panel": TINY, "data.lookback": 5, "trainer.max_epochs": 1,
                                     "trainer.num_sanity_val_steps": 0, **layer}])
    return cfg


def _publish(module, cfg, info, out_dir):
    """Weights as ``zoo weights publish`` writes them: the info's plain part in the YAML, its arrays beside the
    state dict."""
    plain, tensors = modelinfo.split(info)
    return hub.publish({**module.model.state_dict(), **tensors}, cfg, arch="miga_g4e4", tag="tiny", out_dir=out_dir,
                       extra={"task": "stocks", "model_info": plain})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch MIGA on the tiny panel, its info from the data, published as safetensors + YAML."""
    root = tmp_path_factory.mktemp("stocks")
    cfg = _tiny_config()
    result = fit_and_test(TASK, cfg, root / "run", progress=False)
    info = build_from_config(TASK, cfg).info  # the same data as the run's, prepared again
    art = _publish(result.module, cfg, info, root / "w")
    return result, art, root, cfg, info


@pytest.fixture(scope="module")
def prices_csv(tmp_path_factory):
    prices = load_panel("style_panel", n_stocks=6, n_days=90, seed=3).prices
    src = tmp_path_factory.mktemp("prices") / "prices.csv"
    _write_csv(src, prices)
    return src, prices


def test_training_by_name_reports_qlib_metrics(trained):
    result, _, root, _, _ = trained
    for key in ("test/ic", "test/icir", "test/rank_ic", "test/rank_icir", "test/excess_return",
                "test/information_ratio", "test/max_drawdown", "test/nmi", "val/best_ic"):
        assert np.isfinite(result.metrics[key]), key
    best = hub.load_checkpoint(root / "run" / "checkpoints" / "best.ckpt")["state_dict"]
    for name, value in result.module.model.state_dict().items():  # what the test metrics were computed with
        assert torch.equal(best[f"model.{name}"], value), name
    scores = pd.read_csv(root / "run" / "test_scores.csv")
    assert {"date", "instrument", "score", "label", "ret", "group", "cluster"} <= set(scores.columns)


def test_model_info_holds_what_the_network_and_predict_need(trained, dm):
    _, _, _, cfg, info = trained
    assert set(info) == {"num_features", "feature_names", "lookback", "scaler_median", "scaler_scale"}
    assert info["num_features"] == len(info["feature_names"]) == 64 and info["lookback"] == 5
    assert info["feature_names"][:3] == ["KMID", "KLEN", "KMID2"]
    for key in ("scaler_median", "scaler_scale"):
        assert info[key].dtype == torch.float64 and info[key].shape == (64,)
    # the statistics are the training scaler's, and rebuild it exactly
    scaler = RobustScaler.from_arrays(info["scaler_median"], info["scaler_scale"])
    np.testing.assert_array_equal(scaler.median, dm.scaler.median)
    np.testing.assert_array_equal(scaler.transform(dm.features.x[:3]), dm.scaled[:3])
    assert TASK.headline_metrics and all(k.startswith("test/") for k in TASK.headline_metrics)


def test_model_info_round_trips_through_split_join_and_run_dirs(trained, tmp_path, assert_same_info):
    _, _, root, _, info = trained
    plain, tensors = modelinfo.split(info)
    assert set(tensors) == {"model_info.scaler_median", "model_info.scaler_scale"}
    assert plain["feature_names"] == info["feature_names"]
    assert_same_info(modelinfo.join(plain, tensors), info)
    modelinfo.save_run(tmp_path, info)
    assert_same_info(modelinfo.load_run(tmp_path), info)
    assert_same_info(modelinfo.load_run(root / "run"), info)  # what fit_and_test wrote for the run


def test_model_rebuilt_from_info_alone_predicts_identically(trained, prices_csv, monkeypatch):
    result, _, _, cfg, info = trained
    src, _ = prices_csv
    original = LoadedModel(TASK, cfg, result.module, info)
    want = TASK.predict(original, src)
    # no panel, no carrier: everything comes from the config and the info
    monkeypatch.setattr(StockDataModule, "prepare", lambda self: pytest.fail("predict touched the training data"))
    for reader in ("carrier_file", "read_rdataset"):
        monkeypatch.setattr(f"zoo.tasks.stocks.panel.{reader}", lambda *a: pytest.fail("predict read a data carrier"))
    rebuilt = build_from_info(TASK, cfg, modelinfo.join(*modelinfo.split(info)))
    assert rebuilt.datamodule is None
    rebuilt.module.model.load_state_dict(result.module.model.state_dict())
    assert TASK.predict(rebuilt, src) == want


def _write_csv(path, prices):
    prices.assign(date=prices["date"].dt.strftime("%Y-%m-%d")).to_csv(path, index=False)


def test_predict_ranks_the_last_date(trained, prices_csv, tmp_path, capsys):
    _, art, _, _, _ = trained
    src, prices = prices_csv
    out, png = tmp_path / "ranked.csv", tmp_path / "ranked.png"
    code = main(["predict", "stocks", str(src), "--weights", str(art.weights_path), "--out", str(out), "--json",
                 "--plot", str(png)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 7)] and len(printed) == 6
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert {r["date"] for r in rows} == {str(prices["date"].max().date())}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = api.load_weights(str(art.weights_path))
    assert loaded.datamodule is None
    direct = TASK.predict(loaded, src)
    assert [r["instrument"] for r in direct] == [r["instrument"] for r in rows]


def test_predict_top_keeps_the_best_and_the_plot_is_a_png(trained, prices_csv, tmp_path):
    result, _, _, cfg, info = trained
    src, _ = prices_csv
    loaded = LoadedModel(TASK, cfg, result.module, info)
    every = TASK.predict(loaded, src)
    out, png = tmp_path / "top.csv", tmp_path / "top.png"
    best = TASK.predict(loaded, src, top=2, out=out, plot=png)
    assert best == every[:2] and len(pd.read_csv(out)) == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("options, message", [
    ({"top": 0}, "--top=0"),
    ({"plot": "scores.jpg"}, "ending in .png"),
])
def test_predict_refuses_bad_options_in_one_line_and_writes_nothing(trained, prices_csv, tmp_path, options, message):
    result, _, _, cfg, info = trained
    src, _ = prices_csv
    out = tmp_path / "ranked.csv"
    with pytest.raises(ZooValueError, match=message) as err:
        TASK.predict(LoadedModel(TASK, cfg, result.module, info), src, out=out, **options)
    assert "\n" not in str(err.value) and not out.exists()


def test_predict_refuses_a_tabular_model_in_one_line(trained, prices_csv):
    _, _, _, _, info = trained
    cfg = _tiny_config(**{"model.arch": "ridge"})
    with pytest.raises(ZooValueError, match="network weights") as err:
        TASK.predict(build_from_info(TASK, cfg, info), prices_csv[0])
    assert "\n" not in str(err.value)


def test_predict_refuses_close_only_input_in_one_line(trained, tmp_path, capsys):
    _, art, _, _, _ = trained
    prices = load_panel("style_panel", n_stocks=4, n_days=80).prices
    prices[["open", "high", "low", "volume"]] = np.nan
    src = tmp_path / "close_only.csv"
    _write_csv(src, prices)
    code = main(["predict", "stocks", str(src), "--weights", str(art.weights_path)])
    err = capsys.readouterr().err
    assert code == 2 and "trained on 64 features" in err and "Traceback" not in err


def test_unknown_source_is_a_clear_error():
    with pytest.raises(ZooValueError, match="style_panel"):
        StockDataModule("nope").setup("fit")


def test_task_metadata_imports_no_heavy_module():
    code = ("import sys, zoo.tasks.stocks as t; t.TASK.config_cls(); "
            "print(sorted(m for m in ('torch', 'lightning', 'pandas', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("n", [6, 120])
def test_score_plot_labels_do_not_overlap(n, overlapping_texts):
    from zoo.tasks.stocks.predict import PLOT_EACH, score_figure

    rng = np.random.default_rng(0)
    scores = np.sort(rng.normal(size=n))[::-1]
    rows = [{"rank": i + 1, "instrument": f"INSTRUMENT{i:03d}", "date": "2024-01-31", "score": float(s),
             "history_days": 90} for i, s in enumerate(scores)]
    fig = score_figure(rows)
    bars = fig.axes[0]
    labels = [t.get_text() for t in bars.get_yticklabels()]
    assert len(labels) == min(n, 2 * PLOT_EACH) and labels[0] == "#1 INSTRUMENT000"
    assert bars.get_xlabel() and bars.get_title() and fig.axes[1].get_xlabel()
    assert overlapping_texts(fig) == []


def test_plots_read_the_run_files(trained, tmp_path):
    from zoo.tasks.stocks.plots import plot_excess, plot_routing

    _, _, root, _, _ = trained
    runs = {"miga": root / "run"}
    assert plot_excess("tiny", runs, tmp_path / "excess.png").read_bytes()[:4] == b"\x89PNG"
    routing = plot_routing("tiny", runs, ["low_vol", "momentum", "reversal", "value"], tmp_path / "routing.png",
                           "style")
    assert routing is not None and routing.read_bytes()[:4] == b"\x89PNG"


def test_routing_plot_stays_readable_with_many_sectors_and_experts(overlapping_texts):
    from zoo.tasks.stocks.plots import routing_figure

    rng = np.random.default_rng(0)
    sectors = ["Consumer Discretionary", "Consumer Staples", "Energy", "Financials", "Health Care", "Industrials",
               "Information Technology", "Materials", "Telecommunications Services", "Unknown", "Utilities"]
    tables = {}
    for row, clusters in (("moe_topk", 16), ("miga_no_iga", 4), ("miga", 4), ("miga_oracle", 4)):
        share = pd.DataFrame(rng.dirichlet(np.ones(clusters), len(sectors)), columns=range(clusters))
        tables[row] = share
    fig = routing_figure("stocks.sp500", tables, sectors, "sector")
    assert overlapping_texts(fig) == []
    heatmaps = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in heatmaps] == list(tables)
    assert all(ax.get_xlabel() == "routing cluster" for ax in heatmaps)
    assert any("share of the sector" in ax.get_ylabel() for ax in fig.axes)  # the colour bar


def test_shipped_weights_load_by_name_offline_and_rank(tmp_path):
    prices = load_panel("style_panel", n_stocks=5, n_days=90, seed=11).prices
    src = tmp_path / "p.csv"
    _write_csv(src, prices)
    loaded = api.load_weights("stocks/miga_g4e4.style-panel")  # sha256-verified, rebuilt from its YAML and info
    assert loaded.datamodule is None and loaded.info["num_features"] == 64 and loaded.info["lookback"] == 20
    rows = TASK.predict(loaded, src)
    assert sorted(r["rank"] for r in rows) == [1, 2, 3, 4, 5]
    assert all(np.isfinite(r["score"]) for r in rows)
