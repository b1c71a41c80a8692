"""RecBole atomic files (``<name>.inter``, ``<name>.user``, ``<name>.item``): the format of RecBole's dataset
zoo, so that ml-100k from the RecBole wheel and any converted dataset a user points at (ML-1M, Amazon, Yelp...)
load through one reader.

Format (RecBole's "atomic files" documentation): UTF-8 text, tab-separated, one header line whose fields are
``name:type`` with type one of ``token`` (a string id), ``token_seq`` (space-separated tokens), ``float`` and
``float_seq`` (space-separated numbers); then one row per line. Cells are never quoted, so a title holding a
quote character is read as it is, and tokens are not stripped (RecBole does not strip them either). An empty
``float`` cell is missing (NaN); an empty sequence cell is ``[]``.

:func:`read_atomic` reads one file into a frame whose columns are the field names without their ``:type``;
:func:`load_atomic` reads a dataset directory. Every failure is one :class:`ZooValueError` line naming the file.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from zoo.errors import ZooValueError

PathLike = str | os.PathLike

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
# What each file must hold for the interactions to be joined to their features.
KEYS = {"inter": ("user_id", "item_id"), "user": ("user_id",), "item": ("item_id",)}


@dataclass
class AtomicDataset:
    """The atomic files of one dataset: ``inter`` always; ``user`` and ``item`` when the files exist.

    Columns are field names without the ``:type`` suffix; ``types`` maps each file's fields to their types.
    """

    name: str
    inter: pd.DataFrame
    user: pd.DataFrame | None
    item: pd.DataFrame | None
    types: dict[str, dict[str, str]]


def read_atomic(path: PathLike, required: Iterable[str] = ()) -> tuple[pd.DataFrame, dict[str, str]]:
    """One atomic file as a frame (tokens as str, floats as float64, sequences as lists) and its field types.

    Raises:
        ZooValueError: the file is missing or malformed, a header field has no known ``:type``, a required field
            is absent, or a float cell is not a number (naming the line and field).
    """
    path = Path(path)
    if not path.is_file():
        raise ZooValueError(f"{path}: no such file; expected a RecBole atomic file")
    try:
        raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE,
                          encoding="utf-8")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise ZooValueError(f"{path}: not a tab-separated UTF-8 atomic file ({str(err).strip()})") from None
    types = _header_types(list(raw.columns), path)
    raw.columns = list(types)
    missing = [name for name in required if name not in types]
    if missing:
        raise ZooValueError(f"{path}: missing required column {missing[0]!r} (header has {list(types)})")
    return pd.DataFrame({name: _parse(raw[name], kind, name, path) for name, kind in types.items()}), types


def _header_types(fields: list[str], path: Path) -> dict[str, str]:
    """``name -> type`` of the header; refuses fields without a known type and duplicate names."""
    types: dict[str, str] = {}
    for field in fields:
        name, sep, kind = field.strip().rpartition(":")
        if not sep or kind not in FIELD_TYPES or not name:
            raise ZooValueError(f"{path}: header field {field!r} is not 'name:type' with type one of {FIELD_TYPES}")
        if name in types:
            raise ZooValueError(f"{path}: header names field {name!r} twice")
        types[name] = kind
    return types


def _parse(cells: pd.Series, kind: str, name: str, path: Path) -> pd.Series:
    if kind == "token":
        return cells
    if kind == "token_seq":
        return cells.str.split()
    if kind == "float":
        values = pd.to_numeric(cells, errors="coerce")
        bad = values.isna().to_numpy().copy()
        bad[bad] = (cells[bad].str.strip() != "").to_numpy()  # empty cells are missing values, not errors
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ZooValueError(f"{path}:{row + 2}: {name} {cells.iat[row]!r} is not a number")
        return values.astype(np.float64)
    out = []
    for row, text in enumerate(cells):
        try:
            out.append([float(tok) for tok in text.split()])
        except ValueError:
            raise ZooValueError(f"{path}:{row + 2}: {name} {text!r} is not a list of numbers") from None
    return pd.Series(out, index=cells.index, dtype=object)


def check_range(values: pd.Series, low: float, high: float, where: str, first_line: int = 2) -> None:
    """Refuse a missing or out-of-range value (e.g. a rating outside the scale a dataset declares), naming its
    line: row i of the frame read from file ``where`` is line ``i + first_line`` (2 after a header line)."""
    v = values.to_numpy(np.float64)
    bad = ~((v >= low) & (v <= high))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ZooValueError(f"{where}:{row + first_line}: {values.name} {v[row]} is outside the declared range "
                            f"[{low:g}, {high:g}]")


def load_atomic(directory: PathLike, name: str | None = None, *, required: Mapping[str, Iterable[str]] | None = None,
                rating_range: tuple[float, float] | None = None) -> AtomicDataset:
    """The atomic files ``<name>.inter`` (always required, with ``user_id`` and ``item_id``) and ``<name>.user``
    (with ``user_id``) and ``<name>.item`` (with ``item_id``) of ``directory``, each when present.

    Args:
        directory: the dataset's folder.
        name: the files' stem; defaults to the only ``*.inter`` file's stem (RecBole names the folder after the
            dataset, but users rename folders).
        required: file kind (``"inter"``, ``"user"``, ``"item"``) → fields it must have besides its keys; a
            ``user`` or ``item`` file listed here must exist.
        rating_range: the scale of the ``rating`` field, e.g. (1, 5) for MovieLens; ``rating`` is then required
            and a missing or out-of-range rating is an error.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ZooValueError(f"{root}: not a directory; expected a folder with RecBole atomic files "
                            "<name>.inter[, <name>.user, <name>.item]")
    name = name or _dataset_name(root)
    required = required or {}
    need = {kind: [*keys, *required.get(kind, ())] for kind, keys in KEYS.items()}
    if rating_range is not None:
        need["inter"].append("rating")
    tables: dict[str, pd.DataFrame | None] = {"user": None, "item": None}
    types: dict[str, dict[str, str]] = {}
    for kind in KEYS:
        path = root / f"{name}.{kind}"
        if kind == "inter" or kind in required or path.is_file():
            tables[kind], types[kind] = read_atomic(path, need[kind])
    if rating_range is not None:
        check_range(tables["inter"]["rating"], *rating_range, str(root / f"{name}.inter"))
    return AtomicDataset(name, tables["inter"], tables["user"], tables["item"], types)


def _dataset_name(root: Path) -> str:
    stems = sorted(p.stem for p in root.glob("*.inter"))
    if len(stems) != 1:
        found = f"several ({', '.join(stems)})" if stems else "none"
        raise ZooValueError(f"{root}: expected exactly one <name>.inter file, found {found}; pass name=")
    return stems[0]
