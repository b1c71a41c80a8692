"""Recipes (YAML) ⇄ typed config dataclasses.

Precedence, lowest first: the task's dataclass defaults < the recipe's ``base:`` (one level) < the recipe <
``--config FILE`` < the recipe's smoke overrides (with ``--smoke``) < ``--set a.b=c``. Sections merge key by key,
so ``--set moe.router=top_p`` changes one field and keeps the rest of ``moe``. Every value is validated against the dataclass field types; an unknown
key fails with the closest known key. ``trainer`` is a free dict passed to ``lightning.Trainer`` but its keys
are checked against the Trainer's signature. Recipes declare their smoke overrides under ``smoke:`` as dotted
keys (``trainer.max_steps: 20``); ``--smoke`` applies them, as CI and the leaderboard smoke tier do.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from zoo.errors import ZooValueError

C = TypeVar("C")

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

#: Keys a recipe may hold besides the config fields.
RECIPE_KEYS = ("base", "smoke", "description")

#: Deepest nesting of lists and mappings a YAML document may have: deeper ones (and aliases that contain
#: themselves) are refused on reading, before merging, copying or hashing recurses into them.
MAX_DEPTH = 32
#: Longest integer a YAML document may hold: Python refuses to print one over 4300 digits (about 14 000 bits),
#: so a longer one could be neither reported nor hashed.
MAX_INT_BITS = 4096


def repo_root() -> Path:
    """The source checkout (editable install): where ``configs/``, ``data/`` and ``leaderboards/`` live."""
    return Path(__file__).resolve().parents[1]


def configs_dir() -> Path:
    return repo_root() / "configs"


def _nesting(node: Any, seen: dict[int, int], level: int = 0) -> int:
    """Levels of lists and mappings in ``node``, exact up to MAX_DEPTH (shared aliases are walked once and the
    walk stops past MAX_DEPTH, so a self-referencing alias ends too); an integer over MAX_INT_BITS is refused."""
    if isinstance(node, int) and node.bit_length() > MAX_INT_BITS:
        raise yaml.YAMLError(f"an integer of {node.bit_length()} bits; at most {MAX_INT_BITS}")
    if not isinstance(node, (dict, list, tuple, set)) or level > MAX_DEPTH:
        return 0
    if id(node) not in seen:
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        seen[id(node)] = 1 + max((_nesting(child, seen, level + 1) for child in children), default=0)
    return seen[id(node)]


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load`` whose every failure is a ``yaml.YAMLError``: PyYAML's constructors also raise
    ValueError, KeyError or IndexError on scalars such as ``2020-13-45`` or ``!!int abc``, and nesting beyond
    MAX_DEPTH is refused here rather than as a RecursionError later."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise
    except RecursionError:
        raise yaml.YAMLError(f"nested more than {MAX_DEPTH} levels deep") from None
    except Exception as err:  # a constructor's own error on a malformed scalar
        raise yaml.YAMLError(f"bad value: {err}") from None
    if _nesting(data, {}) > MAX_DEPTH:
        raise yaml.YAMLError(f"nested more than {MAX_DEPTH} levels deep, or an alias that contains itself")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """The first line of what PyYAML says is wrong (its messages span lines)."""
    text = str(getattr(err, "problem", None) or getattr(err, "reason", None) or err)
    return text.splitlines()[0] if text.strip() else type(err).__name__


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; malformed YAML or a non-mapping is a one-line ZooValueError naming the file."""
    path = Path(path)
    try:
        data = _load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZooValueError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise ZooValueError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise ZooValueError(f"{path}: cannot read it ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ZooValueError(f"{path}:{where} malformed YAML ({_yaml_problem(err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ZooValueError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    return data


def records_of(raw: Any, cls: type[C], where: str) -> list[tuple[str, C]]:
    """A YAML list of mappings as ``cls`` dataclasses, each with the ``where[i]`` its errors should name; a
    missing list is empty; anything else, or an unknown or missing field, is a one-line error."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ZooValueError(f"{where} must be a list, got {type(raw).__name__}")
    out = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ZooValueError(f"{at}: must be a mapping, got {type(item).__name__}")
        try:
            out.append((at, cls(**item)))
        except TypeError as err:
            raise ZooValueError(f"{at}: {err}") from None
    return out


def recipe_names(task: str) -> list[str]:
    folder = configs_dir() / task
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_recipe(task: str, recipe: str) -> dict[str, Any]:
    """The recipe's mapping with its ``base:`` merged underneath (one level only)."""
    path = configs_dir() / task / f"{recipe}.yaml"
    if not path.exists():
        known = recipe_names(task)
        close = difflib.get_close_matches(recipe, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ZooValueError(f"unknown recipe {recipe!r} for task {task!r}{hint} (known: {', '.join(known) or 'none'})")
    data = read_yaml(path)
    base_name = data.pop("base", None)
    if base_name is None:
        return data
    base = read_yaml(configs_dir() / task / f"{base_name}.yaml")
    if "base" in base:
        raise ZooValueError(f"{path}: base recipe {base_name!r} has a base of its own; one level of base: only")
    smoke = {**base.pop("smoke", {}), **data.pop("smoke", {})}
    merged = deep_merge(base, data)
    if smoke:
        merged["smoke"] = smoke
    return merged


def deep_merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    """``high`` over ``low``, recursively for nested mappings."""
    out = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=c`` → ``("a.b", yaml_value(c))``: YAML scalars and lists (``[1, 2]``), ``null``, quoted strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ZooValueError(f"--set {text!r}: expected KEY=VALUE, e.g. moe.num_experts=16")
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ZooValueError(f"--set {text!r}: the value is not valid YAML ({_yaml_problem(err)})") from None
    return key.strip(), value


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data[a][b] = value`` for ``a.b``, creating intermediate mappings."""
    if not isinstance(dotted, str) or "" in dotted.split("."):
        raise ZooValueError(f"config key {dotted!r} is not a dotted key such as moe.num_experts")
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def apply_overrides(
    data: dict[str, Any], overrides: Mapping[str, Any] | Iterable[tuple[str, Any]]
) -> dict[str, Any]:
    """``data`` with dotted-key overrides applied in order; pairs keep the order of repeated keys, so
    ``moe={k: 4}`` given after ``moe.k=3`` wins."""
    out = copy.deepcopy(data)
    for key, value in overrides.items() if isinstance(overrides, Mapping) else overrides:
        set_dotted(out, key, value)
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_keys(mapping: dict[Any, Any], where: str) -> None:
    for key in mapping:
        if not isinstance(key, str):
            raise ZooValueError(f"{where} has the key {key!r}; keys must be strings")


def _check_plain(value: Any, where: str) -> None:
    """Free-form values (``trainer``, ``*_kwargs``) must be data that YAML and JSON both carry, so the config
    can be saved and hashed: a date, bytes or a set would only fail later, when the run is written."""
    if value is None or isinstance(value, (str, int, float)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        _check_keys(value, where)
        for key, item in value.items():
            _check_plain(item, f"{where}.{key}")
        return
    raise ZooValueError(f"{where}={value!r} ({type(value).__name__}) is not plain data; expected a string, number, "
                        "boolean, null, list or mapping (quote dates)")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert YAML forms (ints for floats, lists for tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        _check_plain(value, where)
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ZooValueError:
                continue
        raise ZooValueError(f"{where}={value!r} has the wrong type; expected {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ZooValueError(f"{where} must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ZooValueError(f"{where}={value!r} has the wrong type; expected a list")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ZooValueError(f"{where}={value!r} must have {len(args)} items")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ZooValueError(f"{where}={value!r} has the wrong type; expected a mapping")
        _, item = typing.get_args(tp) or (str, Any)
        _check_keys(value, where)
        return {key: _convert(v, item, f"{where}.{key}") for key, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ZooValueError(f"{where}={value} is too large for a float") from None
    if tp is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string; users mean a float
    if tp in (int, str, bool) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ZooValueError(f"{where}={value!r} has the wrong type; expected {_type_name(tp)}")


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build the dataclass ``cls`` from plain data, validating keys and types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ZooValueError(f"config key {prefix}{key!r} must be a string")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
            raise ZooValueError(f"unknown config key {prefix + key!r}{hint} (known: {', '.join(fields)})")
        kwargs[key] = _convert(value, hints[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except ZooValueError:
        raise
    except (TypeError, ValueError) as err:
        raise ZooValueError(f"{prefix.rstrip('.') or cls.__name__}: {err}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view of a config dataclass (tuples become lists), ready for YAML."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_sha256(cfg: Any) -> str:
    """Hash of the canonical JSON form of a config: the same config always hashes the same."""
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


# ``lightning.Trainer``'s keyword arguments (Lightning 2.5-2.6), for checking recipes without importing Lightning
# (``zoo config show`` stays fast); once Lightning is imported, as it is for training, its own signature is used.
TRAINER_KEYS = frozenset((
    "accelerator", "strategy", "devices", "num_nodes", "precision", "logger", "callbacks", "fast_dev_run",
    "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "limit_train_batches", "limit_val_batches",
    "limit_test_batches", "limit_predict_batches", "overfit_batches", "val_check_interval",
    "check_val_every_n_epoch", "num_sanity_val_steps", "log_every_n_steps", "enable_checkpointing",
    "enable_progress_bar", "enable_model_summary", "accumulate_grad_batches", "gradient_clip_val",
    "gradient_clip_algorithm", "deterministic", "benchmark", "inference_mode", "use_distributed_sampler",
    "profiler", "detect_anomaly", "barebones", "plugins", "sync_batchnorm", "reload_dataloaders_every_n_epochs",
    "default_root_dir", "enable_autolog_hparams", "model_registry",
))


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")  # the ones this zoo runs on


def trainer_keys() -> set[str]:
    """The keyword arguments ``lightning.Trainer`` accepts: its signature if Lightning is loaded, else
    :data:`TRAINER_KEYS`."""
    lightning = sys.modules.get("lightning")
    if lightning is None:
        return set(TRAINER_KEYS)
    return set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self"}


#: ``trainer.*`` keys the zoo reads itself (``zoo.task.build_trainer``) instead of passing them to Lightning.
ZOO_TRAINER_KEYS = frozenset(("checkpoint_every_n_steps",))


def check_trainer_kwargs(kwargs: dict[str, Any]) -> None:
    """Unknown ``trainer.*`` keys fail here, with a suggestion, instead of deep inside Lightning."""
    allowed = trainer_keys() | ZOO_TRAINER_KEYS
    for key in kwargs:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean 'trainer.{close[0]}'?" if close else ""
            raise ZooValueError(f"unknown config key 'trainer.{key}'{hint}")
    for key in ("max_epochs", "min_epochs", "max_steps", "min_steps"):
        value = kwargs.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < -1):
            raise ZooValueError(f"trainer.{key}={value!r} is not allowed; expected an int >= -1 (-1: no limit)")
    accelerator = kwargs.get("accelerator")
    if accelerator is not None and accelerator not in ACCELERATORS:
        raise ZooValueError(f"trainer.accelerator={accelerator!r} is not allowed; expected one of "
                            f"{', '.join(ACCELERATORS)}")


def resolve_config(
    cls: type[C],
    task: str,
    recipe: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    smoke: bool = False,
    layers: Sequence[Mapping[str, Any]] = (),
) -> tuple[C, dict[str, Any]]:
    """Apply the precedence chain and validate; returns the config and the recipe's smoke overrides.

    ``layers`` are dotted-key mappings (``{"data.source": "tourism"}``) applied in order after ``config_file``
    and before the smoke overrides: a leaderboard puts a recipe on its dataset this way.
    """
    data: dict[str, Any] = load_recipe(task, recipe) if recipe else {}
    # Start from the task's defaults so a partial section (``--set moe.router=top_p``) keeps the rest of it.
    data = deep_merge(to_dict(cls()), data)
    if config_file:
        data = deep_merge(data, read_yaml(config_file))
    smoke_overrides = data.pop("smoke", {}) or {}
    if not isinstance(smoke_overrides, dict):
        raise ZooValueError(f"recipe {recipe!r}: smoke: must map dotted keys to values")
    data.pop("description", None)
    data.pop("base", None)
    for layer in layers:
        data = apply_overrides(data, dict(layer))
    if smoke:
        data = apply_overrides(data, smoke_overrides)
    data = apply_overrides(data, [parse_override(o) for o in overrides])
    cfg = from_dict(cls, data)
    trainer = getattr(cfg, "trainer", None)
    if isinstance(trainer, dict):
        check_trainer_kwargs(trainer)
    return cfg, smoke_overrides
