"""The batch every video anomaly network and loss reads: padded snippet features with a validity mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class VADBatch:
    """``B`` videos of up to ``T`` snippets of one crop.

    Args:
        x: ``[B, T, D]`` float features, zero past a video's end.
        mask: ``[B, T]`` bool, True on real snippets.
        label: ``[B]`` float video labels (1 anomalous).
        expert: ``[B]`` long, the expert an anomalous video trains (its class or k-means cluster), −1 for normal.
        snippet_labels: ``[B, T]`` float 0/1 snippet labels (test batches only), None in training.
    """

    x: torch.Tensor
    mask: torch.Tensor
    label: torch.Tensor
    expert: torch.Tensor
    snippet_labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> VADBatch:
        return VADBatch(self.x.to(device), self.mask.to(device), self.label.to(device), self.expert.to(device),
                        None if self.snippet_labels is None else self.snippet_labels.to(device))
