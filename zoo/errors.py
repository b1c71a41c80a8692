"""Errors that the ``zoo`` CLI turns into a one-line message and an exit code.

Every user-facing failure is a :class:`ZooError` subclass whose ``exit_code`` is the one documented in
docs/architecture.md (0 ok, 1 bug, 2 usage/config/bad input, 3 weights unavailable, 4 checksum mismatch,
5 leaderboard outside tolerance, 6 rendered table out of date). Bad-argument errors also subclass
``ValueError`` so library users can catch them the usual way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ZooError(Exception):
    """Base class of all errors the zoo raises on purpose."""

    exit_code: int = 1


class ZooValueError(ZooError, ValueError):
    """A bad argument, config value or input (exit 2)."""

    exit_code = 2


class WeightsUnavailableError(ZooError):
    """Weights could not be found offline or downloaded (exit 3)."""

    exit_code = 3


class ChecksumError(ZooError):
    """A file's sha256 differs from the manifest (exit 4)."""

    exit_code = 4


class ToleranceError(ZooError):
    """A reproduced leaderboard number is outside its tolerance (exit 5)."""

    exit_code = 5


class StaleTableError(ZooError):
    """A committed leaderboard table differs from what its results render to (exit 6)."""

    exit_code = 6


def bad_arg(name: str, given: Any, allowed: str | Iterable[Any]) -> ZooValueError:
    """Build the standard message for a bad argument: its name, what was given and what is allowed."""
    if not isinstance(allowed, str):
        allowed = "one of " + ", ".join(repr(a) for a in allowed)
    return ZooValueError(f"{name}={given!r} is not allowed; expected {allowed}")


def check_arg(ok: bool, name: str, given: Any, allowed: str | Iterable[Any]) -> None:
    """Raise :func:`bad_arg` unless ``ok``."""
    if not ok:
        raise bad_arg(name, given, allowed)


#: The largest seed numpy and Lightning accept: seeds are ints in [0, 2**32 - 1].
SEED_MAX = 2**32 - 1


def check_seed(seed: Any, name: str = "seed") -> None:
    """Refuse a seed numpy cannot take, which would otherwise fail deep inside a run after its files were made."""
    ok = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX
    check_arg(ok, name, seed, f"an int in [0, {SEED_MAX}]")


class MissingExtraError(ZooValueError):
    """A task's optional dependencies are not installed (exit 2): the message is the command that adds them."""

    def __init__(self, task: str, extra: str, dist: str, module: str) -> None:
        super().__init__(f"task {task!r} needs the {extra!r} extra: pip install '{dist}[{extra}]' "
                         f"(module {module!r} is missing)")
        self.task, self.extra, self.module = task, extra, module
