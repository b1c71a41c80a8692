"""The video_anomaly datamodule: segment resampling against a loop, balanced batches, padding, k-means experts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.errors import ZooValueError
from zoo.tasks.video_anomaly.config import DataConfig, ModelConfig, VideoAnomalyConfig
from zoo.tasks.video_anomaly.data import (
    BalancedBatches,
    VADDataModule,
    anomaly_descriptor,
    kmeans_experts,
    model_info,
    pad_videos,
    resample,
)
from zoo.tasks.video_anomaly.features import NORMAL, Video
from zoo.tasks.video_anomaly.synthvad import SynthVAD


def _resample_loop(x: np.ndarray, segments: int) -> np.ndarray:
    out = []
    for j in range(segments):
        lo, hi = int(j * len(x) / segments), int((j + 1) * len(x) / segments)
        out.append(x[lo:hi].mean(0) if hi > lo else x[min(lo, len(x) - 1)])
    return np.stack(out)


@pytest.mark.parametrize("length", [1, 5, 31, 32, 33, 100])
def test_resample_matches_loop(length):
    x = np.random.default_rng(length).normal(size=(length, 2, 3)).astype(np.float32)
    got = resample(x, 32)
    assert got.shape == (32, 2, 3)
    np.testing.assert_allclose(got, _resample_loop(x, 32), rtol=1e-6)


def test_resample_keeps_the_mean_of_an_even_split():
    x = np.arange(64, dtype=np.float32)[:, None]
    np.testing.assert_allclose(resample(x, 32)[:, 0], np.arange(32) * 2 + 0.5)


def test_balanced_batches_cover_the_larger_side_once_and_cycle_the_smaller():
    torch.manual_seed(0)
    sampler = BalancedBatches(list(range(10)), list(range(10, 13)), batch_size=4, crops=5)
    batches = list(sampler)
    assert sampler.batch_size == 3  # capped by the smaller side
    assert len(batches) == len(sampler) == 4  # ceil(10 / 3)
    normal = [i for b in batches for i, _ in b[:3]]
    abnormal = [i for b in batches for i, _ in b[3:]]
    assert set(normal) == set(range(10)) and set(abnormal) == {10, 11, 12}
    assert len(set(normal[:10])) == 10  # one shuffled pass before any repeats
    assert all(0 <= c < 5 for b in batches for _, c in b)
    assert all(len(b) == 6 for b in batches)


def test_balanced_batches_follow_the_torch_seed():
    def draw(seed):
        torch.manual_seed(seed)
        return list(BalancedBatches(list(range(8)), list(range(8, 16)), 4, 3))

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)


def test_balanced_batches_need_both_labels():
    with pytest.raises(ZooValueError, match="normal and abnormal"):
        BalancedBatches([], [1, 2], 4, 1)


def test_pad_videos_masks_the_padding_and_keeps_labels():
    videos = [Video("a", np.ones((3, 2, 4), np.float32), "Spike", np.repeat([0, 1, 0], 16).astype(np.uint8)),
              Video("b", np.full((5, 2, 4), 2, np.float32), NORMAL, np.zeros(80, np.uint8))]
    batch = pad_videos(videos, crop=1)
    assert batch.x.shape == (2, 5, 4)
    assert batch.mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch.x[0, 3:].abs().sum() == 0
    assert batch.snippet_labels[0].tolist() == [0, 1, 0, 0, 0]
    assert batch.label.tolist() == [1.0, 0.0]


def test_anomaly_descriptor_points_along_the_event():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (100, 1, 8))
    x[40:50, 0, 3] += 5.0
    d = anomaly_descriptor(x)
    assert np.argmax(np.abs(d)) == 3 and np.isclose(np.linalg.norm(d), 1.0)


def test_kmeans_experts_are_deterministic_and_skip_normal_videos():
    videos = SynthVAD(seed=0, n_train=60, n_test=0).split("train").videos
    a, b = kmeans_experts(videos, 3, seed=0), kmeans_experts(videos, 3, seed=0)
    assert (a == b).all()
    assert all((e == -1) == (v.cls == NORMAL) for e, v in zip(a, videos))
    assert set(a[a >= 0]) == {0, 1, 2}
    with pytest.raises(ZooValueError, match="num_clusters"):
        kmeans_experts(videos, 100, seed=0)


def _cfg(**model) -> VideoAnomalyConfig:
    return VideoAnomalyConfig(data=DataConfig(synth={"n_train": 24, "n_test": 12, "t_range": (16, 40)},
                                              batch_size=4, segments=8), model=ModelConfig(**model))


def test_datamodule_batches_and_model_info():
    dm = VADDataModule(_cfg())
    dm.setup("fit")
    assert dm.expert_names == sorted({v.cls for v in dm.train.videos} - {NORMAL})
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    assert batch.x.shape == (8, 8, 64) and batch.mask.all()
    assert batch.label.tolist() == [0.0] * 4 + [1.0] * 4
    assert (batch.expert[:4] == -1).all() and (batch.expert[4:] >= 0).all()
    info = model_info(dm.cfg, dm)
    assert info["dim"] == 64 and info["crops"] == 1 and info["experts"] == dm.expert_names
    assert "encoder" not in info


def test_kmeans_datamodule_names_clusters():
    dm = VADDataModule(_cfg(experts="kmeans", num_clusters=3))
    dm.setup("fit")
    assert dm.expert_names == ["cluster0", "cluster1", "cluster2"]


def test_bad_synth_option_is_one_line():
    dm = VADDataModule(VideoAnomalyConfig(data=DataConfig(synth={"n_videos": 3})))
    with pytest.raises(ZooValueError, match="data.synth"):
        dm.setup("fit")
