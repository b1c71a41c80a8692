"""The MoE model zoo.

``zoo.moe`` is the shared mixture-of-experts backbone (routers, expert banks, MoE layer, balance losses,
routing statistics), ``zoo.kernels`` the expert-FFN dispatch backends, ``zoo.module`` the LightningModule every
task trains through, and ``zoo.tasks`` the task packages. Importing ``zoo`` itself stays light: submodules load
on first use.
"""

from zoo._version import __version__

__all__ = ["__version__"]
