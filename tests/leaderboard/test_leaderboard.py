"""Leaderboards: spec → reproduce → results JSON → render Markdown (+ README block) → render --check / check."""

import json

import pytest
import yaml

from zoo import leaderboard
from zoo.errors import StaleTableError, ToleranceError, ZooValueError

SPEC = {
    "task": "forecasting",
    "title": "Tiny board",
    "protocol": "A protocol line.",
    "metrics": [
        {"key": "test/smape", "display": "sMAPE", "format": "{:.2f}", "better": "lower", "tolerance": 0.1},
        {"key": "test/acc", "display": "acc", "format": "{:.3f}", "better": "higher", "tolerance": 0.0},
    ],
    "seeds": [0, 1],
    "rows": [
        {"name": "naive", "recipe": "snaive_m3-monthly", "claimed": {"sMAPE": 14.9}},
        {"name": "dense", "recipe": "dense_m3-monthly"},
    ],
}


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A scratch repository root holding leaderboards/ and a README with a board block."""
    monkeypatch.setattr(leaderboard, "repo_root", lambda: tmp_path)
    (tmp_path / "leaderboards").mkdir()
    (tmp_path / "leaderboards" / "tiny.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp_path / "README.md").write_text("intro\n<!-- board:tiny -->\nold\n<!-- /board:tiny -->\noutro\n")
    return tmp_path


def write_result(board, row, tier, seed, metrics, **extra):
    record = {
        "board": board, "row": row, "tier": tier, "seed": seed, "metrics": metrics,
        "params_total": 1000, "params_active": 250, "wall_seconds": 2.0, **extra,
    }
    path = leaderboard.result_path(board, row, tier, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_render_mean_std_best_and_claimed(root):
    write_result("tiny", "naive", "full", 0, {"test/smape": 10.0, "test/acc": 0.5})
    write_result("tiny", "naive", "full", 1, {"test/smape": 12.0, "test/acc": 0.7})
    write_result("tiny", "dense", "full", 0, {"test/smape": 20.0, "test/acc": 0.9})
    leaderboard.render(["tiny"])
    md = (root / "leaderboards" / "tiny.md").read_text()
    # naive: mean 11, sample std sqrt(2) = 1.41; best sMAPE (lower) is naive, best acc (higher) is dense
    assert "| naive | **11.00 ± 1.41 (2)** | 0.600 ± 0.141 (2) | 1,000 (250) | 2.0 | `snaive_m3-monthly` | sMAPE 14.9 |" in md
    assert "| dense | 20.00 ± 0.00 (1) | **0.900 ± 0.000 (1)** |" in md
    assert "zoo leaderboard reproduce tiny --tier full" in md and "Tier `smoke`" not in md
    readme = (root / "README.md").read_text()
    assert readme.startswith("intro\n<!-- board:tiny -->\n") and readme.endswith("<!-- /board:tiny -->\noutro\n")
    assert "old" not in readme and "**11.00 ± 1.41 (2)**" in readme


def test_render_check_detects_drift(root):
    write_result("tiny", "naive", "smoke", 0, {"test/smape": 10.0, "test/acc": 0.5})
    leaderboard.render(["tiny"])
    assert leaderboard.render(["tiny"], check=True) == []
    write_result("tiny", "naive", "smoke", 1, {"test/smape": 30.0, "test/acc": 0.5})
    before = (root / "leaderboards" / "tiny.md").read_text()
    with pytest.raises(StaleTableError) as err:
        leaderboard.render(["tiny"], check=True)
    assert err.value.exit_code == 6 and "tiny.md" in str(err.value)
    assert (root / "leaderboards" / "tiny.md").read_text() == before, "--check must not write"


def test_results_from_another_board_are_refused(root):
    write_result("tiny", "naive", "full", 0, {"test/smape": 1.0}, )
    path = leaderboard.result_path("tiny", "naive", "full", 0)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "board": "other"}))
    with pytest.raises(ZooValueError, match="board 'other'"):
        leaderboard.load_results("tiny", "full")


def test_unknown_and_malformed_specs(root):
    with pytest.raises(ZooValueError, match="did you mean 'tiny'"):
        leaderboard.load_spec("tinyy")
    (root / "leaderboards" / "broken.yaml").write_text("task: forecasting\nrows: []\n")
    with pytest.raises(ZooValueError, match="malformed board spec"):
        leaderboard.load_spec("broken")


def test_check_tier_compares_within_tolerance_without_touching_results(root, monkeypatch):
    write_result("tiny", "naive", "smoke", 0, {"test/smape": 10.0, "test/acc": 0.5})
    path = leaderboard.result_path("tiny", "naive", "smoke", 0)
    committed = path.read_bytes()
    fresh = {"test/smape": 10.05, "test/acc": 0.5}
    monkeypatch.setattr(leaderboard, "run_row", lambda spec, row, tier, seed, **kw: {"metrics": dict(fresh)})
    leaderboard.check_tier("tiny", "smoke")
    fresh["test/smape"] = 10.5
    with pytest.raises(ToleranceError) as err:
        leaderboard.check_tier("tiny", "smoke")
    assert err.value.exit_code == 5 and "10 → 10.5" in str(err.value)
    assert path.read_bytes() == committed
    assert sorted(p.name for p in path.parent.iterdir()) == ["smoke-s0.json"]


def test_reproduce_writes_complete_results(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run dirs go under ./runs
    paths = leaderboard.reproduce("tiny", "smoke", rows=["naive"], seeds=[0])
    record = json.loads(paths[0].read_text())
    for key in ("metrics", "weights_sha256", "config_sha256", "command", "torch", "git_commit", "threads", "wall_seconds"):
        assert key in record, key
    assert record["board"] == "tiny" and record["tier"] == "smoke" and record["seed"] == 0
    assert 0 < record["metrics"]["test/smape"] < 200 and record["params_total"] == 0
    assert record["command"][:4] == ["zoo", "leaderboard", "reproduce", "tiny"]


def test_committed_boards_render_unchanged():
    """What CI checks: every committed table equals what its committed results render to."""
    assert leaderboard.render(leaderboard.board_names(), check=True) == []
