"""Training and inference images/s of the detection task's decoder rows, measured side by side in one run.

What it measures
    For each row (``dense``, ``moe`` = DAMEX's decoder, ``split`` after sparsifying, ``per_dataset``) of the
    board's base recipe (``configs/detection/damex_miniuodb.yaml``: 64-px images, d 64, 20 queries, two-stage
    references, focal loss): images/s of a full training step (forward, Hungarian matching, set and routing
    losses, backward, AdamW step) on batches of 16 augmented Mini-UODB + real-tile images drawn once, and of
    inference (eval forward + postprocess) on batches of 64; plus images/s of the data pipeline alone (draw,
    augment, letterbox, collate), which runs in the training process. Rows are timed interleaved, in a fresh
    random order each repeat, after one untimed warm-up; the median of the repeats is printed with the ratio
    to the dense row. Everything runs on the CPU with torch's thread count.

How to run it
    .venv/bin/python benchmarks/detection_speed.py                 # 5 repeats of 10 steps
    .venv/bin/python benchmarks/detection_speed.py --repeats 3 --steps 5 --threads 1 --json /tmp/det_speed.json

How to read it
    The header gives the CPU, its SIMD flags, torch's threads and the 1-minute load average before and after;
    well above 0 means other processes shared the cores. Compare only ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from typing import Any

import torch
from cli_times import cpu_flags  # benchmarks/ is on sys.path when a script here runs

from zoo.config import resolve_config
from zoo.task import build_from_info
from zoo.tasks.detection import TASK
from zoo.tasks.detection.config import DetectionConfig

ROWS = {"dense": "dense_miniuodb", "moe": "damex_miniuodb", "split": "split_miniuodb",
        "per_dataset": "per-dataset_miniuodb"}


def _timed(fn: Any, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    cfg, _ = resolve_config(DetectionConfig, "detection", "damex_miniuodb")
    dm = TASK.build_datamodule(cfg)
    dm.setup("fit")
    info = TASK.model_info(cfg, dm)
    torch.manual_seed(0)
    loader = iter(dm.train_dataloader())
    train_batches = [next(loader) for _ in range(args.steps)]
    test_batch = next(iter(dm.test_dataloader()))
    data_s = _timed(lambda: next(loader), args.steps) / args.steps
    modules, optimizers = {}, {}
    for row, recipe in ROWS.items():
        row_cfg, _ = resolve_config(DetectionConfig, "detection", recipe)
        module = build_from_info(TASK, row_cfg, info).module
        if row == "split":
            module.model.sparsify()
        modules[row], optimizers[row] = module, torch.optim.AdamW(module.parameters(), lr=1e-4)

    def train(row: str) -> None:
        module, opt = modules[row], optimizers[row]
        module.train()
        for batch in train_batches:
            out = module.step(batch)
            loss = out.loss + sum(out.aux.values()) if out.aux else out.loss
            opt.zero_grad()
            loss.backward()
            opt.step()

    @torch.inference_mode()
    def infer(row: str) -> None:
        from zoo.tasks.detection.models import postprocess

        module = modules[row].eval()
        size = test_batch.images.shape[-1]
        for _ in range(args.steps):
            out = module.run(test_batch.images, test_batch.dataset_ids, test_batch.expert_ids)
            postprocess(out, torch.tensor([[size, size]] * len(test_batch)))

    times: dict[str, dict[str, list[float]]] = {row: {"train": [], "infer": []} for row in ROWS}
    for module in modules.values():
        module.log = lambda *a, **k: None  # step() logs its parts; there is no trainer here
    for row in ROWS:  # warm-up
        train(row)
        infer(row)
    for _ in range(args.repeats):
        order = list(ROWS)
        random.shuffle(order)
        for row in order:
            times[row]["train"].append(_timed(lambda row=row: train(row), 1))
            times[row]["infer"].append(_timed(lambda row=row: infer(row), 1))
    train_images = sum(len(b) for b in train_batches)
    results = {row: {"train_img_s": train_images / statistics.median(t["train"]),
                     "infer_img_s": args.steps * len(test_batch) / statistics.median(t["infer"])}
               for row, t in times.items()}
    header = {"cpu": platform.processor() or platform.machine(), "flags": cpu_flags(), "threads":
              torch.get_num_threads(), "load_before": load_before, "load_after": os.getloadavg()[0],
              "data_img_s": cfg.data.batch_size / data_s}
    print(f"cpu {header['cpu']} flags {header['flags']} threads {header['threads']} "
          f"load {load_before:.2f} -> {header['load_after']:.2f}")
    print(f"data pipeline (draw + augment + collate): {header['data_img_s']:.0f} img/s")
    print(f"{'row':<12} {'train img/s':>12} {'× dense':>8} {'infer img/s':>12} {'× dense':>8}")
    base = results["dense"]
    for row, r in results.items():
        print(f"{row:<12} {r['train_img_s']:>12.0f} {r['train_img_s'] / base['train_img_s']:>8.2f} "
              f"{r['infer_img_s']:>12.0f} {r['infer_img_s'] / base['infer_img_s']:>8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
