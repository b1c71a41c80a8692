"""Every recipe of every registered task loads, and smoke-trains through ``zoo.task.fit_and_test``.

Recipes are discovered at collection time (``configs/<task>/*.yaml`` for each task in ``TASKS``), so a new
recipe is tested the moment it is added, with exactly the smoke overrides CI and the leaderboard smoke tier use.
"""

from __future__ import annotations

import json
import math

import pytest

from zoo.config import configs_dir, recipe_names, resolve_config, to_dict
from zoo.registry import TASKS
from zoo.task import fit_and_test

pytestmark = pytest.mark.filterwarnings("ignore:The number of training batches")

CASES = [(task, recipe) for task in TASKS.names() for recipe in recipe_names(task)]


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def test_every_recipe_folder_belongs_to_a_registered_task():
    folders = sorted(p.name for p in configs_dir().iterdir() if p.is_dir())
    assert folders, "no recipes found"
    assert set(folders) <= set(TASKS.names())
    assert len(CASES) >= 3 and ("forecasting", "moe_e8k2_m3-monthly") in CASES


@pytest.mark.parametrize("task, recipe", CASES, ids=[f"{t}/{r}" for t, r in CASES])
def test_recipe_smoke_trains(task, recipe, tmp_path):
    spec = TASKS.get(task)
    full, smoke = resolve_config(spec.config_cls, task, recipe)
    assert smoke, f"{task}/{recipe} declares no smoke overrides"
    cfg, smoke_again = resolve_config(spec.config_cls, task, recipe, smoke=True)
    assert smoke_again == smoke
    for key, value in smoke.items():
        assert _get(to_dict(cfg), key) == value, key
    assert cfg != full

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = fit_and_test(spec, cfg, run_dir, progress=False)

    assert result.metrics and all(math.isfinite(v) for v in result.metrics.values()), result.metrics
    assert any(k.startswith("test/") for k in result.metrics)
    written = json.loads((run_dir / "results.json").read_text())
    assert written["metrics"] == result.metrics
    assert math.isfinite(written["train_seconds"]) and written["train_seconds"] >= 0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() == spec.needs_fit(cfg)
