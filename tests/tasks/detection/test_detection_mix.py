"""The dataset mix: unified labels by running offsets (identical names kept apart unless merged), sample → dataset
index, the expert map and sampling weights, and every clash as one line."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import ZooValueError
from zoo.tasks.detection.mix import DatasetMix
from zoo.tasks.detection.structures import DetDataset, make_entry


def _dataset(name: str, classes: tuple[str, ...], labels: list[list[int]]) -> DetDataset:
    entries = [make_entry(f"{name}{i}", [[0, 0, 1, 1]] * len(lab), lab, np.zeros((2, 2, 3), np.uint8))
               for i, lab in enumerate(labels)]
    return DetDataset(name, classes, entries)


A = _dataset("shapes", ("circle", "square"), [[0, 1], [1]])
B = _dataset("comic", ("square", "circle", "star"), [[2], [0, 1], []])
C = _dataset("faces", ("face",), [[0]])


def test_unified_labels_and_dataset_index():
    mix = DatasetMix([A, B, C])
    assert mix.classes == ("shapes/circle", "shapes/square", "comic/square", "comic/circle", "comic/star",
                           "faces/face") and mix.num_classes == 6
    assert len(mix) == 6 and mix.dataset_index.tolist() == [0, 0, 1, 1, 1, 2]
    expected = [[0, 1], [1], [4], [2, 3], [], [5]]  # local label + 0, 2, 5
    for index, labels in enumerate(expected):
        sample, k = mix[index]
        assert k == mix.dataset_index[index] and sample.labels.tolist() == labels
        assert sample.name == mix.datasets[k].entries[index - [0, 0, 2, 2, 2, 5][index]].name


def test_merged_names_share_labels():
    mix = DatasetMix([A, B, C], merge_names=True)
    assert mix.classes == ("circle", "square", "star", "face")
    assert [m.tolist() for m in mix.label_maps] == [[0, 1], [1, 0, 2], [3]]
    assert mix[3][0].labels.tolist() == [1, 0]


def test_experts_and_weights():
    mix = DatasetMix([A, B, C])
    assert mix.num_experts == 3 and mix.expert_ids().tolist() == [0, 1, 2]
    np.testing.assert_allclose(mix.sample_weights(), np.full(6, 1 / 6))  # by default every sample equally likely
    shared = DatasetMix([A, B, C], experts={"shapes": 0, "comic": 0, "faces": 1}, num_experts=4,
                        weights={"shapes": 1.0, "comic": 1.0, "faces": 2.0})
    assert shared.num_experts == 4 and shared.expert_ids().tolist() == [0, 0, 1]
    weights = shared.sample_weights()
    np.testing.assert_allclose(weights, [1 / 8, 1 / 8, 1 / 12, 1 / 12, 1 / 12, 1 / 2])
    draws = np.random.default_rng(0).choice(len(shared), size=20000, p=weights)
    share = np.bincount(shared.dataset_index[draws], minlength=3) / len(draws)
    np.testing.assert_allclose(share, [0.25, 0.25, 0.5], atol=0.02)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"datasets": [A, A]}, "two datasets of the mix are named 'shapes'"),
    ({"datasets": []}, "needs at least one dataset"),
    ({"experts": {"shapes": 0, "comic": 1, "faces": 2, "coco": 0}}, "expert map names dataset 'coco', which is not"),
    ({"experts": {"shapes": 0, "comic": 1}}, r"gives no expert to dataset\(s\) 'faces'"),
    ({"experts": {"shapes": 0, "comic": -1, "faces": 1}}, r"'comic' is mapped to expert -1, outside \[0, 2\)"),
    ({"experts": {"shapes": 0, "comic": 1, "faces": 3}, "num_experts": 3}, r"expert 3, outside \[0, 3\)"),
    ({"num_experts": 2}, r"'faces' is mapped to expert 2, outside \[0, 2\)"),
    ({"experts": {"shapes": 0, "comic": "1", "faces": 1}}, "the expert of dataset 'comic' is '1'; expected an int"),
    ({"weights": {"shapes": 1.0, "comic": 1.0, "voc": 1.0}}, "the weights name dataset 'voc'"),
    ({"weights": {"shapes": 1.0, "comic": 1.0}}, r"give no weight to dataset\(s\) 'faces'"),
    ({"weights": {"shapes": 1.0, "comic": -1.0, "faces": 1.0}}, "weight of dataset 'comic' is -1.0"),
    ({"weights": {"shapes": 0, "comic": 0, "faces": 0}}, "every dataset of the mix has weight 0"),
])
def test_clashes_are_one_line(kwargs: dict, message: str):
    kwargs = {"datasets": [A, B, C]} | kwargs
    with pytest.raises(ZooValueError, match=message) as error:
        DatasetMix(**kwargs)
    assert "\n" not in str(error.value)


def test_mix_of_miniuodb_domains():
    from zoo.tasks.detection.miniuodb import MiniUODB

    generator = MiniUODB(scale=0.005)
    mix = DatasetMix([generator.dataset(d) for d in ("shapes", "comic")])
    assert mix.classes[:3] == ("miniuodb/shapes/circle", "miniuodb/shapes/square", "miniuodb/shapes/triangle")
    assert mix.num_classes == 6 and len(mix) == 11
    for index in range(len(mix)):
        sample, k = mix[index]
        assert ((sample.labels >= 3 * k) & (sample.labels < 3 * k + 3)).all()
