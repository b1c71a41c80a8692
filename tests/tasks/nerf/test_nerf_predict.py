"""``zoo predict nerf`` from published tiny weights: the pose files it reads and the one-line reasons it refuses
others, the orbit cameras it makes, the orbit GIF and pose PNGs with their expert images and per-expert pixel shares,
in several argument orders, and exit 2 with nothing written for bad input."""

import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from zoo import hub, modelinfo
from zoo.cli import main
from zoo.config import resolve_config
from zoo.errors import ZooValueError
from zoo.task import fit_and_test
from zoo.tasks.nerf import TASK
from zoo.tasks.nerf.city import look_at
from zoo.tasks.nerf.config import NerfConfig
from zoo.tasks.nerf.plots import NONE_COLOUR, expert_colours
from zoo.tasks.nerf.predict import DEFAULT_SCALE, orbit_poses, read_poses

TINY = {"data.views": 16, "data.size": 64, "data.batch_rays": 64, "trainer.max_steps": 3,
        "eval.appearance_steps": 2, "eval.appearance_rays": 64, "render.samples": 4, "render.importance": 4,
        "model.width": 16, "model.color_width": 16, "model.depth": 2, "model.levels": 2, "model.gate_levels": 2,
        "model.log2_table": 10}
SIZE, EXPERTS = 64, 4
POSE = look_at(np.array([2.0, 0.5, 1.5]), np.array([0.0, 0.0, 0.1]))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: two OpenMP threads on a shared 2-core machine wait for each other at every layer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _publish(root, recipe):
    cfg, _ = resolve_config(NerfConfig, "nerf", recipe, layers=[TINY])
    result = fit_and_test(TASK, cfg, root / recipe, progress=False)
    plain, tensors = modelinfo.split(modelinfo.load_run(root / recipe))
    art = hub.publish({**result.module.model.state_dict(), **tensors}, cfg, arch=recipe.replace("_", "-"),
                      tag="tiny", out_dir=root / "w", extra={"task": "nerf", "model_info": plain})
    return str(art.weights_path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Published 3-step weights: the HMoHE field (4 experts) and the dense hash grid."""
    root = tmp_path_factory.mktemp("nerf-weights")
    return {"moe": _publish(root, "hmohe_city"), "dense": _publish(root, "hash_city")}


def _write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("data, count", [
    (POSE.tolist(), 1),
    ([POSE.tolist(), np.eye(4).tolist()], 2),
    ({"transform_matrix": POSE.tolist()}, 1),
    ({"camera_angle_x": 0.8, "frames": [{"file_path": "a", "transform_matrix": POSE.tolist()},
                                        {"file_path": "b", "transform_matrix": np.eye(4).tolist()}]}, 2),
], ids=["matrix", "list", "transform_matrix", "transforms_json"])
def test_read_poses_takes_every_documented_form(tmp_path, data, count):
    poses = read_poses(_write(tmp_path / "poses.json", data))
    assert len(poses) == count
    np.testing.assert_allclose(poses[0], POSE, atol=1e-12)
    if count == 2:
        np.testing.assert_array_equal(poses[1], np.eye(4))


def _scaled():
    m = POSE.copy()
    m[:3, :3] *= 2
    return m.tolist()


def _nan():
    m = POSE.copy()
    m[0, 3] = np.nan
    return m.tolist()


@pytest.mark.parametrize("data, message", [
    ("{not json", "not JSON"),
    (None, "no such file"),
    (np.eye(3).tolist(), "expected 4x4"),
    (_scaled(), "not rigid"),
    (_nan(), "non-finite"),
    ({"frames": []}, "non-empty list"),
    ({"frames": [{"transform_matrix": POSE.tolist()}, {"file_path": "b"}]}, r"frames\[1\] has no transform_matrix"),
    ([POSE.tolist(), _scaled()], r"\[1\]: transform_matrix rotation is not rigid"),
    (3, "expected a 4x4 matrix"),
], ids=["not_json", "missing", "3x3", "scaled", "nan", "no_frames", "frame_without_matrix", "second_bad", "number"])
def test_malformed_pose_files_are_one_line_naming_the_file(tmp_path, data, message):
    path = tmp_path / "poses.json" if data is None else _write(tmp_path / "poses.json", data)
    with pytest.raises(ZooValueError, match=message) as err:
        read_poses(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_orbit_cameras_circle_the_centre_and_look_at_it():
    centre, radius, height, count = np.array([0.3, -0.2, 0.1]), 2.5, 1.2, 6
    poses = orbit_poses({"centre": centre.tolist(), "radius": radius, "height": height}, count)
    assert len(poses) == count
    angles = []
    for c2w in poses:
        rotation, position = c2w[:3, :3], c2w[:3, 3]
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1) and c2w[3].tolist() == [0, 0, 0, 1]
        offset = position - centre
        assert np.hypot(*offset[:2]) == pytest.approx(radius) and offset[2] == pytest.approx(height)
        to_centre = -offset / np.linalg.norm(offset)
        np.testing.assert_allclose(-c2w[:3, 2], to_centre, atol=1e-12)  # OpenGL: the camera looks down -z
        assert c2w[2, 0] == pytest.approx(0, abs=1e-12)  # no roll: the image's x axis stays level
        angles.append(math.atan2(offset[1], offset[0]))
    steps = np.diff(np.unwrap(angles))
    np.testing.assert_allclose(steps, 2 * math.pi / count)


def _predict(capsys, argv):
    """Exit code, stdout and stderr of the CLI (argparse's own refusals exit instead of returning)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _shares_sum_to_one(rows):
    for row in rows:
        shares = [row[f"expert_{e}"] for e in range(EXPERTS)]
        assert all(0 <= s <= 1 for s in shares) and sum(shares) == pytest.approx(1), row
        assert 0 <= row["opaque"] <= 1


@pytest.mark.parametrize("order", ["options_last", "options_first", "mixed"])
def test_orbit_writes_gifs_and_rows_in_every_argument_order(weights, tmp_path, capsys, order):
    out = tmp_path / "orbit"
    w = ["--weights", weights["moe"]]
    argv = {"options_last": ["predict", "nerf", *w, "--orbit", 4, "--out", out, "--json"],
            "options_first": ["predict", *w, "--orbit", 4, "--out", out, "--json", "nerf"],
            "mixed": ["predict", "--orbit", 4, "nerf", *w, "--json", "--out", out]}[order]
    code, printed, err = _predict(capsys, argv)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["experts.gif", "experts.png", "orbit.gif", "views.csv"]
    side = SIZE * DEFAULT_SCALE
    for name in ("orbit.gif", "experts.gif"):
        with Image.open(out / name) as gif:
            assert gif.n_frames == 4 and gif.size == (side, side) and gif.info["loop"] == 0
            gif.seek(0)
            first = np.asarray(gif.convert("RGB"))
        if name == "experts.gif":  # few colours, so the GIF keeps them exactly: its first frame is experts.png
            np.testing.assert_array_equal(first, np.asarray(Image.open(out / "experts.png").convert("RGB")))
    rows = json.loads(printed)
    assert [r["view"] for r in rows] == [0, 1, 2, 3]
    assert {r["file"] for r in rows} == {str(out / "orbit.gif")}
    assert {r["experts_file"] for r in rows} == {str(out / "experts.gif")}
    _shares_sum_to_one(rows)


def _pose_file(tmp_path, count=2):
    poses = orbit_poses({"centre": [0.0, 0.0, 0.1], "radius": 2.2, "height": 1.3}, count)
    return _write(tmp_path / "poses.json", {"frames": [{"transform_matrix": p.tolist()} for p in poses]})


@pytest.mark.parametrize("order", ["options_last", "options_first"])
def test_poses_write_pngs_whose_expert_colours_match_the_rows(weights, tmp_path, capsys, order):
    out, poses = tmp_path / "views", _pose_file(tmp_path)
    options = ["--weights", weights["moe"], "--pose", poses, "--out", out, "--size", 20, "--scale", 2, "--json"]
    argv = ["predict", "nerf", *options] if order == "options_last" else ["predict", *options, "nerf"]
    code, printed, err = _predict(capsys, argv)
    assert code == 0, err
    assert f"wrote {out}" in err
    assert sorted(p.name for p in out.iterdir()) == ["experts_000.png", "experts_001.png", "view_000.png",
                                                     "view_001.png", "views.csv"]
    rows = json.loads(printed)
    assert [r["file"] for r in rows] == [str(out / "view_000.png"), str(out / "view_001.png")]
    _shares_sum_to_one(rows)
    colours = expert_colours(EXPERTS)
    for row in rows:
        assert Image.open(row["file"]).size == (40, 40)  # --size 20, times --scale 2
        pixels = np.asarray(Image.open(row["experts_file"]).convert("RGB")).reshape(-1, 3)
        grey = (pixels == NONE_COLOUR).all(-1)
        for e in range(EXPERTS):
            owned = (pixels == colours[e]).all(-1)
            assert row[f"expert_{e}"] == pytest.approx(owned.sum() / max(1, (~grey).sum()))
        assert grey.sum() + sum((pixels == c).all(-1).sum() for c in colours) == len(pixels)


@pytest.mark.parametrize("mode", ["orbit", "pose"])
def test_dense_weights_write_no_expert_images(weights, tmp_path, capsys, mode):
    out = tmp_path / "dense"
    given = ["--orbit", 2] if mode == "orbit" else ["--pose", _pose_file(tmp_path, 1)]
    code, printed, err = _predict(capsys, ["predict", "nerf", "--weights", weights["dense"], *given, "--out", out,
                                           "--json"])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["orbit.gif" if mode == "orbit" else "view_000.png", "views.csv"]
    rows = json.loads(printed)
    assert all(r["experts_file"] is None and not any(k.startswith("expert_") for k in r) for r in rows)


@pytest.mark.parametrize("given, message", [
    (["--pose", "POSES", "--orbit", 4, "--out", "OUT"], "exactly one of --pose"),
    (["--out", "OUT"], "exactly one of --pose"),
    (["--orbit", 4], "--out DIR is required"),
    (["--orbit", 1, "--out", "OUT"], "--orbit 1 is not allowed"),
    (["--orbit", "two", "--out", "OUT"], "--orbit: invalid int value"),
    (["--orbit", 4, "--scale", 0, "--out", "OUT"], "--scale 0 is not allowed"),
    (["--orbit", 4, "--size", 4, "--out", "OUT"], "--size 4 is not allowed"),
    (["--pose", "BAD", "--out", "OUT"], "not rigid"),
], ids=["both", "neither", "no_out", "orbit_1", "orbit_not_int", "scale_0", "size_4", "bad_pose"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(weights, tmp_path, capsys, given, message):
    out = tmp_path / "out"
    names = {"POSES": _pose_file(tmp_path), "BAD": _write(tmp_path / "bad.json", _scaled()), "OUT": out}
    argv = ["predict", "nerf", "--weights", weights["moe"], *(names.get(a, a) for a in given)]
    code, _, err = _predict(capsys, argv)
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and lines[0].startswith("zoo: error: "), err
    assert re.search(re.escape(message), lines[0]), lines[0]
    assert not out.exists()

