"""Published reference rows: validated against the board, rendered apart from the board's rows with the
reimplementing row's gap, and every committed board's reimplementations held to their stated tolerance."""

import json

import pytest
import yaml

from zoo import leaderboard
from zoo.errors import ZooValueError
from zoo.references import Reference, deviations, parse_references

METRICS = {"test/smape", "test/mase"}
ROWS = {"theta", "moe"}
GOOD = {"name": "Theta", "source": "M3 paper, Table 6", "protocol": "same split", "metrics": {"test/smape": 13.85}}


@pytest.mark.parametrize("change,match", [
    ({"metrics": {}}, "'metrics' must map"),
    ({"metrics": {"test/owa": 0.9}}, "unknown metric 'test/owa'"),
    ({"metrics": {"test/smape": "13.85"}}, "must be a finite number"),
    ({"row": "ets"}, "unknown row 'ets'"),
    ({"tolerance": {"test/smape": 0.1}}, "needs the 'row'"),
    ({"row": "theta", "tolerance": {"test/mase": 0.1}}, "no published value"),
    ({"source": ""}, "'source' must be a non-empty text"),
    ({"table": 6}, "table"),
])
def test_malformed_references_are_one_line_errors(change, match):
    with pytest.raises(ZooValueError, match=match) as info:
        parse_references([{**GOOD, **change}], METRICS, ROWS, "board.yaml")
    assert str(info.value).startswith("board.yaml: references[0]") and "\n" not in str(info.value)


def test_deviation_is_the_rows_mean_minus_the_published_value():
    ref = Reference(**GOOD, row="theta")
    assert deviations(ref, {"theta": {"test/smape": (13.93, 0.0, 1)}}) == pytest.approx({"test/smape": 0.08})
    assert deviations(ref, {}) == {}
    assert deviations(Reference(**GOOD), {"theta": {"test/smape": (13.93, 0.0, 1)}}) == {}


def test_the_board_renders_published_numbers_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(leaderboard, "repo_root", lambda: tmp_path)
    (tmp_path / "leaderboards").mkdir()
    spec = {"task": "forecasting", "title": "T", "protocol": "P", "seeds": [0],
            "metrics": [{"key": "test/smape", "display": "sMAPE", "format": "{:.2f}", "better": "lower",
                         "tolerance": 0.1},
                        {"key": "test/mase", "display": "MASE", "format": "{:.3f}", "better": "lower",
                         "tolerance": 0.1}],
            "rows": [{"name": "theta", "recipe": "theta_m3-monthly"}],
            "references": [{**GOOD, "row": "theta", "tolerance": {"test/smape": 0.2}},
                           {"name": "N-BEATS", "source": "N-BEATS paper, Table 2", "protocol": "ensemble of 180",
                            "metrics": {"test/smape": 12.9, "test/mase": 0.8}}]}
    (tmp_path / "leaderboards" / "tiny.yaml").write_text(yaml.safe_dump(spec))
    page = leaderboard.render_board(leaderboard.load_spec("tiny"))
    assert "| *Theta* | *13.85* | — | M3 paper, Table 6 | same split | `theta`: no `full` results |" in page
    path = leaderboard.result_path("tiny", "theta", "full", 0)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"board": "tiny", "row": "theta", "tier": "full", "seed": 0, "params_total": 0,
                                "params_active": 0, "wall_seconds": 1.0, "metrics": {"test/smape": 13.93}}))
    page = leaderboard.render_board(leaderboard.load_spec("tiny"))
    assert "## Published numbers (cited, not recomputed)" in page
    assert "| *Theta* | *13.85* | — | M3 paper, Table 6 | same split | `theta`: sMAPE +0.08 (tolerance 0.2) |" in page
    assert "| *N-BEATS* | *12.90* | *0.800* | N-BEATS paper, Table 2 | ensemble of 180 | — |" in page
    assert page.index("## Tier `full`") < page.index("## Published numbers")


def committed_reimplementations():
    for board in leaderboard.board_names():
        spec = leaderboard.load_spec(board)
        for ref in spec.references:
            if ref.tolerance:
                yield pytest.param(board, ref, id=f"{board}:{ref.name}")


@pytest.mark.parametrize("board,ref", list(committed_reimplementations()))
def test_committed_reimplementations_match_their_published_numbers(board, ref):
    """E.g. the zoo's Theta and Naive2 on M3 monthly against the M3 competition's published sMAPE."""
    spec = leaderboard.load_spec(board)
    stats = leaderboard._board_stats(spec, leaderboard.load_results(board, "full"))
    gaps = deviations(ref, stats)
    assert set(gaps) >= set(ref.tolerance), f"{board}: row {ref.row} has no full-tier results to compare"
    for key, tol in ref.tolerance.items():
        assert abs(gaps[key]) <= tol, f"{board} {ref.row} {key}: {gaps[key]:+.3f} from {ref.name} ({ref.source})"
