"""The shipped RL weights: found by id in the in-tree manifest, verified, and reproducing their published test
metrics (kept apart from test_rl_task.py, whose module fixture points the manifest at a temporary directory)."""

import json

import pytest

pytest.importorskip("gymnasium")

import zoo.api  # noqa: E402
from zoo.cli import main  # noqa: E402


def test_shipped_weights_reproduce_their_published_test_return(capsys):
    pytest.importorskip("mujoco")
    (entry,) = [e for e in zoo.api.task_entries("rl") if e.id == "rl/pmoe-sac_k4.hopper-v5"]
    assert main(["eval", "rl", "--weights", entry.id, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    for key in ("test/return_mean", "test/return_std", "test/routing_entropy"):
        assert metrics[key] == pytest.approx(entry.metrics[key], abs=1e-3), key



def test_shipped_weights_rebuild_from_their_model_info_and_draw_their_routing(tmp_path):
    pytest.importorskip("mujoco")
    loaded = zoo.api.load_weights("rl/pmoe-sac_k4.hopper-v5")
    assert loaded.datamodule is None and loaded.info == {"obs_dim": 11, "act_dim": 3, "action_high": [1.0, 1.0, 1.0]}
    plot = tmp_path / "routing.png"
    (row,) = loaded.task.predict(loaded, episodes=1, plot=str(plot))
    assert row["env"] == "Hopper-v5" and row["length"] >= 1 and plot.read_bytes().startswith(b"\x89PNG")
