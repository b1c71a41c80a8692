"""Reader of Pascal VOC XML annotations, and the two real detection sets that ship inside PyPI packages: DeepForest's
aerial tree-crown tiles and StarDist's fluorescence nuclei, so that a mix can hold real images offline.

Format: one XML file per image with ``filename``, ``size/{width,height}`` and ``object`` elements with ``name`` and
``bndbox/{xmin,ymin,xmax,ymax}``. VOC coordinates are 1-based inclusive pixel indices, so a box becomes
``[xmin - 1, ymin - 1, xmax, ymax]`` in continuous coordinates (the conversion Detectron2 uses); ``difficult``
objects are kept. The image is ``filename`` next to the XML file, or in ``../JPEGImages`` (the VOC devkit layout).
Files are parsed with :mod:`xml.etree.ElementTree`, which expands no external entities, so untrusted local files
cannot make it read other files. Every failure is one :class:`ZooValueError` line naming the file and the object.

- :func:`deepforest_tiles`: the four annotated tiles of ``deepforest/data`` (951 boxes; classes ``Alive``,
  ``Dead``, ``Tree``). ``OSBS_029.xml`` names ``OSBS_029.tif``; its ``.png`` twin, with the same pixels, is read
  instead, so every tile goes through PIL.
- :func:`stardist_nuclei`: ``stardist/data/images/img2d.tif`` (512x512, 16-bit, scaled to uint8 RGB) with one
  ``nucleus`` box per label of ``mask2d.tif`` (125 boxes): the bounds of the label's pixels.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from zoo.carriers import carrier_file
from zoo.errors import ZooValueError

from .structures import DetDataset, DetEntry, PathLike, image_size, make_entry, to_rgb

DEEPFOREST_TILES = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop", "OSBS_029",
                    "SOAP_061")


def load_voc(folder_or_xml_files: PathLike | Iterable[PathLike], name: str | None = None,
             classes: Iterable[str] | None = None) -> DetDataset:
    """The dataset of VOC XML files (module docstring), in sorted file order for a folder.

    Args:
        folder_or_xml_files: a folder (its ``*.xml``, or ``Annotations/*.xml`` in the devkit layout) or XML files.
        name: the dataset's name; the folder's name (or the first file's folder's) by default.
        classes: the class names in label order; by default the sorted names that occur. An object of another
            class is then an error.

    Raises:
        ZooValueError: no XML files, malformed XML, a missing element, a non-numeric or empty box, a box outside
            the image, an unknown class, or a missing or unreadable image.
    """
    files, default_name = _xml_files(folder_or_xml_files)
    return _dataset(files, name or default_name, classes, _image_file)


def _dataset(files: list[Path], name: str, classes: Iterable[str] | None,
             image_of: Callable[[Path, str], Path]) -> DetDataset:
    parsed = [_parse(file, image_of) for file in files]
    names = tuple(classes) if classes is not None else tuple(sorted({obj for *_, objs in parsed for obj, _ in objs}))
    label_of = {cls: label for label, cls in enumerate(names)}
    entries = []
    for file, (image, objects) in zip(files, parsed):
        for index, (cls, _) in enumerate(objects):
            if cls not in label_of:
                raise ZooValueError(f"{file}: object {index} is of class {cls!r}, not one of {', '.join(names)}")
        entries.append(make_entry(image.name, [box for _, box in objects], [label_of[c] for c, _ in objects],
                                  image))
    return DetDataset(name, names, entries)


def _xml_files(source: PathLike | Iterable[PathLike]) -> tuple[list[Path], str]:
    """The XML files and the dataset's default name."""
    if isinstance(source, str | Path) or hasattr(source, "__fspath__"):
        folder = Path(source)
        if not folder.is_dir():
            raise ZooValueError(f"{folder}: no such folder; expected VOC XML files or a folder of them")
        annotations = folder / "Annotations"
        files = sorted((annotations if annotations.is_dir() else folder).glob("*.xml"))
        where, name = str(folder), folder.name
    else:
        files = [Path(file) for file in source]
        where, name = "the list of files", files[0].parent.name if files else ""
    if not files:
        raise ZooValueError(f"{where}: no VOC .xml files")
    return files, name


def _parse(file: Path, image_of: Callable[[Path, str], Path]) -> tuple[Path, list[tuple[str, list[float]]]]:
    """The image file and the (class, xyxy box) of every object of one XML file."""
    if not file.is_file():
        raise ZooValueError(f"{file}: no such file; expected a VOC XML file")
    try:
        root = ET.parse(file).getroot()
    except ET.ParseError as err:
        raise ZooValueError(f"{file}: not well-formed XML ({err})") from None
    filename = _text(root, "filename", file, "the annotation")
    width = _number(root, "size/width", file, "the annotation")
    height = _number(root, "size/height", file, "the annotation")
    if width <= 0 or height <= 0:
        raise ZooValueError(f"{file}: size {width}x{height} is not positive")
    image = image_of(file, filename)
    if image_size(image, str(file)) != (width, height):
        raise ZooValueError(f"{file}: {image} is {image_size(image, str(file))} pixels, the XML says "
                            f"{(int(width), int(height))}")
    objects = []
    for index, obj in enumerate(root.iter("object")):
        where = f"object {index}"
        cls = _text(obj, "name", file, where)
        xmin, ymin, xmax, ymax = (_number(obj, f"bndbox/{key}", file, where) for key in ("xmin", "ymin", "xmax",
                                                                                          "ymax"))
        box = [xmin - 1, ymin - 1, xmax, ymax]
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ZooValueError(f"{file}: {where} ({cls}) has an empty box xmin={xmin:g} ymin={ymin:g} "
                                f"xmax={xmax:g} ymax={ymax:g}")
        if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
            raise ZooValueError(f"{file}: {where} ({cls}) box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} "
                                f"ymax={ymax:g} lies outside the {width:g}x{height:g} image (1-based pixels)")
        objects.append((cls, box))
    return image, objects


def _text(element: ET.Element, path: str, file: Path, where: str) -> str:
    found = element.find(path)
    if found is None or not (found.text or "").strip():
        raise ZooValueError(f"{file}: {where} has no <{path}>")
    return found.text.strip()


def _number(element: ET.Element, path: str, file: Path, where: str) -> float:
    text = _text(element, path, file, where)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise ZooValueError(f"{file}: {where} has <{path}>{text}</...>, not a number")
    return value


def _image_file(file: Path, filename: str) -> Path:
    for candidate in (file.parent / filename, file.parent.parent / "JPEGImages" / filename):
        if candidate.is_file():
            return candidate
    raise ZooValueError(f"{file}: image {filename!r} is neither next to it nor in ../JPEGImages")


def deepforest_tiles() -> DetDataset:
    """DeepForest's four annotated aerial tiles, each read from the ``.png`` next to its XML (module docstring)."""
    files = [carrier_file("deepforest", f"data/{tile}.xml") for tile in DEEPFOREST_TILES]
    for file in files:
        carrier_file("deepforest", f"data/{file.stem}.png")
    return _dataset(files, "deepforest", None, lambda file, _: file.with_suffix(".png"))


def stardist_nuclei() -> DetDataset:
    """StarDist's 2-D nuclei image with one box per labelled nucleus (module docstring)."""
    import tifffile

    image = to_rgb(tifffile.imread(carrier_file("stardist", "data/images/img2d.tif")))
    mask = tifffile.imread(carrier_file("stardist", "data/images/mask2d.tif"))
    boxes = []
    for label in np.unique(mask[mask > 0]):
        rows, cols = np.nonzero(mask == label)
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    entry: DetEntry = make_entry("img2d", boxes, np.zeros(len(boxes), np.int64), image)
    return DetDataset("stardist", ("nucleus",), [entry])
