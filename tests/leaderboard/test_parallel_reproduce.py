"""``zoo leaderboard reproduce --jobs N``: runs in spawned worker processes give the results of the in-process path,
a run that raises is reported while the others finish, ``--skip-existing`` leaves out runs whose results hold the
current config hash. A tiny forecasting board (seasonal-naive and a dense smoke run, well under a second each) in
a scratch repository root keeps the spawned runs cheap; most of their time is the workers' imports."""

import json

import pytest
import torch
import yaml

from zoo import leaderboard
from zoo.cli import _parse, main

SPEC = {
    "task": "forecasting",
    "title": "Tiny board",
    "protocol": "A protocol line.",
    "metrics": [
        {"key": "test/smape", "display": "sMAPE", "format": "{:.2f}", "better": "lower", "tolerance": 0.1},
        {"key": "test/mase", "display": "MASE", "format": "{:.3f}", "better": "lower", "tolerance": 0.01},
    ],
    "seeds": [0, 1],
    "rows": [
        {"name": "naive", "recipe": "snaive_m3-monthly", "seeds": [0]},
        {"name": "dense", "recipe": "dense_m3-monthly"},
    ],
}
BAD_ROW = {"name": "bad", "recipe": "dense_m3-monthly", "config": {"data.no_such_key": 1}, "seeds": [0]}
# Fields that say when and how long a run took, or where it ran: everything else must match across --jobs.
VOLATILE = {"wall_seconds", "run_dir", "time"}


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A scratch repository root holding leaderboards/tiny.yaml; run dirs and logs go under tmp_path/runs."""
    monkeypatch.setattr(leaderboard, "repo_root", lambda: tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "leaderboards").mkdir()
    write_spec(tmp_path, SPEC)
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)  # `--threads` sets this process's threads on the in-process path


def write_spec(root, spec):
    (root / "leaderboards" / "tiny.yaml").write_text(yaml.safe_dump(spec))


def zoo(capsys, *argv):
    """``zoo ARGV``: (exit code, stdout, stderr)."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def records(root):
    """The smoke results on disk, by (row, seed)."""
    out = {}
    for path in sorted((root / "leaderboards" / "results" / "tiny").glob("*/smoke-s*.json")):
        record = json.loads(path.read_text())
        out[record["row"], record["seed"]] = record
    return out


def comparable(record, spec):
    """A results record without its volatile fields and timing metrics."""
    timings = {m.key for m in spec.metrics if not m.checked}
    kept = {k: v for k, v in record.items() if k not in VOLATILE}
    kept["metrics"] = {k: v for k, v in record["metrics"].items() if k not in timings}
    return kept


def no_partial_files(root):
    return not [p for p in (root / "leaderboards").rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_two_jobs_write_the_results_of_one(root, capsys):
    rc, _, err = zoo(capsys, "leaderboard", "reproduce", "tiny", "--threads", "1", "--no-progress")
    assert rc == 0, err
    sequential = records(root)
    rc, out, err = zoo(capsys, "leaderboard", "reproduce", "--jobs", "2", "tiny", "--no-progress")
    assert rc == 0, err
    parallel = records(root)
    assert sorted(parallel) == [("dense", 0), ("dense", 1), ("naive", 0)]
    spec = leaderboard.load_spec("tiny")
    for key, record in parallel.items():
        assert record["threads"] == 1 and record["command"][:4] == ["zoo", "leaderboard", "reproduce", "tiny"]
        assert record["run_dir"] != sequential[key]["run_dir"]
        assert comparable(record, spec) == comparable(sequential[key], spec), key
    assert "wrote 3 results" in err and "re-run vs committed" in out
    assert no_partial_files(root)
    logs = sorted(p.relative_to(root).as_posix() for p in (root / "runs" / "leaderboard").rglob("*.log"))
    assert logs == ["runs/leaderboard/tiny/dense/smoke-s0.log", "runs/leaderboard/tiny/dense/smoke-s1.log",
                    "runs/leaderboard/tiny/naive/smoke-s0.log"]


def test_a_failing_run_is_reported_and_the_others_finish(root, capsys):
    write_spec(root, {**SPEC, "rows": [*SPEC["rows"], BAD_ROW]})
    rc, out, err = zoo(capsys, "leaderboard", "reproduce", "tiny", "--jobs", "2", "--seeds", "0")
    assert rc == 2, err  # the failure's own code: a bad config value
    assert sorted(records(root)) == [("dense", 0), ("naive", 0)]
    log = root / "runs" / "leaderboard" / "tiny" / "bad" / "smoke-s0.log"
    reported = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert len(reported) == 1 and reported[0].startswith("failed: tiny smoke bad s0: ZooValueError: ")
    assert "no_such_key" in reported[0] and f"(log: {log.relative_to(root)})" in reported[0]
    assert "Traceback" in log.read_text() and "no_such_key" in log.read_text()
    last = err.strip().splitlines()[-1]
    assert last.startswith("zoo: error: tiny smoke: 1 of 3 runs failed: bad s0: ZooValueError")
    assert "wrote 2 results" in err and "naive" in out and "dense" in out
    bars = [line for line in err.splitlines() if "running" in line]
    assert bars and "3/3" in bars[-1] and "0 running, 1 failed" in bars[-1]
    assert no_partial_files(root)


def test_a_bug_in_one_run_exits_1_in_process(root, capsys, monkeypatch):
    real = leaderboard.run_row

    def run_row(spec, row, tier, seed, **kw):
        if row.name == "naive":
            raise RuntimeError("boom\nsecond line")
        return real(spec, row, tier, seed, **kw)

    monkeypatch.setattr(leaderboard, "run_row", run_row)
    rc, _, err = zoo(capsys, "leaderboard", "reproduce", "tiny", "--threads", "1", "--no-progress")
    assert rc == 1 and sorted(records(root)) == [("dense", 0), ("dense", 1)]
    assert "failed: tiny smoke naive s0: RuntimeError: boom (log: runs/leaderboard/tiny/naive/smoke-s0.log)" in err
    assert "second line" not in err.strip().splitlines()[-1]


def test_skip_existing_keeps_results_of_the_same_config(root, capsys, monkeypatch):
    torch.set_num_threads(1)
    leaderboard.reproduce("tiny", "smoke", rows=["naive"])
    path = leaderboard.result_path("tiny", "naive", "smoke", 0)
    first = path.read_bytes()
    ran = []
    real = leaderboard.run_row
    monkeypatch.setattr(leaderboard, "run_row", lambda spec, row, *a, **k: ran.append(row.name) or real(spec, row, *a, **k))

    assert leaderboard.reproduce("tiny", "smoke", rows=["naive"], skip_existing=True) == []
    assert ran == [] and path.read_bytes() == first
    assert "tiny smoke: skipped 1 of 1 runs whose results exist with the same config hash" in capsys.readouterr().err

    assert leaderboard.reproduce("tiny", "smoke", rows=["naive"]) == [path], "without the flag every run is redone"
    assert ran == ["naive"] and path.read_bytes() != first  # a new run dir and time

    ran.clear()  # another config for the row: its results are stale, so the run is redone
    write_spec(root, {**SPEC, "rows": [{**SPEC["rows"][0], "config": {"data.horizon": 6}}, SPEC["rows"][1]]})
    assert leaderboard.reproduce("tiny", "smoke", rows=["naive"], skip_existing=True) == [path]
    assert ran == ["naive"]
    assert json.loads(path.read_text())["config_sha256"] != json.loads(first)["config_sha256"]


def test_skip_existing_refuses_a_malformed_results_file(root):
    path = leaderboard.result_path("tiny", "naive", "smoke", 0)
    path.parent.mkdir(parents=True)
    path.write_text("{")
    with pytest.raises(leaderboard.ZooValueError, match="not valid JSON"):
        leaderboard.reproduce("tiny", "smoke", rows=["naive"], skip_existing=True)


@pytest.mark.parametrize("argv", [
    ["reproduce", "tiny", "--jobs", "2", "--skip-existing", "--threads", "3", "--tier", "full"],
    ["reproduce", "--jobs", "2", "--skip-existing", "--threads", "3", "--tier", "full", "tiny"],
    ["reproduce", "--jobs", "2", "tiny", "--tier", "full", "--skip-existing", "--threads", "3"],
])
def test_options_go_before_or_after_the_board(argv):
    args = _parse(["leaderboard", *argv])
    assert (args.boards, args.jobs, args.skip_existing, args.threads, args.tier) == (["tiny"], 2, True, 3, "full")


def test_jobs_and_skip_existing_are_reproduce_options(root, capsys):
    rc, _, err = zoo(capsys, "leaderboard", "check", "tiny", "--jobs", "2")
    assert rc == 2 and "--jobs" in err and "only with reproduce" in err
    rc, _, err = zoo(capsys, "leaderboard", "reproduce", "tiny", "--jobs", "0")
    assert rc == 2 and "--jobs=0" in err
