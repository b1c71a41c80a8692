"""Image and routing metrics of the NeRF experts on ProceduralCity: PSNR and SSIM of test renders, the Mega-NeRF
half-image protocol, PSNR per city region, and how a gate's top-1 experts divide the downtown and suburb surfaces.

Images are float arrays ``[..., H, W, 3]`` in [0, 1]. :func:`psnr` is ``-10 log10(MSE)`` over every given pixel and
channel; :func:`ssim` is torchmetrics' ``StructuralSimilarityIndexMeasure`` (11x11 Gaussian window, sigma 1.5,
data range 1, k1 0.01, k2 0.03, reflect-padded borders), the mean over the images. Under the Mega-NeRF protocol a
test view's per-image appearance is fitted on its left half and the view is scored on its right half
(:func:`halves`). The city's regions come from the true first surface of each pixel's ray (:func:`surface_regions`,
the codes of :mod:`.city`): sky, downtown (x < 0) or suburb (x >= 0). Routing is read from a table of
(downtown, suburb) point counts per expert (:func:`expert_region_table`): :func:`load_shares` says how the points are
spread over the experts, :func:`purity` how region-bound the experts are (the load-weighted mean of each expert's
majority-region share: 1 when every expert takes points of one region only, 0.5 at worst), and
:func:`downtown_share` how much of downtown one expert takes. A quantity of no points is NaN.
"""

from __future__ import annotations

import math

import numpy as np

from zoo.errors import ZooValueError, check_arg

from .cameras import Views, rays
from .city import DOWNTOWN, SKY_REGION, SUBURB

#: Narrowest image side :func:`ssim` accepts: the right half of a 64-pixel view.
MIN_SSIM_SIDE = 32
#: Floor of the mean squared error in :func:`psnr` (identical images score 100 dB, not infinity).
MIN_MSE = 1e-10
#: Region names of :func:`region_psnr` and the columns of :func:`expert_region_table`, in order.
REGIONS = {"downtown": DOWNTOWN, "suburb": SUBURB}


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape:
        raise ZooValueError(f"pred has shape {list(pred.shape)} but target {list(target.shape)}; expected the same")
    return pred, target


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1].

    Args:
        pred: rendered pixels, any shape (usually ``[..., H, W, 3]``).
        target: true pixels of the same shape.

    Returns:
        ``-10 log10(MSE)`` over all pixels and channels, MSE floored at :data:`MIN_MSE`.
    """
    pred, target = _pair(pred, target)
    check_arg(pred.size > 0, "pred", f"an empty array {list(pred.shape)}", "at least one pixel")
    return -10.0 * math.log10(max(float(np.mean((pred - target) ** 2)), MIN_MSE))


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean structural similarity of image pairs (torchmetrics, module docstring).

    Args:
        pred: rendered images ``[N, H, W, 3]`` (or one ``[H, W, 3]``) in [0, 1].
        target: true images of the same shape.

    Returns:
        SSIM averaged over the pixels, channels and images (1 for identical images).
    """
    import torch
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    pred, target = _pair(pred, target)
    if pred.ndim == 3:
        pred, target = pred[None], target[None]
    if pred.ndim != 4 or pred.shape[-1] != 3 or len(pred) == 0:
        raise ZooValueError(f"ssim takes images [N, H, W, 3] with N >= 1, got shape {list(pred.shape)}")
    if min(pred.shape[1:3]) < MIN_SSIM_SIDE:
        raise ZooValueError(f"ssim needs images of at least {MIN_SSIM_SIDE}x{MIN_SSIM_SIDE} pixels, got "
                            f"{pred.shape[2]}x{pred.shape[1]} (WxH)")
    metric = StructuralSimilarityIndexMeasure(gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0,
                                              k1=0.01, k2=0.03)
    value = metric(torch.from_numpy(pred).permute(0, 3, 1, 2), torch.from_numpy(target).permute(0, 3, 1, 2))
    return float(value)


def halves(width: int) -> tuple[slice, slice]:
    """The column halves of the Mega-NeRF protocol: appearance is fitted on the left, the view scored on the right.

    Args:
        width: image width W (at least 2).

    Returns:
        ``(left, right)``: columns ``[0, W // 2)`` and ``[W // 2, W)``.
    """
    check_arg(isinstance(width, int) and not isinstance(width, bool) and width >= 2, "width", width, "an int >= 2")
    return slice(0, width // 2), slice(width // 2, width)


def surface_regions(views: Views) -> np.ndarray | None:
    """The city region of each pixel's first surface, from the true depth.

    Args:
        views: posed views with ``depth`` (distance along the unit ray, inf for sky).

    Returns:
        int64 ``[N, H, W]``: :data:`.city.SKY_REGION` where the depth is not finite, else :data:`.city.DOWNTOWN`
        where the surface point has x < 0 and :data:`.city.SUBURB` where x >= 0; None for views without depth.
    """
    if views.depth is None:
        return None
    origins, directions = rays(views)
    depth = views.depth.astype(np.float64)
    solid = np.isfinite(depth)
    x = origins[..., 0] + np.where(solid, depth, 0.0) * directions[..., 0]
    return np.where(solid, np.where(x < 0, DOWNTOWN, SUBURB), SKY_REGION).astype(np.int64)


def _regions_for(regions: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    regions = np.asarray(regions)
    if regions.shape != shape:
        raise ZooValueError(f"regions has shape {list(regions.shape)}; expected {list(shape)} to match {what}")
    return regions


def region_psnr(pred: np.ndarray, target: np.ndarray, regions: np.ndarray) -> dict[str, float]:
    """PSNR over the pixels of each city region.

    Args:
        pred: rendered images ``[..., H, W, 3]``.
        target: true images of the same shape.
        regions: region codes ``[..., H, W]`` (:func:`surface_regions`).

    Returns:
        ``{"downtown": dB, "suburb": dB}``; NaN for a region without pixels.
    """
    pred, target = _pair(pred, target)
    regions = _regions_for(regions, pred.shape[:-1], "the images' pixels")
    out = {}
    for name, code in REGIONS.items():
        inside = regions == code
        out[name] = psnr(pred[inside], target[inside]) if inside.any() else math.nan
    return out


def expert_region_table(expert_ids: np.ndarray, regions: np.ndarray, num_experts: int) -> np.ndarray:
    """How many downtown and suburb points each expert takes.

    Args:
        expert_ids: the top-1 expert of each point, -1 for none (any shape).
        regions: the region code of each point, same shape.
        num_experts: number of experts E.

    Returns:
        int64 ``[E, 2]``: per expert the (downtown, suburb) point counts; points without an expert or in the sky
        are not counted.
    """
    check_arg(isinstance(num_experts, int) and num_experts >= 1, "num_experts", num_experts, "an int >= 1")
    ids = np.asarray(expert_ids)
    regions = _regions_for(regions, ids.shape, "expert_ids")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ZooValueError(f"expert_ids has dtype {ids.dtype}; expected integer expert ids")
    if ids.size and not (ids.min() >= -1 and ids.max() < num_experts):
        raise ZooValueError(f"expert_ids span {ids.min()}..{ids.max()}; expected -1 (none) or 0..{num_experts - 1}")
    table = np.zeros((num_experts, len(REGIONS)), np.int64)
    for column, code in enumerate(REGIONS.values()):
        chosen = ids[(regions == code) & (ids >= 0)]
        table[:, column] = np.bincount(chosen.astype(np.int64), minlength=num_experts)
    return table


def _table(table: np.ndarray) -> np.ndarray:
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[1] != len(REGIONS) or len(table) == 0 or (table < 0).any():
        raise ZooValueError(f"expected a table [E, 2] of (downtown, suburb) point counts, got shape "
                            f"{list(table.shape)}" + (" with negative counts" if table.size and table.min() < 0 else ""))
    return table.astype(np.float64)


def load_shares(table: np.ndarray) -> np.ndarray:
    """Share of all points each expert takes.

    Args:
        table: ``[E, 2]`` counts of :func:`expert_region_table`.

    Returns:
        float64 ``[E]`` summing to 1 (all NaN when there are no points).
    """
    table = _table(table)
    total = table.sum()
    return table.sum(axis=1) / total if total > 0 else np.full(len(table), math.nan)


def purity(table: np.ndarray) -> float:
    """Load-weighted mean over the experts of each expert's majority-region share.

    Args:
        table: ``[E, 2]`` counts of :func:`expert_region_table`.

    Returns:
        A share in [0.5, 1] (1: every expert's points lie in one region); NaN when there are no points.
    """
    table = _table(table)
    total = table.sum()
    return float(table.max(axis=1).sum() / total) if total > 0 else math.nan


def downtown_share(table: np.ndarray, expert: int) -> float:
    """Share of the downtown points that one expert takes.

    Args:
        table: ``[E, 2]`` counts of :func:`expert_region_table`.
        expert: the expert's index.

    Returns:
        A share in [0, 1]; NaN when there are no downtown points.
    """
    table = _table(table)
    ok = isinstance(expert, int | np.integer) and not isinstance(expert, bool) and 0 <= expert < len(table)
    check_arg(ok, "expert", expert, f"an expert index in 0..{len(table) - 1}")
    downtown = table[:, 0].sum()
    return float(table[expert, 0] / downtown) if downtown > 0 else math.nan
