"""Tasks are listed without importing them, imported when used, and a missing extra is one line; the metadata
commands import no torch, Lightning or torchvision."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from zoo.errors import MissingExtraError
from zoo.registry import TASKS, Registry, _task_loader, summary_from_source, task_summary
from zoo.task import TaskSpec

HEAVY = ("torch", "lightning", "torchvision", "torchmetrics", "pandas")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["list"],
        ["list", "recipes", "--json"],
        ["list", "weights"],
        ["list", "boards"],
        ["info", "forecasting"],
        ["info", "stocks"],
        ["info", "rl"],
        ["info", "recsys"],
        ["config", "show", "forecasting", "--recipe", "moe_e8k2_m3-monthly"],
        ["config", "show", "recsys", "--recipe", "home_ml100k"],
        ["weights", "list"],
        ["weights", "verify"],
        ["leaderboard", "render", "--all", "--check"],
    ],
)
def test_metadata_commands_import_no_heavy_library(argv):
    code = (
        "import sys\nfrom zoo.cli import main\n"
        "try:\n    rc = main(%r)\nexcept SystemExit as e:\n    rc = e.code\n"
        "print('RESULT', rc, [m for m in %r if m in sys.modules])" % (argv, HEAVY)
    )
    proc = _run(code)
    result = proc.stdout.strip().splitlines()[-1]
    assert result == "RESULT 0 []", (result, proc.stderr[-2000:])


def test_list_reads_entry_point_names_without_importing_tasks():
    code = (
        "import sys\nfrom zoo.cli import main\nmain(['list', '--json'])\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith('zoo.tasks.')))"
    )
    proc = _run(code)
    data = json.loads(proc.stdout[: proc.stdout.rindex("LOADED")])
    assert {d["task"] for d in data} >= {"forecasting", "stocks", "rl", "recsys"}
    assert all(d["description"] for d in data)
    assert proc.stdout.strip().endswith("LOADED []")


def test_the_description_read_from_source_is_the_spec_description():
    for name in TASKS.names():
        assert summary_from_source(name) == TASKS.get(name).description == task_summary(name)


def test_a_missing_extra_is_one_line_exit_2():
    code = (
        "import sys\nsys.modules['gymnasium'] = None\nfrom zoo.cli import main\n"
        "sys.exit(main(['train', 'rl', '--recipe', 'pmoe-sac_k4_two-goal', '--smoke']))"
    )
    proc = _run(code)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ["zoo: error: task 'rl' needs the 'rl' extra: pip install 'moe-zoo[rl]' (module 'gymnasium' "
                     "is missing)"]


def test_a_task_whose_import_fails_names_its_extra():
    ep = EntryPoint(name="ghost", value="zoo_no_such_package.ghost:TASK", group="zoo.tasks")
    with pytest.raises(MissingExtraError, match=r"task 'ghost' needs the 'ghost' extra: pip install '.*\[ghost\]'"):
        _task_loader(ep)()


def test_other_tasks_work_when_one_extra_is_missing():
    code = (
        "import sys\nsys.modules['gymnasium'] = None\nfrom zoo.cli import main\n"
        "rc = main(['config', 'show', 'forecasting', '--recipe', 'moe_e8k2_m3-monthly', '--json'])\n"
        "print('RC', rc)"
    )
    proc = _run(code)
    assert proc.stdout.strip().endswith("RC 0"), proc.stderr


def test_registry_loads_a_lazy_entry_once_and_only_when_asked():
    calls = []
    spec = TaskSpec(name="x", description="d", config_cls=dict, build_datamodule=None,  # type: ignore[arg-type]
                    build_module=None)  # type: ignore[arg-type]

    def discover(r: Registry) -> None:
        r.register_lazy("x", lambda: calls.append(1) or spec)

    reg: Registry = Registry("task", discover)
    assert reg.names() == ["x"] and "x" in reg and not reg.is_loaded("x") and calls == []
    assert reg.get("x") is spec and reg.get("x") is spec and calls == [1]
