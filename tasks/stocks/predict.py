"""``zoo predict stocks``: score a user's price panel for its last date with published weights.

The input is a long CSV ``date,instrument,open,high,low,close,volume`` (``panel.load_csv``: duplicates, bad
prices and missing columns are refused with one line). Features are computed exactly as in training and scaled
with the training scaler (the datamodule rebuilt from the weights' config recomputes it from the same offline
data). Stocks not tradable on the last date (no row that day, or zero volume) are not scored; a stock with less
history than the longest feature window gets zeros for the features it cannot compute (Qlib's Fillna), and
the output says how many days of history each stock had (fewer than the longest window, 60, means some
features were zeros).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from zoo.errors import ZooValueError
from zoo.io import atomic_write_text

from .baselines import TabularBaseline
from .data import feature_window
from .features import build_features
from .panel import load_csv

COLUMNS = ("rank", "instrument", "date", "score", "history_days")


def predict(loaded: Any, input_path: str | Path, *, out: str | Path | None = None, **_: Any) -> list[dict]:
    """Rank the instruments of ``input_path`` by the model's score for the file's last date.

    Returns one dict per instrument, best first, with the keys of :data:`COLUMNS`; ``out`` also writes them
    as CSV. Options other than ``out`` (``--horizon``, ``--plot``) do not apply to this task and are ignored.
    """
    module = loaded.module
    if isinstance(module.model, TabularBaseline):
        raise ZooValueError("stocks predictions need trained network weights (gru, moe or miga)")
    dm = loaded.datamodule
    panel = load_csv(input_path)
    fs = build_features(panel.prices)
    if fs.names != dm.features.names:
        missing = sorted(set(dm.features.names) - set(fs.names))
        raise ZooValueError(
            f"{input_path}: the model was trained on {len(dm.features.names)} features; this file allows "
            f"{len(fs.names)} (missing {', '.join(missing[:6])}{'…' if len(missing) > 6 else ''}: "
            "give open, high, low and volume too)"
        )
    day = len(fs.days) - 1
    inst = np.flatnonzero(fs.tradable[day])
    if inst.size < 2:
        raise ZooValueError(f"{input_path}: only {inst.size} instrument(s) trade on the last date "
                            f"{fs.days[day].date()}; scoring ranks at least 2")
    scaled = dm.scaler.transform(fs.x[max(0, day - dm.lookback + 1):day + 1])
    x = feature_window(scaled, scaled.shape[0] - 1, inst, dm.lookback)
    module.model.eval()
    with torch.no_grad():
        scores = module.model(torch.from_numpy(x)).pred.double().numpy()
    history = panel.prices.groupby("instrument").size()
    order = np.argsort(-scores, kind="stable")
    rows = [
        {
            "rank": r + 1,
            "instrument": str(fs.instruments[inst[i]]),
            "date": str(fs.days[day].date()),
            "score": float(scores[i]),
            "history_days": int(history[str(fs.instruments[inst[i]])]),
        }
        for r, i in enumerate(order)
    ]
    if out is not None:
        atomic_write_text(out, pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(index=False))
    return rows
