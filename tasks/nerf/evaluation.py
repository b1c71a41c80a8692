"""Held-out views: fit each test image's appearance code on its left half, render every test view whole, score the
right halves, and measure how the experts divide the scene.

Metrics (all under ``test/``): ``psnr`` (pooled: one MSE over every right-half pixel) and ``ssim`` (mean over the
views) of the right halves, ``psnr_downtown`` / ``psnr_suburb`` (right
halves, pixels whose true first surface lies in that region; needs depth), ``render_ms`` (one whole view, mean
over the test views) and ``render_rays_per_s``; from training: ``train_s``, ``train_s_to_target``,
``train_rays_per_s`` and ``dropped_pct``. For MoE fields, the true surface points of the test views (from depth) are
routed in eval mode: ``load_max`` (largest expert's share), ``purity`` (load-weighted majority-region share of the
experts) and, for heterogeneous hash experts, ``downtown_finest`` (share of downtown points on the finest expert).
A metric that does not apply or was not reached is left out rather than reported as NaN: the target PSNR never
reached, a region without pixels, SSIM of halves under 32 px. The run directory gets ``renders.npz`` (ground truth,
renders, expert maps and PSNR per test view), ``views.png`` and ``experts.png``.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.io import atomic_write_bytes, write_figure

from . import metrics as M
from .cameras import Views, rays
from .config import EvalConfig
from .models import HashMoEField
from .plots import RENDERS_FILE

VIEWS_FILE = "views.png"
EXPERTS_FILE = "experts.png"
FIGURE_VIEWS = 4


def view_rays(views: Views, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Origins, directions [H·W, 3] and appearance ids [H·W] of one view."""
    origins, directions = rays(views, index)
    count = origins.shape[0] * origins.shape[1]
    appearance = torch.full((count,), int(views.appearance[index]), dtype=torch.long)
    return torch.from_numpy(origins.reshape(-1, 3)), torch.from_numpy(directions.reshape(-1, 3)), appearance


@torch.no_grad()
def render_image(module: Any, origins: torch.Tensor, directions: torch.Tensor, appearance: torch.Tensor,
                 height: int, width: int) -> dict[str, np.ndarray]:
    """Render rays in chunks of ``render.chunk``: ``rgb [H, W, 3]``, ``depth``, ``expert`` and ``opacity [H, W]``."""
    chunk = module.render_cfg.chunk
    parts = [module.render(o, d, a) for o, d, a in zip(origins.split(chunk), directions.split(chunk),
                                                          appearance.split(chunk))]
    return {"rgb": torch.cat([p.rgb for p in parts]).reshape(height, width, 3).clamp(0, 1).numpy(),
            "depth": torch.cat([p.depth for p in parts]).reshape(height, width).numpy(),
            "expert": torch.cat([p.expert for p in parts]).reshape(height, width).numpy(),
            "opacity": torch.cat([p.opacity for p in parts]).reshape(height, width).numpy()}


def fit_appearance(module: Any, views: Views, cfg: EvalConfig) -> None:
    """Fit the appearance codes of ``views`` on the left half of each image, everything else frozen."""
    if cfg.appearance_steps == 0 or len(views) == 0:
        return
    height, width = views.hw
    left = M.halves(width)[0]
    origins, directions = rays(views)
    o = torch.from_numpy(origins[:, :, left].reshape(-1, 3))
    d = torch.from_numpy(directions[:, :, left].reshape(-1, 3))
    rgb = torch.from_numpy(views.images[:, :, left].reshape(-1, 3))
    ids = torch.from_numpy(np.repeat(views.appearance, height * (left.stop - left.start)))
    model = module.model
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    codes = model.appearance.weight
    codes.requires_grad_(True)
    optimizer = torch.optim.Adam([codes], lr=cfg.lr)
    generator = torch.Generator().manual_seed(0)
    try:
        with torch.enable_grad():
            for _ in range(cfg.appearance_steps):
                pick = torch.randint(len(o), (min(cfg.appearance_rays, len(o)),), generator=generator)
                out = module.render(o[pick], d[pick], ids[pick])
                loss = torch.mean((out.rgb - rgb[pick]) ** 2)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)


def routing_table(module: Any, views: Views, regions: np.ndarray, num_experts: int) -> np.ndarray:
    """Expert × (downtown, suburb) counts of the test views' true surface points, routed in eval mode."""
    origins, directions = rays(views)
    solid = regions > 0
    points = origins[solid] + views.depth[solid][:, None] * directions[solid]
    with torch.no_grad():
        ids = torch.cat([module.model.route(p) for p in torch.from_numpy(points).split(65536)]).numpy()
    return M.expert_region_table(ids, regions[solid], num_experts)


def evaluate(cfg: Any, trainer: Any, module: Any, dm: Any) -> dict[str, float]:
    """The test metrics of the module doc; writes the renders and figures into the run directory."""
    dm.setup("test")
    views: Views = dm.test
    module.eval()
    fit_appearance(module, views, cfg.eval)
    height, width = views.hw
    renders, seconds = [], 0.0
    for i in range(len(views)):
        o, d, a = view_rays(views, i)
        start = time.perf_counter()
        renders.append(render_image(module, o, d, a, height, width))
        seconds += time.perf_counter() - start
    pred = np.stack([r["rgb"] for r in renders])
    experts = np.stack([r["expert"] for r in renders])
    right = M.halves(width)[1]
    gt_r, pred_r = views.images[:, :, right], pred[:, :, right]
    small = min(height, right.stop - right.start) < M.MIN_SSIM_SIDE
    out = {"psnr": M.psnr(pred_r, gt_r), "ssim": math.nan if small else M.ssim(pred_r, gt_r),
           "render_ms": 1000 * seconds / len(views), "render_rays_per_s": len(views) * height * width / seconds,
           **module.training_figures()}
    regions = M.surface_regions(views)
    if regions is not None:
        by_region = M.region_psnr(pred_r, gt_r, regions[:, :, right])
        out.update({"psnr_downtown": by_region["downtown"], "psnr_suburb": by_region["suburb"]})
    field = module.model.field
    layer = getattr(field, "layer", None)
    table, finest = None, None
    if layer is not None and regions is not None:
        table = routing_table(module, views, regions, layer.experts.num_experts)
        out["load_max"] = float(np.max(M.load_shares(table)))
        out["purity"] = M.purity(table)
        finest = field.finest if isinstance(field, HashMoEField) and heterogeneous(field) else None
        if finest is not None:
            out["downtown_finest"] = M.downtown_share(table, finest)
    psnrs = np.array([M.psnr(p[:, right], g[:, right]) for p, g in zip(pred, views.images)], np.float32)
    run_dir = Path(trainer.default_root_dir) if trainer is not None else None
    if run_dir is not None and run_dir.is_dir():
        buffer = io.BytesIO()
        np.savez_compressed(buffer, gt=views.images.astype(np.float32), pred=pred.astype(np.float32),
                            experts=experts.astype(np.int16), psnr=psnrs, names=np.array(views.names))
        atomic_write_bytes(run_dir / RENDERS_FILE, buffer.getvalue())
        from .plots import expert_region_figure, views_figure

        shown = slice(0, min(FIGURE_VIEWS, len(views)))
        titles = [f"{views.names[i]}  PSNR {psnrs[i]:.2f} dB (right half)" for i in range(len(views))][shown]
        has_experts = bool((experts >= 0).any())
        write_figure(run_dir / VIEWS_FILE, views_figure(views.images[shown], pred[shown],
                                                         experts[shown] if has_experts else None, titles), dpi=110)
        if table is not None:
            write_figure(run_dir / EXPERTS_FILE, expert_region_figure(table, finest), dpi=110)
    return {f"test/{k}": float(v) for k, v in out.items() if math.isfinite(v)}


def heterogeneous(field: HashMoEField) -> bool:
    """Whether the hash experts span different resolution ranges (HMoHE)."""
    return len({tuple(r) for r in field.resolutions}) > 1
