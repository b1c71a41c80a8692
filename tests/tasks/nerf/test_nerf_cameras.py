"""Tests of the transforms.json reader, the hold-out split and ray generation, on three 8x8 views written here."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from zoo.errors import ZooValueError
from zoo.tasks.nerf.cameras import Views, camera_rays, load_transforms, rays, split_every
from zoo.tasks.nerf.city import look_at

SIZE = 8
FOCAL = 6.0


def _poses() -> list[np.ndarray]:
    """Three rigid poses: straight down from z = 5, and two look-at cameras."""
    down = np.eye(4)
    down[2, 3] = 5.0
    return [down, look_at(np.array([3.0, -2.0, 1.5]), np.zeros(3)), look_at(np.array([-1.0, 4.0, 2.0]), np.ones(3))]


def _write(root, meta_extra=None, frames=None, images=None, name="transforms.json"):
    """Write three 8x8 PNG views and a transforms.json (global fl_x/cx/cy unless ``meta_extra`` replaces them)."""
    rng = np.random.default_rng(0)
    images = images or [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(3)]
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / f"r_{i}.png")
    if frames is None:
        frames = [{"file_path": f"./r_{i}", "transform_matrix": p.tolist()} for i, p in enumerate(_poses())]
    meta = {"fl_x": FOCAL, "cx": 3.5, "cy": 3.5} if meta_extra is None else meta_extra
    (root / name).write_text(json.dumps({**meta, "frames": frames}))
    return root / name


def test_reads_views_without_extension(tmp_path):
    views = load_transforms(_write(tmp_path))
    assert views.images.shape == (3, SIZE, SIZE, 3) and views.images.dtype == np.float32
    assert views.c2w.shape == (3, 4, 4) and views.intrinsics.tolist()[0] == [FOCAL, FOCAL, 3.5, 3.5]
    assert views.appearance.tolist() == [0, 1, 2] and views.names[0] == "./r_0" and views.depth is None
    assert np.allclose(views.images[0], np.asarray(Image.open(tmp_path / "r_0.png")) / 255)
    assert len(load_transforms(tmp_path)) == 3  # a folder holding transforms.json


def test_ray_from_known_pose_hits_known_point(tmp_path):
    views = load_transforms(_write(tmp_path))
    origins, directions = rays(views, 0)
    # Camera 0 sits at (0, 0, 5) looking down -z; pixel (3, 3) has its centre on the principal point (3.5, 3.5).
    assert np.allclose(origins[3, 3], [0, 0, 5]) and np.allclose(directions[3, 3], [0, 0, -1])
    # Camera 1 looks at the origin, so the same pixel's ray passes through it at the camera's distance.
    o, d = rays(views, 1)
    distance = math.sqrt(3**2 + 2**2 + 1.5**2)
    assert np.allclose(o[3, 3] + distance * d[3, 3], 0, atol=1e-5)
    # Pixel (row 0, column 7) of camera 0: centre (7.5, 0.5) is +4 px right and +3 px up of the principal point.
    expected = np.array([4 / FOCAL, 3 / FOCAL, -1])
    assert np.allclose(directions[0, 7], expected / np.linalg.norm(expected))


def test_rays_project_back_to_their_pixels(tmp_path):
    """Reference: a point on every ray, projected with the pinhole model, lands on that pixel's centre."""
    views = load_transforms(_write(tmp_path))
    origins, directions = rays(views)
    assert origins.shape == directions.shape == (3, SIZE, SIZE, 3)
    assert np.allclose(np.linalg.norm(directions, axis=-1), 1, atol=1e-6)
    for i in range(3):
        c2w = views.c2w[i].astype(np.float64)
        point = origins[i] + 2.5 * directions[i]
        cam = (point - c2w[:3, 3]) @ c2w[:3, :3]  # world -> camera: R^T (X - t)
        fx, fy, cx, cy = views.intrinsics[i]
        u, v = fx * cam[..., 0] / -cam[..., 2] + cx, -fy * cam[..., 1] / -cam[..., 2] + cy
        cols, rows = np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5)
        assert np.allclose(u, cols, atol=1e-4) and np.allclose(v, rows, atol=1e-4)
    subset_o, _ = rays(views, [2, 0])
    assert np.allclose(subset_o[0], origins[2])


def test_camera_angle_x_gives_the_same_rays_as_fl_x(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    angle = 2 * math.atan(0.5 * SIZE / FOCAL)
    by_focal = load_transforms(_write(tmp_path / "a", {"fl_x": FOCAL, "fl_y": FOCAL, "w": SIZE, "h": SIZE}))
    by_angle = load_transforms(_write(tmp_path / "b", {"camera_angle_x": angle}))
    assert np.allclose(by_angle.intrinsics, by_focal.intrinsics)
    for a, b in zip(rays(by_focal), rays(by_angle)):
        assert np.allclose(a, b, atol=1e-6)


def test_per_frame_intrinsics_override_global(tmp_path):
    frames = [{"file_path": f"r_{i}.png", "transform_matrix": p.tolist(), **({"fl_x": 9.0, "cx": 4.0} if i else {})}
              for i, p in enumerate(_poses())]
    views = load_transforms(_write(tmp_path, {"fl_x": FOCAL}, frames))
    assert views.intrinsics.tolist() == [[FOCAL, FOCAL, 4, 4], [9, 9, 4, 4], [9, 9, 4, 4]]


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[0, 0] = [0, 0, 0, 0]  # transparent -> white
    rgba[0, 1] = [0, 0, 0, 255]  # opaque black
    rgba[0, 2] = [255, 0, 0, 51]  # 20 % red over white
    rgb = [np.zeros((SIZE, SIZE, 3), np.uint8)] * 3
    path = _write(tmp_path, images=rgb)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "r_1.png")
    img = load_transforms(path).images[1]
    assert np.allclose(img[0, 0], 1) and np.allclose(img[0, 1], 0) and np.allclose(img[0, 2], [1, 0.8, 0.8])


def test_split_every_holds_out_every_kth():
    n = 17
    views = Views(np.zeros((n, 2, 2, 3), np.float32), np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
                  np.ones((n, 4), np.float32), np.arange(n), [str(i) for i in range(n)])
    train, test = split_every(views, 8)
    assert test.appearance.tolist() == [0, 8, 16] and len(train) == 14 and 8 not in train.appearance
    assert train.names[0] == "1"


def test_split_argument_of_load_transforms(tmp_path):
    views = load_transforms(_write(tmp_path), split="test")
    assert views.appearance.tolist() == [0]
    assert load_transforms(tmp_path, split="train").appearance.tolist() == [1, 2]


def _frames(**changes):
    """Frames of the three views with frame 1 changed (None deletes the key)."""
    frames = [{"file_path": f"r_{i}.png", "transform_matrix": p.tolist()} for i, p in enumerate(_poses())]
    for key, value in changes.items():
        if value is None:
            del frames[1][key]
        else:
            frames[1][key] = value
    return frames


def _scaled():
    m = _poses()[1].copy()
    m[:3, :3] *= 1.1
    return m.tolist()


def _reflected():
    m = _poses()[1].copy()
    m[:3, 0] *= -1
    return m.tolist()


BAD_FRAMES = {
    "missing file_path": (_frames(file_path=None), "missing key 'file_path'"),
    "missing matrix": (_frames(transform_matrix=None), "missing key 'transform_matrix'"),
    "3x4 matrix": (_frames(transform_matrix=np.eye(4)[:3].tolist()), "expected 4x4"),
    "ragged matrix": (_frames(transform_matrix=[[1, 0], [0, 1, 0, 0]]), "not a 4x4 matrix"),
    "nan matrix": (_frames(transform_matrix=np.full((4, 4), np.nan).tolist()), "non-finite"),
    "scaled rotation": (_frames(transform_matrix=_scaled()), "not rigid"),
    "reflection": (_frames(transform_matrix=_reflected()), "det = -1"),
    "singular": (_frames(transform_matrix=[[0, 0, 0, 0]] * 3 + [[0, 0, 0, 1]]), "not rigid"),
    "bad last row": (_frames(transform_matrix=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]),
                     "last row"),
    "missing image": (_frames(file_path="nope/r_9"), "not found"),
    "unreadable image": (_frames(file_path="garbage.png"), "cannot read image"),
    "mixed sizes": (_frames(file_path="small.png"), "must share a size"),
    "wrong w": (_frames(w=16), "w=16 but the image is 8x8"),
    "bad focal": (_frames(fl_x=-1), "fl_x=-1"),
    "distortion": (_frames(k1=0.1), "lens distortion k1=0.1"),
    "fisheye": (_frames(camera_model="OPENCV_FISHEYE"), "camera_model='OPENCV_FISHEYE'"),
    "non-object frame": (["r_0.png", "r_1.png"], "frame 0: expected an object"),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_frames_raise_one_line_naming_file_and_frame(tmp_path, case):
    frames, message = BAD_FRAMES[case]
    path = _write(tmp_path, frames=frames)
    (tmp_path / "garbage.png").write_bytes(b"not a png at all")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ZooValueError) as info:
        load_transforms(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text and message in text
    assert "frame 0" in text if case == "non-object frame" else "frame 1" in text


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"frames": []}', "non-empty 'frames'"),
    ('{"fl_x": 5}', "non-empty 'frames'"),
])
def test_bad_files_raise_one_line(tmp_path, content, message):
    path = tmp_path / "transforms.json"
    path.write_text(content)
    with pytest.raises(ZooValueError, match=message) as info:
        load_transforms(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_focal_and_missing_file(tmp_path):
    with pytest.raises(ZooValueError, match="frame 0 .*no focal length"):
        load_transforms(_write(tmp_path, {}))
    with pytest.raises(ZooValueError, match="frame 0 .*camera_angle_x=4.0 is not allowed"):
        load_transforms(_write(tmp_path, {"camera_angle_x": 4.0}))
    with pytest.raises(ZooValueError, match="cannot read"):
        load_transforms(tmp_path / "absent.json")
    with pytest.raises(ZooValueError, match="split='val'"):
        load_transforms(tmp_path, split="val")


def test_camera_rays_is_unit_and_centred():
    origins, directions = camera_rays(np.eye(4), (2.0, 2.0, 1.0, 1.0), 2, 2)
    assert np.allclose(origins, 0) and np.allclose(np.linalg.norm(directions, axis=-1), 1)
    # Pixel (0, 0): centre (0.5, 0.5) is left of and above the principal point (1, 1).
    assert directions[0, 0, 0] < 0 and directions[0, 0, 1] > 0 and directions[0, 0, 2] < 0
