"""Training the audio decoder (zoo.tasks.audio.module, .curriculum, .models, .generation): the loss against a plain
loop, right-padded text that changes no row's numbers (forward, greedy and cached generation), the special ids
sampling may not emit, the curriculum's cut of dense specialists into experts and its gate-only warm-up, the
annealed aux-loss weight and the per-task NLL of a real Lightning fit, and the config's refusals."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("espeakng_loader")
pytest.importorskip("torchaudio")
pytest.importorskip("pretty_midi")
pytest.importorskip("midirenderer")

from zoo.config import from_dict  # noqa: E402
from zoo.errors import ZooValueError  # noqa: E402
from zoo.moe import MoELayer  # noqa: E402
from zoo.moe.config import MoEConfig  # noqa: E402
from zoo.moe.layer import routers  # noqa: E402
from zoo.task import quiet_trainer  # noqa: E402
from zoo.tasks.audio import curriculum, generation  # noqa: E402
from zoo.tasks.audio import data as D  # noqa: E402
from zoo.tasks.audio.codec import BOS, CODEBOOK_SIZE, EOS, NUM_CODEBOOKS, PAD, VOCAB, Codec, delay  # noqa: E402
from zoo.tasks.audio.config import AudioConfig, DataConfig, ModelConfig, TrainConfig  # noqa: E402
from zoo.tasks.audio.evaluation import teacher_forced  # noqa: E402
from zoo.tasks.audio.module import (  # noqa: E402
    AudioModule,
    build_decoder,
    run_decoder,
    sequence_loss,
    token_losses,
)

SEED, N_SPEECH, N_MUSIC = 13, 24, 10
Q = NUM_CODEBOOKS


def _cfg(ffn: str = "moe", layers: int = 1, curriculum: bool = False, **train) -> AudioConfig:
    """A tiny config: 2 tasks, 2 experts per task, UniMoE-style top-p with a null and a shared expert."""
    return AudioConfig(data=DataConfig(num_speech=N_SPEECH, num_music=N_MUSIC, val_clips=2, seed=SEED),
                       model=ModelConfig(d_model=32, layers=layers, heads=2, ffn=ffn, dense_hidden=32, max_len=384),
                       moe=MoEConfig(num_experts=4, k=1, d_hidden=16, router="top_p",
                                     router_kwargs={"p": 0.7, "jitter": 0.01}, num_null=1, num_shared=1,
                                     shared_routed=True),
                       train=TrainConfig(batch_size=4, curriculum=curriculum, experts_per_task=2, **train))


def _decoder(ffn: str, layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return build_decoder(_cfg(ffn, layers)).eval()


def _clip(T: int, text: str, task: int, seed: int) -> D.Clip:
    codes = torch.randint(0, CODEBOOK_SIZE, (T, Q), generator=torch.Generator().manual_seed(seed))
    return D.Clip(task, D.encode_text(text), D.sequence(codes), seed)


def _batch(seed: int = 0, tasks=(0, 1, 0)) -> dict[str, torch.Tensor]:
    texts = ["hi", "a slow calm piano melody", "one two three"]
    return D.collate([_clip(5 + 3 * i, texts[i % 3], t, seed * 10 + i) for i, t in enumerate(tasks)])


# --- the loss ------------------------------------------------------------------------------------------------------


def test_token_losses_equal_a_plain_loop():
    batch = _batch()
    pred = torch.randn(*batch["target"].shape, VOCAB, generator=torch.Generator().manual_seed(0))
    ce, mask = token_losses(pred, batch["target"])
    total, count = 0.0, 0
    B, T, _ = batch["target"].shape
    for b in range(B):
        for t in range(T):
            for q in range(Q):
                y = int(batch["target"][b, t, q])
                if y in (PAD, BOS):
                    assert not mask[b, t, q] and ce[b, t, q] == 0
                    continue
                want = F.cross_entropy(pred[b, t, q][None], torch.tensor([y]))
                assert mask[b, t, q] and math.isclose(float(ce[b, t, q]), float(want), rel_tol=1e-5)
                total, count = total + float(want), count + 1
    assert count == int(mask.sum()) == sum((5 + 3 * i + 1) * Q for i in range(3))
    model = _decoder("moe", layers=1).train()
    torch.manual_seed(1)
    loss = sequence_loss(model, batch)
    torch.manual_seed(1)  # the same router jitter
    out = run_decoder(model, batch)
    ce, mask = token_losses(out.pred, batch["target"])
    want = ce.sum() / mask.sum() + sum(out.aux.values())
    assert out.aux and math.isclose(float(loss.detach()), float(want.detach()), rel_tol=1e-6)


# --- right padding changes nothing ---------------------------------------------------------------------------------


def _padded_pair():
    """Row 0 alone, and row 0 right-padded next to a longer text (its audio right-padded too)."""
    short, long = D.encode_text("hello"), D.encode_text("a much longer sentence than the first")
    g = torch.Generator().manual_seed(3)
    audio = torch.randint(0, CODEBOOK_SIZE, (2, 9, Q), generator=g)
    audio[:, 0] = BOS
    text = torch.zeros(2, len(long), dtype=torch.long)
    text[0, : len(short)], text[1] = short, long
    audio[0, 7:] = PAD
    return short[None], text, torch.tensor([len(short), len(long)]), audio


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_forward_of_a_row_does_not_depend_on_its_batch(ffn):
    model = _decoder(ffn)
    alone_text, text, lengths, audio = _padded_pair()
    alone = model(alone_text, 1, audio[:1, :7]).pred[0]
    padded = model(text, torch.tensor([1, 0]), audio, lengths).pred[0, :7]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)
    # the text_lengths mask matters: read without it, the padding characters change the row
    unmasked = model(text, torch.tensor([1, 0]), audio).pred[0, :7]
    assert (unmasked - alone).abs().max() > 1e-3


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_greedy_generation_of_a_row_does_not_depend_on_its_batch(ffn):
    model = _decoder(ffn)
    alone_text, text, lengths, _ = _padded_pair()
    alone = model.generate(alone_text, 1, 12, top_k=1, return_logits=True)
    batched = model.generate(text, torch.tensor([1, 0]), 12, top_k=1, return_logits=True, text_lengths=lengths)
    n = alone.tokens.shape[1]
    assert torch.equal(batched.tokens[0, :n], alone.tokens[0])
    torch.testing.assert_close(batched.logits[0, :n], alone.logits[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_cached_generation_equals_recompute_with_padded_text(ffn):
    model = _decoder(ffn)
    _, text, lengths, _ = _padded_pair()
    kw = {"top_k": 1, "return_logits": True, "text_lengths": lengths}
    cached = model.generate(text, torch.tensor([1, 0]), 10, use_cache=True, **kw)
    recomputed = model.generate(text, torch.tensor([1, 0]), 10, use_cache=False, **kw)
    assert torch.equal(cached.tokens, recomputed.tokens)
    torch.testing.assert_close(cached.logits, recomputed.logits, atol=1e-5, rtol=0)


def test_generation_module_pads_texts_without_changing_the_clips():
    model = _decoder("moe")
    codec = Codec()
    codec.vq.codebooks.copy_(torch.randn(Q, CODEBOOK_SIZE, 80, generator=torch.Generator().manual_seed(0)))
    codec.vq.fitted.fill_(True)
    texts = ["hi", "a much longer sentence than the first", "three"]
    together = generation.generate(model, codec, texts, "speech", top_k=1, max_frames=8, batch_size=3)
    one_by_one = [generation.generate(model, codec, [t], "speech", top_k=1, max_frames=8) for t in texts]
    assert len(together.waves) == len(together.codes) == len(together.ended) == 3
    for i, single in enumerate(one_by_one):
        assert torch.equal(together.codes[i], single.codes[0]) and together.ended[i] == single.ended[0]
    with pytest.raises(ZooValueError, match="task"):
        generation.generate(model, codec, texts, "video")


def test_codes_of_undoes_the_delay_and_cuts_at_eos():
    codes = torch.randint(0, CODEBOOK_SIZE, (6, Q), generator=torch.Generator().manual_seed(0))
    ended = delay(torch.cat([codes, torch.full((1, Q), EOS)]))
    got, done = generation.codes_of(ended)
    assert torch.equal(got, codes) and done
    got, done = generation.codes_of(delay(codes)[:-1])  # cut by the frame limit: no EOS, the last frame incomplete
    assert torch.equal(got, codes[:-1]) and not done


def test_sampling_never_emits_padding_bos_or_a_late_eos():
    """The head prefers PAD, BOS and EOS everywhere; only codes may still be sampled (EOS on codebook 0), and every
    other special id sits exactly where the delay pattern puts it."""
    model = _decoder("dense")
    with torch.no_grad():
        bias = model.head.bias.view(Q, VOCAB)
        bias[:, PAD] += 30
        bias[:, BOS] += 30
        bias[1:, EOS] += 30
        bias[0, EOS] += 2.5  # rows end, at different steps
    text = torch.randint(1, D.TEXT_VOCAB, (16, 6), generator=torch.Generator().manual_seed(0))
    tokens = model.generate(text, 0, 30, temperature=1.0, seed=4).tokens
    ends = []
    for row in tokens:
        eos = (row[:, 0] == EOS).nonzero()
        e = int(eos[0]) if len(eos) else None
        ends.append(e)
        for s in range(row.shape[0]):
            for q in range(Q):
                tok = int(row[s, q])
                if s < q:
                    assert tok == BOS
                elif e is None or s < e + q:
                    assert tok < CODEBOOK_SIZE, (s, q, tok)
                elif s == e + q:
                    assert tok == EOS
                else:
                    assert tok == PAD
    ended = [e for e in ends if e is not None]
    assert ended  # EOS on codebook 0 may be sampled
    if len(ended) == len(ends):  # sampling stops once the last row's delayed EOS is out
        assert tokens.shape[1] == min(30, max(ended) + Q)


# --- the curriculum: specialists cut into experts ------------------------------------------------------------------


def _specialists(cfg: AudioConfig, seeds=(1, 2)):
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(build_decoder(cfg, "dense", cfg.train.experts_per_task * cfg.moe.d_hidden).eval())
    return out


def test_split_into_cuts_each_specialist_into_its_experts():
    cfg = _cfg(layers=2, curriculum=True)
    torch.manual_seed(0)
    moe = build_decoder(cfg).eval()
    gates = {n: p.detach().clone() for n, p in moe.named_parameters() if ".router." in n}
    specialists = _specialists(cfg)
    curriculum.split_into(moe, specialists, 2)
    x = torch.randn(7, 32, generator=torch.Generator().manual_seed(5))
    for i, block in enumerate(moe.blocks):
        layer = block.ffn
        assert isinstance(layer, MoELayer)
        for t, specialist in enumerate(specialists):
            ids = torch.tensor([[2 * t, 2 * t + 1]]).expand(7, 2)
            got = layer.experts(x, ids, torch.ones(7, 2))
            torch.testing.assert_close(got, specialist.blocks[i].ffn(x), atol=1e-5, rtol=1e-5)
            by_hand = sum(F.gelu(x @ layer.experts.w1[e]) @ layer.experts.w2[e] for e in (2 * t, 2 * t + 1))
            torch.testing.assert_close(by_hand, specialist.blocks[i].ffn(x), atol=1e-5, rtol=1e-5)
        assert torch.equal(layer.shared(x), torch.zeros(7, 32))
        assert torch.equal(layer.shared(x, torch.rand(7, 1)), torch.zeros(7, 32))
    states = [s.state_dict() for s in specialists]
    for name, value in moe.state_dict().items():
        if ".ffn." in name:
            continue
        torch.testing.assert_close(value, (states[0][name] + states[1][name]) / 2, atol=1e-6, rtol=0)
    for name, value in moe.named_parameters():
        if ".router." in name:
            assert torch.equal(value, gates[name])  # gates as initialised


def test_gate_parameters_are_the_routers_and_shared_experts():
    moe = build_decoder(_cfg(layers=2))
    want = set()
    for block in moe.blocks:
        want |= {id(block.ffn.router.gate.weight), id(block.ffn.router.shared_gate.weight),
                 id(block.ffn.shared.w1), id(block.ffn.shared.w2)}
    got = curriculum.gate_parameters(moe)
    assert len(got) == len(want) == 8 and {id(p) for p in got} == want
    no_shared = _cfg(layers=2)
    no_shared.moe = MoEConfig(num_experts=4, k=2, d_hidden=16)
    moe = build_decoder(no_shared)
    assert {id(p) for p in curriculum.gate_parameters(moe)} == {id(b.ffn.router.gate.weight) for b in moe.blocks}


def _stage_inputs(cfg: AudioConfig):
    speech = [D.collate([_clip(6, "one two", 0, 100 + 2 * i), _clip(4, "three", 0, 101 + 2 * i)]) for i in range(3)]
    music = [D.collate([_clip(5, "a calm piano", 1, 200 + 2 * i), _clip(7, "fast drums", 1, 201 + 2 * i)])
             for i in range(3)]
    warm = [D.collate([_clip(6, "one two", 0, 300 + i), _clip(5, "a calm piano", 1, 400 + i)]) for i in range(3)]
    return [lambda: speech, lambda: music], warm


def test_run_stages_trains_only_gates_and_shared_experts_in_stage_two(monkeypatch):
    cfg = _cfg(curriculum=True)
    torch.manual_seed(0)
    moe = build_decoder(cfg)
    built, snapshots = [], {}
    original = curriculum.train_steps

    def build_dense():
        dense = build_decoder(cfg, "dense", 2 * cfg.moe.d_hidden)
        built.append((dense, {k: v.clone() for k, v in dense.state_dict().items()}))
        return dense

    def watched(model, params, batches, loss_of, lr, label):
        if label.startswith("stage 2"):
            snapshots["before"] = {n: p.detach().clone() for n, p in model.named_parameters()}
            snapshots["grad"] = {n for n, p in model.named_parameters() if p.requires_grad}
        losses = original(model, params, batches, loss_of, lr, label)
        if label.startswith("stage 2"):
            snapshots["after"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return losses

    monkeypatch.setattr(curriculum, "train_steps", watched)
    task_batches, warm = _stage_inputs(cfg)
    torch.manual_seed(7)
    curves = curriculum.run_stages(moe, build_dense, task_batches, warm, sequence_loss, 1e-2, 1e-2, 2)
    assert set(curves) == {"specialist0", "specialist1", "gates"}
    assert [len(curves[k]) for k in ("specialist0", "specialist1", "gates")] == [3, 3, 3]
    assert all(math.isfinite(v) for c in curves.values() for v in c)
    # the specialists start alike and are then trained apart
    (first, init0), (second, init1) = built
    assert all(torch.equal(init0[k], init1[k]) for k in init0)
    assert not torch.equal(first.blocks[0].ffn[0].weight, init0["blocks.0.ffn.0.weight"])
    assert not torch.equal(first.blocks[0].ffn[0].weight, second.blocks[0].ffn[0].weight)
    # stage 2 trains the gates and the shared experts only, with everything else frozen, and unfreezes afterwards
    trainable = {n for n, _ in moe.named_parameters() if ".router." in n or ".shared." in n}
    assert snapshots["grad"] == trainable
    before, after = snapshots["before"], snapshots["after"]
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed <= trainable
    assert any(".router." in n for n in changed) and any(".shared.w2" in n for n in changed)
    assert all(p.requires_grad and p.grad is None for p in moe.parameters())
    # so after both stages the frozen weights are still the cut and the mean of the trained specialists
    reference = build_decoder(cfg)
    curriculum.split_into(reference, [first, second], 2)
    for name, value in moe.state_dict().items():
        if name in trainable:
            continue
        torch.testing.assert_close(value, reference.state_dict()[name], atol=0, rtol=0)


def test_run_stages_without_warm_batches_leaves_the_gates():
    cfg = _cfg(curriculum=True)
    torch.manual_seed(0)
    moe = build_decoder(cfg)
    gates = {n: p.detach().clone() for n, p in moe.named_parameters() if ".router." in n}
    task_batches, _ = _stage_inputs(cfg)
    curves = curriculum.run_stages(moe, lambda: build_decoder(cfg, "dense", 32), task_batches, None, sequence_loss,
                                   1e-2, 1e-2, 2)
    assert set(curves) == {"specialist0", "specialist1"}
    assert all(torch.equal(p, gates[n]) for n, p in moe.named_parameters() if n in gates)
    assert all(torch.equal(b.ffn.shared.w2, torch.zeros_like(b.ffn.shared.w2)) for b in moe.blocks)


def test_train_steps_updates_only_the_given_parameters():
    model = _decoder("dense", layers=1).train()
    head = dict(model.head.named_parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = curriculum.train_steps(model, head.values(), [_batch(0), _batch(1)], sequence_loss, 1e-2, "test")
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != name.startswith("head.")


# --- Lightning fits on the tiny corpus -----------------------------------------------------------------------------


class _Coefs(L.Callback):
    """The routers' balance weight when training starts and after every optimizer step."""

    def __init__(self) -> None:
        self.start: list[float] = []
        self.after: list[tuple[int, list[float]]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = [r.balance_coef for r in routers(pl_module.model)]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append((trainer.global_step - 1, [r.balance_coef for r in routers(pl_module.model)]))


def _fit(cfg: AudioConfig, max_steps: int, callbacks=()):
    torch.manual_seed(cfg.seed)
    dm = D.AudioDataModule(cfg)
    module = AudioModule(build_decoder(cfg), dm.codec, cfg)
    trainer = quiet_trainer(max_steps=max_steps, limit_val_batches=0, num_sanity_val_steps=0,
                            callbacks=list(callbacks))
    trainer.fit(module, datamodule=dm)
    return trainer, module, dm


def test_aux_weight_anneals_linearly_over_the_fit(home):
    cfg = _cfg(layers=2, aux_start=0.05, aux_end=0.01)
    coefs = _Coefs()
    trainer, module, dm = _fit(cfg, 4, [coefs])
    assert coefs.start == [0.05, 0.05]
    assert [s for s, _ in coefs.after] == [0, 1, 2, 3]
    for step, values in coefs.after:  # set for the next step's loss; the last of the 4 steps uses aux_end
        want = 0.05 + (0.01 - 0.05) * min(1.0, (step + 1) / 3)
        assert values == pytest.approx([want, want], abs=1e-12)
    assert module.train_tokens_per_s > 0 and math.isfinite(module.train_tokens_per_s)
    assert module.spike_curve == [] and module.stage_curves == {}  # no curriculum
    # per-task NLL, weighted by scored tokens, in validation and test
    nll = {"speech": [0.0, 0], "music": [0.0, 0]}
    model = module.model.eval()
    with torch.no_grad():
        for batch in dm.val_dataloader():
            ce, mask = token_losses(run_decoder(model, batch).pred, batch["target"])
            for name, task in D.TASK_IDS.items():
                rows = batch["task"] == task
                nll[name][0] += float(ce[rows].sum())
                nll[name][1] += int(mask[rows].sum())
    [logged] = quiet_trainer().validate(module, datamodule=dm, verbose=False)
    for name, (total, count) in nll.items():
        assert logged[f"val/{name}_nll"] == pytest.approx(total / count, rel=1e-5)
    [tested] = quiet_trainer().test(module, datamodule=dm, verbose=False)
    reference = teacher_forced(module, dm)
    for name in ("speech", "music"):
        assert tested[f"test/{name}_nll"] == pytest.approx(reference[f"{name}_nll"], rel=1e-5)


@pytest.mark.parametrize("warm_gates, max_steps", [(True, 3), (False, 2)])
def test_curriculum_fit_records_stage_and_spike_curves(home, warm_gates, max_steps):
    cfg = _cfg(curriculum=True, specialist_steps=4, gate_steps=2, spike_steps=2, warm_gates=warm_gates)
    _, module, dm = _fit(cfg, max_steps)
    want = {"specialist0", "specialist1"} | ({"gates"} if warm_gates else set())
    assert set(module.stage_curves) == want
    # stage 1 repeats a task's clips as often as needed (music has fewer than 4 batches of them)
    assert len(dm.clips("train", ["music"])) < 4 * cfg.train.batch_size
    assert len(module.stage_curves["specialist0"]) == len(module.stage_curves["specialist1"]) == 4
    if warm_gates:
        assert len(module.stage_curves["gates"]) == 2
    assert len(module.spike_curve) == cfg.train.spike_steps + 1  # before the unfreeze, then one per joint step
    assert all(math.isfinite(v) and v > 0 for v in module.spike_curve)
    assert module.spike_curve[-1] != pytest.approx(module.spike_curve[0])  # the joint steps moved it
    if max_steps == cfg.train.spike_steps:  # the last point is the fixed validation batch's loss after the fit
        probe = next(iter(dm.val_dataloader()))
        with torch.no_grad():
            ce, mask = token_losses(run_decoder(module.model.eval(), probe).pred, probe["target"])
        assert module.spike_curve[-1] == pytest.approx(float(ce.sum() / mask.sum()), rel=1e-6)
    assert all(p.requires_grad for p in module.model.parameters())


# --- config validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data, words", [
    ({"model": {"ffn": "dense"}, "train": {"curriculum": True}}, "train.curriculum"),
    ({"moe": {"num_experts": 6}, "train": {"curriculum": True, "experts_per_task": 2}}, "moe.num_experts"),
    ({"data": {"tasks": ["speech"]}, "moe": {"num_experts": 4}, "train": {"curriculum": True, "experts_per_task": 2}},
     "moe.num_experts"),
    ({"data": {"tasks": ["speech", "speech"]}}, "data.tasks"),
    ({"data": {"tasks": ["video"]}}, "data.tasks"),
    ({"data": {"tasks": []}}, "data.tasks"),
    ({"data": {"num_music": 5}}, "data.num_music"),
    ({"train": {"batch_size": 1}}, "train.batch_size"),
    ({"model": {"d_model": 30, "heads": 4}}, "model.d_model"),
    ({"eval": {"music_clips": 1}}, "eval.music_clips"),
])
def test_config_refuses_bad_recipes_in_one_line(data, words):
    with pytest.raises(ZooValueError) as err:
        from_dict(AudioConfig, data)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_config_accepts_a_matching_curriculum():
    cfg = from_dict(AudioConfig, {"moe": {"num_experts": 4}, "train": {"curriculum": True, "experts_per_task": 2}})
    assert cfg.train.curriculum and cfg.moe.num_experts == 4
    one = from_dict(AudioConfig, {"data": {"tasks": ["music"]}, "moe": {"num_experts": 2},
                                  "train": {"curriculum": True, "experts_per_task": 2}})
    assert one.data.tasks == ["music"]
