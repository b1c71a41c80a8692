"""recsys: multi-task and behaviour-gated recommendation — HoME, MMoE, CGC/PLE, AW-MoE and their dense twins — on
MovieLens-100K's derived tasks, a seeded Kuaishou-like simulator with sparse tasks, and MMoE's synthetic
task-correlation benchmark.

Data (:mod:`.atomic`, :mod:`.movielens`, :mod:`.synthetic`), batches (:mod:`.data`), models (:mod:`.models`),
loss (:mod:`.module`), metrics (:mod:`.metrics`, :mod:`.evaluation`: AUC/GAUC per task, long-tail users,
collapse diagnostics), the model info that serves without data (:mod:`.serving`) and top-N serving
(:mod:`.predict`). Registered as the ``recsys`` task through the ``zoo.tasks`` entry point (see pyproject.toml).
This module imports only the config: the builders import the rest when called.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from zoo.task import PredictOption, TaskSpec

from .config import RecsysConfig

if TYPE_CHECKING:
    from .data import RecsysDataModule
    from .models import RecsysModel
    from .module import RecsysModule


def build_datamodule(cfg: RecsysConfig) -> RecsysDataModule:
    from .data import RecsysDataModule

    return RecsysDataModule(cfg.data)


def model_info(cfg: RecsysConfig, dm: RecsysDataModule) -> dict[str, Any]:
    from .serving import model_info as extract

    return extract(cfg, dm)


def build_network(cfg: RecsysConfig, info: Mapping[str, Any]) -> RecsysModel:
    """The ``model.arch`` network sized by the info's inputs and tasks (HoME grouped as the data says)."""
    from .models import InputSpec, build_model

    kwargs = dict(cfg.model.kwargs)
    if cfg.model.arch == "home":
        kwargs.setdefault("task_groups", info["task_groups"])
    spec = InputSpec(embed_dim=cfg.model.embed_dim, **info["inputs"])
    return build_model(cfg.model.arch, spec, len(info["tasks"]), **kwargs)


def build_module(cfg: RecsysConfig, info: Mapping[str, Any]) -> RecsysModule:
    from .module import RecsysModule

    return RecsysModule(build_network(cfg, info), cfg.optim, tasks=tuple(info["tasks"]),
                        regression=bool(info["regression"]))


def evaluate(cfg: RecsysConfig, trainer: Any, module: Any, dm: RecsysDataModule) -> dict[str, float]:
    from .evaluation import evaluate as run

    return run(cfg, trainer, module, dm)


def predict(loaded: Any, input_path: Any = None, **options: Any) -> list[dict]:
    from .predict import predict as run

    return run(loaded, input_path, **options)


TASK = TaskSpec(
    name="recsys",
    description="multi-task recommendation: HoME, MMoE, CGC/PLE, AW-MoE, DIN and shared-bottom twins on "
    "MovieLens-100K derived tasks, a Kuaishou-like simulator with sparse tasks and MMoE's synthetic data; "
    "AUC/GAUC per task, long-tail users, expert-collapse diagnostics, top-N items per user",
    config_cls=RecsysConfig,
    build_datamodule=build_datamodule,
    build_module=build_module,
    model_info=model_info,
    evaluate=evaluate,
    predict=predict,
    predict_input="optional file of candidate item ids, one per line (default: every item the user has not "
    "rated in training)",
    predict_input_required=False,
    predict_options=(
        PredictOption("user", "the user to recommend items for, an id as in the data's user file (MovieLens "
                      "user_id; simulator users are 1..n)", metavar="ID"),
        PredictOption("top", "how many items to list (default 10)", type=int, metavar="N"),
        PredictOption("rank-by", "the task whose score orders the items (default: the config's predict.rank_by, "
                      "else the first task: watch on MovieLens)", metavar="TASK"),
        PredictOption("plot", "also draw the listed items' scores for every task as a heatmap", metavar="PNG"),
    ),
    extras=("recsys",),
    requires=("pandas", "sklearn"),
    headline_metrics=("test/mean_auc", "test/mean_gauc", "test/longtail/mean_auc", "test/longtail/mean_gauc",
                      "test/sparse/mean_auc", "test/sparse/mean_gauc", "test/mse_mean", "test/zero_act",
                      "test/min_shared_usage"),
)
