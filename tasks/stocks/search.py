"""A small hyperparameter search inside one run, selected on validation IC only.

Qlib-style stock models are compared after tuning; to give two rows of a board the same tuning, the search is
part of the run: ``search.space`` lists values of a few training hyperparameters (:data:`SEARCHABLE`), the trials
are a deterministic list of their combinations (:func:`trial_list`), and :class:`~.model.StocksModule` trains them
one after the other in a single Lightning fit of ``trials × max_epochs`` epochs, every trial from the same initial
weights with a fresh optimizer. The module keeps the epoch with the best validation IC over all epochs of all
trials, which is the best epoch of the trial whose best validation IC is highest; the test days are never read
during the fit. A board row thus stays one run per seed, and two rows given the same ``search`` block get the
same trials by construction. Only hyperparameters that leave the network's shapes unchanged are searchable, so
the run's ``config.yaml`` rebuilds the chosen network for ``zoo eval``/``predict``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.errors import ZooValueError, check_arg

if TYPE_CHECKING:
    from .config import SearchConfig, StocksConfig

#: Searchable keys and the rule each value must meet.
SEARCHABLE: dict[str, tuple[str, Any]] = {
    "optim.lr": ("a positive number", lambda v: _number(v) and v > 0),
    "model.dropout": ("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    "model.balance": ("a number >= 0", lambda v: _number(v) and v >= 0),
    "model.router_warmup_epochs": ("an int >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and bool(np.isfinite(v))


def check_search(search: SearchConfig) -> None:
    """Refuse a malformed ``search`` block with one line naming the bad key or value.

    Raises:
        ZooValueError: an unknown key, a value list that is empty or not a list, a value breaking its key's rule,
            or ``trials`` outside [1, grid size].
    """
    check_arg(isinstance(search.space, dict), "search.space", search.space, "a mapping of keys to value lists")
    for key, values in search.space.items():
        check_arg(key in SEARCHABLE, "search.space key", key, sorted(SEARCHABLE))
        rule, ok = SEARCHABLE[key]
        check_arg(isinstance(values, list) and len(values) > 0, f"search.space.{key}", values, "a non-empty list")
        bad = [v for v in values if not ok(v)]
        check_arg(not bad, f"search.space.{key}", values, f"values that are each {rule}")
        check_arg(len(set(values)) == len(values), f"search.space.{key}", values, "distinct values")
    size = grid_size(search)
    if search.trials is not None:
        ok = isinstance(search.trials, int) and not isinstance(search.trials, bool) and 1 <= search.trials <= max(size, 1)
        check_arg(ok, "search.trials", search.trials, f"an int in [1, {max(size, 1)}] (the grid's size)")
    check_arg(isinstance(search.seed, int) and search.seed >= 0, "search.seed", search.seed, "an int >= 0")


def check_search_run(cfg: StocksConfig) -> None:
    """Refuse a search the run cannot do: a tabular arch (nothing is trained), no integer ``trainer.max_epochs``
    (the length of a trial) or a learning-rate schedule (it would not restart with each trial)."""
    from .config import NEURAL_ARCHS

    check_arg(cfg.model.arch in NEURAL_ARCHS, "search.space", cfg.search.space,
              f"empty for model.arch={cfg.model.arch!r} (only {', '.join(NEURAL_ARCHS)} are trained)")
    epochs = cfg.trainer.get("max_epochs")
    check_arg(isinstance(epochs, int) and epochs >= 1, "trainer.max_epochs", epochs,
              "a positive int when search.space is set (each trial trains that many epochs)")
    if cfg.trainer.get("max_steps", -1) not in (-1, None):
        raise ZooValueError(f"trainer.max_steps={cfg.trainer['max_steps']} cannot be used with search.space; "
                            "a trial is trainer.max_epochs epochs")
    check_arg(cfg.optim.scheduler == "none" and cfg.optim.warmup_steps == 0, "optim.scheduler",
              cfg.optim.scheduler, "'none' with optim.warmup_steps=0 when search.space is set")


def grid_size(search: SearchConfig) -> int:
    """Number of combinations in the search grid (0 without a space)."""
    return int(np.prod([len(v) for v in search.space.values()])) if search.space else 0


def trial_list(search: SearchConfig) -> list[dict[str, Any]]:
    """The trials, each a mapping key → value: the grid in order (the first key varies slowest), or ``trials`` of
    its combinations drawn without replacement with ``search.seed`` and kept in grid order. Empty without a space.
    """
    if not search.space:
        return []
    keys = list(search.space)
    grid = [dict(zip(keys, combo)) for combo in itertools.product(*search.space.values())]
    if search.trials is None or search.trials == len(grid):
        return grid
    picked = np.random.default_rng(search.seed).choice(len(grid), size=search.trials, replace=False)
    return [grid[i] for i in sorted(picked.tolist())]
