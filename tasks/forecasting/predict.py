"""``zoo predict forecasting``: forecast users' own series with trained weights.

Input: a CSV in long format with a header and columns ``id,value`` (rows of each series in time order) or a
single ``value`` column (one series). Each series is fed its last ``L`` values, scaled by their mean absolute
value exactly as in training (shorter series are left-padded with their first value), and the model's direct
``H``-step forecast is scaled back.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.errors import ZooValueError
from zoo.io import atomic_write_bytes, atomic_write_text

from .data import window_scale


def read_series_csv(path: str | Path) -> dict[str, np.ndarray]:
    """``{id: values}`` from a long ``id,value`` CSV (or a lone ``value`` column); bad rows name their line."""
    path = Path(path)
    if not path.exists():
        raise ZooValueError(f"{path}: no such file")
    series: dict[str, list[float]] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "value" not in reader.fieldnames:
            raise ZooValueError(f"{path}: expected a header with a 'value' column (and optionally 'id')")
        for lineno, row in enumerate(reader, start=2):
            try:
                value = float(row["value"])
            except (TypeError, ValueError):
                raise ZooValueError(f"{path}:{lineno}: value {row['value']!r} is not a number") from None
            if not np.isfinite(value):
                raise ZooValueError(f"{path}:{lineno}: value {row['value']!r} is not finite")
            series.setdefault(row.get("id") or "series", []).append(value)
    if not series:
        raise ZooValueError(f"{path}: no rows")
    return {k: np.asarray(v, dtype=np.float64) for k, v in series.items()}


def forecast(model: torch.nn.Module, history: dict[str, np.ndarray], lookback: int, horizon: int) -> dict[str, np.ndarray]:
    """Direct forecasts of the next ``horizon`` values of every series, in original units."""
    windows = np.stack([np.concatenate([np.full(max(0, lookback - len(v)), v[0]), v])[-lookback:] for v in history.values()])
    scale = window_scale(windows)
    model.eval()
    with torch.no_grad():
        out = model(torch.as_tensor(windows / scale[:, None], dtype=torch.float32))
    pred = getattr(out, "pred", out).double().numpy() * scale[:, None]
    return {sid: pred[i, :horizon] for i, sid in enumerate(history)}


def predict(loaded: Any, input_path: str | Path, *, horizon: int | None, out: str | None, plot: str | None) -> list[dict]:
    """Forecast every series of ``input_path``; optionally write a CSV (``id,step,forecast``) and a PNG plot."""
    dm = loaded.datamodule
    trained_h = dm.horizon
    horizon = trained_h if horizon is None else horizon
    if not 1 <= horizon <= trained_h:
        raise ZooValueError(f"--horizon={horizon} is not allowed; this model forecasts 1..{trained_h} steps directly")
    history = read_series_csv(input_path)
    forecasts = forecast(loaded.module.model, history, dm.lookback, horizon)
    rows = [{"id": sid, "step": h + 1, "forecast": float(v)} for sid, f in forecasts.items() for h, v in enumerate(f)]
    if out:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["id", "step", "forecast"])
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out, buffer.getvalue())
    if plot:
        atomic_write_bytes(plot, _plot_png(history, forecasts))
    return rows


def _plot_png(history: dict[str, np.ndarray], forecasts: dict[str, np.ndarray], max_series: int = 6) -> bytes:
    from matplotlib.figure import Figure

    ids = list(history)[:max_series]
    fig = Figure(figsize=(8, 2.0 * len(ids)))
    axes = fig.subplots(len(ids), 1, squeeze=False)[:, 0]
    for ax, sid in zip(axes, ids):
        hist, fc = history[sid], forecasts[sid]
        ax.plot(np.arange(len(hist)), hist, color="0.3", label="history")
        ax.plot(np.arange(len(hist), len(hist) + len(fc)), fc, color="tab:red", marker=".", label="forecast")
        ax.set_title(str(sid), fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
