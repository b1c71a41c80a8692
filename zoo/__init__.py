"""The MoE model zoo.

``zoo.moe`` is the shared mixture-of-experts backbone (routers, expert banks, MoE layer, balance losses,
routing statistics), ``zoo.kernels`` the expert-FFN dispatch backends, ``zoo.module`` the LightningModule every
task trains through, and ``zoo.tasks`` the task packages. The Python API mirrors the CLI:
``zoo.list_models``, ``zoo.create_model``, ``zoo.load_task`` (see :mod:`zoo.api`). Importing ``zoo`` itself
stays light: submodules load on first use.
"""

from typing import Any

from zoo._version import __version__

__all__ = ["__version__", "create_model", "list_models", "load_task"]

_API = {"create_model", "list_models", "load_task"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from zoo import api

        return getattr(api, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
