"""Typed config of the nerf task: the schema every ``configs/nerf/*.yaml`` recipe is validated into. Torch-free, so
a recipe resolves and shows without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field as default
from typing import Any

from zoo.errors import check_arg, check_seed
from zoo.optim import OptimConfig

FIELDS = ("mlp", "hash", "voronoi", "switch", "hash_moe")
MOE_FIELDS = ("voronoi", "switch", "hash_moe")
CITY = "procedural-city"


def _resolution(value: Any, name: str) -> None:
    ok = (isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)
          and 2 <= value[0] <= value[1])
    check_arg(ok, name, value, "[coarsest, finest] ints with 2 <= coarsest <= finest")


@dataclass
class DataConfig:
    """The scene and the ray batches.

    ``scene``: ``procedural-city`` (the seeded :class:`~.city.ProceduralCity`, ``seed``, ``size`` px, ``views``
    views, every 8th held out) or the path of a user's capture: a ``transforms.json`` (nerfstudio / Blender) or a
    Mega-NeRF scene folder. ``downscale``: shrink a Mega-NeRF capture's images by this factor. ``box``: the
    ``[[x0, y0, z0], [x1, y1, z1]]`` world box the scene lives in (rays are sampled inside it and the fields see it
    as ``[-1, 1]³``); None: the city's own box, or ``[-1.5, 1.5]³`` (Blender scenes) for a capture.
    ``batch_rays``: rays per training step, drawn at random from all training pixels.
    """

    scene: str = CITY
    seed: int = 0
    size: int = 64
    views: int = 120
    downscale: int = 1
    box: list[list[float]] | None = None
    batch_rays: int = 512

    def __post_init__(self) -> None:
        check_arg(isinstance(self.scene, str) and bool(self.scene), "data.scene", self.scene,
                  f"{CITY!r} or the path of a transforms.json or Mega-NeRF scene folder")
        check_seed(self.seed, "data.seed")
        check_arg(isinstance(self.size, int) and 64 <= self.size <= 1024, "data.size", self.size,
                  "an int in [64, 1024] (SSIM is scored on the right halves, at least 32 px wide)")
        check_arg(isinstance(self.views, int) and self.views >= 16, "data.views", self.views, "an int >= 16")
        check_arg(isinstance(self.downscale, int) and self.downscale >= 1, "data.downscale", self.downscale,
                  "a positive int")
        if self.box is not None:
            ok = (isinstance(self.box, list | tuple) and len(self.box) == 2
                  and all(isinstance(c, list | tuple) and len(c) == 3 for c in self.box)
                  and all(isinstance(v, int | float) for c in self.box for v in c)
                  and all(lo < hi for lo, hi in zip(*self.box)))
            check_arg(ok, "data.box", self.box, "None or [[x0, y0, z0], [x1, y1, z1]] with x0 < x1, y0 < y1, z0 < z1")
        check_arg(isinstance(self.batch_rays, int) and self.batch_rays >= 1, "data.batch_rays", self.batch_rays,
                  "a positive int")


@dataclass
class RenderConfig:
    """Volume rendering, the same for every field: ``samples`` stratified samples per ray inside the scene box
    (jittered in training), a no-gradient pass of the same model on them, ``importance`` more samples drawn from
    its compositing weights, and the model trained and rendered on all ``samples + importance`` points, alpha
    composited over a learned background of the ray direction. ``chunk``: rays per forward pass when rendering
    whole images."""

    samples: int = 16
    importance: int = 16
    chunk: int = 8192

    def __post_init__(self) -> None:
        check_arg(isinstance(self.samples, int) and self.samples >= 2, "render.samples", self.samples, "an int >= 2")
        check_arg(isinstance(self.importance, int) and self.importance >= 0, "render.importance", self.importance,
                  "an int >= 0")
        check_arg(isinstance(self.chunk, int) and self.chunk >= 64, "render.chunk", self.chunk, "an int >= 64")


@dataclass
class ModelConfig:
    """The radiance field: a position field giving a ``width`` feature per point, shared density and colour heads
    (colour from the feature, the view direction and a per-image appearance code), a background of the direction.

    ``field``: ``mlp`` (frequency encoding with ``frequencies`` octaves → ``depth`` ReLU layers of ``width``),
    ``hash`` (a hash grid of ``levels`` × ``features`` per level, tables of 2^``log2_table``, resolutions
    ``resolution`` → a 2-layer MLP), ``voronoi`` (``num_experts`` MLP fields, each point sent to the expert of its
    nearest ground-plane centroid, a fixed grid over the box: Mega-NeRF's partition), ``switch`` (Switch-NeRF: the
    encoded point → a shared linear stem → ``num_experts`` MLP experts, picked top-1 by a gate MLP of the stem
    feature, output × gate probability, capacity ``capacity_factor`` in training, balance loss ``balance_coef``) or
    ``hash_moe`` (Switch-NeRF++: a gate on a coarse hash grid of ``gate_levels`` levels over ``gate_resolution``
    and ``num_experts`` hash-grid experts; ``expert_resolutions``, one ``[coarsest, finest]`` per expert, makes them
    heterogeneous (HMoHE), else every expert spans ``resolution``). Gates start random, so points spread over the
    experts from the first step.
    """

    field: str = "hash_moe"
    num_experts: int = 4
    width: int = 64
    depth: int = 4
    frequencies: int = 10
    levels: int = 8
    features: int = 2
    log2_table: int = 15
    resolution: list[int] = default(default_factory=lambda: [16, 512])
    expert_resolutions: list[list[int]] | None = None
    gate_levels: int = 4
    gate_resolution: list[int] = default(default_factory=lambda: [8, 64])
    capacity_factor: float | None = 1.0
    balance_coef: float = 5e-4
    appearance_dim: int = 8
    color_width: int = 64

    def __post_init__(self) -> None:
        check_arg(self.field in FIELDS, "model.field", self.field, FIELDS)
        for name in ("num_experts", "width", "depth", "frequencies", "levels", "features", "gate_levels",
                     "appearance_dim", "color_width"):
            value = getattr(self, name)
            check_arg(isinstance(value, int) and value >= 1, f"model.{name}", value, "a positive int")
        check_arg(isinstance(self.log2_table, int) and 8 <= self.log2_table <= 24, "model.log2_table",
                  self.log2_table, "an int in [8, 24]")
        _resolution(self.resolution, "model.resolution")
        _resolution(self.gate_resolution, "model.gate_resolution")
        if self.expert_resolutions is not None:
            check_arg(isinstance(self.expert_resolutions, list) and len(self.expert_resolutions) == self.num_experts,
                      "model.expert_resolutions", self.expert_resolutions,
                      f"None or one [coarsest, finest] per expert (model.num_experts={self.num_experts})")
            for i, pair in enumerate(self.expert_resolutions):
                _resolution(pair, f"model.expert_resolutions[{i}]")
            check_arg(self.field == "hash_moe", "model.expert_resolutions", self.expert_resolutions,
                      "None unless model.field=hash_moe")
        check_arg(self.capacity_factor is None or self.capacity_factor > 0, "model.capacity_factor",
                  self.capacity_factor, "None (dropless) or a float > 0")
        check_arg(self.balance_coef >= 0, "model.balance_coef", self.balance_coef, "a float >= 0")


@dataclass
class EvalConfig:
    """Test-time settings. Held-out images have appearance codes no training step saw, so, as in Mega-NeRF and
    Switch-NeRF, each test image's code is fitted on its left half (``appearance_steps`` Adam steps of ``lr`` on
    ``appearance_rays`` rays of the left halves, the model frozen) and the image is scored on its right half.
    ``target_psnr``: the training PSNR (running mean of the batch MSE) whose first crossing gives
    ``test/train_s_to_target``."""

    appearance_steps: int = 100
    appearance_rays: int = 512
    lr: float = 0.05
    target_psnr: float = 24.0

    def __post_init__(self) -> None:
        check_arg(isinstance(self.appearance_steps, int) and self.appearance_steps >= 0, "eval.appearance_steps",
                  self.appearance_steps, "an int >= 0")
        check_arg(isinstance(self.appearance_rays, int) and self.appearance_rays >= 1, "eval.appearance_rays",
                  self.appearance_rays, "a positive int")
        check_arg(self.lr > 0, "eval.lr", self.lr, "a float > 0")
        check_arg(self.target_psnr > 0, "eval.target_psnr", self.target_psnr, "a float > 0")


@dataclass
class NerfConfig:
    data: DataConfig = default(default_factory=DataConfig)
    render: RenderConfig = default(default_factory=RenderConfig)
    model: ModelConfig = default(default_factory=ModelConfig)
    eval: EvalConfig = default(default_factory=EvalConfig)
    optim: OptimConfig = default(default_factory=lambda: OptimConfig(name="adam", lr=5e-3, betas=(0.9, 0.99)))
    trainer: dict[str, Any] = default(default_factory=lambda: {"max_steps": 1000})
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed)
