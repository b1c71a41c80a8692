"""A user's own audio data for the audio task: :func:`read_audio` turns a WAV, FLAC, OGG or MP3 file into the task's
common currency (16 kHz mono float32 in [-1, 1]) and says what it changed on the way; :func:`read_manifest` reads
the zoo's JSONL manifest into :class:`Example` records without touching the audio, which :func:`load_example` reads
when it is needed; :func:`read_ljspeech`, :func:`read_seedtts` and :func:`read_librispeech` read those corpora's own
layouts and :func:`write_manifest` stores any of them as a manifest. Decoding goes through ``soundfile``, whose wheels
bundle libsndfile (torchaudio 2.9+ decodes only through torchcodec, which needs a system FFmpeg); resampling is
``torchaudio.functional.resample``, as in :mod:`zoo.tasks.audio.speech`. Every mistake in a file is one line that
names the file, and the line number where there is one.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from zoo.errors import MissingExtraError, ZooValueError, check_arg
from zoo.io import atomic_write_text

SAMPLE_RATE = 16_000
#: The text field of each task: the transcript of text-to-speech, the caption of text-to-music.
TASKS = {"tts": "text", "t2m": "caption"}
#: Manifest keys besides ``task`` and its text field; ``prompt_audio`` and ``prompt_text`` belong to tts only.
OPTIONAL_KEYS = ("id", "prompt_audio", "prompt_text", "target_audio", "sr")
#: Resampling builds a sinc kernel of about (new rate x old rate), both reduced by their gcd; a rate pair whose
#: product exceeds this (such as 44101 Hz to 16 kHz) is refused rather than allocating gigabytes.
MAX_RATIO_TERMS = 1_000_000
_INSTALL = ("audio", "audio", "moe-zoo")


def _soundfile() -> ModuleType:
    try:
        return import_module("soundfile")
    except ModuleNotFoundError:
        raise MissingExtraError(*_INSTALL, "soundfile") from None


def _resample(wave: np.ndarray, rate: int, sample_rate: int, path: Path) -> np.ndarray:
    import torch
    import torchaudio.functional as AF

    step = math.gcd(rate, sample_rate)
    if (rate // step) * (sample_rate // step) > MAX_RATIO_TERMS:
        raise ZooValueError(f"{path}: cannot resample {rate} Hz to {sample_rate} Hz (the ratio reduces to "
                            f"{rate // step}/{sample_rate // step}, too fine); convert the file to a common rate first")
    return AF.resample(torch.from_numpy(wave), rate, sample_rate).numpy()


def read_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, list[str]]:
    """Read an audio file as a mono float32 waveform in [-1, 1] at ``sample_rate``.

    Channels are averaged, other rates resampled (windowed sinc, torchaudio's defaults) and float samples outside
    [-1, 1] clipped; each of these adds a note such as ``"resampled from 44100 Hz"``.

    Args:
        path: a file libsndfile decodes: WAV (PCM or float), FLAC, OGG (Vorbis, Opus), MP3, AIFF and others.
        sample_rate: the rate of the returned waveform in Hz.

    Returns:
        The waveform, shape ``(samples,)``, and the list of notes (empty when the file was used as it is).
    """
    check_arg(isinstance(sample_rate, int) and not isinstance(sample_rate, bool) and sample_rate > 0,
              "sample_rate", sample_rate, "a positive int (Hz)")
    sf = _soundfile()
    path = Path(path)
    if not path.is_file():
        raise ZooValueError(f"audio file {path} does not exist" if not path.exists() else
                            f"audio file {path} is not a file")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except sf.LibsndfileError as err:
        raise ZooValueError(f"{path} is not audio libsndfile can decode: {err.error_string.rstrip('.')}") from None
    except (sf.SoundFileError, RuntimeError, ValueError) as err:
        raise ZooValueError(f"{path} is not audio libsndfile can decode: {err}") from None
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ZooValueError(f"{path} holds no audio (0 samples)")
    if not np.isfinite(data).all():
        raise ZooValueError(f"{path} holds non-finite samples (NaN or infinity)")
    notes = []
    wave = np.ascontiguousarray(data[:, 0])
    if data.shape[1] > 1:
        wave = data.mean(axis=1, dtype=np.float32)
        notes.append(f"mixed {data.shape[1]} channels to mono")
    if rate != sample_rate:
        wave = _resample(wave, rate, sample_rate, path)
        notes.append(f"resampled from {rate} Hz")
    outside = int(np.count_nonzero(np.abs(wave) > 1.0))
    if outside:
        wave = np.clip(wave, -1.0, 1.0)
        notes.append(f"clipped {outside} samples outside [-1, 1]")
    return wave.astype(np.float32, copy=False), notes


@dataclass(frozen=True)
class Example:
    """One example of the audio task; it names its audio files, which :func:`load_example` reads.

    Args:
        task: ``"tts"`` (text to speech) or ``"t2m"`` (text to music), see :data:`TASKS`.
        text: the transcript to speak (tts) or the caption of the music (t2m).
        id: a name unique within its manifest.
        prompt_audio: tts only: a recording of the voice to speak in, or None.
        prompt_text: tts only: the transcript of ``prompt_audio``, or None.
        target_audio: the audio the text describes, or None (examples to generate for).
        sr: the sample rate :func:`load_example` gives the waveforms at.
    """

    task: str
    text: str
    id: str
    prompt_audio: Path | None = None
    prompt_text: str | None = None
    target_audio: Path | None = None
    sr: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        check_arg(self.task in TASKS, "task", self.task, tuple(TASKS))
        check_arg(isinstance(self.text, str) and self.text.strip() != "", TASKS[self.task], self.text,
                  "a non-empty str")
        check_arg(isinstance(self.id, str) and self.id != "", "id", self.id, "a non-empty str")
        for name in ("prompt_audio", "target_audio"):
            value = getattr(self, name)
            check_arg(value is None or isinstance(value, str | os.PathLike) and str(value) != "", name, value,
                      "a path or None")
            if value is not None:
                object.__setattr__(self, name, Path(value))
        check_arg(self.prompt_text is None or isinstance(self.prompt_text, str) and self.prompt_text.strip() != "",
                  "prompt_text", self.prompt_text, "a non-empty str or None")
        if self.task != "tts":
            check_arg(self.prompt_audio is None, "prompt_audio", self.prompt_audio, "None for a t2m example")
            check_arg(self.prompt_text is None, "prompt_text", self.prompt_text, "None for a t2m example")
        check_arg(self.prompt_text is None or self.prompt_audio is not None, "prompt_text", self.prompt_text,
                  "None when there is no prompt_audio")
        check_arg(isinstance(self.sr, int) and not isinstance(self.sr, bool) and self.sr > 0, "sr", self.sr,
                  "a positive int (Hz)")


class ExampleAudio(NamedTuple):
    """The waveforms of an :class:`Example` (None where it names no file) and the notes of :func:`read_audio`."""

    prompt: np.ndarray | None
    target: np.ndarray | None
    notes: list[str]


def load_example(example: Example) -> ExampleAudio:
    """Read the audio files of ``example`` at its ``sr`` with :func:`read_audio`.

    Args:
        example: the example whose ``prompt_audio`` and ``target_audio`` to read.

    Returns:
        The prompt and target waveforms and the notes, each prefixed with ``"prompt: "`` or ``"target: "``.
    """
    check_arg(isinstance(example, Example), "example", type(example).__name__, "an Example")
    waves, notes = {}, []
    for role, path in (("prompt", example.prompt_audio), ("target", example.target_audio)):
        waves[role] = None
        if path is not None:
            waves[role], said = read_audio(path, example.sr)
            notes += [f"{role}: {note}" for note in said]
    return ExampleAudio(waves["prompt"], waves["target"], notes)


def _lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """The numbered non-blank lines of a UTF-8 text file, without their line ends."""
    if not path.is_file():
        raise ZooValueError(f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ZooValueError(f"{what} {path} is not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise ZooValueError(f"cannot read {what} {path}: {err.strerror or err}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def _audio_path(folder: Path, value: Any, key: str, where: str) -> Path:
    """``value`` (absolute, or relative to ``folder``) as an absolute normalised path to an existing file."""
    if not isinstance(value, str) or value == "":
        raise ZooValueError(f"{where}: {key}={value!r} is not allowed; expected a non-empty path string or null")
    path = Path(os.path.abspath(folder / value))
    if not path.is_file():
        raise ZooValueError(f"{where}: {key} {value!r} not found (looked for {path})")
    return path


def _manifest_example(record: Any, folder: Path, default_id: str, where: str) -> Example:
    if not isinstance(record, dict):
        raise ZooValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    task = record.get("task")
    if task not in TASKS:
        raise ZooValueError(f"{where}: task={task!r} is not allowed; expected one of {', '.join(map(repr, TASKS))}")
    field = TASKS[task]
    allowed = {"task", field, *OPTIONAL_KEYS} - (set() if task == "tts" else {"prompt_audio", "prompt_text"})
    text = record.get(field)
    if not isinstance(text, str) or not text.strip():
        raise ZooValueError(f"{where}: a {task} example needs a non-empty {field!r} string, got {text!r}")
    unknown = sorted(set(record) - allowed)
    if unknown:
        raise ZooValueError(f"{where}: keys {unknown} are not used by a {task} example; "
                            f"expected only {sorted(allowed)}")
    paths = {key: None if record.get(key) is None else _audio_path(folder, record[key], key, where)
             for key in ("prompt_audio", "target_audio")}
    try:
        return Example(task, text, record.get("id", default_id), paths["prompt_audio"], record.get("prompt_text"),
                       paths["target_audio"], record.get("sr", SAMPLE_RATE))
    except ZooValueError as err:
        raise ZooValueError(f"{where}: {err}") from None


def _unique(examples: list[Example], numbers: Sequence[int], path: Path) -> list[Example]:
    """Refuse a file without examples or with two examples of one id."""
    if not examples:
        raise ZooValueError(f"{path} has no examples")
    first: dict[str, int] = {}
    for example, number in zip(examples, numbers):
        if example.id in first:
            raise ZooValueError(f"{path} line {number}: id {example.id!r} repeats line {first[example.id]}")
        first[example.id] = number
    return examples


def read_manifest(path: str | os.PathLike) -> list[Example]:
    """Read a zoo manifest: one JSON object per line, blank lines skipped; the audio is not read.

    A line is ``{"task": "tts", "text": ..., "prompt_audio": ..., "prompt_text": ..., "target_audio": ..., "sr": ...,
    "id": ...}`` or ``{"task": "t2m", "caption": ..., "target_audio": ..., "sr": ..., "id": ...}``; all but the task
    and its text are optional (``sr`` defaults to 16000, ``id`` to ``<manifest stem>-<line>``). Audio paths are
    relative to the manifest's folder; absolute paths and relative ones that leave the folder (``../x.wav``) are
    allowed too. Every audio file must exist.

    Args:
        path: the ``.jsonl`` file.

    Returns:
        The examples in file order, with absolute audio paths.
    """
    path = Path(path)
    examples, numbers = [], []
    for number, line in _lines(path, "manifest"):
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ZooValueError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
        examples.append(_manifest_example(record, path.parent, f"{path.stem}-{number}", where))
        numbers.append(number)
    return _unique(examples, numbers, path)


def _portable(audio: Path | None, folder: Path) -> str | None:
    """``audio`` relative to ``folder`` when it lies inside it, else absolute."""
    if audio is None:
        return None
    audio = Path(os.path.abspath(audio))
    return audio.relative_to(folder).as_posix() if audio.is_relative_to(folder) else str(audio)


def write_manifest(examples: Sequence[Example], path: str | os.PathLike) -> Path:
    """Write ``examples`` as a manifest :func:`read_manifest` reads back to the same examples (atomically).

    Audio paths inside the manifest's folder are written relative to it, others absolute; None fields are left out.

    Args:
        examples: the examples, e.g. from :func:`read_ljspeech` or :func:`read_seedtts`.
        path: the ``.jsonl`` file to write.

    Returns:
        ``path``.
    """
    path = Path(path)
    check_arg(isinstance(examples, Sequence) and all(isinstance(e, Example) for e in examples), "examples",
              type(examples).__name__, "a sequence of Example")
    check_arg(len(examples) > 0, "examples", examples, "at least one Example")
    folder = Path(os.path.abspath(path.parent))
    repeated = sorted(i for i, n in Counter(e.id for e in examples).items() if n > 1)
    check_arg(not repeated, "examples", f"ids {repeated} more than once", "unique ids")
    lines = []
    for e in examples:
        record = {"id": e.id, "task": e.task, TASKS[e.task]: e.text, "prompt_audio": _portable(e.prompt_audio, folder),
                  "prompt_text": e.prompt_text, "target_audio": _portable(e.target_audio, folder), "sr": e.sr}
        lines.append(json.dumps({k: v for k, v in record.items() if v is not None}, ensure_ascii=False))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_ljspeech(folder: str | os.PathLike) -> list[Example]:
    """Read the LJSpeech layout: ``metadata.csv`` (``id|transcription|normalized transcription``, no header) and
    ``wavs/<id>.wav``.

    Args:
        folder: the folder holding ``metadata.csv`` and ``wavs/``.

    Returns:
        One tts example per line, its text the normalized transcription (the raw one where that is empty).
    """
    folder = Path(folder)
    meta = folder / "metadata.csv"
    examples, numbers = [], []
    for number, line in _lines(meta, "LJSpeech metadata"):
        where = f"{meta} line {number}"
        fields = line.split("|")
        if len(fields) not in (2, 3) or not fields[0].strip():
            raise ZooValueError(f"{where}: expected 'id|transcription|normalized transcription', got {line!r}")
        utt = fields[0].strip()
        text = (fields[2] if len(fields) == 3 and fields[2].strip() else fields[1]).strip()
        if not text:
            raise ZooValueError(f"{where}: {utt!r} has no transcription")
        examples.append(Example("tts", text, utt, target_audio=_audio_path(folder, f"wavs/{utt}.wav", "audio", where)))
        numbers.append(number)
    return _unique(examples, numbers, meta)


def read_seedtts(meta_lst: str | os.PathLike) -> list[Example]:
    """Read a SeedTTS-eval list: lines ``utt|prompt_text|prompt_wav|target_text`` with an optional fifth field
    ``target_wav``; paths are relative to the list's folder.

    Args:
        meta_lst: the ``meta.lst`` file (e.g. ``seedtts_testset/en/meta.lst``).

    Returns:
        One tts example per line with its prompt; the target audio is the fifth field, else ``wavs/<utt>.wav`` where
        that file exists, else None (the list is for generation only).
    """
    meta_lst = Path(meta_lst)
    folder = meta_lst.parent
    examples, numbers = [], []
    for number, line in _lines(meta_lst, "SeedTTS list"):
        where = f"{meta_lst} line {number}"
        fields = [f.strip() for f in line.split("|")]
        if len(fields) not in (4, 5) or not all(fields):
            raise ZooValueError(f"{where}: expected 'utt|prompt_text|prompt_wav|target_text[|target_wav]' with "
                                f"no empty field, got {line!r}")
        utt, prompt_text, prompt_wav, target_text = fields[:4]
        if len(fields) == 5:
            target = _audio_path(folder, fields[4], "target_wav", where)
        else:
            target = Path(os.path.abspath(folder / "wavs" / f"{utt}.wav"))
            target = target if target.is_file() else None
        examples.append(Example("tts", target_text, utt, _audio_path(folder, prompt_wav, "prompt_wav", where),
                                prompt_text, target))
        numbers.append(number)
    return _unique(examples, numbers, meta_lst)


def read_librispeech(folder: str | os.PathLike) -> list[Example]:
    """Read the LibriSpeech layout: ``<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` with lines
    ``<utterance id> <TRANSCRIPT>`` beside ``<utterance id>.flac``.

    Args:
        folder: a split such as ``LibriSpeech/test-clean`` (searched recursively for ``*.trans.txt``).

    Returns:
        One tts example per transcript line, in path order.
    """
    folder = Path(folder)
    check_arg(folder.is_dir(), "folder", str(folder), "an existing LibriSpeech folder")
    lists = sorted(folder.rglob("*.trans.txt"))
    if not lists:
        raise ZooValueError(f"{folder} holds no LibriSpeech '*.trans.txt' transcripts")
    examples = []
    for trans in lists:
        for number, line in _lines(trans, "LibriSpeech transcript"):
            where = f"{trans} line {number}"
            utt, _, text = line.strip().partition(" ")
            if not text.strip():
                raise ZooValueError(f"{where}: expected '<utterance id> <transcript>', got {line!r}")
            examples.append(Example("tts", text.strip(), utt,
                                    target_audio=_audio_path(trans.parent, f"{utt}.flac", "audio", where)))
    repeated = sorted(i for i, n in Counter(e.id for e in examples).items() if n > 1)
    if repeated:
        raise ZooValueError(f"{folder}: utterance ids {repeated[:3]} appear in more than one transcript line")
    return examples
