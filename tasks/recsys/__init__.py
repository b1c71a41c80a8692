"""recsys (issue 9): multi-task and behaviour-gated recommendation — HoME, MMoE, CGC/PLE, AW-MoE and their dense
twins — on MovieLens-100K's derived tasks, a seeded Kuaishou-like simulator with sparse tasks, and MMoE's
synthetic task-correlation benchmark.

Data (:mod:`.atomic`, :mod:`.movielens`, :mod:`.synthetic`), batches (:mod:`.data`), models (:mod:`.models`),
loss (:mod:`.module`), metrics (:mod:`.metrics`, :mod:`.evaluation`: AUC/GAUC per task, long-tail users,
collapse diagnostics) and top-N serving (:mod:`.predict`). Registered as the ``recsys`` task through the
``zoo.tasks`` entry point (see pyproject.toml).
"""

from __future__ import annotations

from zoo.task import TaskSpec

from .config import RecsysConfig
from .data import RecsysDataModule
from .evaluation import evaluate
from .models import RecsysModel, build_model
from .module import RecsysModule
from .predict import predict


def build_datamodule(cfg: RecsysConfig) -> RecsysDataModule:
    return RecsysDataModule(cfg.data)


def build_network(cfg: RecsysConfig, dm: RecsysDataModule) -> RecsysModel:
    """The ``model.arch`` network sized from the data's fields and tasks (HoME grouped as the data says)."""
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.arch == "home":
        kwargs.setdefault("task_groups", dm.task_groups)
    return build_model(cfg.model.arch, dm.input_spec(cfg.model.embed_dim), len(dm.tasks), **kwargs)


def build_module(cfg: RecsysConfig, dm: RecsysDataModule) -> RecsysModule:
    return RecsysModule(build_network(cfg, dm), cfg.optim, tasks=dm.tasks, regression=dm.regression)


TASK = TaskSpec(
    name="recsys",
    description="multi-task recommendation: HoME, MMoE, CGC/PLE, AW-MoE, DIN and shared-bottom twins on "
    "MovieLens-100K derived tasks, a Kuaishou-like simulator with sparse tasks and MMoE's synthetic data; "
    "AUC/GAUC per task, long-tail users, expert-collapse diagnostics, top-N items per user",
    config_cls=RecsysConfig,
    build_datamodule=build_datamodule,
    build_module=build_module,
    predict=predict,
    evaluate=evaluate,
    predict_input_required=False,
)
