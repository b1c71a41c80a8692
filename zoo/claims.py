"""A paper's claims on a leaderboard, judged from the board's results: held, not held or inconclusive.

A board's ``claims`` list states each claim in words (``claim``, with its ``source``) and as a test on one
``metric`` of one ``row``: better than another row (``than``), a mean of at least or at most a value
(``at_least`` / ``at_most``), or the ratio of the row's mean to another row's (``over``) against such a bound.
The verdict takes the seeds' spread into account: a claim holds when its margin exceeds the combined standard
deviation of the means involved, fails when it misses by more than that, and is inconclusive in between, so a
difference that the seeds cannot tell apart is never reported as a result. A row without results in a tier makes
its claims "not measured" there. The verdicts are part of the rendered board, so ``render --check`` fails when
the committed page no longer says what the results say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from zoo.config import records_of
from zoo.errors import ZooValueError

HELD, NOT_HELD, INCONCLUSIVE, NOT_MEASURED = "held", "not held", "inconclusive", "not measured"
Stat = tuple[float, float, int]  # mean, sample std, n


@dataclass(frozen=True)
class Claim:
    """One claim: ``row`` better than ``than``, or its mean (over ``over``'s mean, if given) at least / at most a
    bound, on ``metric``."""

    claim: str
    metric: str
    row: str
    source: str | None = None
    than: str | None = None
    over: str | None = None
    at_least: float | None = None
    at_most: float | None = None

    @property
    def rows(self) -> tuple[str, ...]:
        return tuple(r for r in (self.row, self.than, self.over) if r is not None)


def parse_claims(raw: Any, metrics: dict[str, str], rows: set[str], where: str) -> tuple[Claim, ...]:
    """Validate a board's ``claims`` list against its metrics (key → better) and row names.

    Args:
        where: the board file, for error messages.
    """
    claims = records_of(raw, Claim, f"{where}: claims")
    for at, claim in claims:
        _check_claim(claim, metrics, rows, at)
    return tuple(claim for _, claim in claims)


def _check_claim(c: Claim, metrics: dict[str, str], rows: set[str], at: str) -> None:
    if not isinstance(c.claim, str) or not c.claim.strip():
        raise ZooValueError(f"{at}: 'claim' must say the claim in words")
    if c.metric not in metrics:
        raise ZooValueError(f"{at}: unknown metric {c.metric!r} (known: {', '.join(metrics)})")
    for row in c.rows:
        if row not in rows:
            raise ZooValueError(f"{at}: unknown row {row!r} (rows: {', '.join(sorted(rows))})")
    bounds = [b for b in (c.at_least, c.at_most) if b is not None]
    for bound in bounds:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise ZooValueError(f"{at}: a bound must be a finite number, got {bound!r}")
    if c.than is not None:
        if bounds or c.over is not None:
            raise ZooValueError(f"{at}: 'than' takes no bound and no 'over'")
        if metrics[c.metric] == "none":
            raise ZooValueError(f"{at}: metric {c.metric!r} has no better direction, so 'than' cannot apply")
    elif len(bounds) != 1:
        raise ZooValueError(f"{at}: give 'than', or exactly one of 'at_least' and 'at_most'")


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict in one tier, with the numbers it was drawn from (``measured``) and the test
    (``test``)."""

    status: str
    test: str
    measured: str


def judge(c: Claim, stats: dict[str, dict[str, Stat]], better: str, fmt: str) -> Verdict:
    """The verdict of ``c`` from per-row stats (row → metric → (mean, std, n)); ``better`` and ``fmt`` are the
    metric's direction and format."""
    test = _test_text(c, better)
    missing = [r for r in c.rows if c.metric not in stats.get(r, {})]
    if missing:
        return Verdict(NOT_MEASURED, test, "no results for " + ", ".join(f"`{r}`" for r in missing))
    mean, std, n = stats[c.row][c.metric]
    shown = _stat_text(mean, std, n, fmt)
    if c.than is not None:
        other, other_std, other_n = stats[c.than][c.metric]
        margin = (other - mean) if better == "lower" else (mean - other)
        spread = math.hypot(std, other_std)
        return Verdict(_status(margin, spread), test, f"{shown} vs {_stat_text(other, other_std, other_n, fmt)}")
    if c.over is not None:
        base, base_std, base_n = stats[c.over][c.metric]
        if base == 0:
            return Verdict(INCONCLUSIVE, test, f"{shown} over a mean of 0")
        value = mean / base
        rel = math.hypot(std / mean if mean else 0.0, base_std / base)
        spread = abs(value) * rel
        measured = f"{value:.3g} ± {spread:.2g} ({shown} / {_stat_text(base, base_std, base_n, fmt)})"
    else:
        value, spread, measured = mean, std, shown
    if c.at_least is not None:
        margin = value - c.at_least
    else:
        assert c.at_most is not None
        margin = c.at_most - value
    return Verdict(_status(margin, spread), test, measured)


def _status(margin: float, spread: float) -> str:
    """Held when the margin clears the spread, not held when it falls short by more than the spread (a tie with
    no spread is inconclusive)."""
    if margin > spread:
        return HELD
    if margin < -spread:
        return NOT_HELD
    return INCONCLUSIVE


def _stat_text(mean: float, std: float, n: int, fmt: str) -> str:
    return fmt.format(mean) + (f" ± {fmt.format(std)}" if n > 1 else "") + f" ({n})"


def _test_text(c: Claim, better: str) -> str:
    if c.than is not None:
        return f"`{c.row}` {'<' if better == 'lower' else '>'} `{c.than}`"
    lhs = f"`{c.row}` / `{c.over}`" if c.over is not None else f"`{c.row}`"
    return f"{lhs} ≥ {c.at_least:g}" if c.at_least is not None else f"{lhs} ≤ {c.at_most:g}"


def render_claims(claims: tuple[Claim, ...], stats: dict[str, dict[str, Stat]],
                  metrics: dict[str, tuple[str, str, str]]) -> list[str]:
    """The Markdown lines of a tier's claims table (nothing when the board has no claims).

    Args:
        metrics: metric key → (display name, better, format).
    """
    if not claims:
        return []
    lines = ["Claims (a margin within the runs' combined std is inconclusive):", "",
             "| claim | test | measured (mean ± std (n)) | verdict |", "|---|---|---|---|"]
    for c in claims:
        display, better, fmt = metrics[c.metric]
        v = judge(c, stats, better, fmt)
        text = c.claim.strip() + (f" ({c.source})" if c.source else "")
        lines.append(f"| {text} | {v.test} on {display} | {v.measured} | **{v.status}** |")
    return [*lines, ""]


def tally(claims: tuple[Claim, ...], stats: dict[str, dict[str, Stat]],
          metrics: dict[str, tuple[str, str, str]]) -> str:
    """One cell for the README summary: how many claims got each verdict, e.g. "2 held, 1 inconclusive"."""
    if not claims:
        return "—"
    statuses = [judge(c, stats, metrics[c.metric][1], metrics[c.metric][2]).status for c in claims]
    order = (HELD, NOT_HELD, INCONCLUSIVE, NOT_MEASURED)
    return ", ".join(f"{statuses.count(s)} {s}" for s in order if s in statuses)
