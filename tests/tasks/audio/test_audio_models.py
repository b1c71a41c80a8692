"""Tests of the audio token decoder: causality, KV-cache generation against full recompute, shapes, training of
the dense and MoE FFNs, the UniMoE null/shared configuration and the routing counters."""

import pytest
import torch

from zoo.errors import ZooValueError
from zoo.moe import total_aux_loss
from zoo.tasks.audio.codec import BOS, EOS, PAD, VOCAB
from zoo.tasks.audio.models import TokenDecoder, active_experts, mean_active_experts, null_rate, unimoe_config

torch.set_num_threads(1)


def _model(ffn: str = "dense", **kw) -> TokenDecoder:
    torch.manual_seed(0)
    return TokenDecoder(text_vocab=32, d_model=32, layers=2, heads=4, ffn=ffn, dense_hidden=64, max_len=64,
                        moe=unimoe_config(d_hidden=16) if ffn == "moe" else None, **kw).eval()


def _batch(B: int = 2, L: int = 5, T: int = 7):
    g = torch.Generator().manual_seed(1)
    text = torch.randint(0, 32, (B, L), generator=g)
    audio = torch.randint(0, 256, (B, T, 4), generator=g)
    audio[:, 0] = BOS
    return text, audio


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_shapes_and_causality(ffn):
    model = _model(ffn)
    text, audio = _batch()
    out = model(text, 1, audio)
    assert out.pred.shape == (2, 7, 4, VOCAB)
    changed = audio.clone()
    changed[:, 5] = 3
    out2 = model(text, 1, changed)
    torch.testing.assert_close(out2.pred[:, :5], out.pred[:, :5], atol=1e-6, rtol=0)
    assert not torch.allclose(out2.pred[:, 5:], out.pred[:, 5:])
    if ffn == "moe":
        assert set(out.stats) == {"block0", "block1"}
        assert torch.isfinite(total_aux_loss(out.aux))
        assert 0 <= float(out.extras["block0/null_rate"]) <= 1
        assert 0 <= mean_active_experts(out.stats) <= 8


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_cache_matches_recompute(ffn):
    model = _model(ffn)
    text, _ = _batch()
    a = model.generate(text, 0, 12, temperature=1.0, top_k=50, seed=3, return_logits=True)
    b = model.generate(text, 0, 12, temperature=1.0, top_k=50, seed=3, use_cache=False, return_logits=True)
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=0)
    # the logits of each step are those of a teacher-forced pass over the sampled frames
    frames = torch.cat([torch.full((2, 1, 4), BOS), a.tokens], 1)
    torch.testing.assert_close(model(text, 0, frames[:, :-1]).pred, a.logits, atol=1e-5, rtol=0)
    assert a.tokens.shape == (2, 12, 4)
    for q in range(1, 4):  # delay pattern: codebook q is BOS for its first q steps
        assert bool((a.tokens[:, :q, q] == BOS).all())
        assert not bool((a.tokens[:, q:, q] == BOS).all())


def test_eos_ends_rows():
    model = _model()
    with torch.no_grad():
        model.head.bias.view(4, VOCAB)[0, EOS] = 100.0  # codebook 0 says EOS at once
    text, _ = _batch()
    out = model.generate(text, 0, 20, seed=0)
    assert out.tokens.shape[1] == 4  # EOS at step 0, then Q - 1 steps to close the delayed codebooks
    assert out.tokens[:, :, 0].tolist() == [[EOS, PAD, PAD, PAD]] * 2
    assert out.tokens[:, 3, 3].tolist() == [EOS, EOS] and out.tokens[:, 1, 1].tolist() == [EOS, EOS]


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_training_reduces_loss(ffn):
    model = _model(ffn).train()
    text, audio = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        out = model(text, 2, audio[:, :-1])
        loss = torch.nn.functional.cross_entropy(out.pred.flatten(0, 2), audio[:, 1:].flatten())
        aux = total_aux_loss(out.aux)
        opt.zero_grad()
        (loss + (aux if aux is not None else 0)).backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_unimoe_layer_has_null_and_shared():
    layer = _model("moe").blocks[0].ffn
    assert layer.special.counts["null"] == 1 and layer.shared is not None and layer.router.p == 0.7
    assert layer.router.num_experts == 9


def test_counters_on_hand_made_routing():
    ids = torch.tensor([[0, 3, -1], [8, -1, -1], [2, 8, 5], [1, -1, -1]])  # 8 routed experts, id 8 = null
    assert float(active_experts(ids, 8)) == pytest.approx((2 + 0 + 2 + 1) / 4)
    assert float(null_rate(ids, 8, 1)) == pytest.approx(2 / 4)


def test_bad_arguments():
    with pytest.raises(ZooValueError, match="ffn"):
        TokenDecoder(ffn="sparse")
    model = _model()
    text, _ = _batch()
    with pytest.raises(ZooValueError, match="temperature"):
        model.generate(text, 0, 3, temperature=0)
    with pytest.raises(ZooValueError, match="max_len"):
        model(text, 0, torch.full((2, 70, 4), BOS))
