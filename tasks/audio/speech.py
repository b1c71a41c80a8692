"""Offline English speech with exact transcripts for the audio task: libespeak-ng (bundled with its voice data by the
PyPI package ``espeakng-loader``, so no system package is needed) driven through ctypes, a seeded sentence grammar
over a small English word list, and a seeded set of 40 speakers (an espeak voice variant, a pitch in 30-70 and a
rate in 130-180 words per minute; 8 of them held out). Waveforms are 16 kHz mono float32 in [-1, 1].

espeak-ng keeps state between utterances that no call resets (the phase of its pitch flutter is a function-static
of ``wavegen.c``), so the same call gives different samples the second time. :func:`synthesize` therefore loads the
library afresh for every utterance, seeds its noise generator and unloads it again (a few ms); nothing stays loaded
between calls, which also makes forked data-loader workers safe. Another module of the same process that keeps its
own handle on libespeak-ng open would stop the unloading and with it the determinism. Calls in one process are
serialised by a lock: the library is process-global state, so threads may call :func:`synthesize` but never
synthesise at the same time.
"""

from __future__ import annotations

import _ctypes
import ctypes
import string
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import ZooValueError, check_arg, check_seed

SAMPLE_RATE = 16_000
ESPEAK_RATE = 22_050
PITCH_RANGE = (30, 70)
RATE_RANGE = (130, 180)
#: Length of an :func:`utterance`, and the number of words of a sentence (a range that mostly fits it).
SECONDS = (2.0, 4.0)
WORDS = (7, 12)
N_SPEAKERS = 40
HELD_OUT_SHARE = 0.2
#: espeak-ng variants (files of ``espeak-ng-data/voices/!v``) that sound like plain speakers, male then female.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "iven", "paul", "robert", "michel", "travis", "klatt",
            "f1", "f2", "f3", "f4", "f5", "Annie", "belinda", "linda", "steph")
#: Characters :func:`synthesize` speaks: English letters, digits, space and basic punctuation.
ALLOWED_CHARS = frozenset(string.ascii_letters + string.digits + " .,;:?!'-")
INSTALL = "pip install 'espeakng-loader>=0.2.4'"
#: Edge silence: samples below this fraction of the peak at the start and end of an utterance are cut.
SILENCE = 0.01

_LOCK = threading.Lock()
_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: like RETRIEVAL, but espeak_Synth returns when the audio is complete
_DONT_EXIT = 0x8000  # espeak_Initialize option: report missing data instead of calling exit()
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3
_BUFFER_MS = 500
_SEED = 1
_unload = getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary  # POSIX, else Windows


#: ``int callback(short *wav, int numsamples, espeak_EVENT *events)`` of speak_lib.h; the events are not read.
_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _library_files() -> tuple[str, Path]:
    """The path of libespeak-ng and of its ``espeak-ng-data`` folder, from ``espeakng-loader``."""
    try:
        import espeakng_loader
    except ImportError:
        raise ZooValueError(f"speech synthesis needs libespeak-ng, which is not installed: {INSTALL}") from None
    lib = espeakng_loader.get_library_path()
    data = Path(lib).parent / "espeak-ng-data"
    if not Path(lib).is_file() or not (data / "phontab").is_file():
        raise ZooValueError(f"libespeak-ng or its data is missing next to {lib}: reinstall with {INSTALL}")
    return lib, data


def _check_voice(voice: str, data: Path) -> None:
    """Refuse a voice whose ``+variant`` has no file (espeak-ng itself would silently ignore it)."""
    check_arg(isinstance(voice, str) and voice.strip() != "", "voice", voice, "an espeak-ng voice such as 'en+f3'")
    variant = voice.partition("+")[2]
    if variant and not variant.isdigit():
        folder = data / "voices" / "!v"
        allowed = f"'<language>+<variant>' with a variant file in {folder}"
        check_arg((folder / variant).is_file(), "voice", voice, allowed)


def _espeak_pcm(text: str, voice: str, pitch: int, rate: int) -> np.ndarray:
    """Run libespeak-ng once, loaded for this call only, and return its int16 samples at :data:`ESPEAK_RATE`."""
    lib_path, data = _library_files()
    _check_voice(voice, data)
    try:
        lib = ctypes.CDLL(lib_path)
    except OSError as err:
        raise ZooValueError(f"cannot load {lib_path} ({err}); reinstall with {INSTALL}") from None
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    chunks: list[np.ndarray] = []

    def collect(wav, count, events) -> int:
        if count > 0:
            chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
        return 0

    callback = _Callback(collect)
    try:
        rate_hz = lib.espeak_Initialize(_SYNCHRONOUS, _BUFFER_MS, str(data.parent).encode(), _DONT_EXIT)
        if rate_hz != ESPEAK_RATE:
            raise ZooValueError(f"libespeak-ng at {lib_path} runs at {rate_hz} Hz, expected {ESPEAK_RATE}")
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ZooValueError(f"voice={voice!r} is not an espeak-ng voice; expected e.g. 'en' or 'en+f3'")
        lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        lib.espeak_ng_SetRandSeed(_SEED)
        encoded = text.encode() + b"\0"
        status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
    finally:
        lib.espeak_Terminate()
        _unload(lib._handle)
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def synthesize(text: str, voice: str = "en", pitch: int = 50, rate: int = 150) -> np.ndarray:
    """Speak ``text`` with espeak-ng: the same arguments always give the same samples.

    espeak-ng's 22,050 Hz int16 output is scaled to [-1, 1] and resampled to 16 kHz with
    ``torchaudio.functional.resample`` (windowed sinc, its defaults), then clipped to [-1, 1]. The leading and
    trailing silence espeak-ng adds is kept.

    Args:
        text: English text of :data:`ALLOWED_CHARS` with at least one letter or digit.
        voice: an espeak-ng voice, ``"<language>"`` or ``"<language>+<variant>"`` (e.g. ``"en+f3"``).
        pitch: base pitch, 0-100 (50 is the voice's normal pitch).
        rate: speaking rate in words per minute, 80-450.

    Returns:
        The waveform, float32, mono, :data:`SAMPLE_RATE` Hz.
    """
    import torch
    import torchaudio.functional as AF

    check_arg(isinstance(text, str) and any(c.isalnum() for c in text), "text", text,
              "a str with at least one letter or digit")
    bad = sorted(set(text) - ALLOWED_CHARS)
    check_arg(not bad, "text", text, f"only English letters, digits, space and .,;:?!'- (not {''.join(bad)!r})")
    check_arg(isinstance(pitch, int | np.integer) and 0 <= pitch <= 100, "pitch", pitch, "an int in [0, 100]")
    check_arg(isinstance(rate, int | np.integer) and 80 <= rate <= 450, "rate", rate, "an int in [80, 450]")
    with _LOCK:
        pcm = _espeak_pcm(text, voice, int(pitch), int(rate))
    wave = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
    wave = AF.resample(wave, ESPEAK_RATE, SAMPLE_RATE)
    return wave.clamp(-1.0, 1.0).numpy()


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak-ng variant of English with its own pitch and rate."""

    index: int
    variant: str
    pitch: int
    rate: int
    held_out: bool

    @property
    def voice(self) -> str:
        """The espeak-ng voice name, ``en+<variant>``."""
        return f"en+{self.variant}"


def speakers(seed: int, count: int = N_SPEAKERS) -> list[Speaker]:
    """Draw ``count`` speakers; ``round(0.2 * count)`` of them (8 of 40) are marked ``held_out``.

    The variants are :data:`VARIANTS` in a seeded order, repeated as needed (so 40 speakers use every variant
    once or twice, at different pitches and rates); pitch and rate are uniform integers in :data:`PITCH_RANGE` and
    :data:`RATE_RANGE`.

    Args:
        seed: the seed; the same seed gives the same speakers.
        count: how many speakers, at least 1.
    """
    check_seed(seed)
    check_arg(isinstance(count, int) and count >= 1, "count", count, "an int >= 1")
    rng = np.random.default_rng([seed, 0x5BEA])
    order = rng.permutation(len(VARIANTS))
    pitches = rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1, count)
    rates = rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1, count)
    held = set(rng.choice(count, round(HELD_OUT_SHARE * count), replace=False).tolist())
    return [Speaker(i, VARIANTS[order[i % len(VARIANTS)]], int(pitches[i]), int(rates[i]), i in held)
            for i in range(count)]


_DETERMINERS = "the a this that my your his her our their".split()
_NAMES = "Anna Ben Clara David Emma Frank Grace Henry Julia Kevin Lucy Mark Nina Oscar Paul Rosa Sam Tom Vera Will"
_NOUNS = """cat dog bird fish horse cow duck goat sheep mouse boy girl man woman child friend teacher doctor farmer
baker king queen cook driver sailor house car boat train bus bike road street park garden tree flower river lake
hill field forest beach sea stone door window table chair bed lamp clock book letter box cup plate bowl spoon knife
bread apple cake milk soup ball kite hat coat shoe bag key ring bell drum city town village school shop market farm
bridge tower church sun moon star cloud rain wind storm fire snow ice""".split()
_ADJECTIVES = """big small old young new red blue green black white brown yellow happy sad quiet loud warm cold hot
dark bright tall short long round soft hard fast slow kind clean dirty busy empty full heavy light rich poor strong
sweet fresh wet dry calm brave funny lazy proud gentle little pretty early tiny huge sharp smooth wild tired""".split()
_TRANSITIVE = """saw found took made gave sold bought painted cleaned opened closed carried pushed pulled watched
followed helped liked wanted needed lost kept held washed fixed moved filled dropped caught chased visited cooked
shared brought showed built broke read wrote drew""".split()
_INTRANSITIVE = "slept smiled laughed waited walked ran jumped sang danced cried stayed rested worked played talked " \
    "swam shouted whispered arrived left".split()
_ADVERBS = "slowly quickly quietly loudly happily sadly softly gently today yesterday again outside together alone " \
    "tonight twice later".split()
_PREPOSITIONS = "in on under near behind beside over by with from into across along past through".split()
#: Every word the grammar can use.
VOCABULARY = frozenset(_DETERMINERS + _NAMES.split() + _NOUNS + _ADJECTIVES + _TRANSITIVE + _INTRANSITIVE + _ADVERBS
                       + _PREPOSITIONS + ["and", "who", "where", "is", "an"])


def _sentence(rng: np.random.Generator, words: tuple[int, int]) -> str:
    """One sentence of ``words[0]``-``words[1]`` words (a length drawn uniformly, then hit by rejection)."""
    names = _NAMES.split()

    def pick(options: list[str]) -> str:
        return options[rng.integers(len(options))]

    def maybe() -> bool:
        return bool(rng.integers(2))

    def noun_phrase() -> list[str]:
        if rng.random() < 0.2:
            return [pick(names)]
        phrase = [pick(_ADJECTIVES), pick(_NOUNS)] if maybe() else [pick(_NOUNS)]
        det = pick(_DETERMINERS)
        return ["an" if det == "a" and phrase[0][0] in "aeiou" else det] + phrase

    def tail() -> list[str]:
        place = [pick(_PREPOSITIONS)] + noun_phrase() if maybe() else []
        return place + ([pick(_ADVERBS)] if maybe() else [])

    target = int(rng.integers(words[0], words[1] + 1))
    while True:  # subject-verb-object sentences reach every length in 3-13, so this ends after a few tries
        form = int(rng.integers(5))
        end = "."
        if form == 0:
            out = noun_phrase() + [pick(_TRANSITIVE)] + noun_phrase() + tail()
        elif form == 1:
            out = noun_phrase() + [pick(_INTRANSITIVE)] + tail()
        elif form == 2:
            out = noun_phrase() + ["and"] + noun_phrase() + [pick(_INTRANSITIVE)] + tail()
        elif form == 3:
            out, end = ["who", pick(_TRANSITIVE)] + noun_phrase() + tail(), "?"
        else:
            out, end = ["where", "is"] + noun_phrase() + tail(), "?"
        if len(out) == target:
            text = " ".join(out)
            return text[0].upper() + text[1:] + end


def sentences(seed: int, count: int, words: tuple[int, int] = WORDS) -> list[str]:
    """Seeded English sentences over :data:`VOCABULARY`, e.g. ``"The old dog slept under a green tree today."``.

    Five forms (subject-verb-object, subject-verb, two subjects, a ``who`` and a ``where is`` question), each with
    optional adjectives, a place and an adverb. Sentence ``i`` depends only on ``(seed, i)``, so a longer list
    starts with a shorter one. The words are short (mostly one syllable), so at :func:`speakers`' rates the default
    7-12 words take about 1.8-4.5 s once the edge silence is trimmed (4-10 words would take 1-3.6 s).

    Args:
        seed: the seed.
        count: how many sentences, at least 0.
        words: the inclusive range of the number of words, within 4-12.
    """
    check_seed(seed)
    check_arg(isinstance(count, int) and count >= 0, "count", count, "an int >= 0")
    check_arg(len(words) == 2 and 4 <= words[0] <= words[1] <= 12, "words", words, "(lo, hi) with 4 <= lo <= hi <= 12")
    return [_sentence(np.random.default_rng([seed, i, 0]), words) for i in range(count)]


def trim_silence(wave: np.ndarray, threshold: float = SILENCE) -> np.ndarray:
    """Cut the leading and trailing samples quieter than ``threshold`` times the peak, keeping 10 ms around.

    Args:
        wave: a waveform.
        threshold: the silence level as a fraction of the peak magnitude.
    """
    loud = np.nonzero(np.abs(wave) > threshold * np.abs(wave).max(initial=0.0))[0]
    if loud.size == 0:
        return wave[:0]
    margin = SAMPLE_RATE // 100
    return wave[max(loud[0] - margin, 0):loud[-1] + 1 + margin]


def utterance(seed: int, index: int, speaker: Speaker | None = None,
              tries: int = 20) -> tuple[str, Speaker, np.ndarray]:
    """Utterance ``index`` of the seeded corpus: a sentence, its speaker and a waveform of 2-4 s.

    The speaker is ``speakers(seed)[index % 40]`` unless given (e.g. another utterance of a prompt's speaker). The
    first try speaks ``sentences(seed, index + 1)[index]``. Policy: the edge silence is trimmed
    (:func:`trim_silence`); speech longer than 4 s is never cut (the transcript stays exact) but the sentence is
    drawn again, each retry from ``(seed, index, try)``, its longest length one word shorter; speech shorter than
    2 s is padded with zeros at the end.

    Args:
        seed: the corpus seed.
        index: the utterance number, at least 0.
        speaker: the speaker; by default the corpus speaker of ``index``.
        tries: how many sentences to try before giving up.

    Returns:
        ``(text, speaker, waveform)`` with a float32 16 kHz waveform of 2-4 s.
    """
    check_seed(seed)
    check_arg(isinstance(index, int) and index >= 0, "index", index, "an int >= 0")
    spk = speaker if speaker is not None else speakers(seed)[index % N_SPEAKERS]
    lo, hi = WORDS
    for attempt in range(tries):
        text = _sentence(np.random.default_rng([seed, index, attempt]), (lo, max(lo, hi - attempt)))
        wave = trim_silence(synthesize(text, spk.voice, spk.pitch, spk.rate))
        if len(wave) <= SECONDS[1] * SAMPLE_RATE:
            shortfall = int(SECONDS[0] * SAMPLE_RATE) - len(wave)
            return text, spk, np.pad(wave, (0, max(shortfall, 0)))
    raise ZooValueError(f"speaker={spk} did not say any of {tries} sentences of {lo}+ words within {SECONDS[1]} s")
