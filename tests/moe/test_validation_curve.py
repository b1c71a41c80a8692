"""The validation curve callback in real (tiny) Lightning fits: one row per validation with its epoch, step and
fit seconds, the sanity check left out, a resumed fit's rows and clock continued, ``val_curve.csv`` written; and the
forecasting task's convergence metrics read from it."""

import csv
import math
from types import SimpleNamespace

import pytest
from torch import nn
from torch.utils.data import DataLoader

from zoo.callbacks import ValidationCurve
from zoo.demo import RegimeData, TinyMoERegressor, make_regime_data
from zoo.module import OptimConfig, ZooModule
from zoo.moe import MoEConfig
from zoo.task import quiet_trainer


def fit(tmp_path, epochs, curve):
    train, val = make_regime_data(RegimeData(n_train=256, n_val=128))
    model = TinyMoERegressor(16, 4, 32, MoEConfig(num_experts=4, k=2, d_hidden=16))
    module = ZooModule(model, nn.functional.mse_loss, OptimConfig(lr=1e-2))
    trainer = quiet_trainer(max_epochs=epochs, callbacks=[curve], num_sanity_val_steps=2)
    trainer.fit(module, DataLoader(train, batch_size=64), DataLoader(val, batch_size=64))
    return trainer


def test_one_row_per_validation_with_its_clock(tmp_path):
    curve = ValidationCurve(tmp_path)
    trainer = fit(tmp_path, 3, curve)
    assert [r["epoch"] for r in curve.rows] == [0.0, 1.0, 2.0], "the sanity check is left out"
    assert [r["step"] for r in curve.rows] == [4.0, 8.0, 12.0]
    assert [r["epochs"] for r in curve.rows] == [1.0, 2.0, 3.0]
    seconds = [r["seconds"] for r in curve.rows]
    assert seconds == sorted(seconds) and seconds[0] > 0 and curve.seconds() >= seconds[-1]
    assert curve.seconds() == curve.seconds(), "the clock stops when the fit ends"
    assert all(set(r) >= {"val/loss", "val/task_loss"} for r in curve.rows)
    assert curve.rows[-1]["val/loss"] == pytest.approx(float(trainer.callback_metrics["val/loss"]))
    with open(tmp_path / "val_curve.csv") as f:
        written = list(csv.DictReader(f))
    assert [float(r["val/task_loss"]) for r in written] == [r["val/task_loss"] for r in curve.rows]


def test_first_reaching_a_target():
    curve = ValidationCurve()
    curve.rows = [{"epoch": 0.0, "seconds": 1.0, "val/task_loss": 0.5}, {"epoch": 1.0, "seconds": 2.0},
                  {"epoch": 2.0, "seconds": 3.0, "val/task_loss": 0.3}, {"epoch": 3.0, "seconds": 4.0,
                                                                          "val/task_loss": 0.2}]
    assert curve.first_reaching("val/task_loss", 0.3)["epoch"] == 2.0
    assert curve.first_reaching("val/task_loss", 0.6)["epoch"] == 0.0
    assert curve.first_reaching("val/task_loss", 0.1) is None


def test_a_resumed_fit_continues_the_rows_and_the_clock():
    first = ValidationCurve()
    first.rows = [{"epoch": 0.0, "step": 4.0, "seconds": 1.5, "val/loss": 0.9}]
    first._before = 1.5
    second = ValidationCurve()
    second.load_state_dict(first.state_dict())
    assert second.rows == first.rows and second.seconds() == pytest.approx(1.5)


def test_forecasting_convergence_metrics_from_the_curve():
    from zoo.tasks.forecasting.builders import convergence_metrics

    curve = ValidationCurve()
    curve.rows = [{"epochs": 0.5, "step": 5.0, "seconds": 2.0, "val/task_loss": 0.5},
                  {"epochs": 1.0, "step": 10.0, "seconds": 4.0, "val/task_loss": 0.25},
                  {"epochs": 1.5, "step": 15.0, "seconds": 6.0, "val/task_loss": 0.3}]
    curve._before = 7.0
    trainer = SimpleNamespace(callbacks=[curve])
    got = convergence_metrics(trainer, 0.3)
    assert got == {"fit/val_task_loss_final": 0.3, "fit/val_task_loss_best": 0.25, "fit/seconds": 7.0,
                   "fit/reached_target": 1.0, "fit/epochs_to_target": 1.0, "fit/steps_to_target": 10.0,
                   "fit/seconds_to_target": 4.0}
    missed = convergence_metrics(trainer, 0.1)
    assert missed["fit/reached_target"] == 0.0 and "fit/epochs_to_target" not in missed
    assert "fit/reached_target" not in convergence_metrics(trainer, None)
    assert convergence_metrics(SimpleNamespace(callbacks=[]), 0.3) == {}
    assert math.isfinite(got["fit/seconds"])


def test_validations_within_an_epoch_count_fractional_epochs(tmp_path):
    curve = ValidationCurve()
    train, val = make_regime_data(RegimeData(n_train=512, n_val=128))
    model = TinyMoERegressor(16, 4, 32, MoEConfig(num_experts=4, k=2, d_hidden=16))
    trainer = quiet_trainer(max_epochs=1, callbacks=[curve], val_check_interval=0.25)
    trainer.fit(ZooModule(model, nn.functional.mse_loss), DataLoader(train, batch_size=64),
                DataLoader(val, batch_size=64))
    assert [r["epochs"] for r in curve.rows] == [0.25, 0.5, 0.75, 1.0]
    assert [r["epoch"] for r in curve.rows] == [0.0] * 4
