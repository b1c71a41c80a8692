"""Load and predict with every shipped weight while the training data is out of reach, and time it.

An audit hook refuses to open any file of the data carriers (the installed data packages) or of ``data/``
other than ``data/weights/``, and the carriers cannot be imported: a weight that still needed its training
data to be rebuilt (a scaler, a vocabulary, a size) fails here. Each weight is loaded by id (sha256-verified)
and serves one small prediction on a generated input; the table gives the load and predict wall times.

    .venv/bin/python benchmarks/shipped_weights.py           # table
    .venv/bin/python benchmarks/shipped_weights.py --json    # one JSON document (the test reads it)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _carrier_dirs() -> list[str]:
    from zoo.carriers import CARRIERS

    dirs = []
    for name in CARRIERS:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(os.path.realpath(p) for p in spec.submodule_search_locations)
    return dirs


def hide_training_data() -> None:
    """From now on this process cannot open carrier or fixture files, nor import the carriers."""
    from zoo.carriers import CARRIERS

    blocked = [*_carrier_dirs(), str(REPO / "data")]
    allowed = str(REPO / "data" / "weights")
    for name in CARRIERS:
        sys.modules[name] = None  # type: ignore[assignment]  # import fails, find_spec says "not there"

    def hook(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.realpath(os.fsdecode(args[0]))
            if any(path.startswith(b + os.sep) for b in blocked) and not path.startswith(allowed + os.sep):
                raise PermissionError(f"training data is hidden: {path}")

    sys.addaudithook(hook)


def _forecasting_input(tmp: Path) -> tuple[tuple, dict[str, Any]]:
    path = tmp / "series.csv"
    rows = ["id,timestamp,value"] + [f"s{k},{2000 + t // 12}-{t % 12 + 1:02d}-01,{100 + 10 * k + (t % 12) + 0.5 * t}"
                                     for k in range(3) for t in range(60)]
    path.write_text("\n".join(rows) + "\n")
    return (str(path),), {"horizon": 6}


def _stocks_input(tmp: Path) -> tuple[tuple, dict[str, Any]]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    days = pd.bdate_range("2021-01-04", periods=90)
    frames = []
    for k in range(6):
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days))))
        frames.append(pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "instrument": f"S{k}", "open": close * 0.999,
                                    "high": close * 1.01, "low": close * 0.99, "close": close,
                                    "volume": rng.integers(1_000, 5_000, len(days))}))
    path = tmp / "prices.csv"
    pd.concat(frames).to_csv(path, index=False)
    return (str(path),), {}


def _rl_input(tmp: Path) -> tuple[tuple, dict[str, Any]]:
    return (None,), {"episodes": 1}


def _recsys_input(tmp: Path, info: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    return (None,), {"user": info["user_tokens"][0], "top": 5}


def _video_anomaly_input(tmp: Path, info: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """A 3-snippet video for weights trained on video, else a ``.npy`` of snippet features."""
    import numpy as np

    rng = np.random.default_rng(0)
    if not info.get("encoder"):
        path = tmp / "features.npy"
        np.save(path, rng.normal(size=(20, 1, int(info["dim"]))).astype(np.float32))
        return (str(path),), {}
    import av

    path = tmp / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for frame in rng.integers(0, 255, (48, 96, 128, 3), dtype=np.uint8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return (str(path),), {}


def _detection_input(tmp: Path, info: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """A 96×80 RGB noise image with two bright squares (not a training image)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    pixels[10:30, 10:30] = 250
    pixels[40:70, 50:80] = (30, 200, 40)
    path = tmp / "image.png"
    Image.fromarray(pixels).save(path)
    return (str(path),), {"score_thr": 0.0}  # every candidate box: the image holds no training object


def _nerf_input(tmp: Path, info: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """Two views on the training cameras' orbit, written as a GIF into a folder (nerf takes no INPUT)."""
    return (), {"orbit": 2, "out": str(tmp / "nerf_out")}


def _graph_input(tmp: Path, info: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """Two 6-node cliques joined by one edge, random features of the weights' width, two labelled nodes per
    clique (the shots the prompts are tuned on)."""
    import numpy as np

    rng = np.random.default_rng(0)
    nodes = [f"{side}{i}" for side in "ab" for i in range(6)]
    edges = [(f"{s}{i}", f"{s}{j}") for s in "ab" for i in range(6) for j in range(i + 1, 6)] + [("a0", "b0")]
    (tmp / "edges.csv").write_text("".join(f"{u},{v}\n" for u, v in edges))
    width = int(info["dim"])
    lines = ["node,label," + ",".join(f"f{k}" for k in range(width))]
    for node in nodes:
        label = node[0] if node[1] in "12" else ""
        lines.append(f"{node},{label}," + ",".join(f"{v:.4f}" for v in rng.normal(size=width)))
    (tmp / "nodes.csv").write_text("\n".join(lines) + "\n")
    return (str(tmp / "edges.csv"),), {"nodes": str(tmp / "nodes.csv")}


def _audio_input(tmp: Path, info: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """A sentence to speak into a WAV (audio takes no INPUT)."""
    return (), {"text": "the small dog ran across the green field", "out": str(tmp / "say.wav")}


def run(hide: bool = True) -> list[dict[str, Any]]:
    from zoo import api

    if hide:
        hide_training_data()
    inputs = {"forecasting": _forecasting_input, "stocks": _stocks_input, "rl": _rl_input}
    start = time.perf_counter()
    import lightning  # noqa: F401  (the libraries every model needs, timed apart from the weights)

    results = [{"id": "(import torch + lightning)", "load_s": round(time.perf_counter() - start, 3), "predict_s": 0.0,
                "rows": 0, "datamodule": False}]
    with tempfile.TemporaryDirectory() as tmp:
        for entry in api.all_entries():
            start = time.perf_counter()
            loaded = api.load_weights(entry.id)
            loaded_s = time.perf_counter() - start
            task = loaded.task.name
            if task in ("recsys", "video_anomaly", "detection", "nerf", "graph", "audio"):
                args, options = {"recsys": _recsys_input, "video_anomaly": _video_anomaly_input,
                                 "detection": _detection_input, "nerf": _nerf_input,
                                 "graph": _graph_input, "audio": _audio_input}[task](Path(tmp), loaded.info)
            else:
                args, options = inputs[task](Path(tmp))
            home = os.environ.get("ZOO_HOME")
            os.environ["ZOO_HOME"] = str(Path(tmp) / "zoo_home")  # caches a predict may fill (video features)
            start = time.perf_counter()
            try:
                out = options.pop("out", str(Path(tmp) / "out.csv"))
                rows = loaded.task.predict(loaded, *args, out=out, **options)
            finally:
                if home is None:
                    os.environ.pop("ZOO_HOME")
                else:
                    os.environ["ZOO_HOME"] = home
            predict_s = time.perf_counter() - start
            results.append({"id": entry.id, "load_s": round(loaded_s, 3), "predict_s": round(predict_s, 3),
                            "rows": len(rows), "datamodule": loaded.datamodule is not None})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    results = run()
    if args.json:
        print(json.dumps(results))
        return 0
    from cli_times import cpu_flags  # this folder is on sys.path when the script runs

    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, flags: {cpu_flags()}; {args.threads} torch thread(s); "
          "carriers and data/ fixtures hidden")
    print(f"{'weights id':36} {'load s':>7} {'predict s':>10} {'rows':>5}")
    for r in results:
        print(f"{r['id']:36} {r['load_s']:7.2f} {r['predict_s']:10.2f} {r['rows']:5d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
