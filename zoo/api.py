"""The Python API, mirroring the CLI: ``load_task``, ``list_models``, ``create_model``, ``resolve_run``.

Weight ids are ``<task>/<arch>.<tag>`` and live in each task's manifest ``tasks/<task>/weights.yaml``.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from zoo import hub
from zoo.config import from_dict, read_yaml, repo_root
from zoo.errors import ZooValueError
from zoo.registry import TASKS
from zoo.task import LoadedModel, TaskSpec, build_from_config


def load_task(name: str) -> TaskSpec:
    """The registered task ``name`` (did-you-mean on a typo)."""
    return TASKS.get(name)


def manifest_path(task: str) -> Path:
    return repo_root() / "tasks" / task / "weights.yaml"


def task_entries(task: str) -> list[hub.WeightEntry]:
    path = manifest_path(task)
    return hub.load_manifest(path) if path.exists() else []


def all_entries() -> list[hub.WeightEntry]:
    return [e for task in TASKS.names() for e in task_entries(task)]


def find_entry(weight_id: str) -> hub.WeightEntry:
    """The manifest entry of ``weight_id``; an unknown id raises with close matches."""
    task = weight_id.split("/", 1)[0]
    entries = {e.id: e for e in task_entries(task)} if task in TASKS else {}
    if weight_id not in entries:
        import difflib

        known = [e.id for e in all_entries()]
        close = difflib.get_close_matches(weight_id, known, n=2)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ZooValueError(f"unknown weights id {weight_id!r}{hint} (see `zoo weights list`)")
    return entries[weight_id]


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Model ids matching ``pattern``: recipes as ``<task>/<recipe>``, or with ``pretrained`` the weight ids."""
    from zoo.config import recipe_names

    if pretrained:
        names = [e.id for e in all_entries()]
    else:
        names = [f"{task}/{recipe}" for task in TASKS.names() for recipe in recipe_names(task)]
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def load_weights(ref: str, explicit_path: str | None = None) -> LoadedModel:
    """Rebuild a model from a weights id (or a ``.safetensors`` path with its YAML beside it) and load it.

    The YAML alone rebuilds the model; the state dict is loaded only after its sha256 is verified.
    """
    if ref.endswith(".safetensors") or explicit_path:
        weights_path = Path(explicit_path or ref)
        if not weights_path.exists():
            raise ZooValueError(f"{weights_path}: no such weights file")
        config_path = weights_path.with_suffix(".yaml")
        meta = hub.read_config(config_path)
        expected = meta.get("weights_sha256")
        state = hub.load_state_dict(weights_path, expected)
    else:
        entry = find_entry(ref)
        weights_path = hub.verify(entry)
        meta = hub.read_config(hub.resolve_config(entry, weights_path), entry.config_sha256)
        state = hub.load_state_dict(weights_path, entry.sha256)
    task = meta.get("task") or ref.split("/", 1)[0]
    spec = load_task(task)
    cfg = from_dict(spec.config_cls, meta["config"])
    loaded = build_from_config(spec, cfg)
    loaded.module.model.load_state_dict(state)
    return loaded


def create_model(model_id: str, pretrained: bool = True) -> Any:
    """The task network (``module.model``) for a weights id, with its trained weights when ``pretrained``.

    Without ``pretrained`` the id may also be ``<task>/<recipe>``: the network is built from the recipe.
    """
    if pretrained:
        return load_weights(model_id).module.model
    task, _, recipe = model_id.partition("/")
    spec = load_task(task)
    from zoo.config import resolve_config

    cfg, _ = resolve_config(spec.config_cls, task, recipe)
    return build_from_config(spec, cfg).module.model


def resolve_run(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """A run directory's path and its saved config mapping; a missing or incomplete run is a clear error."""
    path = Path(run_dir)
    if not (path / "config.yaml").exists():
        raise ZooValueError(f"{path}: not a run directory (no config.yaml); runs live under runs/<task>/<recipe>/")
    return path, read_yaml(path / "config.yaml")
