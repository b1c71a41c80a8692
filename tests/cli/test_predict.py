"""`zoo predict forecasting` with the shipped weights on a user's CSV."""

import csv

import pytest

from zoo.cli import main


@pytest.fixture
def series_csv(tmp_path):
    path = tmp_path / "in.csv"
    rows = ["id,value"] + [f"a,{100 + (t % 12)}" for t in range(30)] + [f"b,{50 + t}" for t in range(8)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_predict_writes_forecasts_and_plot(series_csv, tmp_path, capsys):
    out, plot = tmp_path / "pred.csv", tmp_path / "pred.png"
    code = main(["predict", "forecasting", str(series_csv), "--weights", "forecasting/moe_e8k2.m3-monthly",
                 "--horizon", "6", "--out", str(out), "--plot", str(plot), "--json"])
    assert code == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["id"], int(r["step"])) for r in rows] == [(s, h) for s in "ab" for h in range(1, 7)]
    a = [float(r["forecast"]) for r in rows if r["id"] == "a"]
    assert all(80 < v < 130 for v in a), a  # a series between 100 and 111 is not forecast into another range
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("id,value\na,1\na,x\n", [], "in.csv:3: value 'x' is not a number"),
        ("id,amount\na,1\n", [], "expected a header with a 'value' column"),
        ("id,value\na,1\n", ["--horizon", "19"], "--horizon=19 is not allowed"),
    ],
)
def test_predict_bad_input_is_one_line_exit_2(tmp_path, capsys, content, args, message):
    path = tmp_path / "in.csv"
    path.write_text(content)
    code = main(["predict", "forecasting", str(path), "--weights", "forecasting/moe_e8k2.m3-monthly", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
