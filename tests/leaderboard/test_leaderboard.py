"""Leaderboards: spec → reproduce → results JSON → render Markdown (+ README summary) → render --check / check."""

import json
import math
import re

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
    """A scratch repository root holding leaderboards/ and a README with a summary block."""
    monkeypatch.setattr(leaderboard, "repo_root", lambda: tmp_path)
    (tmp_path / "leaderboards").mkdir()
    (tmp_path / "leaderboards" / "tiny.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp_path / "README.md").write_text("intro\n<!-- leaderboards -->\nold\n<!-- /leaderboards -->\noutro\n")
    return tmp_path


def write_result(board, row, tier, seed, metrics, **extra):
    record = {
        "board": board, "row": row, "tier": tier, "seed": seed, "metrics": metrics,
        "params_total": 1000, "params_active": 250, "wall_seconds": 2.0, **extra,
    }
    path = leaderboard.result_path(board, row, tier, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_first_run_dirs_takes_each_rows_lowest_seed_that_kept_the_file(root):
    runs = {seed: root / "runs" / f"s{seed}" for seed in (0, 1, 2)}
    for seed, run in runs.items():
        run.mkdir(parents=True)
        if seed > 0:
            (run / "scores.npz").write_bytes(b"x")
        write_result("tiny", "naive", "full", seed, {"test/smape": 1.0}, run_dir=str(run))
    write_result("tiny", "dense", "full", 0, {"test/smape": 1.0}, run_dir=str(root / "gone"))
    assert leaderboard.first_run_dirs("tiny", "full", "scores.npz") == {"naive": runs[1]}
    assert leaderboard.first_run_dirs("tiny", "smoke", "scores.npz") == {}


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
    assert readme.startswith("intro\n<!-- leaderboards -->\n| board |") and readme.endswith("|\n<!-- /leaderboards -->\noutro\n")
    assert "old" not in readme and "| [tiny](leaderboards/tiny.md) | forecasting | `naive` 11.00 ± 1.41 (2) sMAPE ↓ |" in readme


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
    leaderboard.reproduce("tiny", "smoke", seeds=[1], force=True)
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
                        lambda spec, row, tier, seed, **kw: reran.append(seed) or {"metrics": {"test/smape": 10.0,
                                                                                                "test/acc": 0.5}})
    leaderboard.check_tier("tiny", "smoke", seeds=[0])
    assert reran == [0]


def write_spec(root, name, **changes):
    (root / "leaderboards" / f"{name}.yaml").write_text(yaml.safe_dump({**SPEC, **changes}))


PAIRED_ROWS = [{"name": "moe", "recipe": "moe_e8k2_m3-monthly"}, {"name": "dense", "recipe": "dense_m3-monthly"},
               {"name": "naive", "recipe": "snaive_m3-monthly", "seeds": [0]}]


def test_summary_table_best_row_and_moe_vs_dense(root):
    write_spec(root, "tiny", rows=PAIRED_ROWS, summary={"moe": "moe", "dense": "dense"})
    write_spec(root, "acc", rows=PAIRED_ROWS, summary={"metric": "test/acc", "moe": "moe", "dense": "dense"})
    for board in ("tiny", "acc"):
        write_result(board, "moe", "full", 0, {"test/smape": 14.0, "test/acc": 0.8})
        write_result(board, "moe", "full", 1, {"test/smape": 15.0, "test/acc": 0.6})
        write_result(board, "dense", "full", 0, {"test/smape": 15.0, "test/acc": 0.65})
        write_result(board, "naive", "full", 0, {"test/smape": 13.0, "test/acc": 0.5})
    table = leaderboard.summary_table(["tiny", "acc"])
    # sMAPE: lower is better, so the one-run naive row wins; acc (higher): the moe row's mean 0.7 wins
    assert "| [tiny](leaderboards/tiny.md) | forecasting | `naive` 13.00 (1) sMAPE ↓ | `moe` 14.50 vs `dense` 15.00 sMAPE ↓ | — |" in table
    assert "| [acc](leaderboards/acc.md) | forecasting | `moe` 0.700 ± 0.141 (2) acc ↑ | `moe` 0.700 vs `dense` 0.650 acc ↑ | — |" in table


def test_summary_table_says_when_results_are_missing(root):
    write_spec(root, "tiny", rows=PAIRED_ROWS, summary={"moe": "moe", "dense": "dense"})
    write_result("tiny", "naive", "smoke", 0, {"test/smape": 13.0})
    assert "| [tiny](leaderboards/tiny.md) | forecasting | no `full` results yet | — | — |" in leaderboard.summary_table(["tiny"])
    write_result("tiny", "dense", "full", 0, {"test/smape": 15.0})
    row = leaderboard.summary_table(["tiny"]).splitlines()[-1]
    assert row.endswith("| `dense` 15.00 (1) sMAPE ↓ | `moe` — vs `dense` 15.00 sMAPE ↓ | — |")


def test_summary_spec_is_validated(root):
    write_spec(root, "tiny", summary={"moe": "nope", "dense": "dense"})
    with pytest.raises(ZooValueError, match="no row 'nope'"):
        leaderboard.load_spec("tiny")
    write_spec(root, "tiny", summary={"moe": "naive"})
    with pytest.raises(ZooValueError, match="both a moe row and its dense twin"):
        leaderboard.load_spec("tiny")
    write_spec(root, "tiny", summary={"metric": "test/mase"})
    with pytest.raises(ZooValueError, match="summary.metric"):
        leaderboard.load_spec("tiny")


def fake_runs(monkeypatch, metrics_by_row):
    """Replace training by records whose metrics come from ``metrics_by_row``; returns the progress flags seen."""
    seen = []

    def run_row(spec, row, tier, seed, *, progress=False):
        seen.append(progress)
        return {"board": spec.name, "row": row.name, "tier": tier, "seed": seed, "metrics": metrics_by_row[row.name],
                "params_total": 10, "params_active": 5, "wall_seconds": 1.0}

    monkeypatch.setattr(leaderboard, "run_row", run_row)
    return seen


def test_compare_rerun_with_committed_means_within_tolerance(root, monkeypatch):
    write_result("tiny", "naive", "smoke", 0, {"test/smape": 10.0, "test/acc": 0.5})
    write_result("tiny", "naive", "smoke", 1, {"test/smape": 12.0, "test/acc": 0.5})
    write_result("tiny", "naive", "smoke", 2, {"test/smape": 99.0, "test/acc": 0.5})  # not re-run: left out
    before = leaderboard.load_results("tiny", "smoke")
    fake_runs(monkeypatch, {"naive": {"test/smape": 11.05, "test/acc": 0.6}, "dense": {"test/smape": 20.0}})
    written = leaderboard.reproduce("tiny", "smoke", seeds=[0, 1])
    rows = leaderboard.compare("tiny", "smoke", before, written)
    got = {(r.row, r.metric.key): (r.rerun, r.committed, r.within) for r in rows}
    # smape: committed mean 11 over seeds 0, 1; |11.05 - 11| <= 0.1. acc: |0.6 - 0.5| > 0. dense: nothing committed
    assert got[("naive", "test/smape")] == ((11.05, 0.0, 2), (11.0, 2 ** 0.5, 2), True)
    assert got[("naive", "test/acc")][2] is False
    assert got[("dense", "test/smape")] == ((20.0, 0.0, 2), None, None)
    assert got[("dense", "test/acc")] == (None, None, None)

    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(leaderboard.comparison_table("tiny", "smoke", rows))
    text = console.export_text()
    assert "tiny smoke: re-run vs committed" in text
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]
    assert cells == [
        ["naive", "sMAPE", "11.05 ± 0.00 (2)", "11.00 (2)", "+0.05", "0.1", "yes"],
        ["naive", "acc", "0.600 ± 0.000 (2)", "0.500 (2)", "+0.1", "0", "no"],
        ["dense", "sMAPE", "20.00 ± 0.00 (2)", "none", "—", "0.1", "—"],
        ["dense", "acc", "—", "none", "—", "0", "—"],
    ]


def test_reproduce_shows_one_overall_progress(root, monkeypatch, capsys):
    seen = fake_runs(monkeypatch, {"naive": {"test/smape": 1.0}, "dense": {"test/smape": 2.0}})
    written = leaderboard.reproduce("tiny", "smoke", progress=True)
    assert len(written) == 4 and seen == [False] * 4, "the runs' own bars stay off"
    out, err = capsys.readouterr()
    bars = [line for line in err.splitlines() if line.strip()]
    assert out == "" and len(bars) == 1
    assert bars[0].startswith("tiny smoke ") and "4/4" in bars[0] and "0 running, 0 failed" in bars[0]


# ------------------------------------------------------------------------------ strict check and malformed files


def zoo_cli(capsys, *argv):
    """``zoo ARGV``: (exit code, stdout, the stderr lines)."""
    from zoo.cli import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


def rerun_with(monkeypatch, fresh):
    """Make every rerun of ``check`` return ``fresh`` as its metrics."""
    monkeypatch.setattr(leaderboard, "run_row", lambda spec, row, tier, seed, **kw: {"metrics": dict(fresh)})


@pytest.mark.parametrize(("fresh", "problem"), [
    ({"test/smape": 10.0}, "naive s0 test/acc: 0.5 → missing from the rerun"),
    ({"test/smape": float("nan"), "test/acc": 0.5}, "naive s0 test/smape: 10 → nan (not a finite number)"),
    ({"test/smape": float("inf"), "test/acc": 0.5}, "naive s0 test/smape: 10 → inf (not a finite number)"),
    ({"test/smape": 10.0, "test/acc": "0.5"}, "naive s0 test/acc: 0.5 → '0.5' (not a finite number)"),
])
def test_check_fails_on_a_missing_or_non_finite_rerun_metric(root, monkeypatch, capsys, fresh, problem):
    write_result("tiny", "naive", "smoke", 0, {"test/smape": 10.0, "test/acc": 0.5})
    rerun_with(monkeypatch, fresh)
    rc, out, err = zoo_cli(capsys, "leaderboard", "check", "tiny")
    assert rc == 5 and out == "" and len(err) == 1, err
    assert err[0].startswith("zoo: error: tiny smoke: ") and problem in err[0]


def test_check_lists_every_problem_on_one_line(root, monkeypatch, capsys):
    write_result("tiny", "naive", "smoke", 0, {"test/smape": 10.0, "test/acc": 0.5})
    write_result("tiny", "dense", "smoke", 0, {"test/smape": 10.0, "test/acc": 0.5})
    rerun_with(monkeypatch, {"test/smape": float("nan")})
    rc, _, err = zoo_cli(capsys, "leaderboard", "check", "tiny")
    assert rc == 5 and len(err) == 1 and err[0].count("; ") == 3, err


def test_check_fails_on_a_metric_no_committed_run_has(root, monkeypatch, capsys):
    write_result("tiny", "naive", "smoke", 0, {"test/smape": 10.0})
    rerun_with(monkeypatch, {"test/smape": 10.0})
    rc, _, err = zoo_cli(capsys, "leaderboard", "check", "tiny")
    assert rc == 5 and len(err) == 1 and "test/acc: in no committed run" in err[0], err


TIMING = {"key": "online/update_seconds", "display": "update s", "format": "{:.2f}", "kind": "timing"}


def test_timing_metric_is_reported_never_checked(root, monkeypatch, capsys):
    write_spec(root, "tiny", metrics=[*SPEC["metrics"], TIMING])
    write_result("tiny", "naive", "smoke", 0, {"test/smape": 10.0, "test/acc": 0.5, "online/update_seconds": 1.0})
    rerun_with(monkeypatch, {"test/smape": 10.0, "test/acc": 0.5, "online/update_seconds": 900.0})
    rc, out, err = zoo_cli(capsys, "leaderboard", "check", "tiny")
    assert (rc, err) == (0, [])
    assert out.splitlines() == ["tiny smoke: within tolerance",
                                "  naive s0 online/update_seconds: 1 → 900 (timing, not checked)"]
    rerun_with(monkeypatch, {"test/smape": 10.0, "test/acc": 0.5})
    assert zoo_cli(capsys, "leaderboard", "check", "tiny")[0] == 0, "a timing is not required either"
    timing = leaderboard.RerunRow("naive", leaderboard.load_spec("tiny").metrics[-1], (900.0, 0.0, 1), (1.0, 0.0, 1))
    assert timing.within is None


@pytest.mark.parametrize(("metric", "message"), [
    ({**SPEC["metrics"][0], "tolerance": float("inf")}, "declared `kind: timing`"),
    ({**SPEC["metrics"][0], "tolerance": "0.1"}, "not a finite number"),
    ({**TIMING, "tolerance": 1.0}, "is a timing (reported, never checked); remove its tolerance"),
    ({**TIMING, "kind": "clock"}, "online/update_seconds.kind='clock' is not allowed"),
])
def test_metric_kind_and_tolerance_are_validated(root, metric, message):
    write_spec(root, "tiny", metrics=[metric])
    with pytest.raises(ZooValueError, match=re.escape(message)):
        leaderboard.load_spec("tiny")


def test_committed_boards_declare_timings_instead_of_infinite_tolerances():
    metrics = [m for name in leaderboard.board_names() for m in leaderboard.load_spec(name).metrics]
    assert all(math.isfinite(m.tolerance) for m in metrics)
    assert sorted(m.key for m in metrics if not m.checked) == [
        "fit/seconds", "fit/seconds_to_target", "online/update_seconds", "test/gen_tok_s", "test/gen_tok_s_nocache", "test/images_per_s", "test/render_ms",
        "test/render_rays_per_s", "test/train_rays_per_s", "test/train_s", "test/train_s_to_target", "test/train_tok_s"]


MALFORMED = {
    "list": (b"[1, 2]", "expected a JSON object, found a list"),
    "no row": (json.dumps({"board": "tiny", "tier": "smoke", "seed": 0, "metrics": {}}).encode(), "missing row"),
    "string metric": (None, "metric 'test/smape' is '10.0', not a number"),
    "not UTF-8": (b'{"board": "tiny\xff"}', "not UTF-8 text (byte 15"),
    "not JSON": (b"{", "not valid JSON"),
    "misfiled": (None, "holds row 'dense' seed 0: move it to dense/smoke-s0.json"),
}


def write_malformed(kind):
    """A results file of the ``kind`` in :data:`MALFORMED`; returns its path."""
    content, _ = MALFORMED[kind]
    write_result("tiny", "naive", "smoke", 0, {"test/smape": "10.0" if kind == "string metric" else 10.0})
    path = leaderboard.result_path("tiny", "naive", "smoke", 0)
    if kind == "misfiled":
        content = path.read_bytes().replace(b'"row": "naive"', b'"row": "dense"')
    if content is not None:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("command", [["render", "tiny", "--check"], ["check", "tiny"], ["reproduce", "tiny"]])
@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_results_file_is_one_line_naming_it(root, monkeypatch, capsys, kind, command):
    path = write_malformed(kind)
    monkeypatch.setattr(leaderboard, "run_row", lambda *a, **k: pytest.fail("nothing may run on malformed results"))
    rc, out, err = zoo_cli(capsys, "leaderboard", *command)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"zoo: error: {path}: ") and MALFORMED[kind][1] in err[0], err[0]
