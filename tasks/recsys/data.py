"""``RecsysDataModule``: a recsys source → row batches in the dict format :mod:`.models` reads.

A batch of B rows (T tasks, L = ``data.max_history``, F sparse fields) holds:

- ``sparse[B, F]`` int64 field ids: the user id, the user's features, the target item's id-features (MovieLens:
  ``user, age, gender, occupation, zip, year``; simulator: ``user, segment, category, duration``);
- ``dense[B, K]`` float32: the item's multi-hot fields (MovieLens genres, simulator tags); MMoE synthetic: the
  features ``x``;
- ``item[B]`` and ``hist[B, L]`` (0 = padding): the target item and the user's earlier positives (MovieLens: rated
  items; simulator: clicked items), most recent last;
- ``labels[B, T]`` float32 and ``label_mask[B, T]`` bool (losses and metrics skip masked labels: MovieLens's
  rating tasks on sampled rows); ``user[B]`` (GAUC groups) and ``long_tail[B]``.

The MMoE synthetic batch has ``dense``, ``labels`` and ``label_mask`` only. Training batches are shuffled rows
(a ``BatchSampler`` drawn from torch's seeded RNG, one index gather per batch rather than one per row).

A task without a positive label in a split (a sparse task on a smoke-sized subset) is not an error: it is logged
as a warning here; its training loss then only pushes scores down, and its test AUC/GAUC are NaN (counted in
``test/tasks_without_positives``, see :mod:`.evaluation`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from zoo.errors import ZooValueError, check_arg

from .config import DataConfig, RecsysConfig
from .models import InputSpec
from .movielens import RecData, RecSplit, movielens
from .synthetic import MMoESynthetic, kuaishou_sim, mmoe_synthetic

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SYNTHETIC_TASKS = ("task1", "task2")
SIM_HISTORY_TASK = "click"  # the simulator's history is the user's clicked items (synthetic.py)
CONSEQUENCE = {"train": "its loss only pushes its scores down",
               "val": "the best-epoch choice sees only its negatives",
               "test": "its test AUC/GAUC will be NaN"}


def load_source(cfg: DataConfig) -> RecData | MMoESynthetic:
    """The rows of ``cfg.source`` (see :class:`~.config.DataConfig`)."""
    if cfg.source == "mmoe_synthetic":
        return mmoe_synthetic(cfg.p, n_train=cfg.n_train + cfg.n_val, n_test=cfg.n_test, dim=cfg.dim, c=cfg.c,
                              m=cfg.m, sine_sd=cfg.sine_sd, noise_sd=cfg.noise_sd, seed=cfg.seed)
    if cfg.source == "simulator":
        options = dict(cfg.simulator)
        for key in ("seed", "max_history", "long_tail_max"):
            if key in options:
                raise ZooValueError(f"data.simulator.{key}: set data.{key} instead")
        try:
            return kuaishou_sim(seed=cfg.seed, max_history=cfg.max_history, long_tail_max=cfg.long_tail_max, **options)
        except TypeError as err:
            raise ZooValueError(f"data.simulator: {err}") from None
    path = cfg.path if cfg.source == "movielens" else None
    return movielens(path, seed=cfg.seed, negatives=cfg.negatives, max_history=cfg.max_history,
                     long_tail_max=cfg.long_tail_max)


def interactions(data: RecData, split: RecSplit) -> np.ndarray:
    """[N] bool, the rows that are real interactions: MovieLens's rated rows (not the sampled negatives),
    every simulator impression."""
    rating = split.values.get("rating")
    return np.isfinite(rating) if rating is not None else np.ones(len(split), bool)


def history_positives(data: RecData, split: RecSplit) -> np.ndarray:
    """[N] bool, the rows whose item enters later histories (MovieLens: rated; simulator: clicked)."""
    if "rating" in split.values:
        return np.isfinite(split.values["rating"])
    return split.labels[:, data.tasks.index(SIM_HISTORY_TASK)] > 0


def with_features(rows: Mapping[str, torch.Tensor], user_features: torch.Tensor, item_features: torch.Tensor,
                  item_dense: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's batch from rows holding ``user[B]`` and ``item[B]``: ``sparse`` = user id ‖ user features ‖
    item features and ``dense`` = the item's multi-hot fields, looked up by id in the tables (the datamodule's
    when training, the model info's when serving)."""
    user, item = rows["user"], rows["item"]
    sparse = torch.cat([user[:, None], user_features[user], item_features[item]], 1)
    return {**rows, "sparse": sparse, "dense": item_dense[item]}


class RowBatches(Dataset):
    """The rows of one split; item ``idx`` (a list of row indices from a ``BatchSampler``) is the batch dict."""

    def __init__(self, dm: RecsysDataModule, split: str) -> None:
        self.dm, self.split = dm, split
        self.rows = dm.tensors[split]

    def __len__(self) -> int:
        return self.rows["labels"].shape[0]

    def __getitem__(self, idx: Any) -> dict[str, torch.Tensor]:
        return self.dm.make_batch({k: v[torch.as_tensor(idx)] for k, v in self.rows.items()})


_WARNED: set[tuple[str, str, str, int]] = set()  # data sets already warned about (a board builds one per run)


class RecsysDataModule(L.LightningDataModule):
    """Loads ``cfg.source`` once (``prepare``), keeps each split's rows as tensors, serves row batches."""

    def __init__(self, cfg: DataConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.data: RecData | None = None
        self.synthetic: MMoESynthetic | None = None
        self.tensors: dict[str, dict[str, torch.Tensor]] = {}

    # ---------------------------------------------------------------------------------------------- loading

    def prepare(self) -> None:
        """Load the source, keep ``max_users``, build the per-split tensors; idempotent."""
        if self.tensors:
            return
        source = load_source(self.cfg)
        if isinstance(source, MMoESynthetic):
            self.synthetic = source
            n = self.cfg.n_train
            parts = {"train": (source.x_train[:n], source.y_train[:n]), "val": (source.x_train[n:], source.y_train[n:]),
                     "test": (source.x_test, source.y_test)}
            for split, (x, y) in parts.items():
                self.tensors[split] = {"dense": torch.from_numpy(x), "labels": torch.from_numpy(y),
                                       "label_mask": torch.ones(y.shape, dtype=torch.bool)}
        else:
            if self.cfg.max_users is not None:
                for split in SPLITS:
                    part = getattr(source, split)
                    setattr(source, split, part.subset(part.user <= self.cfg.max_users))
            self.data = source
            self._tables(source)
            for split in SPLITS:
                part = source.split(split)
                self.tensors[split] = {
                    "user": torch.from_numpy(part.user), "item": torch.from_numpy(part.item),
                    "hist": torch.from_numpy(part.history), "labels": torch.from_numpy(part.labels),
                    "label_mask": torch.from_numpy(part.label_mask), "long_tail": torch.from_numpy(part.long_tail),
                }
        for split in SPLITS:
            self._warn_without_positives(split)

    def _tables(self, data: RecData) -> None:
        """Feature lookup tables: ``user_table[n_users+1, Fu]``, ``item_table[n_items+1, Fi]`` (ids) and
        ``item_dense[n_items+1, K]`` (multi-hot)."""
        n_users, n_items = data.vocab["user"], data.vocab["item"]
        self.user_fields, self.item_fields = list(data.user_features), list(data.item_features)
        self.user_table = torch.from_numpy(np.stack([data.user_features[f] for f in self.user_fields], 1)
                                           if self.user_fields else np.zeros((n_users, 0), np.int64))
        self.item_table = torch.from_numpy(np.stack([data.item_features[f] for f in self.item_fields], 1)
                                           if self.item_fields else np.zeros((n_items, 0), np.int64))
        dense = [data.item_multi_hot[f] for f in data.item_multi_hot]
        self.item_dense = torch.from_numpy(np.concatenate(dense, 1).astype(np.float32) if dense
                                           else np.zeros((n_items, 0), np.float32))

    def _warn_without_positives(self, split: str) -> None:
        if self.regression:
            return
        rows = self.tensors[split]
        defined = rows["label_mask"].sum(0)
        positives = (rows["labels"] * rows["label_mask"]).sum(0)
        for t, task in enumerate(self.tasks):
            key = (self.cfg.source, split, task, int(defined[t]))
            if int(defined[t]) and not float(positives[t]) and key not in _WARNED:  # once per process, not per run
                _WARNED.add(key)
                log.warning("recsys: task %r has no positive label in the %s split (%d labelled rows); %s",
                            task, split, int(defined[t]), CONSEQUENCE[split])

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    # --------------------------------------------------------------------------------------------- what it is

    @property
    def regression(self) -> bool:
        """MMoE synthetic: real-valued targets (MSE), not binary tasks."""
        return self.cfg.source == "mmoe_synthetic"

    @property
    def tasks(self) -> tuple[str, ...]:
        return SYNTHETIC_TASKS if self.regression else self.data.tasks

    @property
    def task_groups(self) -> list[list[int]]:
        """HoME's a-priori groups as task indices (one group of all tasks for MMoE synthetic)."""
        if self.regression:
            return [list(range(len(SYNTHETIC_TASKS)))]
        return [[self.tasks.index(t) for t in group] for group in self.data.task_groups.values()]

    def input_spec(self, embed_dim: int) -> InputSpec:
        """What the batches hold, for :func:`.models.build_model`."""
        if self.regression:
            return InputSpec([], embed_dim, dense_dim=self.cfg.dim)
        vocab = self.data.vocab
        fields = [vocab["user"], *(vocab[f] for f in self.user_fields), *(vocab[f] for f in self.item_fields)]
        return InputSpec(fields, embed_dim, dense_dim=self.item_dense.shape[1], item_vocab=vocab["item"])

    # ------------------------------------------------------------------------------------------------ batches

    def make_batch(self, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's batch dict from gathered split rows (features looked up by user and item id)."""
        if self.regression:
            return dict(rows)
        return with_features(rows, self.user_table, self.item_table, self.item_dense)

    def dataset(self, split: str) -> RowBatches:
        check_arg(split in SPLITS, "split", split, SPLITS)
        self.prepare()
        return RowBatches(self, split)

    def loader(self, split: str, shuffle: bool = False) -> DataLoader:
        ds = self.dataset(split)
        size = self.cfg.batch_size if split == "train" else self.cfg.eval_batch_size
        sampler = BatchSampler(RandomSampler(ds) if shuffle else SequentialSampler(ds), size, drop_last=False)
        return DataLoader(ds, sampler=sampler, batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")


def build_datamodule(cfg: RecsysConfig) -> RecsysDataModule:
    return RecsysDataModule(cfg.data)
