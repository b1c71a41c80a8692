"""``Registry``: register / get with did-you-mean / names(pattern) / duplicates, and task discovery via entry points."""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points

import pytest

from zoo.errors import ZooValueError
from zoo.registry import ENTRY_POINT_GROUP, TASKS, Registry
from zoo.task import TaskSpec


class Thing:
    def __init__(self, name: str) -> None:
        self.name = name


@pytest.fixture
def reg() -> Registry[Thing]:
    r: Registry[Thing] = Registry("widget")
    for name in ("alpha", "alphabet", "beta", "gamma_ray"):
        r.register(name, Thing(name))
    return r


def test_register_returns_the_object_and_get_finds_it(reg):
    obj = Thing("delta")
    assert reg.register("delta", obj) is obj
    assert reg.get("delta") is obj
    assert "delta" in reg and "epsilon" not in reg and 3 not in reg


def test_names_are_sorted_and_filtered_by_pattern(reg):
    assert reg.names() == ["alpha", "alphabet", "beta", "gamma_ray"]
    assert list(reg) == reg.names()
    assert reg.names("alpha*") == ["alpha", "alphabet"]
    assert reg.names("*a") == ["alpha", "beta"]
    assert reg.names("?eta") == ["beta"]
    assert reg.names("ALPHA") == []  # case-sensitive
    assert reg.names("nothing*") == []


def test_unknown_name_suggests_close_names(reg):
    with pytest.raises(ZooValueError) as err:
        reg.get("alpah")
    msg = str(err.value)
    assert msg.startswith("unknown widget 'alpah'; did you mean 'alpha'")
    assert "(known: alpha, alphabet, beta, gamma_ray)" in msg
    assert isinstance(err.value, ValueError) and err.value.exit_code == 2


def test_unknown_name_without_close_match(reg):
    with pytest.raises(ZooValueError) as err:
        reg.get("zzz")
    assert str(err.value) == "unknown widget 'zzz' (known: alpha, alphabet, beta, gamma_ray)"
    with pytest.raises(ZooValueError, match=r"unknown widget 'x' \(known: none\)"):
        Registry("widget").get("x")


def test_duplicate_registration_warns_and_the_later_wins(reg):
    first = reg.get("beta")
    second = Thing("beta")
    with pytest.warns(UserWarning, match="widget 'beta' registered twice; the later one wins"):
        reg.register("beta", second)
    assert reg.get("beta") is second is not first
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg.register("beta", second)  # the same object again: silent no-op
    assert reg.names().count("beta") == 1


def test_discovery_is_lazy_and_runs_once():
    calls = []

    def discover(r: Registry) -> None:
        calls.append(1)
        r.register("found", Thing("found"))

    r: Registry[Thing] = Registry("widget", discover)
    r.register("manual", Thing("manual"))
    assert calls == []  # nothing imported at construction or registration
    assert r.names() == ["found", "manual"]
    assert r.get("found").name == "found" and "found" in r
    assert calls == [1]


def test_forecasting_is_declared_as_a_zoo_tasks_entry_point():
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert ENTRY_POINT_GROUP == "zoo.tasks"
    assert "forecasting" in eps
    assert eps["forecasting"].value == "zoo.tasks.forecasting:TASK"
    assert eps["forecasting"].load() is TASKS.get("forecasting")


def test_tasks_registry_holds_every_entry_point():
    names = sorted(ep.name for ep in entry_points(group="zoo.tasks"))
    assert TASKS.names() == names
    for name in names:
        spec = TASKS.get(name)
        assert isinstance(spec, TaskSpec) and spec.name == name and spec.description


def test_tasks_registry_lookup():
    spec = TASKS.get("forecasting")
    from zoo.tasks.forecasting import TASK
    from zoo.tasks.forecasting.config import ForecastingConfig

    assert spec is TASK and spec.config_cls is ForecastingConfig
    assert TASKS.names("fore*") == ["forecasting"]
    assert TASKS.names("nothing*") == []
    with pytest.raises(ZooValueError, match=r"unknown task 'forcasting'; did you mean 'forecasting'\?"):
        TASKS.get("forcasting")
