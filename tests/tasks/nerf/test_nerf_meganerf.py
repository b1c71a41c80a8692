"""Tests of the Mega-NeRF scene reader and the scene dispatcher, on ProceduralCity views written here in Mega-NeRF's
layout with their poses turned into its convention (world x down, y right, z back; OpenGL camera axes)."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.errors import ZooValueError
from zoo.tasks.nerf.cameras import camera_rays, load_transforms, rays
from zoo.tasks.nerf.city import ProceduralCity
from zoo.tasks.nerf.meganerf import DRB_TO_Z_UP, load_meganerf, load_scene

SIZE = 16
VAL = (1, 5)  # view indices written to val/; the other six go to train/


def _metadata(c2w_drb, size=SIZE, focal=None):
    f = 0.5 * size / np.tan(np.radians(22.5)) if focal is None else focal
    return {"W": size, "H": size, "c2w": torch.tensor(c2w_drb[:3], dtype=torch.float32),
            "intrinsics": torch.tensor([f, f, size / 2, size / 2], dtype=torch.float32),
            "distortion": torch.zeros(4)}


def _write_view(root, folder, stem, image, meta):
    for sub in ("metadata", "rgbs"):
        (root / folder / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(root / folder / "rgbs" / f"{stem}.png")
    torch.save(meta, root / folder / "metadata" / f"{stem}.pt")


@pytest.fixture(scope="module")
def city():
    return ProceduralCity(seed=0, size=SIZE, views=8).views()


@pytest.fixture(scope="module")
def scene(tmp_path_factory, city):
    """The eight city views in the Mega-NeRF layout, stems 000000..000007."""
    root = tmp_path_factory.mktemp("mega")
    torch.save({"origin_drb": torch.tensor([10.0, -3.0, 2.0]), "pose_scale_factor": 50.0}, root / "coordinates.pt")
    for i in range(len(city)):
        c2w_drb = np.eye(4)
        c2w_drb[:3] = DRB_TO_Z_UP.T @ city.c2w[i, :3].astype(np.float64)
        assert np.allclose(city.intrinsics[i], _metadata(c2w_drb)["intrinsics"].numpy())
        _write_view(root, "val" if i in VAL else "train", f"{i:06d}", city.images[i], _metadata(c2w_drb))
    return root


@pytest.fixture
def copy(scene, tmp_path):
    return shutil.copytree(scene, tmp_path / "scene")


def _train_index():
    return [i for i in range(8) if i not in VAL]


def test_reads_the_same_views_rays_and_images(scene, city):
    for split, index in (("train", _train_index()), ("test", list(VAL))):
        views = load_meganerf(scene, split)
        expected = city.subset(index)
        assert views.images.shape == (len(index), SIZE, SIZE, 3) and views.images.dtype == np.float32
        assert np.array_equal(views.images, expected.images)
        assert np.allclose(views.c2w, expected.c2w, atol=1e-6)
        assert np.allclose(views.intrinsics, expected.intrinsics)
        (o, d), (o_ref, d_ref) = rays(views), rays(expected)
        assert np.allclose(o, o_ref, atol=1e-6) and np.allclose(d, d_ref, atol=1e-6)
        assert views.appearance.tolist() == index  # stems sort in view order across both folders
        folder = "train" if split == "train" else "val"
        assert views.names == [f"{folder}/rgbs/{i:06d}.png" for i in index] and views.depth is None


def test_rays_match_mega_nerf_ray_formula(scene):
    """Their rays: directions [(u - cx) / fx, -(v - cy) / fy, -1] at pixel centres times c2w[:, :3]^T in the drb
    world; ours must be the same rays turned into the z-up world."""
    views = load_meganerf(scene, "test")
    for i, stem in enumerate(("000001", "000005")):
        meta = torch.load(scene / "val" / "metadata" / f"{stem}.pt", weights_only=True)
        c2w, (fx, fy, cx, cy) = meta["c2w"].double().numpy(), meta["intrinsics"].double().numpy()
        o, d = rays(views, i)
        for v in range(SIZE):
            for u in range(SIZE):
                local = np.array([(u + 0.5 - cx) / fx, -(v + 0.5 - cy) / fy, -1.0])
                direction = c2w[:, :3] @ local
                direction /= np.linalg.norm(direction)
                assert np.allclose(d[v, u], DRB_TO_Z_UP @ direction, atol=1e-6)
                assert np.allclose(o[v, u], DRB_TO_Z_UP @ c2w[:, 3], atol=1e-6)


def test_nadir_camera_looks_down(tmp_path):
    """Hand-worked: in drb a camera 2 units up (x = -2) with right = +y, up = -z, back = -x (pointing at the sky)
    looks straight down, so its principal ray is (0, 0, -1) in the z-up world and hits the ground at distance 2."""
    torch.save({"origin_drb": torch.zeros(3), "pose_scale_factor": 1.0}, tmp_path / "coordinates.pt")
    nadir = np.eye(4)
    nadir[:3, :3] = np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]]).T  # columns: right, up, back
    nadir[:3, 3] = [-2.0, 0.0, 0.0]
    image = np.zeros((4, 4, 3))
    for folder in ("train", "val"):
        _write_view(tmp_path, folder, folder, image, _metadata(nadir, size=4, focal=2.0))
    views = load_meganerf(tmp_path, "train")
    assert np.allclose(views.c2w[0], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]], atol=1e-6)
    o, d = rays(views, 0)
    # Pixel (row 1, column 2) has its centre (2.5, 1.5): half a pixel right and up of the principal point (2, 2).
    expected = np.array([0.5 / 2.0, 0.5 / 2.0, -1.0])
    assert np.allclose(d[1, 2], expected / np.linalg.norm(expected), atol=1e-6)
    hit = o[1, 2] + 2.0 / -d[1, 2, 2] * d[1, 2]
    assert np.allclose(hit, [0.5, 0.5, 0.0], atol=1e-6)
    assert load_meganerf(tmp_path, "train").appearance.tolist() == [0]  # "train.pt" sorts before "val.pt"
    assert load_meganerf(tmp_path, "test").appearance.tolist() == [1]


def test_downscale_box_filters_and_scales_intrinsics(scene, city):
    views = load_meganerf(scene, "train", downscale=2)
    full = city.subset(_train_index())
    assert views.hw == (SIZE // 2, SIZE // 2)
    blocks = full.images.reshape(len(full), SIZE // 2, 2, SIZE // 2, 2, 3).mean(axis=(2, 4))
    assert np.allclose(views.images, blocks, atol=1e-6)
    assert np.allclose(views.intrinsics, full.intrinsics / 2)
    # The downscaled pixel (r, c) covers full pixels 2r..2r+1, so its centre ray is the full-size ray through the
    # shared corner of those four pixels.
    o, d = rays(views, 0)
    fx, fy, cx, cy = full.intrinsics[0]
    o_ref, d_ref = camera_rays(full.c2w[0], (fx, fy, cx - 0.5, cy - 0.5), SIZE, SIZE)
    assert np.allclose(d, d_ref[::2, ::2], atol=1e-6) and np.allclose(o, o_ref[::2, ::2], atol=1e-6)
    with pytest.raises(ZooValueError, match="000000.pt.*not divisible by downscale=3"):
        load_meganerf(scene, "train", downscale=3)


def test_bad_arguments(scene):
    with pytest.raises(ZooValueError, match="split"):
        load_meganerf(scene, "val")
    with pytest.raises(ZooValueError, match="downscale"):
        load_meganerf(scene, "train", downscale=0)


def _rewrite(root, folder, stem, **changes):
    path = root / folder / "metadata" / f"{stem}.pt"
    meta = torch.load(path, weights_only=True)
    meta.update(changes)
    torch.save({k: v for k, v in meta.items() if v is not None}, path)


def _not_rigid(root):
    meta = torch.load(root / "train" / "metadata" / "000002.pt", weights_only=True)
    c2w = meta["c2w"].clone()
    c2w[:, 0] *= 2.0
    _rewrite(root, "train", "000002", c2w=c2w)


def _metadata_size(root):
    for i in _train_index():
        _rewrite(root, "train", f"{i:06d}", W=SIZE * 2, H=SIZE * 2)


def _mixed_sizes(root):
    image = np.zeros((8, 8, 3))
    _write_view(root, "train", "000003", image, _metadata(np.eye(4), size=8))


def _duplicate_stem(root):
    for sub, ext in (("metadata", "pt"), ("rgbs", "png")):
        shutil.copy(root / "train" / sub / f"000000.{ext}", root / "val" / sub / f"000000.{ext}")


# (what to break, the file the error must name, a phrase it must contain)
BAD = {
    "no coordinates": (lambda r: (r / "coordinates.pt").unlink(), "coordinates.pt", "not found"),
    "coordinates key": (lambda r: torch.save({"origin_drb": torch.zeros(3)}, r / "coordinates.pt"), "coordinates.pt",
                        "pose_scale_factor"),
    "metadata key": (lambda r: _rewrite(r, "train", "000002", intrinsics=None), "000002.pt", "intrinsics"),
    "not a dict": (lambda r: torch.save(torch.eye(3), r / "train" / "metadata" / "000003.pt"), "000003.pt",
                   "holds a Tensor"),
    "not tensors": (lambda r: torch.save({"W": Image.new("RGB", (1, 1))}, r / "train/metadata/000004.pt"),
                    "000004.pt", "weights_only"),
    "garbage": (lambda r: (r / "train" / "metadata" / "000006.pt").write_bytes(b"not a torch file"), "000006.pt",
                "weights_only"),
    "no image": (lambda r: (r / "train" / "rgbs" / "000007.png").unlink(), "000007.pt", "not found"),
    "not rigid": (_not_rigid, "000002.pt", "not rigid"),
    "size vs W/H": (_metadata_size, "000000.png", "says W x H = 32x32"),
    "bad W": (lambda r: _rewrite(r, "train", "000000", W=2.5), "000000.pt", "W=2.5"),
    "bad c2w shape": (lambda r: _rewrite(r, "train", "000000", c2w=torch.eye(3)), "000000.pt", "got shape [3, 3]"),
    "bad focal": (lambda r: _rewrite(r, "train", "000000", intrinsics=torch.tensor([0.0, 1, 2, 2])), "000000.pt",
                  "focal"),
    "mixed sizes": (_mixed_sizes, "000003.pt", "share a size"),
    "empty split": (lambda r: shutil.rmtree(r / "val" / "metadata") or (r / "val" / "metadata").mkdir(),
                    "val/metadata", "no <stem>.pt"),
    "duplicate stem": (_duplicate_stem, "000000.pt", "both train/metadata and val/metadata"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_the_file(copy, case):
    breaks, file, phrase = BAD[case]
    breaks(copy)
    with pytest.raises(ZooValueError) as error:
        load_meganerf(copy, "train")
    message = str(error.value)
    assert "\n" not in message and file in message and phrase in message, message


def test_load_scene_dispatches_both_layouts(scene, tmp_path):
    city = ProceduralCity(seed=1, size=8, views=9)
    transforms = city.write(tmp_path / "blender")
    for path in (transforms, transforms.parent):
        views = load_scene(path, "test")
        assert views.names == load_transforms(transforms, "test").names == ["images/frame_0000.png",
                                                                            "images/frame_0008.png"]
    assert np.array_equal(load_scene(scene, "train", downscale=2).images, load_meganerf(scene, "train", 2).images)
    with pytest.raises(ZooValueError, match="downscale=2 is not supported for transforms.json"):
        load_scene(transforms, "train", downscale=2)
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", scene / "coordinates.pt", tmp_path / "missing"):
        with pytest.raises(ZooValueError, match="expected a transforms.json file or a folder holding one, or a "
                                                "Mega-NeRF folder"):
            load_scene(path, "train")
    with pytest.raises(ZooValueError, match="split"):
        load_scene(scene, "all")
