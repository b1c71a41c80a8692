"""MovieLens ratings as a multi-task recommendation benchmark (data/ml-100k.yaml), and :class:`RecData`, the
shape every recsys source (MovieLens, the simulator of :mod:`.synthetic`) is delivered in.

Sources (:func:`read_movielens`): MovieLens-100K from the ``recbole`` wheel (RecBole atomic files; the pin is
``zoo.carriers.CARRIERS``, the files are described in data/ml-100k.yaml), any folder of MovieLens atomic files (ML-1M converted by RecBole...), or the original
GroupLens files (``u.data`` tab-separated ``user item rating timestamp``; ``u.user`` and ``u.item``
pipe-separated, latin-1) of an extracted ml-100k zip.

Tasks (:func:`movielens`), five binary labels per row:

- ``watch``: 1 on the observed (rated) rows, 0 on sampled unobserved items: for each rating, ``negatives`` items
  drawn uniformly from the catalogue among those the user rated nowhere (train, validation or test), with the
  rating's user, time and split. Uniform negatives are easy (popular items are almost always positives), so watch
  AUCs are high; they test ranking against the catalogue, not against what the user saw and skipped.
- ``like`` (r >= 4, 55.4 % of ml-100k's ratings), ``love`` (r = 5, 21.2 %), ``dislike`` (r <= 2, 17.5 %) and
  ``hate`` (r = 1, 6.1 %): defined on the observed rows only; on sampled rows their label is 0 and
  ``label_mask`` is False, so losses and metrics skip them.

Task groups (HoME's a-priori categories): ``watch`` = {watch}, ``rating`` = {like, love, dislike, hate}.

Split (:func:`time_split`): per user, ratings ordered by time (ties by file order); the last ``test_frac`` = 10 %
of them are test and the 10 % before that validation, each ``round(0.1 n)`` rounded half up (2 of 20, 3 of 25;
users with fewer than 5 ratings keep all in train). So every test timestamp of a user is >= every validation
one, which is >= every train one. Sampled rows follow their rating's split.

History (:func:`behaviour_history`): for each row, the items the user rated strictly earlier (same-second
ratings excluded), the last ``max_history``, most recent last, left-padded with item id 0; rows of every split
see the ratings before them, whatever their split. A row's own rating is never in its history.

Long-tail users (AW-MoE's evaluation): those with at most ``long_tail_max`` = 20 ratings in train.

Features, ids ready for embedding (0 = padding or unknown in every id field): users ``age`` (ML-1M's seven age
groups, :data:`AGE_EDGES`), ``gender``, ``occupation``, ``zip`` (first digit; non-US codes share one id); items
``year`` (release year bucket, :data:`YEAR_EDGES`) and the ``genre`` multi-hot.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from zoo.carriers import carrier_file
from zoo.errors import ZooValueError, check_arg

from .atomic import check_range, load_atomic

PathLike = str | os.PathLike

ML100K = "dataset_example/ml-100k/ml-100k.inter"  # inside the recbole carrier (data/ml-100k.yaml)

TASKS = ("watch", "like", "love", "dislike", "hate")
TASK_GROUPS = {"watch": ("watch",), "rating": ("like", "love", "dislike", "hate")}
RATING_TASKS = {"like": (4, 5), "love": (5, 5), "dislike": (1, 2), "hate": (1, 1)}  # inclusive rating ranges
RATING_RANGE = (1.0, 5.0)

AGE_EDGES = (18, 25, 35, 45, 50, 56)  # <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+ (ML-1M stores these codes)
YEAR_EDGES = (1950, 1960, 1970, 1980, 1990, 1995)  # 1990s split: 60 % of ml-100k's films are from 1993-1998
GENRE_FIELDS = ("genre", "class")  # ML-1M's atomic files say genre, ml-100k's class
GROUPLENS_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                    "Thriller", "War", "Western")
NEGATIVE_STREAM = 1  # SeedSequence([seed, NEGATIVE_STREAM]) draws the watch negatives


# --------------------------------------------------------------------------------------------------------------
# The shape of every recsys source


@dataclass
class RecSplit:
    """The rows of one split, row-aligned arrays (N rows, T tasks, L = max history).

    Attributes:
        user: [N] int64 user ids, 1..n_users.
        item: [N] int64 target item ids, 1..n_items.
        timestamp: [N] float64, the source's time unit (seconds for MovieLens).
        labels: [N, T] float32 0/1, tasks in :attr:`RecData.tasks` order (0 where undefined).
        label_mask: [N, T] bool, where the label is defined (train and score only there).
        history: [N, L] int64 item ids of the user's earlier positives, most recent last, 0 = padding.
        history_len: [N] int64 number of non-padding history items.
        long_tail: [N] bool, the row's user is a long-tail user.
        values: source-specific [N] float64 columns that are not labels (``rating``, NaN on sampled rows;
            the simulator's ``watch_time``...).
    """

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    labels: np.ndarray
    label_mask: np.ndarray
    history: np.ndarray
    history_len: np.ndarray
    long_tail: np.ndarray
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, rows: np.ndarray) -> RecSplit:
        """The rows selected by ``rows`` (a boolean mask or indices)."""
        arrays = {f.name: getattr(self, f.name)[rows] for f in fields(self) if f.name != "values"}
        return RecSplit(**arrays, values={k: v[rows] for k, v in self.values.items()})


@dataclass
class RecData:
    """A multi-task recommendation dataset, split by time, with features as lookup tables by id.

    Attributes:
        name: the source (``"ml-100k"``, ``"kuaishou_sim"``...); results on generated data carry it.
        tasks: binary task names, the column order of every split's ``labels``.
        task_groups: group name → its tasks (HoME's categories), covering ``tasks`` once each.
        train, val, test: the splits.
        vocab: number of ids of each id field, 0 included (``user``, ``item`` and every key of ``user_features``
            and ``item_features``), and the width of each ``item_multi_hot`` field.
        user_features: name → [n_users + 1] int64 ids (row 0 is padding).
        item_features: name → [n_items + 1] int64 ids (row 0 is padding).
        item_multi_hot: name → [n_items + 1, K] float32 (row 0 is zeros).
        user_tokens, item_tokens: [n + 1] str, the source's original ids ("" at 0).
    """

    name: str
    tasks: tuple[str, ...]
    task_groups: dict[str, tuple[str, ...]]
    train: RecSplit
    val: RecSplit
    test: RecSplit
    vocab: dict[str, int]
    user_features: dict[str, np.ndarray]
    item_features: dict[str, np.ndarray]
    item_multi_hot: dict[str, np.ndarray]
    user_tokens: np.ndarray
    item_tokens: np.ndarray

    @property
    def max_history(self) -> int:
        return self.train.history.shape[1]

    def split(self, name: str) -> RecSplit:
        check_arg(name in ("train", "val", "test"), "split", name, ("train", "val", "test"))
        return getattr(self, name)

    def label_rates(self, split: str = "train") -> dict[str, float]:
        """Positive rate of each task over the rows where it is defined."""
        part = self.split(split)
        counts = part.label_mask.sum(axis=0)
        rates = (part.labels * part.label_mask).sum(axis=0) / np.maximum(counts, 1)
        return {task: float(r) if n else float("nan") for task, r, n in zip(self.tasks, rates, counts)}


# --------------------------------------------------------------------------------------------------------------
# Split, history, negatives: shared by every source


def time_split(user: np.ndarray, timestamp: np.ndarray, val_frac: float = 0.1, test_frac: float = 0.1) -> np.ndarray:
    """Split code of each row, 0 train, 1 validation, 2 test: per user, the last ``round(test_frac · n)`` rows by
    time are test and the ``round(val_frac · n)`` before them validation (rounded half up; ties in time keep
    the rows' order)."""
    check_arg(0 <= val_frac and 0 <= test_frac and val_frac + test_frac < 1, "val_frac + test_frac",
              (val_frac, test_frac), "non-negative fractions summing to less than 1")
    order = np.lexsort((np.arange(len(user)), timestamp, user))
    sorted_user = user[order]
    starts = np.flatnonzero(np.r_[True, sorted_user[1:] != sorted_user[:-1]])
    counts = np.diff(np.r_[starts, len(user)])
    position = np.arange(len(user)) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    n_test = np.floor(test_frac * n + 0.5)
    n_val = np.floor(val_frac * n + 0.5)
    code = np.where(position >= n - n_test, 2, np.where(position >= n - n_test - n_val, 1, 0))
    out = np.empty(len(user), dtype=np.int64)
    out[order] = code
    return out


def behaviour_history(user: np.ndarray, timestamp: np.ndarray, item: np.ndarray, positive: np.ndarray,
                      max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the items of the same user's ``positive`` rows with a strictly earlier timestamp: the last
    ``max_len`` of them, most recent last (ties in time by row order), left-padded with 0.

    Args: ``user``, ``timestamp``, ``item``, ``positive``: [N] arrays over all rows (every split).
    Returns: history [N, max_len] int64 and its length [N] int64.
    """
    check_arg(max_len >= 1, "max_history", max_len, "at least 1")
    rank = np.unique(timestamp, return_inverse=True)[1].reshape(-1)  # exact ties, whatever the time unit
    span = int(rank.max(initial=0)) + 1
    key = user.astype(np.int64) * span + rank
    pos = np.flatnonzero(positive)
    pos = pos[np.lexsort((pos, key[pos]))]
    pos_key, pos_item = key[pos], item[pos].astype(np.int64)
    end = np.searchsorted(pos_key, key, side="left")  # positives before this (user, time)
    start = np.searchsorted(pos_key, user.astype(np.int64) * span, side="left")  # the user's first positive
    length = np.minimum(end - start, max_len)
    idx = end[:, None] - max_len + np.arange(max_len)
    hist = np.where(idx >= (end - length)[:, None], pos_item[np.clip(idx, 0, None)] if len(pos) else 0, 0)
    return hist.astype(np.int64), length.astype(np.int64)


def sample_unobserved(user: np.ndarray, rated_user: np.ndarray, rated_item: np.ndarray, n_items: int,
                      rng: np.random.Generator) -> np.ndarray:
    """One item per entry of ``user``, uniform over 1..n_items among the items that user never rated (the pairs
    ``rated_user``, ``rated_item``); rejection sampling, so a user must leave at least one item unrated."""
    span = n_items + 1
    rated = np.unique(rated_user.astype(np.int64) * span + rated_item)
    full = np.bincount(rated // span, minlength=int(user.max(initial=0)) + 1) >= n_items
    if full[user].any():
        raise ZooValueError("a user rated every item of the catalogue; no unobserved item to sample as a negative")
    items = rng.integers(1, n_items + 1, size=len(user))
    todo = np.arange(len(user))
    while len(todo):
        keys = user[todo].astype(np.int64) * span + items[todo]
        hit = rated[np.minimum(np.searchsorted(rated, keys), len(rated) - 1)] == keys
        todo = todo[hit]
        items[todo] = rng.integers(1, n_items + 1, size=len(todo))
    return items


def long_tail_users(user: np.ndarray, is_train: np.ndarray, n_users: int, max_train: int) -> np.ndarray:
    """[n_users + 1] bool: users with at most ``max_train`` rows in train (``user``, ``is_train`` over the
    observed rows only)."""
    return np.bincount(user[is_train], minlength=n_users + 1) <= max_train


def encode(tokens: pd.Series) -> tuple[pd.Index, np.ndarray]:
    """Ids 1..K for the distinct non-empty tokens, ordered by (length, text) so numeric ids keep their order;
    returns the vocabulary (with "" at 0) and the ids of ``tokens`` (0 for empty or missing)."""
    text = tokens.fillna("").astype(str)
    distinct = pd.DataFrame({"token": text[text != ""].unique()})
    distinct = distinct.assign(n=distinct["token"].str.len()).sort_values(["n", "token"])["token"]
    vocab = pd.Index(["", *distinct], dtype=object)
    return vocab, vocab.get_indexer(text).astype(np.int64)


def bucket(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Ids 1..len(edges)+1 of the intervals cut at ``edges`` (left-closed), 0 for NaN."""
    return np.where(np.isnan(values), 0, np.digitize(values, edges) + 1).astype(np.int64)


# --------------------------------------------------------------------------------------------------------------
# Reading MovieLens


@dataclass
class MovieLensTables:
    """MovieLens in one layout, whatever the files: ``ratings`` (user, item: str; rating, timestamp: float64),
    ``users`` (user: str, age: float64, gender, occupation, zip: str) and ``items`` (item: str, year: float64,
    NaN when unknown; genres: list of str)."""

    name: str
    ratings: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame


def ml100k_dir() -> Path:
    """The folder of ml-100k's atomic files in the installed recbole wheel (found, not imported)."""
    return carrier_file("recbole", ML100K).parent


def read_movielens(path: PathLike | None = None) -> MovieLensTables:
    """MovieLens from ``path``: a folder with the GroupLens files (``u.data``, ``u.user``, ``u.item``) or with
    MovieLens atomic files (``<name>.inter``, ``.user``, ``.item``); None = ml-100k of the recbole wheel."""
    root = ml100k_dir() if path is None else Path(path)
    if (root / "u.data").is_file():
        return _read_grouplens(root)
    return _read_atomic(root)


def _read_atomic(root: Path) -> MovieLensTables:
    ds = load_atomic(root, required={"inter": ("timestamp",), "user": ("age", "gender", "occupation", "zip_code"),
                                     "item": ("release_year",)}, rating_range=RATING_RANGE)
    genre = next((g for g in GENRE_FIELDS if g in ds.item), None)
    if genre is None:
        raise ZooValueError(f"{root / (ds.name + '.item')}: missing required column 'genre' (or 'class') "
                            f"(header has {list(ds.item)})")
    ratings = pd.DataFrame({"user": ds.inter["user_id"], "item": ds.inter["item_id"],
                            "rating": ds.inter["rating"], "timestamp": _present(ds.inter["timestamp"], root / f"{ds.name}.inter")})
    users = pd.DataFrame({"user": ds.user["user_id"], "age": pd.to_numeric(ds.user["age"], errors="coerce"),
                          "gender": ds.user["gender"], "occupation": ds.user["occupation"],
                          "zip": ds.user["zip_code"]})
    years = pd.to_numeric(ds.item["release_year"], errors="coerce")  # ml-100k has "V" and "unkonwn" once each
    items = pd.DataFrame({"item": ds.item["item_id"], "year": years, "genres": ds.item[genre]})
    return MovieLensTables(ds.name, ratings, users, items)


def _present(timestamps: pd.Series, path: Path) -> pd.Series:
    bad = ~np.isfinite(timestamps.to_numpy(np.float64))
    if bad.any():
        raise ZooValueError(f"{path}:{int(np.argmax(bad)) + 2}: timestamp is missing; the time split needs one per "
                            "rating")
    return timestamps


def _read_grouplens(root: Path) -> MovieLensTables:
    data = _headerless(root / "u.data", "\t", ["user", "item", "rating", "timestamp"])
    for col in ("rating", "timestamp"):
        data[col] = _numbers(data[col], root / "u.data")
    check_range(data["rating"], *RATING_RANGE, str(root / "u.data"), first_line=1)
    users = _headerless(root / "u.user", "|", ["user", "age", "gender", "occupation", "zip"])
    users["age"] = pd.to_numeric(users["age"], errors="coerce")
    raw = _headerless(root / "u.item", "|", ["item", "title", "release", "video", "url", *GROUPLENS_GENRES])
    flags = raw[list(GROUPLENS_GENRES)].to_numpy() == "1"
    genres = [[g for g, on in zip(GROUPLENS_GENRES, row) if on] for row in flags]
    year = pd.to_numeric(raw["release"].str[-4:], errors="coerce")  # "01-Jan-1995"
    items = pd.DataFrame({"item": raw["item"], "year": year, "genres": pd.Series(genres, dtype=object)})
    return MovieLensTables(root.name, data, users, items)


def _headerless(path: Path, sep: str, names: list[str]) -> pd.DataFrame:
    """A GroupLens file (no header, latin-1) whose lines have exactly ``len(names)`` fields."""
    if not path.is_file():
        raise ZooValueError(f"{path}: no such file; the GroupLens MovieLens format needs u.data, u.user, u.item")
    try:
        df = pd.read_csv(path, sep=sep, header=None, dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE,
                         encoding="latin-1")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ZooValueError(f"{path}: unreadable ({str(err).strip()})") from None
    if df.shape[1] != len(names):
        raise ZooValueError(f"{path}: expected {len(names)} fields separated by {sep!r} ({', '.join(names)}), "
                            f"found {df.shape[1]}")
    df.columns = names
    return df.apply(lambda c: c.str.strip())


def _numbers(cells: pd.Series, path: Path) -> pd.Series:
    values = pd.to_numeric(cells, errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise ZooValueError(f"{path}:{row + 1}: {cells.name} {cells.iat[row]!r} is not a number")
    return values.astype(np.float64)


# --------------------------------------------------------------------------------------------------------------
# The multi-task table


def movielens(path: PathLike | None = None, *, seed: int = 0, negatives: int = 1, max_history: int = 50,
              val_frac: float = 0.1, test_frac: float = 0.1, long_tail_max: int = 20) -> RecData:
    """MovieLens as :class:`RecData` (see the module docstring); ``path`` as in :func:`read_movielens`.

    ``seed`` draws the watch negatives only; ``negatives`` sampled items per rating.
    """
    return build_movielens(read_movielens(path), seed=seed, negatives=negatives, max_history=max_history,
                           val_frac=val_frac, test_frac=test_frac, long_tail_max=long_tail_max)


def build_movielens(tables: MovieLensTables, *, seed: int = 0, negatives: int = 1, max_history: int = 50,
                    val_frac: float = 0.1, test_frac: float = 0.1, long_tail_max: int = 20) -> RecData:
    """:class:`RecData` from tables already read (:func:`movielens` without the reading)."""
    check_arg(negatives >= 1, "negatives", negatives, "at least 1")
    ratings = tables.ratings
    if ratings.empty:
        raise ZooValueError(f"{tables.name}: no ratings")
    user_vocab, user = encode(pd.concat([ratings["user"], tables.users["user"]], ignore_index=True))
    item_vocab, item = encode(pd.concat([ratings["item"], tables.items["item"]], ignore_index=True))
    n_obs, n_users, n_items = len(ratings), len(user_vocab) - 1, len(item_vocab) - 1
    user, item = user[:n_obs], item[:n_obs]
    empty = (user == 0) | (item == 0)
    if empty.any():
        raise ZooValueError(f"{tables.name}: empty user or item id in rating {int(np.argmax(empty)) + 1}")
    time, rating = ratings["timestamp"].to_numpy(np.float64), ratings["rating"].to_numpy(np.float64)
    split = time_split(user, time, val_frac, test_frac)
    tail = long_tail_users(user, split == 0, n_users, long_tail_max)

    rng = np.random.default_rng(np.random.SeedSequence([seed, NEGATIVE_STREAM]))
    src = np.repeat(np.arange(n_obs), negatives)  # the rating each negative is drawn for
    neg_item = sample_unobserved(user[src], user, item, n_items, rng)
    rows_user = np.r_[user, user[src]]
    rows_item = np.r_[item, neg_item]
    rows_time = np.r_[time, time[src]]
    observed = np.r_[np.ones(n_obs, bool), np.zeros(len(src), bool)]
    rows_rating = np.where(observed, np.r_[rating, rating[src]], np.nan)

    labels = np.zeros((len(rows_user), len(TASKS)), np.float32)
    mask = np.zeros_like(labels, dtype=bool)
    labels[:, 0], mask[:, 0] = observed, True
    for t, (low, high) in enumerate(RATING_TASKS.values(), 1):
        labels[:, t] = (rows_rating >= low) & (rows_rating <= high)
        mask[:, t] = observed
    history, length = behaviour_history(user, time, item, np.ones(n_obs, bool), max_history)
    history, length = np.r_[history, history[src]], np.r_[length, length[src]]  # a negative shares its context
    rows = RecSplit(rows_user, rows_item, rows_time, labels, mask, history, length, tail[rows_user],
                    {"rating": rows_rating})
    order = np.lexsort((~observed, rows_time, rows_user))  # a rating and its negatives side by side
    rows_split = np.r_[split, split[src]][order]

    user_features, user_vocab_sizes = _user_features(tables.users, user_vocab)
    item_features, genres = _item_features(tables.items, item_vocab)
    vocab = {"user": n_users + 1, "item": n_items + 1, **user_vocab_sizes,
             "year": len(YEAR_EDGES) + 2, "genre": genres.shape[1]}
    return RecData(tables.name, TASKS, dict(TASK_GROUPS), *(rows.subset(order[rows_split == k]) for k in range(3)),
                   vocab, user_features, item_features, {"genre": genres},
                   user_vocab.to_numpy(str), item_vocab.to_numpy(str))


def _user_features(users: pd.DataFrame, vocab: pd.Index) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per-user ids aligned with the user vocabulary (0 for users without a row in the user table)."""
    at = _rows_in(vocab, users["user"], "user")
    zip_first = users["zip"].astype(str).str.strip().str[:1]
    zip_prefix = zip_first.where(zip_first.str.isdigit() | (zip_first == ""), "non-US")
    columns = {"age": (bucket(users["age"].to_numpy(np.float64), AGE_EDGES), len(AGE_EDGES) + 2)}
    for name, values in (("gender", users["gender"]), ("occupation", users["occupation"]), ("zip", zip_prefix)):
        names, ids = encode(values)
        columns[name] = (ids, len(names))
    out = {}
    for name, (ids, _) in columns.items():
        out[name] = np.zeros(len(vocab), np.int64)
        out[name][at] = ids
    return out, {name: size for name, (_, size) in columns.items()}


def _item_features(items: pd.DataFrame, vocab: pd.Index) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-item year bucket ids and the [n_items + 1, G] genre multi-hot (genres in sorted order)."""
    items = items.reset_index(drop=True)
    at = _rows_in(vocab, items["item"], "item")
    year = np.zeros(len(vocab), np.int64)
    year[at] = bucket(items["year"].to_numpy(np.float64), YEAR_EDGES)
    exploded = items["genres"].explode().dropna()
    names = sorted(set(exploded))
    genres = np.zeros((len(vocab), len(names)), np.float32)
    genres[at[exploded.index.to_numpy()], np.searchsorted(names, exploded.to_numpy(str))] = 1.0
    return {"year": year}, genres


def _rows_in(vocab: pd.Index, tokens: pd.Series, what: str) -> np.ndarray:
    """Ids of a feature table's key column, which must not be empty."""
    ids = vocab.get_indexer(tokens.fillna("").astype(str))
    if (ids <= 0).any():
        raise ZooValueError(f"empty {what} id in row {int(np.argmax(ids <= 0)) + 1} of the {what} table")
    return ids
