"""Forecasting metrics, per series then aggregated over series: the mean, as the M4 competition reports them
(Makridakis et al. 2020), or the median.

- sMAPE (M4 definition, percent): ``100 · mean_h 2|ŷ − y| / (|ŷ| + |y|)``; a term with ``ŷ = y = 0`` counts 0.
- MASE: ``mean_h |y − ŷ| / s`` with the in-sample scale ``s = mean_{t>m} |x_t − x_{t−m}|`` over the series'
  training part ``x`` (:func:`mase_scale`).

MASE edge cases (zoo choice): when the training part has no more than ``m`` points, ``m`` falls back to 1. When
the seasonal scale is 0 (an exactly periodic history), the lag-1 scale is used instead; when that is 0 too (a
constant history) or undefined (fewer than 2 points), the series' MASE is NaN. NaN series are left out of the
mean/median and counted (:func:`aggregate`, :meth:`PerSeriesMetric.num_excluded`) rather than given an ``eps``
scale, which would let one flat series dominate the mean.

The numpy functions are the reference; :class:`SMAPE` and :class:`MASE` are torchmetrics versions that
accumulate per-series values over batches and reduce over series at ``compute()``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from zoo.errors import ZooValueError, check_arg

REDUCTIONS = ("mean", "median")


def _pair(y: np.ndarray, yhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, yhat = np.asarray(y, dtype=np.float64), np.asarray(yhat, dtype=np.float64)
    if y.shape != yhat.shape:
        raise ZooValueError(f"y and yhat differ in shape: {y.shape} vs {yhat.shape}")
    return y, yhat


def _scalar(v: np.ndarray) -> np.ndarray | float:
    return float(v) if np.ndim(v) == 0 else v


def smape(y: np.ndarray, yhat: np.ndarray) -> np.ndarray | float:
    """sMAPE in percent over the last axis (``[..., H]`` → ``[...]``; a float for one series)."""
    y, yhat = _pair(y, yhat)
    den = np.abs(yhat) + np.abs(y)
    terms = np.divide(2.0 * np.abs(yhat - y), den, out=np.zeros_like(den), where=den > 0)
    return _scalar(100.0 * terms.mean(axis=-1))


def mae(y: np.ndarray, yhat: np.ndarray) -> np.ndarray | float:
    """Mean absolute error over the last axis."""
    y, yhat = _pair(y, yhat)
    return _scalar(np.abs(yhat - y).mean(axis=-1))


def rmse(y: np.ndarray, yhat: np.ndarray) -> np.ndarray | float:
    """Root mean squared error over the last axis."""
    y, yhat = _pair(y, yhat)
    return _scalar(np.sqrt(((yhat - y) ** 2).mean(axis=-1)))


def mase_scale(insample: np.ndarray, m: int = 1) -> float:
    """MASE denominator of one series: ``mean_{t>m} |x_t − x_{t−m}|`` over its in-sample part ``x``.

    ``m`` falls back to 1 when ``len(x) <= m`` or when the seasonal scale is 0; NaN when the lag-1 scale is 0
    too or ``x`` has fewer than 2 points (see the module docstring).
    """
    x = np.asarray(insample, dtype=np.float64).reshape(-1)
    check_arg(int(m) >= 1, "m", m, "an integer >= 1")
    m = int(m) if len(x) > int(m) else 1
    if len(x) < 2:
        return float("nan")
    scale = float(np.abs(x[m:] - x[:-m]).mean())
    if scale == 0.0 and m > 1:
        scale = float(np.abs(x[1:] - x[:-1]).mean())
    return scale if scale > 0.0 else float("nan")


def mase(y: np.ndarray, yhat: np.ndarray, insample: np.ndarray, m: int = 1) -> float:
    """MASE of one series: MAE of the forecast ``[H]`` divided by :func:`mase_scale` of ``insample``."""
    y, yhat = _pair(y, yhat)
    return float(np.abs(yhat - y).mean()) / mase_scale(insample, m)


def aggregate(per_series: Sequence[float] | np.ndarray, reduction: str = "mean") -> tuple[float, int]:
    """``(mean or median over the finite per-series values, number of NaN/inf values left out)``."""
    check_arg(reduction in REDUCTIONS, "reduction", reduction, REDUCTIONS)
    v = np.asarray(per_series, dtype=np.float64).reshape(-1)
    ok = np.isfinite(v)
    if not ok.any():
        return float("nan"), int((~ok).sum())
    fn = np.mean if reduction == "mean" else np.median
    return float(fn(v[ok])), int((~ok).sum())


# --------------------------------------------------------------------------------------------------------------
# torchmetrics


class PerSeriesMetric(Metric):
    """Accumulates one value per forecast window with its series index; ``compute()`` averages the windows of
    each series, then reduces over series (``reduction`` = mean or median), leaving out NaN series.

    ``series=None`` in ``update`` treats every row as its own series. States are lists concatenated across
    processes (``dist_reduce_fx="cat"``); their names carry the metric's name so that a MetricCollection never
    merges two metrics into one compute group.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    _name = "per_series"

    def __init__(self, reduction: str = "mean", **kwargs) -> None:
        super().__init__(**kwargs)
        check_arg(reduction in REDUCTIONS, "reduction", reduction, REDUCTIONS)
        self.reduction = reduction
        self.add_state(f"{self._name}_series", default=[], dist_reduce_fx="cat")
        self.add_state(f"{self._name}_values", default=[], dist_reduce_fx="cat")

    def _append(self, values_B: torch.Tensor, series_B: torch.Tensor | None) -> None:
        if series_B is None:
            series_B = torch.full_like(values_B, -1, dtype=torch.long)
        series_B = series_B.reshape(-1).to(device=values_B.device, dtype=torch.long)
        if series_B.shape != values_B.shape:
            raise ZooValueError(f"series has shape {tuple(series_B.shape)}, expected ({values_B.shape[0]},)")
        getattr(self, f"{self._name}_series").append(series_B)
        getattr(self, f"{self._name}_values").append(values_B)

    def per_series(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(series ids [S], value per series [S] float64)``; rows given without a series id come last (id −1).

        Reads this process's states (synced ones inside ``compute``)."""
        ids, vals = getattr(self, f"{self._name}_series"), getattr(self, f"{self._name}_values")
        if isinstance(ids, list) and not ids:
            return torch.zeros(0, dtype=torch.long, device=self.device), torch.zeros(0, dtype=torch.float64,
                                                                                     device=self.device)
        ids, vals = dim_zero_cat(ids), dim_zero_cat(vals)
        keyed = ids >= 0
        uniq, inv = torch.unique(ids[keyed], return_inverse=True)
        sums = torch.zeros(len(uniq), dtype=vals.dtype, device=vals.device).index_add_(0, inv, vals[keyed])
        counts = torch.zeros(len(uniq), dtype=vals.dtype, device=vals.device).index_add_(
            0, inv, torch.ones_like(vals[keyed]))
        return torch.cat([uniq, ids[~keyed]]), torch.cat([sums / counts, vals[~keyed]])

    def num_excluded(self) -> int:
        """Number of series whose value is NaN (left out of ``compute``)."""
        return int((~torch.isfinite(self.per_series()[1])).sum())

    def compute(self) -> torch.Tensor:
        v = self.per_series()[1]
        v = v[torch.isfinite(v)]
        if v.numel() == 0:
            return torch.tensor(float("nan"), dtype=torch.float64, device=self.device)
        return v.mean() if self.reduction == "mean" else torch.quantile(v, 0.5)


def _check_pt(preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if preds.shape != target.shape or preds.dim() != 2:
        raise ZooValueError(f"preds and target must both be [B, H]; got {tuple(preds.shape)}, "
                            f"{tuple(target.shape)}")
    return preds.detach().double(), target.detach().double()


class SMAPE(PerSeriesMetric):
    """sMAPE (percent) per series, mean or median over series; matches :func:`smape`."""

    _name = "smape"

    def update(self, preds: torch.Tensor, target: torch.Tensor, series: torch.Tensor | None = None) -> None:
        """``preds``, ``target`` ``[B, H]`` in original units; ``series`` ``[B]`` series index of each row."""
        p, t = _check_pt(preds, target)
        den = p.abs() + t.abs()
        terms = torch.where(den > 0, 2.0 * (p - t).abs() / torch.where(den > 0, den, 1.0), 0.0)
        self._append(100.0 * terms.mean(dim=1), series)


class MASE(PerSeriesMetric):
    """MASE per series, mean or median over series; matches :func:`mase`.

    The denominator of each row comes from ``mase_scale`` given to ``update`` (the datamodule's batches carry
    it) or, when that is omitted, from the in-sample histories given here, indexed by ``series``.

    Args:
        insample: one in-sample (training) array per series, in the order of the ``series`` indices.
        m: seasonal period, one for all series or one per series.
        reduction: ``"mean"`` or ``"median"`` over series.
    """

    _name = "mase"

    def __init__(self, insample: Sequence[np.ndarray] | None = None, m: int | Sequence[int] = 1,
                 reduction: str = "mean", **kwargs) -> None:
        super().__init__(reduction=reduction, **kwargs)
        scales = None
        if insample is not None:
            ms = [m] * len(insample) if isinstance(m, int | np.integer) else list(m)
            check_arg(len(ms) == len(insample), "m", m, f"an integer or {len(insample)} integers (one per series)")
            scales = torch.tensor([mase_scale(x, mi) for x, mi in zip(insample, ms)], dtype=torch.float64)
        self.register_buffer("denominators", scales, persistent=False)

    def update(self, preds: torch.Tensor, target: torch.Tensor, series: torch.Tensor | None = None,
               mase_scale: torch.Tensor | None = None) -> None:
        """``preds``, ``target`` ``[B, H]`` in original units; ``series`` ``[B]``; ``mase_scale`` ``[B]``."""
        p, t = _check_pt(preds, target)
        if mase_scale is None:
            if self.denominators is None or series is None:
                raise ZooValueError("MASE needs mase_scale=[B] in update, or insample= at construction and "
                                    "series=[B] in update")
            scale = self.denominators[series.to(self.denominators.device, torch.long)]
        else:
            scale = mase_scale.reshape(-1)
        self._append((p - t).abs().mean(dim=1) / scale.to(p.device, torch.float64), series)


# --------------------------------------------------------------------------------------------------------------
# M4 overall weighted average


def owa(smape_model: float, mase_model: float, smape_naive2: float, mase_naive2: float) -> float:
    """M4 Overall Weighted Average: ``0.5 · (sMAPE / sMAPE_Naive2 + MASE / MASE_Naive2)``.

    As in the M4 Competitor's Guide (M4 Team, 2018) and Makridakis et al. (2020, IJF 36(1)), the four inputs are
    dataset-level values, each the mean over all series of the per-series sMAPE or MASE, of the model and of the
    Naïve 2 benchmark (``zoo.tasks.forecasting.baselines.naive2``) on the same series; the ratio is taken of the
    means, not averaged per series. 1.0 = as accurate as Naïve 2, lower is better.

    Raises ZooValueError when a Naïve 2 value is not a positive finite number (the ratio is then undefined) or a
    model value is not finite.
    """
    vals = {"smape_model": smape_model, "mase_model": mase_model, "smape_naive2": smape_naive2,
            "mase_naive2": mase_naive2}
    for name, v in vals.items():
        check_arg(isinstance(v, int | float | np.floating | np.integer) and bool(np.isfinite(float(v))), name, v,
                  "a finite number")
    check_arg(float(smape_naive2) > 0.0, "smape_naive2", smape_naive2, "a positive number")
    check_arg(float(mase_naive2) > 0.0, "mase_naive2", mase_naive2, "a positive number")
    return 0.5 * (float(smape_model) / float(smape_naive2) + float(mase_model) / float(mase_naive2))
