"""Early stopping of recsys rows: Lightning's EarlyStopping on the row-weighted validation loss, attached only
when ``early_stopping.patience`` is set, stopping ``patience`` epochs after the best one (``trainer.max_epochs``
the cap), with the best epoch's weights restored for the test."""

import csv

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping

from zoo.config import resolve_config
from zoo.errors import ZooValueError
from zoo.task import fit_and_test
from zoo.tasks.recsys import TASK
from zoo.tasks.recsys.config import EarlyStoppingConfig, RecsysConfig
from zoo.tasks.recsys.module import EPOCH_LOSS, build_module, masked_task_losses

TINY = {"data.n_train": 200, "data.n_val": 100, "data.n_test": 100, "data.dim": 10, "data.batch_size": 64,
        "trainer.num_sanity_val_steps": 0, "trainer.enable_checkpointing": False,
        "trainer.log_every_n_steps": 1}


def config(**dotted) -> RecsysConfig:
    return resolve_config(RecsysConfig, "recsys", "mmoe_e8_synthetic", layers=[TINY, dotted])[0]


def epoch_losses(run_dir) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(row[EPOCH_LOSS]) for row in csv.DictReader(f) if row.get(EPOCH_LOSS)]


def test_callback_only_with_a_patience():
    info = {"tasks": ("task1", "task2"), "regression": True, "task_groups": {},
            "inputs": {"vocab_sizes": {}, "dense_dim": 10}}
    assert build_module(config(), info).configure_callbacks() == []
    (stop,) = build_module(config(**{"early_stopping.patience": 3, "early_stopping.min_delta": 0.01}),
                           info).configure_callbacks()
    assert isinstance(stop, EarlyStopping) and stop.monitor == EPOCH_LOSS and stop.patience == 3
    assert stop.mode == "min" and stop.min_delta == pytest.approx(-0.01)  # Lightning stores it signed by mode


def test_stops_patience_epochs_after_the_best_and_restores_it(tmp_path):
    cfg = config(**{"trainer.max_epochs": 60, "early_stopping.patience": 2, "optim.lr": 0.05})
    result = fit_and_test(TASK, cfg, tmp_path / "run", progress=False)
    m, module = result.metrics, result.module
    losses = epoch_losses(tmp_path / "run")
    assert len(losses) == m["train/epochs"] < 60
    best = min(range(len(losses)), key=losses.__getitem__)
    assert m["train/best_epoch"] == best and len(losses) - 1 - best == 2
    assert m["val/best_loss"] == pytest.approx(losses[best], rel=1e-6)
    # the restored weights give the best epoch's validation loss again
    dm = TASK.build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    total, rows = 0.0, 0
    module.model.eval()
    with torch.no_grad():
        for batch in dm.loader("val"):
            out = module.model(batch)
            n = int(batch["labels"].shape[0])
            total += float(masked_task_losses(out.pred, batch["labels"], batch["label_mask"], True).sum()) * n
            rows += n
    assert total / rows == pytest.approx(losses[best], rel=1e-4)


def test_without_patience_every_epoch_runs(tmp_path):
    result = fit_and_test(TASK, config(**{"trainer.max_epochs": 4, "optim.lr": 0.05}), tmp_path / "run",
                          progress=False)
    assert result.metrics["train/epochs"] == 4 and len(epoch_losses(tmp_path / "run")) == 4


@pytest.mark.parametrize("kwargs", [{"patience": 0}, {"patience": 2, "min_delta": -1.0}])
def test_bad_early_stopping_settings_are_one_line_errors(kwargs):
    with pytest.raises(ZooValueError, match="early_stopping"):
        EarlyStoppingConfig(**kwargs)
