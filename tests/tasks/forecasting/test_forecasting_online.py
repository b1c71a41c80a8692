"""Rolling origins, one scoring path for every row, and partial online learning vs static and full retraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.config import from_dict
from zoo.errors import ZooValueError
from zoo.task import fit_and_test
from zoo.tasks.forecasting import TASK
from zoo.tasks.forecasting.builders import build_datamodule, build_module, model_info
from zoo.tasks.forecasting.config import ForecastingConfig
from zoo.tasks.forecasting.data import Series, last_windows
from zoo.tasks.forecasting.evaluation import baseline_forecasts, score, origin_histories, with_owa
from zoo.tasks.forecasting.online import observed, partial_update, select_parameters, _dataset

H, K = 4, 3


def write_tsf(path, n=80, count=3):
    t = np.arange(n)
    lines = ["@relation toy", "@attribute series_name string", "@frequency monthly", f"@horizon {H}",
             "@missing false", "@equallength true", "@data"]
    for i in range(count):
        values = 10 + i + 0.05 * t + np.sin(2 * np.pi * t / 12 + i)
        lines.append(f"S{i}:" + ",".join(f"{v:.6f}" for v in values))
    path.write_text("\n".join(lines) + "\n")
    return path


def config(path, **online) -> ForecastingConfig:
    return from_dict(ForecastingConfig, {
        "data": {"source": "tsf", "path": str(path), "lookback": 12, "horizon": H, "test_origins": K,
                 "batch_size": 32},
        "model": {"arch": "moe", "d_model": 16, "expert_loss": "gate"},
        "moe": {"num_experts": 4, "k": 4, "d_hidden": 8, "router": "soft", "balance_coef": 0.0},
        "trainer": {"max_epochs": 2, "log_every_n_steps": 1},
        "online": {"mode": "none", **online},
    })


def test_last_windows_at_rolling_origins():
    s = Series("a", np.arange(10.0), np.arange(10.0, 16.0), 2, "MONTHLY", 12)
    w = last_windows([s], lookback=3, horizon=2, origins=3)
    raw_x, raw_y = w.x * w.scale[:, None], w.y * w.scale[:, None]
    np.testing.assert_allclose(raw_x, [[7, 8, 9], [9, 10, 11], [11, 12, 13]], rtol=1e-6)  # earlier test points
    np.testing.assert_allclose(raw_y, [[10, 11], [12, 13], [14, 15]], rtol=1e-6)  # seen once observed
    assert w.target_start.tolist() == [10, 12, 14] and w.series.tolist() == [0, 0, 0]
    one = last_windows([s], lookback=3, horizon=2)
    np.testing.assert_allclose(one.x * one.scale[:, None], [[7, 8, 9]], rtol=1e-6)
    with pytest.raises(ZooValueError, match="origins x horizon = 8"):
        last_windows([s], lookback=3, horizon=2, origins=4)


def test_test_region_is_the_last_k_blocks(tmp_path):
    cfg = config(write_tsf(tmp_path / "x.tsf"))
    dm = build_datamodule(cfg)
    dm.setup("test")
    (s, *_) = dm.series("test")
    assert len(s.values) == 80 - K * H and len(s.test) == K * H
    assert len(dm.windows("test")) == 3 * K
    np.testing.assert_allclose(observed(s, 2, H), np.concatenate([s.values, s.test])[: len(s.values) + 2 * H])
    cfg.data.test_origins = 30
    with pytest.raises(ZooValueError, match="leaves no training part"):
        build_datamodule(cfg).setup("test")


def test_statistical_rows_fit_the_history_up_to_each_origin(tmp_path):
    dm = build_datamodule(config(write_tsf(tmp_path / "x.tsf")))
    dm.setup("test")
    histories = origin_histories(dm)
    w = dm.windows("test")
    assert [len(h) for h in histories] == w.target_start.tolist()
    naive = baseline_forecasts(dm, "naive")
    np.testing.assert_allclose(naive, np.stack([np.full(H, h[-1]) for h in histories]))
    capped = origin_histories(dm, max_history=5)
    assert all(len(c) == 5 and np.array_equal(c, h[-5:]) for c, h in zip(capped, histories))


def test_score_known_answer_and_owa_of_naive2_is_one(tmp_path):
    dm = build_datamodule(config(write_tsf(tmp_path / "x.tsf", count=1)))
    dm.setup("test")
    w = dm.windows("test")
    target = w.y * w.scale[:, None]
    preds = target.astype(np.float64) * 1.1  # every forecast 10 % high
    metrics = score(dm, preds)
    # sMAPE of a 10 % over-forecast: 2·0.1y / 2.1y = 9.5238 %; MASE: mean |0.1 y| over the in-sample scale
    assert metrics["test/smape"] == pytest.approx(100 * 0.2 / 2.1, rel=1e-4)
    (s,) = dm.series("test")
    insample = np.abs(s.values[12:] - s.values[:-12]).mean()
    assert metrics["test/mase"] == pytest.approx(np.abs(0.1 * target).mean() / insample, rel=1e-4)
    naive2 = score(dm, baseline_forecasts(dm, "naive2"))
    assert with_owa(naive2, dm)["test/owa"] == pytest.approx(1.0)
    with pytest.raises(Exception, match="not finite"):
        score(dm, np.full_like(preds, np.nan))


def test_partial_update_touches_only_the_named_parameters(tmp_path):
    cfg = config(write_tsf(tmp_path / "x.tsf"), mode="partial", steps=3)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    module = build_module(cfg, model_info(cfg, dm))
    names = select_parameters(module.model, cfg.online.train)
    assert names and all(("router" in n) or ("experts.w2" in n) or ("head" in n) for n in names)
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    new = _dataset(dm.series("train"), dm.lookback, H, max_windows_per_series=H)
    partial_update(module, new, dm.dataset("train"), cfg.online, torch.Generator().manual_seed(0))
    for n, p in module.model.named_parameters():
        assert torch.equal(p, before[n]) != (n in names), n
        assert p.requires_grad  # restored
    with pytest.raises(ZooValueError, match="matches no parameter"):
        select_parameters(module.model, ["no_such_layer"])


def test_online_modes_end_to_end(tmp_path):
    path = write_tsf(tmp_path / "x.tsf")
    results = {}
    for mode in ("none", "static", "partial", "full"):
        cfg = config(path, mode=mode, steps=5)
        results[mode] = fit_and_test(TASK, cfg, tmp_path / mode, progress=False).metrics
    assert results["none"]["test/mase"] == pytest.approx(results["static"]["test/mase"])
    assert results["static"]["online/update_seconds"] == 0.0
    assert results["partial"]["online/update_seconds"] > 0 and results["full"]["online/update_seconds"] > 0
    assert results["partial"]["test/mase"] != results["static"]["test/mase"]  # the updates changed forecasts
    for metrics in results.values():
        assert all(np.isfinite(v) for v in metrics.values())


def test_online_config_is_validated():
    with pytest.raises(ZooValueError, match="test_origins"):
        from_dict(ForecastingConfig, {"online": {"mode": "partial"}})
    with pytest.raises(ZooValueError, match="model.arch"):
        from_dict(ForecastingConfig, {"model": {"arch": "ets"}, "data": {"test_origins": 3},
                                      "online": {"mode": "full"}})
    with pytest.raises(ZooValueError, match="online.replay"):
        from_dict(ForecastingConfig, {"online": {"replay": 1.5}})
