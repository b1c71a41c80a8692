"""The COCO and VOC readers on hand-written fixtures in the exact formats (boxes checked by hand), every bad input
as one line, the RGB conversion, and the two real sets shipped in the deepforest and stardist packages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.errors import ZooValueError
from zoo.tasks.detection.coco import load_coco
from zoo.tasks.detection.structures import to_rgb
from zoo.tasks.detection.voc import deepforest_tiles, load_voc, stardist_nuclei

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """The COCO fixture's JSON and its three images (RGB, grayscale, RGBA) in a writable folder."""
    shutil.copy(FIXTURES / "coco.json", tmp_path / "coco.json")
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[3:8, 2:12] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(np.full((10, 20), 77, np.uint8), mode="L").save(tmp_path / "gray.png")
    Image.fromarray(np.full((8, 8, 4), (10, 20, 30, 0), np.uint8), mode="RGBA").save(tmp_path / "rgba.png")
    return tmp_path


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / "voc", tmp_path / "voc")
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "voc" / "img1.png")
    Image.fromarray(np.full((16, 16), 200, np.uint8), mode="L").save(tmp_path / "voc" / "img2.png")
    return tmp_path / "voc"


def test_coco_boxes_labels_and_images(coco: Path):
    dataset = load_coco(coco / "coco.json", coco)
    assert dataset.name == "coco" and dataset.classes == ("cat", "dog")  # ids 3, 7 in sorted-id order
    assert [e.name for e in dataset.entries] == ["a.png", "gray.png", "rgba.png"]
    first = dataset[0]
    np.testing.assert_array_equal(first.boxes, [[2, 3, 12, 8], [0, 0, 40, 30]])  # the crowd box is skipped
    np.testing.assert_array_equal(first.labels, [1, 0])
    assert first.boxes.dtype == np.float32 and first.labels.dtype == np.int64
    assert first.image.shape == (30, 40, 3) and first.image.dtype == np.uint8
    assert (first.image[3:8, 2:12] == (255, 0, 0)).all()  # the box [2, 3, 12, 8] covers exactly the red patch
    assert first.image[:3].sum() == first.image[8:].sum() == 0
    gray = dataset[1]
    np.testing.assert_allclose(gray.boxes, [[1.5, 2.5, 4.5, 6.5]])
    assert gray.image.shape == (10, 20, 3) and (gray.image == 77).all()
    rgba = dataset[2]
    assert rgba.boxes.shape == (0, 4) and rgba.labels.shape == (0,)
    assert (rgba.image == (10, 20, 30)).all()  # alpha dropped
    np.testing.assert_array_equal(dataset.class_counts(), [2, 1])


def test_coco_agrees_with_pycocotools(coco: Path):
    from pycocotools.coco import COCO

    reference = COCO(str(coco / "coco.json"))
    dataset = load_coco(coco / "coco.json", coco, name="tiny")
    assert dataset.name == "tiny"
    for entry, image_id in zip(dataset.entries, sorted(reference.imgs)):
        anns = [a for a in reference.loadAnns(reference.getAnnIds(imgIds=image_id)) if not a.get("iscrowd")]
        expected = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        np.testing.assert_allclose(entry.boxes.reshape(-1, 4), np.reshape(expected, (-1, 4)))
        names = [reference.loadCats(a["category_id"])[0]["name"] for a in anns]
        assert [dataset.classes[label] for label in entry.labels] == names


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("categories"), r"coco.json lacks the key\(s\) 'categories'"),
    (lambda d: d["annotations"][0].pop("bbox"), r"annotations\[0\] lacks the key\(s\) 'bbox'"),
    (lambda d: d["images"][1].pop("width"), r"images\[1\] lacks the key\(s\) 'width'"),
    (lambda d: d["annotations"][0].update(bbox=[2, 3, 0, 5]), r"annotations\[0\]: bbox .* non-positive width"),
    (lambda d: d["annotations"][1].update(bbox=[2, 3, 5, -1]), r"annotations\[1\]: bbox .* non-positive"),
    (lambda d: d["annotations"][0].update(bbox=[35, 3, 10, 5]), r"annotations\[0\]: bbox .* outside its 40x30"),
    (lambda d: d["annotations"][0].update(bbox=[-3, 3, 10, 5]), r"annotations\[0\]: bbox .* outside"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\]: bbox .* not four finite numbers"),
    (lambda d: d["annotations"][3].update(category_id=5), r"annotations\[3\] names category_id 5, which is not"),
    (lambda d: d["annotations"][3].update(image_id=99), r"annotations\[3\] names image_id 99, which is not"),
    (lambda d: d["images"][2].update(file_name="nope.png"), r"images\[2\] \(id 12\): image file .*nope.png does "),
    (lambda d: d["images"][0].update(width=41), r"images\[0\] \(id 10\): .*a.png is \(40, 30\) pixels"),
    (lambda d: d["categories"].append({"id": 3, "name": "x"}), r"categories\[2\]: id 3 appears twice"),
])
def test_coco_bad_input_is_one_line(coco: Path, change, message: str):
    _edit(coco / "coco.json", change)
    with pytest.raises(ZooValueError, match=message) as error:
        load_coco(coco / "coco.json", coco)
    assert "\n" not in str(error.value) and "coco.json" in str(error.value)


def test_coco_bad_files_are_one_line(coco: Path):
    (coco / "coco.json").write_text('{"images": [')
    with pytest.raises(ZooValueError, match="coco.json: not valid JSON"):
        load_coco(coco / "coco.json", coco)
    with pytest.raises(ZooValueError, match="missing.json: no such file"):
        load_coco(coco / "missing.json", coco)
    shutil.copy(FIXTURES / "coco.json", coco / "coco.json")
    (coco / "gray.png").write_bytes(b"not a png")
    with pytest.raises(ZooValueError, match=r"images\[1\] \(id 11\): image file .*gray.png is not a readable image"):
        load_coco(coco / "coco.json", coco)


def test_voc_boxes_from_one_based_pixels(voc: Path):
    dataset = load_voc(voc)
    assert dataset.name == "voc" and dataset.classes == ("car", "person")
    first, second = dataset[0], dataset[1]
    np.testing.assert_array_equal(first.boxes, [[0, 0, 32, 24], [4, 5, 9, 10]])  # [xmin-1, ymin-1, xmax, ymax]
    np.testing.assert_array_equal(first.labels, [1, 0])
    np.testing.assert_array_equal(second.boxes, [[2, 2, 3, 4]])  # a one-pixel-wide box
    assert second.image.shape == (16, 16, 3) and (second.image == 200).all()
    only = load_voc([voc / "img2.xml"], name="one", classes=("person", "car"))
    assert only.classes == ("person", "car") and only.entries[0].labels.tolist() == [1]


def test_voc_devkit_layout(voc: Path, tmp_path: Path):
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    shutil.copy(voc / "img1.xml", root / "Annotations")
    shutil.copy(voc / "img1.png", root / "JPEGImages")
    dataset = load_voc(root)
    assert dataset.name == "VOC2007" and len(dataset) == 1 and dataset.num_boxes == 2


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(("old", "new", "message"), [
    ("<xmax>9</xmax>", "<xmax>4</xmax>", r"img1.xml: object 1 \(car\) has an empty box"),
    ("<xmax>32</xmax>", "<xmax>33</xmax>", r"img1.xml: object 0 \(person\) box .* outside the 32x24 image"),
    ("<xmin>5</xmin>", "<xmin>0</xmin>", r"img1.xml: object 1 \(car\) box .* outside"),
    ("<ymin>6</ymin>", "<ymin>six</ymin>", r"img1.xml: object 1 has <bndbox/ymin>six</...>, not a number"),
    ("<name>car</name>", "", r"img1.xml: object 1 has no <name>"),
    ("<filename>img1.png</filename>", "", r"img1.xml: the annotation has no <filename>"),
    ("<filename>img1.png</filename>", "<filename>x.png</filename>", r"img1.xml: image 'x.png' is neither next"),
    ("<width>32</width>", "<width>30</width>", r"img1.xml: .*img1.png is \(32, 24\) pixels, the XML says"),
    ("</annotation>", "", r"img1.xml: not well-formed XML"),
])
def test_voc_bad_input_is_one_line(voc: Path, old: str, new: str, message: str):
    _replace(voc / "img1.xml", old, new)
    with pytest.raises(ZooValueError, match=message) as error:
        load_voc(voc)
    assert "\n" not in str(error.value)


def test_voc_unknown_class_and_empty_folder(voc: Path, tmp_path: Path):
    with pytest.raises(ZooValueError, match=r"img1.xml: object 0 is of class 'person', not one of car"):
        load_voc(voc, classes=("car",))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooValueError, match="empty: no VOC .xml files"):
        load_voc(tmp_path / "empty")
    (voc / "img2.png").write_bytes(b"junk")
    with pytest.raises(ZooValueError, match="img2.xml: image file .* is not a readable image"):
        load_voc(voc)


def test_to_rgb_conversions():
    sixteen = np.array([[100, 300], [200, 100]], np.uint16)
    np.testing.assert_array_equal(to_rgb(sixteen)[..., 0], [[0, 255], [128, 0]])  # min-max onto 0-255
    assert (to_rgb(sixteen)[..., 0] == to_rgb(sixteen)[..., 2]).all()
    assert to_rgb(np.ones((2, 2), np.float32)).max() == 0  # a constant image is black
    assert to_rgb(np.zeros((3, 4, 4), np.uint8)).shape == (3, 4, 3)
    with pytest.raises(ZooValueError, match=r"an image of shape \(2, 2, 2\)"):
        to_rgb(np.zeros((2, 2, 2)))


@pytest.mark.requires_carrier("deepforest")
def test_deepforest_tiles():
    dataset = deepforest_tiles()
    assert dataset.classes == ("Alive", "Dead", "Tree")
    assert [len(e.boxes) for e in dataset.entries] == [574, 279, 61, 37] and dataset.num_boxes == 951
    np.testing.assert_array_equal(dataset.class_counts(), [9, 28, 914])
    assert all(e.image.suffix == ".png" for e in dataset.entries)  # OSBS_029.xml names the .tif
    osbs = dataset[2]
    assert osbs.name == "OSBS_029.png" and osbs.image.shape == (400, 400, 3)
    np.testing.assert_array_equal(osbs.boxes[0], [202, 66, 227, 90])  # xmin 203, ymin 67, xmax 227, ymax 90
    for entry in dataset.entries:
        assert (entry.boxes[:, :2] >= 0).all() and (entry.boxes[:, 2:] > entry.boxes[:, :2]).all()


@pytest.mark.requires_carrier("stardist")
def test_stardist_nuclei_boxes_bound_their_labels():
    import tifffile

    from zoo.carriers import carrier_file

    dataset = stardist_nuclei()
    sample = dataset[0]
    mask = tifffile.imread(carrier_file("stardist", "data/images/mask2d.tif"))
    labels = np.unique(mask[mask > 0])
    assert len(labels) == len(sample.boxes) == 125 and dataset.classes == ("nucleus",)
    assert sample.image.shape == (512, 512, 3) and sample.image.dtype == np.uint8 and sample.image.max() == 255
    for label, (x1, y1, x2, y2) in zip(labels, sample.boxes.astype(int)):
        inside = mask[y1:y2, x1:x2] == label
        assert inside.sum() == (mask == label).sum()  # the box holds the whole nucleus
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()  # tightly
