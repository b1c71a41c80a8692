"""How a forecasting model is scored: one definition for neural, statistical and online rows.

Every row of a forecasting board is scored the same way: forecasts for the datamodule's test windows (one per
series and rolling origin, see ``ForecastDataModule``) in original units, then per-series sMAPE and MASE
(:class:`~zoo.tasks.forecasting.metrics.SMAPE`, :class:`~zoo.tasks.forecasting.metrics.MASE`), averaged over
series (``test/smape``, ``test/mase``; ``test/mase_median`` is the median over series), and the M4 OWA against
Naïve 2 forecasting the same windows from the same histories (``test/owa``).

Statistical baselines (``naive2``, ``ses``, ``theta``, ``ets``...) fit each window's whole history — the training
part plus the test points before the window's origin — not only the ``L`` lags a network sees (``model.stat_history``
caps it for long high-frequency series). Naïve 2 for OWA always sees the whole history.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zoo.errors import ZooError

from .baselines import forecast_all
from .metrics import MASE, SMAPE, owa


def origin_histories(dm: Any, max_history: int | None = None) -> list[np.ndarray]:
    """Everything observed before each test window's origin (training part + earlier test points), or its last
    ``max_history`` points."""
    windows, series = dm.windows("test"), dm.series("test")
    start = -max_history if max_history else None
    return [
        np.concatenate([series[i].values, series[i].test])[:t][start:]
        for i, t in zip(windows.series, windows.target_start)
    ]


def baseline_forecasts(dm: Any, method: str, *, max_history: int | None = None, n_jobs: int = 1) -> np.ndarray:
    """``[N, H]`` forecasts of a :mod:`baselines` method for the test windows, in original units, each fitted on
    its window's history (the last ``max_history`` points of it, if given)."""
    return forecast_all(origin_histories(dm, max_history), dm.horizon, method, m=dm.seasonality, n_jobs=n_jobs,
                        progress=False)


@torch.no_grad()
def model_forecasts(model: torch.nn.Module, x_NL: np.ndarray | torch.Tensor, scale_N: np.ndarray | torch.Tensor,
                    batch_size: int = 1024) -> np.ndarray:
    """``[N, H]`` forecasts of a network from scaled lags, scaled back to original units (eval mode)."""
    was_training = model.training
    model.eval()
    x = torch.as_tensor(x_NL, dtype=torch.float32)
    preds = []
    for chunk in x.split(batch_size):
        out = model(chunk)
        preds.append(getattr(out, "pred", out).double())
    model.train(was_training)
    pred = torch.cat(preds).numpy() if preds else np.zeros((0, 0))
    return pred * np.asarray(scale_N, dtype=np.float64)[:, None]


def score(dm: Any, preds_NH: np.ndarray, prefix: str = "test/") -> dict[str, float]:
    """sMAPE, MASE (mean and median over series) of forecasts of the test windows, in original units."""
    tensors = dm.dataset("test").tensors
    target = (tensors["y"].double() * tensors["scale"].double()[:, None])
    preds = torch.as_tensor(preds_NH, dtype=torch.float64)
    if not torch.isfinite(preds).all():
        bad = int((~torch.isfinite(preds)).any(1).sum())
        raise ZooError(f"{bad} test forecasts are not finite (diverged training?); refusing to score them")
    smape, mase, mase_median = SMAPE(), MASE(), MASE(reduction="median")
    smape.update(preds, target, tensors["series"])
    for metric in (mase, mase_median):
        metric.update(preds, target, tensors["series"], tensors["mase_scale"])
    return {f"{prefix}smape": float(smape.compute()), f"{prefix}mase": float(mase.compute()),
            f"{prefix}mase_median": float(mase_median.compute())}


def with_owa(metrics: dict[str, float], dm: Any, prefix: str = "test/") -> dict[str, float]:
    """``metrics`` plus ``owa``: M4 OWA against Naïve 2 on the same windows (cached on the datamodule)."""
    ref = getattr(dm, "_naive2_metrics", None)
    if ref is None:
        ref = score(dm, baseline_forecasts(dm, "naive2"))
        dm._naive2_metrics = ref
    out = dict(metrics)
    out[f"{prefix}owa"] = owa(metrics[f"{prefix}smape"], metrics[f"{prefix}mase"], ref["test/smape"], ref["test/mase"])
    return out
