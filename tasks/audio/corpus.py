"""The audio task's synthetic corpus: espeak-ng utterances of 40 seeded speakers (8 held out, each speaker saying
consecutive pairs of utterances so every clip has a prompt by the same voice) and rendered MIDI clips with
captions (about ten speech clips per music clip, as docs/data.md says), all 16 kHz and 2-4 s. Synthesis takes seconds to
minutes, so the corpus is cached as one ``.npz`` (no pickled objects) whose name is a hash of everything that
determines its samples; a second build with the same arguments only reads that file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata, resources
from pathlib import Path

import numpy as np
import torch

from zoo.errors import MissingExtraError, ZooValueError, check_arg, check_seed
from zoo.io import atomic_write_bytes
from zoo.tasks.audio import music, speech
from zoo.tasks.audio.codec import Codec

log = logging.getLogger(__name__)

#: Bump when the corpus layout or the way clips are drawn changes: old cache files are then never read.
CORPUS_VERSION = 1
SAMPLE_RATE = speech.SAMPLE_RATE
SECONDS = speech.SECONDS
KINDS = ("speech", "music")
PARTS = ("train", "test")
#: Consecutive utterances said by one speaker before the next speaker's turn.
UTTERANCES_PER_TURN = 2
#: Share of the music clips in the test part (at least one clip once there are two).
TEST_MUSIC_SHARE = 0.1
_INSTALL = ("audio", "audio", "moe-zoo")
_MUSIC_SEED_TAG = 0xC0DA  # separates the music lengths and test draw from the streams speech and music already use
_UNREADABLE = (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile)


@dataclass(frozen=True, eq=False)
class Corpus:
    """Clips and their labels, one entry per clip in every column; speech clips come first, then music.

    Args:
        seed: the seed the corpus was built from.
        waves: float32 16 kHz mono waveforms in [-1, 1], 2-4 s each.
        kind: ``"speech"`` or ``"music"`` per clip (a numpy str array, so ``corpus.kind == "music"`` is a mask).
        text: the exact transcript of a speech clip, the caption of a music clip.
        speaker: index into ``speech.speakers(seed)``; -1 for music.
        held_out: whether the clip belongs to the test part (a held-out speaker, or a drawn music clip).
        attributes: ``music.attributes`` of a music clip; None for speech.
        prompt_index: another clip of the same speaker (the voice prompt); -1 when there is none (music, or a
            speaker with a single clip).
    """

    seed: int
    waves: list[np.ndarray]
    kind: np.ndarray
    text: list[str]
    speaker: np.ndarray
    held_out: np.ndarray
    attributes: list[dict[str, str] | None]
    prompt_index: np.ndarray

    def __len__(self) -> int:
        return len(self.waves)

    def split(self, part: str) -> np.ndarray:
        """Indices of the clips of one part.

        Args:
            part: ``"train"`` or ``"test"`` (held-out speakers' utterances and the drawn music clips).

        Returns:
            Sorted int64 indices.
        """
        check_arg(part in PARTS, "part", part, PARTS)
        return np.flatnonzero(self.held_out if part == "test" else ~self.held_out)


def speaker_order(seed: int) -> list[speech.Speaker]:
    """The 40 speakers in the order the corpus gives them turns: the held-out ones spread evenly (positions 2, 7,
    12, ...), so even a small corpus has test speakers.

    Args:
        seed: the corpus seed (the speakers are ``speech.speakers(seed)``).
    """
    everyone = speech.speakers(seed)
    held = [s for s in everyone if s.held_out]
    kept = iter([s for s in everyone if not s.held_out])
    slots = {int((k + 0.5) * len(everyone) / len(held)): s for k, s in enumerate(held)}
    return [slots[i] if i in slots else next(kept) for i in range(len(everyone))]


def _version(dist: str, module: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        raise MissingExtraError(*_INSTALL, module) from None


@cache
def _soundfont_sha256() -> str:
    try:
        font = resources.files("pretty_midi") / music.SOUNDFONT_NAME
    except ModuleNotFoundError:
        raise MissingExtraError(*_INSTALL, "pretty_midi") from None
    if not font.is_file():
        raise ZooValueError(f"the SoundFont {music.SOUNDFONT_NAME} is missing from pretty_midi; "
                            "reinstall it: pip install --force-reinstall pretty-midi")
    return hashlib.sha256(font.read_bytes()).hexdigest()


def cache_key(seed: int, num_speech: int, num_music: int) -> str:
    """sha256 (hex) of what fixes the corpus's samples: the arguments, :data:`CORPUS_VERSION`, and the versions of
    the synthesisers in use (espeakng-loader and torchaudio's resampler for speech; midirenderer, pretty-midi and
    the SoundFont's sha256 for music).

    Args:
        seed: the corpus seed.
        num_speech: number of speech clips.
        num_music: number of music clips.
    """
    parts: dict[str, object] = {"seed": seed, "speech": num_speech, "music": num_music, "version": CORPUS_VERSION}
    if num_speech:
        parts["espeakng-loader"] = _version("espeakng-loader", "espeakng_loader")
        parts["torchaudio"] = _version("torchaudio", "torchaudio")
    if num_music:
        parts["midirenderer"] = _version("midirenderer", "midirenderer")
        parts["pretty-midi"] = _version("pretty-midi", "pretty_midi")
        parts["soundfont"] = _soundfont_sha256()
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$ZOO_HOME/audio`` (``ZOO_HOME`` defaults to ``~/.cache/zoo``, resolved as :func:`zoo.hub.cache_dir` does)."""
    from zoo.hub import cache_dir

    return cache_dir().parent / "audio"


def _progress(enabled: bool):
    """One bar on stderr (clips done / total), as the leaderboard's; a no-op when not ``enabled``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=Console(stderr=True), disable=not enabled, transient=True)


def _prompts(speaker: np.ndarray) -> np.ndarray:
    """For each clip, the next clip of its speaker (cyclically); -1 for music and for a speaker's only clip."""
    prompt = np.full(len(speaker), -1, np.int64)
    for who in np.unique(speaker[speaker >= 0]):
        clips = np.flatnonzero(speaker == who)
        if len(clips) > 1:
            prompt[clips] = np.roll(clips, -1)
    return prompt


def _music_test(seed: int, count: int) -> np.ndarray:
    """A seeded :data:`TEST_MUSIC_SHARE` of ``count`` music clips (at least one when ``count >= 2``)."""
    size = max(1, round(TEST_MUSIC_SHARE * count)) if count >= 2 else 0
    chosen = np.zeros(count, bool)
    chosen[np.random.default_rng([seed, _MUSIC_SEED_TAG]).choice(count, size, replace=False)] = True
    return chosen


def _synthesise(seed: int, num_speech: int, num_music: int, progress: bool) -> Corpus:
    """Every clip from the synthesisers, speech then music (see :func:`build_corpus`)."""
    order = speaker_order(seed)
    waves, kind, text, speaker, held, attrs = [], [], [], [], [], []
    with _progress(progress) as bar:
        task = bar.add_task("audio corpus: speech", total=num_speech + num_music)
        for i in range(num_speech):
            spk = order[(i // UTTERANCES_PER_TURN) % len(order)]
            said, _, wave = speech.utterance(seed, i, speaker=spk)
            waves.append(wave.astype(np.float32))
            kind.append("speech")
            text.append(said)
            speaker.append(spk.index)
            held.append(spk.held_out)
            attrs.append(None)
            bar.advance(task)
        bar.update(task, description="audio corpus: music")
        for j in range(num_music):
            params = music.music_params(seed, j)
            seconds = float(np.random.default_rng([seed, j, _MUSIC_SEED_TAG]).uniform(*SECONDS))
            waves.append(music.render(music.make_midi(params, seconds), SAMPLE_RATE, *SECONDS))
            kind.append("music")
            text.append(music.caption(params))
            speaker.append(-1)
            attrs.append(music.attributes(params))
            bar.advance(task)
    speaker_arr = np.array(speaker, np.int64)
    held_out = np.concatenate([np.array(held, bool), _music_test(seed, num_music)])
    return Corpus(seed, waves, np.array(kind, dtype=str), text, speaker_arr, held_out, attrs, _prompts(speaker_arr))


def _to_npz(corpus: Corpus, key: str) -> bytes:
    """The corpus as ``.npz`` bytes: one concatenated sample array with offsets, fixed-width unicode columns, and
    the music attributes as one string column per attribute ("" for speech)."""
    names = sorted({name for a in corpus.attributes if a is not None for name in a})
    columns = {f"attr_{name}": np.array([a[name] if a is not None else "" for a in corpus.attributes], dtype=str)
               for name in names}
    buffer = io.BytesIO()
    np.savez(
        buffer,
        key=np.array(key),
        seed=np.array(corpus.seed, np.int64),
        samples=np.concatenate(corpus.waves) if corpus.waves else np.zeros(0, np.float32),
        offsets=np.cumsum([0] + [len(w) for w in corpus.waves], dtype=np.int64),
        kind=np.asarray(corpus.kind, dtype=str),
        text=np.array(corpus.text, dtype=str),
        speaker=corpus.speaker,
        held_out=corpus.held_out,
        prompt_index=corpus.prompt_index,
        attribute_names=np.array(names, dtype=str),
        **columns,
    )
    return buffer.getvalue()


class _Unreadable(ValueError):
    """A cache file that opens but does not hold a consistent corpus for the expected key."""


def _load(path: Path, key: str) -> Corpus:
    with np.load(path, allow_pickle=False) as data:
        if str(data["key"]) != key:
            raise _Unreadable(f"it holds another corpus (key {str(data['key'])[:16]})")
        samples, offsets, kind = data["samples"], data["offsets"], data["kind"]
        n = len(offsets) - 1
        columns = {name: data[name] for name in ("text", "speaker", "held_out", "prompt_index")}
        attrs = {str(name): data[f"attr_{name}"] for name in data["attribute_names"]}
        seed = int(data["seed"])
    if (n < 0 or offsets[0] != 0 or offsets[-1] != len(samples) or np.any(np.diff(offsets) < 0)
            or samples.dtype != np.float32 or not set(kind.tolist()) <= set(KINDS)
            or any(len(c) != n for c in [kind, *columns.values(), *attrs.values()])):
        raise _Unreadable("its columns do not match its clips")
    music_clip = kind == "music"
    return Corpus(
        seed=seed,
        waves=np.split(samples, offsets[1:-1]),
        kind=kind,
        text=columns["text"].tolist(),
        speaker=columns["speaker"].astype(np.int64),
        held_out=columns["held_out"].astype(bool),
        attributes=[{name: str(col[i]) for name, col in attrs.items()} if music_clip[i] else None for i in range(n)],
        prompt_index=columns["prompt_index"].astype(np.int64),
    )


def build_corpus(seed: int, num_speech: int, num_music: int, *, cache_dir: str | os.PathLike | None = None,
                 progress: bool = False) -> Corpus:
    """Synthesise the corpus, or read it from the cache.

    Speech clip ``i`` is ``speech.utterance(seed, i)`` said by :func:`speaker_order` speaker
    ``(i // 2) % 40``; music clip ``j`` renders ``music.music_params(seed, j)`` at a seeded length in 2-4 s.
    The same arguments (and synthesiser versions) always give the same corpus. The cache file is
    ``<cache_dir>/corpus-<first 16 hex digits of cache_key>.npz``, written atomically once the whole corpus is
    built; an unreadable cache file is logged and rebuilt.

    Args:
        seed: the corpus seed, an int in [0, 2**32 - 1].
        num_speech: speech clips, at least 0 (the task mixes about 10 per music clip; docs/data.md).
        num_music: music clips, at least 0; the two counts together at least 1.
        cache_dir: where the cache file lives; :func:`default_cache_dir` when None.
        progress: show a progress bar on stderr while synthesising.

    Returns:
        The :class:`Corpus`, speech clips first.
    """
    check_seed(seed)
    for name, count in (("num_speech", num_speech), ("num_music", num_music)):
        check_arg(isinstance(count, int) and not isinstance(count, bool) and count >= 0, name, count, "an int >= 0")
    check_arg(num_speech + num_music >= 1, "num_speech + num_music", num_speech + num_music, "at least 1 clip")
    key = cache_key(seed, num_speech, num_music)
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / f"corpus-{key[:16]}.npz"
    if path.is_file():
        try:
            return _load(path, key)
        except _UNREADABLE as err:
            log.warning("audio corpus cache %s is unreadable (%s); rebuilding it", path, err)
    corpus = _synthesise(seed, num_speech, num_music, progress)
    atomic_write_bytes(path, _to_npz(corpus, key))
    return corpus


def tokenize(corpus: Corpus, codec: Codec, indices: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Codec tokens of clips, one whole-clip call each, before the delay pattern.

    Args:
        corpus: the corpus.
        codec: a fitted :class:`~zoo.tasks.audio.codec.Codec`.
        indices: which clips, in this order; all when None.

    Returns:
        One ``[len(wave) // 320 + 1, Q]`` long CPU tensor of codes in ``[0, 256)`` per clip.
    """
    device = codec.vq.codebooks.device
    chosen = range(len(corpus)) if indices is None else indices
    with torch.no_grad():
        return [codec.tokens(torch.from_numpy(corpus.waves[i]).to(device)).cpu() for i in chosen]
