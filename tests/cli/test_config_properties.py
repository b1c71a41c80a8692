"""Property tests: any ``--set`` value or config file text is applied or refused with a one-line ZooValueError.

Whatever the input (arbitrary strings and unicode, huge ints, NaN/inf, YAML tags, malformed keys), resolving a
config either gives a config that survives ``to_dict``/``from_dict``, the saved ``config.yaml`` and hashing
unchanged, or fails with :class:`ZooValueError` on one line (exit 2): never another exception type.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import types
import typing

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo.config import config_sha256, dump_yaml, from_dict, parse_override, read_yaml, resolve_config, to_dict
from zoo.errors import ZooValueError
from zoo.tasks.forecasting.config import ForecastingConfig
from zoo.tasks.recsys.config import RecsysConfig
from zoo.tasks.rl.config import RLConfig
from zoo.tasks.stocks.config import StocksConfig

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
CONFIGS = {"forecasting": ForecastingConfig, "recsys": RecsysConfig, "rl": RLConfig, "stocks": StocksConfig}


def leaves(cls: type, prefix: str = "") -> dict[str, typing.Any]:
    """Every settable dotted key of a config dataclass and its annotation, sections included."""
    out = {}
    for name, tp in typing.get_type_hints(cls).items():
        out[prefix + name] = tp
        if dataclasses.is_dataclass(tp):
            out.update(leaves(tp, f"{prefix}{name}."))
    return out


# ------------------------------------------------------------------------------------------------ strategies

plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def values_of(tp: typing.Any) -> st.SearchStrategy:
    """Values of the annotation ``tp``, with the edges YAML can express: huge ints, NaN, ±inf, any unicode."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([st.none() if a is type(None) else values_of(a) for a in args])
    if dataclasses.is_dataclass(tp):
        return st.fixed_dictionaries({}, optional={f.name: values_of(t) for f, t in zip(
            dataclasses.fields(tp), typing.get_type_hints(tp).values())})
    if origin is tuple:
        return st.tuples(*map(values_of, args))
    if origin is list:
        return st.lists(values_of(args[0]), max_size=4)
    if origin is dict or tp is dict:
        return st.dictionaries(st.text(max_size=6), plain, max_size=3)
    return {
        bool: st.booleans(),
        int: st.integers() | st.integers(-(10**400), 10**400),
        float: st.floats() | st.integers(-(10**400), 10**400),
        str: st.text(max_size=12),
    }.get(tp, plain)


def render(value: typing.Any) -> str:
    """``value`` as a ``--set`` would spell it."""
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("\n...\n").strip()


YAML_EDGES = [
    "", " ", "~", "null", ".nan", ".NaN", ".inf", "-.inf", "1e999", "-1e999", "1" * 5000, "0x" + "f" * 4000,
    "1_000", "0o17", "0b102", "!!int abc", "!!int 09", "!!float x", "!!float", "!!bool maybe", "!!timestamp x",
    "2020-01-01", "2020-13-45", "2020-01-01 25:00:00", "12:30:45", "!!binary aGk=", "!!set {a}", "!!omap [a: 1]",
    "&a [*a]", "&a {b: *a}", "[" * 60 + "]" * 60, "[" * 600, "{a: [1, {b: 2}]}", "[1, 2", "{a", "'", '"\\x"',
    '"\\ud800"', "\x00", "\t", "a: b: c", "? [1]", "<<: 1", "%YAML 1.1\n--- 1", "--- 1\n--- 2", "yes", "On",
    "!!python/object/apply:os.system [ls]", "!!python/name:os.system", "!!python/tuple [1]", "!custom 1",
]
MALFORMED_KEYS = ["", " ", ".", "..", "a..b", ".seed", "seed.", "moe..k", "moe.k.", "moe. k", "séed", "\x00", "="]


@st.composite
def overrides(draw, cls: type) -> list[str]:
    """One to four ``--set`` strings: known keys with typed, edge or random values, and malformed syntax."""
    keys = leaves(cls)
    out = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["typed", "edge", "text", "junk key", "no equals"]))
        key = draw(st.sampled_from(sorted(keys)))
        if kind == "typed":
            out.append(f"{key}={render(draw(values_of(keys[key])))}")
        elif kind == "edge":
            out.append(f"{key}={draw(st.sampled_from(YAML_EDGES))}")
        elif kind == "text":
            out.append(f"{key}={draw(st.text(st.characters(codec=None), max_size=12))}")
        elif kind == "junk key":
            junk = draw(st.sampled_from(MALFORMED_KEYS) | st.text(max_size=6))
            out.append(f"{junk}={render(draw(plain))}")
        else:
            out.append(draw(st.sampled_from([key, f"={key}", key.replace(".", "..")])))
    return out


# ------------------------------------------------------------------------------------------------ checks


def canonical(cfg: typing.Any) -> str:
    """The config as sorted JSON: NaN equals NaN here, unlike ``==`` on the dataclass."""
    return json.dumps(to_dict(cfg), sort_keys=True)


def check_round_trips(cls: type, cfg: typing.Any) -> None:
    """``to_dict``/``from_dict``, the saved ``config.yaml`` and the hash all give back the same config."""
    again = from_dict(cls, to_dict(cfg))
    assert canonical(again) == canonical(cfg)
    saved = from_dict(cls, yaml.safe_load(dump_yaml(to_dict(cfg))))
    assert canonical(saved) == canonical(cfg)
    assert config_sha256(saved) == config_sha256(cfg) and len(config_sha256(cfg)) == 64


def resolve_or_refuse(cls: type, task: str, sets: list[str], config_file=None):
    """The config, or None when refused with a one-line ZooValueError (any other exception fails the test)."""
    try:
        cfg, _ = resolve_config(cls, task, None, config_file, sets)
    except ZooValueError as err:
        assert "\n" not in str(err) and str(err).strip(), repr(str(err))
        return None
    return cfg


def shuffled(data: typing.Any, rng: random.Random) -> typing.Any:
    """``data`` with every mapping's keys in a random order."""
    if not isinstance(data, dict):
        return data
    items = list(data.items())
    rng.shuffle(items)
    return {k: shuffled(v, rng) for k, v in items}


# ------------------------------------------------------------------------------------------------ properties


@pytest.mark.parametrize("task", sorted(CONFIGS))
@SETTINGS
@given(data=st.data())
def test_any_set_is_applied_or_refused_in_one_line(task, data):
    cls = CONFIGS[task]
    cfg = resolve_or_refuse(cls, task, data.draw(overrides(cls)))
    if cfg is not None:
        check_round_trips(cls, cfg)


@pytest.mark.parametrize("task", sorted(CONFIGS))
@SETTINGS
@given(data=st.data())
def test_a_typed_value_lands_coerced_to_its_field_type(task, data):
    cls = CONFIGS[task]
    key, tp = data.draw(st.sampled_from(sorted((k, t) for k, t in leaves(cls).items() if t in (int, float, str, bool))))
    value = data.draw(values_of(tp))
    cfg = resolve_or_refuse(cls, task, [f"{key}={render(value)}"])
    if cfg is None:
        return
    got = cfg
    for part in key.split("."):
        got = getattr(got, part)
    assert type(got) is tp, (key, got)
    assert got == tp(value) or (tp is float and math.isnan(got) and math.isnan(value)), (key, got, value)


@pytest.mark.parametrize("task", sorted(CONFIGS))
@SETTINGS
@given(data=st.data())
def test_the_last_set_of_a_key_wins(task, data):
    """Repeating a key gives what its last ``--set`` alone gives; a whole section set before it still applies
    (a mapping replaces the section, then the key is set in it)."""
    cls = CONFIGS[task]
    keys = leaves(cls)
    key = data.draw(st.sampled_from(sorted(keys)))
    section, _, leaf = key.rpartition(".")
    values = data.draw(st.lists(values_of(keys[key]), min_size=2, max_size=4))
    sets = [f"{key}={render(v)}" for v in values]
    expected = sets[-1:]
    if section and data.draw(st.booleans()):
        section_set = f"{section}={render({leaf: values[0]})}"
        sets.insert(data.draw(st.integers(0, len(sets) - 1)), section_set)
        expected = [section_set, *expected]
    together = resolve_or_refuse(cls, task, sets)
    alone = resolve_or_refuse(cls, task, expected)
    assert (together is None) == (alone is None)
    if together is not None:
        assert canonical(together) == canonical(alone)


def test_a_section_set_after_its_key_wins():
    cfg, _ = resolve_config(ForecastingConfig, "forecasting", overrides=["moe.k=3", "moe={k: 4}"])
    assert cfg.moe.k == 4
    cfg, _ = resolve_config(ForecastingConfig, "forecasting", overrides=["moe={k: 4}", "moe.k=3"])
    assert cfg.moe.k == 3


@pytest.mark.parametrize("task", sorted(CONFIGS))
@SETTINGS
@given(data=st.data())
def test_config_sha256_ignores_key_order(task, data):
    cls = CONFIGS[task]
    cfg = resolve_or_refuse(cls, task, data.draw(overrides(cls)))
    if cfg is None:
        cfg = cls()
    reordered = from_dict(cls, shuffled(to_dict(cfg), data.draw(st.randoms(use_true_random=False))))
    assert config_sha256(reordered) == config_sha256(cfg)


@SETTINGS
@given(st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=80),
    st.builds(lambda v: yaml.safe_dump(v), plain),
    st.lists(st.sampled_from(YAML_EDGES + ["seed: ", "moe:", "  k: ", "trainer: {", "- ", ": "]), max_size=6)
    .map("\n".join),
))
def test_config_file_text_is_read_or_refused_in_one_line(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        assert isinstance(read_yaml(path), dict)
    except ZooValueError as err:
        assert "\n" not in str(err) and str(path) in str(err)
    cfg = resolve_or_refuse(ForecastingConfig, "forecasting", [], config_file=path)
    if cfg is not None:
        check_round_trips(ForecastingConfig, cfg)


@SETTINGS
@given(st.binary(max_size=40))
def test_config_file_bytes_are_read_or_refused(tmp_path, raw):
    path = tmp_path / "config.yaml"
    path.write_bytes(raw)
    resolve_or_refuse(ForecastingConfig, "forecasting", [], config_file=path)


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.mkdir [{path}]",
    "!!python/object/new:os.mkdir [{path}]",
    "!!python/object:pathlib.Path {{}}",
    "!!python/name:os.system",
    "!!python/module:os",
    "!<tag:yaml.org,2002:python/object/apply:os.mkdir> [{path}]",
])
def test_python_yaml_tags_are_refused_and_never_run(tmp_path, tag):
    target = tmp_path / "ran"
    value = tag.format(path=json.dumps(str(target)))
    with pytest.raises(ZooValueError, match="not valid YAML"):
        parse_override(f"seed={value}")
    path = tmp_path / "config.yaml"
    path.write_text(f"seed: {value}\n")
    with pytest.raises(ZooValueError, match="malformed YAML"):
        resolve_config(ForecastingConfig, "forecasting", config_file=path)
    assert not target.exists()
