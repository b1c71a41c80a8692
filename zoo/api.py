"""The Python API, mirroring the CLI: ``load_task``, ``list_models``, ``create_model``, ``resolve_run``.

Weight ids are ``<task>/<arch>.<tag>`` and live in each task's manifest ``tasks/<task>/weights.yaml``.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from zoo import hub, modelinfo
from zoo.config import from_dict, read_yaml, repo_root
from zoo.errors import ZooValueError
from zoo.registry import TASKS
from zoo.task import LoadedModel, TaskSpec, build_from_config, build_from_info


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


def load_weights(ref: str, explicit_path: str | None = None, *, trust_unverified: bool = False) -> LoadedModel:
    """Rebuild a model from a weights id (or a ``.safetensors`` path with its YAML beside it) and load it.

    The YAML (config and ``model_info``) and the model-info tensors of the safetensors file rebuild the network;
    no datamodule is built and no training data is read. Files are verified against their sha256 before use: an
    id's against its manifest entry, a path's against the ``weights_sha256`` its YAML records.

    Args:
        ref: a weights id ``<task>/<arch>.<tag>``, or a ``.safetensors`` path.
        explicit_path: the weights file, when ``ref`` is not itself the path.
        trust_unverified: load a file given by path whose YAML records no ``weights_sha256`` (refused otherwise,
            since nothing would show the file is the one its YAML describes).
    """
    required = ("config", "task", "model_info")
    if ref.endswith(".safetensors") or explicit_path:
        weights_path = Path(explicit_path or ref)
        meta, sha256 = hub.read_artifact(weights_path, required, trust_unverified=trust_unverified)
    else:
        entry = find_entry(ref)
        weights_path = hub.verify(entry)
        config_path = hub.resolve_config(entry, weights_path)
        meta, sha256 = hub.read_config(config_path, entry.config_sha256, required), entry.sha256
    tensors = hub.load_state_dict(weights_path, sha256)
    spec = load_task(meta["task"])
    cfg = from_dict(spec.config_cls, meta["config"])
    loaded = build_from_info(spec, cfg, modelinfo.join(meta["model_info"], tensors))
    try:
        loaded.module.model.load_state_dict(modelinfo.strip(tensors))
    except RuntimeError as e:  # names or shapes differ: the two files do not belong together
        detail = " ".join(line.strip() for line in str(e).strip().splitlines()[1:])[:300]
        raise ZooValueError(f"{weights_path}: its tensors do not fit the model its YAML describes: {detail}") from None
    return loaded


def create_model(model_id: str, pretrained: bool = True) -> Any:
    """The task network (``module.model``) for a weights id, with its trained weights when ``pretrained``.

    Without ``pretrained`` the id may also be ``<task>/<recipe>``: the network is built from the recipe (which
    prepares the recipe's data, the source of the model info).
    """
    if pretrained:
        return load_weights(model_id).module.model
    task, _, recipe = model_id.partition("/")
    spec = load_task(task)
    from zoo.config import resolve_config

    cfg, _ = resolve_config(spec.config_cls, task, recipe)
    return build_from_config(spec, cfg).module.model


def load_run(run_dir: str | Path, spec: TaskSpec, prefer_best: bool = True) -> LoadedModel:
    """A run's model with its best (with ``prefer_best``) else last checkpoint: from its saved config and model
    info when the run kept them, else rebuilt from its data."""
    path, saved = resolve_run(run_dir)
    cfg = from_dict(spec.config_cls, saved)
    info = modelinfo.load_run(path)
    loaded = build_from_info(spec, cfg, info) if info is not None else build_from_config(spec, cfg)
    ckpt = run_checkpoint(path, prefer_best)
    if ckpt is not None:
        loaded.module.load_state_dict(hub.load_checkpoint(ckpt)["state_dict"])
    return loaded


def run_checkpoint(run_dir: Path, prefer_best: bool = True) -> Path | None:
    """``best.ckpt`` (the weights a task that keeps its best validation epoch tested) or ``last.ckpt``, or None."""
    names = ("best.ckpt", "last.ckpt") if prefer_best else ("last.ckpt",)
    return next((run_dir / "checkpoints" / n for n in names if (run_dir / "checkpoints" / n).exists()), None)


def resolve_run(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """A run directory's path and its saved config mapping; a missing or incomplete run is a clear error."""
    path = Path(run_dir)
    if not (path / "config.yaml").exists():
        raise ZooValueError(f"{path}: not a run directory (no config.yaml); runs live under runs/<task>/<recipe>/")
    return path, read_yaml(path / "config.yaml")
