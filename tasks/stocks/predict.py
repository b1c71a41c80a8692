"""``zoo predict stocks``: score a user's price panel for its last date with published weights.

The input is a long CSV ``date,instrument,open,high,low,close,volume`` (``panel.load_csv``: duplicates, bad
prices and missing columns are refused with one line). Features are computed exactly as in training and scaled
with the training scaler, whose statistics travel in the model info with the feature names and the lookback
(``StockDataModule.model_info``), so no training data is read. Stocks not tradable on the last date (no row that
day, or zero volume) are not scored; a stock with less history than the longest feature window gets zeros for the
features it cannot compute (Qlib's Fillna), and the output says how many days of history each stock had (fewer
than the longest window, 60, means some features were zeros).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from zoo.errors import ZooValueError
from zoo.io import atomic_write_bytes

from .baselines import TabularBaseline
from .data import feature_window
from .features import RobustScaler, build_features
from .panel import load_csv

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLUMNS = ("rank", "instrument", "date", "score", "history_days")
PLOT_EACH = 15  # instruments drawn at each end of the ranking when there are more than twice as many


def predict(loaded: Any, input_path: str | Path, *, out: str | Path | None = None, top: int | None = None,
            plot: str | Path | None = None) -> list[dict]:
    """Rank the instruments of ``input_path`` by the model's score for the file's last date.

    Args:
        loaded: a :class:`zoo.task.LoadedModel` of the stocks task (its ``info`` from ``StockDataModule.model_info``).
        input_path: the price CSV.
        out: CSV path for the rows (columns :data:`COLUMNS`).
        top: keep the ``top`` best-ranked instruments only (all when None).
        plot: PNG path for a bar chart of the best and worst scores of the whole ranking.

    Returns:
        One dict per instrument, best first, with the keys of :data:`COLUMNS`.

    Raises:
        ZooValueError: a bad option or input; nothing is written then.
    """
    if top is not None and top < 1:
        raise ZooValueError(f"--top={top} is not allowed; give a positive number of instruments")
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise ZooValueError(f"--plot {plot}: the plot is a PNG; give a path ending in .png")
    if isinstance(loaded.module.model, TabularBaseline):
        raise ZooValueError("stocks predictions need trained network weights (gru, moe or miga)")
    rows = rank(loaded.module.model, loaded.info, input_path)
    payloads: list[tuple[str | Path, bytes]] = []
    kept = rows if top is None else rows[:top]
    if out is not None:
        payloads.append((out, pd.DataFrame(kept, columns=list(COLUMNS)).to_csv(index=False).encode("utf-8")))
    if plot is not None:
        payloads.append((plot, plot_png(rows)))
    for path, data in payloads:  # every file is built before any is written: a failure leaves no partial output
        atomic_write_bytes(path, data)
    return kept


def rank(model: torch.nn.Module, info: Mapping[str, Any], input_path: str | Path) -> list[dict]:
    """Every instrument tradable on the file's last date with its score, best first (rows of :data:`COLUMNS`)."""
    names, lookback = list(info["feature_names"]), int(info["lookback"])
    scaler = RobustScaler.from_arrays(info["scaler_median"], info["scaler_scale"])
    panel = load_csv(input_path)
    fs = build_features(panel.prices)
    if fs.names != names:
        missing = sorted(set(names) - set(fs.names))
        raise ZooValueError(
            f"{input_path}: the model was trained on {len(names)} features; this file allows "
            f"{len(fs.names)} (missing {', '.join(missing[:6])}{'…' if len(missing) > 6 else ''}: "
            "give open, high, low and volume too)"
        )
    day = len(fs.days) - 1
    inst = np.flatnonzero(fs.tradable[day])
    if inst.size < 2:
        raise ZooValueError(f"{input_path}: only {inst.size} instrument(s) trade on the last date "
                            f"{fs.days[day].date()}; scoring ranks at least 2")
    scaled = scaler.transform(fs.x[max(0, day - lookback + 1):day + 1])
    x = feature_window(scaled, scaled.shape[0] - 1, inst, lookback)
    model.eval()
    with torch.no_grad():
        scores = model(torch.from_numpy(x)).pred.double().numpy()
    history = panel.prices.groupby("instrument").size()
    order = np.argsort(-scores, kind="stable")
    return [
        {
            "rank": r + 1,
            "instrument": str(fs.instruments[inst[i]]),
            "date": str(fs.days[day].date()),
            "score": float(scores[i]),
            "history_days": int(history[str(fs.instruments[inst[i]])]),
        }
        for r, i in enumerate(order)
    ]


def plot_png(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """:func:`score_figure` as PNG bytes."""
    buffer = io.BytesIO()
    score_figure(rows).savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def score_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Scores of the best and worst :data:`PLOT_EACH` instruments as horizontal bars (all of them when there are
    few), beside the histogram of every score; bars at or above the day's median score are green, below it red."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    scores = np.array([r["score"] for r in rows])
    shown = list(rows) if len(rows) <= 2 * PLOT_EACH else [*rows[:PLOT_EACH], *rows[-PLOT_EACH:]]
    cut = len(rows) > len(shown)
    median = float(np.median(scores))
    y = np.arange(len(shown), dtype=float)
    if cut:
        y[PLOT_EACH:] += 1  # a blank slot between the best and the worst
    fig = Figure(figsize=(11, max(3.5, 0.24 * (len(y) + cut) + 1.6)), layout="constrained")
    bars, hist = fig.subplots(1, 2, width_ratios=(3, 2))
    shown_scores = np.array([r["score"] for r in shown])
    colours = np.where(shown_scores >= median, "tab:green", "tab:red")
    bars.barh(y, shown_scores, color=colours, height=0.75)
    bars.set_yticks(y, labels=[f"#{r['rank']} {r['instrument']}" for r in shown], fontsize=8)
    bars.invert_yaxis()  # rank 1 at the top
    bars.axvline(median, color="0.3", linewidth=0.8, linestyle="--")
    if cut:
        bars.axhline(PLOT_EACH, color="0.6", linewidth=0.6, linestyle=":")
        bars.text(0.5, PLOT_EACH, f"{len(rows) - len(shown)} instruments not shown", transform=bars.get_yaxis_transform(),
                  ha="center", va="center", fontsize=8, color="0.35", backgroundcolor="white")
    bars.set(xlabel="score (higher: expected to outperform the others)", ylabel="rank, instrument",
             title=f"best and worst {PLOT_EACH} of {len(rows)}" if cut else f"all {len(rows)} instruments")
    bars.legend(handles=[Patch(color="tab:green", label="at or above the median score"),
                         Patch(color="tab:red", label="below the median score"),
                         Line2D([], [], color="0.3", linewidth=0.8, linestyle="--", label="median score")],
                fontsize=8, loc="best")
    hist.hist(scores, bins=min(30, max(5, len(scores) // 3)), color="tab:blue", alpha=0.8)
    hist.axvline(median, color="0.3", linewidth=0.8, linestyle="--", label=f"median {median:.3g}")
    hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    hist.set(xlabel="score", ylabel="instruments", title="distribution of all scores")
    hist.legend(fontsize=8)
    fig.suptitle(f"Stock scores for {rows[0]['date']}: {len(rows)} instruments ranked by the model")
    return fig
