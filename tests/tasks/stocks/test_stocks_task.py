"""The stocks task end to end on a tiny style panel: day batches, subsets, the evaluation frame, training by
name through the zoo flow, publishing and ``zoo predict stocks`` with its one-line errors."""

import csv
import json

import numpy as np
import pandas as pd
import pytest
import torch

from zoo import api, hub
from zoo.cli import main
from zoo.config import resolve_config
from zoo.errors import ZooValueError
from zoo.task import fit_and_test
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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch MIGA on the tiny panel, published as safetensors + YAML."""
    root = tmp_path_factory.mktemp("stocks")
    cfg, _ = resolve_config(StocksConfig, "stocks", "miga_g4e4_style-panel",
                            layers=[{"data.panel": TINY, "data.lookback": 5, "trainer.max_epochs": 1,
                                     "trainer.num_sanity_val_steps": 0}])
    result = fit_and_test(TASK, cfg, root / "run", progress=False)
    art = hub.publish(result.module.model.state_dict(), cfg, arch="miga_g4e4", tag="tiny", out_dir=root / "w",
                      extra={"task": "stocks"})
    return result, art, root


def test_training_by_name_reports_qlib_metrics(trained):
    result, _, root = trained
    for key in ("test/ic", "test/icir", "test/rank_ic", "test/rank_icir", "test/excess_return",
                "test/information_ratio", "test/max_drawdown", "test/nmi", "val/best_ic"):
        assert np.isfinite(result.metrics[key]), key
    best = hub.load_checkpoint(root / "run" / "checkpoints" / "best.ckpt")["state_dict"]
    for name, value in result.module.model.state_dict().items():  # what the test metrics were computed with
        assert torch.equal(best[f"model.{name}"], value), name
    scores = pd.read_csv(root / "run" / "test_scores.csv")
    assert {"date", "instrument", "score", "label", "ret", "group", "cluster"} <= set(scores.columns)


def _write_csv(path, prices):
    prices.assign(date=prices["date"].dt.strftime("%Y-%m-%d")).to_csv(path, index=False)


def test_predict_ranks_the_last_date(trained, tmp_path, capsys):
    _, art, _ = trained
    prices = load_panel("style_panel", n_stocks=6, n_days=90, seed=3).prices
    src, out = tmp_path / "prices.csv", tmp_path / "ranked.csv"
    _write_csv(src, prices)
    code = main(["predict", "stocks", str(src), "--weights", str(art.weights_path), "--out", str(out), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 7)] and len(printed) == 6
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert {r["date"] for r in rows} == {str(prices["date"].max().date())}
    loaded = api.load_weights(str(art.weights_path))
    direct = TASK.predict(loaded, src)
    assert [r["instrument"] for r in direct] == [r["instrument"] for r in rows]


def test_predict_refuses_close_only_input_in_one_line(trained, tmp_path, capsys):
    _, art, _ = trained
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


def test_plots_read_the_run_files(trained, tmp_path):
    from zoo.tasks.stocks.plots import plot_excess, plot_routing

    _, _, root = trained
    runs = {"miga": root / "run"}
    assert plot_excess("tiny", runs, tmp_path / "excess.png").stat().st_size > 0
    routing = plot_routing("tiny", runs, ["low_vol", "momentum", "reversal", "value"], tmp_path / "routing.png")
    assert routing is not None and routing.stat().st_size > 0


def test_shipped_weights_load_by_name_offline_and_rank(tmp_path):
    prices = load_panel("style_panel", n_stocks=5, n_days=90, seed=11).prices
    src = tmp_path / "p.csv"
    _write_csv(src, prices)
    loaded = api.load_weights("stocks/miga_g4e4.style-panel")  # sha256-verified, rebuilt from its YAML
    rows = TASK.predict(loaded, src)
    assert sorted(r["rank"] for r in rows) == [1, 2, 3, 4, 5]
    assert all(np.isfinite(r["score"]) for r in rows)
