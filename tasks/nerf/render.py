"""Volume rendering shared by every field: rays clipped to the scene box, stratified samples, importance samples
from a no-gradient pass of the same model, and alpha compositing over the model's background (Mildenhall et al.,
2020, eq. 3 and §5.2).

A ray's samples ``t_1 < … < t_S`` in ``[near, far]`` get densities ``σ_i`` and colours ``c_i``; with
``δ_i = t_{i+1} − t_i`` (the last one reaching ``far``), ``α_i = 1 − exp(−σ_i δ_i)`` and transmittance
``T_i = Π_{j<i} (1 − α_j)``, the pixel is ``Σ_i T_i α_i c_i + T_{S+1} · background``. Rays that miss the box see
the background only. Each sample also keeps the expert that its point was routed to, so the expert owning a
pixel's surface is the expert of its heaviest sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from zoo.moe import ExpertStats


@dataclass
class RenderOutput:
    """Per ray: ``rgb [R, 3]``, expected ``depth [R]`` (``far`` where nothing is hit), ``opacity [R]`` and the
    ``expert [R]`` of the heaviest sample (−1 for none or a dense field); the MoE ``aux`` losses and ``stats`` of
    the trained pass, and the share of its points a capacity limit dropped."""

    rgb: torch.Tensor
    depth: torch.Tensor
    opacity: torch.Tensor
    expert: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, ExpertStats] = field(default_factory=dict)
    dropped: float = 0.0


def ray_box(origins: torch.Tensor, directions: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through an axis-aligned box (slab test).

    Args:
        origins: [R, 3].
        directions: [R, 3] unit directions.
        box: [2, 3] low and high corners.

    Returns:
        ``(near, far)`` [R] each, ``near >= 0``; ``far <= near`` for a ray that misses the box.
    """
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0, t1 = (box[0] - origins) / safe, (box[1] - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


def stratified(near: torch.Tensor, far: torch.Tensor, count: int, jitter: bool) -> torch.Tensor:
    """``count`` samples per ray, one in each equal bin of ``[near, far]``: uniform within its bin when ``jitter``,
    else at its centre. Returns [R, count]."""
    u = torch.arange(count, dtype=near.dtype, device=near.device)
    offset = torch.rand(near.shape[0], count, dtype=near.dtype, device=near.device) if jitter else torch.full_like(u, 0.5)
    span = (far - near).clamp_min(0.0)[:, None]
    return near[:, None] + span * (u + offset) / count


def sample_pdf(edges: torch.Tensor, weights: torch.Tensor, count: int, jitter: bool) -> torch.Tensor:
    """Inverse-transform samples from the piecewise-constant density with ``weights`` on the bins of ``edges``.

    Args:
        edges: [R, B + 1] increasing bin edges.
        weights: [R, B] non-negative bin weights (a ray with all zeros samples its bins uniformly).
        count: samples per ray.
        jitter: uniform random quantiles; else evenly spaced ones.

    Returns:
        [R, count] samples, sorted per ray.
    """
    weights = weights + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), pdf.cumsum(-1)], -1).clamp_max(1.0)
    if jitter:
        u = torch.rand(edges.shape[0], count, dtype=edges.dtype, device=edges.device)
    else:
        u = ((torch.arange(count, dtype=edges.dtype, device=edges.device) + 0.5) / count).expand(edges.shape[0], -1)
    u = u.contiguous()
    hi = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    lo = hi - 1
    c0, c1 = cdf.gather(-1, lo), cdf.gather(-1, hi)
    e0, e1 = edges.gather(-1, lo), edges.gather(-1, hi)
    frac = ((u - c0) / (c1 - c0).clamp_min(1e-10)).clamp(0.0, 1.0)
    return (e0 + frac * (e1 - e0)).sort(-1).values


def composite(sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, far: torch.Tensor,
              background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alpha-composite samples front to back over a background.

    Args:
        sigma: [R, S] densities >= 0.
        rgb: [R, S, 3] colours.
        t: [R, S] sorted sample distances.
        far: [R] where each ray leaves the box (the last sample's interval ends there).
        background: [R, 3] colour seen through what is left.

    Returns:
        ``(rgb [R, 3], weights [R, S], depth [R], opacity [R])``; depth is the weighted sample distance plus
        ``far`` times the leftover transmittance.
    """
    ends = torch.cat([t[:, 1:], torch.maximum(far, t[:, -1])[:, None]], -1)
    delta = (ends - t).clamp_min(0.0)
    alpha = 1.0 - torch.exp(-sigma * delta)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], -1), -1)
    weights = alpha * trans[:, :-1]
    left = trans[:, -1]
    colour = (weights[..., None] * rgb).sum(1) + left[:, None] * background
    depth = (weights * t).sum(1) + left * far
    return colour, weights, depth, 1.0 - left


def render_rays(model: torch.nn.Module, origins: torch.Tensor, directions: torch.Tensor, appearance: torch.Tensor,
                samples: int, importance: int, jitter: bool) -> RenderOutput:
    """Render rays with a :class:`~.models.RadianceField` (module docstring).

    Args:
        model: the radiance field (``box``, ``density``, ``query``, ``background``).
        origins: [R, 3] ray origins.
        directions: [R, 3] unit directions.
        appearance: [R] appearance ids, or [R, A] appearance codes.
        samples: stratified samples per ray.
        importance: importance samples per ray (0: the stratified samples only, no extra pass).
        jitter: random sample positions (training) instead of deterministic ones.
    """
    near, far = ray_box(origins, directions, model.box)
    far = torch.maximum(far, near)
    t = stratified(near, far, samples, jitter)
    if importance:
        with torch.no_grad():
            points = origins[:, None] + t[..., None] * directions[:, None]
            sigma = model.density(points.reshape(-1, 3)).reshape(t.shape)
            _, weights, _, _ = composite(sigma, torch.zeros(*t.shape, 3, device=t.device), t, far,
                                         torch.zeros_like(origins))
            mids = torch.cat([near[:, None], 0.5 * (t[:, 1:] + t[:, :-1]), far[:, None]], -1)
            extra = sample_pdf(mids, weights, importance, jitter)
        t = torch.cat([t, extra], -1).sort(-1).values
    count = t.shape[1]
    points = origins[:, None] + t[..., None] * directions[:, None]
    dirs = directions[:, None].expand(-1, count, -1)
    codes = appearance[:, None].expand(-1, count, *appearance.shape[1:])
    out = model.query(points.reshape(-1, 3), dirs.reshape(-1, 3), codes.reshape(-1, *appearance.shape[1:]))
    sigma, rgb = out.sigma.reshape(t.shape), out.rgb.reshape(*t.shape, 3)
    colour, weights, depth, opacity = composite(sigma, rgb, t, far, model.background(directions))
    if out.expert is None:
        expert = torch.full((len(origins),), -1, dtype=torch.long, device=origins.device)
    else:
        heaviest = weights.argmax(-1, keepdim=True)
        expert = out.expert.reshape(t.shape).gather(-1, heaviest)[:, 0]
        expert = torch.where(weights.amax(-1) > 1e-3, expert, torch.full_like(expert, -1))
    return RenderOutput(colour, depth, opacity, expert, out.aux, out.stats, out.dropped)
