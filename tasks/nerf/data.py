"""``NerfDataModule``: the scene's training pixels as rays, drawn ``data.batch_rays`` at a time, and its held-out
views for evaluation.

The scene is the seeded :class:`~.city.ProceduralCity` or a user's capture (``transforms.json`` or a Mega-NeRF
folder, read by :func:`~.meganerf.load_scene`); every 8th view is held out. Each epoch is a fresh permutation of all
training rays (torch's global RNG, which the zoo's resumable checkpoints restore), cut into full batches.
"""

from __future__ import annotations

import functools
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from .cameras import Views, rays
from .config import CITY, DataConfig, NerfConfig

#: World box of the Blender / nerfstudio synthetic scenes, the default for a capture given without ``data.box``.
CAPTURE_BOX = [[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]]
#: Margin around the city's ground square and tallest box.
CITY_MARGIN = 0.05


def city(cfg: DataConfig) -> Any:
    """The config's ProceduralCity (one per seed, size and view count in a process: its views render once)."""
    return _city(cfg.seed, cfg.size, cfg.views)


@functools.lru_cache(maxsize=2)
def _city(seed: int, size: int, views: int) -> Any:
    from .city import ProceduralCity

    return ProceduralCity(seed, size=size, views=views)


def load_views(cfg: DataConfig, split: str) -> Views:
    """The ``split`` (``train`` or ``test``) views of ``data.scene``."""
    if cfg.scene == CITY:
        return city(cfg).views(split)
    from .meganerf import load_scene

    return load_scene(cfg.scene, split, cfg.downscale)


def scene_box(cfg: DataConfig) -> list[list[float]]:
    """``data.box``, else the city's ground square up to its tallest box (with a margin), else :data:`CAPTURE_BOX`."""
    if cfg.box is not None:
        return [[float(v) for v in corner] for corner in cfg.box]
    if cfg.scene != CITY:
        return CAPTURE_BOX
    top = float(city(cfg).hi[:, 2].max())
    m = CITY_MARGIN
    return [[-1 - m, -1 - m, -m], [1 + m, 1 + m, top + m]]


def look_target(positions: np.ndarray, forwards: np.ndarray) -> np.ndarray:
    """The point nearest (least squares) to every camera's optical axis: what the cameras look at."""
    forwards = forwards / np.linalg.norm(forwards, axis=1, keepdims=True)
    projections = np.eye(3) - forwards[:, :, None] * forwards[:, None, :]
    return np.linalg.lstsq(projections.sum(0), np.einsum("nij,nj->i", projections, positions), rcond=None)[0]


def ray_tensors(views: Views) -> dict[str, torch.Tensor]:
    """Every pixel of ``views`` as a ray: ``origins``, ``directions`` [P, 3], ``rgb`` [P, 3], ``appearance`` [P]."""
    origins, directions = rays(views)
    height, width = views.hw
    appearance = np.repeat(views.appearance, height * width)
    return {"origins": torch.from_numpy(origins.reshape(-1, 3)), "directions": torch.from_numpy(directions.reshape(-1, 3)),
            "rgb": torch.from_numpy(views.images.reshape(-1, 3)), "appearance": torch.from_numpy(appearance)}


class NerfDataModule(L.LightningDataModule):
    """Random ray batches of the training views; the test views for :func:`~.evaluation.evaluate`."""

    def __init__(self, cfg: NerfConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.train: Views | None = None
        self.test: Views | None = None
        self._rays: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train is None:
            self.train = load_views(self.cfg.data, "train")
            tensors = ray_tensors(self.train)
            self._rays = TensorDataset(tensors["origins"], tensors["directions"], tensors["rgb"], tensors["appearance"])
        if stage in (None, "test") and self.test is None:
            self.test = load_views(self.cfg.data, "test")

    def train_dataloader(self) -> DataLoader:
        assert self._rays is not None
        batches = BatchSampler(RandomSampler(self._rays), min(self.cfg.data.batch_rays, len(self._rays)), drop_last=True)
        return DataLoader(self._rays, sampler=batches, batch_size=None)


def build_datamodule(cfg: NerfConfig) -> NerfDataModule:
    return NerfDataModule(cfg)


def model_info(cfg: NerfConfig, dm: NerfDataModule) -> dict[str, Any]:
    """What the field and ``predict`` need without the data: the box, the appearance codes (all images; which ones
    training fitted), the image size and the training cameras' orbit (the point they look at, their mean horizontal distance and height from it, world z
    up; their mean focal length)."""
    dm.setup()
    train, test = dm.train, dm.test
    assert train is not None and test is not None
    box = scene_box(cfg.data)
    test_ids = test.appearance
    positions = train.c2w[:, :3, 3].astype(np.float64)
    centre = look_target(positions, -train.c2w[:, :3, 2].astype(np.float64))
    offsets = positions - centre
    height, width = train.hw
    return {
        "box": box,
        "num_images": int(max(train.appearance.max(), test_ids.max() if len(test_ids) else 0)) + 1,
        "train_appearance": [int(i) for i in train.appearance],
        "image_size": [height, width],
        "orbit": {"centre": [float(v) for v in centre],
                  "radius": float(np.linalg.norm(offsets[:, :2], axis=1).mean()),
                  "height": float(offsets[:, 2].mean()),
                  "focal": float(train.intrinsics[:, 0].mean())},
    }
