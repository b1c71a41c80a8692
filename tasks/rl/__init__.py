"""RL policies: PMOE (probabilistic mixture-of-experts, Ren et al. 2021) with SAC, its comparison estimators
(Gumbel-softmax and score-function routing, the deterministic gate-weighted MoE, the unimodal K = 1 actor) on
gymnasium MuJoCo v5 tasks and the two-goal task. Registered as the ``rl`` task through the ``zoo.tasks`` entry
point; training runs the task's own environment loop (``TaskSpec.train``).

The builders below import torch, Lightning and gymnasium only when called, so ``zoo info rl`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.task import PredictOption, TaskSpec

from .config import RLConfig


def _build_datamodule(cfg: RLConfig) -> Any:
    from .module import EnvDataModule

    return EnvDataModule(cfg.env)


def _model_info(cfg: RLConfig, dm: Any) -> dict[str, Any]:
    from .module import model_info

    return model_info(cfg, dm)


def _build_module(cfg: RLConfig, info: Any) -> Any:
    from .module import build_module

    return build_module(cfg, info)


def _evaluate(cfg: RLConfig, trainer: Any, module: Any, dm: Any) -> dict[str, float]:
    from .evaluation import evaluate

    return evaluate(cfg, trainer, module, dm)


def _train(cfg: RLConfig, module: Any, dm: Any, run_dir: Path, *, resume: Path | None = None,
           progress: bool = True) -> dict[str, float]:
    from .training import train

    return train(cfg, module, dm, run_dir, resume=resume, progress=progress)


def _trace(cfg: RLConfig, module: Any, dm: Any, steps: int) -> list[float]:
    from .training import trace

    return trace(cfg, module, dm, steps)


def _predict(loaded: Any, env_id: str | None = None, **options: Any) -> list[dict]:
    from .predict import predict

    return predict(loaded, env_id, **options)


TASK = TaskSpec(
    name="rl",
    description="continuous control with mixture-of-experts policies (gymnasium MuJoCo v5, two-goal task): "
    "PMOE-SAC and its Gumbel/score-function/gate-weighted/unimodal comparisons; return, AUC, routing entropy",
    config_cls=RLConfig,
    build_datamodule=_build_datamodule,
    build_module=_build_module,
    model_info=_model_info,
    evaluate=_evaluate,
    train=_train,
    trace=_trace,
    predict=_predict,
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
