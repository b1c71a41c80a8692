"""``zoo predict TASK``: the parser is made from the task's declared INPUT and options, which may come in any
order, and ``--help`` shows only that task's options."""

from __future__ import annotations

import itertools

import pytest

from zoo import cli
from zoo.registry import TASKS
from zoo.task import PredictOption, TaskSpec, number_list

LIVE_TASKS = ("forecasting", "stocks", "rl", "recsys", "graph", "audio")

# One example value per option type, so every declared option can be given on the command line.
_EXAMPLE = {int: "3", float: "80", str: "x"}


def _example_args(spec: TaskSpec) -> list[list[str]]:
    """Groups of tokens (an option with its values, or INPUT) that a user could type in any order."""
    groups = [["--weights", f"{spec.name}/some.weights"], ["--out", "out.csv"]]
    for option in spec.predict_options:
        if option.flag_only:
            groups.append([f"--{option.flag}"])
            continue
        value = str(option.choices[0]) if option.choices else _EXAMPLE.get(option.type, "x")
        if option.metavar == "PNG":
            value = "plot.png"
        if option.type is number_list:
            value = "80,95"
        groups.append([f"--{option.flag}", value])
    return groups


def _parse(argv: list[str]):
    return cli._parse(argv)


@pytest.mark.parametrize("task", LIVE_TASKS)
def test_every_task_declares_its_predict_contract(task):
    spec = TASKS.get(task)
    assert spec.predict is not None
    assert spec.predict_input is None or spec.predict_input.strip()
    for option in spec.predict_options:
        assert option.flag not in ("weights", "out", "json", "verbose", "threads"), option.flag
        assert option.help.strip(), option.flag


@pytest.mark.parametrize("task", LIVE_TASKS)
def test_options_and_input_parse_the_same_in_every_order(task):
    spec = TASKS.get(task)
    groups = _example_args(spec)
    if spec.predict_input is not None:
        groups.append(["my_input.csv"])
    expected = None
    # a sample of the orders of the groups, with the task name before, among or after the options (it must only
    # come before INPUT: positionals keep their order)
    orders = list(itertools.permutations(range(len(groups))))[:: max(1, len(groups))]
    for order in orders:
        ordered = [groups[i] for i in order]
        for where in sorted({0, len(ordered) // 2, len(ordered)}):
            before = [t for g in ordered[:where] for t in g]
            if "my_input.csv" in before:
                continue
            argv = ["predict", *before, task, *(t for g in ordered[where:] for t in g)]
            args = vars(_parse(argv)).copy()
            args.pop("spec", None)
            if expected is None:
                expected = args
            assert args == expected, (argv, args, expected)
    assert expected is not None and expected["weights"] == f"{task}/some.weights" and expected["out"] == "out.csv"
    if spec.predict_input is not None:
        assert expected["input"] == "my_input.csv"


@pytest.mark.parametrize("task", LIVE_TASKS)
def test_task_help_shows_only_its_options(task, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(["predict", task, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    own = {f"--{o.flag}" for o in TASKS.get(task).predict_options}
    others = {f"--{o.flag}" for t in LIVE_TASKS if t != task for o in TASKS.get(t).predict_options} - own
    assert all(flag in text for flag in own), own
    assert not [flag for flag in others if f"{flag} " in text or f"{flag}\n" in text], others
    assert f"zoo predict {task}" in text


def test_help_before_the_task_name_is_the_task_help(capsys):
    with pytest.raises(SystemExit):
        _parse(["predict", "--help", "forecasting"])
    assert "--horizon" in capsys.readouterr().out


def test_unknown_option_of_another_task_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(["predict", "stocks", "prices.csv", "--weights", "w", "--horizon", "3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--horizon" in err and "zoo predict stocks --help" in err


def test_a_fake_task_gets_exactly_its_declared_options(monkeypatch):
    seen = {}

    def predict(loaded, source, *, out=None, **options):
        seen.update(source=source, out=out, **options)
        return [{"a": 1}]

    spec = TaskSpec(
        name="fake", description="a fake task", config_cls=dict, build_datamodule=None,  # type: ignore[arg-type]
        build_module=None, predict=predict, predict_input="a file", predict_input_required=False,  # type: ignore[arg-type]
        predict_options=(PredictOption("rank-by", "order", metavar="TASK"),
                         PredictOption("level", "levels", type=number_list),
                         PredictOption("dry-run", "just check", flag_only=True)),
    )
    monkeypatch.setitem(TASKS._items, "fake", spec)
    args = _parse(["predict", "--level", "80,95", "fake", "--dry-run", "--weights", "w"])
    assert args.input is None and args.level == [80.0, 95.0] and args.dry_run is True and args.rank_by is None

    class Loaded:
        task = spec

    monkeypatch.setattr("zoo.api.load_weights", lambda ref, **_: Loaded())
    assert cli.main(["predict", "fake", "in.txt", "--weights", "w", "--rank-by", "t"]) == 0
    assert seen == {"source": "in.txt", "out": None, "rank_by": "t"}  # options not given are not passed
