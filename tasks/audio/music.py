"""Seeded music clips for the audio task: a melody (and optional chords) drawn from an instrument family, tempo,
key, mode, note density and register, written as MIDI with ``pretty_midi`` and rendered to a 16 kHz mono waveform
through a General-MIDI SoundFont, with a caption and classifier labels taken from the same parameters.

Rendering needs no system package: ``midirenderer`` (a compiled wheel with a SoundFont synthesizer inside) plays the
MIDI with ``TimGM6mb.sf2``, the 6 MB General-MIDI SoundFont that ships inside the ``pretty_midi`` wheel, at 48 kHz
stereo; the result is mixed to mono, low-pass filtered and decimated to the requested rate, set to an RMS of
:data:`TARGET_RMS` (peak at most :data:`MAX_PEAK`) and faded out over its last :data:`FADE_SECONDS`.

Clip length policy: :func:`make_midi` ends every note :data:`RELEASE_SECONDS` before ``seconds`` so the sound can
decay, and :func:`render` keeps the last note-off plus that release, clamped to ``[min_seconds, max_seconds]``
(2-4 s by default): longer MIDI is cut, shorter MIDI is padded with silence. A user's MIDI file
(:func:`read_midi`) therefore renders as its first ``max_seconds``.
"""

from __future__ import annotations

import copy
import io
import math
import wave
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from zoo.errors import MissingExtraError, ZooValueError, check_arg, check_seed

if TYPE_CHECKING:
    import pretty_midi

#: Instrument families and their General-MIDI programs (0-based) with the noun a caption uses for each.
FAMILIES: dict[str, tuple[tuple[int, str], ...]] = {
    "piano": ((0, "piano"), (1, "bright piano"), (4, "electric piano")),
    "organ": ((16, "organ"), (19, "church organ"), (21, "accordion")),
    "guitar": ((24, "nylon guitar"), (25, "steel guitar"), (27, "clean electric guitar")),
    "bass": ((32, "acoustic bass"), (33, "electric bass"), (38, "synth bass")),
    "strings": ((40, "violin"), (42, "cello"), (48, "string ensemble")),
    "brass": ((56, "trumpet"), (57, "trombone"), (61, "brass section")),
    "reed": ((65, "alto sax"), (68, "oboe"), (71, "clarinet")),
    "flute": ((73, "flute"), (72, "piccolo"), (75, "pan flute")),
    "mallet": ((11, "vibraphone"), (12, "marimba"), (13, "xylophone")),
    "plucked": ((46, "harp"), (105, "banjo"), (107, "koto")),
}
#: Registers and the MIDI pitch at the middle of each; a melody stays within :data:`SPAN` semitones of it.
REGISTERS = {"low": 45, "middle": 62, "high": 76}
SPAN = 9
#: Registers each family plays in (a bass is never high, a flute never low).
FAMILY_REGISTERS = {"bass": ("low", "middle"), "flute": ("middle", "high")}
MODES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
#: Tonic spellings (pitch class 0-11) in each mode, as a key signature would name them.
KEY_NAMES = {
    "major": ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"),
    "minor": ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"),
}
MOODS = {"major": "cheerful", "minor": "melancholic"}
TEMPO_RANGE = (60.0, 180.0)
#: Upper bounds (exclusive) of the tempo buckets in BPM; the last bucket is open.
TEMPO_BUCKETS = (("slow", 90.0), ("moderate", 130.0), ("fast", math.inf))
#: Note density = mean onsets per beat; melodies sit on an eighth-note grid, so it lies in (0, 2].
DENSITY_RANGE = (0.5, 2.0)
DENSITY_BUCKETS = (("sparse", 0.9), ("medium", 1.4), ("dense", math.inf))
#: Share of the time to the next onset that a melody note sounds (the last note lasts to the end).
LEGATO = 0.9
CHORD_PROBABILITY = 0.5
CHORD_DROP = 15
CHORD_FLOOR = 40
#: Chord roots (scale degrees, 0-based) of the progressions a clip with chords cycles through, one per bar.
PROGRESSIONS = ((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3), (0, 3, 0, 4))
BEATS_PER_BAR = 4
RELEASE_SECONDS = 0.3
FADE_SECONDS = 0.02
TARGET_RMS = 0.1
MAX_PEAK = 0.99
MAX_MIDI_SECONDS = 60.0
SOUNDFONT_NAME = "TimGM6mb.sf2"
_INSTALL = ("audio", "audio", "moe-zoo")


@dataclass(frozen=True)
class MusicParams:
    """What one clip plays: the inputs of :func:`make_midi` and the source of its caption and labels.

    Args:
        family: a key of :data:`FAMILIES`.
        program: General-MIDI program (0-based), one of the family's.
        tempo: beats per minute.
        key: tonic name, one of ``KEY_NAMES[mode]``.
        mode: ``"major"`` or ``"minor"``.
        density: mean note onsets per beat, in (0, 2].
        register: a key of :data:`REGISTERS`.
        chords: whether a sustained triad per bar accompanies the melody.
        seed: seed of the melody's notes, rhythm and velocities.
    """

    family: str
    program: int
    tempo: float
    key: str
    mode: str
    density: float
    register: str
    chords: bool
    seed: int

    def __post_init__(self) -> None:
        check_arg(self.family in FAMILIES, "family", self.family, FAMILIES)
        programs = [p for p, _ in FAMILIES[self.family]]
        check_arg(self.program in programs, "program", self.program, programs)
        check_arg(0 < self.tempo <= 400, "tempo", self.tempo, "beats per minute in (0, 400]")
        check_arg(self.mode in MODES, "mode", self.mode, MODES)
        check_arg(self.key in KEY_NAMES[self.mode], "key", self.key, KEY_NAMES[self.mode])
        check_arg(0 < self.density <= 2, "density", self.density, "onsets per beat in (0, 2]")
        check_arg(self.register in REGISTERS, "register", self.register, REGISTERS)
        check_seed(self.seed)

    @property
    def tonic(self) -> int:
        """Pitch class (0-11) of the key's tonic."""
        return KEY_NAMES[self.mode].index(self.key)

    @property
    def noun(self) -> str:
        """The instrument as a caption names it."""
        return dict(FAMILIES[self.family])[self.program]


def music_params(seed: int, index: int) -> MusicParams:
    """Draw clip ``index`` of the seeded stream ``seed``; every clip is drawn alone from ``(seed, index)``.

    Args:
        seed: the stream's seed, an int in [0, 2**32 - 1].
        index: the clip's position in the stream, a non-negative int.

    Returns:
        Uniformly drawn family, program, key, mode and chords; tempo and density uniform in
        :data:`TEMPO_RANGE` and :data:`DENSITY_RANGE`; a register allowed for the family.
    """
    check_seed(seed)
    check_arg(isinstance(index, (int, np.integer)) and not isinstance(index, bool) and index >= 0, "index", index,
              "a non-negative int")
    rng = np.random.default_rng([seed, int(index)])
    family = str(rng.choice(list(FAMILIES)))
    mode = str(rng.choice(list(MODES)))
    registers = FAMILY_REGISTERS.get(family, tuple(REGISTERS))
    return MusicParams(
        family=family,
        program=int(FAMILIES[family][rng.integers(len(FAMILIES[family]))][0]),
        tempo=round(float(rng.uniform(*TEMPO_RANGE)), 1),
        key=KEY_NAMES[mode][rng.integers(12)],
        mode=mode,
        density=round(float(rng.uniform(*DENSITY_RANGE)), 2),
        register=str(rng.choice(registers)),
        chords=bool(rng.random() < CHORD_PROBABILITY),
        seed=int(rng.integers(2**32)),
    )


def _bucket(value: float, buckets: tuple[tuple[str, float], ...]) -> str:
    return next(name for name, upper in buckets if value < upper)


def attributes(params: MusicParams) -> dict[str, str]:
    """The labels a music classifier predicts for a clip.

    Args:
        params: the clip's parameters.

    Returns:
        ``family``, ``tempo`` (a bucket of :data:`TEMPO_BUCKETS`), ``mode``, ``density`` (a bucket of
        :data:`DENSITY_BUCKETS`) and ``register``.
    """
    return {
        "family": params.family,
        "tempo": _bucket(params.tempo, TEMPO_BUCKETS),
        "mode": params.mode,
        "density": _bucket(params.density, DENSITY_BUCKETS),
        "register": params.register,
    }


def caption(params: MusicParams) -> str:
    """A one-sentence description of the clip, e.g. ``"a fast cheerful piano melody in G major, high register,
    dense"``.

    Args:
        params: the clip's parameters.
    """
    labels = attributes(params)
    with_chords = " with chords" if params.chords else ""
    return (f"a {labels['tempo']} {MOODS[params.mode]} {params.noun} melody{with_chords} in {params.key} "
            f"{params.mode}, {params.register} register, {labels['density']}")


def _require(module: str) -> ModuleType:
    """Import an optional dependency of the audio extra, or say in one line how to install it."""
    try:
        return import_module(module)
    except ModuleNotFoundError:
        raise MissingExtraError(*_INSTALL, module) from None


def _scale_pitches(params: MusicParams, low: int, high: int) -> list[int]:
    steps = MODES[params.mode]
    return [p for p in range(low, high + 1) if (p - params.tonic) % 12 in steps]


def make_midi(params: MusicParams, seconds: float = 3.0) -> pretty_midi.PrettyMIDI:
    """Write the clip as MIDI: a melody on an eighth-note grid (each slot starts a note with probability
    ``density / 2``, the first always), moving mostly by scale steps around the register's middle and ending on the
    tonic, plus, with ``params.chords``, a soft triad per bar below it.

    Args:
        params: the clip's parameters.
        seconds: the clip's length; every note ends :data:`RELEASE_SECONDS` before it.

    Returns:
        A ``PrettyMIDI`` with the tempo, the key signature and one or two instruments on ``params.program``.
    """
    check_arg(RELEASE_SECONDS < seconds <= MAX_MIDI_SECONDS, "seconds", seconds,
              f"a length in ({RELEASE_SECONDS}, {MAX_MIDI_SECONDS}] seconds")
    pm = _require("pretty_midi")
    rng = np.random.default_rng(params.seed)
    beat = 60.0 / params.tempo
    end = seconds - RELEASE_SECONDS
    centre = REGISTERS[params.register]
    scale = _scale_pitches(params, centre - SPAN, centre + SPAN)

    slots = np.arange(0.0, end, beat / 2)
    onsets = slots[(rng.random(len(slots)) < params.density / 2) | (slots == 0)]
    tonics = [i for i, p in enumerate(scale) if (p - params.tonic) % 12 == 0]
    position = min(tonics, key=lambda i: abs(scale[i] - centre))
    melody = pm.Instrument(program=params.program, name=params.noun)
    for n, start in enumerate(onsets):
        if n == len(onsets) - 1:
            position = min(tonics, key=lambda i: abs(i - position))
        elif n > 0:
            step = int(rng.choice([-4, -2, -1, 0, 1, 2, 4], p=[0.05, 0.15, 0.25, 0.1, 0.25, 0.15, 0.05]))
            position = int(np.clip(position + step, 0, len(scale) - 1))
        stop = onsets[n + 1] if n + 1 < len(onsets) else end
        on_beat = math.isclose(start / beat, round(start / beat), abs_tol=1e-6)
        velocity = int(rng.integers(85, 111) if on_beat else rng.integers(65, 91))
        if stop < end:
            stop = start + LEGATO * (stop - start)
        melody.notes.append(pm.Note(velocity=velocity, pitch=scale[position], start=float(start), end=float(stop)))

    midi = pm.PrettyMIDI(initial_tempo=params.tempo)
    midi.key_signature_changes.append(pm.KeySignature(pm.key_name_to_key_number(f"{params.key} {params.mode}"), 0.0))
    midi.instruments.append(melody)
    if params.chords:
        midi.instruments.append(_chords(pm, params, rng, beat, end))
    return midi


def _chords(pm: ModuleType, params: MusicParams, rng: np.random.Generator, beat: float,
            end: float) -> pretty_midi.Instrument:
    """One root-position triad per bar of a progression, :data:`CHORD_DROP` semitones below the melody's middle
    but not below :data:`CHORD_FLOOR`."""
    roots = PROGRESSIONS[rng.integers(len(PROGRESSIONS))]
    base = max(REGISTERS[params.register] - CHORD_DROP, CHORD_FLOOR)
    scale = _scale_pitches(params, base - 12, base + 24)
    first = min((i for i, p in enumerate(scale) if (p - params.tonic) % 12 == 0), key=lambda i: abs(scale[i] - base))
    chords = pm.Instrument(program=params.program, name=f"{params.noun} chords")
    bar = BEATS_PER_BAR * beat
    for n, start in enumerate(np.arange(0.0, end, bar)):
        root = first + roots[n % len(roots)]
        stop = min(start + bar, end)
        for degree in (root, root + 2, root + 4):
            chords.notes.append(pm.Note(velocity=55, pitch=scale[degree], start=float(start), end=float(stop)))
    return chords


def read_midi(path: str | Path) -> pretty_midi.PrettyMIDI:
    """Read a user's MIDI file.

    Args:
        path: a Standard MIDI File with at least one note.

    Raises:
        ZooValueError: the file is missing, is not MIDI, or holds no notes.
    """
    pm = _require("pretty_midi")
    path = Path(path)
    if not path.is_file():
        raise ZooValueError(f"MIDI file {str(path)!r} does not exist")
    try:
        midi = pm.PrettyMIDI(str(path))
    except Exception as err:  # mido and pretty_midi raise many types on malformed input
        raise ZooValueError(f"{str(path)!r} is not a readable MIDI file ({type(err).__name__}: {err})") from None
    if not any(inst.notes for inst in midi.instruments):
        raise ZooValueError(f"MIDI file {str(path)!r} has no notes")
    return midi


@cache
def _soundfont_bytes(path: str | None) -> bytes:
    if path is None:
        from importlib.resources import files

        resource = files(_require("pretty_midi")) / SOUNDFONT_NAME
        if not resource.is_file():
            raise ZooValueError(f"the General-MIDI SoundFont {SOUNDFONT_NAME} is missing from pretty_midi; "
                                "reinstall it: pip install --force-reinstall pretty-midi")
        return resource.read_bytes()
    if not Path(path).is_file():
        raise ZooValueError(f"SoundFont {path!r} does not exist; expected an .sf2 file")
    return Path(path).read_bytes()


@cache
def _lowpass(factor: int, taps: int = 63) -> np.ndarray:
    """A Hann-windowed sinc low-pass at 90% of the Nyquist rate after decimating by ``factor``."""
    n = np.arange(taps) - (taps - 1) / 2
    cutoff = 0.9 / factor
    kernel = cutoff * np.sinc(cutoff * n) * np.hanning(taps)
    return kernel / kernel.sum()


def _trimmed(midi: pretty_midi.PrettyMIDI, seconds: float) -> pretty_midi.PrettyMIDI:
    """``midi`` itself, or a copy without its notes that start at or after ``seconds`` and with every note cut there."""
    if all(note.end <= seconds for inst in midi.instruments for note in inst.notes):
        return midi
    midi = copy.deepcopy(midi)
    for inst in midi.instruments:
        inst.notes = [note for note in inst.notes if note.start < seconds]
        for note in inst.notes:
            note.end = min(note.end, seconds)
    return midi


def render(midi: pretty_midi.PrettyMIDI, sample_rate: int = 16000, min_seconds: float = 2.0,
           max_seconds: float = 4.0, soundfont: str | Path | None = None) -> np.ndarray:
    """Play MIDI through a General-MIDI SoundFont and return a normalised mono waveform.

    Args:
        midi: the music, e.g. from :func:`make_midi` or :func:`read_midi`.
        sample_rate: output rate in Hz; must divide the synthesizer's rate (48 kHz), e.g. 16000 or 24000.
        min_seconds: shorter music is padded with silence to this length.
        max_seconds: longer music is cut to this length.
        soundfont: an ``.sf2`` file; ``None`` uses ``TimGM6mb.sf2`` from the ``pretty_midi`` package.

    Returns:
        float32 samples in [-1, 1]: ``clamp(last note-off + RELEASE_SECONDS, min_seconds, max_seconds)`` long,
        at RMS :data:`TARGET_RMS` unless that would lift the peak over :data:`MAX_PEAK`; all zeros if silent.
    """
    check_arg(0 < min_seconds <= max_seconds, "min_seconds", min_seconds, f"in (0, max_seconds={max_seconds}]")
    synth = _require("midirenderer")
    font = _soundfont_bytes(None if soundfont is None else str(soundfont))
    buffer = io.BytesIO()
    _trimmed(midi, max_seconds).write(buffer)
    with wave.open(io.BytesIO(synth.render_wave_from(font, buffer.getvalue()))) as wav:
        rate, channels = wav.getframerate(), wav.getnchannels()
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    check_arg(sample_rate > 0 and rate % sample_rate == 0, "sample_rate", sample_rate,
              f"a divisor of the synthesizer's {rate} Hz")
    audio = frames.reshape(-1, channels).mean(axis=1) / 32768.0
    factor = rate // sample_rate
    if factor > 1:
        audio = np.convolve(audio, _lowpass(factor), mode="same")[::factor]
    length = min(max(midi.get_end_time() + RELEASE_SECONDS, min_seconds), max_seconds)
    size = round(length * sample_rate)
    audio = np.pad(audio[:size], (0, max(0, size - len(audio))))
    rms = float(np.sqrt(np.mean(audio**2)))
    if rms > 0:
        audio = audio * min(TARGET_RMS / rms, MAX_PEAK / float(np.abs(audio).max()))
    fade = min(round(FADE_SECONDS * sample_rate), size)
    audio[size - fade:] *= np.linspace(1.0, 0.0, fade)
    return audio.astype(np.float32)


#: Krumhansl–Kessler key profiles: how well each pitch class above the tonic fits a major or minor key.
_KEY_PROFILES = {
    "major": np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]),
    "minor": np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]),
}
#: Added to a key's profile correlation when its tonic is the melody's last or first note (a cadence on the tonic
#: tells a major key from its relative minor, which share their notes).
_LAST_NOTE_BONUS, _FIRST_NOTE_BONUS = 0.3, 0.2
#: The family each General-MIDI group of 8 programs is read as (program // 8); synth leads and sound effects have
#: no family of their own in :data:`FAMILIES` and take the nearest in sound.
_GM_GROUP_FAMILIES = ("piano", "mallet", "organ", "guitar", "bass", "strings", "strings", "brass", "reed", "flute",
                      "organ", "strings", "strings", "plucked", "mallet", "piano")
_MIN_NOTE_SECONDS = 0.05


def caption_of_midi(midi: pretty_midi.PrettyMIDI) -> str:
    """A caption of a user's MIDI in the words of :func:`caption`, read from its notes.

    The melody is the first pitched (non-drum) instrument with notes. Family: the melody's program as listed in
    :data:`FAMILIES`, else by its General-MIDI group, named by the family's nearest listed program. Tempo: the
    file's tempo marking that lasts longest (pretty_midi's onset-based estimate often lands on a multiple of it).
    Key and mode: the pitch-class histogram of every pitched note, weighted by duration, correlated with the
    Krumhansl–Kessler profiles of the 24 keys, with a bonus for a tonic on the melody's last and first notes.
    Register: the nearest of :data:`REGISTERS` to the melody's mean pitch. Density: melody onsets per beat. Chords:
    three or more notes sounding at one onset.

    Args:
        midi: e.g. from :func:`read_midi` or :func:`make_midi`.

    Raises:
        ZooValueError: no pitched instrument has notes (drums only).
    """
    pitched = [inst for inst in midi.instruments if not inst.is_drum and inst.notes]
    if not pitched:
        raise ZooValueError("the MIDI has drum notes only; give one with a pitched instrument")
    melody = sorted(pitched[0].notes, key=lambda note: (note.start, note.pitch))
    notes = [note for inst in pitched for note in inst.notes]

    program = pitched[0].program
    family = next((name for name, listed in FAMILIES.items() if program in dict(listed)),
                  _GM_GROUP_FAMILIES[program // 8])
    listed = min(dict(FAMILIES[family]), key=lambda p: abs(p - program))

    end = max(note.end for note in melody)
    times, tempi = midi.get_tempo_changes()
    spans = np.diff(np.append(np.minimum(times, end), end))
    tempo = float(tempi[int(np.argmax(spans))]) if len(tempi) else 120.0

    weights = np.zeros(12)
    for note in notes:
        weights[note.pitch % 12] += max(note.end - note.start, _MIN_NOTE_SECONDS)
    centred = weights - weights.mean()
    scores = {}
    for mode, profile in _KEY_PROFILES.items():
        for tonic in range(12):
            rolled = np.roll(profile, tonic) - profile.mean()
            norm = float(np.linalg.norm(centred) * np.linalg.norm(rolled))
            fit = float(centred @ rolled) / norm if norm > 0 else 0.0
            scores[tonic, mode] = (fit + _LAST_NOTE_BONUS * (tonic == melody[-1].pitch % 12)
                                   + _FIRST_NOTE_BONUS * (tonic == melody[0].pitch % 12))
    tonic, mode = max(scores, key=scores.get)

    mean_pitch = float(np.mean([note.pitch for note in melody]))
    register = min(REGISTERS, key=lambda name: abs(REGISTERS[name] - mean_pitch))
    onsets = np.unique(np.round([note.start for note in melody], 3))
    beats = max((end - onsets[0]) * tempo / 60.0, 1.0)
    starts = np.sort([note.start for note in notes])
    stops = np.sort([note.end for note in notes])
    sounding = np.searchsorted(starts, starts, side="right") - np.searchsorted(stops, starts, side="right")

    params = MusicParams(family=family, program=listed, tempo=round(min(max(tempo, 1.0), 400.0), 1),
                         key=KEY_NAMES[mode][tonic], mode=mode, density=min(len(onsets) / beats, 2.0),
                         register=register, chords=bool(sounding.max() >= 3), seed=0)
    return caption(params)
