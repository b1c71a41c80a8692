"""The audio task's training data: the synthetic corpus (:mod:`.corpus`) tokenised by a codec fitted on its training
part, as decoder sequences ``[task, characters, BOS frame, delayed frames]``. The codec's k-means takes seconds, so
its codebooks are cached beside the corpus under the corpus's hash. Every run of a board shares the corpus, the
codec and the split: the training clips minus ``data.val_clips`` per task for the validation curve, and the
corpus's test part (held-out speakers, held-out music clips) for the test metrics.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

import lightning as L
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch.utils.data import DataLoader

from zoo.errors import ZooValueError, check_arg
from zoo.io import atomic_write_bytes

from .codec import BOS, EOS, NUM_CODEBOOKS, PAD, Codec, delay
from .config import TASKS, AudioConfig
from .corpus import Corpus, build_corpus, cache_key, default_cache_dir, tokenize

log = logging.getLogger(__name__)

#: Task-token id of each task.
TASK_IDS = {name: i for i, name in enumerate(TASKS)}
#: Characters the decoder reads: printable ASCII; id 0 is padding.
FIRST_CHAR, LAST_CHAR = 32, 126
TEXT_VOCAB = LAST_CHAR - FIRST_CHAR + 2
MAX_TEXT = 120
CODEC_SEED_TAG = 0xC0DEC


def encode_text(text: str) -> torch.Tensor:
    """Character ids of a transcript or caption (printable ASCII, at most :data:`MAX_TEXT` characters).

    Args:
        text: the text; surrounding whitespace is dropped.

    Returns:
        ``[len]`` long ids in ``[1, TEXT_VOCAB)``.
    """
    text = text.strip() if isinstance(text, str) else text
    if not isinstance(text, str) or not text:
        raise ZooValueError("the text is empty; give a sentence or a caption")
    bad = sorted({c for c in text if not FIRST_CHAR <= ord(c) <= LAST_CHAR})
    if bad:
        raise ZooValueError(f"the text has characters the model cannot read: {''.join(bad)!r}; use printable ASCII")
    if len(text) > MAX_TEXT:
        raise ZooValueError(f"the text has {len(text)} characters; at most {MAX_TEXT} fit the model")
    return torch.tensor([ord(c) - FIRST_CHAR + 1 for c in text], dtype=torch.long)


def sequence(codes: torch.Tensor) -> torch.Tensor:
    """A clip's decoder frames: an all-BOS frame, then the delayed ``codes + [EOS]``: ``[T + Q + 1, Q]``.

    Args:
        codes: ``[T, Q]`` codec codes of one clip.
    """
    eos = torch.full((1, codes.shape[1]), EOS, dtype=codes.dtype)
    bos = torch.full((1, codes.shape[1]), BOS, dtype=codes.dtype)
    return torch.cat([bos, delay(torch.cat([codes, eos]))])


@dataclass(frozen=True)
class Clip:
    """One training or test example: task id, text ids and decoder frames (:func:`sequence`); ``index`` is the clip's
    row in the corpus."""

    task: int
    text: torch.Tensor
    frames: torch.Tensor
    index: int


def collate(clips: list[Clip]) -> dict[str, torch.Tensor]:
    """Right-padded batch: ``text[B, L]`` (0), ``text_lengths[B]``, ``task[B]``, ``audio[B, T, Q]`` (decoder input)
    and ``target[B, T, Q]`` (its next frames), both padded with PAD, and ``index[B]``."""
    B, L = len(clips), max(len(c.text) for c in clips)
    T = max(len(c.frames) for c in clips) - 1
    text = torch.zeros(B, L, dtype=torch.long)
    frames = torch.full((B, T + 1, NUM_CODEBOOKS), PAD, dtype=torch.long)
    for i, c in enumerate(clips):
        text[i, : len(c.text)] = c.text
        frames[i, : len(c.frames)] = c.frames
    return {"text": text, "text_lengths": torch.tensor([len(c.text) for c in clips]),
            "task": torch.tensor([c.task for c in clips]), "audio": frames[:, :-1], "target": frames[:, 1:],
            "index": torch.tensor([c.index for c in clips])}


def target_mask(target: torch.Tensor) -> torch.Tensor:
    """Targets a model is scored on: codes and EOS; PAD and BOS are padding or forced by the delay pattern."""
    return (target != PAD) & (target != BOS)


def fit_codec(corpus: Corpus, num_speech: int, num_music: int) -> Codec:
    """The codec fitted on the training clips of ``build_corpus(corpus.seed, num_speech, num_music)`` (both tasks,
    so every run of a board shares it), cached under the corpus's hash."""
    codec = Codec()
    key = hashlib.sha256(f"{cache_key(corpus.seed, num_speech, num_music)}/codec-v1".encode()).hexdigest()
    path = default_cache_dir() / f"codec-{key[:16]}.safetensors"
    if path.is_file():
        try:
            codec.vq.load_state_dict(load_file(path))
            return codec
        except (OSError, RuntimeError, ValueError, SafetensorError) as err:
            log.warning("audio codec cache %s is unreadable (%s); refitting it", path, err)
    codec.fit([corpus.waves[i] for i in corpus.split("train")], seed=corpus.seed ^ CODEC_SEED_TAG)
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in codec.vq.state_dict().items()}))
    return codec


@dataclass(frozen=True)
class Prepared:
    corpus: Corpus
    codec: Codec
    clips: list[Clip]


@cache
def prepare(seed: int, num_speech: int, num_music: int) -> Prepared:
    """Corpus, fitted codec and every clip as a :class:`Clip` (memoised: a board's runs in one process share it)."""
    corpus = build_corpus(seed, num_speech, num_music)
    codec = fit_codec(corpus, num_speech, num_music)
    codes = tokenize(corpus, codec)
    clips = [Clip(TASK_IDS[str(corpus.kind[i])], encode_text(corpus.text[i]), sequence(codes[i]), i)
             for i in range(len(corpus))]
    return Prepared(corpus, codec, clips)


class AudioDataModule(L.LightningDataModule):
    """Train / validation / test clips of ``cfg.data.tasks``.

    Args:
        cfg: the task config.
    """

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.data: Prepared | None = None
        self.parts: dict[str, list[Clip]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        d = self.cfg.data
        self.data = prepare(d.seed, d.num_speech, d.num_music)
        wanted = {TASK_IDS[t] for t in d.tasks}
        corpus, clips = self.data.corpus, self.data.clips
        self.parts = {"train": [], "val": [], "test": [clips[i] for i in corpus.split("test") if clips[i].task in wanted]}
        for task in sorted(wanted):
            train = [clips[i] for i in corpus.split("train") if clips[i].task == task]
            check_arg(len(train) > d.val_clips, "data.val_clips", d.val_clips,
                      f"fewer than the {len(train)} training clips of {TASKS[task]}")
            self.parts["val"] += train[-d.val_clips:]
            self.parts["train"] += train[: -d.val_clips]

    @property
    def codec(self) -> Codec:
        self.setup()
        return self.data.codec

    def clips(self, part: str, tasks: list[str] | None = None) -> list[Clip]:
        """The clips of ``part`` (``train``, ``val`` or ``test``), of ``tasks`` only when given."""
        self.setup()
        ids = {TASK_IDS[t] for t in tasks} if tasks is not None else None
        return [c for c in self.parts[part] if ids is None or c.task in ids]

    def loader(self, clips: list[Clip], shuffle: bool, seed: int = 0) -> DataLoader:
        gen = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(clips, batch_size=self.cfg.train.batch_size, shuffle=shuffle, collate_fn=collate,
                          generator=gen)

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.clips("train"), shuffle=True, seed=self.cfg.seed)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.clips("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.clips("test"), shuffle=False)

    def balanced_batches(self, steps: int, seed: int) -> list[dict[str, torch.Tensor]]:
        """``steps`` batches with as many training clips of each task (the curriculum's gate warm-up set)."""
        rng = np.random.default_rng(seed)
        by_task = [self.clips("train", [t]) for t in self.cfg.data.tasks]
        per_task = max(1, min(self.cfg.train.batch_size // len(by_task), *(len(c) for c in by_task)))
        return [collate([clips[j] for clips in by_task for j in rng.choice(len(clips), per_task, replace=False)])
                for _ in range(steps)]


def build_datamodule(cfg: AudioConfig) -> AudioDataModule:
    return AudioDataModule(cfg)


def model_info(cfg: AudioConfig, dm: AudioDataModule) -> dict[str, Any]:
    """What the model and ``predict`` need without the data: the codec's codebooks and the tasks it was trained on."""
    return {"codebooks": dm.codec.vq.codebooks.detach().clone(), "tasks": list(cfg.data.tasks)}
