"""From text or captions to waveforms: batched sampling with the decoder's key/value cache, then the delay pattern
undone, the frames cut at EOS and decoded by the codec (VQ, inverse mel, Griffin-Lim)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from zoo.errors import check_arg

from .codec import CODEBOOK_SIZE, HOP, Codec, undelay
from .data import TASK_IDS, encode_text
from .models import TokenDecoder

#: Griffin-Lim needs a waveform longer than half its FFT; a shorter generated clip is returned as silence.
MIN_FRAMES = 4


@dataclass
class Generated:
    """Waveforms (16 kHz float32), their codes ``[frames, Q]`` and whether each ended with EOS (else it hit the
    frame limit)."""

    waves: list[np.ndarray]
    codes: list[torch.Tensor]
    ended: list[bool]


def codes_of(frames: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The codes of one sampled row of delayed frames ``[F, Q]``: undelayed and cut before codebook 0's EOS (none
    when the row is shorter than the delay pattern)."""
    if len(frames) < frames.shape[1] - 1:
        return frames.new_zeros((0, frames.shape[1])), False
    codes = undelay(frames)
    is_code = codes < CODEBOOK_SIZE
    ended = not bool(is_code[:, 0].all())
    n = int(is_code.all(1).long().cumprod(0).sum())
    return codes[:n], ended


@torch.no_grad()
def generate(model: TokenDecoder, codec: Codec, texts: Sequence[str], task: str, *, seed: int = 0,
             temperature: float = 0.8, top_k: int | None = 16, max_frames: int = 220,
             batch_size: int = 16) -> Generated:
    """Speak sentences (``task="speech"``) or play captions (``task="music"``).

    Args:
        model: the trained decoder (put in eval mode here).
        codec: the codec its tokens come from.
        texts: sentences or captions.
        task: ``"speech"`` or ``"music"``.
        seed: sampling seed (batch ``b`` samples with ``seed + b``).
        temperature: softmax temperature.
        top_k: sample among the k most likely codes of each codebook.
        max_frames: most frames per clip (50 per second).
        batch_size: clips sampled together.
    """
    check_arg(task in TASK_IDS, "task", task, tuple(TASK_IDS))
    model.eval()
    device = next(model.parameters()).device
    out = Generated([], [], [])
    for b, start in enumerate(range(0, len(texts), batch_size)):
        ids = [encode_text(t) for t in texts[start:start + batch_size]]
        text = torch.zeros(len(ids), max(len(i) for i in ids), dtype=torch.long)
        for i, row in enumerate(ids):
            text[i, : len(row)] = row
        lengths = torch.tensor([len(i) for i in ids])
        frames = model.generate(text.to(device), TASK_IDS[task], max_frames, temperature=temperature, top_k=top_k,
                                seed=seed + b, text_lengths=lengths.to(device)).tokens.cpu()
        for row in frames:
            codes, ended = codes_of(row)
            out.codes.append(codes)
            out.ended.append(ended)
            if len(codes) >= MIN_FRAMES:
                out.waves.append(codec.waveform(codes.to(codec.vq.codebooks.device), (len(codes) - 1) * HOP))
            else:
                out.waves.append(np.zeros((MIN_FRAMES - 1) * HOP, dtype=np.float32))
    return out
