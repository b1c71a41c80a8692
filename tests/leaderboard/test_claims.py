"""Claims on a board: parsed and checked against the board's metrics and rows, judged from the results with the
seeds' spread (held / not held / inconclusive / not measured), rendered under each tier's table and covered by
``render --check``."""

import json
import math

import pytest
import yaml

from zoo import leaderboard
from zoo.claims import HELD, INCONCLUSIVE, NOT_HELD, NOT_MEASURED, Claim, judge, parse_claims
from zoo.errors import StaleTableError, ZooValueError

METRICS = {"test/smape": "lower", "test/acc": "higher", "diag/experts": "none"}
ROWS = {"moe", "dense", "naive"}


def stats(**rows):
    """Row → {metric: (mean, std, n)} from ``row=(mean, std, n)`` on test/smape."""
    return {row: {"test/smape": st} for row, st in rows.items()}


@pytest.mark.parametrize("moe,dense,expected", [
    ((10.0, 0.3, 3), (11.0, 0.4, 3), HELD),           # 1.0 better, spread 0.5
    ((10.8, 0.3, 3), (11.0, 0.4, 3), INCONCLUSIVE),   # 0.2 better, inside the spread
    ((11.4, 0.3, 3), (11.0, 0.4, 3), INCONCLUSIVE),   # 0.4 worse, inside the spread
    ((12.0, 0.3, 3), (11.0, 0.4, 3), NOT_HELD),       # 1.0 worse
    ((10.0, 0.0, 1), (10.0, 0.0, 1), INCONCLUSIVE),   # a tie without spread
    ((9.99, 0.0, 1), (10.0, 0.0, 1), HELD),           # deterministic rows: any margin decides
])
def test_better_than_weighs_the_margin_against_the_combined_std(moe, dense, expected):
    c = Claim(claim="MoE beats dense", metric="test/smape", row="moe", than="dense")
    verdict = judge(c, stats(moe=moe, dense=dense), "lower", "{:.2f}")
    assert verdict.status == expected
    assert verdict.test == "`moe` < `dense`"


def test_better_follows_the_metrics_direction():
    c = Claim(claim="higher accuracy", metric="test/smape", row="moe", than="dense")
    assert judge(c, stats(moe=(0.9, 0.01, 3), dense=(0.8, 0.01, 3)), "higher", "{:.2f}").status == HELD
    assert judge(c, stats(moe=(0.9, 0.01, 3), dense=(0.8, 0.01, 3)), "lower", "{:.2f}").status == NOT_HELD


@pytest.mark.parametrize("bound,mean,std,expected", [
    ({"at_least": 0.05}, 0.08, 0.01, HELD),
    ({"at_least": 0.05}, 0.055, 0.01, INCONCLUSIVE),
    ({"at_least": 0.05}, 0.03, 0.01, NOT_HELD),
    ({"at_most": 1.0}, 0.8, 0.1, HELD),
    ({"at_most": 1.0}, 1.05, 0.1, INCONCLUSIVE),
    ({"at_most": 1.0}, 1.2, 0.1, NOT_HELD),
])
def test_a_bound_on_a_rows_mean(bound, mean, std, expected):
    c = Claim(claim="IC is positive", metric="test/smape", row="moe", **bound)
    verdict = judge(c, stats(moe=(mean, std, 3)), "lower", "{:.3f}")
    assert verdict.status == expected
    assert verdict.measured == f"{mean:.3f} ± {std:.3f} (3)"


def test_a_ratio_of_means_propagates_both_relative_spreads():
    c = Claim(claim="half the time", metric="test/smape", row="moe", over="dense", at_most=0.6)
    # 4 / 10 = 0.4, relative spreads 0.1 and 0.05: ratio spread 0.4 * hypot(0.1, 0.05) = 0.0447
    verdict = judge(c, stats(moe=(4.0, 0.4, 3), dense=(10.0, 0.5, 3)), "lower", "{:.1f}")
    assert verdict.status == HELD and verdict.test == "`moe` / `dense` ≤ 0.6"
    assert verdict.measured.startswith("0.4 ± 0.045 (")
    tight = Claim(claim="c", metric="test/smape", row="moe", over="dense", at_most=0.42)
    assert judge(tight, stats(moe=(4.0, 0.4, 3), dense=(10.0, 0.5, 3)), "lower", "{:.1f}").status == INCONCLUSIVE
    zero = judge(tight, stats(moe=(4.0, 0.4, 3), dense=(0.0, 0.0, 3)), "lower", "{:.1f}")
    assert zero.status == INCONCLUSIVE


def test_a_row_without_results_is_not_measured():
    c = Claim(claim="c", metric="test/smape", row="moe", than="dense")
    verdict = judge(c, stats(moe=(1.0, 0.1, 3)), "lower", "{:.2f}")
    assert verdict.status == NOT_MEASURED and verdict.measured == "no results for `dense`"


@pytest.mark.parametrize("raw,match", [
    ({"claim": "c", "metric": "test/nope", "row": "moe", "than": "dense"}, "unknown metric 'test/nope'"),
    ({"claim": "c", "metric": "test/smape", "row": "moe", "than": "gru"}, "unknown row 'gru'"),
    ({"claim": "c", "metric": "test/smape", "row": "moe"}, "exactly one of 'at_least' and 'at_most'"),
    ({"claim": "c", "metric": "test/smape", "row": "moe", "at_least": 1, "at_most": 2}, "exactly one of"),
    ({"claim": "c", "metric": "test/smape", "row": "moe", "than": "dense", "at_most": 2}, "'than' takes no bound"),
    ({"claim": "c", "metric": "diag/experts", "row": "moe", "than": "dense"}, "no better direction"),
    ({"claim": "c", "metric": "test/smape", "row": "moe", "at_least": "big"}, "finite number"),
    ({"claim": "c", "metric": "test/smape", "row": "moe", "at_least": math.inf}, "finite number"),
    ({"claim": " ", "metric": "test/smape", "row": "moe", "at_least": 1}, "in words"),
    ({"claim": "c", "metric": "test/smape", "row": "moe", "at_least": 1, "because": "x"}, "because"),
    ("a claim", "must be a mapping"),
])
def test_malformed_claims_are_one_line_errors(raw, match):
    with pytest.raises(ZooValueError, match=match) as info:
        parse_claims([raw], METRICS, ROWS, "board.yaml")
    assert str(info.value).startswith("board.yaml: claims[0]") and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------- on a rendered board

SPEC = {
    "task": "forecasting",
    "title": "Tiny board",
    "protocol": "A protocol line.",
    "metrics": [{"key": "test/smape", "display": "sMAPE", "format": "{:.2f}", "better": "lower", "tolerance": 0.1}],
    "seeds": [0, 1],
    "rows": [{"name": "moe", "recipe": "moe_e8k2_m3-monthly"}, {"name": "dense", "recipe": "dense_m3-monthly"}],
    "claims": [
        {"claim": "The MoE beats its dense twin", "source": "Table 2", "metric": "test/smape", "row": "moe",
         "than": "dense"},
        {"claim": "sMAPE under 12", "metric": "test/smape", "row": "moe", "at_most": 12},
    ],
}


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(leaderboard, "repo_root", lambda: tmp_path)
    (tmp_path / "leaderboards").mkdir()
    (tmp_path / "leaderboards" / "tiny.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp_path / "README.md").write_text("<!-- leaderboards -->\n<!-- /leaderboards -->\n")
    return tmp_path


def write_results(tier, row, values):
    for seed, value in enumerate(values):
        path = leaderboard.result_path("tiny", row, tier, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"board": "tiny", "row": row, "tier": tier, "seed": seed, "params_total": 10,
                                    "params_active": 5, "wall_seconds": 1.0, "metrics": {"test/smape": value}}))


def test_each_tier_renders_its_own_verdicts(root):
    write_results("full", "moe", [10.0, 10.2])
    write_results("full", "dense", [11.0, 11.2])
    write_results("smoke", "moe", [13.0, 13.2])
    page = leaderboard.render_board(leaderboard.load_spec("tiny"))
    full = page[page.index("## Tier `full`"):]
    smoke = page[page.index("## Tier `smoke`"):page.index("## Tier `full`")]
    assert ("| The MoE beats its dense twin (Table 2) | `moe` < `dense` on sMAPE | 10.10 ± 0.14 (2) vs "
            "11.10 ± 0.14 (2) | **held** |") in full
    assert "| sMAPE under 12 | `moe` ≤ 12 on sMAPE | 10.10 ± 0.14 (2) | **held** |" in full
    assert "| no results for `dense` | **not measured** |" in smoke
    assert "| sMAPE under 12 | `moe` ≤ 12 on sMAPE | 13.10 ± 0.14 (2) | **not held** |" in smoke


def test_render_check_fails_when_the_results_change_a_verdict(root):
    write_results("full", "moe", [10.0, 10.2])
    write_results("full", "dense", [11.0, 11.2])
    leaderboard.render(["tiny"])
    assert leaderboard.render(["tiny"], check=True) == []
    write_results("full", "dense", [10.1, 10.3])  # now inside the spread
    with pytest.raises(StaleTableError):
        leaderboard.render(["tiny"], check=True)
    leaderboard.render(["tiny"])
    assert "**inconclusive**" in (root / "leaderboards" / "tiny.md").read_text()


def test_a_board_without_claims_renders_no_claims_section(root):
    (root / "leaderboards" / "tiny.yaml").write_text(yaml.safe_dump({k: v for k, v in SPEC.items() if k != "claims"}))
    write_results("full", "moe", [10.0, 10.2])
    assert "Claims" not in leaderboard.render_board(leaderboard.load_spec("tiny"))


def test_the_readme_summary_counts_the_full_tiers_verdicts(root):
    write_results("full", "moe", [10.0, 10.2])
    assert leaderboard.summary_table(["tiny"]).splitlines()[-1].endswith("| 1 held, 1 not measured |")
    write_results("full", "dense", [10.1, 10.3])
    assert leaderboard.summary_table(["tiny"]).splitlines()[-1].endswith("| 1 held, 1 inconclusive |")
