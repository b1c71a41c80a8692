"""RL policies: PMOE (probabilistic mixture-of-experts, Ren et al. 2021) with SAC, its comparison estimators
(Gumbel-softmax and score-function routing, the deterministic gate-weighted MoE, the unimodal K = 1 actor) on
gymnasium MuJoCo v5 tasks and the two-goal task. Registered as the ``rl`` task through the ``zoo.tasks`` entry
point; training runs the task's own environment loop (``TaskSpec.train``).

The builders (named with ``lazy``) import torch, Lightning and gymnasium only when called, so ``zoo info rl`` stays fast.
"""

from __future__ import annotations

from zoo.task import PredictOption, TaskSpec, lazy

from .config import RLConfig

TASK = TaskSpec(
    name="rl",
    description="continuous control with mixture-of-experts policies (gymnasium MuJoCo v5, two-goal task): "
    "PMOE-SAC and its Gumbel/score-function/gate-weighted/unimodal comparisons; return, AUC, routing entropy",
    config_cls=RLConfig,
    build_datamodule=lazy("zoo.tasks.rl.module:build_datamodule"),
    build_module=lazy("zoo.tasks.rl.module:build_module"),
    model_info=lazy("zoo.tasks.rl.module:model_info"),
    evaluate=lazy("zoo.tasks.rl.evaluation:evaluate"),
    train=lazy("zoo.tasks.rl.training:train"),
    trace=lazy("zoo.tasks.rl.training:trace"),
    predict=lazy("zoo.tasks.rl.predict:predict"),
    predict_input="optional gymnasium environment id (default: the one the agent was trained on)",
    predict_input_required=False,
    predict_options=(
        PredictOption("episodes", "deterministic episodes to run (default 1)", type=int, metavar="N"),
        PredictOption("video", "film every episode into this .mp4 or .gif file", metavar="FILE"),
        PredictOption("plot", "draw the returns and the gate's weights over the steps (which expert acts when) "
                      "into this PNG", metavar="PNG"),
    ),
    extras=("rl",),
    requires=("gymnasium", "mujoco", "imageio"),
    headline_metrics=("test/return_mean", "test/return_std", "test/routing_entropy", "test/success", "train/auc"),
)
