"""Name → object registries (timm-style): ``register``, ``get`` with did-you-mean, ``names(pattern)``.

``TASKS`` holds every task's :class:`zoo.task.TaskSpec`. Tasks are found through the ``zoo.tasks`` entry-point
group, so the in-tree tasks (declared in this project's pyproject) and third-party packages register the same
way. Listing reads entry-point names only; a task's package is imported when the task is asked for, and a task
whose optional dependencies are missing fails with the one ``pip install`` line that adds them.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import importlib.util
import warnings
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from zoo.errors import MissingExtraError, ZooValueError

T = TypeVar("T")

ENTRY_POINT_GROUP = "zoo.tasks"


class Registry(Generic[T]):
    """A named collection of ``T``; ``kind`` (e.g. "task") appears in error messages.

    ``discover(registry)`` runs once, on first use, and may add objects with :meth:`register` or, to defer an
    import until the name is asked for, loaders with :meth:`register_lazy`.
    """

    def __init__(self, kind: str, discover: Callable[[Registry[T]], None] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lazy: dict[str, Callable[[], T]] = {}
        self._discover = discover
        self._discovered = discover is None

    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name``; a second registration of a name warns and replaces the first."""
        if name in self._items and self._items[name] is not obj:
            warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=2)
        self._lazy.pop(name, None)
        self._items[name] = obj
        return obj

    def register_lazy(self, name: str, loader: Callable[[], T]) -> None:
        """Add ``name`` now and build its object with ``loader()`` the first time it is asked for."""
        if name not in self._items:
            self._lazy[name] = loader

    def _ensure_discovered(self) -> None:
        if not self._discovered:
            self._discovered = True
            assert self._discover is not None
            self._discover(self)

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name raises with the closest known names."""
        self._ensure_discovered()
        if name in self._lazy:
            return self.register(name, self._lazy[name]())
        if name not in self._items:
            close = difflib.get_close_matches(name, self.names(), n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(self.names()) or "none"
            raise ZooValueError(f"unknown {self.kind} {name!r}{hint} (known: {known})")
        return self._items[name]

    def is_loaded(self, name: str) -> bool:
        """Whether ``name``'s object exists already (False for a name whose loader has not run)."""
        return name in self._items

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching the fnmatch ``pattern``, without loading anything."""
        self._ensure_discovered()
        return sorted(n for n in {*self._items, *self._lazy} if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        self._ensure_discovered()
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _missing(modules: tuple[str, ...] | list[str]) -> list[str]:
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent that fails to import, or a module blocked in sys.modules
            found = False
        if not found:
            missing.append(module)
    return missing


def _extra_of(ep: EntryPoint, name: str, extras: tuple[str, ...] = ()) -> tuple[str, str]:
    """``(extra, distribution)`` that installs task ``name``'s dependencies (the task's first declared extra, else
    an extra of the entry point's distribution named like the task)."""
    dist = ep.dist.name if ep.dist is not None else "moe-zoo"
    return (extras[0] if extras else name), dist


def _task_loader(ep: EntryPoint) -> Callable[[], Any]:
    def load() -> Any:
        try:
            spec = ep.load()
        except ModuleNotFoundError as err:
            extra, dist = _extra_of(ep, ep.name)
            raise MissingExtraError(ep.name, extra, dist, err.name or str(err)) from None
        missing = _missing(getattr(spec, "requires", ()))
        if missing:
            extra, dist = _extra_of(ep, ep.name, getattr(spec, "extras", ()))
            raise MissingExtraError(ep.name, extra, dist, missing[0])
        return spec

    return load


def _discover_tasks(registry: Registry) -> None:
    """Add a loader for every ``zoo.tasks`` entry point; each names a ``TaskSpec`` object."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        registry.register_lazy(ep.name, _task_loader(ep))


def task_summary(name: str) -> str:
    """Task ``name``'s one-line description, without importing the task unless it is loaded already."""
    return TASKS.get(name).description if TASKS.is_loaded(name) else summary_from_source(name)


def summary_from_source(name: str) -> str:
    """The ``description=`` of task ``name``'s ``TaskSpec(...)`` read from its package source (not imported),
    else the first line of the package docstring; empty when the source cannot be read."""
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    try:
        origin = importlib.util.find_spec(eps[name].module).origin  # type: ignore[union-attr]
        tree = ast.parse(open(origin, encoding="utf-8").read())  # type: ignore[arg-type]
    except (KeyError, ImportError, ValueError, OSError, SyntaxError, TypeError, AttributeError):
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "TaskSpec":
            for kw in node.keywords:
                if kw.arg == "description" and isinstance(kw.value, ast.Constant):
                    return str(kw.value.value)
    return ((ast.get_docstring(tree) or "").strip().splitlines() or [""])[0]


TASKS: Registry = Registry("task", _discover_tasks)
