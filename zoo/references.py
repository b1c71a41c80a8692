"""Published numbers on a leaderboard: reference rows that are cited, shown apart from the board's rows and never
recomputed.

A board's ``references`` list gives, per published method, its ``name``, the ``source`` (paper, table), a
``protocol`` note saying how the published setting compares with the board's, and its ``metrics`` (board metric key
→ published value). A reference may name the board ``row`` that reimplements the method, with a ``tolerance`` per
metric: the rendered table then shows how far the row's full-tier mean lies from the published value, and the
test suite holds the committed results to that tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from zoo.config import records_of
from zoo.errors import ZooValueError

Stat = tuple[float, float, int]  # mean, sample std, n


@dataclass(frozen=True)
class Reference:
    """A published result: ``metrics`` as published; ``row`` (optional) the board row that reimplements it, held to
    ``tolerance`` (metric key → largest |row mean − published|)."""

    name: str
    source: str
    protocol: str
    metrics: dict[str, float]
    row: str | None = None
    tolerance: dict[str, float] = field(default_factory=dict)


def parse_references(raw: Any, metrics: set[str], rows: set[str], where: str) -> tuple[Reference, ...]:
    """Validate a board's ``references`` list against its metric keys and row names.

    Args:
        where: the board file, for error messages.
    """
    refs = []
    for at, ref in records_of(raw, Reference, f"{where}: references"):
        for key in ("name", "source", "protocol"):
            if not isinstance(getattr(ref, key), str) or not getattr(ref, key).strip():
                raise ZooValueError(f"{at}: {key!r} must be a non-empty text")
        if not isinstance(ref.metrics, dict) or not ref.metrics:
            raise ZooValueError(f"{at}: 'metrics' must map metric keys to published values")
        for table in (ref.metrics, ref.tolerance):
            for key, value in table.items():
                if key not in metrics:
                    raise ZooValueError(f"{at}: unknown metric {key!r} (known: {', '.join(sorted(metrics))})")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ZooValueError(f"{at}: {key} must be a finite number, got {value!r}")
        if ref.row is not None and ref.row not in rows:
            raise ZooValueError(f"{at}: unknown row {ref.row!r} (rows: {', '.join(sorted(rows))})")
        if ref.tolerance and ref.row is None:
            raise ZooValueError(f"{at}: a 'tolerance' needs the 'row' it applies to")
        for key in ref.tolerance:
            if key not in ref.metrics:
                raise ZooValueError(f"{at}: a tolerance for {key!r}, which has no published value")
        refs.append(ref)
    return tuple(refs)


def deviations(ref: Reference, stats: dict[str, dict[str, Stat]]) -> dict[str, float]:
    """Row mean − published value, per published metric the reference's row has results for."""
    if ref.row is None:
        return {}
    row = stats.get(ref.row, {})
    return {key: row[key][0] - value for key, value in ref.metrics.items() if key in row}


def render_references(refs: tuple[Reference, ...], stats: dict[str, dict[str, Stat]],
                      metrics: list[tuple[str, str, str]], tier: str) -> list[str]:
    """The Markdown lines of the published-numbers table, with each reimplementing row's gap in ``tier``.

    Args:
        metrics: (key, display name, format) per board metric, in the board's order.
    """
    if not refs:
        return []
    shown = [m for m in metrics if any(m[0] in r.metrics for r in refs)]
    header = ["published", *(display for _, display, _ in shown), "source", "protocol", f"our row (`{tier}`)"]
    lines = ["## Published numbers (cited, not recomputed)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for ref in refs:
        cells = [f"*{ref.name}*", *(f"*{fmt.format(ref.metrics[key])}*" if key in ref.metrics else "—"
                                    for key, _, fmt in shown), ref.source, ref.protocol]
        gaps = deviations(ref, stats)
        if ref.row is None:
            cells.append("—")
        elif not gaps:
            cells.append(f"`{ref.row}`: no `{tier}` results")
        else:
            parts = []
            for key, display, _ in shown:
                if key in gaps:
                    tol = f" (tolerance {ref.tolerance[key]:g})" if key in ref.tolerance else ""
                    parts.append(f"{display} {gaps[key]:+.3g}{tol}")
            cells.append(f"`{ref.row}`: " + ", ".join(parts))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]
