"""A multiresolution hash-grid encoding (Instant-NGP, Müller et al. 2022) in plain PyTorch, the positional encoding of
the Switch-NeRF hash-grid experts.

A point of the box ``bounds³`` is looked up on L grids whose resolutions grow geometrically from ``base_resolution``
to ``max_resolution`` (``N_l = floor(base · b^l)``, ``b = exp((ln max − ln base)/(L − 1))``). Level ``l`` has
``(N_l + 1)³`` vertices; when they fit in the table size ``T = 2^log2_table`` they are stored densely (one row each),
otherwise a vertex ``(x, y, z)`` is stored at row ``(x·1 ⊕ y·2654435761 ⊕ z·805459861) mod T`` and colliding
vertices share it. The F features of the 8 corners of the point's cell are blended trilinearly, and the L levels are
concatenated into ``[..., L·F]``. All levels share one parameter ``table`` of shape ``[Σ_l size_l, F]``
(``size_l = min((N_l + 1)³, T)``, rows of level ``l`` start at ``offsets[l]``; the hashed levels come first so
their offsets are multiples of T), initialised U(−1e-4, 1e-4). The forward pass gathers the 8 corners of every
level for every point at once, with no Python loop over points or levels. Points outside ``bounds`` are clamped onto
the box, so they read the features of the nearest face and get no gradient for their coordinates.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.errors import check_arg

#: Multipliers of the spatial hash for x, y, z (the first is 1 so neighbouring x stay coherent in memory).
PRIMES = (1, 2654435761, 805459861)


def level_resolutions(levels: int, base_resolution: int, max_resolution: int) -> list[int]:
    """The grid resolution of each level: ``floor(base · b^l)`` with ``b`` growing base to max over the levels.

    Args:
        levels: number of levels L.
        base_resolution: resolution of the coarsest level.
        max_resolution: resolution of the finest level (reached up to float rounding, which is absorbed).
    """
    if levels == 1:
        return [base_resolution]
    growth = (math.log(max_resolution) - math.log(base_resolution)) / (levels - 1)
    return [math.floor(base_resolution * math.exp(growth * level) + 1e-9) for level in range(levels)]


class HashGrid(nn.Module):
    """Multiresolution hash-grid encoding of 3-D points: ``[..., 3] -> [..., levels · features]``.

    Args:
        levels: number of resolution levels L.
        features: features per level F.
        log2_table: log2 of the table size T of each level.
        base_resolution: resolution of the coarsest level.
        max_resolution: resolution of the finest level.
        bounds: ``(low, high)`` of the cube the points live in, the same on every axis.
    """

    def __init__(self, levels: int = 16, features: int = 2, log2_table: int = 19, base_resolution: int = 16,
                 max_resolution: int = 2048, bounds: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        check_arg(isinstance(levels, int) and levels >= 1, "levels", levels, "an int >= 1")
        check_arg(isinstance(features, int) and features >= 1, "features", features, "an int >= 1")
        check_arg(isinstance(log2_table, int) and 1 <= log2_table <= 30, "log2_table", log2_table,
                  "an int in [1, 30]")
        check_arg(isinstance(base_resolution, int) and base_resolution >= 1, "base_resolution", base_resolution,
                  "an int >= 1")
        check_arg(isinstance(max_resolution, int) and max_resolution >= base_resolution, "max_resolution",
                  max_resolution, f"an int >= base_resolution ({base_resolution})")
        check_arg(len(bounds) == 2 and float(bounds[0]) < float(bounds[1]), "bounds", bounds,
                  "a pair (low, high) with low < high")
        self.levels, self.features, self.table_size = levels, features, 2**log2_table
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.resolutions = level_resolutions(levels, base_resolution, max_resolution)
        dense = [(n + 1) ** 3 <= self.table_size for n in self.resolutions]
        sizes = [(n + 1) ** 3 if d else self.table_size for n, d in zip(self.resolutions, dense)]
        # Hashed levels first, so their offsets are multiples of T and fit above the bits of a hashed row.
        order = sorted(range(levels), key=lambda level: dense[level])
        start = [sum(sizes[level] for level in order[:rank]) for rank in range(levels)]
        offsets = [start[order.index(level)] for level in range(levels)]
        check_arg(sum(sizes) < 2**31, "levels, log2_table", (levels, log2_table), "a table of under 2^31 rows")
        self.register_buffer("resolution", torch.tensor(self.resolutions), persistent=False)
        self.register_buffer("dense", torch.tensor(dense), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)
        # Per level and axis, what a vertex coordinate is multiplied by: row strides when dense, primes when hashed.
        mult = [[1, n + 1, (n + 1) ** 2] if d else list(PRIMES) for n, d in zip(self.resolutions, dense)]
        self.register_buffer("multipliers", torch.tensor(mult), persistent=False)
        self.register_buffer("steps", torch.tensor([0, 1]), persistent=False)
        self.register_buffer("masks", torch.tensor([-1 if d else self.table_size - 1 for d in dense]), persistent=False)
        axis_offsets = torch.zeros(levels, 3, 1, dtype=torch.long)
        axis_offsets[:, 0, 0] = self.offsets
        self.register_buffer("axis_offsets", axis_offsets, persistent=False)
        self.dense_levels = sum(dense)
        self.table = nn.Parameter(torch.empty(sum(sizes), features))
        self.reset_parameters()

    @property
    def output_dim(self) -> int:
        """Width of the encoding, ``levels · features``."""
        return self.levels * self.features

    def reset_parameters(self) -> None:
        """Draw the table from U(−1e-4, 1e-4)."""
        nn.init.uniform_(self.table, -1e-4, 1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode points.

        Args:
            x: ``[..., 3]`` points; coordinates outside ``bounds`` are clamped onto the box.

        Returns:
            ``[..., levels · features]`` in the table's dtype, level-major (level 0's F features first).
        """
        check_arg(x.shape[-1:] == (3,), "x.shape", tuple(x.shape), "[..., 3]")
        batch = x.shape[:-1]
        low, high = self.bounds
        unit = ((x.reshape(-1, 3) - low) / (high - low)).clamp(0.0, 1.0)
        res = self.resolution
        pos = unit[:, None, :] * res[:, None].to(unit.dtype)  # [P, L, 3]
        cell = torch.minimum(pos.detach().floor().long(), (res - 1)[:, None])  # the far face uses the last cell
        frac = (pos - cell).to(self.table.dtype)
        # Per level and axis, the two vertex coordinates of the cell and their 1-D interpolation weights [P, L, 3, 2].
        vert = cell[..., None] + self.steps
        axis_weight = torch.stack([1 - frac, frac], -1)
        # Each axis contributes a term to the row: coordinate × stride (summed) when dense, coordinate × prime mod T
        # (xor-ed) when hashed; the level's offset rides on the x term (for a hashed level it is a multiple of T,
        # above the bits the xor touches). Dense levels come first since resolutions grow.
        term = (((vert * self.multipliers[..., None]) & self.masks[:, None, None]) + self.axis_offsets).int()
        split = self.dense_levels
        row = torch.cat([self._combine(term[:, :split], torch.add),
                         self._combine(term[:, split:], torch.bitwise_xor)], 1)  # [P, L, 2, 2, 2]
        weight = self._combine(axis_weight, torch.mul)
        feats = self.table.index_select(0, row.reshape(-1).long()).view(-1, 8, self.features)
        out = torch.bmm(weight.reshape(-1, 1, 8), feats)
        return out.reshape(*batch, self.output_dim)

    @staticmethod
    def _combine(per_axis: torch.Tensor, op) -> torch.Tensor:
        """Combine ``[P, L, 3, 2]`` per-axis values into the ``[P, L, 2, 2, 2]`` values of the cell's 8 corners."""
        x, y, z = per_axis.unbind(2)
        return op(op(x[..., :, None, None], y[..., None, :, None]), z[..., None, None, :])

    def extra_repr(self) -> str:
        kinds = "".join("d" if d else "h" for d in self.dense.tolist())
        return (f"levels={self.levels}, features={self.features}, table_size={self.table_size}, "
                f"resolutions={self.resolutions}, dense/hashed={kinds}, bounds={self.bounds}")
