"""Tests of ProceduralCity: exact intersections against a plain per-ray loop, depth and region consistency,
determinism, the transforms.json round trip and the downtown/suburb contrast."""

import numpy as np
import pytest

from zoo.errors import ZooValueError
from zoo.tasks.nerf.cameras import camera_rays, load_transforms, rays
from zoo.tasks.nerf.city import DOWNTOWN, SKY, SKY_REGION, SUBURB, ProceduralCity


@pytest.fixture(scope="module")
def city():
    return ProceduralCity(seed=0, views=16, size=24)


def _reference_hit(city, o, d):
    """Plain loop: nearest positive slab entry over boxes, then the ground square."""
    best, what = np.inf, -2
    for b in range(len(city)):
        near, far = -np.inf, np.inf
        for a in range(3):
            if d[a] == 0:
                if not city.lo[b, a] <= o[a] <= city.hi[b, a]:
                    near, far = np.inf, -np.inf
                continue
            t1, t2 = sorted(((city.lo[b, a] - o[a]) / d[a], (city.hi[b, a] - o[a]) / d[a]))
            near, far = max(near, t1), min(far, t2)
        if near <= far and 0 < near < best:
            best, what = near, b
    if d[2] < 0:
        t = -o[2] / d[2]
        x, y = o[0] + t * d[0], o[1] + t * d[1]
        if t < best and abs(x) <= 1 and abs(y) <= 1:
            best, what = t, -1
    return best, what


def test_intersections_match_a_plain_loop(city):
    rng = np.random.default_rng(1)
    origins = np.column_stack([rng.uniform(-2, 2, 300), rng.uniform(-2, 2, 300), rng.uniform(1.0, 3.0, 300)])
    targets = np.column_stack([rng.uniform(-1.2, 1.2, 300), rng.uniform(-1.2, 1.2, 300), rng.uniform(0, 0.6, 300)])
    directions = targets - origins
    directions[:5, :2] = 0.0  # straight down: zero components take the parallel-slab path
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    t, hit, normal = city.intersect(origins, directions)
    for i in range(len(origins)):
        ref_t, ref_hit = _reference_hit(city, origins[i], directions[i])
        assert hit[i] == ref_hit and (t[i] == ref_t == np.inf or np.isclose(t[i], ref_t))
    assert {-2, -1} < set(hit.tolist()) and (hit >= 0).sum() > 50
    solid = hit > -2
    assert np.allclose(np.linalg.norm(normal[solid], axis=1), 1)
    assert (np.einsum("ij,ij->i", normal[solid], directions[solid]) < 0).all()  # normals face the ray


def test_straight_down_ray_hits_box_top_at_known_depth(city):
    b = int(np.argmax(city.hi[:, 2]))  # the tallest box: nothing above its top
    x, y = (city.lo[b, :2] + city.hi[b, :2]) / 2
    c2w = np.eye(4)  # camera looks down -z = world down
    c2w[:3, 3] = [x, y, 5.0]
    rgb, depth, region = city.render(c2w, (1.0, 1.0, 0.5, 0.5), 1, 1)
    assert np.isclose(depth[0, 0], 5.0 - city.hi[b, 2], atol=1e-5)
    assert region[0, 0] == DOWNTOWN == city.region[b]
    # Off the scene, the same ray sees sky at infinite depth.
    c2w[:3, 3] = [5.0, 5.0, 5.0]
    rgb, depth, region = city.render(c2w, (1.0, 1.0, 0.5, 0.5), 1, 1)
    assert depth[0, 0] == np.inf and region[0, 0] == SKY_REGION and np.allclose(rgb[0, 0], SKY)


def test_depth_and_regions_are_consistent(city):
    views = city.views()
    assert views.depth.shape == (16, 24, 24) and views.images.dtype == np.float32
    poses, intrinsics = city.cameras()
    origins, directions = rays(views)
    for i in range(0, 16, 5):
        rgb, depth, region = city.render(poses[i], intrinsics[i], 24, 24, gain=city.gains[i])
        assert np.array_equal(depth, views.depth[i]) and np.allclose(np.round(rgb * 255) / 255, views.images[i])
        sky = region == SKY_REGION
        assert np.array_equal(sky, np.isinf(depth)) and np.allclose(rgb[sky], SKY)
        points = origins[i][~sky] + depth[~sky][:, None] * directions[i][~sky]
        assert (points[:, 2] > -1e-4).all() and (np.abs(points[:, :2]) <= 1 + 1e-4).all()
        assert np.array_equal(region[~sky] == DOWNTOWN, points[:, 0] < 0)  # boxes never straddle x = 0
        assert (region[~sky] != SKY_REGION).all() and set(np.unique(region)) <= {0, 1, 2}


def test_layout_stays_in_its_halves():
    city = ProceduralCity(seed=5)
    assert 40 <= len(city) <= 80
    down, sub = city.region == DOWNTOWN, city.region == SUBURB
    assert (city.hi[down, 0] <= 0).all() and (city.lo[sub, 0] >= 0).all() and down.sum() > sub.sum()
    assert (np.abs(city.lo[:, :2]) <= 1).all() and (np.abs(city.hi[:, :2]) <= 1).all()
    assert city.hi[down, 2].min() > city.hi[sub, 2].max()  # downtown towers, suburban houses


def test_downtown_has_more_structure(city):
    """Over the views, more pixels land on downtown boxes than on suburban ones, and downtown depth varies more."""
    poses, intrinsics = city.cameras()
    box_pixels = np.zeros(3, dtype=np.int64)
    for i in range(0, 16, 2):
        o, d = camera_rays(poses[i], intrinsics[i], 24, 24)
        _, hit, _ = city.intersect(o.reshape(-1, 3), d.reshape(-1, 3))
        np.add.at(box_pixels, city.region[hit[hit >= 0]], 1)
    assert box_pixels[DOWNTOWN] > 2 * box_pixels[SUBURB] > 0
    views = city.views()
    _, _, region = city.render(poses[0], intrinsics[0], 24, 24)
    assert views.depth[0][region == DOWNTOWN].std() > 0 and (region == SUBURB).any()


def test_exposure_gain_scales_surfaces_not_sky(city):
    poses, intrinsics = city.cameras()
    dim, _, region = city.render(poses[3], intrinsics[3], 24, 24, gain=0.5)
    bright, _, _ = city.render(poses[3], intrinsics[3], 24, 24, gain=1.0)
    solid = region != SKY_REGION
    assert np.allclose(dim[solid], 0.5 * bright[solid], atol=1e-6) and np.array_equal(dim[~solid], bright[~solid])
    assert len(set(np.round(city.gains, 6))) == len(city.gains)


def test_write_round_trips_and_is_deterministic(tmp_path, city):
    path = city.write(tmp_path / "a")
    loaded = load_transforms(path)
    views = city.views()
    assert np.array_equal(loaded.images, views.images) and np.array_equal(loaded.depth, views.depth)
    assert np.allclose(loaded.c2w, views.c2w) and np.allclose(loaded.intrinsics, views.intrinsics)
    test = load_transforms(path, split="test")
    assert test.appearance.tolist() == city.views("test").appearance.tolist() == [0, 8]
    assert len(city.views("train")) == 14
    ProceduralCity(seed=0, views=16, size=24).write(tmp_path / "b")
    ProceduralCity(seed=1, views=16, size=24).write(tmp_path / "c")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 1 + 2 * 16
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    image = "images/frame_0000.png"  # the cameras are the same for every seed, the scene is not
    assert (tmp_path / "a" / image).read_bytes() != (tmp_path / "c" / image).read_bytes()


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": -1}, "seed=-1"),
    ({"boxes": (10, 5)}, "boxes=\\(10, 5\\)"),
    ({"size": 2}, "size=2"),
    ({"views": 1}, "views=1"),
])
def test_bad_arguments_are_one_line(kwargs, message):
    with pytest.raises(ZooValueError, match=message) as info:
        ProceduralCity(**kwargs)
    assert "\n" not in str(info.value)
