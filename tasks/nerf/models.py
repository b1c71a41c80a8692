"""Radiance fields: one :class:`RadianceField` (shared density and colour heads, per-image appearance codes, a
background of the view direction) over a position field that is dense or a mixture of experts.

The fields map points of the scene box, scaled to ``[-1, 1]³``, to a feature per point:

* :class:`DenseField` — a frequency-encoded MLP (NeRF) or a hash grid with a small MLP (Instant-NGP);
* :class:`VoronoiField` — Mega-NeRF's fixed partition: each point goes to the MLP expert of its nearest centroid
  on a ground-plane grid (``zoo.moe.DomainRouter`` with the cell as the token's domain);
* :class:`SwitchField` — Switch-NeRF: encoded point → shared linear stem → MLP experts, top-1 by a gate MLP on the
  stem feature, output × gate probability, capacity and balance loss (``zoo.moe.TopKRouter``);
* :class:`HashMoEField` — Switch-NeRF++: the same top-1 routing with the gate reading a coarse hash grid and hash-grid
  experts, of one resolution range each (equal) or of nested ranges (HMoHE).

Every MoE field is a ``zoo.moe.MoELayer`` over ``zoo.moe.ModuleExperts``; routing, dispatch, capacity and the
balance loss are the shared backbone's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from zoo.moe import DomainRouter, ExpertStats, ModuleExperts, MoELayer, TopKRouter

from .config import ModelConfig
from .hashgrid import HashGrid

#: Frequencies of the view-direction encoding of the colour head and the background.
DIRECTION_FREQUENCIES = 4
BACKGROUND_WIDTH = 32
#: Octaves of the position encoding the hash-grid gate reads besides its grid.
GATE_FREQUENCIES = 2


class FrequencyEncoding(nn.Module):
    """NeRF's positional encoding ``[x, sin(2^k π x), cos(2^k π x)]_{k < frequencies}``: ``[..., 3] → [..., 3 + 6F]``."""

    def __init__(self, frequencies: int) -> None:
        super().__init__()
        self.register_buffer("scales", (2.0 ** torch.arange(frequencies)) * math.pi, persistent=False)
        self.output_dim = 3 + 6 * frequencies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = (x[..., None] * self.scales).flatten(-2)
        return torch.cat([x, angles.sin(), angles.cos()], -1)


def mlp(d_in: int, width: int, depth: int) -> nn.Sequential:
    """``depth`` ReLU layers of ``width`` units."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers)


class MLPFeatures(nn.Sequential):
    """A NeRF MLP: frequency encoding → ``depth`` ReLU layers of ``width``."""

    def __init__(self, frequencies: int, width: int, depth: int) -> None:
        encoding = FrequencyEncoding(frequencies)
        super().__init__(encoding, mlp(encoding.output_dim, width, depth))


class HashFeatures(nn.Sequential):
    """An Instant-NGP field: hash grid over ``resolution`` → a 2-layer ReLU MLP of ``width``."""

    def __init__(self, cfg: ModelConfig, resolution: Sequence[int]) -> None:
        grid = HashGrid(cfg.levels, cfg.features, cfg.log2_table, int(resolution[0]), int(resolution[1]))
        super().__init__(grid, mlp(grid.output_dim, cfg.width, 2))


@dataclass
class FieldOutput:
    """Per point: ``features [N, W]`` and the ``expert [N]`` it was routed to (None for a dense field; −1 where a
    capacity limit dropped it); the MoE layer's aux losses, stats and dropped share."""

    features: torch.Tensor
    expert: torch.Tensor | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, ExpertStats] = field(default_factory=dict)
    dropped: float = 0.0


def _moe_output(layer: MoELayer, x: torch.Tensor, **kwargs: torch.Tensor) -> FieldOutput:
    out = layer(x, **kwargs)
    drop = float(out.routing.drop_rate) if out.routing.drop_rate is not None else 0.0
    return FieldOutput(out.y, out.routing.ids[:, 0], {f"field/{k}": v for k, v in out.aux.items()},
                       {"field": out.stats}, drop)


class DenseField(nn.Module):
    """A dense position field (no routing)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> FieldOutput:
        return FieldOutput(self.net(x))


def ground_grid(num_experts: int) -> torch.Tensor:
    """Centroids of a ``rows × cols`` grid (``rows · cols = E``, as square as possible) over ``[-1, 1]²``: [E, 2]."""
    rows = max(r for r in range(1, int(math.isqrt(num_experts)) + 1) if num_experts % r == 0)
    cols = num_experts // rows
    ys, xs = (torch.arange(n, dtype=torch.float32) * 2 / n - 1 + 1 / n for n in (rows, cols))
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)


class VoronoiField(nn.Module):
    """Mega-NeRF's fixed partition: MLP experts, each point to the expert of its nearest ground-plane centroid."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        experts = ModuleExperts([mlp(3 + 6 * cfg.frequencies, cfg.width, cfg.depth) for _ in range(cfg.num_experts)])
        self.encoding = FrequencyEncoding(cfg.frequencies)
        self.layer = MoELayer(DomainRouter(self.encoding.output_dim, cfg.num_experts), experts)
        self.register_buffer("centroids", ground_grid(cfg.num_experts))

    def cells(self, x: torch.Tensor) -> torch.Tensor:
        """The centroid index nearest to each point in the ground plane (x, y)."""
        return torch.cdist(x[:, :2], self.centroids).argmin(-1)

    def forward(self, x: torch.Tensor) -> FieldOutput:
        return _moe_output(self.layer, self.encoding(x), token_ids=self.cells(x))


def _top1_router(cfg: ModelConfig, d_gate: int) -> TopKRouter:
    return TopKRouter(d_gate, cfg.num_experts, k=1, capacity_factor=cfg.capacity_factor, eval_dropless=True,
                      balance_coef=cfg.balance_coef)


class SwitchField(nn.Module):
    """Switch-NeRF: encoded point → linear stem → top-1 of ``E`` MLP experts chosen by a gate MLP on the stem."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.encoding = FrequencyEncoding(cfg.frequencies)
        self.stem = nn.Linear(self.encoding.output_dim, cfg.width)
        self.gate = nn.Sequential(mlp(cfg.width, cfg.width, 2), nn.LayerNorm(cfg.width))
        experts = ModuleExperts([mlp(cfg.width, cfg.width, cfg.depth) for _ in range(cfg.num_experts)])
        self.layer = MoELayer(_top1_router(cfg, cfg.width), experts)

    def forward(self, x: torch.Tensor) -> FieldOutput:
        h = self.stem(self.encoding(x))
        return _moe_output(self.layer, h, route_on=self.gate(h))


class HashMoEField(nn.Module):
    """Switch-NeRF++: a gate on a coarse hash grid picks one of ``E`` hash-grid experts per point (top-1).

    The gate also reads a 2-octave frequency encoding of the point: a hash table starts near zero (Instant-NGP's
    init), so a gate on the grid alone would send every point to one expert at first and drop most of them; with the
    encoding it starts as a random division of space into smooth regions, which the grid then refines.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ranges = cfg.expert_resolutions or [cfg.resolution] * cfg.num_experts
        self.resolutions = [list(r) for r in ranges]
        self.gate_grid = HashGrid(cfg.gate_levels, cfg.features, min(cfg.log2_table, 16), *cfg.gate_resolution)
        self.gate_encoding = FrequencyEncoding(GATE_FREQUENCIES)
        gate_in = self.gate_encoding.output_dim + self.gate_grid.output_dim
        self.gate = nn.Sequential(nn.Linear(gate_in, cfg.width), nn.ReLU(), nn.LayerNorm(cfg.width))
        experts = ModuleExperts([HashFeatures(cfg, r) for r in ranges])
        self.layer = MoELayer(_top1_router(cfg, cfg.width), experts)

    @property
    def finest(self) -> int:
        """The expert whose grid reaches the highest resolution."""
        return max(range(len(self.resolutions)), key=lambda e: tuple(reversed(self.resolutions[e])))

    def forward(self, x: torch.Tensor) -> FieldOutput:
        gate_in = torch.cat([self.gate_encoding(x), self.gate_grid(x)], -1)
        return _moe_output(self.layer, x, route_on=self.gate(gate_in))


def build_field(cfg: ModelConfig) -> nn.Module:
    """The position field of ``model.field``."""
    if cfg.field == "mlp":
        return DenseField(MLPFeatures(cfg.frequencies, cfg.width, cfg.depth))
    if cfg.field == "hash":
        return DenseField(HashFeatures(cfg, cfg.resolution))
    return {"voronoi": VoronoiField, "switch": SwitchField, "hash_moe": HashMoEField}[cfg.field](cfg)


@dataclass
class Query:
    """Density ``sigma [N]`` and colour ``rgb [N, 3]`` per point, with the field's routing (:class:`FieldOutput`)."""

    sigma: torch.Tensor
    rgb: torch.Tensor
    expert: torch.Tensor | None
    aux: dict[str, torch.Tensor]
    stats: dict[str, ExpertStats]
    dropped: float


class RadianceField(nn.Module):
    """A NeRF: position field + density head + colour head (feature, direction, appearance code) + background.

    Args:
        cfg: the model config.
        num_images: appearance codes (one per image of the scene, train and test).
        box: ``[[x0, y0, z0], [x1, y1, z1]]``, the world box the field covers.
    """

    def __init__(self, cfg: ModelConfig, num_images: int, box: Sequence[Sequence[float]]) -> None:
        super().__init__()
        self.field = build_field(cfg)
        self.directions = FrequencyEncoding(DIRECTION_FREQUENCIES)
        self.sigma_head = nn.Linear(cfg.width, 1)
        self.color_head = nn.Sequential(
            nn.Linear(cfg.width + self.directions.output_dim + cfg.appearance_dim, cfg.color_width), nn.ReLU(),
            nn.Linear(cfg.color_width, 3),
        )
        self.appearance = nn.Embedding(num_images, cfg.appearance_dim)
        nn.init.normal_(self.appearance.weight, std=0.01)
        self.sky = nn.Sequential(nn.Linear(self.directions.output_dim, BACKGROUND_WIDTH), nn.ReLU(),
                                 nn.Linear(BACKGROUND_WIDTH, 3))
        self.register_buffer("box", torch.tensor(box, dtype=torch.float32))

    def normalize(self, points: torch.Tensor) -> torch.Tensor:
        """World points → ``[-1, 1]³`` of the box."""
        return 2 * (points - self.box[0]) / (self.box[1] - self.box[0]) - 1

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """``σ [N]`` of world points."""
        return F.softplus(self.sigma_head(self.field(self.normalize(points)).features)[:, 0])

    def query(self, points: torch.Tensor, directions: torch.Tensor, appearance: torch.Tensor) -> Query:
        """Density and colour of world points seen along unit ``directions`` in images ``appearance`` (ids [N], or
        appearance codes [N, A] themselves, e.g. the mean training code for a novel view)."""
        out = self.field(self.normalize(points))
        sigma = F.softplus(self.sigma_head(out.features)[:, 0])
        codes = appearance if appearance.is_floating_point() else self.appearance(appearance)
        head_in = torch.cat([out.features, self.directions(directions), codes], -1)
        rgb = torch.sigmoid(self.color_head(head_in))
        return Query(sigma, rgb, out.expert, out.aux, out.stats, out.dropped)

    def background(self, directions: torch.Tensor) -> torch.Tensor:
        """The colour of a ray that leaves the box unblocked: [R, 3]."""
        return torch.sigmoid(self.sky(self.directions(directions)))

    def mean_code(self, ids: Sequence[int]) -> torch.Tensor:
        """The mean appearance code of the images ``ids`` (the training images: a neutral look for new views)."""
        return self.appearance.weight[torch.as_tensor(list(ids), dtype=torch.long)].mean(0)

    def route(self, points: torch.Tensor) -> torch.Tensor | None:
        """The expert each world point is routed to (in eval mode, so no capacity drops any), None for a dense
        field."""
        was_training = self.training
        self.eval()
        try:
            return self.field(self.normalize(points)).expert
        finally:
            self.train(was_training)
