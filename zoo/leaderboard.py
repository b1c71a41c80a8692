"""Leaderboards: spec YAML → ``reproduce`` (one results JSON per run) → ``render`` Markdown → ``check``.

A board ``leaderboards/<board>.yaml`` names its task, protocol, metrics (key, display name, format, which
direction is better, tolerance), seeds and rows (recipe, optional weights id, optional ``claimed`` paper numbers
kept apart from reproduced ones, optional ``config`` overrides and ``seeds``). A board-level ``config`` (dotted
keys) puts every recipe on the board's data; ``smoke_config`` is added in the smoke tier, before the recipes' own
smoke overrides; ``comparisons`` print ratios of two rows' means under each table.

``reproduce`` trains and tests every row × seed of a tier (``smoke`` applies each recipe's smoke overrides,
``full`` runs the recipe as written) and writes ``leaderboards/results/<board>/<row>/<tier>-s<seed>.json``.
``render`` turns whatever results exist into ``leaderboards/<board>.md`` (mean ± std (n), the value alone when
n = 1; best marked; params total/active; wall seconds of train + test per run; the reproduce command) and into
README blocks between ``<!-- board:<board> -->`` and ``<!-- /board:<board> -->``; ``render --check`` fails
(exit 6) if the committed files differ from what the results render to. ``check --tier smoke`` reruns the smoke
tier and fails (exit 5) when a metric moves beyond its tolerance.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.config import config_sha256, read_yaml, repo_root, resolve_config
from zoo.errors import StaleTableError, ToleranceError, ZooValueError, check_arg
from zoo.io import atomic_write_text

TIERS = ("smoke", "full")


def boards_dir() -> Path:
    return repo_root() / "leaderboards"


def board_names() -> list[str]:
    return sorted(p.stem for p in boards_dir().glob("*.yaml"))


BETTER = ("lower", "higher", "none")  # "none": a diagnostic (e.g. routing entropy), shown without arrow or bold


@dataclass(frozen=True)
class MetricSpec:
    key: str
    display: str
    format: str = "{:.4g}"
    better: str = "lower"
    tolerance: float = 0.0


@dataclass(frozen=True)
class RowSpec:
    """A row: a recipe, plus ``config`` (dotted keys) applied over it and over the board's ``config``.
    ``seeds`` overrides the board's seeds (one seed for deterministic rows such as statistical baselines)."""

    name: str
    recipe: str
    weights: str | None = None
    claimed: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Comparison:
    """A ratio printed under each tier's table: mean ``metric`` of ``numerator`` over that of ``denominator``."""

    label: str
    metric: str
    numerator: str
    denominator: str


@dataclass(frozen=True)
class BoardSpec:
    name: str
    task: str
    title: str
    protocol: str
    metrics: tuple[MetricSpec, ...]
    seeds: tuple[int, ...]
    rows: tuple[RowSpec, ...]
    claimed_source: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    smoke_config: dict[str, Any] = field(default_factory=dict)
    comparisons: tuple[Comparison, ...] = ()

    def row(self, name: str) -> RowSpec:
        for row in self.rows:
            if row.name == name:
                return row
        raise ZooValueError(f"board {self.name!r} has no row {name!r} (rows: {', '.join(r.name for r in self.rows)})")


def load_spec(name: str) -> BoardSpec:
    """Parse and validate ``leaderboards/<name>.yaml``."""
    path = boards_dir() / f"{name}.yaml"
    if not path.exists():
        import difflib

        close = difflib.get_close_matches(name, board_names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ZooValueError(f"unknown board {name!r}{hint} (known: {', '.join(board_names()) or 'none'})")
    data = read_yaml(path)
    try:
        metrics = tuple(MetricSpec(**m) for m in data["metrics"])
        rows = tuple(RowSpec(**{**r, "seeds": tuple(r["seeds"]) if "seeds" in r else None}) for r in data["rows"])
        spec = BoardSpec(
            name=name,
            task=data["task"],
            title=data.get("title", name),
            protocol=data.get("protocol", "").strip(),
            metrics=metrics,
            seeds=tuple(data.get("seeds", [0])),
            rows=rows,
            claimed_source=data.get("claimed_source"),
            config=dict(data.get("config") or {}),
            smoke_config=dict(data.get("smoke_config") or {}),
            comparisons=tuple(Comparison(**c) for c in data.get("comparisons") or ()),
        )
    except (KeyError, TypeError) as err:
        raise ZooValueError(f"{path}: malformed board spec ({err})") from None
    for m in metrics:
        check_arg(m.better in BETTER, f"{path.name}: metrics.better", m.better, BETTER)
    if len({r.name for r in rows}) != len(rows):
        raise ZooValueError(f"{path}: duplicate row names")
    for c in spec.comparisons:
        for row in (c.numerator, c.denominator):
            spec.row(row)
    return spec


def results_dir(board: str) -> Path:
    return boards_dir() / "results" / board


def result_path(board: str, row: str, tier: str, seed: int) -> Path:
    return results_dir(board) / row / f"{tier}-s{seed}.json"


def state_dict_sha256(model: Any) -> str:
    """sha256 of the model's state dict serialised as safetensors: the weights hash of a results file."""
    import hashlib

    from safetensors.torch import save

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    return hashlib.sha256(save(state, metadata={"format": "pt"})).hexdigest()


def run_row(spec: BoardSpec, row: RowSpec, tier: str, seed: int, *, progress: bool = False) -> dict[str, Any]:
    """Train and test one row with one seed; return its results record (nothing is written but the run dir)."""
    from zoo.api import load_task
    from zoo.moe import count_params
    from zoo.task import fit_and_test, make_run_dir, provenance, write_run_files

    task = load_task(spec.task)
    smoke = tier == "smoke"
    layers = (spec.config, row.config, spec.smoke_config if smoke else {})
    cfg, _ = resolve_config(task.config_cls, spec.task, row.recipe, smoke=smoke, layers=layers)
    cfg.seed = seed
    run_dir = make_run_dir(spec.task, row.recipe, seed)
    write_run_files(run_dir, cfg, {"board": spec.name, "row": row.name, "tier": tier})
    start = time.perf_counter()
    result = fit_and_test(task, cfg, run_dir, progress=progress)
    wall = time.perf_counter() - start
    model = result.module.model
    total, active = count_params(model)
    command = f"zoo leaderboard reproduce {spec.name} --tier {tier} --rows {row.name} --seeds {seed}"
    return {
        "board": spec.name,
        "row": row.name,
        "tier": tier,
        "seed": seed,
        "recipe": row.recipe,
        "metrics": result.metrics,
        "params_total": total,
        "params_active": active,
        "weights_sha256": state_dict_sha256(model),
        "config_sha256": config_sha256(cfg),
        "wall_seconds": round(wall, 2),
        "run_dir": str(run_dir),
        **provenance(command.split()),
    }


def reproduce(
    board: str, tier: str, *, rows: list[str] | None = None, seeds: list[int] | None = None, progress: bool = False
) -> list[Path]:
    """Train and test each row × seed of ``tier``; write one results JSON per run. Returns their paths."""
    check_arg(tier in TIERS, "--tier", tier, TIERS)
    spec = load_spec(board)
    written = []
    for row in [spec.row(r) for r in rows] if rows else spec.rows:
        row_seeds = row.seeds if row.seeds is not None else spec.seeds
        for seed in [s for s in seeds if s in row_seeds] if seeds is not None else row_seeds:
            record = run_row(spec, row, tier, seed, progress=progress)
            path = result_path(board, row.name, tier, seed)
            atomic_write_text(path, json.dumps(record, indent=1))
            written.append(path)
    return written


def load_results(board: str, tier: str) -> dict[str, list[dict[str, Any]]]:
    """Results files of a tier, by row; a file from another board or tier is an error."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(results_dir(board).glob(f"*/{tier}-s*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ZooValueError(f"{path}: not valid JSON ({err})") from None
        if record.get("board") != board or record.get("tier") != tier:
            raise ZooValueError(f"{path}: results of board {record.get('board')!r} tier {record.get('tier')!r}, not {board!r} {tier!r}")
        out.setdefault(record["row"], []).append(record)
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def render_board(spec: BoardSpec) -> str:
    """The Markdown of a board from its results: one table per tier that has results."""
    lines = [
        f"# {spec.title}",
        "",
        f"<!-- generated by `zoo leaderboard render {spec.name}` from leaderboards/results/{spec.name}/; do not edit -->",
        "",
        spec.protocol,
        "",
    ]
    for tier in TIERS:
        results = load_results(spec.name, tier)
        if not results:
            continue
        lines += [f"## Tier `{tier}`", "", _table(spec, tier, results), ""]
        lines += _comparisons(spec, results)
        lines.append(f"Reproduce: `zoo leaderboard reproduce {spec.name} --tier {tier}` then `zoo leaderboard render {spec.name}`.")
        lines.append("")
    if len(lines) == 6:
        lines += ["No results yet: run `zoo leaderboard reproduce " + spec.name + " --tier smoke`.", ""]
    return "\n".join(lines).rstrip() + "\n"


def _table(spec: BoardSpec, tier: str, results: dict[str, list[dict[str, Any]]]) -> str:
    stats: dict[str, dict[str, tuple[float, float, int]]] = {}
    for row, records in results.items():
        stats[row] = {}
        for m in spec.metrics:
            values = [r["metrics"][m.key] for r in records if m.key in r["metrics"] and math.isfinite(r["metrics"][m.key])]
            if values:
                mean, std = _mean_std(values)
                stats[row][m.key] = (mean, std, len(values))
    best = {}
    for m in spec.metrics:
        means = {row: s[m.key][0] for row, s in stats.items() if m.key in s}
        if means and m.better != "none":
            best[m.key] = (min if m.better == "lower" else max)(means, key=means.get)
    has_claimed = any(r.claimed for r in spec.rows)
    arrows = {"lower": " ↓", "higher": " ↑", "none": ""}
    header = ["row", *(f"{m.display}{arrows[m.better]}" for m in spec.metrics), "params (active)", "wall s", "recipe"]
    if has_claimed:
        header.append("claimed (paper)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in spec.rows:
        if row.name not in results:
            continue
        records = results[row.name]
        cells = [row.name]
        for m in spec.metrics:
            if m.key not in stats[row.name]:
                cells.append("—")
                continue
            mean, std, n = stats[row.name][m.key]
            spread = f" ± {m.format.format(std)}" if n > 1 else ""  # one run (deterministic rows): no spread
            text = f"{m.format.format(mean)}{spread} ({n})"
            cells.append(f"**{text}**" if best.get(m.key) == row.name else text)
        first = records[0]
        cells.append(f"{first['params_total']:,} ({first['params_active']:,})")
        wall = statistics.fmean(r["wall_seconds"] for r in records)
        cells.append(f"{wall:.1f}")
        overrides = "".join(f" `{k}={v}`" for k, v in row.config.items())
        cells.append(f"`{row.recipe}`{overrides}")
        if has_claimed:
            cells.append(", ".join(f"{k} {v}" for k, v in row.claimed.items()) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _comparisons(spec: BoardSpec, results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per comparison whose two rows have results: the ratio of their means."""
    lines = []
    for c in spec.comparisons:
        means = []
        for row in (c.numerator, c.denominator):
            values = [r["metrics"][c.metric] for r in results.get(row, []) if c.metric in r["metrics"]]
            means.append(statistics.fmean(values) if values else None)
        if None in means or means[1] == 0:
            continue
        lines.append(f"- {c.label}: **{means[0] / means[1]:.2f}×** (mean `{c.metric}` of `{c.numerator}` / "
                     f"`{c.denominator}`)")
    return [*lines, ""] if lines else []


def _readme_with_block(readme: str, board: str, block: str) -> str:
    start, end = f"<!-- board:{board} -->", f"<!-- /board:{board} -->"
    if start not in readme or end not in readme:
        return readme
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block.strip()}\n{end}{tail}"


def render(boards: list[str], check: bool = False) -> list[Path]:
    """Write (or, with ``check``, compare) each board's Markdown and its README block; returns stale files."""
    readme_path = repo_root() / "README.md"
    readme = readme_path.read_text() if readme_path.exists() else ""
    new_readme = readme
    stale = []
    for name in boards:
        spec = load_spec(name)
        text = render_board(spec)
        md = boards_dir() / f"{name}.md"
        if not md.exists() or md.read_text() != text:
            stale.append(md)
            if not check:
                atomic_write_text(md, text)
        table = text.split("## Tier", 1)
        block = f"**{spec.title}** ([full table](leaderboards/{name}.md))\n\n" + ("## Tier" + table[1] if len(table) > 1 else "")
        new_readme = _readme_with_block(new_readme, name, block.replace("## Tier", "Tier"))
    if new_readme != readme:
        stale.append(readme_path)
        if not check:
            atomic_write_text(readme_path, new_readme)
    if check and stale:
        raise StaleTableError(
            f"out of date: {', '.join(str(p.relative_to(repo_root())) for p in stale)}; run `zoo leaderboard render --all`"
        )
    return stale


def check_tier(board: str, tier: str = "smoke", seeds: list[int] | None = None) -> None:
    """Rerun every committed run of ``tier`` (only ``seeds``, if given) and compare its metrics with the committed
    ones (exit 5 if off). The reruns are compared in memory; the committed results files are never touched.
    """
    check_arg(tier in TIERS, "--tier", tier, TIERS)
    spec = load_spec(board)
    committed = load_results(board, tier)
    if not committed:
        raise ZooValueError(f"board {board!r} has no committed {tier} results to check against")
    problems = []
    for row_name, records in committed.items():
        for record in records:
            if seeds is not None and record["seed"] not in seeds:
                continue
            fresh = run_row(spec, spec.row(row_name), tier, record["seed"])
            for m in spec.metrics:
                old, new = record["metrics"].get(m.key), fresh["metrics"].get(m.key)
                if old is not None and new is not None and abs(new - old) > m.tolerance + 1e-12:
                    problems.append(f"{row_name} s{record['seed']} {m.key}: {old:.6g} → {new:.6g} (tolerance {m.tolerance})")
    if problems:
        raise ToleranceError(f"{board} {tier}: " + "; ".join(problems))
