"""Two small probe networks, trained locally in about a minute on a CPU, that turn generated audio into the audio
task's proxy metrics: a CTC character recogniser for CER-local (speech) and a music attribute classifier whose
penultimate layer gives the embedding of FD-local and whose heads give the attribute accuracy (music). They stand
in for the paper's Whisper/Paraformer and openl3/CLAP judges, which are not available offline.

Both read the log-mel of :class:`zoo.tasks.audio.codec.MelSpec` (80 bins, 50 frames/s), normalised per clip over
its own frames, so a clip's loudness and a speaker's spectral tilt matter less. :class:`CTCRecognizer` is two 1-D
convolutions (the second halves the frame rate to 25/s) and a bidirectional GRU over the lower-cased
:data:`~zoo.tasks.audio.speech.ALLOWED_CHARS` plus a blank; :class:`MusicClassifier` is a stack of dilated 1-D
convolutions, pooled over time by mean, standard deviation and a few channels' autocorrelation at lags up to
1.28 s (where tempo and note density show), one embedding layer and a head per label of
:func:`zoo.tasks.audio.music.attributes`. Both train on log-mels shifted by a couple of bins at random, the
classifier also on random crops and with dropout, because they must judge voices and clips they never saw.
Training is seeded (initial weights, batch order, augmentation and dropout), so the same inputs and seed give the
same weights on a CPU; a padded batch gives each clip the same output as the clip alone. Both are plain ``nn.Module`` objects whose ``state_dict`` holds
everything needed to rebuild them with their constructor's default arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from zoo.errors import check_arg, check_seed
from zoo.tasks.audio.codec import HOP, N_MELS, MelSpec
from zoo.tasks.audio.music import DENSITY_BUCKETS, FAMILIES, MODES, REGISTERS, TEMPO_BUCKETS
from zoo.tasks.audio.speech import ALLOWED_CHARS

#: The recogniser's characters; id 0 is the CTC blank and character ``ALPHABET[i]`` is id ``i + 1``.
ALPHABET = "".join(sorted({c.lower() for c in ALLOWED_CHARS}))
BLANK = 0
#: The labels :class:`MusicClassifier` predicts and their values, in head order.
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "family": tuple(FAMILIES),
    "tempo": tuple(name for name, _ in TEMPO_BUCKETS),
    "mode": tuple(MODES),
    "density": tuple(name for name, _ in DENSITY_BUCKETS),
    "register": tuple(REGISTERS),
}
#: The largest mel-bin shift of the training augmentation (both probes).
MEL_SHIFT = 2
#: Dropout before the music classifier's embedding layer, and the shortest random crop it trains on (frames).
DROPOUT, MIN_CROP = 0.3, 100
#: Channels and lags (frames, 50 per second) of the music classifier's autocorrelation pooling.
RHYTHM_CHANNELS, MAX_LAG = 8, 64
_MIN_SAMPLES = HOP  # a clip shorter than one hop has a single, mostly padded frame


@cache
def _melspec() -> MelSpec:
    return MelSpec()


def normalize_text(text: str) -> str:
    """A transcript as the recogniser writes it: lower-cased, characters outside :data:`ALPHABET` dropped.

    Args:
        text: English text.
    """
    return "".join(c for c in text.lower() if c in ALPHABET)


def _features(waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """The ``[frames, 80]`` log-mel of each waveform."""
    if isinstance(waves, np.ndarray | torch.Tensor):
        check_arg(waves.ndim == 2, "waves.shape", tuple(waves.shape), "[N, T] or a list of [T] waveforms")
    check_arg(len(waves) > 0, "waves", "[]", "at least one waveform")
    out = []
    for i, wave in enumerate(waves):
        check_arg(np.ndim(wave) == 1 and len(wave) >= _MIN_SAMPLES, f"waves[{i}].shape", tuple(np.shape(wave)),
                  f"[T] with T >= {_MIN_SAMPLES} samples at 16 kHz")
        wave = wave.detach().cpu() if isinstance(wave, torch.Tensor) else np.asarray(wave, dtype=np.float32)
        out.append(_melspec()(wave))
    return out


def _pad(features: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded ``[B, frames, 80]`` features and their ``[B]`` lengths."""
    lengths = torch.tensor([len(f) for f in features])
    return nn.utils.rnn.pad_sequence(list(features), batch_first=True).to(device), lengths


def _normalize(x: torch.Tensor, lengths: torch.Tensor, per_bin: bool) -> torch.Tensor:
    """Zero mean and unit variance over each clip's own frames (per mel bin or over all bins); padding stays 0."""
    mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None])[..., None]
    count = lengths.to(x.device, x.dtype)[:, None, None] * (1 if per_bin else x.shape[2])
    dims = (1,) if per_bin else (1, 2)
    mean = (x * mask).sum(dims, keepdim=True) / count
    var = ((x - mean).square() * mask).sum(dims, keepdim=True) / count
    return (x - mean) / (var + 1e-5).sqrt() * mask


def _shift_bins(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Training-time variation of a ``[B, frames, 80]`` log-mel batch: each clip's bins shifted by a random whole
    number of bins in ``[-MEL_SHIFT, MEL_SHIFT]``, edge bins repeated (a cheap stand-in for another voice's pitch and
    formants, or a slight transposition)."""
    shifts = torch.randint(-MEL_SHIFT, MEL_SHIFT + 1, (x.shape[0],), generator=gen)
    source = (torch.arange(x.shape[2])[None, :] - shifts[:, None]).clamp(0, x.shape[2] - 1)
    return torch.gather(x, 2, source[:, None, :].expand_as(x).to(x.device))


def _time_mask(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[B, 1, frames]`` float mask of the valid frames of a ``[B, C, frames]`` batch: zeroing the padding after
    every convolution keeps a clip's output independent of the clips it is batched with."""
    frames = torch.arange(x.shape[2], device=x.device)
    return (frames[None, :] < lengths.to(x.device)[:, None])[:, None, :].to(x.dtype)


def _batches(n: int, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """``steps`` batches of indices, epochs of seeded permutations."""
    rng = np.random.default_rng([seed, 0xBA7C])
    order = np.concatenate([rng.permutation(n) for _ in range(-(-steps * batch_size // n))])
    return [order[s * batch_size:(s + 1) * batch_size] for s in range(steps)]


def _check_training(seed: int, steps: int, batch_size: int, lr: float) -> None:
    check_seed(seed)
    check_arg(isinstance(steps, int) and steps >= 1, "steps", steps, "an int >= 1")
    check_arg(isinstance(batch_size, int) and batch_size >= 1, "batch_size", batch_size, "an int >= 1")
    check_arg(lr > 0, "lr", lr, "a learning rate > 0")


def _fit(build: Callable[[], nn.Module], loss_of: Callable[[nn.Module, np.ndarray], torch.Tensor], n: int,
         seed: int, steps: int, batch_size: int, lr: float) -> nn.Module:
    """Build a model and train it with Adam, a cosine learning-rate decay and gradient clipping over seeded batches
    of ``n`` examples; the global torch generator is seeded for the initial weights and dropout, then restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * s / steps)))
        model.train()
        for idx in _batches(n, min(batch_size, n), steps, seed):
            loss = loss_of(model, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
    return model.eval()


class CTCRecognizer(nn.Module):
    """Log-mel → two 1-D convolutions (stride 1, then 2) → bidirectional GRU → per-frame character log-probs.

    Args:
        channels: channels of the convolutions.
        hidden: GRU width per direction.
    """

    def __init__(self, channels: int = 128, hidden: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(N_MELS, channels, 5, padding=2)
        self.conv2 = nn.Conv1d(channels, channels, 5, stride=2, padding=2)
        self.rnn = nn.GRU(channels, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, len(ALPHABET) + 1)

    def forward(self, logmel: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Character log-probabilities of a padded batch.

        Args:
            logmel: ``[B, frames, 80]`` log-mel, zero-padded.
            lengths: ``[B]`` frames of each clip.

        Returns:
            ``[B, frames', len(ALPHABET) + 1]`` log-probabilities (blank first) and the ``[B]`` output lengths
            ``(lengths - 1) // 2 + 1``.
        """
        x = _normalize(logmel, lengths, per_bin=True).transpose(1, 2)
        x = F.gelu(self.conv2(F.gelu(self.conv1(x)) * _time_mask(x, lengths))).transpose(1, 2)
        out_lengths = (lengths - 1) // 2 + 1
        packed = pack_padded_sequence(x, out_lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=x.shape[1])
        return self.out(y).log_softmax(-1), out_lengths


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    """Best-path CTC decoding: the most likely symbol of each frame, repeats merged, then blanks removed.

    Args:
        log_probs: ``[B, frames, len(ALPHABET) + 1]`` scores (blank = id 0).
        lengths: ``[B]`` valid frames of each row.
    """
    check_arg(log_probs.dim() == 3 and log_probs.shape[-1] == len(ALPHABET) + 1, "log_probs.shape",
              tuple(log_probs.shape), f"[B, frames, {len(ALPHABET) + 1}]")
    best = log_probs.argmax(-1).cpu()
    valid = torch.arange(best.shape[1])[None, :] < lengths.cpu()[:, None]
    keep = valid & (best != BLANK)
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    return ["".join(ALPHABET[i - 1] for i in row[k].tolist()) for row, k in zip(best, keep)]


def train_recognizer(waves: Sequence[np.ndarray], texts: Sequence[str], seed: int, steps: int = 600,
                     batch_size: int = 16, lr: float = 3e-3) -> CTCRecognizer:
    """Train a :class:`CTCRecognizer` with CTC loss on ``(waveform, transcript)`` pairs.

    Args:
        waves: 16 kHz mono waveforms (numpy ``[T]``).
        texts: their transcripts over :data:`~zoo.tasks.audio.speech.ALLOWED_CHARS`, as many as ``waves``.
        seed: seed of the initial weights, the batch order and the augmentation.
        steps: optimiser steps.
        batch_size: utterances per step.
        lr: Adam's peak learning rate (cosine decay to 0).

    Returns:
        The trained model, in eval mode, on the CPU.
    """
    _check_training(seed, steps, batch_size, lr)
    check_arg(len(texts) == len(waves), "len(texts)", len(texts), f"as many as waves ({len(waves)})")
    for i, text in enumerate(texts):
        ok = isinstance(text, str) and bool(normalize_text(text)) and set(text) <= ALLOWED_CHARS
        check_arg(ok, f"texts[{i}]", text, "English text of letters, digits, space and .,;:?!'-")
    feats = _features(waves)
    labels = [torch.tensor([ALPHABET.index(c) + 1 for c in normalize_text(t)]) for t in texts]
    gen = torch.Generator().manual_seed(seed)

    def loss_of(model: nn.Module, idx: np.ndarray) -> torch.Tensor:
        x, lengths = _pad([feats[i] for i in idx], torch.device("cpu"))
        x = _shift_bins(x, gen)
        log_probs, out_lengths = model(x, lengths)
        targets = [labels[i] for i in idx]
        return F.ctc_loss(log_probs.transpose(0, 1), torch.cat(targets), out_lengths,
                          torch.tensor([len(t) for t in targets]), blank=BLANK, zero_infinity=True)

    return _fit(CTCRecognizer, loss_of, len(waves), seed, steps, batch_size, lr)


@torch.no_grad()
def transcribe(model: CTCRecognizer, waves: Sequence[np.ndarray], batch_size: int = 32) -> list[str]:
    """Greedy transcripts of waveforms (lower case, see :func:`normalize_text`).

    Args:
        model: a trained recogniser (left in eval mode).
        waves: 16 kHz mono waveforms.
        batch_size: clips per forward pass.
    """
    feats = _features(waves)
    device = next(model.parameters()).device
    model.eval()
    out: list[str] = []
    for start in range(0, len(feats), batch_size):
        x, lengths = _pad(feats[start:start + batch_size], device)
        out += greedy_decode(*model(x, lengths.to(device)))
    return out


def _autocorrelation(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Normalised autocorrelation at lags ``1..MAX_LAG`` of each channel of ``[B, C, frames]`` over each clip's
    frames, flattened to ``[B, C * MAX_LAG]``: the periodicities that tempo and note density show up in."""
    valid = _time_mask(x, lengths)
    count = lengths.to(x.device, x.dtype)[:, None]
    mean = (x * valid).sum(2) / count
    x = (x - mean[..., None]) * valid
    var = x.square().sum(2) / count + 1e-5
    lags = []
    for lag in range(1, MAX_LAG + 1):
        overlap = (count - lag).clamp_min(1.0)
        lags.append((x[..., lag:] * x[..., :-lag]).sum(2) / overlap / var)
    return torch.stack(lags, 2).flatten(1)


class MusicClassifier(nn.Module):
    """Log-mel → dilated 1-D convolutions → mean and std pooling over time → embedding → one head per attribute.

    Args:
        channels: channels of the convolutions.
        dim: width of the embedding (the penultimate layer, :func:`embed`).
    """

    def __init__(self, channels: int = 96, dim: int = 128) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(N_MELS, channels, 3, padding=1)])
        self.convs.extend(nn.Conv1d(channels, channels, 3, padding=d, dilation=d) for d in (1, 2, 4, 8, 16))
        self.rhythm = nn.Conv1d(channels, RHYTHM_CHANNELS, 1)
        self.embedding = nn.Sequential(nn.Dropout(DROPOUT), nn.Linear(2 * channels + RHYTHM_CHANNELS * MAX_LAG, dim),
                                       nn.GELU())
        self.heads = nn.ModuleDict({name: nn.Linear(dim, len(values)) for name, values in ATTRIBUTE_VALUES.items()})

    def embed(self, logmel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The ``[B, dim]`` embedding of a padded ``[B, frames, 80]`` batch with ``[B]`` frame counts."""
        h = _normalize(logmel, lengths, per_bin=False).transpose(1, 2)
        mask = _time_mask(h, lengths)
        for conv in self.convs:
            h = F.gelu(conv(h)) * mask
        count = lengths.to(h.device, h.dtype)[:, None]
        mean = (h * mask).sum(2) / count
        std = (((h - mean[..., None]).square() * mask).sum(2) / count + 1e-5).sqrt()
        return self.embedding(torch.cat([mean, std, _autocorrelation(self.rhythm(h), lengths)], 1))

    def forward(self, logmel: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits ``[B, len(ATTRIBUTE_VALUES[name])]`` of each attribute ``name``."""
        e = self.embed(logmel, lengths)
        return {name: head(e) for name, head in self.heads.items()}


def _attribute_ids(attrs: Sequence[dict[str, str]]) -> dict[str, torch.Tensor]:
    ids: dict[str, list[int]] = {name: [] for name in ATTRIBUTE_VALUES}
    for i, labels in enumerate(attrs):
        for name, values in ATTRIBUTE_VALUES.items():
            check_arg(isinstance(labels, dict) and labels.get(name) in values, f"attrs[{i}][{name!r}]",
                      labels.get(name) if isinstance(labels, dict) else labels, values)
            ids[name].append(values.index(labels[name]))
    return {name: torch.tensor(v) for name, v in ids.items()}


def train_music_classifier(waves: Sequence[np.ndarray], attrs: Sequence[dict[str, str]], seed: int,
                           steps: int = 1000, batch_size: int = 16, lr: float = 2e-3) -> MusicClassifier:
    """Train a :class:`MusicClassifier` on clips and their :func:`zoo.tasks.audio.music.attributes` (summed
    cross-entropy of the heads).

    Args:
        waves: 16 kHz mono waveforms.
        attrs: their labels, one dict per clip with a value of :data:`ATTRIBUTE_VALUES` for every attribute.
        seed: seed of the initial weights, the batch order and the augmentation.
        steps: optimiser steps.
        batch_size: clips per step.
        lr: Adam's peak learning rate (cosine decay to 0).

    Returns:
        The trained model, in eval mode, on the CPU.
    """
    _check_training(seed, steps, batch_size, lr)
    check_arg(len(attrs) == len(waves), "len(attrs)", len(attrs), f"as many as waves ({len(waves)})")
    targets = _attribute_ids(attrs)
    feats = _features(waves)
    gen = torch.Generator().manual_seed(seed)

    def loss_of(model: nn.Module, idx: np.ndarray) -> torch.Tensor:
        crops = []
        for i in idx:
            size = int(torch.randint(min(MIN_CROP, len(feats[i])), len(feats[i]) + 1, (1,), generator=gen))
            start = int(torch.randint(0, len(feats[i]) - size + 1, (1,), generator=gen))
            crops.append(feats[i][start:start + size])
        x, lengths = _pad(crops, torch.device("cpu"))
        logits = model(_shift_bins(x, gen), lengths)
        return sum(F.cross_entropy(logits[name], targets[name][idx]) for name in ATTRIBUTE_VALUES)

    return _fit(MusicClassifier, loss_of, len(waves), seed, steps, batch_size, lr)


@torch.no_grad()
def _run(model: MusicClassifier, waves: Sequence[np.ndarray], batch_size: int, method) -> list:
    feats = _features(waves)
    device = next(model.parameters()).device
    model.eval()
    return [method(*_pad(feats[s:s + batch_size], device)) for s in range(0, len(feats), batch_size)]


def embed(model: MusicClassifier, waves: Sequence[np.ndarray], batch_size: int = 32) -> torch.Tensor:
    """Penultimate-layer embeddings of clips, the space of FD-local.

    Args:
        model: a trained classifier.
        waves: 16 kHz mono waveforms.
        batch_size: clips per forward pass.

    Returns:
        ``[N, dim]`` float32 on the CPU.
    """
    return torch.cat(_run(model, waves, batch_size, model.embed)).cpu()


def predict_attributes(model: MusicClassifier, waves: Sequence[np.ndarray],
                       batch_size: int = 32) -> list[dict[str, str]]:
    """The most likely value of every attribute for each clip.

    Args:
        model: a trained classifier.
        waves: 16 kHz mono waveforms.
        batch_size: clips per forward pass.
    """
    out: list[dict[str, str]] = []
    for logits in _run(model, waves, batch_size, model):
        best = {name: v.argmax(-1).tolist() for name, v in logits.items()}
        out += [{name: ATTRIBUTE_VALUES[name][best[name][i]] for name in ATTRIBUTE_VALUES}
                for i in range(len(best["family"]))]
    return out


def attribute_accuracy(model: MusicClassifier, waves: Sequence[np.ndarray],
                       attrs: Sequence[dict[str, str]]) -> dict[str, float]:
    """Share of clips whose predicted value is the true one, per attribute, and ``"mean"`` over the attributes.

    Args:
        model: a trained classifier.
        waves: 16 kHz mono waveforms.
        attrs: their true labels (see :func:`train_music_classifier`).
    """
    check_arg(len(attrs) == len(waves), "len(attrs)", len(attrs), f"as many as waves ({len(waves)})")
    truth = _attribute_ids(attrs)
    pred = predict_attributes(model, waves)
    acc = {name: float(np.mean([p[name] == a[name] for p, a in zip(pred, attrs)])) for name in truth}
    return {**acc, "mean": float(np.mean(list(acc.values())))}
