"""Rolling-origin evaluation with partial online learning, static models and full retraining.

The test region of every series is ``K = data.test_origins`` blocks of ``H`` points. The model fitted before the
first origin forecasts block 0; then, at each origin ``j ≥ 1``, block ``j − 1`` has been observed and

* ``static`` keeps the model as it is;
* ``partial`` (El Mahtout & Ziel 2026, "partial online learning") takes ``online.steps`` optimizer steps on the
  windows that became complete since the previous origin (targets ending inside the newly observed block),
  updating only the parameters named by ``online.train`` (by default the gate, the experts' last layers and the
  shared output head), optionally mixing in windows of the first fit's training set (``online.replay``);
* ``full`` trains a fresh model, same recipe and seed, on everything observed so far (train/val split as in the
  first fit: the last ``H`` observed points are held out of the training windows).

Every mode then forecasts block ``j`` from the ``L`` points before it. The wall time of the update at each origin
``j ≥ 1`` is measured (``online/update_seconds``: mean per origin; 0 for ``static``), so partial and full
retraining are compared on accuracy and compute in one run of each.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader

from zoo.errors import ZooValueError
from zoo.moe import on_optimizer_step, total_aux_loss
from zoo.task import build_from_info, quiet_trainer

from . import TASK
from .data import Series, WindowDataset, _stack, make_windows
from .evaluation import model_forecasts, score
from .metrics import mase_scale

log = logging.getLogger(__name__)


def observed(series: Series, origin: int, horizon: int) -> np.ndarray:
    """Values of ``series`` (a test-stage series) known at rolling origin ``origin``."""
    return np.concatenate([series.values, series.test])[: len(series.values) + origin * horizon]


def _fit_series(series_list: list[Series], origin: int, horizon: int) -> list[Series]:
    """Training series at ``origin``: observed values minus the last ``H`` (held out as in the first fit)."""
    out = []
    for s in series_list:
        seen = observed(s, origin, horizon)
        if len(seen) > horizon:
            out.append(replace(s, values=seen[:-horizon], test=seen[-horizon:]))
    return out


def _dataset(series_list: list[Series], lookback: int, horizon: int, **window_kwargs: Any) -> WindowDataset:
    """Training windows of the series' values (:func:`make_windows` options in ``window_kwargs``)."""
    windows = make_windows(series_list, lookback, horizon, **window_kwargs)
    scales = np.array([mase_scale(s.values, s.m) for s in series_list])
    return WindowDataset(windows, scales)


def _concat(a: WindowDataset, b: WindowDataset) -> WindowDataset:
    """Rows of ``a`` followed by rows of ``b``."""
    out = WindowDataset.__new__(WindowDataset)
    out.tensors = {k: torch.cat([a.tensors[k], b.tensors[k]]) for k in a.tensors}
    return out


def select_parameters(model: torch.nn.Module, patterns: list[str]) -> list[str]:
    """Names of the parameters updated online: those containing one of ``patterns``."""
    names = [n for n, _ in model.named_parameters() if any(p in n for p in patterns)]
    if not names:
        raise ZooValueError(f"online.train={patterns} matches no parameter of {type(model).__name__} "
                            f"(names look like {[n for n, _ in model.named_parameters()][:4]})")
    return names


def partial_update(module: Any, new: WindowDataset, old: WindowDataset, cfg: Any, generator: torch.Generator) -> None:
    """``cfg.steps`` Adam steps on batches of newly complete windows (plus a ``cfg.replay`` share of ``old``
    ones), through the module's own loss (task loss + expert loss + aux), updating only ``cfg.train`` parameters."""
    model = module.model
    trainable = set(select_parameters(model, list(cfg.train)))
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    params = [p for n, p in model.named_parameters() if n in trainable]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    n_old = int(round(cfg.batch_size * cfg.replay)) if len(old) else 0
    n_new = cfg.batch_size - n_old
    pool = _concat(new, old) if n_old else new
    model.train()
    try:
        for step in range(cfg.steps):
            rows = torch.randint(len(new), (n_new,), generator=generator)
            if n_old:
                rows = torch.cat([rows, len(new) + torch.randint(len(old), (n_old,), generator=generator)])
            out = module.step(pool.__getitems__(rows.tolist()))
            aux = total_aux_loss(out.aux)
            loss = out.loss if aux is None else out.loss + aux
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            on_optimizer_step(model, step)
            optimizer.step()
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])
        model.eval()


def retrain(cfg: Any, dm: Any, fit_series: list[Series]) -> Any:
    """A fresh module, built as the first fit's was (same config and model info), trained from scratch on
    ``fit_series`` with the recipe's trainer settings and seed."""
    lightning.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_from_info(TASK, cfg, TASK.model_info(cfg, dm)).module
    dataset = _dataset(fit_series, dm.lookback, dm.horizon, stride=dm.stride)
    loader = DataLoader(dataset, batch_size=dm.batch_size, shuffle=True, collate_fn=_stack,
                        generator=torch.Generator().manual_seed(cfg.seed))
    quiet_trainer(**(cfg.trainer or {})).fit(module, train_dataloaders=loader)
    return module


def run_online(cfg: Any, module: Any, dm: Any) -> dict[str, float]:
    """Forecast every rolling origin under ``cfg.online.mode``; metrics plus per-origin update wall time."""
    mode, K, H, L = cfg.online.mode, dm.test_origins, dm.horizon, dm.lookback
    series, windows = dm.series("test"), dm.windows("test")
    n_train = np.array([len(series[i].values) for i in windows.series])
    origin = (windows.target_start - n_train) // H
    preds = np.empty(windows.y.shape, dtype=np.float64)
    generator = torch.Generator().manual_seed(cfg.seed)
    seconds: list[float] = []
    for j in range(K):
        if j > 0 and mode in ("partial", "full"):
            start = time.perf_counter()
            if mode == "full":
                module = retrain(cfg, dm, _fit_series(series, j, H))
            else:
                # The H latest windows of each series are those whose target ends in the newly observed block.
                new = _dataset([replace(s, values=observed(s, j, H)) for s in series], L, H, max_windows_per_series=H)
                partial_update(module, new, dm.dataset("train"), cfg.online, generator)
            seconds.append(time.perf_counter() - start)
        elif j > 0:
            seconds.append(0.0)
        rows = origin == j
        preds[rows] = model_forecasts(module.model, windows.x[rows], windows.scale[rows])
    metrics = score(dm, preds)
    metrics["online/update_seconds"] = float(np.mean(seconds)) if seconds else 0.0
    metrics["online/origins"] = float(K)
    return metrics
