"""RL policies: PMOE (probabilistic mixture-of-experts, Ren et al. 2021) with SAC, its comparison estimators
(Gumbel-softmax and score-function routing, the deterministic gate-weighted MoE, the unimodal K = 1 actor) on
gymnasium MuJoCo v5 tasks and the two-goal task. Registered as the ``rl`` task through the ``zoo.tasks`` entry
point; training runs the task's own environment loop (``TaskSpec.train``).
"""

from __future__ import annotations

from zoo.task import TaskSpec

from .config import RLConfig
from .evaluation import evaluate
from .module import EnvDataModule, build_module
from .predict import predict
from .training import trace, train


def build_datamodule(cfg: RLConfig) -> EnvDataModule:
    return EnvDataModule(cfg.env)


TASK = TaskSpec(
    name="rl",
    description="continuous control with mixture-of-experts policies (gymnasium MuJoCo v5, two-goal task): "
    "PMOE-SAC and its Gumbel/score-function/gate-weighted/unimodal comparisons; return, AUC, routing entropy",
    config_cls=RLConfig,
    build_datamodule=build_datamodule,
    build_module=build_module,
    predict=predict,
    predict_input_required=False,
    extras=("rl",),
    evaluate=evaluate,
    train=train,
    trace=trace,
)
