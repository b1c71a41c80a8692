"""recsys (issue 9): multi-task and behaviour-gated recommendation models (HoME, MMoE, PLE, AW-MoE).

Work in progress, not registered as a task yet: data (:mod:`.atomic`, :mod:`.movielens`, :mod:`.synthetic`),
metrics (:mod:`.metrics`) and models (:mod:`.models`) are in; the TaskSpec, datamodule and recipes are to come.
"""
