"""The radiance fields: every field's routing checked against a per-point loop over its own parts, the Voronoi cells
against brute force, gradients to gates and experts, capacity drops in training only, parameter counts."""

from __future__ import annotations

import pytest
import torch

from zoo.moe import count_params
from zoo.tasks.nerf.config import ModelConfig
from zoo.tasks.nerf.models import (
    FrequencyEncoding,
    HashMoEField,
    RadianceField,
    SwitchField,
    VoronoiField,
    build_field,
    ground_grid,
)

BOX = [[-1.0, -1.0, 0.0], [1.0, 1.0, 1.0]]
HMOHE = [[4, 8], [4, 16], [8, 32], [16, 64]]


def small(**kw) -> ModelConfig:
    base = dict(width=16, depth=2, frequencies=3, levels=2, log2_table=10, resolution=[4, 16], gate_levels=2,
                gate_resolution=[4, 8], appearance_dim=4, color_width=8)
    return ModelConfig(**{**base, **kw})


def test_frequency_encoding_matches_its_formula():
    x = torch.tensor([[0.1, -0.2, 0.3]])
    enc = FrequencyEncoding(2)(x)
    expected = [0.1, -0.2, 0.3]
    angles = [a for v in (0.1, -0.2, 0.3) for a in (v * torch.pi, v * 2 * torch.pi)]
    expected += [float(torch.sin(torch.tensor(a))) for a in angles] + [float(torch.cos(torch.tensor(a))) for a in angles]
    torch.testing.assert_close(enc[0], torch.tensor(expected))


def test_ground_grid_is_as_square_as_possible():
    torch.testing.assert_close(ground_grid(4), torch.tensor([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]))
    assert ground_grid(6).shape == (6, 2) and ground_grid(5).shape == (5, 2)


@pytest.mark.parametrize("name", ["mlp", "hash", "voronoi", "switch", "hash_moe"])
def test_every_field_gives_features_and_gradients(name):
    torch.manual_seed(0)
    field = build_field(small(field=name))
    x = torch.rand(50, 3) * 2 - 1
    out = field(x)
    assert out.features.shape == (50, 16)
    (out.features.sum() + sum(out.aux.values(), torch.zeros(()))).backward()
    grads = [p.grad for p in field.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if name in ("mlp", "hash"):
        assert out.expert is None and not out.aux
    else:
        assert out.expert.shape == (50,) and "field" in out.stats


def test_voronoi_sends_each_point_to_its_nearest_centroid_expert():
    torch.manual_seed(1)
    field = VoronoiField(small(field="voronoi")).eval()
    x = torch.rand(40, 3) * 2 - 1
    out = field(x)
    for i, point in enumerate(x):
        cell = int(((field.centroids - point[:2]) ** 2).sum(-1).argmin())
        assert int(out.expert[i]) == cell
        expected = field.layer.experts.experts[cell](field.encoding(point[None]))[0]
        torch.testing.assert_close(out.features[i], expected)


def test_switch_field_is_its_gated_top1_expert_per_point():
    torch.manual_seed(2)
    field = SwitchField(small(field="switch")).eval()
    x = torch.rand(30, 3) * 2 - 1
    out = field(x)
    for i, point in enumerate(x):
        h = field.stem(field.encoding(point[None]))
        probs = torch.softmax(field.gate(h) @ field.layer.router.gate.weight.T, -1)[0]
        e = int(probs.argmax())
        assert int(out.expert[i]) == e
        torch.testing.assert_close(out.features[i], probs[e] * field.layer.experts.experts[e](h)[0])


def test_hash_moe_gate_starts_spread_and_capacity_drops_only_in_training():
    torch.manual_seed(3)
    field = HashMoEField(small(field="hash_moe", expert_resolutions=HMOHE))
    assert field.finest == 3
    x = torch.rand(4000, 3) * 2 - 1
    out = field.train()(x)
    kept = torch.bincount(out.expert[out.expert >= 0], minlength=4)
    assert (kept > 0.02 * len(x)).all(), kept
    assert (kept <= 1000).all()  # capacity factor 1.0: ceil(4000 / 4) points per expert
    assert out.dropped == pytest.approx(float((out.expert == -1).float().mean()))
    assert (out.features[out.expert == -1] == 0).all()
    field.eval()
    assert (field(x).expert >= 0).all()


def test_hash_moe_equal_and_heterogeneous_experts_differ_in_grids():
    equal = HashMoEField(small(field="hash_moe"))
    hetero = HashMoEField(small(field="hash_moe", expert_resolutions=HMOHE))
    assert {tuple(r) for r in equal.resolutions} == {(4, 16)}
    finest = hetero.layer.experts.experts[3][0]
    assert finest.resolutions[-1] == 64


def test_radiance_field_heads_codes_and_counts():
    torch.manual_seed(4)
    model = RadianceField(small(field="switch", num_experts=4), num_images=5, box=BOX)
    points, dirs = torch.rand(20, 3), torch.nn.functional.normalize(torch.randn(20, 3), dim=-1)
    q = model.query(points, dirs, torch.arange(20) % 5)
    assert q.sigma.shape == (20,) and (q.sigma >= 0).all() and q.rgb.shape == (20, 3)
    assert ((q.rgb > 0) & (q.rgb < 1)).all()
    code = model.mean_code([0, 1])
    torch.testing.assert_close(code, model.appearance.weight[:2].mean(0))
    q2 = model.query(points, dirs, code.expand(20, -1))
    q3 = model.query(points, dirs, torch.zeros(20, 4))
    assert not torch.allclose(q2.rgb, q3.rgb)
    torch.testing.assert_close(model.normalize(torch.tensor([[1.0, -1.0, 0.5]])), torch.tensor([[1.0, -1.0, 0.0]]))
    total, active = count_params(model)
    per_expert = sum(p.numel() for p in model.field.layer.experts.experts[0].parameters())
    assert total - active == 3 * per_expert
