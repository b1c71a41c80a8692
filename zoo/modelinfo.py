"""Model info: what a network needs beyond its config (data-derived sizes, normalisation statistics, vocabularies,
feature lists), so that weights rebuild their model without the training data (timm's ``pretrained_cfg``).

An info is a mapping whose values are YAML-able (scalars, lists, mappings) or, at the top level, arrays. In a
published artifact the plain part is the YAML's ``model_info`` block and each array is a tensor of the safetensors
file named ``model_info.<key>``; in a run dir they are ``model_info.yaml`` and ``model_info.safetensors``.
:func:`normalize` gives every consumer the same types (arrays as contiguous CPU torch tensors), so a model built
straight from data and one rebuilt from weights see identical values.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.errors import ZooValueError
from zoo.io import atomic_write_bytes, atomic_write_text

TENSOR_PREFIX = "model_info."
PLAIN_FILE = "model_info.yaml"
TENSOR_FILE = "model_info.safetensors"


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def normalize(info: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``info`` with arrays as contiguous CPU torch tensors and tuples as lists (YAML's types)."""
    import torch

    def plain(value: Any, where: str) -> Any:
        if isinstance(value, Mapping):
            return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v, where) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy/torch scalars
            return value.item()
        raise ZooValueError(f"model info {where}: a {type(value).__name__} cannot be stored; use scalars, lists, "
                            "mappings or (top-level) arrays")

    out: dict[str, Any] = {}
    for key, value in info.items():
        if _is_array(value) and getattr(value, "shape", ()) != ():
            tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(_numpy(value))
            out[key] = tensor.detach().to("cpu").contiguous()
        else:
            out[key] = plain(value, key)
    return out


def _numpy(value: Any) -> Any:
    import numpy as np

    array = np.ascontiguousarray(value)
    if array.dtype == object:
        raise ZooValueError("model info arrays must be numeric; store strings as lists")
    return array


def split(info: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(plain, tensors)``: the YAML part and the arrays keyed ``model_info.<key>`` for a safetensors file."""
    import torch

    info = normalize(info)
    plain = {k: v for k, v in info.items() if not isinstance(v, torch.Tensor)}
    tensors = {TENSOR_PREFIX + k: v for k, v in info.items() if isinstance(v, torch.Tensor)}
    return plain, tensors


def join(plain: Mapping[str, Any] | None, tensors: Mapping[str, Any]) -> dict[str, Any]:
    """The info back from its two parts; ``tensors`` may hold other keys (a state dict), which are ignored."""
    info = dict(plain or {})
    for key, value in tensors.items():
        if key.startswith(TENSOR_PREFIX):
            info[key[len(TENSOR_PREFIX):]] = value
    return normalize(info)


def strip(state: Mapping[str, Any]) -> dict[str, Any]:
    """A safetensors mapping without its model-info tensors: the state dict alone."""
    return {k: v for k, v in state.items() if not k.startswith(TENSOR_PREFIX)}


def save_run(run_dir: str | Path, info: Mapping[str, Any]) -> None:
    """Write a run's model info (``model_info.yaml`` and, if it has arrays, ``model_info.safetensors``)."""
    import safetensors.torch

    from zoo.config import dump_yaml

    run_dir = Path(run_dir)
    plain, tensors = split(info)
    if tensors:
        atomic_write_bytes(run_dir / TENSOR_FILE, safetensors.torch.save(tensors, metadata={"format": "pt"}))
    atomic_write_text(run_dir / PLAIN_FILE, dump_yaml(plain))


def load_run(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's model info, or None for a run dir written before runs kept it."""
    import safetensors.torch

    from zoo.config import read_yaml

    run_dir = Path(run_dir)
    if not (run_dir / PLAIN_FILE).exists():
        return None
    plain = read_yaml(run_dir / PLAIN_FILE) or {}
    tensor_path = run_dir / TENSOR_FILE
    tensors = safetensors.torch.load_file(tensor_path, device="cpu") if tensor_path.exists() else {}
    return join(plain, tensors)
