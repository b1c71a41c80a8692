"""Golden loss traces: the first training losses of every recipe's smoke run, committed under
``leaderboards/golden/<task>-<recipe>.loss.txt``.

A silent numerical change anywhere on the path (routing, kernels, data, init) moves these numbers, so the test
that compares them fails loudly long before a leaderboard drifts. Regenerate after an intended change with
``python -m zoo.golden --update`` and commit the diff with the reason.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import lightning as L

from zoo.config import recipe_names, repo_root, resolve_config
from zoo.io import atomic_write_text
from zoo.registry import TASKS
from zoo.task import build_from_config, quiet_trainer

STEPS = 10
RTOL = 1e-4


def golden_path(task: str, recipe: str) -> Path:
    return repo_root() / "leaderboards" / "golden" / f"{task}-{recipe}.loss.txt"


class _LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def trace(task: str, recipe: str, steps: int = STEPS) -> list[float] | None:
    """Losses of the first ``steps`` optimizer steps of the smoke run (seed 0), or None if nothing trains."""
    spec = TASKS.get(task)
    cfg, _ = resolve_config(spec.config_cls, task, recipe, smoke=True)
    if not spec.needs_fit(cfg):
        return None
    L.seed_everything(0, workers=True, verbose=False)
    cfg.seed = 0
    built = build_from_config(spec, cfg)
    if spec.trace is not None:
        return spec.trace(cfg, built.module, built.datamodule, steps)
    recorder = _LossRecorder()
    trainer = quiet_trainer(max_steps=steps, callbacks=[recorder], limit_val_batches=0, deterministic=True)
    trainer.fit(built.module, datamodule=built.datamodule)
    return recorder.losses


def recipes_with_traces() -> list[tuple[str, str]]:
    return [(task, recipe) for task in TASKS.names() for recipe in recipe_names(task)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.golden", description=__doc__)
    parser.add_argument("--update", action="store_true", help="rewrite the committed traces")
    args = parser.parse_args(argv)
    os.environ.setdefault("ZOO_KERNELS_AUTOTUNE", "0")  # traces use the fixed backend rule, never a timed choice
    for task, recipe in recipes_with_traces():
        losses = trace(task, recipe)
        if losses is None:
            continue
        text = "\n".join(f"{v:.8e}" for v in losses) + "\n"
        path = golden_path(task, recipe)
        if args.update:
            atomic_write_text(path, text)
            print(f"wrote {path}")
        else:
            print(f"{task}/{recipe}: {' '.join(f'{v:.4f}' for v in losses)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
