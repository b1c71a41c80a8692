"""``DetectionDataModule``: the datasets of ``data.*`` as one mix, augmented training batches and letterboxed test
batches.

The mix (:class:`~.mix.DatasetMix`) gives every image its unified labels, its dataset and its dataset's expert.
Training draws ``len(mix)`` images per epoch from the mix's sampling weights (with replacement when the weights
differ from the dataset sizes, else a plain shuffle), from torch's global RNG, which the zoo's resumable
checkpoints restore; each image is augmented with torchvision v2 (:mod:`.transforms`; horizontal flips only for
datasets whose classes survive a mirror) and letterboxed to ``data.image_size``. Targets are unified labels and
boxes as ``cx, cy, w, h`` in [0, 1] of the square input; test targets keep xyxy pixels of the letterboxed image,
the frame AP is computed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, WeightedRandomSampler

from zoo.errors import ZooValueError

from .config import DataConfig, DetectionConfig
from .mix import DatasetMix
from .structures import DetDataset

TEST_BATCH = 64
#: Datasets whose classes a horizontal mirror would change (glyphs, arrows, text on signs).
NO_FLIP = ("miniuodb/digits", "miniuodb/signs")


@dataclass
class DetBatch:
    """Images ``[B, 3, S, S]`` (normalised), per image its target (``labels``, ``boxes``), its dataset index and
    its dataset's expert id."""

    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    dataset_ids: torch.Tensor
    expert_ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


def load_datasets(cfg: DataConfig, split: str) -> list[DetDataset]:
    """The ``split`` of every dataset ``cfg`` names, in mix order: Mini-UODB domains, real tiles, COCO files."""
    from .miniuodb import MiniUODB

    generator = MiniUODB(cfg.seed, cfg.scale)
    datasets = [generator.dataset(name, split) for name in cfg.miniuodb]
    if cfg.real:
        from .tiles import real_tiles

        datasets += [real_tiles(name, split) for name in cfg.real]
    for spec in cfg.coco:
        datasets.append(_coco(spec, split))
    return datasets


def _coco(spec: dict[str, Any], split: str) -> DetDataset:
    from .coco import load_coco

    if split == "train":
        return load_coco(spec["annotations"], spec["images"], name=str(spec["name"]))
    return load_coco(spec["test_annotations"], spec.get("test_images", spec["images"]), name=str(spec["name"]))


def build_mix(cfg: DataConfig, split: str) -> DatasetMix:
    """The mix of ``split``; the expert map and sampling weights of ``cfg`` (weights only matter for training)."""
    datasets = load_datasets(cfg, split)
    weights = cfg.weights
    if weights is None and cfg.sampling == "equal":
        weights = {d.name: 1.0 for d in datasets}
    return DatasetMix(datasets, experts=cfg.experts, weights=weights if split == "train" else None)


class MixImages(Dataset):
    """A mix as network inputs: ``(image [3, S, S], target, dataset index, expert id)`` per item.

    Args:
        mix: the datasets.
        size: the letterbox size S.
        augment: apply the training augmentation (else only letterbox).
        normalized_boxes: targets as ``cx, cy, w, h`` in [0, 1] (training) instead of xyxy pixels (test).
    """

    def __init__(self, mix: DatasetMix, size: int, augment: bool, normalized_boxes: bool) -> None:
        from . import transforms as T

        self.mix, self.size, self.normalized_boxes = mix, size, normalized_boxes
        self.experts = mix.expert_ids()
        self.transforms = None
        if augment:
            self.transforms = [T.train_transform(size, flip=name not in NO_FLIP) for name in mix.names]

    def __len__(self) -> int:
        return len(self.mix)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], int, int]:
        from torchvision import tv_tensors
        from torchvision.ops import box_convert
        from torchvision.transforms.v2 import functional as F

        from . import transforms as T

        sample, k = self.mix[index]
        if self.transforms is not None:
            image = torch.tensor(sample.image).permute(2, 0, 1).contiguous()
            boxes = tv_tensors.BoundingBoxes(torch.from_numpy(sample.boxes), format="XYXY",
                                             canvas_size=tuple(sample.image.shape[:2]))
            image, boxes, labels = self.transforms[k](image, boxes, torch.from_numpy(sample.labels))
            image = F.to_dtype(image, torch.float32, scale=True)
            boxes = torch.as_tensor(boxes, dtype=torch.float32)
        else:
            image, boxes, _ = T.letterbox(sample.image, sample.boxes, self.size)
            labels = torch.from_numpy(sample.labels)
        if self.normalized_boxes:
            boxes = box_convert(boxes.reshape(-1, 4), "xyxy", "cxcywh") / self.size
        target = {"labels": labels.long(), "boxes": boxes.reshape(-1, 4).float()}
        return T.normalize(image.float()), target, k, int(self.experts[k])


def collate(items: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor], int, int]]) -> DetBatch:
    images, targets, datasets, experts = zip(*items, strict=True)
    return DetBatch(torch.stack(images), list(targets), torch.tensor(datasets), torch.tensor(experts))


class DetectionDataModule(L.LightningDataModule):
    """Training and test mixes of ``cfg.data`` (module docstring)."""

    def __init__(self, cfg: DetectionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.train: DatasetMix | None = None
        self.test: DatasetMix | None = None

    def setup(self, stage: str | None = None) -> None:
        """Both mixes whatever the stage: a test split that cannot be read or disagrees with the training classes
        is reported before training, not after it."""
        if self.train is None:
            self.train = build_mix(self.cfg.data, "train")
        if self.test is None:
            self.test = build_mix(self.cfg.data, "test")
            if self.test.classes != self.train.classes:
                raise ZooValueError("the test datasets' classes differ from the training datasets' "
                                    f"({len(self.test.classes)} vs {len(self.train.classes)} unified labels); give "
                                    "each dataset's test split the same categories")

    def train_dataloader(self) -> DataLoader:
        assert self.train is not None
        data = MixImages(self.train, self.cfg.data.image_size, self.cfg.data.augment, normalized_boxes=True)
        weights = self.train.sample_weights()
        sizes = np.bincount(self.train.dataset_index, minlength=len(self.train.names))
        uniform = np.allclose([self.train.weights[n] for n in self.train.names], sizes)
        sampler = RandomSampler(data) if uniform else WeightedRandomSampler(weights.tolist(), len(data))
        return DataLoader(data, batch_size=self.cfg.data.batch_size, sampler=sampler, collate_fn=collate,
                          drop_last=len(data) > self.cfg.data.batch_size)

    def test_dataloader(self) -> DataLoader:
        assert self.test is not None
        data = MixImages(self.test, self.cfg.data.image_size, augment=False, normalized_boxes=False)
        return DataLoader(data, batch_size=TEST_BATCH, shuffle=False, collate_fn=collate)


def build_datamodule(cfg: DetectionConfig) -> DetectionDataModule:
    return DetectionDataModule(cfg)


def model_info(cfg: DetectionConfig, dm: DetectionDataModule) -> dict[str, Any]:
    """What the network and ``predict`` need without the data: the unified classes, the datasets in mix order with
    their experts, unified labels and training sizes, the expert count and the input size."""
    assert dm.train is not None
    mix = dm.train
    return {"classes": list(mix.classes), "datasets": list(mix.names), "experts": mix.expert_ids().tolist(),
            "dataset_labels": [m.tolist() for m in mix.label_maps],
            "num_experts": int(mix.num_experts), "train_sizes": [len(d) for d in mix.datasets],
            "image_size": int(cfg.data.image_size)}
