"""``VADDataModule``: a video source → weakly supervised training batches and whole test videos.

Training follows RTFM and UR-DMU: every video is resampled to ``data.segments`` segments (each the mean of the
snippets that fall in it), one crop is drawn per video and step, and a step holds ``batch_size`` normal plus
``batch_size`` abnormal videos. An epoch walks the larger side once in a shuffled order and cycles the smaller
one, so no video is dropped. The batch order and crops are drawn from torch's global RNG when the loader starts
an epoch, which is what the zoo's resumable checkpoints restore.

Test batches hold whole videos of one crop at their own lengths, padded and masked (:class:`~.batch.VADBatch`);
evaluation (:mod:`.evaluation`) scores every crop and averages, as ten-crop testing does.

Experts: ``model.experts=class`` gives one expert per anomaly class of the training split (sorted names);
``kmeans`` clusters the abnormal training videos into ``model.num_clusters`` groups by a descriptor of their most
deviant snippets (:func:`anomaly_descriptor`) and trains one expert per cluster, so no class names are used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from zoo.errors import ZooValueError

from .batch import VADBatch
from .config import EXPERT_ARCHS, DataConfig, VideoAnomalyConfig
from .features import NORMAL, VADSplit, Video, load_features
from .synthvad import SynthVAD

TEST_BATCH = 16  # test videos per forward pass
DESCRIPTOR_SHARE = 0.1  # share of a video's snippets, the most deviant, that describe its anomaly for k-means


def load_splits(cfg: DataConfig) -> tuple[VADSplit, VADSplit, dict[str, Any]]:
    """The training and test splits of ``cfg.source`` and what a model needs to know about their features
    (``encoder``: the snippet encoder of the clips source, else empty)."""
    if cfg.source == "synthvad":
        try:
            data = SynthVAD(seed=cfg.seed, **cfg.synth)
        except TypeError as err:
            raise ZooValueError(f"data.synth: {err}") from None
        return data.split("train"), data.split("test"), {}
    if cfg.source == "features":
        return load_features(cfg.train_list), load_features(cfg.test_list, cfg.annotations), {}
    from .clips import ClipsDataset

    try:
        clips = ClipsDataset(seed=cfg.seed, cache_dir=cfg.cache_dir, **cfg.clips)
    except TypeError as err:
        raise ZooValueError(f"data.clips: {err}") from None
    return clips.split("train"), clips.split("test"), {"encoder": clips.encoder.spec()}


def resample(features: np.ndarray, segments: int) -> np.ndarray:
    """``[T, ...]`` → ``[segments, ...]``: segment j is the mean of snippets ``[⌊jT/S⌋, ⌊(j+1)T/S⌋)``, or the
    snippet at ``⌊jT/S⌋`` when that range is empty (a video shorter than ``segments``)."""
    length = len(features)
    bounds = np.linspace(0, length, segments + 1).astype(int)
    out = np.empty((segments, *features.shape[1:]), dtype=np.float32)
    for j in range(segments):
        lo, hi = bounds[j], bounds[j + 1]
        out[j] = features[lo:hi].mean(axis=0) if hi > lo else features[min(lo, length - 1)]
    return out


def anomaly_descriptor(features: np.ndarray) -> np.ndarray:
    """What a video's anomaly looks like, for clustering: the mean deviation from the video's median snippet over
    its :data:`DESCRIPTOR_SHARE` most deviant snippets (crops averaged), scaled to unit length."""
    x = features.mean(axis=1) if features.ndim == 3 else features
    deviation = x - np.median(x, axis=0)
    count = max(1, int(round(DESCRIPTOR_SHARE * len(x))))
    top = np.argsort(-np.linalg.norm(deviation, axis=1), kind="stable")[:count]
    d = deviation[top].mean(axis=0)
    return d / max(float(np.linalg.norm(d)), 1e-12)


def kmeans_experts(videos: Sequence[Video], clusters: int, seed: int) -> np.ndarray:
    """Expert index per video: the k-means cluster of an abnormal video's :func:`anomaly_descriptor`, −1 for normal."""
    from sklearn.cluster import KMeans

    abnormal = [i for i, v in enumerate(videos) if v.cls != NORMAL]
    if len(abnormal) < clusters:
        raise ZooValueError(f"model.num_clusters={clusters} is more than the {len(abnormal)} abnormal training videos")
    descriptors = np.stack([anomaly_descriptor(videos[i].features) for i in abnormal])
    labels = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit_predict(descriptors)
    out = np.full(len(videos), -1, dtype=np.int64)
    out[abnormal] = labels
    return out


def feature_scale(videos: Sequence[Video]) -> dict[str, np.ndarray]:
    """Per-feature mean and standard deviation (at least 1e-6) over every snippet and crop of ``videos``."""
    x = np.concatenate([v.features.reshape(-1, v.features.shape[-1]) for v in videos]).astype(np.float64)
    return {"feature_mean": x.mean(0).astype(np.float32), "feature_std": np.maximum(x.std(0), 1e-6).astype(np.float32)}


def standardize(features: np.ndarray, scale: dict[str, Any]) -> np.ndarray:
    """``features`` scaled by :func:`feature_scale`'s statistics (numpy arrays or tensors); unchanged without them."""
    if "feature_mean" not in scale:
        return features
    mean, std = (np.asarray(scale[k], dtype=np.float32) for k in ("feature_mean", "feature_std"))
    return ((features - mean) / std).astype(np.float32)


class BalancedBatches(torch.utils.data.Sampler):
    """Per step, ``batch_size`` normal and ``batch_size`` abnormal video indices with one crop index each."""

    def __init__(self, normal: Sequence[int], abnormal: Sequence[int], batch_size: int, crops: int) -> None:
        if not normal or not abnormal:
            raise ZooValueError(f"training needs normal and abnormal videos; got {len(normal)} normal and "
                                f"{len(abnormal)} abnormal")
        self.normal, self.abnormal = list(normal), list(abnormal)
        self.batch_size, self.crops = min(batch_size, len(self.normal), len(self.abnormal)), crops

    def __len__(self) -> int:
        return -(-max(len(self.normal), len(self.abnormal)) // self.batch_size)

    def _cycle(self, pool: list[int], count: int) -> list[int]:
        order: list[int] = []
        while len(order) < count:
            order += [pool[i] for i in torch.randperm(len(pool)).tolist()]
        return order[:count]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        steps, b = len(self), self.batch_size
        normal, abnormal = self._cycle(self.normal, steps * b), self._cycle(self.abnormal, steps * b)
        crops = torch.randint(self.crops, (steps, 2 * b)).tolist()
        for s in range(steps):
            ids = normal[s * b:(s + 1) * b] + abnormal[s * b:(s + 1) * b]
            yield list(zip(ids, crops[s]))


class TrainVideos(torch.utils.data.Dataset):
    """Training videos resampled to fixed segments; item = a list of (video, crop) → one :class:`VADBatch`."""

    def __init__(self, videos: Sequence[Video], experts: np.ndarray, segments: int) -> None:
        self.x = torch.from_numpy(np.stack([resample(v.features, segments) for v in videos]))  # [N, S, crops, D]
        self.label = torch.tensor([float(v.label) for v in videos])
        self.expert = torch.from_numpy(experts)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, items: list[tuple[int, int]]) -> VADBatch:
        idx, crop = (torch.tensor(c) for c in zip(*items))
        x = self.x[idx, :, crop]
        return VADBatch(x, torch.ones(x.shape[:2], dtype=torch.bool), self.label[idx], self.expert[idx])


def pad_videos(videos: Sequence[Video], crop: int) -> VADBatch:
    """Whole videos of one crop, zero-padded to the longest, with their snippet labels when they have them."""
    length = max(len(v.features) for v in videos)
    x = torch.zeros(len(videos), length, videos[0].features.shape[-1])
    mask = torch.zeros(len(videos), length, dtype=torch.bool)
    labels = torch.zeros(len(videos), length)
    for i, v in enumerate(videos):
        t = len(v.features)
        x[i, :t] = torch.from_numpy(np.ascontiguousarray(v.features[:, crop]))
        mask[i, :t] = True
        if v.snippet_labels is not None:
            labels[i, :t] = torch.from_numpy(v.snippet_labels.astype(np.float32))
    return VADBatch(x, mask, torch.tensor([float(v.label) for v in videos]),
                    torch.full((len(videos),), -1, dtype=torch.long), labels)


class VADDataModule(L.LightningDataModule):
    """The splits of a config's source, the expert of every training video, and their loaders."""

    def __init__(self, cfg: VideoAnomalyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.train: VADSplit | None = None
        self.test: VADSplit | None = None
        self.feature_info: dict[str, Any] = {}
        self.expert_names: list[str] = []
        self.experts: np.ndarray | None = None
        self.scale: dict[str, np.ndarray] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        self.train, self.test, self.feature_info = load_splits(self.cfg.data)
        if self.test.dim != self.train.dim:
            raise ZooValueError(f"training features have D={self.train.dim}, test features D={self.test.dim}")
        if self.cfg.data.standardize:
            self.scale = feature_scale(self.train.videos)
            for video in (*self.train.videos, *self.test.videos):
                video.features = standardize(video.features, self.scale)
        model = self.cfg.model
        if model.experts == "kmeans" and model.arch in EXPERT_ARCHS:
            self.experts = kmeans_experts(self.train.videos, model.num_clusters, self.cfg.data.seed)
            self.expert_names = [f"cluster{i}" for i in range(model.num_clusters)]
        else:
            self.expert_names = sorted({v.cls for v in self.train.videos} - {NORMAL})
            index = {c: i for i, c in enumerate(self.expert_names)}
            self.experts = np.array([index.get(v.cls, -1) for v in self.train.videos], dtype=np.int64)

    def train_dataloader(self) -> DataLoader:
        assert self.train is not None and self.experts is not None
        labels = [v.label for v in self.train.videos]
        sampler = BalancedBatches([i for i, y in enumerate(labels) if not y], [i for i, y in enumerate(labels) if y],
                                  self.cfg.data.batch_size, self.train.crops)
        dataset = TrainVideos(self.train.videos, self.experts, self.cfg.data.segments)
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)


def build_datamodule(cfg: VideoAnomalyConfig) -> VADDataModule:
    return VADDataModule(cfg)


def model_info(cfg: VideoAnomalyConfig, dm: VADDataModule) -> dict[str, Any]:
    """What the network and ``predict`` need without the data: feature size, crops, the experts' names (classes
    or clusters), the feature scaling (``data.standardize``) and, for real video, the snippet encoder the
    features came from."""
    assert dm.train is not None
    return {"dim": dm.train.dim, "crops": dm.train.crops, "experts": list(dm.expert_names),
            "classes": list(dm.train.classes), **dm.feature_info, **dm.scale}
