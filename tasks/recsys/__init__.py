"""recsys: multi-task and behaviour-gated recommendation — HoME, MMoE, CGC/PLE, AW-MoE and their dense twins — on
MovieLens-100K's derived tasks, a seeded Kuaishou-like simulator with sparse tasks, and MMoE's synthetic
task-correlation benchmark.

Data (:mod:`.atomic`, :mod:`.movielens`, :mod:`.synthetic`), batches (:mod:`.data`), models (:mod:`.models`),
loss (:mod:`.module`), metrics (:mod:`.metrics`, :mod:`.evaluation`: AUC/GAUC per task, long-tail users,
collapse diagnostics), the model info that serves without data (:mod:`.serving`) and top-N serving
(:mod:`.predict`). Registered as the ``recsys`` task through the ``zoo.tasks`` entry point (see pyproject.toml).
This module imports only the config: the builders, named with ``lazy``, import the rest when called.
"""

from __future__ import annotations

from zoo.task import PredictOption, TaskSpec, lazy

from .config import RecsysConfig

TASK = TaskSpec(
    name="recsys",
    description="multi-task recommendation: HoME, MMoE, CGC/PLE, AW-MoE, DIN and shared-bottom twins on "
    "MovieLens-100K derived tasks, a Kuaishou-like simulator with sparse tasks and MMoE's synthetic data; "
    "AUC/GAUC per task, long-tail users, expert-collapse diagnostics, top-N items per user",
    config_cls=RecsysConfig,
    build_datamodule=lazy("zoo.tasks.recsys.data:build_datamodule"),
    build_module=lazy("zoo.tasks.recsys.module:build_module"),
    model_info=lazy("zoo.tasks.recsys.serving:model_info"),
    evaluate=lazy("zoo.tasks.recsys.evaluation:evaluate"),
    predict=lazy("zoo.tasks.recsys.predict:predict"),
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
