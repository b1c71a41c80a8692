"""Test metrics of every stocks row, one definition: scores on the test days → IC/ICIR/RankIC/RankICIR, the
TopK-dropout backtest (annualised excess return, information ratio, max drawdown) and, on panels with groups,
the routing NMI between each stock's routing cluster (MIGA: the group of its first expert; plain MoE: its first
expert) and its sector or true style.

Neural rows score each test day with the trained module (after a search, its chosen trial's best epoch, reported
with the ``search/*`` records); tabular rows fit their estimator on the training rows first. The day-level frame and the backtest are written next to the run (``test_scores.csv``, ``backtest.csv``)
so plots and later analyses read the same numbers the board shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from zoo.io import atomic_write_text

from .backtest import risk_summary, scaled_topk, topk_dropout
from .baselines import TabularBaseline
from .config import StocksConfig
from .data import StockDataModule
from .metrics import ic_summary, routing_nmi
from .model import StocksModule


def neural_scores(module: StocksModule, dm: StockDataModule, split: str = "test") -> pd.DataFrame:
    """Score every day of ``split`` with the module; the frame has each row's routing cluster."""
    rows = []
    for batch in dm.dataset(split):
        scores, cluster = module.score(batch)
        frame = dm.frame(np.full(batch.inst.numel(), batch.day), batch.inst.numpy(), scores.double().numpy())
        frame["cluster"] = cluster.numpy()
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def tabular_scores(model: TabularBaseline, dm: StockDataModule, split: str = "test") -> pd.DataFrame:
    x, y, _, _ = dm.rows("train")
    model.fit(x, y)
    x_test, _, days, insts = dm.rows(split)
    frame = dm.frame(days, insts, model.predict(x_test))
    frame["cluster"] = -1
    return frame


def backtest_metrics(frame: pd.DataFrame, cfg: StocksConfig) -> tuple[dict[str, float], pd.DataFrame]:
    """The TopK-dropout backtest on the days whose next return is known, and its risk summary."""
    known = frame[frame.groupby("date")["ret"].transform(lambda r: r.notna().any())]
    universe = int(known.groupby("date")["instrument"].size().min())
    topk, n_drop = scaled_topk(universe)
    topk = cfg.backtest.topk or topk
    n_drop = cfg.backtest.n_drop if cfg.backtest.n_drop is not None else n_drop
    daily = topk_dropout(known, topk, n_drop, cfg.backtest.open_cost, cfg.backtest.close_cost)
    risk = risk_summary(daily["excess"], periods=cfg.backtest.periods)
    metrics = {
        "excess_return": risk["annualized_return"],
        "information_ratio": risk["information_ratio"],
        "max_drawdown": risk["max_drawdown"],
        "turnover": float(daily["turnover"].mean()),
        "topk": float(topk),
        "n_drop": float(n_drop),
    }
    return metrics, daily


def evaluate_frame(frame: pd.DataFrame, cfg: StocksConfig) -> tuple[dict[str, float], pd.DataFrame]:
    ic = ic_summary(frame)
    metrics = {k: float(ic[k]) for k in ("ic", "icir", "rank_ic", "rank_icir")}
    bt, daily = backtest_metrics(frame, cfg)
    metrics.update(bt)
    routed = frame[(frame["cluster"] >= 0) & (frame["group"] >= 0)]
    if len(routed):
        metrics["nmi"] = float(routing_nmi(routed["cluster"].to_numpy(), routed["group"].to_numpy()))
    return metrics, daily


def evaluate(cfg: StocksConfig, trainer, module, dm: StockDataModule) -> dict[str, float]:
    dm.setup("test")
    model = module.model
    with torch.no_grad():
        frame = tabular_scores(model, dm) if isinstance(model, TabularBaseline) else neural_scores(module, dm)
    metrics, daily = evaluate_frame(frame, cfg)
    run_dir = Path(trainer.default_root_dir) if trainer is not None else None
    if run_dir is not None and run_dir.is_dir():
        atomic_write_text(run_dir / "test_scores.csv", frame.to_csv(index=False))
        atomic_write_text(run_dir / "backtest.csv", daily.to_csv())
    out = {f"test/{k}": v for k, v in metrics.items()}
    if getattr(module, "best_epoch", None) is not None:
        out["train/best_epoch"] = float(module.trial_of(module.best_epoch)[1])  # counted within its search trial
        out["val/best_ic"] = float(module.best_ic)
        out.update(module.search_metrics())
    return out
