"""Reading a user's audio data: PCM samples equal to the stdlib ``wave`` module's, FLAC and OGG decoded, stereo mixed
to mono, other rates resampled with a note and the pitch kept, manifests and the LJSpeech, SeedTTS and LibriSpeech
layouts read into examples (2-line fixtures with sine tones written here) and written back, and every mistake one
line naming its file and line."""

from __future__ import annotations

import json
import wave
from functools import partial
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")
pytest.importorskip("torchaudio")

from zoo.errors import ZooValueError  # noqa: E402
from zoo.tasks.audio.formats import (  # noqa: E402
    Example,
    load_example,
    read_audio,
    read_librispeech,
    read_ljspeech,
    read_manifest,
    read_seedtts,
    write_manifest,
)

SR = 16000


def _tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def _pcm16(path: Path, samples: np.ndarray, rate: int = SR) -> np.ndarray:
    """Write int16 PCM with the stdlib ``wave`` module (not through soundfile); return the int16 samples."""
    pcm = np.round(samples * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1 if pcm.ndim == 1 else pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return pcm


def _peak_hz(x: np.ndarray, rate: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def _one_line_error(call, *fragments: str) -> str:
    with pytest.raises(ZooValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_pcm_wav_reads_as_the_stdlib_samples_over_32768(tmp_path):
    pcm = _pcm16(tmp_path / "a.wav", _tone(440, SR, 0.25) + np.linspace(-0.4, 0.4, 4000, dtype=np.float32))
    got, notes = read_audio(tmp_path / "a.wav")
    assert got.dtype == np.float32 and got.shape == (4000,) and notes == []
    np.testing.assert_array_equal(got, pcm.astype(np.float32) / 32768)


def test_flac_and_24_bit_round_trip(tmp_path):
    x = _tone(300, SR, 0.5, amp=0.9)
    sf.write(tmp_path / "a.flac", x, SR, subtype="PCM_16")
    sf.write(tmp_path / "b.wav", x, SR, subtype="PCM_24")
    flac, notes = read_audio(tmp_path / "a.flac")
    assert notes == [] and np.abs(flac - x).max() <= 1 / 32768 + 1e-7
    pcm24, _ = read_audio(tmp_path / "b.wav")
    assert np.abs(pcm24 - x).max() <= 1 / 2**23 + 1e-7


def test_ogg_vorbis_keeps_the_pitch(tmp_path):
    if "OGG" not in sf.available_formats():
        pytest.skip("this libsndfile has no OGG")
    sf.write(tmp_path / "a.ogg", _tone(440, SR), SR, format="OGG", subtype="VORBIS")
    got, notes = read_audio(tmp_path / "a.ogg")
    assert notes == [] and abs(len(got) - SR) < 100 and abs(_peak_hz(got) - 440) <= 1
    assert np.abs(got).max() <= 1


def test_44100_hz_tone_is_resampled_with_a_note_and_keeps_its_pitch(tmp_path):
    _pcm16(tmp_path / "cd.wav", _tone(440, 44100), rate=44100)
    got, notes = read_audio(tmp_path / "cd.wav")
    assert notes == ["resampled from 44100 Hz"]
    assert got.dtype == np.float32 and len(got) == SR
    assert _peak_hz(got) == 440.0
    # the level is kept too: the RMS of a 0.5 sine away from the edges
    assert abs(np.sqrt(np.mean(got[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 2e-3
    low, notes = read_audio(tmp_path / "cd.wav", sample_rate=8000)
    assert notes == ["resampled from 44100 Hz"] and len(low) == 8000 and _peak_hz(low, 8000) == 440.0


def test_stereo_is_the_mean_of_its_channels(tmp_path):
    left, right = _tone(440, SR, 0.25), _tone(1000, SR, 0.25, amp=0.25)
    pcm = _pcm16(tmp_path / "st.wav", np.stack([left, right], axis=1))
    got, notes = read_audio(tmp_path / "st.wav")
    assert notes == ["mixed 2 channels to mono"]
    np.testing.assert_allclose(got, pcm.astype(np.float32).mean(axis=1) / 32768, atol=1e-7)


def test_float_samples_outside_the_range_are_clipped_with_a_note(tmp_path):
    x = np.array([0.0, 1.5, -2.0, 0.25, 1.0], np.float32)
    sf.write(tmp_path / "f.wav", x, SR, subtype="FLOAT")
    got, notes = read_audio(tmp_path / "f.wav")
    np.testing.assert_array_equal(got, [0.0, 1.0, -1.0, 0.25, 1.0])
    assert notes == ["clipped 2 samples outside [-1, 1]"]


def test_unreadable_audio_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "text.wav").write_text("hello, not audio")
    (tmp_path / "empty.flac").write_bytes(b"")
    (tmp_path / "noise.flac").write_bytes(np.random.default_rng(0).bytes(300))
    sf.write(tmp_path / "ok.wav", np.zeros(100), SR)
    (tmp_path / "cut.wav").write_bytes((tmp_path / "ok.wav").read_bytes()[:30])
    _pcm16(tmp_path / "silent.wav", np.zeros(0, np.float32))
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan], np.float32), SR, subtype="FLOAT")
    for name, why in [("text.wav", "Format not recognised"), ("empty.flac", "not audio"), ("noise.flac", "not audio"),
                      ("cut.wav", "data"), ("silent.wav", "no audio"), ("nan.wav", "non-finite"),
                      ("missing.wav", "does not exist")]:
        _one_line_error(partial(read_audio, tmp_path / name), str(tmp_path / name), why)
    _one_line_error(lambda: read_audio(tmp_path), "is not a file")
    _one_line_error(lambda: read_audio(tmp_path / "ok.wav", sample_rate=0), "sample_rate=0")
    _pcm16(tmp_path / "odd.wav", _tone(440, 44101, 0.1), rate=44101)
    _one_line_error(lambda: read_audio(tmp_path / "odd.wav"), "44101 Hz", "odd.wav")


def _fixture(tmp_path: Path) -> tuple[Path, list[Example]]:
    """Two audio files under ``data/`` and one beside it, and examples naming them."""
    (tmp_path / "data" / "wavs").mkdir(parents=True)
    _pcm16(tmp_path / "data" / "wavs" / "a.wav", _tone(220, SR, 0.3))
    _pcm16(tmp_path / "data" / "wavs" / "p.wav", _tone(330, 22050, 0.2), rate=22050)
    _pcm16(tmp_path / "outside.wav", _tone(550, SR, 0.1))
    wavs = tmp_path / "data" / "wavs"
    return tmp_path / "data" / "m.jsonl", [
        Example("tts", "Hello there.", "u1", wavs / "p.wav", "A prompt.", wavs / "a.wav"),
        Example("t2m", "a slow piano melody", "m1", target_audio=tmp_path / "outside.wav"),
        Example("tts", "Nothing to compare with.", "u2"),
    ]


def test_manifest_round_trip_with_relative_and_absolute_paths(tmp_path):
    manifest, examples = _fixture(tmp_path)
    assert write_manifest(examples, manifest) == manifest
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert records[0] == {"id": "u1", "task": "tts", "text": "Hello there.", "prompt_audio": "wavs/p.wav",
                          "prompt_text": "A prompt.", "target_audio": "wavs/a.wav", "sr": 16000}
    assert records[1]["caption"] == "a slow piano melody" and records[1]["target_audio"] == str(tmp_path / "outside.wav")
    assert records[2] == {"id": "u2", "task": "tts", "text": "Nothing to compare with.", "sr": 16000}
    assert read_manifest(manifest) == examples
    assert not list(manifest.parent.glob(".m.jsonl.*"))  # no temporary file left by the atomic write


def test_manifest_defaults_escaping_paths_and_lazy_loading(tmp_path, monkeypatch):
    manifest, _ = _fixture(tmp_path)
    manifest.write_text('{"task": "t2m", "caption": "drums", "target_audio": "../outside.wav"}\n\n'
                        '{"task": "tts", "text": "Hi.", "prompt_audio": "wavs/p.wav", "target_audio": "wavs/a.wav"}\n')
    monkeypatch.chdir(tmp_path)
    first, second = read_manifest("data/m.jsonl")  # a relative manifest path still gives absolute audio paths
    assert first.id == "m-1" and second.id == "m-3" and first.sr == 16000
    assert first.target_audio == tmp_path / "outside.wav" and first.target_audio.is_absolute()
    audio = load_example(second)
    assert audio.prompt is not None and audio.target is not None and len(audio.target) == int(0.3 * SR)
    assert audio.notes == ["prompt: resampled from 22050 Hz"] and _peak_hz(audio.prompt) == pytest.approx(330, abs=5)
    assert load_example(Example("tts", "No audio.", "x")) == (None, None, [])
    low = load_example(Example("t2m", "drums", "y", target_audio=tmp_path / "outside.wav", sr=8000))
    assert len(low.target) == 800 and low.notes == ["target: resampled from 16000 Hz"]


@pytest.mark.parametrize("line, fragment", [
    ('{"task": "tts", "text": "a"', "not valid JSON"),
    ('["tts", "a"]', "expected a JSON object, got list"),
    ('{"task": "asr", "text": "a"}', "task='asr'"),
    ('{"text": "a"}', "task=None"),
    ('{"task": "tts"}', "needs a non-empty 'text'"),
    ('{"task": "tts", "text": "  "}', "needs a non-empty 'text'"),
    ('{"task": "t2m", "text": "a"}', "needs a non-empty 'caption'"),
    ('{"task": "t2m", "caption": "a", "prompt_audio": "wavs/a.wav"}', "keys ['prompt_audio'] are not used"),
    ('{"task": "tts", "text": "a", "target_wav": "wavs/a.wav"}', "keys ['target_wav']"),
    ('{"task": "tts", "text": "a", "target_audio": "wavs/gone.wav"}', "target_audio 'wavs/gone.wav' not found"),
    ('{"task": "tts", "text": "a", "target_audio": 3}', "target_audio=3"),
    ('{"task": "tts", "text": "a", "prompt_text": "b"}', "prompt_text='b'"),
    ('{"task": "tts", "text": "a", "sr": 0}', "sr=0"),
    ('{"task": "tts", "text": "a", "id": 7}', "id=7"),
])
def test_manifest_errors_are_one_line_with_the_line_number(tmp_path, line, fragment):
    manifest, _ = _fixture(tmp_path)
    manifest.write_text('{"task": "tts", "text": "fine", "target_audio": "wavs/a.wav"}\n\n' + line + "\n")
    _one_line_error(lambda: read_manifest(manifest), f"{manifest} line 3: ", fragment)


def test_manifest_file_errors(tmp_path):
    manifest, _ = _fixture(tmp_path)
    _one_line_error(lambda: read_manifest(manifest), "manifest", "does not exist")
    manifest.write_text('{"task": "tts", "text": "a", "id": "x"}\n{"task": "t2m", "caption": "b", "id": "x"}\n')
    _one_line_error(lambda: read_manifest(manifest), "line 2: id 'x' repeats line 1")
    manifest.write_text("\n  \n")
    _one_line_error(lambda: read_manifest(manifest), "has no examples")
    manifest.write_bytes(b'{"task": "tts", "text": "\xff"}\n')
    _one_line_error(lambda: read_manifest(manifest), "is not UTF-8")
    _one_line_error(lambda: write_manifest([], manifest), "at least one Example")
    _one_line_error(lambda: write_manifest([{"task": "tts"}], manifest), "a sequence of Example")
    _one_line_error(lambda: write_manifest([Example("tts", "a", "x")] * 2, manifest), "unique ids")
    _one_line_error(lambda: write_manifest([Example("tts", "a", "x")], tmp_path / "data" / "wavs" / "a.wav" / "m"),
                    "cannot write")
    _one_line_error(lambda: Example("t2m", "a", "x", prompt_audio="p.wav"), "prompt_audio")
    _one_line_error(lambda: Example("vc", "a", "x"), "task='vc'")


def test_ljspeech_layout(tmp_path):
    (tmp_path / "wavs").mkdir()
    for i, freq in enumerate((200, 400)):
        _pcm16(tmp_path / "wavs" / f"LJ001-000{i + 1}.wav", _tone(freq, 22050, 0.2), rate=22050)
    (tmp_path / "metadata.csv").write_text(
        'LJ001-0001|Printing, in 1st place, is "the" art|Printing, in first place, is "the" art\n'
        "LJ001-0002|in being comparatively modern.|\n", encoding="utf-8")
    first, second = read_ljspeech(tmp_path)
    assert first == Example("tts", 'Printing, in first place, is "the" art', "LJ001-0001",
                            target_audio=tmp_path / "wavs" / "LJ001-0001.wav")
    assert second.text == "in being comparatively modern." and second.prompt_audio is None
    audio = load_example(second)
    assert audio.notes == ["target: resampled from 22050 Hz"] and _peak_hz(audio.target) == pytest.approx(400, abs=5)
    manifest = tmp_path / "lj.jsonl"
    assert read_manifest(write_manifest([first, second], manifest)) == [first, second]
    (tmp_path / "metadata.csv").write_text("LJ001-0001|a|a\nLJ001-0003|b|b\n")
    _one_line_error(lambda: read_ljspeech(tmp_path), "metadata.csv line 2", "LJ001-0003.wav")
    (tmp_path / "metadata.csv").write_text("LJ001-0001 a a\n")
    _one_line_error(lambda: read_ljspeech(tmp_path), "metadata.csv line 1", "expected 'id|transcription")
    _one_line_error(lambda: read_ljspeech(tmp_path / "wavs"), "metadata.csv", "does not exist")


def test_seedtts_list(tmp_path):
    (tmp_path / "prompt-wavs").mkdir()
    (tmp_path / "wavs").mkdir()
    (tmp_path / "gt").mkdir()
    _pcm16(tmp_path / "prompt-wavs" / "p1.wav", _tone(300, 24000, 0.2), rate=24000)
    _pcm16(tmp_path / "wavs" / "utt1.wav", _tone(350, SR, 0.2))
    _pcm16(tmp_path / "gt" / "t2.wav", _tone(450, SR, 0.2))
    meta = tmp_path / "meta.lst"
    meta.write_text("utt1|We asked over twenty people.|prompt-wavs/p1.wav|Mary is not the only one.\n"
                    "utt2|提示文本。|prompt-wavs/p1.wav|目标文本。|gt/t2.wav\n", encoding="utf-8")
    first, second = read_seedtts(meta)
    assert first == Example("tts", "Mary is not the only one.", "utt1", tmp_path / "prompt-wavs" / "p1.wav",
                            "We asked over twenty people.", tmp_path / "wavs" / "utt1.wav")
    assert second.text == "目标文本。" and second.prompt_text == "提示文本。" and second.target_audio == tmp_path / "gt/t2.wav"
    assert read_manifest(write_manifest([first, second], tmp_path / "seed.jsonl")) == [first, second]
    assert "目标文本" in (tmp_path / "seed.jsonl").read_text(encoding="utf-8")
    (tmp_path / "wavs" / "utt1.wav").unlink()
    assert read_seedtts(meta)[0].target_audio is None  # a generation-only list
    meta.write_text("utt1|text|prompt-wavs/p1.wav|target\nutt3|text|prompt-wavs/p3.wav|target\n")
    _one_line_error(lambda: read_seedtts(meta), "meta.lst line 2", "prompt_wav 'prompt-wavs/p3.wav' not found")
    meta.write_text("utt1|text|prompt-wavs/p1.wav\n")
    _one_line_error(lambda: read_seedtts(meta), "meta.lst line 1", "utt|prompt_text|prompt_wav|target_text")
    meta.write_text("utt1|text|prompt-wavs/p1.wav|target\nutt1|text|prompt-wavs/p1.wav|again\n")
    _one_line_error(lambda: read_seedtts(meta), "meta.lst line 2: id 'utt1' repeats line 1")


def test_librispeech_layout(tmp_path):
    chapter = tmp_path / "test-clean" / "19" / "198"
    chapter.mkdir(parents=True)
    for i in (1, 2):
        sf.write(chapter / f"19-198-000{i}.flac", _tone(200 * i, SR, 0.2), SR, subtype="PCM_16")
    (chapter / "19-198.trans.txt").write_text("19-198-0001 NORTHANGER ABBEY\n19-198-0002 THIS LITTLE WORK\n")
    first, second = read_librispeech(tmp_path / "test-clean")
    assert first == Example("tts", "NORTHANGER ABBEY", "19-198-0001", target_audio=chapter / "19-198-0001.flac")
    assert second.text == "THIS LITTLE WORK"
    assert load_example(second).notes == [] and _peak_hz(load_example(second).target) == pytest.approx(400, abs=5)
    (chapter / "19-198.trans.txt").write_text("19-198-0001 NORTHANGER ABBEY\n19-198-0009 GONE\n")
    _one_line_error(lambda: read_librispeech(tmp_path / "test-clean"), "19-198.trans.txt line 2", "19-198-0009.flac")
    _one_line_error(lambda: read_librispeech(chapter / "nowhere"), "folder=")
    (tmp_path / "empty").mkdir()
    _one_line_error(lambda: read_librispeech(tmp_path / "empty"), "holds no LibriSpeech")
