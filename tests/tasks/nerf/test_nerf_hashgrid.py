"""NeRF hash-grid encoding: a plain per-point, per-level reference loop, exact vertices, gradcheck, level kinds."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.errors import ZooValueError
from zoo.tasks.nerf.hashgrid import HashGrid, level_resolutions

PRIMES = (1, 2654435761, 805459861)  # the hash of Instant-NGP, written out independently of the module


def small_grid(dtype: torch.dtype = torch.float64, **kw) -> HashGrid:
    """4 levels at resolutions 3, 5, 9, 17 (dense, dense, hashed, hashed in a 256-row table), random features."""
    torch.manual_seed(0)
    args = dict(levels=4, features=3, log2_table=8, base_resolution=3, max_resolution=17, bounds=(-2.0, 3.0))
    grid = HashGrid(**{**args, **kw}).to(dtype)
    with torch.no_grad():
        grid.table.normal_()
    return grid


def reference(grid: HashGrid, points: torch.Tensor) -> torch.Tensor:
    """The encoding written out one point, one level and one corner at a time with Python integers."""
    low, high = grid.bounds
    table_size = grid.table_size
    out = []
    for p in points.tolist():
        row = []
        for level, n in enumerate(grid.resolutions):
            dense = (n + 1) ** 3 <= table_size
            offset = int(grid.offsets[level])
            unit = [min(max((c - low) / (high - low), 0.0), 1.0) for c in p]
            pos = [u * n for u in unit]
            cell = [min(math.floor(q), n - 1) for q in pos]
            frac = [q - c for q, c in zip(pos, cell)]
            acc = torch.zeros(grid.features, dtype=grid.table.dtype)
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        x, y, z = cell[0] + dx, cell[1] + dy, cell[2] + dz
                        if dense:
                            index = x + y * (n + 1) + z * (n + 1) ** 2
                        else:
                            index = ((x * PRIMES[0]) ^ (y * PRIMES[1]) ^ (z * PRIMES[2])) % table_size
                        w = ((frac[0] if dx else 1 - frac[0]) * (frac[1] if dy else 1 - frac[1])
                             * (frac[2] if dz else 1 - frac[2]))
                        acc += w * grid.table[offset + index].detach()
            row.append(acc)
        out.append(torch.cat(row))
    return torch.stack(out)


def test_matches_reference_loop():
    grid = small_grid()
    assert grid.resolutions == [3, 5, 9, 17]
    gen = torch.Generator().manual_seed(1)
    points = torch.rand(40, 3, generator=gen, dtype=torch.float64) * 5 - 2
    # Points on the box's faces and corners, and outside it (clamped).
    edges = torch.tensor([[-2.0, -2.0, -2.0], [3.0, 3.0, 3.0], [3.0, -2.0, 0.5], [-9.0, 0.1, 7.0], [4.0, 3.5, -3.0]],
                         dtype=torch.float64)
    points = torch.cat([points, edges])
    torch.testing.assert_close(grid(points), reference(grid, points), rtol=1e-12, atol=1e-12)


def test_float32_matches_reference_loop():
    grid = small_grid(torch.float32)
    points = torch.rand(30, 3, generator=torch.Generator().manual_seed(2)) * 5 - 2
    torch.testing.assert_close(grid(points), reference(grid, points.double()).float(), rtol=1e-5, atol=1e-5)


def test_exact_at_grid_vertices():
    grid = small_grid()
    low, high = grid.bounds
    gen = torch.Generator().manual_seed(3)
    for level, n in enumerate(grid.resolutions):
        vertex = torch.randint(0, n + 1, (25, 3), generator=gen)
        vertex[0] = 0
        vertex[1] = n
        points = low + (high - low) * vertex.double() / n
        if grid.dense[level]:
            index = vertex[:, 0] + vertex[:, 1] * (n + 1) + vertex[:, 2] * (n + 1) ** 2
        else:
            index = torch.tensor([((x * PRIMES[0]) ^ (y * PRIMES[1]) ^ (z * PRIMES[2])) % grid.table_size
                                  for x, y, z in vertex.tolist()])
        expected = grid.table.detach()[grid.offsets[level] + index]
        got = grid(points)[:, level * grid.features:(level + 1) * grid.features]
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_gradcheck_table_and_points():
    grid = small_grid(levels=2, features=2, log2_table=5, base_resolution=2, max_resolution=5)
    assert grid.dense.tolist() == [True, False]  # 27 <= 32 < 216
    points = (torch.rand(6, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 4.6 - 1.8)
    points.requires_grad_(True)
    table = grid.table.detach().clone().requires_grad_(True)

    def encode(table: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(grid, {"table": table}, (points,))

    assert torch.autograd.gradcheck(encode, (table, points), eps=1e-6, atol=1e-8)


def test_clamped_points_get_no_coordinate_gradient():
    grid = small_grid()
    points = torch.tensor([[-5.0, 0.0, 0.0], [0.0, 10.0, 0.0]], dtype=torch.float64, requires_grad=True)
    grid(points).sum().backward()
    assert points.grad[0, 0] == 0 and points.grad[1, 1] == 0
    assert points.grad[0, 1:].abs().sum() > 0


@pytest.mark.parametrize("log2_table, base, max_res, levels", [(19, 16, 2048, 16), (9, 7, 40, 5), (12, 4, 99, 7)])
def test_dense_and_hashed_levels(log2_table, base, max_res, levels):
    grid = HashGrid(levels=levels, features=1, log2_table=log2_table, base_resolution=base, max_resolution=max_res)
    table_size = 2**log2_table
    growth = math.exp((math.log(max_res) - math.log(base)) / (levels - 1))
    expected = [math.floor(base * growth**level + 1e-9) for level in range(levels)]
    assert grid.resolutions == expected and expected[0] == base and expected[-1] == max_res
    assert grid.dense.tolist() == [(n + 1) ** 3 <= table_size for n in expected]
    sizes = [(n + 1) ** 3 if (n + 1) ** 3 <= table_size else table_size for n in expected]
    assert grid.table.shape == (sum(sizes), 1)
    # Hashed levels first (offsets 0, T, 2T, ...), then the dense ones in level order, back to back.
    hashed = [level for level in range(levels) if not grid.dense[level]]
    assert [int(grid.offsets[level]) for level in hashed] == [rank * table_size for rank in range(len(hashed))]
    dense_start = [len(hashed) * table_size]
    for level in range(levels):
        if grid.dense[level]:
            assert int(grid.offsets[level]) == dense_start[-1]
            dense_start.append(dense_start[-1] + sizes[level])
    if (base, log2_table) == (7, 9):
        assert grid.dense[0] and not grid.dense[1]  # 8³ = 512 = T exactly is still dense


def test_default_levels():
    grid = HashGrid()
    assert grid.resolutions[:6] == [16, 22, 30, 42, 58, 80] and grid.resolutions[-1] == 2048
    assert grid.dense.tolist() == [True] * 5 + [False] * 11  # 80³ ≤ 2^19 < 81³
    assert grid.output_dim == 32
    assert -1e-4 <= grid.table.min() and grid.table.max() <= 1e-4
    assert level_resolutions(1, 16, 2048) == [16]


def test_dense_levels_are_collision_free_and_hashed_rows_in_range():
    grid = small_grid(features=1)
    with torch.no_grad():
        grid.table.copy_(torch.arange(grid.table.shape[0], dtype=torch.float64)[:, None])
    low, high = grid.bounds
    for level, n in enumerate(grid.resolutions):
        axis = torch.arange(n + 1, dtype=torch.float64)
        vertex = torch.cartesian_prod(axis, axis, axis)
        rows = grid(low + (high - low) * vertex / n)[:, level].round().long() - grid.offsets[level]
        if grid.dense[level]:
            assert sorted(rows.tolist()) == list(range((n + 1) ** 3))
        else:
            assert 0 <= rows.min() and rows.max() < grid.table_size
            assert rows.unique().numel() < rows.numel()  # (n+1)³ > T vertices must collide


def test_output_shape_and_dtype():
    grid = HashGrid(levels=3, features=4, log2_table=10, base_resolution=4, max_resolution=16)
    assert grid(torch.zeros(2, 5, 7, 3)).shape == (2, 5, 7, 12)
    assert grid(torch.zeros(3)).shape == (12,)
    assert grid(torch.zeros(0, 3)).shape == (0, 12)
    assert grid(torch.zeros(4, 3, dtype=torch.float64)).dtype == torch.float32


def test_deterministic():
    points = torch.rand(200, 3, generator=torch.Generator().manual_seed(5)) * 2 - 1
    outs, grads = [], []
    for _ in range(2):
        torch.manual_seed(7)
        grid = HashGrid(levels=4, features=2, log2_table=10, base_resolution=4, max_resolution=64)
        out = grid(points)
        (out * torch.arange(out.shape[-1])).sum().backward()
        outs.append(out.detach())
        grads.append(grid.table.grad)
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("kwargs", [dict(levels=0), dict(features=0), dict(log2_table=0), dict(base_resolution=0),
                                    dict(base_resolution=32, max_resolution=16), dict(bounds=(1.0, -1.0))])
def test_bad_arguments(kwargs):
    with pytest.raises(ZooValueError):
        HashGrid(**kwargs)


def test_bad_point_shape():
    with pytest.raises(ZooValueError, match="x.shape"):
        HashGrid(levels=2, log2_table=8, base_resolution=2, max_resolution=4)(torch.zeros(5, 2))
