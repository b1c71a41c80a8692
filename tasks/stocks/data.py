"""``StockDataModule``: a panel → scaled features → one trading day per batch.

A batch is one day's cross-section: every instrument tradable that day with a window of its last ``lookback``
days of scaled features ``x[S, L, F]`` (days before its history or without data are zeros, Qlib's Fillna), the
z-scored label ``y[S]`` (NaN where the next return is unknown), the raw next return, its group (sector or true
style, −1 if the panel has none) and the instrument and day indices. Train days are shuffled each epoch; the
split is chronological (``features.chronological_split``) after a warm-up of the longest feature window.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.errors import ZooValueError

from .config import StocksConfig
from .features import WINDOWS, FeatureSet, RobustScaler, build_features, chronological_split
from .panel import Panel, load_panel

STAGES = ("train", "valid", "test")


@dataclass
class DayBatch:
    """One day's cross-section (see the module docstring); ``x`` is ``[S, L, F]``. A dataclass, so Lightning
    moves its tensors to the device as it does for tuples and dicts."""

    x: torch.Tensor
    y: torch.Tensor
    ret: torch.Tensor
    group: torch.Tensor
    inst: torch.Tensor
    day: int


def group_codes(panel: Panel, fs: FeatureSet) -> tuple[np.ndarray, list[str]]:
    """``[day, instrument]`` integer group codes (−1: none) and the group names, from the panel's labels."""
    codes = np.full((len(fs.days), len(fs.instruments)), -1, dtype=np.int64)
    if panel.groups is None:
        return codes, []
    names = sorted(panel.groups.astype(str).unique())
    table = panel.groups.astype(str).map({n: i for i, n in enumerate(names)})
    wide = table.unstack("instrument").reindex(index=fs.days, columns=fs.instruments)
    filled = wide.ffill().bfill()  # a constant sector is stated once per instrument; styles are per day
    codes[:] = filled.fillna(-1).to_numpy(np.int64)
    return codes, names


def subset(panel: Panel, max_instruments: int | None, max_days: int | None) -> Panel:
    """The panel restricted to its first ``max_instruments`` instruments by name and its last ``max_days`` days."""
    prices = panel.prices
    if max_instruments is not None:
        keep = sorted(prices["instrument"].unique())[:max_instruments]
        prices = prices[prices["instrument"].isin(keep)]
    if max_days is not None:
        days = np.sort(prices["date"].unique())[-max_days:]
        prices = prices[prices["date"].isin(days)]
    if prices is panel.prices:
        return panel
    groups = panel.groups
    if groups is not None:
        groups = groups[pd.MultiIndex.from_frame(prices[["date", "instrument"]])]
    return replace(panel, prices=prices.reset_index(drop=True), groups=groups)


def feature_window(scaled: np.ndarray, day: int, inst: np.ndarray, lookback: int) -> np.ndarray:
    """``[S, L, F]`` scaled features of instruments ``inst`` over the ``lookback`` days ending at ``day``; days
    before the panel starts are zeros (Qlib's Fillna)."""
    window = scaled[max(0, day - lookback + 1):day + 1, inst]  # [L', S, F]
    if window.shape[0] < lookback:
        pad = np.zeros((lookback - window.shape[0], *window.shape[1:]), dtype=window.dtype)
        window = np.concatenate([pad, window])
    return np.ascontiguousarray(window.transpose(1, 0, 2))


class DayDataset(Dataset):
    """The days of one split; item i is that day's :class:`DayBatch` built on the fly from shared arrays."""

    def __init__(self, dm: StockDataModule, days: np.ndarray, need_label: bool) -> None:
        self.dm, self.need_label = dm, need_label
        keep = [d for d in days if self._instruments(d).size >= 2]
        self.days = np.asarray(keep, dtype=np.int64)

    def _instruments(self, day: int) -> np.ndarray:
        ok = self.dm.features.tradable[day]
        if self.need_label:
            ok = ok & np.isfinite(self.dm.features.label[day])
        return np.flatnonzero(ok)

    def __len__(self) -> int:
        return len(self.days)

    def __getitem__(self, i: int) -> DayBatch:
        day = int(self.days[i])
        inst = self._instruments(day)
        fs = self.dm.features
        return DayBatch(
            x=torch.from_numpy(feature_window(self.dm.scaled, day, inst, self.dm.lookback)),
            y=torch.from_numpy(fs.label[day, inst].astype(np.float32)),
            ret=torch.from_numpy(fs.ret[day, inst].astype(np.float32)),
            group=torch.from_numpy(self.dm.groups[day, inst]),
            inst=torch.from_numpy(inst),
            day=day,
        )


class StockDataModule(L.LightningDataModule):
    """Loads a panel by name (``panel.load_panel``), builds features once, and serves days of each split.

    Args:
        source: panel name (``sp500``, ``skfolio_sp500``, ``style_panel``, ``style_panel_control``) or a file
            format read from ``path`` (``csv``, ``qlib``).
        lookback: days of features per sample (the sequence the encoder reads).
        split: train/valid/test fractions of the days after the warm-up.
        panel_kwargs: passed to the panel loader (e.g. ``n_stocks`` of the style panel, ``market`` of Qlib).
        max_instruments, max_days: keep the first instruments (by name) and the last days of the panel, whatever
            its source (smoke runs).
    """

    def __init__(
        self,
        source: str,
        path: str | None = None,
        *,
        lookback: int = 20,
        split: tuple[float, float, float] = (0.6, 0.2, 0.2),
        panel_kwargs: dict | None = None,
        warmup: int | None = None,
        max_instruments: int | None = None,
        max_days: int | None = None,
    ) -> None:
        super().__init__()
        if lookback < 1:
            raise ZooValueError(f"data.lookback={lookback} must be a positive number of days")
        if abs(sum(split) - 1) > 1e-6 or min(split) <= 0:
            raise ZooValueError(f"data.split={list(split)} must be three positive fractions summing to 1")
        self.source, self.path, self.lookback, self.split_fractions = source, path, lookback, tuple(split)
        self.panel_kwargs = dict(panel_kwargs or {})
        self.warmup = max(WINDOWS) if warmup is None else warmup
        self.max_instruments, self.max_days = max_instruments, max_days
        self.panel: Panel | None = None

    def prepare(self) -> None:
        """Load the panel, compute features, fit the scaler on training days; idempotent."""
        if self.panel is not None:
            return
        self.panel = subset(load_panel(self.source, self.path, **self.panel_kwargs), self.max_instruments, self.max_days)
        self.features = build_features(self.panel.prices)
        self.splits = chronological_split(self.features.days, self.split_fractions, first=self.warmup)
        train_rows = self.features.x[self.splits["train"]][self.features.tradable[self.splits["train"]]]
        self.scaler = RobustScaler.fit(train_rows)
        self.scaled = self.scaler.transform(self.features.x)
        self.groups, self.group_names = group_codes(self.panel, self.features)

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    @property
    def num_features(self) -> int:
        return len(self.features.names)

    def model_info(self) -> dict[str, Any]:
        """What the network and ``zoo predict`` take from the training panel: the feature list (its length sizes
        the encoder), the lookback and the training scaler's statistics, so that weights score a new file exactly
        as the training days were scaled, without the training data. The statistics stay float64 as fitted
        (two vectors of ``num_features``)."""
        self.prepare()
        return {
            "num_features": self.num_features,
            "feature_names": list(self.features.names),
            "lookback": self.lookback,
            "scaler_median": self.scaler.median,
            "scaler_scale": self.scaler.scale,
        }

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    def dataset(self, split: str) -> DayDataset:
        if split not in STAGES:
            raise ZooValueError(f"split {split!r} is not one of {', '.join(STAGES)}")
        return DayDataset(self, self.splits[split], need_label=split != "test")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=None, shuffle=shuffle, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def rows(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Flat (day, instrument) rows of a split for the tabular baselines: the last day's scaled features,
        the label, and the day and instrument indices (labelled rows only outside the test split)."""
        ds = self.dataset(split)
        xs, ys, days, insts = [], [], [], []
        for day in ds.days:
            inst = ds._instruments(int(day))
            xs.append(self.scaled[day, inst])
            ys.append(self.features.label[day, inst])
            days.append(np.full(inst.size, day))
            insts.append(inst)
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(days), np.concatenate(insts)

    def frame(self, days: np.ndarray, insts: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        """The long frame the metrics and the backtest read: date, instrument, score, label, ret, group."""
        fs = self.features
        return pd.DataFrame({
            "date": fs.days[days],
            "instrument": fs.instruments[insts].astype(str),
            "score": scores,
            "label": fs.label[days, insts],
            "ret": fs.ret[days, insts],
            "group": self.groups[days, insts],
        })


def build_datamodule(cfg: StocksConfig) -> StockDataModule:
    d = cfg.data
    return StockDataModule(d.source, d.path, lookback=d.lookback, split=tuple(d.split), panel_kwargs=d.panel,
                           max_instruments=d.max_instruments, max_days=d.max_days)


def model_info(cfg: StocksConfig, dm: StockDataModule) -> dict[str, Any]:
    return dm.model_info()
