"""Training and rendering rays/s of the nerf task's six fields, measured side by side in one run, as ratios to
Switch-NeRF next to Switch-NeRF++'s reported 8× faster training and 16× faster rendering.

What it measures
    For each row of the ``nerf.procedural-city`` board (its recipe: 512 rays a step, 16 stratified + 16
    importance samples, the CPU-scale fields of ``configs/nerf/``): rays/s of a full training step (both sampling
    passes, forward, MSE + balance loss, backward, Adam step) on ray batches drawn once from the ProceduralCity
    training views, and rays/s of rendering one whole 64×64 test view in eval mode (dropless routing, no
    gradients). The models are untrained: speed per step does not depend on the weights except through routing
    balance, which is near even at init. Rows are timed interleaved, in a fresh random order each repeat, after
    one untimed warm-up; the median is printed with the ratio of each row to ``switch``. Per-step speed is only
    half of "faster training": the board's ``train s to 20 dB`` also counts how many steps a row needs.

How to run it
    .venv/bin/python benchmarks/nerf_speed.py                       # 3 repeats of 5 steps
    .venv/bin/python benchmarks/nerf_speed.py --repeats 1 --steps 1 --threads 1 --json /tmp/nerf_speed.json

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

import torch
from cli_times import cpu_flags  # benchmarks/ is on sys.path when a script here runs

from zoo.config import resolve_config
from zoo.task import build_from_info
from zoo.tasks.nerf import TASK
from zoo.tasks.nerf.config import NerfConfig
from zoo.tasks.nerf.evaluation import render_image, view_rays

ROWS = {"mlp": "mlp_city", "hash": "hash_city", "voronoi": "voronoi_city", "switch": "switch_city",
        "hash_moe": "hash-moe_city", "hmohe": "hmohe_city"}
BASE = "switch"
PAPER = {"train": 8.0, "render": 16.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    cfg, _ = resolve_config(NerfConfig, "nerf", "hmohe_city")
    dm = TASK.build_datamodule(cfg)
    dm.setup("test")
    info = TASK.model_info(cfg, dm)
    torch.manual_seed(0)
    loader = iter(dm.train_dataloader())
    batches = [next(loader) for _ in range(args.steps)]
    height, width = dm.test.hw
    view = view_rays(dm.test, 0)
    modules, optimizers = {}, {}
    for row, recipe in ROWS.items():
        row_cfg, _ = resolve_config(NerfConfig, "nerf", recipe)
        module = build_from_info(TASK, row_cfg, info).module
        modules[row], optimizers[row] = module, torch.optim.Adam(module.parameters(), lr=row_cfg.optim.lr)

    def train(row: str) -> None:
        module, opt = modules[row], optimizers[row]
        module.train()
        for batch in batches:
            out = module.step(batch)
            loss = out.loss + sum(out.aux.values()) if out.aux else out.loss
            opt.zero_grad()
            loss.backward()
            opt.step()

    def render(row: str) -> None:
        render_image(modules[row].eval(), *view, height, width)

    def timed(fn: object) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    times: dict[str, dict[str, list[float]]] = {row: {"train": [], "render": []} for row in ROWS}
    for row in ROWS:  # warm-up
        train(row)
        render(row)
    for _ in range(args.repeats):
        order = list(ROWS)
        random.shuffle(order)
        for row in order:
            times[row]["train"].append(timed(lambda row=row: train(row)))
            times[row]["render"].append(timed(lambda row=row: render(row)))
    rays = sum(len(b[0]) for b in batches)
    results = {row: {"train_rays_s": rays / statistics.median(t["train"]),
                     "render_rays_s": height * width / statistics.median(t["render"]),
                     "render_ms": 1000 * statistics.median(t["render"])}
               for row, t in times.items()}
    header = {"cpu": platform.processor() or platform.machine(), "flags": cpu_flags(), "threads":
              torch.get_num_threads(), "load_before": load_before, "load_after": os.getloadavg()[0]}
    print(f"cpu {header['cpu']} flags {header['flags']} threads {header['threads']} "
          f"load {load_before:.2f} -> {header['load_after']:.2f}")
    print(f"{'row':<10} {'train rays/s':>13} {'× switch':>9} {'render rays/s':>14} {'render ms':>10} {'× switch':>9}")
    base = results[BASE]
    for row, r in results.items():
        print(f"{row:<10} {r['train_rays_s']:>13.0f} {r['train_rays_s'] / base['train_rays_s']:>9.2f} "
              f"{r['render_rays_s']:>14.0f} {r['render_ms']:>10.0f} {r['render_rays_s'] / base['render_rays_s']:>9.2f}")
    print(f"paper (Switch-NeRF++ vs Switch-NeRF, GPU, full scale): {PAPER['train']:.0f}× training, "
          f"{PAPER['render']:.0f}× rendering")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": results, "base": BASE, "paper": PAPER}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
