"""``zoo leaderboard reproduce --jobs N``: runs in worker processes give the results of the in-process path, a run
that raises is reported while the others finish, runs whose results hold the current config hash are skipped
unless ``--force``. A tiny forecasting board (seasonal-naive and a dense smoke run, well under a second each) in a
scratch repository root keeps the worker runs cheap. The Ray executor (a local instance of 2 CPUs) runs the same
board end to end, retries a failed run once and reports it."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from zoo import executors, leaderboard
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
_real_run_job = executors.run_job
BAD_ROW = {"name": "bad", "recipe": "dense_m3-monthly", "config": {"data.no_such_key": 1}, "seeds": [0]}
# Fields that say when and how long a run took, or where it ran: everything else must match across --jobs.
VOLATILE = {"wall_seconds", "run_dir", "time"}
WALL_CLOCK_METRICS = {"fit/seconds", "fit/seconds_to_target"}


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
    timings = {m.key for m in spec.metrics if not m.checked} | WALL_CLOCK_METRICS
    kept = {k: v for k, v in record.items() if k not in VOLATILE}
    kept["metrics"] = {k: v for k, v in record["metrics"].items() if k not in timings}
    return kept


def no_partial_files(root):
    return not [p for p in (root / "leaderboards").rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_two_jobs_write_the_results_of_one(root, capsys):
    rc, _, err = zoo(capsys, "leaderboard", "reproduce", "tiny", "--threads", "1", "--no-progress")
    assert rc == 0, err
    sequential = records(root)
    rc, out, err = zoo(capsys, "leaderboard", "reproduce", "--jobs", "2", "tiny", "--no-progress", "--force")
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
    assert rc == 2, err  # the failure's own code: a bad config value (not retried: it would fail again)
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


def test_runs_with_current_results_are_skipped_unless_forced(root, capsys, monkeypatch):
    torch.set_num_threads(1)
    leaderboard.reproduce("tiny", "smoke", rows=["naive"])
    path = leaderboard.result_path("tiny", "naive", "smoke", 0)
    first = path.read_bytes()
    ran = []
    real = leaderboard.run_row
    monkeypatch.setattr(leaderboard, "run_row", lambda spec, row, *a, **k: ran.append(row.name) or real(spec, row, *a, **k))

    assert leaderboard.reproduce("tiny", "smoke", rows=["naive"]) == []
    assert ran == [] and path.read_bytes() == first
    err = capsys.readouterr().err
    assert "tiny smoke: skipped 1 of 1 runs whose results exist with the same config hash (--force" in err

    assert leaderboard.reproduce("tiny", "smoke", rows=["naive"], force=True) == [path]
    assert ran == ["naive"] and path.read_bytes() != first  # a new run dir and time

    ran.clear()  # another config for the row: its results are stale, so the run is redone
    write_spec(root, {**SPEC, "rows": [{**SPEC["rows"][0], "config": {"data.horizon": 6}}, SPEC["rows"][1]]})
    assert leaderboard.reproduce("tiny", "smoke", rows=["naive"]) == [path]
    assert ran == ["naive"]
    assert json.loads(path.read_text())["config_sha256"] != json.loads(first)["config_sha256"]


def test_a_malformed_results_file_is_refused_before_any_run(root):
    path = leaderboard.result_path("tiny", "naive", "smoke", 0)
    path.parent.mkdir(parents=True)
    path.write_text("{")
    with pytest.raises(leaderboard.ZooValueError, match="not valid JSON"):
        leaderboard.reproduce("tiny", "smoke", rows=["naive"])


def test_a_worker_that_dies_is_reported_and_the_others_finish(root, capsys, monkeypatch):
    """A worker killed mid-run (out of memory, a signal) never returns: its run is a failure, the others finish."""
    write_spec(root, {**SPEC, "rows": [*SPEC["rows"], {**BAD_ROW, "name": "killed", "config": {}}]})
    monkeypatch.setattr(executors, "_work", _die_on_killed_row)
    rc, _, err = zoo(capsys, "leaderboard", "reproduce", "tiny", "--jobs", "2", "--seeds", "0", "--no-progress")
    assert rc == 1, err
    assert sorted(records(root)) == [("dense", 0), ("naive", 0)]
    reported = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert len(reported) == 1, err
    assert reported[0].startswith("failed: tiny smoke killed s0: RuntimeError: the worker process died (exit code 9)")


def _die_on_killed_row(conn):
    """A worker body (imported by the worker from this module) that dies when it is sent the ``killed`` row."""
    import os

    while (job := conn.recv()) is not None:
        if job.row.name == "killed":
            os._exit(9)
        conn.send(executors.run_job(job))


@pytest.mark.parametrize("argv", [
    ["reproduce", "tiny", "--jobs", "2", "--force", "--threads", "3", "--tier", "full"],
    ["reproduce", "--jobs", "2", "--force", "--threads", "3", "--tier", "full", "tiny"],
    ["reproduce", "--jobs", "2", "tiny", "--tier", "full", "--force", "--threads", "3"],
    ["reproduce", "--executor", "ray", "--address", "auto", "--jobs", "2", "--force", "--threads", "3", "--tier",
     "full", "tiny"],
    ["reproduce", "tiny", "--executor", "ray", "--jobs", "2", "--tier", "full", "--address", "auto", "--force",
     "--threads", "3"],
])
def test_options_go_before_or_after_the_board(argv):
    args = _parse(["leaderboard", *argv])
    assert (args.boards, args.jobs, args.force, args.threads, args.tier) == (["tiny"], 2, True, 3, "full")
    assert args.executor == ("ray" if "ray" in argv else None)
    assert args.address == ("auto" if "auto" in argv else None)


@pytest.mark.parametrize("argv,flag", [
    (["check", "tiny", "--jobs", "2"], "--jobs"),
    (["check", "tiny", "--force"], "--force"),
    (["check", "--executor", "ray", "tiny"], "--executor"),
    (["render", "tiny", "--address", "auto"], "--address"),
])
def test_reproduce_options_are_refused_elsewhere(root, capsys, argv, flag):
    rc, _, err = zoo(capsys, "leaderboard", *argv)
    assert rc == 2 and flag in err and "only with reproduce" in err


def test_bad_reproduce_options_are_one_line(root, capsys):
    rc, _, err = zoo(capsys, "leaderboard", "reproduce", "tiny", "--jobs", "0")
    assert rc == 2 and "--jobs=0" in err
    rc, _, err = zoo(capsys, "leaderboard", "reproduce", "tiny", "--address", "auto")
    assert rc == 2 and "--address" in err and "only with --executor ray" in err
    assert len(err.strip().splitlines()) == 1


def test_board_resources_are_checked(root):
    write_spec(root, {**SPEC, "resources": {"cpus": 2, "gpus": 0.5},
                      "rows": [{**SPEC["rows"][0], "resources": {"gpus": 1}}, SPEC["rows"][1]]})
    spec = leaderboard.load_spec("tiny")
    assert leaderboard._resources(spec, spec.rows[0], 1) == {"cpus": 2.0, "gpus": 1.0}
    assert leaderboard._resources(spec, spec.rows[1], 1) == {"cpus": 2.0, "gpus": 0.5}
    for bad, match in (({"tpus": 1}, "unknown resource 'tpus'"), ({"cpus": -1}, "cpus must be a number >= 0")):
        write_spec(root, {**SPEC, "resources": bad})
        with pytest.raises(leaderboard.ZooValueError, match=match):
            leaderboard.load_spec("tiny")


def test_the_ray_executor_needs_ray(root, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # an import of it raises ImportError
    rc, _, err = zoo(capsys, "leaderboard", "reproduce", "tiny", "--executor", "ray", "--no-progress")
    assert rc == 2 and err.strip() == "zoo: error: --executor ray needs Ray: pip install 'moe-zoo[cluster]'"
    assert not (root / "leaderboards" / "results").exists()


# ----------------------------------------------------------------------------------------------- Ray executor


def test_ray_writes_the_results_of_one_process(root, capsys):
    """The CLI starts a local Ray instance (2 CPUs), runs the board's 3 jobs as Ray tasks and shuts it down."""
    ray = pytest.importorskip("ray")
    rc, _, err = zoo(capsys, "leaderboard", "reproduce", "tiny", "--threads", "1", "--no-progress")
    assert rc == 0, err
    sequential = records(root)
    rc, _, err = zoo(capsys, "leaderboard", "reproduce", "tiny", "--executor", "ray", "--jobs", "2", "--force",
                     "--no-progress")
    assert rc == 0, err
    assert not ray.is_initialized(), "the local instance it started is shut down"
    spec = leaderboard.load_spec("tiny")
    parallel = records(root)
    assert sorted(parallel) == sorted(sequential)
    for key, record in parallel.items():
        assert record["threads"] == 1 and record["run_dir"] != sequential[key]["run_dir"]
        assert comparable(record, spec) == comparable(sequential[key], spec), key
    assert no_partial_files(root)


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the retry tests; this module's functions travel to its workers by value."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


def _flaky(job):
    """Fails the first attempt of each run (a marker file per run counts attempts), then runs it."""
    marker = Path(job.cwd) / f"attempts-{job.name}"
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if attempts == 1:
        return leaderboard.RunFailure(job.row.name, job.seed, "RuntimeError: a flaky node", 1, job.log, "log text")
    return _real_run_job(job)


def _broken(job):
    marker = Path(job.cwd) / f"attempts-{job.name}"
    marker.write_text(str(int(marker.read_text()) + 1 if marker.exists() else 1))
    return leaderboard.RunFailure(job.row.name, job.seed, "RuntimeError: always", 1, job.log, "the worker's log")


def test_ray_retries_a_failed_run_once(root, capsys, monkeypatch, ray_instance):
    monkeypatch.setattr(executors, "run_job", _flaky)
    written = leaderboard.reproduce("tiny", "smoke", seeds=[0], executor="ray")
    assert len(written) == 2 and sorted(records(root)) == [("dense", 0), ("naive", 0)]
    assert (root / "attempts-naive s0").read_text() == "2" and (root / "attempts-dense s0").read_text() == "2"
    err = capsys.readouterr().err
    assert "retrying tiny smoke naive s0: RuntimeError: a flaky node" in err
    assert ray_instance.is_initialized(), "an instance the caller started is left running"


def test_ray_reports_a_run_that_fails_twice_and_writes_its_log(root, capsys, monkeypatch, ray_instance):
    monkeypatch.setattr(executors, "run_job", _broken)
    with pytest.raises(leaderboard.RunsFailedError, match="2 of 2 runs failed") as info:
        leaderboard.reproduce("tiny", "smoke", seeds=[0], executor="ray")
    assert info.value.exit_code == 1 and info.value.written == []
    assert (root / "attempts-naive s0").read_text() == "2"
    log = root / "runs" / "leaderboard" / "tiny" / "naive" / "smoke-s0.log"
    assert log.read_text() == "the worker's log", "the log's tail comes back from the worker"
    assert not (root / "leaderboards" / "results").exists()


def test_ctrl_c_stops_the_workers_and_writes_nothing_half(root):
    """SIGINT to ``zoo leaderboard reproduce --jobs 2`` while long runs go on: exit 130 within seconds, no worker
    left, no partial results file."""
    import signal
    import subprocess
    import time

    psutil = pytest.importorskip("psutil")
    # the full tier: the smoke tier's recipe overrides would cut the epochs back to 2
    slow = {"name": "slow", "recipe": "dense_m3-monthly", "config": {"trainer.max_epochs": 500, "data.max_series": 60},
            "seeds": [0, 1, 2]}
    write_spec(root, {**SPEC, "rows": [slow]})
    child = ("import sys; from pathlib import Path; from zoo import leaderboard; from zoo.cli import main; "
             "leaderboard.repo_root = lambda: Path(sys.argv[1]); sys.exit(main(sys.argv[2:]))")
    proc = subprocess.Popen([sys.executable, "-c", child, str(root), "leaderboard", "reproduce", "tiny", "--jobs",
                             "2", "--tier", "full", "--no-progress"], cwd=root, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    logs = root / "runs" / "leaderboard" / "tiny" / "slow"
    deadline = time.monotonic() + 180  # generous: a loaded machine starts workers slowly
    while len(list(logs.glob("*.log"))) < 2 and time.monotonic() < deadline:  # both workers are running
        time.sleep(0.2)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)]
    assert len(list(logs.glob("*.log"))) == 2, "two runs started"
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "zoo: interrupted" in err, err
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE], "workers are gone"
    assert not (root / "leaderboards" / "results").exists() and no_partial_files(root)


def test_the_final_error_names_the_first_three_failures():
    failures = [leaderboard.RunFailure(f"r{i}", 0, "ValueError: x", 1) for i in range(5)]
    err = leaderboard.RunsFailedError("b", "full", failures, 9, [])
    assert str(err) == ("b full: 5 of 9 runs failed: r0 s0: ValueError: x; r1 s0: ValueError: x; r2 s0: ValueError: x;"
                        " and 2 more (stderr above lists each)")


def test_a_run_may_start_processes_of_its_own(root, capsys):
    """Statistical baselines fit their series in a process pool: inside a worker too."""
    write_spec(root, {**SPEC, "rows": [{"name": "theta", "recipe": "theta_m3-monthly", "seeds": [0]}]})
    rc, _, err = zoo(capsys, "leaderboard", "reproduce", "tiny", "--jobs", "2", "--no-progress")
    assert rc == 0, err
    assert sorted(records(root)) == [("theta", 0)]


def test_workers_import_the_tasks_builders_once_not_its_predict():
    imports = leaderboard._worker_imports("forecasting")
    assert imports[:3] == ["torch", "lightning", "zoo.task"]
    assert "zoo.tasks.forecasting.builders" in imports
    assert not [m for m in imports if m.endswith(".predict")]


def _default_sigint():
    """In the child before exec: Ctrl-C's default action, even when this test runs in the background, where the
    shell started it with SIGINT ignored and children would inherit that (Python then never raises
    KeyboardInterrupt)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
