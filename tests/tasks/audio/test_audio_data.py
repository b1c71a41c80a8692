"""The audio task's training data (zoo.tasks.audio.data) on a tiny corpus in a temporary ``$ZOO_HOME``: character
ids, decoder sequences against the delay pattern, right-padded batches, the scored-token mask, the train / val /
test split, balanced warm-up batches, the codec cache (hit, corrupt file) and the model info a module is rebuilt
from."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save

pytest.importorskip("espeakng_loader")
pytest.importorskip("torchaudio")
pytest.importorskip("pretty_midi")
pytest.importorskip("midirenderer")

from zoo.errors import ZooValueError  # noqa: E402
from zoo.moe.config import MoEConfig  # noqa: E402
from zoo.tasks.audio import data as D  # noqa: E402
from zoo.tasks.audio.codec import BOS, CODEBOOK_SIZE, EOS, N_MELS, NUM_CODEBOOKS, PAD, VOCAB, Codec, undelay  # noqa: E402
from zoo.tasks.audio.config import AudioConfig, DataConfig, ModelConfig, TrainConfig  # noqa: E402
from zoo.tasks.audio.corpus import default_cache_dir, tokenize  # noqa: E402
from zoo.tasks.audio.module import build_module  # noqa: E402

SEED, N_SPEECH, N_MUSIC = 13, 24, 10


def _cfg(tasks=("speech", "music"), batch_size: int = 4, val_clips: int = 2) -> AudioConfig:
    return AudioConfig(data=DataConfig(num_speech=N_SPEECH, num_music=N_MUSIC, tasks=list(tasks), val_clips=val_clips,
                                       seed=SEED),
                       model=ModelConfig(d_model=32, layers=1, heads=2, ffn="moe", max_len=384),
                       moe=MoEConfig(num_experts=4, k=1, d_hidden=16, router="top_p", router_kwargs={"p": 0.7},
                                     num_null=1, num_shared=1, shared_routed=True),
                       train=TrainConfig(batch_size=batch_size))


@pytest.fixture(scope="module")
def dm(home) -> D.AudioDataModule:
    module = D.AudioDataModule(_cfg())
    module.setup("fit")
    return module


# --- encode_text ---------------------------------------------------------------------------------------------------


def test_encode_text_known_answer():
    # 'H' = 72, 'i' = 105, '!' = 33; ids are ord - 32 + 1.
    assert D.encode_text("Hi!").tolist() == [41, 74, 2]
    assert D.encode_text("  Hi!\n").tolist() == [41, 74, 2]  # surrounding whitespace dropped
    ids = D.encode_text("a ~")
    assert ids.dtype == torch.long and ids.tolist() == [66, 1, D.TEXT_VOCAB - 1]  # ' ' is 1, '~' the last id
    assert len(D.encode_text("x" * D.MAX_TEXT)) == D.MAX_TEXT


@pytest.mark.parametrize("text, words", [("", "empty"), ("  \t\n", "empty"), ("héllo", "'é'"),
                                         ("tab\tinside", "printable ASCII"), ("x" * (D.MAX_TEXT + 1), "121"),
                                         (None, "empty")])
def test_encode_text_refuses_bad_text_in_one_line(text, words):
    with pytest.raises(ZooValueError) as err:
        D.encode_text(text)
    assert words in str(err.value) and "\n" not in str(err.value)


# --- sequences, batches, scored tokens ------------------------------------------------------------------------------


def _codes(T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, CODEBOOK_SIZE, (T, NUM_CODEBOOKS), generator=torch.Generator().manual_seed(seed))


def test_sequence_is_bos_frame_then_delayed_codes_and_eos():
    codes = _codes(5)
    seq = D.sequence(codes)
    Q = NUM_CODEBOOKS
    assert seq.shape == (5 + Q + 1, Q) and seq.dtype == codes.dtype
    assert (seq[0] == BOS).all()
    want = torch.cat([codes, torch.full((1, Q), EOS)])
    assert torch.equal(undelay(seq[1:]), want)
    for q in range(Q):  # by hand: codebook q waits q steps (BOS), then its 5 codes, EOS, then PAD
        column = seq[1:, q].tolist()
        assert column == [BOS] * q + codes[:, q].tolist() + [EOS] + [PAD] * (Q - 1 - q)


def _clip(T: int, text: str, task: int, index: int) -> D.Clip:
    return D.Clip(task, D.encode_text(text), D.sequence(_codes(T, index)), index)


def test_collate_pads_right_and_shifts_the_target():
    clips = [_clip(3, "ab", 1, 7), _clip(6, "hello", 0, 2)]
    batch = D.collate(clips)
    Q, T = NUM_CODEBOOKS, 6 + NUM_CODEBOOKS  # longest frames minus the last one
    assert batch["text"].shape == (2, 5) and batch["audio"].shape == (2, T, Q) and batch["target"].shape == (2, T, Q)
    assert batch["text"].tolist() == [D.encode_text("ab").tolist() + [0, 0, 0], D.encode_text("hello").tolist()]
    assert batch["text_lengths"].tolist() == [2, 5]
    assert batch["task"].tolist() == [1, 0] and batch["index"].tolist() == [7, 2]
    for row, clip in enumerate(clips):
        n = len(clip.frames)
        assert torch.equal(batch["audio"][row, :n], clip.frames[:T])  # the longest clip's last frame is no input
        assert torch.equal(batch["target"][row, : n - 1], clip.frames[1:])
        assert (batch["audio"][row, n:] == PAD).all() and (batch["target"][row, n - 1:] == PAD).all()
    # the target is the audio shifted by one frame
    assert torch.equal(batch["target"][:, :-1], batch["audio"][:, 1:])


def test_target_mask_scores_codes_and_eos_only():
    ids = torch.arange(VOCAB)
    assert D.target_mask(ids).tolist() == [i not in (PAD, BOS) for i in range(VOCAB)]
    batch = D.collate([_clip(3, "ab", 1, 0), _clip(6, "hello", 0, 1)])
    # every clip scores its T·Q codes and its Q EOS tokens, nothing of the padding
    assert D.target_mask(batch["target"]).sum(dim=(1, 2)).tolist() == [(3 + 1) * NUM_CODEBOOKS, (6 + 1) * NUM_CODEBOOKS]


# --- the prepared corpus and the data module ------------------------------------------------------------------------


def test_prepare_tokenises_every_clip_and_is_memoised(home):
    prepared = D.prepare(SEED, N_SPEECH, N_MUSIC)
    assert D.prepare(SEED, N_SPEECH, N_MUSIC) is prepared
    corpus, codec = prepared.corpus, prepared.codec
    assert len(prepared.clips) == len(corpus) == N_SPEECH + N_MUSIC
    codes = tokenize(corpus, codec, [0, N_SPEECH])
    for j, i in enumerate((0, N_SPEECH)):
        clip = prepared.clips[i]
        assert clip.index == i and clip.task == D.TASK_IDS[str(corpus.kind[i])]
        assert torch.equal(clip.text, D.encode_text(corpus.text[i]))
        assert torch.equal(clip.frames, D.sequence(codes[j]))
    assert {c.task for c in prepared.clips} == {0, 1}
    assert sorted(p.name.split("-")[0] for p in default_cache_dir().iterdir()) == ["codec", "corpus"]


def test_split_into_train_val_and_test(dm):
    corpus = dm.data.corpus
    train, val, test = (dm.clips(p) for p in ("train", "val", "test"))
    assert [c.index for c in test] == list(corpus.split("test"))
    for task in ("speech", "music"):
        ids = [i for i in corpus.split("train") if corpus.kind[i] == task]
        assert [c.index for c in dm.clips("val", [task])] == ids[-2:]  # the last val_clips training clips
        assert [c.index for c in dm.clips("train", [task])] == ids[:-2]
    assert len(train) + len(val) + len(test) == len(corpus)
    only_music = D.AudioDataModule(_cfg(tasks=["music"]))
    for part in ("train", "val", "test"):
        clips = only_music.clips(part)
        assert clips and all(c.task == D.TASK_IDS["music"] for c in clips)
        assert [c.index for c in clips] == [c.index for c in dm.clips(part, ["music"])]


def test_loaders_batch_and_shuffle_by_seed(dm):
    first = next(iter(dm.train_dataloader()))
    assert first["audio"].shape[0] == dm.cfg.train.batch_size
    again = next(iter(dm.train_dataloader()))
    assert torch.equal(first["index"], again["index"])
    other = next(iter(dm.loader(dm.clips("train"), shuffle=True, seed=dm.cfg.seed + 1)))
    assert not torch.equal(first["index"], other["index"])
    val = [int(i) for b in dm.val_dataloader() for i in b["index"]]
    assert val == [c.index for c in dm.clips("val")]  # not shuffled


def test_balanced_batches_hold_as_many_clips_of_each_task(dm):
    batches = dm.balanced_batches(5, seed=3)
    assert len(batches) == 5
    train = {c.index: c for c in dm.clips("train")}
    for batch in batches:
        tasks = batch["task"].tolist()
        assert tasks == [0, 0, 1, 1]  # batch_size // 2 clips of each task, speech first
        assert len(set(batch["index"].tolist())) == 4  # no clip twice in a batch
        for row, i in enumerate(batch["index"].tolist()):
            assert i in train and train[i].task == tasks[row]
    same = dm.balanced_batches(5, seed=3)
    assert all(torch.equal(a["index"], b["index"]) for a, b in zip(batches, same))
    other = dm.balanced_batches(5, seed=4)
    assert any(not torch.equal(a["index"], b["index"]) for a, b in zip(batches, other))
    big = D.AudioDataModule(_cfg(batch_size=64))
    counts = [len(big.clips("train", [t])) for t in ("speech", "music")]
    assert big.balanced_batches(1, seed=0)[0]["task"].tolist() == [0] * min(counts) + [1] * min(counts)


# --- the codec cache ------------------------------------------------------------------------------------------------


def _codec_file(home):
    [path] = (home / "audio").glob("codec-*.safetensors")
    return path


def test_fit_codec_reads_its_cache_without_fitting(home, dm, monkeypatch):
    monkeypatch.setattr(Codec, "fit", lambda *a, **k: pytest.fail("refitted although the codec is cached"))
    codec = D.fit_codec(dm.data.corpus, N_SPEECH, N_MUSIC)
    assert torch.equal(codec.vq.codebooks, dm.codec.vq.codebooks)
    assert bool(codec.vq.fitted)


@pytest.mark.parametrize("content", [
    pytest.param(save({"codebooks": torch.zeros(2, 3)}), id="wrong-tensors"),
    pytest.param(b"not a safetensors file", id="not-safetensors"),
])
def test_fit_codec_refits_a_corrupt_cache(home, dm, tmp_path, monkeypatch, caplog, content):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    (tmp_path / "audio").mkdir()
    path = tmp_path / "audio" / _codec_file(home).name  # the same cache key, in a private home
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger=D.__name__):
        codec = D.fit_codec(dm.data.corpus, N_SPEECH, N_MUSIC)
    assert "unreadable" in caplog.text
    assert torch.equal(codec.vq.codebooks, dm.codec.vq.codebooks)  # the fit is deterministic in the corpus seed
    assert path.read_bytes() == _codec_file(home).read_bytes()  # and the cache is rewritten whole


# --- model info -----------------------------------------------------------------------------------------------------


def test_model_info_rebuilds_a_module_with_the_same_codec(dm):
    cfg = dm.cfg
    info = D.model_info(cfg, dm)
    assert set(info) == {"codebooks", "tasks"} and info["tasks"] == ["speech", "music"]
    assert info["codebooks"].shape == (NUM_CODEBOOKS, CODEBOOK_SIZE, N_MELS)
    assert torch.equal(info["codebooks"], dm.codec.vq.codebooks)
    assert info["codebooks"].data_ptr() != dm.codec.vq.codebooks.data_ptr()  # a copy, not the live buffer
    module = build_module(cfg, info)
    wave = dm.data.corpus.waves[0]
    assert torch.equal(module.codec.tokens(wave), dm.codec.tokens(wave))
    fresh = build_module(cfg, info)
    assert set(fresh.model.state_dict()) == set(module.model.state_dict())
    assert D.model_info(_cfg(tasks=["music"]), dm)["tasks"] == ["music"]

