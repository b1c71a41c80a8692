"""Seeded music clips: parameters drawn per (seed, index), MIDI that keeps to the key, register, tempo and length,
deterministic renders at a fixed loudness that match scipy's resampler, timbres that tell the families apart, onset
rates that follow the tempo, captions and labels from the parameters, and one-line errors for bad input."""

from __future__ import annotations

import dataclasses
import math
import sys
from collections import Counter

import numpy as np
import pytest

pretty_midi = pytest.importorskip("pretty_midi")
pytest.importorskip("midirenderer")

from zoo.errors import ZooValueError  # noqa: E402
from zoo.tasks.audio import music  # noqa: E402
from zoo.tasks.audio.music import MusicParams, attributes, caption, make_midi, music_params, read_midi, render  # noqa: E402

SR = 16000
BASE = MusicParams("piano", 0, 110.0, "D", "minor", 1.5, "middle", False, 1)


def _log_bands(audio: np.ndarray, bands: int = 16, n: int = 1024) -> np.ndarray:
    """Mean power in log-spaced bands from 100 Hz to 8 kHz, as log values centred on their mean."""
    frames = np.lib.stride_tricks.sliding_window_view(audio, n)[:: n // 4] * np.hanning(n)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)
    freqs = np.fft.rfftfreq(n, 1 / SR)
    edges = np.geomspace(100, 8000, bands + 1)
    level = np.log([power[(freqs >= lo) & (freqs < hi)].sum() + 1e-10 for lo, hi in zip(edges[:-1], edges[1:])])
    return level - level.mean()


def _onset_rate(audio: np.ndarray, n: int = 512, hop: int = 160, radius: int = 4) -> float:
    """Onsets per second: peaks of the spectral flux (summed rise of log magnitudes) that are the largest within
    ``radius`` frames and stand 0.15 (of the largest flux) above the median."""
    frames = np.lib.stride_tricks.sliding_window_view(audio, n)[::hop] * np.hanning(n)
    magnitude = np.log1p(100 * np.abs(np.fft.rfft(frames, axis=1)))
    flux = np.maximum(np.diff(magnitude, axis=0), 0).sum(axis=1)
    flux /= flux.max()
    padded = np.pad(flux, radius)
    peaks = [i for i in range(len(flux))
             if flux[i] == padded[i:i + 2 * radius + 1].max() and flux[i] > np.median(flux) + 0.15]
    return len(peaks) / (len(audio) / SR)


def test_params_are_seeded_per_clip_and_cover_the_choices():
    draws = [music_params(7, i) for i in range(300)]
    assert draws[5] == music_params(7, 5) and draws[5] != music_params(8, 5) and draws[5] != draws[6]
    assert {p.family for p in draws} == set(music.FAMILIES)
    assert {p.mode for p in draws} == {"major", "minor"} and {p.chords for p in draws} == {True, False}
    assert {p.register for p in draws} == set(music.REGISTERS)
    assert all(60 <= p.tempo <= 180 and 0.5 <= p.density <= 2 for p in draws)
    assert not any(p.family == "bass" and p.register == "high" for p in draws)
    assert not any(p.family == "flute" and p.register == "low" for p in draws)
    assert {attributes(p)["tempo"] for p in draws} == {"slow", "moderate", "fast"}
    assert {attributes(p)["density"] for p in draws} == {"sparse", "medium", "dense"}
    for bad in (-1, 1.5, True):
        with pytest.raises(ZooValueError, match="index"):
            music_params(0, bad)
    with pytest.raises(ZooValueError, match="seed"):
        music_params(-3, 0)


@pytest.mark.parametrize("field, value", [("family", "kazoo"), ("program", 40), ("key", "Db"), ("mode", "dorian"),
                                          ("density", 3.0), ("register", "alto"), ("tempo", 0.0)])
def test_params_refuse_bad_values(field, value):
    with pytest.raises(ZooValueError, match=field):
        dataclasses.replace(BASE, **{field: value})


def test_midi_keeps_to_key_register_tempo_and_length():
    counts = Counter()
    for i in range(40):
        params = music_params(3, i)
        midi = make_midi(params, 3.0)
        melody = midi.instruments[0]
        allowed = {(params.tonic + step) % 12 for step in music.MODES[params.mode]}
        pitches = [note.pitch for inst in midi.instruments for note in inst.notes]
        assert {p % 12 for p in pitches} <= allowed
        centre = music.REGISTERS[params.register]
        assert all(abs(note.pitch - centre) <= music.SPAN for note in melody.notes)
        assert melody.program == params.program and len(midi.instruments) == 1 + params.chords
        assert melody.notes[0].start == 0 and melody.notes[-1].pitch % 12 == params.tonic
        assert math.isclose(midi.get_end_time(), 3.0 - music.RELEASE_SECONDS)
        assert math.isclose(midi.get_tempo_changes()[1][0], params.tempo, rel_tol=1e-3)
        assert midi.key_signature_changes[0].key_number == params.tonic + 12 * (params.mode == "minor")
        slots = math.ceil((3.0 - music.RELEASE_SECONDS) / (30 / params.tempo))
        counts["onsets"] += len(melody.notes) - 1
        counts["expected"] += (slots - 1) * params.density / 2
    assert abs(counts["onsets"] - counts["expected"]) < 4 * math.sqrt(counts["expected"])
    with pytest.raises(ZooValueError, match="seconds"):
        make_midi(BASE, 0.2)


def test_render_is_deterministic_at_fixed_loudness():
    for i in range(6):
        params = music_params(11, i)
        audio = render(make_midi(params, 3.0))
        np.testing.assert_array_equal(audio, render(make_midi(params, 3.0)))
        assert audio.dtype == np.float32 and audio.shape == (3 * SR,)
        rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        assert 0.03 < rms <= music.TARGET_RMS + 1e-6 and np.abs(audio).max() <= music.MAX_PEAK + 1e-6
        assert np.all(audio[-1:] == 0)
    other = render(make_midi(dataclasses.replace(BASE, seed=2)))
    assert not np.array_equal(render(make_midi(BASE)), other)


def test_render_pads_short_and_cuts_long_music():
    short = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes.append(pretty_midi.Note(velocity=100, pitch=60, start=0.0, end=0.5))
    short.instruments.append(piano)
    audio = render(short)
    assert audio.shape == (2 * SR,) and np.all(audio[int(1.5 * SR):] == 0) and np.abs(audio[: SR // 2]).max() > 0.1
    long = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes += [pretty_midi.Note(velocity=100, pitch=60 + i % 12, start=i / 2, end=i / 2 + 0.4) for i in range(20)]
    piano.notes.append(pretty_midi.Note(velocity=100, pitch=48, start=0.0, end=60.0))
    long.instruments.append(piano)
    assert render(long).shape == (4 * SR,) and render(long, 24000, max_seconds=3.0).shape == (3 * 24000,)
    assert len(long.instruments[0].notes) == 21 and long.instruments[0].notes[-1].end == 60.0
    with pytest.raises(ZooValueError, match="sample_rate"):
        render(short, 22050)
    with pytest.raises(ZooValueError, match="min_seconds"):
        render(short, min_seconds=5.0)


def test_downsampling_matches_scipy():
    signal = pytest.importorskip("scipy.signal")
    midi = make_midi(dataclasses.replace(BASE, family="brass", program=56, register="high"), 3.0)
    ours = render(midi).astype(np.float64)
    theirs = signal.resample_poly(render(midi, 48000).astype(np.float64), 1, 3)
    fade = round(music.FADE_SECONDS * SR)
    ours, theirs = ours[:-fade], theirs[:-fade]
    scale = np.dot(ours, theirs) / np.dot(theirs, theirs)
    assert np.sqrt(np.mean((ours - scale * theirs) ** 2)) < 0.02 * np.sqrt(np.mean(ours**2))


def test_families_have_different_spectra():
    features = {}
    for family, programs in music.FAMILIES.items():
        for seed in range(1, 5):
            params = dataclasses.replace(BASE, family=family, program=programs[0][0], seed=seed)
            features[family, seed] = _log_bands(render(make_midi(params, 3.0)))
    families = list(music.FAMILIES)
    for a in families:
        for b in families[families.index(a) + 1:]:
            assert np.sqrt(np.mean((features[a, 1] - features[b, 1]) ** 2)) > 0.5, (a, b)
    correct = 0
    for held in range(1, 5):
        templates = {f: np.mean([features[f, s] for s in range(1, 5) if s != held], axis=0) for f in families}
        for family in families:
            correct += family == min(families, key=lambda f: np.linalg.norm(features[family, held] - templates[f]))
    assert correct / (4 * len(families)) >= 0.5


@pytest.mark.parametrize("family, program", [("piano", 0), ("guitar", 24), ("plucked", 46)])
def test_onset_rate_follows_tempo(family, program):
    rates = []
    for tempo in (60.0, 100.0, 150.0):
        midi = make_midi(dataclasses.replace(BASE, family=family, program=program, tempo=tempo, density=2.0), 4.0)
        notes = len(midi.instruments[0].notes)
        assert notes == math.ceil((4.0 - music.RELEASE_SECONDS) * tempo / 30)
        rate = _onset_rate(render(midi))
        assert rate == pytest.approx(notes / 4.0, rel=0.1)
        rates.append(rate)
    assert rates[0] < rates[1] < rates[2]
    sparse = make_midi(dataclasses.replace(BASE, family=family, program=program, tempo=150.0, density=0.8), 4.0)
    assert _onset_rate(render(sparse)) == pytest.approx(len(sparse.instruments[0].notes) / 4.0, rel=0.15)


def test_caption_and_attributes():
    params = MusicParams("piano", 0, 140.0, "G", "major", 1.8, "high", False, 1)
    assert caption(params) == "a fast cheerful piano melody in G major, high register, dense"
    assert attributes(params) == {"family": "piano", "tempo": "fast", "mode": "major", "density": "dense",
                                  "register": "high"}
    params = MusicParams("strings", 42, 72.5, "F#", "minor", 1.0, "low", True, 1)
    assert caption(params) == "a slow melancholic cello melody with chords in F# minor, low register, medium"
    for i in range(50):
        params = music_params(5, i)
        assert f" in {params.key} {params.mode}," in caption(params)
        assert attributes(params)["family"] == params.family


def test_read_midi_round_trip_and_errors(tmp_path):
    path = tmp_path / "clip.mid"
    midi = make_midi(BASE, 3.0)
    midi.write(str(path))
    back = read_midi(path)
    assert [(n.pitch, round(n.start, 3)) for n in back.instruments[0].notes] == \
        [(n.pitch, round(n.start, 3)) for n in midi.instruments[0].notes]
    assert render(back).shape == (3 * SR,)
    text = tmp_path / "notes.mid"
    text.write_text("not a midi file\n")
    empty = tmp_path / "empty.mid"
    pretty_midi.PrettyMIDI().write(str(empty))
    for bad, message in ((text, "is not a readable MIDI file"), (empty, "has no notes"),
                         (tmp_path / "missing.mid", "does not exist")):
        with pytest.raises(ZooValueError, match=message) as err:
            read_midi(bad)
        assert "\n" not in str(err.value) and bad.name in str(err.value)


def test_missing_synthesizer_or_soundfont_says_how_to_install(monkeypatch, tmp_path):
    with pytest.raises(ZooValueError, match="does not exist") as err:
        render(make_midi(BASE), soundfont=tmp_path / "none.sf2")
    monkeypatch.setitem(sys.modules, "midirenderer", None)
    with pytest.raises(ZooValueError, match="pip install") as err:
        render(make_midi(BASE))
    assert "midirenderer" in str(err.value) and "\n" not in str(err.value)
