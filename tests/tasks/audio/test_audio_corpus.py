"""The cached synthetic audio corpus (zoo.tasks.audio.corpus): determinism, cache hits that synthesise nothing,
rebuilding a corrupt cache, no partial files after a failure, the train/test split, voice prompts, the mix of
kinds, and tokenising against the codec clip by clip."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

pytest.importorskip("espeakng_loader")
pytest.importorskip("torchaudio")
pytest.importorskip("pretty_midi")
pytest.importorskip("midirenderer")

from zoo.errors import ZooValueError  # noqa: E402
from zoo.tasks.audio import corpus as C  # noqa: E402
from zoo.tasks.audio import music, speech  # noqa: E402
from zoo.tasks.audio.codec import Codec  # noqa: E402

SEED, N_SPEECH, N_MUSIC = 3, 12, 3


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("corpus")
    return folder, C.build_corpus(SEED, N_SPEECH, N_MUSIC, cache_dir=folder)


def _same(a: C.Corpus, b: C.Corpus) -> bool:
    return (a.seed == b.seed and len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a.waves, b.waves))
            and a.kind.tolist() == b.kind.tolist() and a.text == b.text and a.attributes == b.attributes
            and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("speaker", "held_out", "prompt_index")))


def _no_synthesis(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("synthesised although the corpus is cached")

    for module, name in ((speech, "utterance"), (speech, "synthesize"), (music, "render"), (music, "make_midi")):
        monkeypatch.setattr(module, name, refuse)


def test_clips_are_the_synthesisers_output(built):
    _, corpus = built
    order = C.speaker_order(SEED)
    for i in (0, 5, 11):
        text, spk, wave = speech.utterance(SEED, i, speaker=order[i // 2])
        assert corpus.text[i] == text and corpus.speaker[i] == spk.index and np.array_equal(corpus.waves[i], wave)
    params = music.music_params(SEED, 1)
    assert corpus.text[N_SPEECH + 1] == music.caption(params)
    assert corpus.attributes[N_SPEECH + 1] == music.attributes(params)
    for wave in corpus.waves:
        assert wave.dtype == np.float32 and wave.ndim == 1 and np.abs(wave).max() <= 1.0
        assert C.SECONDS[0] * C.SAMPLE_RATE <= len(wave) <= C.SECONDS[1] * C.SAMPLE_RATE


def test_deterministic_in_the_seed_and_the_cache_returns_the_same_corpus(built, tmp_path):
    folder, corpus = built
    fresh = C.build_corpus(SEED, N_SPEECH, N_MUSIC, cache_dir=tmp_path / "a")
    assert _same(fresh, corpus)
    cached = C.build_corpus(SEED, N_SPEECH, N_MUSIC, cache_dir=folder)
    assert _same(cached, corpus) and cached.kind.dtype.kind == "U"
    other = C.build_corpus(SEED + 1, 4, 1, cache_dir=tmp_path / "b")
    assert other.text[:4] != corpus.text[:4] and not np.array_equal(other.waves[-1], corpus.waves[N_SPEECH])


def test_cache_hit_does_not_synthesise(built, monkeypatch):
    folder, corpus = built
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"corpus-{C.cache_key(SEED, N_SPEECH, N_MUSIC)[:16]}.npz"]
    _no_synthesis(monkeypatch)
    assert _same(C.build_corpus(SEED, N_SPEECH, N_MUSIC, cache_dir=folder), corpus)
    with pytest.raises(AssertionError, match="synthesised"):  # other counts are another file
        C.build_corpus(SEED, N_SPEECH - 1, N_MUSIC, cache_dir=folder)


def test_cache_file_holds_no_pickles(built):
    folder, _ = built
    (path,) = folder.iterdir()
    with np.load(path, allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)
        assert data["samples"].dtype == np.float32 and data["offsets"][-1] == len(data["samples"])
        assert data["attr_family"][N_SPEECH:].tolist() == [a["family"] for a in C._load(path, str(data["key"]))
                                                          .attributes[N_SPEECH:]]


def test_key_changes_with_the_version_and_the_counts(monkeypatch):
    key = C.cache_key(SEED, N_SPEECH, N_MUSIC)
    assert len(key) == 64 and key == C.cache_key(SEED, N_SPEECH, N_MUSIC)
    assert len({key, C.cache_key(SEED + 1, N_SPEECH, N_MUSIC), C.cache_key(SEED, N_SPEECH + 1, N_MUSIC),
                C.cache_key(SEED, N_SPEECH, N_MUSIC + 1)}) == 4
    monkeypatch.setattr(C, "CORPUS_VERSION", C.CORPUS_VERSION + 1)
    assert C.cache_key(SEED, N_SPEECH, N_MUSIC) != key


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other corpus"])
def test_corrupt_cache_is_rebuilt_and_logged(built, tmp_path, caplog, damage):
    folder, corpus = built
    (good,) = folder.iterdir()
    path = tmp_path / good.name
    if damage == "garbage":
        path.write_bytes(b"not an npz file")
    elif damage == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    else:
        C.build_corpus(SEED, 2, 0, cache_dir=tmp_path)
        (tmp_path / f"corpus-{C.cache_key(SEED, 2, 0)[:16]}.npz").rename(path)
    with caplog.at_level(logging.WARNING, logger=C.__name__):
        rebuilt = C.build_corpus(SEED, N_SPEECH, N_MUSIC, cache_dir=tmp_path)
    assert _same(rebuilt, corpus)
    assert any("unreadable" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    assert path.read_bytes() == good.read_bytes() and sorted(p.name for p in tmp_path.iterdir()) == [good.name]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_build_leaves_no_file(tmp_path, monkeypatch, error):
    calls = []

    def render_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise error("stopped")
        return np.zeros(C.SAMPLE_RATE * 2, np.float32)

    monkeypatch.setattr(music, "render", render_then_fail)
    with pytest.raises(error):
        C.build_corpus(SEED, 2, 3, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    import zoo.io

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zoo.io.os, "replace", fail)
    with pytest.raises(ZooValueError, match="No space left"):
        C.build_corpus(SEED, 2, 0, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_split_is_disjoint_with_held_out_speakers_in_test(built):
    _, corpus = built
    train, test = corpus.split("train"), corpus.split("test")
    assert np.intersect1d(train, test).size == 0 and sorted([*train, *test]) == list(range(len(corpus)))
    held = {s.index for s in speech.speakers(SEED) if s.held_out}
    is_speech = corpus.kind == "speech"
    assert set(corpus.speaker[test][is_speech[test]]) <= held and set(corpus.speaker[test][is_speech[test]])
    assert not set(corpus.speaker[train][is_speech[train]]) & held
    assert int((~is_speech & corpus.held_out).sum()) == 1  # 10 % of 3 music clips, at least one
    with pytest.raises(ZooValueError, match="part='val'"):
        corpus.split("val")


def test_music_test_share_is_about_ten_percent():
    counts = [int(C._music_test(s, 60).sum()) for s in range(3)]
    assert counts == [6, 6, 6] and not np.array_equal(C._music_test(0, 60), C._music_test(1, 60))
    assert C._music_test(0, 1).sum() == 0 and C._music_test(0, 0).shape == (0,)


def test_speaker_order_spreads_the_held_out_speakers():
    order = C.speaker_order(SEED)
    assert sorted(s.index for s in order) == list(range(speech.N_SPEAKERS))
    assert [i for i, s in enumerate(order) if s.held_out] == list(range(2, 40, 5))


def test_prompt_is_another_clip_of_the_same_speaker(built):
    _, corpus = built
    for i in range(len(corpus)):
        p = corpus.prompt_index[i]
        if corpus.kind[i] == "music":
            assert p == -1
        else:
            assert p != i and corpus.kind[p] == "speech" and corpus.speaker[p] == corpus.speaker[i]
            assert corpus.held_out[p] == corpus.held_out[i]


def test_prompt_cycles_through_a_speakers_clips_and_a_lone_clip_has_none():
    speaker = np.array([4, 4, 7, 4, 9, -1])
    assert C._prompts(speaker).tolist() == [1, 3, -1, 0, -1, -1]


def test_kinds_follow_the_requested_counts(built, tmp_path):
    _, corpus = built
    assert corpus.kind.tolist() == ["speech"] * N_SPEECH + ["music"] * N_MUSIC
    assert (corpus.speaker[N_SPEECH:] == -1).all() and (corpus.speaker[:N_SPEECH] >= 0).all()
    assert all(a is None for a in corpus.attributes[:N_SPEECH]) and all(corpus.attributes[N_SPEECH:])
    only_music = C.build_corpus(SEED, 0, 2, cache_dir=tmp_path)
    assert only_music.kind.tolist() == ["music", "music"] and all(
        np.array_equal(x, y) for x, y in zip(only_music.waves, corpus.waves[N_SPEECH:]))


@pytest.mark.parametrize("args", [(-1, 2, 1), (0, -1, 1), (0, 2, 1.5), (0, True, 1), (0, 0, 0)])
def test_bad_arguments_are_one_line_errors(tmp_path, args):
    with pytest.raises(ZooValueError) as err:
        C.build_corpus(*args, cache_dir=tmp_path)
    assert "\n" not in str(err.value) and "expected" in str(err.value)


def test_default_cache_dir_follows_zoo_home(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    assert C.default_cache_dir() == tmp_path / "audio"
    monkeypatch.delenv("ZOO_HOME")
    assert C.default_cache_dir() == C.Path("~/.cache/zoo/audio").expanduser()


def test_tokenize_matches_the_codec_clip_by_clip(built):
    _, corpus = built
    codec = Codec(num_codebooks=2, size=8).fit(corpus.waves[:3], seed=0, iters=3)
    tokens = C.tokenize(corpus, codec)
    assert len(tokens) == len(corpus)
    for wave, codes in zip(corpus.waves, tokens):
        assert codes.shape == (len(wave) // 320 + 1, 2) and codes.dtype == torch.long
        assert torch.equal(codes, codec.vq.encode(codec.mel(torch.from_numpy(wave))))
    assert [t.shape for t in C.tokenize(corpus, codec, [4, 0])] == [tokens[4].shape, tokens[0].shape]
