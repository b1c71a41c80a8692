"""The probe networks of the audio task's metrics: CTC greedy decoding on hand-made scores, the recogniser and the
music classifier overfitting a few clips of the task's own synthetic audio, output shapes, seeded determinism and
state-dict round trips."""

import numpy as np
import pytest
import torch

from zoo.errors import ZooValueError
from zoo.tasks.audio import music, speech
from zoo.tasks.audio.codec import HOP
from zoo.tasks.audio.metrics import cer
from zoo.tasks.audio.probes import (
    ALPHABET,
    ATTRIBUTE_VALUES,
    BLANK,
    CTCRecognizer,
    MusicClassifier,
    attribute_accuracy,
    embed,
    greedy_decode,
    normalize_text,
    predict_attributes,
    train_music_classifier,
    train_recognizer,
    transcribe,
)


@pytest.fixture(scope="module")
def utterances():
    pytest.importorskip("espeakng_loader")
    return [speech.utterance(0, i)[::2] for i in range(3)]  # (text, waveform)


@pytest.fixture(scope="module")
def clips():
    pytest.importorskip("pretty_midi")
    pytest.importorskip("midirenderer")
    params = [music.music_params(0, i) for i in range(4)]
    return [music.render(music.make_midi(p, 3.0)) for p in params], [music.attributes(p) for p in params]


def _scores(symbols: str) -> torch.Tensor:
    """One-hot log-scores ``[frames, V]`` of a frame string where ``_`` is the blank."""
    ids = [BLANK if c == "_" else ALPHABET.index(c) + 1 for c in symbols]
    return torch.nn.functional.one_hot(torch.tensor(ids, dtype=torch.long), len(ALPHABET) + 1).float().log_softmax(-1)


def test_greedy_decode_merges_repeats_then_drops_blanks():
    rows = ["hh_e_ll_llo__", "__aa_a", "____", "xxyy"]
    frames = max(map(len, rows))
    scores = torch.stack([torch.cat([_scores(r), _scores("_" * (frames - len(r)))]) for r in rows])
    lengths = torch.tensor([13, 6, 4, 3])  # the last row stops before its second y
    assert greedy_decode(scores, lengths) == ["hello", "aa", "", "xy"]


def test_greedy_decode_ignores_frames_past_the_length():
    scores = _scores("ab_c")[None]
    assert greedy_decode(scores, torch.tensor([2])) == ["ab"]
    with pytest.raises(ZooValueError):
        greedy_decode(scores[..., :-1], torch.tensor([2]))


def test_alphabet_and_text_normalisation():
    assert ALPHABET == "".join(sorted({c.lower() for c in speech.ALLOWED_CHARS}))
    assert normalize_text("Who saw Anna's DOG?") == "who saw anna's dog?"
    assert normalize_text("naïve_x") == "nave" + "x"


def test_recogniser_shapes():
    model = CTCRecognizer()
    logmel = torch.randn(2, 9, 80)
    log_probs, lengths = model(logmel, torch.tensor([9, 4]))
    assert log_probs.shape == (2, 5, len(ALPHABET) + 1)
    assert lengths.tolist() == [5, 2]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 5))
    # padding does not change a clip's output
    alone, _ = model(logmel[1:, :4], torch.tensor([4]))
    assert torch.allclose(alone[0], log_probs[1, :2], atol=1e-5)


def test_recogniser_overfits_three_utterances(utterances):
    texts, waves = zip(*utterances)
    model = train_recognizer(waves, texts, seed=0, steps=150, batch_size=3)
    hyps = transcribe(model, waves)
    assert cer(hyps, [normalize_text(t) for t in texts]) < 0.03


def test_recogniser_training_is_seeded_and_state_dict_round_trips(utterances):
    texts, waves = zip(*utterances)
    a = train_recognizer(waves[:2], texts[:2], seed=1, steps=3)
    b = train_recognizer(waves[:2], texts[:2], seed=1, steps=3)
    c = train_recognizer(waves[:2], texts[:2], seed=2, steps=3)
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name
    assert not torch.equal(a.out.weight, c.out.weight)
    fresh = CTCRecognizer()
    fresh.load_state_dict(a.state_dict())
    assert transcribe(fresh, waves) == transcribe(a, waves)


def test_transcribe_batches_do_not_change_the_result(utterances):
    texts, waves = zip(*utterances)
    model = train_recognizer(waves, texts, seed=0, steps=2)
    assert transcribe(model, waves, batch_size=1) == transcribe(model, waves, batch_size=3)


@pytest.mark.parametrize(("waves", "texts"), [
    ([np.zeros(HOP - 1, np.float32)], ["a"]),
    ([np.zeros((2, 4000), np.float32)], ["a"]),
    ([np.zeros(4000, np.float32)], ["a", "b"]),
    ([np.zeros(4000, np.float32)], ["a_b"]),
    ([np.zeros(4000, np.float32)], [""]),
    ([], []),
])
def test_train_recognizer_refuses_bad_input(waves, texts):
    with pytest.raises(ZooValueError):
        train_recognizer(waves, texts, seed=0, steps=1)


def test_music_classifier_shapes():
    model = MusicClassifier().eval()
    logits = model(torch.randn(3, 120, 80), torch.tensor([120, 70, 120]))
    assert {k: tuple(v.shape) for k, v in logits.items()} == {k: (3, len(v)) for k, v in ATTRIBUTE_VALUES.items()}
    assert model.embed(torch.randn(3, 120, 80), torch.tensor([120, 70, 120])).shape == (3, 128)


def test_music_classifier_overfits_four_clips(clips):
    waves, attrs = clips
    model = train_music_classifier(waves, attrs, seed=0, steps=40, batch_size=4)
    assert predict_attributes(model, waves) == attrs
    assert attribute_accuracy(model, waves, attrs) == {**{k: 1.0 for k in ATTRIBUTE_VALUES}, "mean": 1.0}
    emb = embed(model, waves)
    assert emb.shape == (4, 128) and emb.dtype == torch.float32
    assert torch.allclose(embed(model, waves, batch_size=1), emb, atol=1e-5)


def test_music_training_is_seeded_and_state_dict_round_trips(clips):
    waves, attrs = clips
    a = train_music_classifier(waves, attrs, seed=3, steps=3)
    b = train_music_classifier(waves, attrs, seed=3, steps=3)
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name
    fresh = MusicClassifier()
    fresh.load_state_dict(a.state_dict())
    assert torch.equal(embed(fresh, waves), embed(a, waves))


def test_train_music_classifier_refuses_bad_labels(clips):
    waves, attrs = clips
    with pytest.raises(ZooValueError):
        train_music_classifier(waves, [{**attrs[0], "tempo": "glacial"}] + attrs[1:], seed=0, steps=1)
    with pytest.raises(ZooValueError):
        train_music_classifier(waves, attrs[:2], seed=0, steps=1)
    with pytest.raises(ZooValueError):
        train_music_classifier(waves, attrs, seed=-1, steps=1)
