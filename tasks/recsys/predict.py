"""``zoo predict recsys --weights W --user U [--top N] [--rank-by TASK] [--plot PNG] [ITEMS]``: a user's top-N items.

Everything comes from the model and its info (:mod:`.serving`), never from the data: the user ``U`` is an id as
written in the data files (MovieLens ``user_id``; the simulator's users are 1..n), and the user's context is what
the model saw in training: their features, and as history their last ``data.max_history`` history positives of the
training split (MovieLens: rated items; simulator: clicked items), most recent last.

Candidates: every item of the catalogue the user has not interacted with in the training split (MovieLens: not
rated; simulator: not shown), or the item ids listed in the optional ITEMS file (one id per line; a header line
``item_id`` or ``item_id:token`` and blank lines are skipped; unknown ids are an error, ids the user already
rated are kept — the caller asked for them). Each candidate is scored for every task (probabilities,
σ(logit)); items are ranked by the ``rank_by`` task (default ``predict.rank_by`` of the config, else the first
task: ``watch`` = "would rate it" on MovieLens, ``long_view`` on the simulator), ties by item id.

Rows: ``{rank, item, <task>_score for every task}``; ``out`` also writes them as CSV, ``plot`` as a heatmap of
every task's score for the listed items (PNG).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.errors import ZooValueError, check_arg
from zoo.io import atomic_write_bytes, atomic_write_text

from .serving import Catalogue

MAX_LABELLED_ROWS = 50  # taller lists label every k-th row so the item labels never overlap


def read_item_ids(path: str | Path) -> list[str]:
    """Item ids from a text file, one per line (header ``item_id[:token]`` and blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        what = "a directory" if path.is_dir() else "no such file"
        raise ZooValueError(f"{path}: {what}; expected a list of item ids, one per line")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as err:
        raise ZooValueError(f"{path}: not UTF-8 text (byte {err.start}); expected a list of item ids, one per "
                            "line") from None
    ids = [x for x in lines if x and x.split(":")[0] != "item_id"]
    if not ids:
        raise ZooValueError(f"{path}: no item ids")
    return ids


@torch.no_grad()
def score_items(model: torch.nn.Module, catalogue: Catalogue, uid: int, items: np.ndarray, hist: np.ndarray,
                num_tasks: int, batch_size: int = 4096) -> np.ndarray:
    """Probabilities ``[len(items), T]`` of user ``uid`` with history ``hist[L]`` for each item."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for lo in range(0, len(items), batch_size):
        item = torch.from_numpy(items[lo:lo + batch_size]).long()
        n = len(item)
        rows = {"user": torch.full((n,), uid, dtype=torch.long), "item": item,
                "hist": torch.from_numpy(hist).long().expand(n, -1)}
        batch = {k: v.to(device) for k, v in catalogue.make_batch(rows).items()}
        out.append(torch.sigmoid(model(batch).pred.float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, num_tasks), np.float32)


def predict(loaded: Any, input_path: str | Path | None = None, *, out: str | Path | None = None,
            user: str | int | None = None, top: int = 10, rank_by: str | None = None,
            plot: str | Path | None = None) -> list[dict]:
    """The ``top`` items for ``user`` (see the module docstring)."""
    info = loaded.info
    if info["regression"]:
        raise ZooValueError("this model was trained on MMoE synthetic data, which has no users or items to rank")
    if user is None:
        raise ZooValueError("zoo predict recsys needs --user USER_ID (an id as in the data's user file)")
    check_arg(isinstance(top, int) and top >= 1, "--top", top, "a positive int")
    tasks = list(info["tasks"])
    task = rank_by or loaded.config.predict.rank_by or tasks[0]
    if task not in tasks:
        raise ZooValueError(f"--rank-by {task!r} is not a task of this model; tasks: {', '.join(tasks)}")
    catalogue = Catalogue(info, loaded.config.data.max_users)
    uid = catalogue.user_id(str(user))
    seen, hist = catalogue.train_context(uid)
    if input_path is not None:
        items = catalogue.item_ids(read_item_ids(input_path))
    else:
        items = np.setdiff1d(np.arange(1, catalogue.n_items + 1), seen)
        if not len(items):
            raise ZooValueError(f"user {user!r} has interacted with every item in training; nothing left to rank")
    probs = score_items(loaded.module.model, catalogue, uid, items, hist, len(tasks))
    t = tasks.index(task)
    order = np.lexsort((items, -probs[:, t]))[:top]
    columns = [f"{name}_score" for name in tasks]
    rows = [{"rank": r + 1, "item": catalogue.item_tokens[items[i] - 1],
             **{col: float(probs[i, k]) for k, col in enumerate(columns)}}
            for r, i in enumerate(order)]
    title = f"{catalogue.dataset}: top {len(rows)} items for user {user}, ranked by {task}"
    png = plot_scores(rows, tasks, task, title) if plot is not None else None
    if out is not None:
        atomic_write_text(out, rows_csv(rows, ["rank", "item", *columns]))
    if png is not None:
        atomic_write_bytes(plot, png)
    return rows


def rows_csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def plot_scores(rows: list[dict], tasks: list[str], rank_by: str, title: str) -> bytes:
    """PNG heatmap of every task's probability (columns) for the ranked items (rows, best first), the ranking
    task's column label in bold; cells hold their value while the list is short enough to read them."""
    from matplotlib.figure import Figure  # not pyplot: no global backend switch, no figure registry

    scores = np.array([[r[f"{t}_score"] for t in tasks] for r in rows])
    n, T = scores.shape
    fig = Figure(figsize=(2.8 + 1.0 * T, 1.8 + 0.28 * min(n, MAX_LABELLED_ROWS)))
    ax = fig.subplots()
    im = ax.imshow(scores, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(T), labels=tasks)
    ax.get_xticklabels()[tasks.index(rank_by)].set_fontweight("bold")
    step = math.ceil(n / MAX_LABELLED_ROWS)
    ax.set_yticks(range(0, n, step), labels=[f"#{rows[i]['rank']}: {rows[i]['item']}" for i in range(0, n, step)])
    if n <= MAX_LABELLED_ROWS:
        for i in range(n):
            for k in range(T):
                ax.text(k, i, f"{scores[i, k]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if scores[i, k] > 0.6 else "white")
    ax.set_xlabel("task")
    ax.set_ylabel("rank: item id")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="predicted probability")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
