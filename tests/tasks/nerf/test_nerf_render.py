"""Volume rendering against per-ray loops and worked examples: the slab test, stratified and importance samples,
alpha compositing, and a whole render of an analytic field."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zoo.tasks.nerf.render import composite, ray_box, render_rays, sample_pdf, stratified

BOX = torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 1.0]])


def test_ray_box_hits_misses_and_starts_inside():
    origins = torch.tensor([[0.0, 0.0, 3.0], [5.0, 5.0, 3.0], [0.0, 0.0, 0.5], [-3.0, 0.5, 0.5]])
    directions = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near, far = ray_box(origins, directions, BOX)
    torch.testing.assert_close(near[[0, 2, 3]], torch.tensor([2.0, 0.0, 2.0]))
    torch.testing.assert_close(far[[0, 2, 3]], torch.tensor([3.0, 1.0, 4.0]))
    assert far[1] <= near[1]


def test_stratified_samples_one_per_bin():
    near, far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.0])
    t = stratified(near, far, 4, jitter=True)
    edges = torch.linspace(1, 3, 5)
    assert ((t[0] >= edges[:-1]) & (t[0] <= edges[1:])).all()
    assert (t[1] == 2.0).all()
    torch.testing.assert_close(stratified(near, far, 4, jitter=False)[0], torch.tensor([1.25, 1.75, 2.25, 2.75]))


def test_sample_pdf_follows_the_weights():
    torch.manual_seed(0)
    edges = torch.linspace(0, 4, 5)[None].repeat(2, 1)
    weights = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    t = sample_pdf(edges, weights, 2000, jitter=True)
    assert (t[0] > 1.99).float().mean() > 0.99 and (t[0] < 3.01).all()
    counts = torch.histc(t[1], bins=4, min=0, max=4)
    assert (counts - 500).abs().max() < 100
    assert (t[:, 1:] >= t[:, :-1]).all()
    fixed = sample_pdf(edges[:1], weights[:1], 4, jitter=False)
    torch.testing.assert_close(fixed, torch.tensor([[2.125, 2.375, 2.625, 2.875]]), atol=1e-3, rtol=0)


def test_composite_matches_a_front_to_back_loop():
    torch.manual_seed(1)
    sigma, rgb = torch.rand(3, 6) * 3, torch.rand(3, 6, 3)
    t = torch.rand(3, 6).cumsum(-1)
    far, background = t[:, -1] + 0.5, torch.rand(3, 3)
    colour, weights, depth, opacity = composite(sigma, rgb, t, far, background)
    for r in range(3):
        left, c, d = 1.0, torch.zeros(3), 0.0
        for i in range(6):
            end = t[r, i + 1] if i < 5 else far[r]
            alpha = 1 - math.exp(-float(sigma[r, i]) * float(end - t[r, i]))
            torch.testing.assert_close(weights[r, i], torch.tensor(left * alpha), rtol=1e-5, atol=1e-6)
            c, d = c + left * alpha * rgb[r, i], d + left * alpha * float(t[r, i])
            left *= 1 - alpha
        torch.testing.assert_close(colour[r], c + left * background[r], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(depth[r], torch.tensor(d + left * float(far[r])), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(opacity[r], torch.tensor(1 - left), rtol=1e-5, atol=1e-6)


class Slab(nn.Module):
    """An opaque red floor below z = 0.5 and empty space above, white sky; every point on expert 1 or 0 by side."""

    box = BOX

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return torch.where(points[:, 2] < 0.5, 1e3, 0.0)

    def query(self, points, directions, appearance):
        from zoo.tasks.nerf.models import Query

        rgb = torch.tensor([1.0, 0.0, 0.0]).expand(len(points), 3)
        expert = (points[:, 0] >= 0).long()
        return Query(self.density(points), rgb, expert, {}, {}, 0.0)

    def background(self, directions):
        return torch.ones(len(directions), 3)


@pytest.mark.parametrize("importance", [0, 16])
def test_render_of_an_analytic_floor(importance):
    origins = torch.tensor([[-0.5, 0.0, 2.0], [0.5, 0.0, 2.0], [5.0, 0.0, 2.0]])
    directions = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    out = render_rays(Slab(), origins, directions, torch.zeros(3, dtype=torch.long), 32, importance, jitter=False)
    torch.testing.assert_close(out.rgb[:2], torch.tensor([[1.0, 0.0, 0.0]] * 2), atol=1e-3, rtol=0)
    torch.testing.assert_close(out.rgb[2], torch.ones(3))
    assert abs(float(out.depth[0]) - 1.5) < (0.05 if importance else 1 / 32 + 1e-3)
    assert out.expert.tolist() == [0, 1, -1]
    assert out.opacity[2] == 0
