"""Drawings of the audio task: the log-mel spectrogram of a generated clip, as ``zoo predict audio --plot`` writes
it, in the codec's own analysis (:class:`~.codec.MelSpec`: 80 mel bins, 50 frames per second), so the picture
shows what the model's tokens stand for."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .codec import HOP, N_MELS, SAMPLE_RATE, MelSpec

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def mel_figure(wave: np.ndarray, title: str) -> Figure:
    """A clip's log-mel spectrogram against time in seconds and mel bin, with a colour bar.

    Args:
        wave: ``[T]`` float samples at 16 kHz.
        title: the figure title.
    """
    from matplotlib.figure import Figure

    logmel = MelSpec()(np.asarray(wave, dtype=np.float32)).numpy()
    seconds = len(logmel) * HOP / SAMPLE_RATE
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(logmel.T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                      extent=(0.0, seconds, 0.0, N_MELS))
    fig.colorbar(image, ax=ax, label="log magnitude")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    ax.set_title(title, fontsize=9)
    return fig
