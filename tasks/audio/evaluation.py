"""Scores of a trained audio decoder, all local proxies for the paper's metrics.

Teacher-forced: ``speech_nll``/``music_nll`` (nats per scored token of the held-out clips), and for MoE decoders
``active_experts`` (routed FFN experts per token, null excluded, mean over blocks) and ``null_rate`` (share of
tokens whose selection includes the null expert). Generated: ``cer`` (a local CTC recogniser's character error
rate on ``eval.speech_clips`` held-out sentences the model speaks; the recogniser's own CER on the real clips,
``cer_real``, and on the same clips through the codec, ``cer_codec``, bound what a decoder can reach), ``eos_rate``
(generated clips that ended), ``music_fd`` (Fréchet distance, in a local music classifier's embedding, between the
music the model plays for ``eval.music_clips`` new captions and a rendered reference set; ``music_fd_codec`` is the
reference set's own distance after the codec, the floor) and ``attr_acc`` (the classifier's attributes of the
generated music against its captions; ``attr_acc_real`` on rendered clips). Curriculum runs add
``unfreeze_spike``: the largest loss of a fixed validation batch in the first ``train.spike_steps`` joint steps
over its loss just before them (1 = no spike). Speed: ``train_tok_s`` and ``gen_tok_s`` / ``gen_tok_s_nocache``
(frames per second of batched sampling with and without the key/value cache).

The probes are trained once per corpus and cached beside it: the recogniser on the training speech, the music
classifier on a separately rendered set of music clips (its own seeded stream), whose other half is the FD
reference.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from zoo.io import atomic_write_bytes

from . import music, probes
from .config import AudioConfig
from .corpus import Corpus, build_corpus, cache_key, default_cache_dir
from .data import TASK_IDS, AudioDataModule
from .generation import generate
from .metrics import cer, frechet_distance
from .module import AudioModule, run_decoder, token_losses

log = logging.getLogger(__name__)

#: Seed offsets of the music streams the probe set and the generation captions come from.
PROBE_STREAM, CAPTION_STREAM = 0x5EED_0001, 0x5EED_0002


def _cached_probe(name: str, key: str, build: Callable[[], nn.Module], train: Callable[[], nn.Module]) -> nn.Module:
    path = default_cache_dir() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
    if path.is_file():
        try:
            model = build()
            model.load_state_dict(load_file(path))
            return model.eval()
        except (OSError, RuntimeError, ValueError, SafetensorError) as err:
            log.warning("audio probe cache %s is unreadable (%s); retraining it", path, err)
    model = train()
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in model.state_dict().items()}))
    return model.eval()


def recognizer(corpus: Corpus, steps: int) -> probes.CTCRecognizer:
    """The CTC recogniser trained on the corpus's training speech (cached)."""
    train = [i for i in corpus.split("train") if corpus.kind[i] == "speech"]
    key = f"{cache_key(corpus.seed, int((corpus.kind == 'speech').sum()), int((corpus.kind == 'music').sum()))}" \
          f"/recognizer-v1/{steps}"
    return _cached_probe("recognizer", key, probes.CTCRecognizer, lambda: probes.train_recognizer(
        [corpus.waves[i] for i in train], [corpus.text[i] for i in train], seed=corpus.seed, steps=steps))


def probe_music(seed: int, count: int) -> Corpus:
    """``count`` rendered music clips of the probe stream (half train the classifier, half are the FD reference)."""
    return build_corpus((seed + PROBE_STREAM) % 2**32, 0, count)


def music_classifier(seed: int, count: int, steps: int) -> probes.MusicClassifier:
    """The music classifier trained on the first half of :func:`probe_music` (cached)."""
    ref = probe_music(seed, count)
    half = range(count // 2)
    key = f"{cache_key(ref.seed, 0, count)}/classifier-v1/{steps}"
    return _cached_probe("music-classifier", key, probes.MusicClassifier, lambda: probes.train_music_classifier(
        [ref.waves[i] for i in half], [ref.attributes[i] for i in half], seed=seed, steps=steps))


def teacher_forced(module: AudioModule, dm: AudioDataModule) -> dict[str, float]:
    """Held-out NLL per task and, for MoE decoders, active experts and null rate (module docstring)."""
    model = module.model.eval()
    sums = {name: [0.0, 0] for name in TASK_IDS}
    active, null, weight = 0.0, 0.0, 0
    with torch.no_grad():
        for batch in dm.test_dataloader():
            out = run_decoder(model, batch)
            ce, mask = token_losses(out.pred, batch["target"])
            for name, task in TASK_IDS.items():
                rows = batch["task"] == task
                sums[name][0] += float(ce[rows].sum())
                sums[name][1] += int(mask[rows].sum())
            if out.stats:
                n = batch["audio"].shape[0] * (batch["audio"].shape[1] + batch["text"].shape[1] + 1)
                active += n * statistics.fmean(float(s.active_experts) for s in out.stats.values())
                null += n * statistics.fmean(float(v) for k, v in out.extras.items() if k.endswith("null_rate"))
                weight += n
    metrics = {f"{name}_nll": total / count for name, (total, count) in sums.items() if count}
    if weight:
        metrics["active_experts"], metrics["null_rate"] = active / weight, null / weight
    return metrics


def _speech(cfg: AudioConfig, module: AudioModule, dm: AudioDataModule) -> dict[str, float]:
    corpus, codec = dm.data.corpus, module.codec
    test = [c.index for c in dm.clips("test", ["speech"])][: cfg.eval.speech_clips]
    texts = [corpus.text[i] for i in test]
    asr = recognizer(corpus, cfg.eval.recognizer_steps)
    made = generate(module.model, codec, texts, "speech", seed=cfg.seed, temperature=cfg.eval.temperature,
                    top_k=cfg.eval.top_k, max_frames=cfg.eval.max_frames)
    real = [corpus.waves[i] for i in test]
    through_codec = [codec.waveform(codec.tokens(w), len(w)) for w in real]
    return {"cer": cer(probes.transcribe(asr, made.waves), texts),
            "cer_real": cer(probes.transcribe(asr, real), texts),
            "cer_codec": cer(probes.transcribe(asr, through_codec), texts),
            "eos_rate_speech": float(np.mean(made.ended))}


def _music(cfg: AudioConfig, module: AudioModule) -> dict[str, float]:
    seed, codec = cfg.data.seed, module.codec
    params = [music.music_params((seed + CAPTION_STREAM) % 2**32, j) for j in range(cfg.eval.music_clips)]
    made = generate(module.model, codec, [music.caption(p) for p in params], "music", seed=cfg.seed,
                    temperature=cfg.eval.temperature, top_k=cfg.eval.top_k, max_frames=cfg.eval.max_frames)
    count = cfg.eval.probe_music
    classifier = music_classifier(seed, count, cfg.eval.classifier_steps)
    ref = probe_music(seed, count)
    held = range(count // 2, count)
    ref_waves = [ref.waves[i] for i in held]
    ref_emb = probes.embed(classifier, ref_waves)
    codec_emb = probes.embed(classifier, [codec.waveform(codec.tokens(w), len(w)) for w in ref_waves])
    return {"music_fd": frechet_distance(probes.embed(classifier, made.waves), ref_emb),
            "music_fd_codec": frechet_distance(codec_emb, ref_emb),
            "attr_acc": probes.attribute_accuracy(classifier, made.waves, [music.attributes(p) for p in params])["mean"],
            "attr_acc_real": probes.attribute_accuracy(classifier, ref_waves,
                                                       [ref.attributes[i] for i in held])["mean"],
            "eos_rate_music": float(np.mean(made.ended))}


def generation_speed(module: AudioModule, frames: int = 48, batch: int = 8) -> dict[str, float]:
    """Frames per second of batched sampling, with and without the key/value cache."""
    text = torch.full((batch, 40), 5, dtype=torch.long)
    speed = {}
    for name, cached in (("gen_tok_s", True), ("gen_tok_s_nocache", False)):
        started = time.perf_counter()
        out = module.model.generate(text, 0, frames, use_cache=cached, seed=0)
        speed[name] = batch * out.tokens.shape[1] / (time.perf_counter() - started)
    return speed


def evaluate(cfg: AudioConfig, trainer: L.Trainer, module: AudioModule, dm: AudioDataModule) -> dict[str, float]:
    """Every score of the module docstring, under ``test/``."""
    started = time.perf_counter()
    dm.setup("test")
    metrics: dict[str, Any] = teacher_forced(module, dm)
    if "speech" in cfg.data.tasks:
        metrics.update(_speech(cfg, module, dm))
    if "music" in cfg.data.tasks:
        metrics.update(_music(cfg, module))
    if len(module.spike_curve) > 1:
        metrics["unfreeze_spike"] = max(module.spike_curve[1:]) / module.spike_curve[0]
    metrics.update(generation_speed(module))
    metrics["train_tok_s"] = module.train_tokens_per_s
    metrics["eval_s"] = time.perf_counter() - started
    return {f"test/{name}": float(value) for name, value in metrics.items()}
