"""Video anomaly detection under weak (video-level) supervision: GS-MoE (class experts, temporal Gaussian
splatting pseudo-labels and a cross-attention gate; D'Amicantonio, Majhi et al., ICCV 2025) and the MIL baselines
it is measured against, on snippet features.

Data: feature releases in the RTFM/UR-DMU layout (UCF-Crime, XD-Violence; :mod:`.features`), the seeded SynthVAD
generator (:mod:`.synthvad`) and real video clips with seeded inserted anomalies, decoded and embedded by a frozen
timm backbone (:mod:`.clips`, :mod:`.video`). Registered as the ``video_anomaly`` task through the ``zoo.tasks``
entry point; builders import torch, scikit-learn and the video libraries only when called.
"""

from __future__ import annotations

from zoo.task import PredictOption, TaskSpec, lazy

from .config import VideoAnomalyConfig

TASK = TaskSpec(
    name="video_anomaly",
    description="weakly supervised video anomaly detection on snippet features (UCF-Crime/XD-Violence layout, "
    "SynthVAD, real clips with inserted anomalies): GS-MoE class experts + TGS + gate, Sultani MIL, RTFM-lite, "
    "UR-DMU-lite, k-means experts; frame AUC/AP, AUC_A, per-class AUC, expert masking",
    config_cls=VideoAnomalyConfig,
    build_datamodule=lazy("zoo.tasks.video_anomaly.data:build_datamodule"),
    build_module=lazy("zoo.tasks.video_anomaly.module:build_module"),
    model_info=lazy("zoo.tasks.video_anomaly.data:model_info"),
    evaluate=lazy("zoo.tasks.video_anomaly.evaluation:evaluate"),
    predict=lazy("zoo.tasks.video_anomaly.predict:predict"),
    predict_input="a .npy snippet-feature file ([T, D] or [T, crops, D], 16 frames per snippet) or a video file",
    predict_options=(
        PredictOption("plot", "PNG of the score over time, frames at or above the threshold shaded", metavar="PNG"),
        PredictOption("threshold", "score from which a frame is marked in the plot (default 0.5)", type=float,
                      metavar="S"),
        PredictOption("fps", "frames per second of the input (default: the video's own; 30 for .npy)", type=float,
                      metavar="FPS"),
    ),
    extras=("video_anomaly",),
    requires=("sklearn", "av", "timm"),
    headline_metrics=("test/auc", "test/auc_a", "test/ap", "test/ap_a", "test/worst_class_auc",
                      "test/delta_auc_mean"),
)
