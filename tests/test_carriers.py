"""One table of data carriers (``zoo.carriers``): the data cards, pyproject's extras and the Makefile agree with
it, and no task package imports another."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import yaml

from zoo.carriers import CARRIERS, carrier, no_deps_pins
from zoo.errors import ZooValueError

REPO = Path(__file__).resolve().parents[1]


def _cards() -> list[tuple[str, dict]]:
    cards = []
    for path in sorted((REPO / "data").glob("*.yaml")):
        source = (yaml.safe_load(path.read_text()) or {}).get("source") or {}
        if isinstance(source, dict) and source.get("package"):
            cards.append((path.name, source))
    return cards


def test_every_data_card_names_a_carrier_at_its_pin():
    cards = _cards()
    assert cards
    by_dist = {c.dist: (name, c) for name, c in CARRIERS.items()}
    for card, source in cards:
        name, entry = by_dist[source["package"]] if source["package"] in by_dist else (source["package"],
                                                                                       carrier(source["package"]))
        assert str(source["version"]) == entry.version, card
        if "install" in source:
            assert entry.pin in source["install"], card


def test_regular_dependencies_are_pinned_in_pyproject_and_data_only_ones_in_the_makefile():
    pyproject = (REPO / "pyproject.toml").read_text()
    for entry in CARRIERS.values():
        if entry.no_deps:
            assert entry.dist not in pyproject, f"{entry.dist} is installed --no-deps by the Makefile only"
        else:
            assert f'"{entry.pin}"' in pyproject, f"pyproject must pin {entry.pin}"
    makefile = (REPO / "Makefile").read_text()
    assert "DATA_CARRIERS := $(shell $(PYTHON) -m zoo.carriers)" in makefile
    assert not [c.pin for c in CARRIERS.values() if c.pin in makefile], "carrier pins live in zoo/carriers.py only"
    out = subprocess.run([sys.executable, "-m", "zoo.carriers"], capture_output=True, text=True, check=True).stdout
    assert out.split() == no_deps_pins()


def test_installed_carriers_are_the_pinned_versions():
    for entry in CARRIERS.values():
        try:
            installed = version(entry.dist)
        except PackageNotFoundError:
            continue
        assert installed == entry.version, f"{entry.dist} {installed} installed; the data cards describe {entry.pin}"


def test_an_unknown_carrier_is_one_line():
    with pytest.raises(ZooValueError, match="'nope' is not a data carrier; expected one of"):
        carrier("nope")


def test_no_task_imports_another():
    tasks = sorted(p.name for p in (REPO / "tasks").iterdir() if (p / "__init__.py").exists())
    offenders = []
    for task in tasks:
        others = "|".join(t for t in tasks if t != task)
        pattern = re.compile(rf"^\s*(from|import)\s+zoo\.tasks\.({others})\b", re.MULTILINE)
        for path in (REPO / "tasks" / task).rglob("*.py"):
            if pattern.search(path.read_text()):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders
