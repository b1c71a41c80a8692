"""NeRF experts (Switch-NeRF, Mi & Xu, ICLR 2023; Switch-NeRF++ / HMoHE, Mi et al., TPAMI 2025): a large scene split
among experts by a learned gate over 3-D points, against a dense NeRF, a dense hash grid and a fixed Voronoi
partition (Mega-NeRF).

Data: camera readers for the nerfstudio / Blender ``transforms.json`` format with ray generation (:mod:`.cameras`),
Mega-NeRF scene folders (:mod:`.meganerf`) and the seeded ProceduralCity scene rendered by exact ray casting
(:mod:`.city`). Models: a pure-PyTorch multiresolution hash grid (:mod:`.hashgrid`) and the fields of
:mod:`.models`, rendered by :mod:`.render`. Registered as the ``nerf`` task through the ``zoo.tasks`` entry point;
builders import torch only when called.
"""

from __future__ import annotations

from zoo.task import PredictOption, TaskSpec, lazy

from .config import NerfConfig

TASK = TaskSpec(
    name="nerf",
    description="neural radiance fields of a large scene (ProceduralCity, your transforms.json or Mega-NeRF "
    "capture): Switch-NeRF MLP experts and Switch-NeRF++ hash-grid experts against dense NeRF, a dense hash grid and a "
    "fixed Voronoi partition; PSNR/SSIM per region, train and render speed, expert regions",
    config_cls=NerfConfig,
    build_datamodule=lazy("zoo.tasks.nerf.data:build_datamodule"),
    build_module=lazy("zoo.tasks.nerf.module:build_module"),
    model_info=lazy("zoo.tasks.nerf.data:model_info"),
    evaluate=lazy("zoo.tasks.nerf.evaluation:evaluate"),
    predict=lazy("zoo.tasks.nerf.predict:predict"),
    predict_input=None,
    predict_options=(
        PredictOption("pose", "JSON of camera-to-world poses (a 4x4 matrix, a list of them, or transforms.json "
                      "frames) to render", metavar="JSON"),
        PredictOption("orbit", "render N views on a circle around the scene as orbit.gif", type=int, metavar="N"),
        PredictOption("size", "rendered image height in pixels (default: the training size)", type=int,
                      metavar="PX"),
        PredictOption("scale", "enlarge the written images K times, nearest neighbour (default 4)", type=int,
                      metavar="K"),
    ),
    predict_out="folder for the rendered views (PNG, or orbit.gif) and their expert-assignment images",
    extras=("nerf",),
    requires=("PIL",),
    headline_metrics=("test/psnr", "test/ssim", "test/psnr_downtown", "test/psnr_suburb", "test/train_s_to_target",
                      "test/render_ms", "test/dropped_pct", "test/downtown_finest"),
)
