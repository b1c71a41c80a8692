"""``zoo predict recsys --weights W --user U [--top N] [--rank-by TASK] [ITEMS]``: a user's top-N items.

The user ``U`` is an id as written in the data files (MovieLens ``user_id``; the simulator's users are 1..n). The
datamodule is rebuilt from the weights' config (the same offline data, so ``data.path`` must exist where a
``movielens`` model is served), and the user's context is what the model saw in training: their features, and
as history their last ``data.max_history`` history positives of the training split (MovieLens: rated items;
simulator: clicked items), most recent last.

Candidates: every item of the catalogue the user has not interacted with in the training split (MovieLens: not
rated; simulator: not shown), or the item ids listed in the optional ITEMS file (one id per line; a header line
``item_id`` or ``item_id:token`` and blank lines are skipped; unknown ids are an error, ids the user already
rated are kept — the caller asked for them). Each candidate is scored for every task (probabilities,
σ(logit)); items are ranked by the ``rank_by`` task (default ``predict.rank_by`` of the config, else the first
task: ``watch`` = "would rate it" on MovieLens, ``long_view`` on the simulator), ties by item id.

Rows: ``{rank, item, <task>_score for every task}``; ``out`` also writes them as CSV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from zoo.errors import ZooValueError, check_arg
from zoo.io import atomic_write_text

from .data import RecsysDataModule


def read_item_ids(path: str | Path) -> list[str]:
    """Item ids from a text file, one per line (header ``item_id[:token]`` and blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise ZooValueError(f"{path}: no such file; expected a list of item ids, one per line")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    ids = [x for x in lines if x and x.split(":")[0] != "item_id"]
    if not ids:
        raise ZooValueError(f"{path}: no item ids")
    return ids


@torch.no_grad()
def score_items(model: torch.nn.Module, dm: RecsysDataModule, uid: int, items: np.ndarray,
                hist: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Probabilities ``[len(items), T]`` of user ``uid`` with history ``hist[L]`` for each item."""
    model.eval()
    out = []
    for lo in range(0, len(items), batch_size):
        item = torch.from_numpy(items[lo:lo + batch_size])
        n = len(item)
        rows = {"user": torch.full((n,), uid, dtype=torch.long), "item": item,
                "hist": torch.from_numpy(hist).expand(n, -1)}
        out.append(torch.sigmoid(model(dm.make_batch(rows)).pred.float()))
    return torch.cat(out).numpy() if out else np.zeros((0, len(dm.tasks)), np.float32)


def predict(loaded: Any, input_path: str | Path | None = None, *, user: str | int | None = None, top: int = 10,
            rank_by: str | None = None, out: str | Path | None = None, **_: Any) -> list[dict]:
    """The ``top`` items for ``user`` (see the module docstring). Options of other tasks (``horizon``,
    ``plot``...) are ignored."""
    dm: RecsysDataModule = loaded.datamodule
    if dm.regression:
        raise ZooValueError("this model was trained on MMoE synthetic data, which has no users or items to rank")
    if user is None:
        raise ZooValueError("zoo predict recsys needs --user USER_ID (an id as in the data's user file)")
    check_arg(isinstance(top, int) and top >= 1, "--top", top, "a positive int")
    task = rank_by or loaded.config.predict.rank_by or dm.tasks[0]
    if task not in dm.tasks:
        raise ZooValueError(f"--rank-by {task!r} is not a task of this model; tasks: {', '.join(dm.tasks)}")
    uid = dm.user_id(str(user))
    seen, hist = dm.train_context(uid)
    if input_path is not None:
        items = dm.item_ids(read_item_ids(input_path))
    else:
        items = np.setdiff1d(np.arange(1, dm.data.vocab["item"]), seen)
        if not len(items):
            raise ZooValueError(f"user {user!r} has interacted with every item in training; nothing left to rank")
    probs = score_items(loaded.module.model, dm, uid, items, hist)
    t = dm.tasks.index(task)
    order = np.lexsort((items, -probs[:, t]))[:top]
    tokens = dm.data.item_tokens
    rows = [{"rank": r + 1, "item": str(tokens[items[i]]),
             **{f"{name}_score": float(probs[i, k]) for k, name in enumerate(dm.tasks)}}
            for r, i in enumerate(order)]
    if out is not None:
        columns = ["rank", "item", *(f"{name}_score" for name in dm.tasks)]
        atomic_write_text(out, pd.DataFrame(rows, columns=columns).to_csv(index=False))
    return rows
