"""`zoo predict forecasting`: forecasts, empirical intervals, timestamps, plots and one-line errors."""

import csv
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from zoo.cli import main
from zoo.errors import ZooValueError
from zoo.tasks.forecasting.predict import MAX_ORIGINS, predict

WEIGHTS = "forecasting/moe_e8k2.m3-monthly"
COLUMNS = ["id", "step", "timestamp", "forecast", "lo80", "hi80", "lo95", "hi95"]


def read_rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


class Naive(torch.nn.Module):
    """Repeats the last input value: errors that can be computed by hand."""

    def __init__(self, horizon):
        super().__init__()
        self.horizon = horizon

    def forward(self, x):
        return x[:, -1:].expand(-1, self.horizon)


def fake_loaded(model, lookback, horizon, period="OTHER"):
    """What predict reads of a LoadedModel: the network and the model info (never a datamodule)."""
    info = {"lookback": lookback, "horizon": horizon, "seasonality": 1, "period": period}
    return SimpleNamespace(module=SimpleNamespace(model=model), info=info, datamodule=None)


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_writes_forecasts_intervals_and_fan_chart(tmp_path, capsys):
    path = tmp_path / "x.csv"
    rows = ["id,date,value"]
    for sid, n in (("shop", 60), ("tiny", 6)):
        for t in range(n):
            year, month = 2019 + t // 12, t % 12 + 1
            rows.append(f"{sid},{year}-{month:02d}-01,{200 + 20 * np.sin(2 * np.pi * t / 12) + t:.3f}")
    path.write_text("\n".join(rows) + "\n")
    out, plot = tmp_path / "o.csv", tmp_path / "p.png"
    code = main(["predict", "forecasting", str(path), "--weights", WEIGHTS, "--out", str(out), "--plot", str(plot),
                 "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    fields, got = read_rows(out)
    assert fields == COLUMNS and len(got) == len(printed) == 2 * 18
    assert [(r["id"], int(r["step"])) for r in got] == [(s, h) for s in ("shop", "tiny") for h in range(1, 19)]
    shop = [r for r in got if r["id"] == "shop"]
    assert [r["timestamp"] for r in shop[:3]] == ["2024-01-01", "2024-02-01", "2024-03-01"]
    assert [r["timestamp"] for r in got if r["id"] == "tiny"][0] == "2019-07-01"
    for r in got:
        lo95, lo80, f, hi80, hi95 = (float(r[k]) for k in ("lo95", "lo80", "forecast", "hi80", "hi95"))
        assert all(np.isfinite([lo95, lo80, f, hi80, hi95]))
        assert lo95 <= lo80 <= f <= hi80 <= hi95
    assert all(150 < float(r["forecast"]) < 320 for r in shop)
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("content", "args", "words"),
    [
        ("id,value\na,1\na,x\n", [], ["x.csv:3:", "'x' is not a number", "series 'a'"]),
        ("id,date,value\na,2020-01-31,1\na,2020-02-29,2\na,2020-04-30,4\n", [], ["x.csv:4:", "gap", "--fill"]),
        ("", [], ["empty"]),
        ("id,value\na,1\n", ["--horizon", "0"], ["--horizon=0 is not allowed"]),
        ("id,value\na,1\n", ["--horizon", "19"], ["--horizon=19 is not allowed", "1..18"]),
        ("id,value\na,1\n", ["--level", "80,100"], ["--level 100 is not allowed"]),
        ("id,value\na,1\n", ["--level", "80,x"], ["--level", "comma-separated"]),
        ("id,value\na,1\n", ["--fill", "zero"], ["--fill", "'zero'"]),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, content, args, words):
    path = tmp_path / "x.csv"
    path.write_text(content)
    out, plot = tmp_path / "o.csv", tmp_path / "p.png"
    try:
        code = main(["predict", "forecasting", str(path), "--weights", WEIGHTS, "--out", str(out), "--plot",
                     str(plot), *args])
    except SystemExit as exc:  # a value outside an option's choices is an argparse usage error
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("zoo: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, (word, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


# ---------------------------------------------------------------------------------------------------- predict()


def test_intervals_are_the_empirical_quantiles_of_scaled_backtest_errors(tmp_path):
    rng = np.random.default_rng(0)
    long_v = 50 + np.cumsum(rng.normal(size=40))
    short_v = 50 + np.cumsum(rng.normal(size=8))
    path = tmp_path / "x.csv"
    path.write_text("id,value\n" + "".join(f"long,{v}\n" for v in long_v) + "".join(f"short,{v}\n" for v in short_v))
    L, H = 5, 3
    rows = predict(fake_loaded(Naive(H), L, H), path, horizon=None, out=None, plot=None, level=(50, 90))
    assert list(rows[0]) == ["id", "step", "timestamp", "forecast", "lo50", "hi50", "lo90", "hi90"]

    def errors(v):
        origins = range(max(L, len(v) - H - MAX_ORIGINS + 1), len(v) - H + 1)
        return np.array([np.abs(v[t : t + H] - v[t - 1]) / np.abs(v[t - L : t]).mean() for t in origins])

    own, short_errors = errors(long_v), errors(short_v)
    assert len(own) == MAX_ORIGINS and len(short_errors) == 1  # short: too few origins → pooled errors
    pooled = np.concatenate([own, short_errors])
    for sid, v, e in (("long", long_v, own), ("short", short_v, pooled)):
        got = [r for r in rows if r["id"] == sid]
        scale = np.abs(v[-L:]).mean()
        np.testing.assert_allclose([r["forecast"] for r in got], [v[-1]] * H)
        for level in (50, 90):
            width = np.quantile(e, level / 100, axis=0) * scale
            np.testing.assert_allclose([r[f"hi{level}"] for r in got], v[-1] + width, rtol=1e-6)
            np.testing.assert_allclose([r[f"lo{level}"] for r in got], v[-1] - width, rtol=1e-6)
        assert all(r["timestamp"] is None for r in got)


def test_short_histories_are_padded_with_a_warning_and_get_empty_intervals(tmp_path, caplog):
    path = tmp_path / "x.csv"
    path.write_text("value\n3\n4\n5\n")
    out = tmp_path / "o.csv"
    with caplog.at_level(logging.WARNING):
        rows = predict(fake_loaded(Naive(2), 5, 2), path, horizon=2, out=out, plot=None)
    assert "left-padded" in caplog.text and "interval columns are left empty" in caplog.text
    assert [r["forecast"] for r in rows] == pytest.approx([5.0, 5.0]) and rows[0]["lo80"] is None
    lines = out.read_text().splitlines()
    assert lines[0] == "id,step,timestamp,forecast,lo80,hi80,lo95,hi95"
    assert [line.split(",") for line in lines[1:]] == [["series", str(h), "", lines[h].split(",")[3], "", "", "", ""]
                                                        for h in (1, 2)]
    text = out.read_text()
    assert "nan" not in text.lower()


def test_non_finite_forecast_is_an_error_and_nothing_is_written(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x):
            return torch.full((len(x), 2), float("nan"))

    path = tmp_path / "x.csv"
    path.write_text("id,value\nq,1\nq,2\n")
    with pytest.raises(ZooValueError, match="forecast of series 'q' is not finite"):
        predict(fake_loaded(Broken(), 2, 2), path, horizon=None, out=tmp_path / "o.csv", plot=tmp_path / "p.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


def test_wide_input_with_many_series_plots_a_capped_grid(tmp_path):
    path = tmp_path / "w.csv"
    header = "date," + ",".join(f"s{i}" for i in range(14))
    lines = [f"2024-01-01 {h:02d}:{m:02d}," + ",".join(str(10 + i + (h * 2 + m // 30) % 5) for i in range(14))
             for h in range(12) for m in (0, 30)]
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    plot = tmp_path / "p.png"
    rows = predict(fake_loaded(Naive(4), 6, 4), path, horizon=4, out=None, plot=plot)
    assert len(rows) == 14 * 4
    assert [r["timestamp"] for r in rows[:2]] == ["2024-01-01T12:00:00", "2024-01-01T12:30:00"]
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"horizon": 0}, "--horizon=0 is not allowed; this model forecasts 1..3 steps directly"),
        ({"horizon": 4}, "--horizon=4 is not allowed"),
        ({"level": (80, 100)}, "--level 100 is not allowed"),
        ({"level": ()}, "--level (none) is not allowed"),
        ({"level": (80, 80.0)}, "--level 80,80 repeats a level"),
        ({"fill": "zero"}, "--fill='zero' is not allowed; expected one of error, interpolate, ffill"),
    ],
)
def test_bad_options_are_one_line_errors_and_write_nothing(tmp_path, options, message):
    path = tmp_path / "x.csv"
    path.write_text("id,value\n" + "".join(f"a,{v}\n" for v in range(12)))
    with pytest.raises(ZooValueError) as err:
        predict(fake_loaded(Naive(3), 4, 3), path, out=tmp_path / "o.csv", plot=tmp_path / "p.png", **options)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


def test_input_of_another_frequency_is_warned(tmp_path, caplog):
    path = tmp_path / "x.csv"
    path.write_text("date,value\n" + "".join(f"2024-01-{d:02d},{d}\n" for d in range(1, 29)))
    with caplog.at_level(logging.WARNING):
        predict(fake_loaded(Naive(2), 4, 2, period="MONTHLY"), path)
    assert "1 series are DAILY but the model was trained on MONTHLY series" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        predict(fake_loaded(Naive(2), 4, 2, period="DAILY"), path)
    assert "trained on" not in caplog.text
