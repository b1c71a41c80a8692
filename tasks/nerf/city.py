"""ProceduralCity: a seeded toy city of axis-aligned boxes on the ground square [-1, 1]^2 (world z up), rendered by
exact ray casting, so NeRF experts can be trained and checked on a CPU against true depth and a known split of the
scene into a dense "downtown" (x < 0: tall boxes with stripe or checker facades over asphalt) and a sparse "suburb"
(x >= 0: low flat-coloured boxes on noisy grass), the kind of spatial heterogeneity a Switch-NeRF gate should learn
to divide among its experts.

Shading is Lambertian under one sun plus ambient light (no shadows), times a per-image exposure gain; rays that
miss the boxes and the ground square see a constant sky colour (not scaled by the gain). Depth is the distance
along the unit ray to the first surface (inf for sky). :meth:`ProceduralCity.views` gives aerial views on two rings
looking at the scene centre, quantised to 8 bits like the PNGs :meth:`ProceduralCity.write` stores, so the written
``transforms.json`` reads back (:func:`.cameras.load_transforms`) to the same images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.errors import check_arg, check_seed

from .cameras import HOLDOUT, SPLITS, Views, camera_rays, split_every

SKY = (0.62, 0.76, 0.92)
SUN = (0.45, 0.3, 0.84)
AMBIENT = 0.35
ASPHALT = (0.36, 0.36, 0.39)
GRASS = (0.32, 0.52, 0.22)
GAIN = (0.75, 1.25)
FOV_X = math.radians(45.0)
#: (radius, altitude) of the two camera rings; half of the views are on each.
RINGS = ((2.2, 1.6), (1.4, 2.6))
TARGET = (0.0, 0.0, 0.15)
#: Region codes of :meth:`ProceduralCity.render`.
SKY_REGION, DOWNTOWN, SUBURB = 0, 1, 2
_FLAT, _STRIPES, _CHECKER = 0, 1, 2
_NOISE_CELLS = 32


def look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The OpenGL camera-to-world matrix of a camera at ``position`` looking at ``target`` with world +z up."""
    position, target = np.asarray(position, np.float64), np.asarray(target, np.float64)
    forward = (target - position) / np.linalg.norm(target - position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, position
    return c2w


class ProceduralCity:
    """A seeded box city with exact ray-cast rendering.

    Args:
        seed: seed of the layout, textures and exposure gains.
        boxes: (fewest, most) boxes; the count is drawn in that range, two thirds of them downtown.
        size: height and width of the views in pixels.
        views: number of views made by :meth:`views` (half per camera ring).
    """

    def __init__(self, seed: int = 0, boxes: tuple[int, int] = (40, 80), size: int = 64, views: int = 120) -> None:
        check_seed(seed)
        ok = (isinstance(boxes, tuple | list) and len(boxes) == 2 and all(isinstance(b, int) for b in boxes)
              and 2 <= boxes[0] <= boxes[1] <= 1000)
        check_arg(ok, "boxes", boxes, "(fewest, most) ints with 2 <= fewest <= most <= 1000")
        check_arg(isinstance(size, int) and 4 <= size <= 4096, "size", size, "an int in [4, 4096]")
        check_arg(isinstance(views, int) and views >= 2, "views", views, "an int >= 2")
        self.seed, self.size, self.count = seed, size, views
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
        n = int(rng.integers(boxes[0], boxes[1] + 1))
        n_down = round(2 * n / 3)
        lo, hi, kind, colour, alt, freq = [], [], [], [], [], []
        for i in range(n):
            downtown = i < n_down
            half = rng.uniform(0.04, 0.09, 2) if downtown else rng.uniform(0.03, 0.06, 2)
            x = rng.uniform(-1 + half[0], -half[0]) if downtown else rng.uniform(half[0], 1 - half[0])
            y = rng.uniform(-1 + half[1], 1 - half[1])
            height = rng.uniform(0.25, 0.8) if downtown else rng.uniform(0.04, 0.12)
            lo.append([x - half[0], y - half[1], 0.0])
            hi.append([x + half[0], y + half[1], height])
            base = rng.uniform(0.45, 0.85, 3) * (rng.uniform(0.7, 1.0, 3) if downtown else [1.0, 0.8, 0.6])
            kind.append(int(rng.integers(_STRIPES, _CHECKER + 1)) if downtown else _FLAT)
            colour.append(base)
            alt.append(base * rng.uniform(0.3, 0.55))
            freq.append(rng.uniform(10.0, 24.0))
        self.lo, self.hi = np.asarray(lo), np.asarray(hi)
        self.region = np.where(self.lo[:, 0] < 0, DOWNTOWN, SUBURB)
        self.kind, self.colour, self.alt, self.freq = np.asarray(kind), np.asarray(colour), np.asarray(alt), \
            np.asarray(freq)
        self.noise = rng.uniform(0.0, 1.0, (_NOISE_CELLS + 1, _NOISE_CELLS + 1))
        self.gains = np.random.default_rng(np.random.SeedSequence([seed, 1])).uniform(*GAIN, views)
        self._views: Views | None = None

    def __len__(self) -> int:
        return len(self.lo)

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First hit of each ray with the boxes and the ground square (slab method, exact).

        Args:
            origins: [P, 3] ray origins (outside every box).
            directions: [P, 3] unit directions.

        Returns:
            ``(t, hit, normal)``: distance [P] (inf on a miss), what was hit [P] (box index, -1 ground, -2 nothing)
            and the outward unit normal [P, 3] (zero on a miss).
        """
        p = len(origins)
        t = np.full(p, np.inf)
        hit = np.full(p, -2, dtype=np.int64)
        normal = np.zeros((p, 3))
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / directions
            ground = -origins[:, 2] / directions[:, 2]
        for b in range(len(self.lo)):
            with np.errstate(invalid="ignore"):
                t1, t2 = (self.lo[b] - origins) * inv, (self.hi[b] - origins) * inv
            # A ray parallel to a slab and lying in its boundary plane gives 0 * inf = nan: count it as inside.
            near_axes = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)
            near, far = near_axes.max(axis=1), np.nan_to_num(np.maximum(t1, t2), nan=np.inf).min(axis=1)
            closer = (near <= far) & (near > 0) & (near < t)
            if not closer.any():
                continue
            t[closer], hit[closer] = near[closer], b
            axis = near_axes[closer].argmax(axis=1)
            normal[closer] = 0.0
            normal[closer, axis] = -np.sign(directions[closer, axis])
        point = origins + np.where(np.isfinite(ground), ground, 0.0)[:, None] * directions
        on_ground = (directions[:, 2] < 0) & (ground > 0) & (ground < t) & (np.abs(point[:, :2]) <= 1).all(axis=1)
        t[on_ground], hit[on_ground] = ground[on_ground], -1
        normal[on_ground] = [0.0, 0.0, 1.0]
        return t, hit, normal

    def _grass(self, xy: np.ndarray) -> np.ndarray:
        """Bilinear value noise in [0, 1] at points of the ground square."""
        g = (np.clip(xy, -1, 1) + 1) / 2 * _NOISE_CELLS
        i = np.minimum(g.astype(np.int64), _NOISE_CELLS - 1)
        f = g - i
        n = self.noise
        top = n[i[:, 0], i[:, 1]] * (1 - f[:, 1]) + n[i[:, 0], i[:, 1] + 1] * f[:, 1]
        bottom = n[i[:, 0] + 1, i[:, 1]] * (1 - f[:, 1]) + n[i[:, 0] + 1, i[:, 1] + 1] * f[:, 1]
        return top * (1 - f[:, 0]) + bottom * f[:, 0]

    def _albedo(self, point: np.ndarray, hit: np.ndarray, normal: np.ndarray) -> np.ndarray:
        albedo = np.zeros((len(point), 3))
        box = hit >= 0
        b = hit[box]
        p, nz = point[box], np.abs(normal[box, 2]) > 0.5
        along = np.where(np.abs(normal[box, 0]) > 0.5, p[:, 1], p[:, 0]) * self.freq[b]
        up = p[:, 2] * self.freq[b]
        stripes = np.floor(up) % 2 == 1
        checker = (np.floor(along) + np.floor(up)) % 2 == 1
        dark = np.where(self.kind[b] == _STRIPES, stripes, checker) & (self.kind[b] != _FLAT) & ~nz
        albedo[box] = np.where(dark[:, None], self.alt[b], self.colour[b] * np.where(nz, 0.85, 1.0)[:, None])
        ground = hit == -1
        xy = point[ground, :2]
        grass = np.asarray(GRASS) * (0.7 + 0.6 * self._grass(xy))[:, None]
        albedo[ground] = np.where((xy[:, 0] < 0)[:, None], ASPHALT, grass)
        return albedo

    def render(self, c2w: np.ndarray, intrinsics: np.ndarray, height: int, width: int,
               gain: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ray-cast one view.

        Args:
            c2w: [4, 4] camera-to-world matrix (OpenGL convention), camera outside every box.
            intrinsics: (fx, fy, cx, cy) in pixels.
            height: image height H.
            width: image width W.
            gain: exposure gain applied to lit surfaces (not to the sky).

        Returns:
            ``(rgb, depth, region)``: float32 [H, W, 3] in [0, 1], float32 [H, W] distance along the unit ray
            (inf for sky) and int64 [H, W] (0 sky, 1 downtown, 2 suburb).
        """
        origins, directions = camera_rays(c2w, intrinsics, height, width)
        origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
        t, hit, normal = self.intersect(origins, directions)
        solid = hit > -2
        point = origins + np.where(solid, t, 0.0)[:, None] * directions
        sun = np.asarray(SUN) / np.linalg.norm(SUN)
        light = AMBIENT + (1 - AMBIENT) * np.clip(normal @ sun, 0, None)
        rgb = np.clip(self._albedo(point, hit, normal) * light[:, None] * gain, 0, 1)
        rgb[~solid] = SKY
        region = np.full(len(t), SKY_REGION, dtype=np.int64)
        region[hit >= 0] = self.region[hit[hit >= 0]]
        region[hit == -1] = np.where(point[hit == -1, 0] < 0, DOWNTOWN, SUBURB)
        shape = (height, width)
        return rgb.reshape(*shape, 3).astype(np.float32), t.reshape(shape).astype(np.float32), region.reshape(shape)

    def cameras(self) -> tuple[np.ndarray, np.ndarray]:
        """The poses [V, 4, 4] and intrinsics [V, 4] of :meth:`views`: the first half on the low wide ring, the
        rest on the high narrow one, evenly spaced in azimuth (the rings offset by half a step)."""
        per_ring = [self.count - self.count // 2, self.count // 2]
        poses = []
        for ring, ((radius, altitude), n) in enumerate(zip(RINGS, per_ring)):
            for k in range(n):
                azimuth = 2 * math.pi * (k + 0.5 * ring) / n
                position = [radius * math.cos(azimuth), radius * math.sin(azimuth), altitude]
                poses.append(look_at(np.asarray(position), np.asarray(TARGET)))
        f = 0.5 * self.size / math.tan(0.5 * FOV_X)
        intrinsics = np.tile([f, f, self.size / 2, self.size / 2], (self.count, 1))
        return np.stack(poses), intrinsics

    def views(self, split: str | None = None) -> Views:
        """The aerial views with depth, images quantised to 8 bits.

        Args:
            split: None for all, ``"train"`` or ``"test"`` (every 8th view held out, as :func:`.split_every`).

        Returns:
            The views; ``appearance`` is the view index (each has its own exposure gain).
        """
        check_arg(split is None or split in SPLITS, "split", split, SPLITS)
        if self._views is None:
            poses, intrinsics = self.cameras()
            images, depths = [], []
            for i in range(self.count):
                rgb, depth, _ = self.render(poses[i], intrinsics[i], self.size, self.size, gain=self.gains[i])
                images.append(np.round(rgb * 255) / 255)
                depths.append(depth)
            names = [f"images/frame_{i:04d}.png" for i in range(self.count)]
            self._views = Views(np.stack(images).astype(np.float32), poses.astype(np.float32),
                                intrinsics.astype(np.float32), np.arange(self.count, dtype=np.int64), names,
                                np.stack(depths))
        if split is None:
            return self._views
        train, test = split_every(self._views, HOLDOUT)
        return train if split == "train" else test

    def write(self, folder: str | Path) -> Path:
        """Write all views as ``transforms.json`` (nerfstudio layout) + PNG images + ``.npy`` depth maps.

        Args:
            folder: the output folder (created).

        Returns:
            The path of ``transforms.json``.
        """
        views = self.views()
        folder = Path(folder)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "depth").mkdir(exist_ok=True)
        fx, fy, cx, cy = (float(v) for v in views.intrinsics[0])
        frames = []
        for i, name in enumerate(views.names):
            Image.fromarray(np.round(views.images[i] * 255).astype(np.uint8)).save(folder / name)
            depth_name = f"depth/frame_{i:04d}.npy"
            np.save(folder / depth_name, views.depth[i])
            frames.append({"file_path": name, "depth_file_path": depth_name,
                           "transform_matrix": views.c2w[i].astype(np.float64).tolist()})
        meta = {"camera_model": "OPENCV", "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": self.size,
                "h": self.size, "frames": frames}
        path = folder / "transforms.json"
        path.write_text(json.dumps(meta, indent=1) + "\n")
        return path
