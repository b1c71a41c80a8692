"""What a trained recsys model carries so that it is rebuilt and served without its data (``TaskSpec.model_info``).

The network needs the data's input sizes (:class:`~.models.InputSpec` without its ``embed_dim``, which is
config), the task names and HoME's task groups. ``zoo predict`` needs what the model saw in training: per user
their feature ids, their history after the training split (the last L history positives: MovieLens rated items,
simulator clicked items, most recent last) and the items they interacted with there (not recommended again); per
item its feature ids and multi-hot fields; and both id maps (the data files' user and item ids).

Info keys (U users, I items, internal ids 1..U and 1..I, row 0 of every table is padding):

- ``regression`` (bool), ``tasks`` (names), ``task_groups`` (task indices per group), ``inputs``
  (``vocab_sizes``, ``dense_dim``, ``item_vocab``): every model;
- ``dataset`` (the source's name), ``user_tokens`` and ``item_tokens`` (lists of the source's ids of users 1..U
  and items 1..I), and the arrays ``user_features`` [U+1, Fu] int32, ``item_features`` [I+1, Fi] int32,
  ``item_dense`` [I+1, K] float32, ``history`` [U+1, L] int32 (0 = padding, left-padded) and the seen items as
  CSR, ``seen_indptr`` [U+2] int32 and ``seen_items`` [nnz] int32 (sorted per user): ranking sources only.

:func:`model_info` extracts them from a prepared :class:`~.data.RecsysDataModule`; :class:`Catalogue` serves
them, building batches with the datamodule's own :func:`~.data.with_features` (so training and serving batches
are built alike).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from zoo.errors import ZooValueError

from .config import RecsysConfig
from .data import RecsysDataModule, history_positives, interactions, with_features

RANKING_KEYS = ("dataset", "user_tokens", "item_tokens", "user_features", "item_features", "item_dense", "history",
                "seen_indptr", "seen_items")


def model_info(cfg: RecsysConfig, dm: RecsysDataModule) -> dict[str, Any]:
    """The info of a ``cfg`` model trained on ``dm``."""
    dm.prepare()
    spec = dm.input_spec(cfg.model.embed_dim)
    info: dict[str, Any] = {
        "regression": dm.regression, "tasks": list(dm.tasks), "task_groups": dm.task_groups,
        "inputs": {"vocab_sizes": spec.vocab_sizes, "dense_dim": spec.dense_dim, "item_vocab": spec.item_vocab},
    }
    if dm.regression:
        return info
    data, train = dm.data, dm.data.train
    n_users, n_items = data.vocab["user"], data.vocab["item"]
    seen = interactions(data, train)
    keys = np.unique(train.user[seen].astype(np.int64) * n_items + train.item[seen])
    indptr = np.searchsorted(keys // n_items, np.arange(n_users + 1), side="left")
    info.update({
        "dataset": data.name,
        "user_tokens": [str(t) for t in data.user_tokens[1:]],
        "item_tokens": [str(t) for t in data.item_tokens[1:]],
        "user_features": dm.user_table.numpy().astype(np.int32),
        "item_features": dm.item_table.numpy().astype(np.int32),
        "item_dense": dm.item_dense.numpy().astype(np.float32),
        "history": last_positives(train.user, train.item, history_positives(data, train), n_users,
                                  data.max_history),
        "seen_indptr": np.r_[indptr, len(keys)].astype(np.int32),
        "seen_items": (keys % n_items).astype(np.int32),
    })
    return info


def last_positives(user: np.ndarray, item: np.ndarray, positive: np.ndarray, n_users: int, max_len: int) -> np.ndarray:
    """[n_users, max_len] int32: each user's last ``max_len`` items of the ``positive`` rows, in row order (the
    split's rows are in time order per user), most recent last, left-padded with 0."""
    rows = np.flatnonzero(positive)
    rows = rows[np.argsort(user[rows], kind="stable")]
    u = user[rows]
    ends = np.searchsorted(u, u, side="right")  # one past each row's last same-user row
    from_end = ends - np.arange(len(rows)) - 1
    keep = from_end < max_len
    hist = np.zeros((n_users, max_len), np.int32)
    hist[u[keep], max_len - 1 - from_end[keep]] = item[rows[keep]]
    return hist


class Catalogue:
    """A ranking model's users, items and training context, from its info (see the module docstring).

    Args:
        info: the model info (arrays as torch tensors, as ``zoo.modelinfo.normalize`` gives them).
        max_users: ``data.max_users`` of the model's config: users above it were not trained on.
    """

    def __init__(self, info: Mapping[str, Any], max_users: int | None = None) -> None:
        missing = [k for k in RANKING_KEYS if k not in info]
        if missing:
            raise ZooValueError(f"recsys model info lacks {', '.join(missing)}; republish the weights from their run")
        self.dataset, self.max_users = str(info["dataset"]), max_users
        self.user_tokens, self.item_tokens = list(info["user_tokens"]), list(info["item_tokens"])
        self.users = {t: i for i, t in enumerate(self.user_tokens, 1)}
        self.items = {t: i for i, t in enumerate(self.item_tokens, 1)}
        self.user_features, self.item_features = info["user_features"].long(), info["item_features"].long()
        self.item_dense = info["item_dense"].float()
        self.history = info["history"].long()
        self.seen_indptr, self.seen_items = info["seen_indptr"].long(), info["seen_items"].long()

    @property
    def n_items(self) -> int:
        return len(self.item_tokens)

    def user_id(self, token: str) -> int:
        """The internal id of user ``token`` (as in the data files); unknown → ZooValueError."""
        uid = self.users.get(str(token))
        if uid is None:
            raise ZooValueError(f"unknown user id {token!r}; {self.dataset} has user ids such as "
                                f"{', '.join(self.user_tokens[:3])}")
        if self.max_users is not None and uid > self.max_users:
            raise ZooValueError(f"user {token!r} is not among the {self.max_users} users kept by data.max_users "
                                "when this model was trained")
        return uid

    def item_ids(self, tokens: list[str]) -> np.ndarray:
        """Internal ids of item ``tokens``; the first unknown one → ZooValueError."""
        unknown = [t for t in tokens if t not in self.items]
        if unknown:
            raise ZooValueError(f"unknown item id {unknown[0]!r} ({len(unknown)} unknown of {len(tokens)}); "
                                f"{self.dataset} has {len(self.items)} items with ids such as "
                                f"{', '.join(self.item_tokens[:3])}")
        return np.array([self.items[t] for t in tokens], np.int64)

    def train_context(self, uid: int) -> tuple[np.ndarray, np.ndarray]:
        """The user's items seen in training (sorted ids) and their history ``[L]`` after training."""
        lo, hi = int(self.seen_indptr[uid]), int(self.seen_indptr[uid + 1])
        return self.seen_items[lo:hi].numpy(), self.history[uid].numpy()

    def make_batch(self, rows: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return with_features(rows, self.user_features, self.item_features, self.item_dense)
