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
    assert "| dense | 20.00 (1) | **0.900 (1)** |" in md
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


def test_board_and_row_config_layers_reach_the_run(root, monkeypatch):
    spec = {**SPEC, "config": {"data.max_series": 7}, "smoke_config": {"data.test_origins": 2},
            "rows": [{"name": "naive", "recipe": "snaive_m3-monthly", "config": {"data.horizon": 6}, "seeds": [0]},
                     {"name": "dense", "recipe": "dense_m3-monthly"}]}
    (root / "leaderboards" / "tiny.yaml").write_text(yaml.safe_dump(spec))
    seen = []

    def fake_fit_and_test(task, cfg, run_dir, **kw):
        seen.append(cfg)
        raise RuntimeError("stop after config resolution")

    monkeypatch.setattr("zoo.task.fit_and_test", fake_fit_and_test)
    monkeypatch.setattr("zoo.task.make_run_dir", lambda *a, **k: root / "run")
    monkeypatch.setattr("zoo.task.write_run_files", lambda *a, **k: None)
    board = leaderboard.load_spec("tiny")
    for tier in ("smoke", "full"):
        with pytest.raises(RuntimeError):
            leaderboard.run_row(board, board.row("naive"), tier, 0)
    smoke, full = seen
    assert (full.data.max_series, full.data.horizon, full.data.test_origins) == (7, 6, 1)
    assert (smoke.data.horizon, smoke.data.test_origins) == (6, 2)
    # the recipe's own smoke overrides come last: they win over the board's config
    assert smoke.data.max_series == 60 and smoke.trainer["max_epochs"] == 2


def test_row_seeds_limit_reproduce(root, monkeypatch):
    spec = {**SPEC, "rows": [{"name": "naive", "recipe": "snaive_m3-monthly", "seeds": [0]},
                             {"name": "dense", "recipe": "dense_m3-monthly"}]}
    (root / "leaderboards" / "tiny.yaml").write_text(yaml.safe_dump(spec))
    runs = []
    monkeypatch.setattr(leaderboard, "run_row", lambda spec, row, tier, seed, **kw: runs.append((row.name, seed)) or {})
    leaderboard.reproduce("tiny", "smoke")
    assert runs == [("naive", 0), ("dense", 0), ("dense", 1)]
    runs.clear()
    leaderboard.reproduce("tiny", "smoke", seeds=[1])
    assert runs == [("dense", 1)]


def test_comparisons_render_the_ratio_of_means(root):
    spec = {**SPEC, "comparisons": [{"label": "cost ratio", "metric": "test/smape", "numerator": "dense",
                                     "denominator": "naive"}]}
    (root / "leaderboards" / "tiny.yaml").write_text(yaml.safe_dump(spec))
    write_result("tiny", "naive", "full", 0, {"test/smape": 10.0})
    write_result("tiny", "naive", "full", 1, {"test/smape": 30.0})
    write_result("tiny", "dense", "full", 0, {"test/smape": 50.0})
    leaderboard.render(["tiny"])
    md = (root / "leaderboards" / "tiny.md").read_text()
    assert "- cost ratio: **2.50×** (mean `test/smape` of `dense` / `naive`)" in md
    bad = {**spec, "comparisons": [{"label": "x", "metric": "m", "numerator": "nope", "denominator": "naive"}]}
    (root / "leaderboards" / "tiny.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ZooValueError, match="no row 'nope'"):
        leaderboard.load_spec("tiny")


def test_check_tier_can_be_limited_to_seeds(root, monkeypatch):
    for seed in (0, 1):
        write_result("tiny", "naive", "smoke", seed, {"test/smape": 10.0, "test/acc": 0.5})
    reran = []
    monkeypatch.setattr(leaderboard, "run_row",
                        lambda spec, row, tier, seed, **kw: reran.append(seed) or {"metrics": {"test/smape": 10.0}})
    leaderboard.check_tier("tiny", "smoke", seeds=[0])
    assert reran == [0]
