"""ZooModule and the expert-stats callback in real (tiny) Lightning fits."""

import json
import math
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import MeanSquaredError

from zoo.callbacks import ExpertStatsCallback
from zoo.demo import RegimeData, TinyMoERegressor, make_regime_data, train_one
from zoo.errors import ZooValueError
from zoo.module import OptimConfig, ZooModule, lr_lambda, param_groups
from zoo.moe import AuxFreeRouter, DenseToSparseRouter, MoEConfig
from zoo.task import quiet_trainer


def tiny_trainer(steps, **kw):
    return quiet_trainer(max_steps=steps, **kw)


def loaders(n_train=512, n_val=256):
    train, val = make_regime_data(RegimeData(n_train=n_train, n_val=n_val))
    return DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=128)


def test_balance_loss_measurably_evens_the_load():
    """The acceptance check of the backbone: same data, same seed, only the balance coefficient differs."""
    moe = MoEConfig(num_experts=8, k=2, d_hidden=64, balance_coef=0.05)
    data = RegimeData()
    balanced = train_one("balanced", moe, data, steps=200, out_dir=None)
    unbalanced = train_one("unbalanced", replace(moe, balance_coef=0.0), data, steps=200, out_dir=None)
    assert balanced.load_cv < 0.5 * unbalanced.load_cv, (balanced, unbalanced)
    assert math.isfinite(balanced.val_mse) and balanced.val_mse < 0.1


def test_objective_is_task_loss_plus_aux_losses():
    model = TinyMoERegressor(16, 4, 32, MoEConfig(num_experts=4, k=2, d_hidden=16, balance_coef=0.5, z_coef=0.1))
    module = ZooModule(model, nn.functional.mse_loss)
    x, y = torch.randn(32, 16), torch.randn(32, 4)
    out = model(x)
    assert set(out.aux) == {"moe/balance", "moe/z_loss"}
    expected = nn.functional.mse_loss(out.pred, y) + out.aux["moe/balance"] + out.aux["moe/z_loss"]
    module.log = lambda *a, **k: None  # outside a Trainer; logging is exercised by the fits below
    step = module.training_step((x, y), 0)
    torch.testing.assert_close(step["loss"], expected)
    assert set(step["expert_stats"]) == {"moe"}


def test_per_stage_metrics_are_separate_and_exact():
    train, val = loaders()
    model = TinyMoERegressor(16, 4, 32, MoEConfig(num_experts=4, k=2, d_hidden=16))
    module = ZooModule(model, nn.functional.mse_loss, OptimConfig(lr=1e-2), metrics={"mse": MeanSquaredError()})
    tiny_trainer(20).fit(module, train)
    result = tiny_trainer(1).validate(module, val, verbose=False)[0]
    with torch.no_grad():
        xs, ys = val.dataset.tensors
        expected = nn.functional.mse_loss(model(xs).pred, ys).item()
    assert result["val/mse"] == pytest.approx(expected, rel=1e-5)
    assert module.train_metrics is not module.val_metrics


def test_router_state_advances_once_per_optimizer_step():
    train, _ = loaders(n_train=256)
    model = TinyMoERegressor(16, 4, 32, MoEConfig(num_experts=4, k=1, d_hidden=16, router="aux_free"))
    router = model.moe.router
    assert isinstance(router, AuxFreeRouter)
    tiny_trainer(3, accumulate_grad_batches=2).fit(ZooModule(model, nn.functional.mse_loss), train)
    # 3 optimizer steps of ±1e-3 each: every bias is a multiple of 1e-3 with |b| ≤ 3e-3, and some moved
    assert router.bias.abs().max() <= 3e-3 + 1e-9
    assert router.bias.abs().max() > 0
    assert torch.allclose(router.bias / 1e-3, (router.bias / 1e-3).round(), atol=1e-4)

    model = TinyMoERegressor(16, 4, 32, MoEConfig(num_experts=4, k=1, d_hidden=16, router="dense_to_sparse"))
    tiny_trainer(5).fit(ZooModule(model, nn.functional.mse_loss), train)
    assert isinstance(model.moe.router, DenseToSparseRouter) and int(model.moe.router.step) == 5


def test_weight_decay_spares_routers_biases_and_norms():
    model = TinyMoERegressor(16, 4, 32, MoEConfig(num_experts=4, k=2, d_hidden=16))
    decay, no_decay = param_groups(model, 0.1)
    decayed = {id(p) for p in decay["params"]}
    assert id(model.moe.experts.w1) in decayed and id(model.inp[0].weight) in decayed
    for p in (model.moe.router.gate.weight, model.inp[0].bias, model.inp[1].weight):
        assert id(p) not in decayed
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_schedules():
    warm = lr_lambda(OptimConfig(scheduler="cosine", warmup_steps=10, min_lr_ratio=0.1), total_steps=110)
    assert warm(0) == pytest.approx(0.1) and warm(9) == pytest.approx(1.0)
    assert warm(10) == pytest.approx(1.0) and warm(60) == pytest.approx(0.55) and warm(110) == pytest.approx(0.1)
    linear = lr_lambda(OptimConfig(scheduler="linear"), total_steps=100)
    assert linear(50) == pytest.approx(0.5)
    assert lr_lambda(OptimConfig(), 100)(50) == 1.0


@pytest.mark.parametrize("field, value", [("name", "lamb"), ("scheduler", "poly"), ("lr", 0.0), ("min_lr_ratio", 2.0)])
def test_bad_optim_config(field, value):
    with pytest.raises(ZooValueError, match=f"optim.{field}"):
        OptimConfig(**{field: value})


def test_scheduler_is_stepped_by_lightning():
    train, _ = loaders(n_train=256)
    model = TinyMoERegressor(16, 4, 32, MoEConfig(num_experts=4, k=2, d_hidden=16))
    module = ZooModule(model, nn.functional.mse_loss, OptimConfig(lr=1e-2, scheduler="linear", max_steps=8))
    trainer = tiny_trainer(4)
    trainer.fit(module, train)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5)


def test_expert_stats_callback_logs_and_plots(tmp_path):
    train, _ = loaders(n_train=256)
    model = TinyMoERegressor(16, 4, 32, MoEConfig(num_experts=4, k=2, d_hidden=16, num_zero=1, num_copy=1))
    callback = ExpertStatsCallback(every_n_steps=2, dirpath=tmp_path)
    trainer = tiny_trainer(6, callbacks=[callback])
    trainer.fit(ZooModule(model, nn.functional.mse_loss), train)
    assert "experts/moe/load_cv" in trainer.callback_metrics
    assert "experts/moe/load/e5" in trainer.callback_metrics  # 4 FFN + zero + copy experts
    saved = json.loads((tmp_path / "expert_load.json").read_text())
    assert saved["moe"]["steps"] == [2, 4, 6] and saved["moe"]["num_ffn"] == 4
    assert all(len(row) == 6 and sum(row) == pytest.approx(1.0) for row in saved["moe"]["load"])
    assert (tmp_path / "expert_load.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.part"))


def test_expert_stats_callback_records_each_step_once_under_gradient_accumulation():
    train, _ = loaders(n_train=512)
    model = TinyMoERegressor(16, 4, 32, MoEConfig(num_experts=4, k=2, d_hidden=16))
    callback = ExpertStatsCallback(every_n_steps=1)
    tiny_trainer(3, callbacks=[callback], accumulate_grad_batches=3).fit(ZooModule(model, nn.functional.mse_loss), train)
    steps = [step for step, _ in callback.history["moe"]]
    assert steps == sorted(set(steps)), steps


def test_expert_stats_callback_writes_nothing_without_a_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, _ = loaders(n_train=256)
    model = TinyMoERegressor(16, 4, 32, MoEConfig(num_experts=4, k=2, d_hidden=16))
    callback = ExpertStatsCallback(every_n_steps=1)
    tiny_trainer(2, callbacks=[callback], default_root_dir=tmp_path).fit(ZooModule(model, nn.functional.mse_loss), train)
    assert len(callback.history["moe"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_dense_model_without_moe_trains_through_the_same_module():
    train, _ = loaders(n_train=256)
    model = TinyMoERegressor(16, 4, 32, None)
    callback = ExpertStatsCallback(dirpath=None)
    tiny_trainer(3, callbacks=[callback]).fit(ZooModule(model, nn.functional.mse_loss), train)
    assert callback.history == {}
