"""Object detection over a mix of datasets: DAMEX (dataset-aware mixture-of-experts detectors, Jain et al.,
NeurIPS 2023), a DETR-style detector whose decoder FFNs are MoE layers with each dataset's tokens routed to its own
expert, against a dense decoder, vanilla MoE, one model per dataset and a Dynamic-DINO-style split of a dense FFN.

Data: COCO JSON and Pascal VOC XML readers (:mod:`.coco`, :mod:`.voc`), the seeded six-domain Mini-UODB generator
(:mod:`.miniuodb`), the packaged real sets cut into tiles (:mod:`.tiles`) and the mix spec with its unified label
space and dataset-to-expert map (:mod:`.mix`). Registered as the ``detection`` task through the ``zoo.tasks`` entry
point; builders import torch, torchvision and timm only when called.
"""

from __future__ import annotations

from zoo.task import PredictOption, TaskSpec, lazy

from .config import DetectionConfig

TASK = TaskSpec(
    name="detection",
    description="object detection on a mix of datasets (Mini-UODB, real tree-crown and nuclei tiles, your COCO "
    "JSON): DAMEX dataset-aware MoE in a DETR-style decoder, vanilla MoE, dense, one model per dataset, "
    "split-FFN MoE; per-dataset COCO AP/AP50, routing accuracy, expert usage",
    config_cls=DetectionConfig,
    build_datamodule=lazy("zoo.tasks.detection.data:build_datamodule"),
    build_module=lazy("zoo.tasks.detection.module:build_module"),
    model_info=lazy("zoo.tasks.detection.data:model_info"),
    evaluate=lazy("zoo.tasks.detection.evaluation:evaluate"),
    predict=lazy("zoo.tasks.detection.predict:predict"),
    predict_input="an image file or a folder of images",
    predict_options=(
        PredictOption("score-thr", "lowest score of a kept box (default 0.3)", type=float, metavar="T"),
        PredictOption("plot", "PNG of the one input image with its boxes drawn", metavar="PNG"),
        PredictOption("out-dir", "folder for a PNG with boxes drawn per input image", metavar="DIR"),
        PredictOption("dataset", "the mix dataset the images come from (rows that use it at test time)",
                      metavar="NAME"),
    ),
    extras=("detection",),
    requires=("timm", "torchvision", "pycocotools", "scipy"),
    headline_metrics=("test/ap_mean", "test/ap50_mean", "test/ap50_small2", "test/routing_acc",
                      "test/usage_entropy_norm"),
)
