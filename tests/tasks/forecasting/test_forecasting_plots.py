"""The convergence figure: curves read from run dirs, averaged over seeds on the validations all seeds have, one
row of panels per data set, the rows' target drawn; a board without run dirs here is a one-line error."""

import json

import numpy as np
import pytest
import yaml

from zoo import leaderboard
from zoo.tasks.forecasting import plots


def write_run(root, row, seed, losses):
    run = root / "runs" / f"{row}-{seed}"
    run.mkdir(parents=True)
    lines = ["epoch,epochs,step,seconds,val/task_loss"]
    lines += [f"{i},{i + 1}.0,{10 * (i + 1)},{0.5 * (i + 1)},{v}" for i, v in enumerate(losses)]
    (run / "val_curve.csv").write_text("\n".join(lines) + "\n")
    path = leaderboard.result_path("conv", row, "full", seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"board": "conv", "row": row, "tier": "full", "seed": seed, "metrics": {},
                                "params_total": 1, "params_active": 1, "wall_seconds": 1.0, "run_dir": str(run)}))


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(leaderboard, "repo_root", lambda: tmp_path)
    (tmp_path / "leaderboards").mkdir()
    spec = {"task": "forecasting", "title": "c", "protocol": "p", "seeds": [0, 1],
            "metrics": [{"key": "test/mase", "display": "MASE", "format": "{:.3f}", "better": "lower",
                         "tolerance": 0.1}],
            "rows": [{"name": "m3.el", "recipe": "moe-el-gate_e8_m3-monthly", "config": {"target_val_loss": 0.2}},
                     {"name": "vic.el", "recipe": "moe-el-gate_e8_m3-monthly"}]}
    (tmp_path / "leaderboards" / "conv.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path


def test_curves_are_averaged_over_seeds_on_common_validations(root):
    write_run(root, "m3.el", 0, [0.5, 0.3, 0.2])
    write_run(root, "m3.el", 1, [0.7, 0.5])
    write_run(root, "vic.el", 0, [0.9, 0.8])
    curves = plots.board_curves("conv", "full")
    assert sorted(curves) == ["m3.el", "vic.el"] and len(curves["m3.el"]) == 2
    epochs, seconds, mean, std = plots.mean_curve(curves["m3.el"])
    np.testing.assert_allclose(epochs, [1.0, 2.0])
    np.testing.assert_allclose(seconds, [0.5, 1.0])
    np.testing.assert_allclose(mean, [0.6, 0.4])
    np.testing.assert_allclose(std, [0.1, 0.1])
    assert plots.row_targets("conv") == {"m3": 0.2}
    fig = plots.curves_figure("conv", curves, plots.row_targets("conv"))
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes] == ["m3: against epochs", "m3: against seconds",
                                                  "vic: against epochs", "vic: against seconds"]
    assert plots.main(["conv"]) == 0 and (root / "leaderboards" / "conv.curves.png").stat().st_size > 0


def test_without_run_dirs_here_it_says_how_to_make_them(root, capsys):
    assert plots.main(["conv", "--tier", "full"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: no val_curve.csv of conv (full) is on this machine: run "
                   "`zoo leaderboard reproduce conv --tier full` here first")
