"""Map the top-level ``tasks/`` and ``kernels/`` folders into the ``zoo`` import package.

The mapping lives here rather than in pyproject because ``packages.find`` cannot add the ``zoo.`` prefix, and a
static package list silently drops unlisted subpackages from wheels (see docs/architecture.md, "Packaging").
"""

from setuptools import find_packages, setup

MAPPED = ("tasks", "kernels")  # repo folder -> zoo.<folder>

packages = ["zoo", *(f"zoo.{p}" for p in find_packages(where="zoo"))]
packages += [f"zoo.{p}" for p in find_packages(include=[*MAPPED, *(f"{m}.*" for m in MAPPED)])]

setup(packages=packages, package_dir={"zoo": "zoo", **{f"zoo.{m}": m for m in MAPPED}})
