"""Offline speech synthesis (zoo.tasks.audio.speech): determinism, sample rate, duration, voice and pitch effects,
errors, the sentence grammar, the speakers and the 2-4 s utterances."""

from __future__ import annotations

import string
import sys
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("espeakng_loader")
pytest.importorskip("torchaudio")

from zoo.errors import ZooValueError  # noqa: E402
from zoo.tasks.audio import speech as S  # noqa: E402

TEXT = "The old dog slept under a green tree today."


def mean_f0(wave: np.ndarray, sr: int = S.SAMPLE_RATE, lo: float = 60.0, hi: float = 400.0) -> float:
    """Median over loud 40 ms frames of the autocorrelation-peak frequency in [lo, hi] Hz."""
    frame = int(0.04 * sr)
    peak = np.abs(wave).max()
    f0s = []
    for start in range(0, len(wave) - frame, frame // 2):
        x = wave[start:start + frame]
        if np.sqrt(np.mean(x**2)) < 0.1 * peak:
            continue
        x = x - x.mean()
        ac = np.correlate(x, x, "full")[frame - 1:]
        lags = np.arange(int(sr / hi), int(sr / lo) + 1)
        best = lags[np.argmax(ac[lags])]
        if ac[best] > 0.3 * ac[0]:
            f0s.append(sr / best)
    return float(np.median(f0s))


def test_f0_estimator_on_a_pulse_train():
    # Reference for the pitch tests: a 160 Hz band-limited pulse train (sum of harmonics) is read as 160 Hz.
    t = np.arange(S.SAMPLE_RATE) / S.SAMPLE_RATE
    wave = sum(np.cos(2 * np.pi * 160 * k * t) / k for k in range(1, 12))
    assert mean_f0(wave) == pytest.approx(160, rel=0.02)


def test_same_call_gives_the_same_samples():
    a = S.synthesize(TEXT, "en+f3", 40, 160)
    S.synthesize("Something else entirely.", "en+m3", 70, 130)
    b = S.synthesize(TEXT, "en+f3", 40, 160)
    np.testing.assert_array_equal(a, b)


def test_output_is_16khz_float32_mono_in_range():
    wave = S.synthesize(TEXT)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert np.abs(wave).max() <= 1.0 and np.abs(wave).max() > 0.1
    raw = S._espeak_pcm(TEXT, "en", 50, 150)
    assert abs(len(wave) - len(raw) * S.SAMPLE_RATE / S.ESPEAK_RATE) <= 1
    # A 1 kHz tone is still 1 kHz after the same resampling: the rate really is 16 kHz.
    import torchaudio.functional as AF

    tone = torch.sin(2 * torch.pi * 1000 * torch.arange(S.ESPEAK_RATE) / S.ESPEAK_RATE)
    spectrum = np.abs(np.fft.rfft(AF.resample(tone, S.ESPEAK_RATE, S.SAMPLE_RATE).numpy()))
    assert np.argmax(spectrum) == 1000


def test_duration_grows_with_text_length_and_falls_with_rate():
    texts = ["Cat.", "The cat sat down.", "The cat sat down on the red mat near the old door today."]
    durations = [len(S.trim_silence(S.synthesize(t))) for t in texts]
    assert durations[0] < durations[1] < durations[2]
    slow, fast = (len(S.trim_silence(S.synthesize(TEXT, rate=r))) for r in (130, 180))
    assert fast < slow * 0.85


def test_pitch_raises_f0_and_voices_differ():
    low, high = (mean_f0(S.synthesize(TEXT, "en+m3", pitch=p)) for p in (30, 70))
    assert high > 1.15 * low
    male, female = (S.synthesize(TEXT, v) for v in ("en+m3", "en+f3"))
    assert mean_f0(female) > 1.3 * mean_f0(male)


def band_spectrum(wave: np.ndarray) -> np.ndarray:
    """Long-term spectrum: mean log power in 16 equal bands of 512-point Hann frames, level removed."""
    frames = np.lib.stride_tricks.sliding_window_view(wave, 512)[::256] * np.hanning(512)
    power = (np.abs(np.fft.rfft(frames)) ** 2).mean(0)[1:]
    bands = np.log(np.array([b.sum() for b in np.array_split(power, 16)]) + 1e-12)
    return bands - bands.mean()


@pytest.mark.parametrize("pair", [("en+m3", "en+f3"), ("en+m1", "en+m2")])
def test_voices_differ_more_than_texts(pair):
    other = "Who took the red cup from the small kitchen table?"
    first = band_spectrum(S.synthesize(TEXT, pair[0]))
    same_voice = np.linalg.norm(first - band_spectrum(S.synthesize(other, pair[0])))
    two_voices = np.linalg.norm(first - band_spectrum(S.synthesize(other, pair[1])))
    assert two_voices > 1.5 * same_voice


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"text": ""}, "text=''"),
    ({"text": "  ...  "}, "at least one letter or digit"),
    ({"text": "Café au lait €5"}, "not 'é€'"),
    ({"text": "hi", "pitch": 101}, "pitch=101"),
    ({"text": "hi", "rate": 50}, "rate=50"),
    ({"text": "hi", "voice": "zz"}, "voice='zz' is not an espeak-ng voice"),
    ({"text": "hi", "voice": "en+nobody"}, "voice='en\\+nobody'.*variant file in"),
])
def test_bad_arguments_raise_one_line(kwargs, match):
    with pytest.raises(ZooValueError, match=match) as err:
        S.synthesize(**kwargs)
    assert "\n" not in str(err.value)


def test_missing_library_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    with pytest.raises(ZooValueError, match="pip install 'espeakng-loader") as err:
        S.synthesize("hello")
    assert "\n" not in str(err.value)


def test_threads_get_the_serial_result():
    texts = [f"Number {i} is here." for i in range(6)]
    serial = [S.synthesize(t) for t in texts]
    out: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, S.synthesize(texts[i]))) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(6):
        np.testing.assert_array_equal(out[i], serial[i])


def test_sentences_are_seeded_bounded_and_in_vocabulary():
    first = S.sentences(3, 200)
    assert first == S.sentences(3, 200) and first[:50] == S.sentences(3, 50)
    assert first != S.sentences(4, 200)
    lengths = [len(s.split()) for s in first]
    assert min(lengths) == S.WORDS[0] and max(lengths) == S.WORDS[1]
    for s in first:
        assert s[0].isupper() and s[-1] in ".?" and set(s) <= S.ALLOWED_CHARS
        assert {w.strip(".?") for w in s.lower().split()} <= {w.lower() for w in S.VOCABULARY}
    short = S.sentences(3, 50, words=(4, 5))
    assert {len(s.split()) for s in short} == {4, 5}
    assert 200 <= len(S.VOCABULARY) <= 400
    assert all(set(w) <= set(string.ascii_letters) for w in S.VOCABULARY)
    with pytest.raises(ZooValueError, match="words="):
        S.sentences(0, 1, words=(3, 5))


def test_speakers_ranges_and_held_out_split():
    spk = S.speakers(5)
    assert spk == S.speakers(5) and spk != S.speakers(6)
    assert len(spk) == 40 and sum(s.held_out for s in spk) == 8
    assert [s.index for s in spk] == list(range(40))
    assert all(S.PITCH_RANGE[0] <= s.pitch <= S.PITCH_RANGE[1] for s in spk)
    assert all(S.RATE_RANGE[0] <= s.rate <= S.RATE_RANGE[1] for s in spk)
    assert {s.variant for s in spk} == set(S.VARIANTS)
    assert len({(s.variant, s.pitch, s.rate) for s in spk}) == 40
    assert sum(s.held_out for s in S.speakers(5, count=10)) == 2
    _, data = S._library_files()
    assert all((data / "voices" / "!v" / v).is_file() for v in S.VARIANTS)


def test_utterances_last_2_to_4_seconds_with_exact_text():
    texts = S.sentences(7, 6)
    first_tries = 0
    for i in range(6):
        text, spk, wave = S.utterance(7, i)
        assert spk == S.speakers(7)[i]
        assert S.SECONDS[0] * S.SAMPLE_RATE <= len(wave) <= S.SECONDS[1] * S.SAMPLE_RATE
        spoken = S.trim_silence(S.synthesize(text, spk.voice, spk.pitch, spk.rate))  # the text is what was said
        np.testing.assert_array_equal(wave[:len(spoken)], spoken)
        first_tries += text == texts[i]
    assert first_tries >= 4
    again = S.utterance(7, 3)
    assert again[0] == S.utterance(7, 3)[0]
    np.testing.assert_array_equal(again[2], S.utterance(7, 3)[2])


def test_short_speech_is_padded_and_too_slow_a_speaker_is_refused():
    fast = S.Speaker(0, "m3", 50, 400, False)
    text, _, wave = S.utterance(0, 0, fast)
    assert text == S.sentences(0, 1)[0]
    assert len(wave) == 2 * S.SAMPLE_RATE and not wave[-S.SAMPLE_RATE // 4:].any()
    slow = S.Speaker(0, "m3", 50, 80, False)
    with pytest.raises(ZooValueError, match="did not say any of 2 sentences"):
        S.utterance(0, 0, slow, tries=2)


def test_trim_silence_keeps_10ms_around_the_loud_part():
    wave = np.zeros(2000, np.float32)
    wave[500:700] = 0.5
    wave[300] = 0.001  # below 1 % of the peak
    trimmed = S.trim_silence(wave)
    assert len(trimmed) == 200 + 2 * 160 and trimmed[160] == 0.5
    assert S.trim_silence(np.zeros(10, np.float32)).size == 0
