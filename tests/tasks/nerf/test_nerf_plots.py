"""Tests of the NeRF pictures: expert colours, nearest-neighbour enlargement, PNG and GIF round trips, the view and
region figures, and the board figures drawn from a fake results tree."""

import json
import math

import numpy as np
import pytest
from PIL import Image

import zoo.leaderboard
from zoo.errors import ZooValueError
from zoo.io import figure_png
from zoo.tasks.nerf import plots
from zoo.tasks.nerf.plots import (
    NONE_COLOUR,
    RENDERS_FILE,
    board_views_figure,
    expert_colours,
    expert_image,
    expert_region_figure,
    read_renders,
    speed_figure,
    speed_means,
    upscale,
    views_figure,
    write_gif,
    write_png,
)


def test_expert_colours_are_distinct_tab10_first_and_stable():
    colours = expert_colours(30)
    assert colours.dtype == np.uint8 and colours.shape == (30, 3)
    assert len({tuple(c) for c in colours.tolist()}) == 30
    assert colours[0].tolist() == [31, 119, 180]  # tab10 blue
    np.testing.assert_array_equal(expert_colours(4), colours[:4])
    assert tuple(NONE_COLOUR) not in {tuple(c) for c in colours.tolist()}
    for bad in (0, 31, 2.0):
        with pytest.raises(ZooValueError, match="num_experts"):
            expert_colours(bad)


def test_expert_image_colours_each_pixel():
    ids = np.array([[0, 1, -1], [2, 2, 0]], np.int16)
    image = expert_image(ids)
    colours = expert_colours(3)
    assert image.dtype == np.uint8 and image.shape == (2, 3, 3)
    for (i, j), e in np.ndenumerate(ids):
        assert image[i, j].tolist() == (list(NONE_COLOUR) if e < 0 else colours[e].tolist())
    assert (expert_image(np.full((2, 2), -1)) == NONE_COLOUR).all()
    with pytest.raises(ZooValueError, match=">= 0"):
        expert_image(np.array([[-2, 0]]))
    with pytest.raises(ZooValueError, match=r"\[H, W\]"):
        expert_image(np.zeros((2, 2), np.float32))


def test_upscale_is_nearest_neighbour():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (2, 3, 4, 3), dtype=np.uint8)
    big = upscale(frames, 3)
    assert big.shape == (2, 9, 12, 3) and big.dtype == np.uint8
    for n, y, x in np.ndindex(2, 9, 12):
        assert (big[n, y, x] == frames[n, y // 3, x // 3]).all()
    grey = rng.uniform(size=(2, 3))
    np.testing.assert_array_equal(upscale(grey, 2)[3, 5], grey[1, 2])
    np.testing.assert_array_equal(upscale(frames, 1), frames)
    with pytest.raises(ZooValueError, match="factor"):
        upscale(frames, 0)


def test_png_round_trip_and_atomic(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.uniform(-0.1, 1.1, (5, 6, 3)).astype(np.float32)
    path = write_png(tmp_path / "sub" / "a.png", image, scale=2)
    with Image.open(path) as img:
        back = np.asarray(img.convert("RGB"))
    expected = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(back, upscale(expected, 2))
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]  # no temporary file left
    with pytest.raises(ZooValueError, match=r"a\.jpg: expected a \.png"):
        write_png(tmp_path / "a.jpg", image)
    with pytest.raises(ZooValueError, match="dtype"):
        write_png(tmp_path / "b.png", image.astype(np.int32))
    assert not (tmp_path / "b.png").exists()


def test_gif_loops_forever_at_the_frame_rate(tmp_path):
    ids = np.stack([np.roll(np.arange(12).reshape(3, 4) % 4, k, axis=1) for k in range(3)])
    frames = np.stack([expert_image(i) for i in ids])  # few colours: GIF keeps them exactly
    path = write_gif(tmp_path / "spin.gif", frames, fps=5, scale=2)
    with Image.open(path) as img:
        assert img.n_frames == 3 and img.info["loop"] == 0 and img.size == (8, 6)
        for k in range(3):
            img.seek(k)
            assert img.info["duration"] == 200
            np.testing.assert_array_equal(np.asarray(img.convert("RGB")), upscale(frames[k], 2))
    write_gif(tmp_path / "float.gif", frames.astype(np.float32) / 255)
    with pytest.raises(ZooValueError, match=r"expected a \.gif"):
        write_gif(tmp_path / "spin.png", frames)
    with pytest.raises(ZooValueError, match="fps"):
        write_gif(tmp_path / "spin.gif", frames, fps=0)
    with pytest.raises(ZooValueError, match=r"\[n, H, W, 3\]"):
        write_gif(tmp_path / "spin.gif", frames[0])


def _views(n=2, size=8, seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(size=(n, size, size, 3)).astype(np.float32)
    pred = np.clip(gt + rng.normal(0, 0.1, gt.shape), 0, 1).astype(np.float32)
    experts = rng.integers(-1, 3, (n, size, size)).astype(np.int16)
    return gt, pred, experts


def test_views_figure_rows_columns_and_legend():
    gt, pred, experts = _views()
    fig = views_figure(gt, pred, experts, ["view 0", "view 8"])
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 * 4
    assert [ax.get_title() for ax in panels[:4]] == ["ground truth", "render", "|error|", "experts"]
    assert panels[4].get_ylabel() == "view 8"
    np.testing.assert_allclose(panels[2].images[0].get_array(), np.abs(pred[0] - gt[0]).mean(-1), rtol=1e-6)
    np.testing.assert_array_equal(panels[7].images[0].get_array(), expert_image(experts[1]))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["expert 0", "expert 1", "expert 2", "none"]
    assert len(figure_png(fig)) > 5000
    plain = views_figure(gt, pred, None, ["a", "b"])
    assert len([ax for ax in plain.axes if ax.images and ax.get_label() != "<colorbar>"]) == 2 * 3
    assert not plain.legends
    with pytest.raises(ZooValueError, match="titles"):
        views_figure(gt, pred, experts, ["one"])
    with pytest.raises(ZooValueError, match="pred has shape"):
        views_figure(gt, pred[:, :4], experts, ["a", "b"])
    with pytest.raises(ZooValueError, match="experts has shape"):
        views_figure(gt, pred, experts[:1], ["a", "b"])


def test_expert_region_figure_stacks_the_counts_and_marks_the_finest():
    table = np.array([[30, 10], [0, 60], [5, 5]])
    fig = expert_region_figure(table, finest=1)
    ax = fig.axes[0]
    bars = ax.containers
    np.testing.assert_array_equal([b.get_height() for b in bars[0]], table[:, 0])
    np.testing.assert_array_equal([b.get_height() for b in bars[1]], table[:, 1])
    np.testing.assert_array_equal([b.get_y() for b in bars[1]], table[:, 0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1\nfinest", "2"]
    assert "purity 0.864" in ax.get_title()  # (30 + 60 + 5) / 110
    assert len(figure_png(expert_region_figure(table))) > 5000
    with pytest.raises(ZooValueError, match="finest"):
        expert_region_figure(table, finest=3)


SPEC = """task: nerf
title: t
metrics:
  - {key: test/psnr, display: PSNR, better: higher, tolerance: 0.5}
  - {key: test/train_s_to_target, display: s to target, better: lower, kind: timing}
  - {key: test/render_ms, display: render ms, better: lower, kind: timing}
seeds: [0, 1]
rows:
  - {name: dense_mlp, recipe: dense-mlp}
  - {name: switch, recipe: switch-nerf}
  - {name: hashgate, recipe: hashgate-moe}
"""


def _renders(path, seed, experts_on):
    gt, pred, experts = _views(n=3, size=6, seed=seed)
    if not experts_on:
        experts[:] = -1
    np.savez(path, gt=gt, pred=pred, experts=experts, psnr=np.array([20.5, 21.0, 22.0], np.float32),
             names=np.array(["images/frame_0000.png", "images/frame_0008.png", "images/frame_0016.png"]))


@pytest.fixture
def board(tmp_path, monkeypatch):
    """Board ``b``: dense_mlp (seeds 0, 1; renders), switch (seed 1 only has renders; its seed 0 never reached the
    target), hashgate (seed 0, no run directory)."""
    monkeypatch.setattr(zoo.leaderboard, "boards_dir", lambda: tmp_path)
    (tmp_path / "b.yaml").write_text(SPEC)
    runs = {("dense_mlp", 0): (10.0, 2.0, True), ("dense_mlp", 1): (14.0, 4.0, True),
            ("switch", 0): (math.nan, 6.0, False), ("switch", 1): (8.0, 7.0, True), ("hashgate", 0): (5.0, 1.0, None)}
    for (row, seed), (to_target, render_ms, has_renders) in runs.items():
        run_dir = tmp_path / "runs" / f"{row}-{seed}"
        if has_renders is not None:
            run_dir.mkdir(parents=True)
            if has_renders:
                _renders(run_dir / RENDERS_FILE, seed, row != "dense_mlp")
        path = tmp_path / "results" / "b" / row / f"full-s{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics = {"test/psnr": 20.0, "test/train_s_to_target": to_target, "test/render_ms": render_ms}
        path.write_text(json.dumps({"board": "b", "tier": "full", "row": row, "seed": seed, "metrics": metrics,
                                    "params_total": 1, "params_active": 1, "wall_seconds": 1.0,
                                    "run_dir": str(run_dir)}))
    return tmp_path


def test_speed_means_average_finite_values_over_seeds(board):
    means = speed_means("b", "full")
    assert list(means) == ["dense_mlp", "switch", "hashgate"]  # the board's row order
    assert means["dense_mlp"] == {"test/train_s_to_target": 12.0, "test/render_ms": 3.0}
    assert means["switch"] == {"test/train_s_to_target": 8.0, "test/render_ms": 6.5}
    means["hashgate"]["test/render_ms"] = math.nan
    fig = speed_figure("b", means)
    left, right = fig.axes
    np.testing.assert_allclose([p.get_width() for p in left.patches], [12.0, 8.0, 5.0])
    np.testing.assert_allclose([p.get_width() for p in right.patches], [3.0, 6.5, 0.0])
    assert " —" in [t.get_text() for t in right.texts]


def test_board_views_figure_one_column_per_row_with_renders(board):
    runs = zoo.leaderboard.first_run_dirs("b", "full", RENDERS_FILE)
    assert {row: p.name for row, p in runs.items()} == {"dense_mlp": "dense_mlp-0", "switch": "switch-1"}
    renders = {row: read_renders(p / RENDERS_FILE) for row, p in runs.items()}
    fig = board_views_figure("b", renders)
    titled = {ax.get_title() for ax in fig.axes}
    assert {"dense_mlp\n20.50 dB", "switch\n20.50 dB", "ground truth\nimages/frame_0000.png"} <= titled
    expert_maps = [ax for ax in fig.axes if ax.images and ax.get_subplotspec().rowspan.start == 1]
    assert len(expert_maps) == 1  # the dense row has no experts: a note instead of a map
    np.testing.assert_array_equal(expert_maps[0].images[0].get_array(),
                                  expert_image(renders["switch"]["experts"][0].astype(np.int64)))
    with pytest.raises(ZooValueError, match="view"):
        board_views_figure("b", renders, view=3)


def test_main_writes_both_board_figures(board, capsys):
    assert plots.main(["b", "--tier", "full"]) == 0
    out = capsys.readouterr().out
    for name in ("b.speed.png", "b.views.png"):
        assert f"wrote {board / name}" in out
        with Image.open(board / name) as img:
            assert img.size[0] > 300


def test_main_without_results_or_renders(board, capsys):
    assert plots.main(["b", "--tier", "smoke"]) == 2
    assert "zoo leaderboard reproduce b --tier smoke" in capsys.readouterr().err
    for run in (board / "runs").glob(f"*/{RENDERS_FILE}"):
        run.unlink()
    assert plots.main(["b"]) == 0
    assert "b.views.png not drawn" in capsys.readouterr().err
    assert (board / "b.speed.png").exists() and not (board / "b.views.png").exists()


def test_read_renders_refuses_bad_files(tmp_path):
    bad = tmp_path / RENDERS_FILE
    bad.write_bytes(b"not an archive")
    with pytest.raises(ZooValueError, match="cannot read"):
        read_renders(bad)
    np.savez(bad, gt=np.zeros((2, 4, 4, 3)))
    with pytest.raises(ZooValueError, match="missing pred, experts, psnr, names"):
        read_renders(bad)
    np.savez(bad, gt=np.zeros((2, 4, 4, 3)), pred=np.zeros((2, 4, 4, 3)), experts=np.zeros((2, 4, 5)),
             psnr=np.zeros(2), names=np.array(["a", "b"]))
    with pytest.raises(ZooValueError, match="shapes"):
        read_renders(bad)
