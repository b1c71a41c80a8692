"""Video anomaly networks: every row runs forward, backward and its objective on odd, tiny and single-video
batches; padding never changes the scores of real snippets; experts come from a ``zoo.moe.ModuleExperts`` bank
and match a per-expert loop; a masked expert scores 0 and leaves the fusion; each expert learns only from its
own class and normal videos, and the backbone only from its stage-1 loss; the gate's output is a mix of the
expert scores, so masking an expert lowers it; centring removes a per-video offset."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.errors import ZooValueError
from zoo.moe import ModuleExperts, count_params
from zoo.tasks.video_anomaly.batch import VADBatch
from zoo.tasks.video_anomaly.config import ARCHS, ModelConfig
from zoo.tasks.video_anomaly.losses import objective
from zoo.tasks.video_anomaly.models import (
    VADOutput,
    build_network,
    center_videos,
    temporal_windows,
    uses_gate,
)

D, E = 6, 3
SMALL = {"hidden": 8, "expert_hidden": 4, "heads": 2, "memory_slots": 4, "dropout": 0.1}
ROWS = [(arch, "mean" if arch == "experts" else "gate") for arch in ARCHS] + [("experts", "gate")]




def _model(arch: str, fusion: str = "gate", **kw) -> ModelConfig:
    return ModelConfig(arch=arch, fusion=fusion, **{**SMALL, **kw})


def _net(model: ModelConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(model, D, E)


def _batch(lengths: list[int], labels: list[int], experts: list[int], seed: int = 0) -> VADBatch:
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    x = torch.randn(len(lengths), T, D, generator=g)
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    x = x * mask[..., None]
    return VADBatch(x, mask, torch.tensor(labels, dtype=torch.float32), torch.tensor(experts))


BATCHES = {
    "odd_and_k_above_1": ([37, 20, 33, 5], [0, 1, 1, 0], [-1, 0, 2, -1]),  # k = 3, 2, 3, 1
    "shorter_than_the_window": ([3, 1, 2], [1, 0, 1], [1, -1, 2]),
    "one_abnormal_video": ([7], [1], [1]),
    "one_normal_video": ([9], [0], [-1]),
}


@pytest.mark.parametrize("arch, fusion", ROWS)
@pytest.mark.parametrize("name", list(BATCHES))
def test_forward_backward_objective(arch, fusion, name):
    model = _model(arch, fusion, mil_only_epochs=0)
    net = _net(model)
    batch = _batch(*BATCHES[name])
    B, T = batch.mask.shape
    out = net(batch.x, batch.mask)
    assert isinstance(out, VADOutput) and out.scores.shape == (B, T)
    real = out.scores[batch.mask]
    assert bool(torch.isfinite(out.scores).all()) and bool(((real > 0) & (real < 1)).all())
    if arch in ("experts", "gsmoe"):
        assert out.expert_scores.shape == (B, T, E)
    else:
        assert out.expert_scores is None
    if arch not in ("sultani", "rtfm"):
        assert out.coarse.shape == (B, T) and bool(torch.isfinite(out.coarse).all())
    loss, parts = objective(model, out, batch, epoch=1)
    assert loss.dim() == 0 and math.isfinite(float(loss.detach()))
    assert all(v.dim() == 0 and math.isfinite(float(v.detach())) for v in parts.values())
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("arch, fusion", ROWS)
def test_padding_never_changes_real_snippets(arch, fusion):
    model = _model(arch, fusion)
    net = _net(model).eval()
    g = torch.Generator().manual_seed(1)
    lengths = [11, 4, 1]
    videos = [torch.randn(n, D, generator=g) for n in lengths]
    with torch.no_grad():
        alone = [net(v[None], torch.ones(1, len(v), dtype=torch.bool)) for v in videos]
        T = 19
        x = 50 * torch.randn(len(videos), T, D, generator=g)  # garbage past the ends must not matter either
        mask = torch.zeros(len(videos), T, dtype=torch.bool)
        for i, v in enumerate(videos):
            x[i, :len(v)], mask[i, :len(v)] = v, True
        padded = net(x, mask)
    for i, (v, one) in enumerate(zip(videos, alone)):
        n = len(v)
        torch.testing.assert_close(padded.scores[i, :n], one.scores[0], rtol=1e-4, atol=1e-5)
        assert bool(torch.isfinite(padded.scores[i]).all())
        for field in ("coarse", "expert_scores"):
            if getattr(one, field) is not None:
                torch.testing.assert_close(getattr(padded, field)[i, :n], getattr(one, field)[0], rtol=1e-4, atol=1e-5)
        for key, value in one.extras.items():
            if key != "expert_keep":
                torch.testing.assert_close(padded.extras[key][i, :n], value[0], rtol=1e-4, atol=1e-5)
        if padded.expert_scores is not None:
            assert bool((padded.expert_scores[i, n:] == 0).all())  # padded snippets are never dispatched


def test_temporal_windows_match_a_loop():
    h = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    got = temporal_windows(h, mask)
    for b in range(2):
        for t in range(5):
            parts = [h[b, u] if 0 <= u < 5 and mask[b, u] else torch.zeros(3) for u in range(t - 2, t + 3)]
            torch.testing.assert_close(got[b, t], torch.cat(parts))


@pytest.mark.parametrize("fusion", ["mean", "gate"])
def test_experts_are_a_module_experts_bank_matching_a_per_expert_loop(fusion):
    net = _net(_model("experts", fusion)).eval()
    assert isinstance(net.experts, ModuleExperts) and net.experts.num_experts == E
    batch = _batch(*BATCHES["odd_and_k_above_1"])
    with torch.no_grad():
        out = net(batch.x, batch.mask)
        windows = temporal_windows(out.extras["embedding"], batch.mask)
        for c, expert in enumerate(net.experts.experts):
            want = expert(windows).squeeze(-1)
            torch.testing.assert_close(out.expert_scores[..., c][batch.mask], want[batch.mask])
    if fusion == "mean":
        torch.testing.assert_close(out.scores[batch.mask], out.expert_scores.mean(-1)[batch.mask])
    assert out.stats["experts"].tokens.tolist() == [int(batch.mask.sum())] * E


@pytest.mark.parametrize("fusion", ["mean", "gate"])
def test_expert_mask_empties_the_slot_and_leaves_the_fusion(fusion):
    net = _net(_model("experts", fusion)).eval()
    batch = _batch(*BATCHES["odd_and_k_above_1"])
    keep = torch.tensor([True, False, True])
    with torch.no_grad():
        full = net(batch.x, batch.mask)
        masked = net(batch.x, batch.mask, keep)
        real = batch.mask
        assert bool((masked.expert_scores[..., 1] == 0).all())
        torch.testing.assert_close(masked.expert_scores[..., [0, 2]][real], full.expert_scores[..., [0, 2]][real])
        torch.testing.assert_close(masked.coarse, full.coarse)
        if fusion == "mean":
            want = full.expert_scores[..., [0, 2]].mean(-1)
        else:
            zeroed = full.expert_scores.clone()
            zeroed[..., 1] = 0
            want = net.gate(zeroed, full.extras["embedding"], batch.mask)
        torch.testing.assert_close(masked.scores[real], want[real])
        assert not torch.allclose(masked.scores[real], full.scores[real])
    assert masked.stats["experts"].tokens.tolist() == [int(real.sum()), 0, int(real.sum())]
    assert float(masked.stats["experts"].active_experts) == 2.0


def test_expert_mask_is_checked():
    net = _net(_model("experts", "mean"))
    batch = _batch(*BATCHES["one_normal_video"])
    with pytest.raises(ZooValueError, match="expert_mask"):
        net(batch.x, batch.mask, torch.tensor([True, False]))
    with pytest.raises(ZooValueError, match="expert_mask"):
        net(batch.x, batch.mask, torch.zeros(E, dtype=torch.bool))
    gated = _net(_model("gsmoe"))
    assert gated(batch.x, batch.mask, torch.zeros(E, dtype=torch.bool)).scores.shape == (1, 9)


def _grads(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("arch, fusion", [("experts", "mean"), ("experts", "gate"), ("gsmoe", "gate")])
def test_an_expert_learns_only_from_its_class_and_normal_videos(arch, fusion):
    model = _model(arch, fusion, dropout=0.0, mil_only_epochs=0)
    net = _net(model)
    abnormal_only = _batch([12, 9, 20], [1, 1, 1], [1, 2, 1])  # no normal video, no video of expert 0
    objective(model, net(abnormal_only.x, abnormal_only.mask), abnormal_only, epoch=1)[0].backward()
    experts = net.experts.experts
    assert _grads(experts[0]) == 0 and _grads(experts[1]) > 0 and _grads(experts[2]) > 0
    net.zero_grad()
    with_normal = _batch([12, 9], [1, 0], [1, -1])
    objective(model, net(with_normal.x, with_normal.mask), with_normal, epoch=1)[0].backward()
    assert all(_grads(e) > 0 for e in experts)  # normal videos train every expert


@pytest.mark.parametrize("arch, fusion", [("dense", "gate"), ("experts", "mean"), ("gsmoe", "gate")])
def test_the_backbone_learns_from_its_stage_one_loss_only(arch, fusion):
    model = _model(arch, fusion, dropout=0.0, mil_only_epochs=0)
    batch = _batch(*BATCHES["odd_and_k_above_1"])
    net = _net(model)
    objective(model, net(batch.x, batch.mask), batch, epoch=1)[0].backward()
    full = [p.grad.clone() for p in net.backbone.parameters()]
    net.zero_grad()
    out = net(batch.x, batch.mask)
    stage_one = {k: v for k, v in objective(model, out, batch, epoch=1)[1].items()
                 if k in ("coarse_mil", "memory", "triplet")}
    torch.stack(list(stage_one.values())).sum().backward()
    for a, p in zip(full, net.backbone.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_dense_is_as_wide_as_all_experts_together():
    dense, experts = _net(_model("dense")), _net(_model("experts", "mean"))
    assert dense.scorer[0].out_features == E * SMALL["expert_hidden"]
    assert count_params(dense)[0] == count_params(experts)[0] - (E - 1)  # the experts' E output biases vs one


def test_uses_gate_and_build_errors():
    assert uses_gate(ModelConfig(arch="gsmoe", fusion="mean"))
    assert uses_gate(ModelConfig(arch="experts", fusion="gate"))
    assert not uses_gate(ModelConfig(arch="experts", fusion="mean"))
    assert not uses_gate(ModelConfig(arch="dense", fusion="gate"))
    with pytest.raises(ZooValueError, match="num_experts"):
        build_network(ModelConfig(arch="gsmoe"), D, 0)
    with pytest.raises(ZooValueError, match="dim"):
        build_network(ModelConfig(arch="sultani"), 0, E)
    with pytest.raises(ZooValueError, match="memory_slots"):
        ModelConfig(memory_slots=0)
    assert build_network(ModelConfig(arch="rtfm"), D, 0) is not None  # E is not read by the baselines


def test_the_gate_mixes_the_expert_scores():
    """``1 − Π (1 − g_e S_e)`` with g in (0, 1): all experts at s bound the output to ``[0, 1 − (1 − s)^E]``, so
    masking every expert leaves 0; at the zero-initialised last layer (g = 1/2) it is exactly
    ``1 − (1 − s/2)^E``."""
    net = _net(_model("gsmoe")).eval()
    batch = _batch(*BATCHES["odd_and_k_above_1"])
    with torch.no_grad():
        h = net(batch.x, batch.mask).extras["embedding"]
        for s in (0.0, 0.3, 0.95):
            got = net.gate(torch.full((*batch.mask.shape, E), s), h, batch.mask)[batch.mask]
            torch.testing.assert_close(got, torch.full_like(got, 1 - (1 - s / 2) ** E))
        torch.nn.init.normal_(net.gate.head[-1].weight)
        for s in (0.0, 0.3, 0.95):
            got = net.gate(torch.full((*batch.mask.shape, E), s), h, batch.mask)[batch.mask]
            assert bool((got >= 0).all()) and bool((got <= 1 - (1 - s) ** E + 1e-6).all())
        strong = torch.full((*batch.mask.shape, E), 0.05)
        strong[..., 1] = 0.95
        full = net.gate(strong, h, batch.mask)[batch.mask]
        masked = strong.clone()
        masked[..., 1] = 0
        assert bool((net.gate(masked, h, batch.mask)[batch.mask] < full).all())  # masking the firing expert lowers it


def test_gated_scores_follow_a_masked_expert():
    net = _net(_model("gsmoe")).eval()
    batch = _batch(*BATCHES["odd_and_k_above_1"])
    with torch.no_grad():
        full = net(batch.x, batch.mask)
        for c in range(E):
            keep = torch.ones(E, dtype=torch.bool)
            keep[c] = False
            drop = (full.scores - net(batch.x, batch.mask, keep).scores)[batch.mask]
            assert float(drop.mean()) > 0.02  # an untrained gate weighs every expert: each one counts


@pytest.mark.parametrize("arch", ARCHS)
def test_centring_removes_a_per_video_offset(arch):
    batch = _batch(*BATCHES["odd_and_k_above_1"])
    offset = 3 * torch.randn(len(batch.mask), 1, D) * batch.mask[..., None]
    for center in (True, False):
        net = _net(_model(arch, center=center)).eval()
        with torch.no_grad():
            a, b = net(batch.x, batch.mask).scores, net(batch.x + offset, batch.mask).scores
        same = torch.allclose(a[batch.mask], b[batch.mask], atol=1e-5)
        assert same == center


def test_center_videos_by_hand():
    x = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [9.0, 0.0], [7.0, 7.0]], [[4.0, 4.0], [5.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    want = torch.tensor([[[-2.0, 0.0], [0.0, 4.0], [6.0, -2.0], [0.0, 0.0]],  # medians (3, 2)
                         [[0.0, 3.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])  # lower medians of two: (4, 1)
    torch.testing.assert_close(center_videos(x, mask), want)
