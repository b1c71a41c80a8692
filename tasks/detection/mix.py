"""The spec of a dataset mix for DAMEX: the unified label space, which dataset each sample comes from, which expert
serves each dataset, and how often a sampler should draw from each dataset.

Labels: dataset k's local class c becomes ``offset_k + c``, with ``offset_k`` the number of classes of the datasets
before it, so identical class names in different datasets stay separate labels (``shapes/circle`` and
``comic/circle`` may look nothing alike, and a dataset's annotators only box its own classes). With
``merge_names=True`` a class name seen in an earlier dataset reuses that label, for mixes whose datasets agree on
their classes. Unified names are ``<dataset>/<class>`` (just ``<class>`` for a merged name). Experts: by default
dataset k goes to expert k; a map must name every dataset, and E experts have ids 0..E-1 (default E = the largest
id plus one; an expert no dataset names is allowed). Weights: a dataset's relative share of draws; by default each
dataset's size, so every sample is equally likely; a dict must name every dataset. Every clash is one
:class:`ZooValueError` line.
"""

from __future__ import annotations

import math

import numpy as np

from zoo.errors import ZooValueError

from .structures import DetDataset, DetSample


class DatasetMix:
    """Several detection datasets as one indexable set with unified labels (module docstring).

    Args:
        datasets: the datasets, with distinct names; their order fixes the label offsets and sample indices.
        experts: dataset name → expert id; one expert per dataset, in order, by default.
        weights: dataset name → relative share of draws (finite, >= 0, not all 0); dataset sizes by default.
        num_experts: E; by default the largest expert id plus one.
        merge_names: share one label between identical class names of different datasets.
    """

    def __init__(self, datasets: list[DetDataset], experts: dict[str, int] | None = None,
                 weights: dict[str, float] | None = None, num_experts: int | None = None,
                 merge_names: bool = False) -> None:
        if not datasets:
            raise ZooValueError("a dataset mix needs at least one dataset")
        self.datasets = list(datasets)
        self.names = [d.name for d in self.datasets]
        seen: set[str] = set()
        for name in self.names:
            if name in seen:
                raise ZooValueError(f"two datasets of the mix are named {name!r}; dataset names must be unique")
            seen.add(name)
        self.classes, self.label_maps = _unify(self.datasets, merge_names)
        self.expert_of, self.num_experts = self._experts(experts, num_experts)
        self.weights = self._weights(weights)
        sizes = [len(d) for d in self.datasets]
        self.dataset_index = np.repeat(np.arange(len(sizes)), sizes)
        self._starts = np.concatenate([[0], np.cumsum(sizes)])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> tuple[DetSample, int]:
        """Sample ``index`` of the concatenation with unified labels, and its dataset's index."""
        k = int(self.dataset_index[index])
        sample = self.datasets[k][index - int(self._starts[k])]
        return DetSample(sample.image, sample.boxes, self.label_maps[k][sample.labels], sample.name), k

    def expert_ids(self) -> np.ndarray:
        """``[len(datasets)]`` the expert of each dataset."""
        return np.array([self.expert_of[name] for name in self.names], np.int64)

    def sample_weights(self) -> np.ndarray:
        """``[len(self)]`` draw probabilities (sum 1) that give each dataset its share, uniform within it."""
        sizes = np.diff(self._starts)
        share = np.array([self.weights[name] for name in self.names], np.float64)
        per_sample = np.divide(share, sizes, out=np.zeros_like(share), where=sizes > 0)
        probabilities = per_sample[self.dataset_index]
        return probabilities / probabilities.sum()

    def _experts(self, experts: dict[str, int] | None, num_experts: int | None) -> tuple[dict[str, int], int]:
        mapping = dict(experts) if experts is not None else {name: k for k, name in enumerate(self.names)}
        for name, expert in mapping.items():
            if name not in self.names:
                raise ZooValueError(f"the expert map names dataset {name!r}, which is not in the mix "
                                    f"({', '.join(self.names)})")
            if not isinstance(expert, int) or isinstance(expert, bool):
                raise ZooValueError(f"the expert of dataset {name!r} is {expert!r}; expected an int")
        missing = [name for name in self.names if name not in mapping]
        if missing:
            raise ZooValueError(f"the expert map gives no expert to dataset(s) {', '.join(map(repr, missing))}")
        count = num_experts if num_experts is not None else max(mapping.values()) + 1
        for name, expert in mapping.items():
            if not 0 <= expert < count:
                raise ZooValueError(f"dataset {name!r} is mapped to expert {expert}, outside [0, {count})")
        return mapping, count

    def _weights(self, weights: dict[str, float] | None) -> dict[str, float]:
        if weights is None:
            return {d.name: float(len(d)) for d in self.datasets}
        for name, weight in weights.items():
            if name not in self.names:
                raise ZooValueError(f"the weights name dataset {name!r}, which is not in the mix "
                                    f"({', '.join(self.names)})")
            if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
                raise ZooValueError(f"the weight of dataset {name!r} is {weight!r}; expected a finite number >= 0")
        missing = [name for name in self.names if name not in weights]
        if missing:
            raise ZooValueError(f"the weights give no weight to dataset(s) {', '.join(map(repr, missing))}")
        if not any(weights[d.name] > 0 and len(d) for d in self.datasets):
            raise ZooValueError("every dataset of the mix has weight 0 or no samples; nothing can be drawn")
        return {name: float(weights[name]) for name in self.names}


def _unify(datasets: list[DetDataset], merge_names: bool) -> tuple[tuple[str, ...], list[np.ndarray]]:
    """The unified class names and, per dataset, its local → unified label map."""
    classes: list[str] = []
    label_of: dict[str, int] = {}
    maps = []
    for dataset in datasets:
        local = []
        for cls in dataset.classes:
            if merge_names and cls in label_of:
                local.append(label_of[cls])
                continue
            label_of.setdefault(cls, len(classes))
            local.append(len(classes))
            classes.append(cls if merge_names else f"{dataset.name}/{cls}")
        maps.append(np.array(local, np.int64))
    return tuple(classes), maps
