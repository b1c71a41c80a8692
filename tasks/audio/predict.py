"""``zoo predict audio``: speak a sentence or play a caption with trained weights, written as a 16 kHz mono WAV.

Exactly one of ``--text`` (speech), ``--caption`` (music) or ``--midi FILE`` (music: the caption is read from the
file's notes by :func:`~.music.caption_of_midi` and said on stderr) says what to generate; the weights must have
been trained on that task (a specialist knows one). The clip is sampled with the weights' ``eval`` settings
(temperature, top-k, at most ``eval.max_frames`` frames of 20 ms) under ``--seed``, so the same seed gives the same
clip, and decoded by the codec the weights carry. ``--out`` (required) receives the WAV (PCM-16) and ``--plot`` a
PNG of its log-mel spectrogram. A clip that reaches the frame limit before the model's end token is kept and a
warning says so. Everything is checked before sampling, and nothing is written unless generation succeeded.
"""

from __future__ import annotations

import io
import sys
import textwrap
from pathlib import Path
from typing import Any

from zoo.errors import ZooValueError, check_seed
from zoo.io import atomic_write_bytes, figure_png

from .codec import SAMPLE_RATE
from .data import encode_text

#: The option that asks for each task, as the user types it.
TASK_OF_OPTION = {"--text": "speech", "--caption": "music", "--midi": "music"}
TITLE_CHARS = 90


def predict(loaded: Any, *, out: str | Path | None = None, text: str | None = None, caption: str | None = None,
            midi: str | Path | None = None, seed: int = 0, plot: str | Path | None = None) -> list[dict]:
    """Generate one clip from ``text``, ``caption`` or ``midi`` and write it to ``out`` (module docstring).

    Args:
        loaded: a :class:`zoo.task.LoadedModel` of the audio task.
        out: the WAV file to write.
        text: a sentence to speak.
        caption: a music caption to play.
        midi: a MIDI file whose caption is played.
        seed: the sampling seed.
        plot: PNG path for the log-mel spectrogram.

    Returns:
        One dict: ``task``, ``text`` (the sentence or caption generated from), ``seconds``, ``frames`` (codec
        frames, 50 per second), ``ended`` (the model's end token was reached), ``out`` and ``plot`` (its path or
        ``""``).

    Raises:
        ZooValueError: not exactly one of ``text``/``caption``/``midi``, a task the weights were not trained on, a
            bad text, MIDI file, seed or output path; nothing is written then.
    """
    from . import music
    from .generation import MIN_FRAMES, generate
    from .plots import mel_figure

    given = {flag: value for flag, value in (("--text", text), ("--caption", caption), ("--midi", midi))
             if value is not None}
    if len(given) != 1:
        got = f"; got {' and '.join(given)}" if given else ""
        raise ZooValueError("give exactly one of --text TEXT (speech), --caption TEXT (music) or --midi FILE "
                            f"(music){got}")
    (flag, value), = given.items()
    check_seed(seed, "--seed")
    if out is None:
        raise ZooValueError("--out is required: the WAV file to write, e.g. --out out.wav")
    _check_path("--out", out, ".wav", "a WAV file")
    if plot is not None:
        _check_path("--plot", plot, ".png", "a PNG")
    task = TASK_OF_OPTION[flag]
    trained = list(loaded.info["tasks"])
    if task not in trained:
        raise ZooValueError(f"{flag} asks for {task} but these weights were trained on {' and '.join(trained)} "
                            f"only; use {', '.join(f for f, t in TASK_OF_OPTION.items() if t in trained)} or "
                            f"weights trained on {task}")
    if flag == "--midi":
        notes = music.read_midi(value)
        try:
            prompt = music.caption_of_midi(notes)
        except ZooValueError as err:
            raise ZooValueError(f"--midi {value}: {err}") from None
        print(f"--midi {value}: playing the caption read from its notes: {prompt!r}", file=sys.stderr)
    else:
        prompt = value
    try:
        encode_text(prompt)
    except ZooValueError as err:
        raise ZooValueError(f"{flag}: {err}") from None

    sampling = loaded.config.eval
    module = loaded.module
    clip = generate(module.model, module.codec, [prompt.strip()], task, seed=seed,
                    temperature=sampling.temperature, top_k=sampling.top_k, max_frames=sampling.max_frames)
    wave, frames, ended = clip.waves[0], len(clip.codes[0]), clip.ended[0]
    seconds = len(wave) / SAMPLE_RATE
    if not ended:
        print(f"warning: the clip reached the {sampling.max_frames}-frame limit ({seconds:.2f} s) before the model's "
              "end token; it may stop mid-sound", file=sys.stderr)
    elif frames < MIN_FRAMES:
        print(f"warning: the model ended the clip after {frames} frames; the WAV holds silence", file=sys.stderr)

    payloads = [(out, wav_bytes(wave))]
    if plot is not None:
        title = f"{task}: {textwrap.shorten(prompt, TITLE_CHARS, placeholder=' ...')!r} (seed {seed})"
        payloads.append((plot, figure_png(mel_figure(wave, title), dpi=110)))
    for path, data in payloads:
        atomic_write_bytes(path, data)
    return [{"task": task, "text": prompt.strip(), "seconds": round(seconds, 3), "frames": frames, "ended": ended,
             "out": str(out), "plot": "" if plot is None else str(plot)}]


def wav_bytes(wave: Any) -> bytes:
    """A waveform at 16 kHz as the bytes of a mono PCM-16 WAV file.

    Args:
        wave: ``[T]`` float samples in [-1, 1].
    """
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, wave, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _check_path(flag: str, path: str | Path, suffix: str, what: str) -> None:
    """Refuse an output path that is a folder, lacks ``suffix`` or lies in a folder that does not exist."""
    path = Path(path)
    if path.is_dir():
        raise ZooValueError(f"{flag} {path} is a folder; give a file path ending in {suffix}")
    if path.suffix.lower() != suffix:
        raise ZooValueError(f"{flag} {path}: {flag} writes {what}; give a path ending in {suffix}")
    if not path.parent.is_dir():
        raise ZooValueError(f"{flag} {path}: the folder {path.parent} does not exist; create it first")
