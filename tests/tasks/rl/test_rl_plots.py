"""Learning-curve plots of an RL board are drawn from the curves stored in its results files."""

import json

import numpy as np
import pytest

import zoo.leaderboard
from zoo.tasks.rl import plots

SPEC = """task: rl
title: t
metrics:
  - {key: test/return_mean, display: return, better: higher}
seeds: [0, 1]
rows:
  - {name: envA.pmoe, recipe: pmoe-sac_k4_two-goal}
  - {name: envA.sac_k1, recipe: sac_k1_two-goal}
  - {name: envB.pmoe, recipe: pmoe-sac_k4_two-goal}
"""


@pytest.fixture
def board(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo.leaderboard, "boards_dir", lambda: tmp_path)
    (tmp_path / "b.yaml").write_text(SPEC)
    curves = {("envA.pmoe", 0): [1.0, 3.0], ("envA.pmoe", 1): [3.0, 5.0], ("envA.sac_k1", 0): [0.0, 1.0],
              ("envB.pmoe", 0): [2.0, 2.0]}
    for (row, seed), values in curves.items():
        path = tmp_path / "results" / "b" / row / f"full-s{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics = {"test/return_mean": values[-1], **{f"curve/{s}": v for s, v in zip((100, 200), values)}}
        path.write_text(json.dumps({"board": "b", "tier": "full", "row": row, "seed": seed, "metrics": metrics,
                                       "params_total": 1, "params_active": 1, "wall_seconds": 1.0}))
    return tmp_path


def test_curves_average_seeds_per_row_and_split_panels_by_environment(board):
    panels = plots.curves("b", "full")
    assert set(panels) == {"envA", "envB"} and set(panels["envA"]) == {"pmoe", "sac_k1"}
    steps, mean, std = panels["envA"]["pmoe"]
    np.testing.assert_array_equal(steps, [100, 200])
    np.testing.assert_allclose(mean, [2.0, 4.0])
    np.testing.assert_allclose(std, [1.0, 1.0])
    out = plots.plot_curves("b", "full", board / "b.curves.png")
    assert out.stat().st_size > 5000


def test_a_board_without_results_is_a_one_line_error(board, capsys, monkeypatch):
    monkeypatch.setattr(plots, "boards_dir", lambda: board)
    assert plots.main(["b", "--tier", "smoke"]) == 2
    assert "zoo leaderboard reproduce b --tier smoke" in capsys.readouterr().err
