"""Recsys data: RecBole atomic and GroupLens readers on fixtures, the MovieLens multi-task table (no time leakage,
histories strictly earlier, watch negatives unobserved, labels and long-tail users as defined), the data card and
the simulator's calibrated rates (MMoE's synthetic generator: test_recsys_mmoe_synthetic.py)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from zoo.carriers import carrier
from zoo.errors import ZooValueError
from zoo.tasks.recsys.atomic import load_atomic, read_atomic
from zoo.tasks.recsys.movielens import (
    RecData,
    behaviour_history,
    movielens,
    read_movielens,
    time_split,
)
from zoo.tasks.recsys.synthetic import RATES, calibrate_bias, kuaishou_sim, sigmoid

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).parent / "fixtures"
TINY, RAW = FIXTURES / "ml-tiny", FIXTURES / "ml-raw"
SPLITS = ("train", "val", "test")
RECBOLE = carrier("recbole")

needs_recbole = pytest.mark.requires_carrier("recbole")


@pytest.fixture(scope="module")
def ml100k() -> RecData:
    return movielens()


def frame(data: RecData) -> pd.DataFrame:
    """Every row of every split: user, item, time, split, watch label, rating."""
    parts = [pd.DataFrame({"user": p.user, "item": p.item, "time": p.timestamp, "split": name,
                           "watch": p.labels[:, 0], "rating": p.values.get("rating", np.nan)})
             for name, p in ((s, data.split(s)) for s in SPLITS)]
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------------------------------------------
# RecBole atomic files


def test_read_atomic_strips_types_and_parses_sequences(tmp_path):
    items, types = read_atomic(TINY / "ml-tiny.item")
    assert list(items) == ["item_id", "movie_title", "release_year", "class"]
    assert types == {"item_id": "token", "movie_title": "token_seq", "release_year": "token", "class": "token_seq"}
    assert items["class"].iat[0] == ["Animation", "Children's", "Comedy"]
    assert items["movie_title"].iat[11] == ['"Usual', "Suspects,", 'The"']  # quotes are not quoting
    inter, _ = read_atomic(TINY / "ml-tiny.inter")
    assert inter["rating"].dtype == np.float64 and len(inter) == 28
    path = tmp_path / "x.inter"
    path.write_text("user_id:token\titem_id:token\tscores:float_seq\tw:float\n1\t2\t0.5 1.5\t\n")
    df, _ = read_atomic(path)
    assert df["scores"].iat[0] == [0.5, 1.5] and np.isnan(df["w"].iat[0])


@pytest.mark.parametrize("header, row, message", [
    ("user_id:token\trating:float", "1\t4", r"x\.inter: missing required column 'item_id'"),
    ("user_id\titem_id:token", "1\t2", "header field 'user_id' is not 'name:type'"),
    ("user_id:token\titem_id:token\trating:float", "1\t2\tfour", r"x\.inter:2: rating 'four' is not a number"),
    ("user_id:token\titem_id:token\trating:float", "1\t2\t7", r"x\.inter:2: rating 7.0 is outside the declared "
                                                                r"range \[1, 5\]"),
])
def test_atomic_errors_name_the_file_and_column(tmp_path, header, row, message):
    (tmp_path / "x.inter").write_text(f"{header}\n{row}\n")
    with pytest.raises(ZooValueError, match=message):
        load_atomic(tmp_path, rating_range=(1, 5))


def test_atomic_missing_files_and_columns(tmp_path):
    with pytest.raises(ZooValueError, match="no such file"):
        read_atomic(tmp_path / "none.inter")
    with pytest.raises(ZooValueError, match="found none"):
        load_atomic(tmp_path)
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
    assert load_atomic(tmp_path).user is None
    with pytest.raises(ZooValueError, match=r"x\.user: no such file"):
        load_atomic(tmp_path, required={"user": ("age",)})
    (tmp_path / "x.user").write_text("user_id:token\tgender:token\n1\tF\n")
    with pytest.raises(ZooValueError, match=r"x\.user: missing required column 'age'"):
        load_atomic(tmp_path, required={"user": ("age",)})
    for missing in ("timestamp", "rating"):
        d = tmp_path / missing
        d.mkdir()
        cols = [c for c in ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
                if not c.startswith(missing)]
        (d / "m.inter").write_text("\t".join(cols) + "\n" + "\t".join(["1"] * 3) + "\n")
        with pytest.raises(ZooValueError, match=rf"m\.inter: missing required column '{missing}'"):
            movielens(d)


# --------------------------------------------------------------------------------------------------------------
# MovieLens on the fixtures: both formats, known answers


def test_grouplens_and_atomic_formats_give_the_same_data():
    a, b = movielens(TINY, seed=3), movielens(RAW, seed=3)
    assert (a.name, b.name) == ("ml-tiny", "ml-raw")
    assert a.vocab == b.vocab
    for name in SPLITS:
        x, y = a.split(name), b.split(name)
        for field in ("user", "item", "timestamp", "labels", "label_mask", "history", "history_len", "long_tail"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field), err_msg=f"{name}.{field}")
    for table in ("user_features", "item_features", "item_multi_hot"):
        for key, values in getattr(a, table).items():
            np.testing.assert_array_equal(values, getattr(b, table)[key], err_msg=f"{table}.{key}")


def test_ml1m_style_genre_field_is_read(tmp_path):
    """RecBole's ML-1M files name the genre field ``genre`` where ml-100k's say ``class``."""
    for suffix in ("inter", "user", "item"):
        text = (TINY / f"ml-tiny.{suffix}").read_text(encoding="utf-8")
        (tmp_path / f"ml-1m.{suffix}").write_text(text.replace("class:token_seq", "genre:token_seq"))
    np.testing.assert_array_equal(movielens(tmp_path).item_multi_hot["genre"],
                                  movielens(TINY).item_multi_hot["genre"])


def test_fixture_split_history_and_features_known_answers():
    data = movielens(TINY, max_history=4)
    test = data.test
    # User 1 rated items 1..12; items 12 and 11 share the last second (111), file order puts 12 first: val, test.
    first = test.label_mask[:, 1] & (test.user == 1)
    assert test.item[first].tolist() == [11]
    assert data.val.item[data.val.label_mask[:, 1] & (data.val.user == 1)].tolist() == [12]
    # Its history: the last 4 ratings strictly before second 111 (item 12, same second, is left out).
    assert test.history[first].tolist() == [[7, 8, 9, 10]]
    # User 1 left only items 13 and 14 unrated: every negative of theirs is one of them.
    negatives = np.concatenate([data.split(s).item[(data.split(s).user == 1) & ~data.split(s).label_mask[:, 1]]
                                for s in SPLITS])
    assert set(negatives) <= {13, 14} and len(negatives) == 12
    # User 3 (6 ratings): round(0.6) = 1 test, 1 val, 4 train; a long-tail user, as everyone here.
    assert [int((data.split(s).user == 3).sum()) for s in SPLITS] == [8, 2, 2]
    assert all(data.split(s).long_tail.all() for s in SPLITS)
    # Features: user 3 is 15 (age bucket 1, "<18") with a non-US zip; item 13 is from 1942, item 14's year unknown.
    u3 = list(data.user_tokens).index("3")
    assert data.user_features["age"][u3] == 1
    assert data.item_features["year"][list(data.item_tokens).index("13")] == 1
    assert data.item_features["year"][list(data.item_tokens).index("14")] == 0
    assert data.item_multi_hot["genre"][0].sum() == 0 and data.vocab["genre"] == 12


def test_negative_sampling_is_seeded():
    items = [np.concatenate([movielens(TINY, seed=seed).split(s).item for s in SPLITS]) for seed in (0, 0, 1)]
    np.testing.assert_array_equal(items[0], items[1])
    assert not np.array_equal(items[0], items[2])


def test_time_split_rounds_half_up_per_user():
    user = np.repeat([1, 2, 3], [25, 20, 4])
    time = np.random.default_rng(0).permutation(49).astype(float)
    code = time_split(user, time)
    counts = pd.crosstab(user, code)
    assert counts.loc[1].tolist() == [19, 3, 3] and counts.loc[2].tolist() == [16, 2, 2]
    assert counts.loc[3, 0] == 4 and counts.loc[3].sum() == 4


def test_behaviour_history_hand_worked():
    # One user: positives at t = 1, 2, 2, 3 (items 10, 11, 12, 13); a negative (item 99) at t = 2.5.
    user = np.array([1, 1, 1, 1, 1, 2])
    time = np.array([1.0, 2.0, 2.0, 2.5, 3.0, 0.0])
    item = np.array([10, 11, 12, 99, 13, 20])
    positive = np.array([True, True, True, False, True, True])
    hist, length = behaviour_history(user, time, item, positive, max_len=2)
    assert hist.tolist() == [[0, 0], [0, 10], [0, 10], [11, 12], [11, 12], [0, 0]]
    assert length.tolist() == [0, 1, 1, 2, 2, 0]


# --------------------------------------------------------------------------------------------------------------
# MovieLens-100K from the recbole wheel


@needs_recbole
def test_data_card_matches_the_installed_files():
    card = yaml.safe_load((ROOT / "data" / "ml-100k.yaml").read_text())
    assert (card["source"]["package"], card["source"]["version"]) == (RECBOLE.dist, RECBOLE.version)
    site = Path(next(iter(importlib.util.find_spec("recbole").submodule_search_locations))).parent
    for entry in card["source"]["files"]:
        assert hashlib.sha256((site / entry["path"]).read_bytes()).hexdigest() == entry["sha256"], entry["path"]
    tables = read_movielens()
    assert (len(tables.ratings), len(tables.users), len(tables.items)) == (100_000, 943, 1682)


@needs_recbole
def test_ml100k_sizes_labels_and_rates(ml100k):
    rows = frame(ml100k)
    observed = rows[rows["watch"] == 1]
    assert len(observed) == 100_000 and len(rows) == 200_000
    assert [int((observed["split"] == s).sum()) for s in SPLITS] == [79_926, 10_037, 10_037]
    r = observed["rating"]
    assert ((r >= 4).mean(), (r == 5).mean(), (r <= 2).mean(), (r == 1).mean()) == pytest.approx(
        (0.554, 0.212, 0.175, 0.061), abs=5e-4)
    for name in SPLITS:
        part = ml100k.split(name)
        seen = part.label_mask[:, 1]
        rating = part.values["rating"]
        assert (part.labels[:, 0] == seen).all() and part.label_mask[:, 0].all()
        assert np.isnan(rating[~seen]).all() and not part.labels[~seen, 1:].any()
        for t, (low, high) in enumerate(((4, 5), (5, 5), (1, 2), (1, 1)), 1):
            assert (part.labels[seen, t] == ((rating[seen] >= low) & (rating[seen] <= high))).all()
            assert (part.label_mask[:, t] == seen).all()
    assert ml100k.task_groups == {"watch": ("watch",), "rating": ("like", "love", "dislike", "hate")}
    for key, table in (*ml100k.user_features.items(), *ml100k.item_features.items()):
        assert 0 <= table.min() and table.max() < ml100k.vocab[key], key


@needs_recbole
def test_ml100k_split_has_no_time_leakage(ml100k):
    rows = frame(ml100k)
    span = rows.groupby(["user", "split"])["time"].agg(["min", "max"]).unstack("split")
    assert (span[("min", "val")] >= span[("max", "train")]).all()
    assert (span[("min", "test")] >= span[("max", "val")]).all()
    assert (span[("min", "test")] >= span[("max", "train")]).all()


@needs_recbole
def test_ml100k_history_is_the_users_strictly_earlier_ratings(ml100k):
    rows = frame(ml100k)
    observed = rows[rows["watch"] == 1]
    rated_at = dict(zip(zip(observed["user"], observed["item"]), observed["time"]))  # one rating per pair
    by_user = {u: np.sort(g.to_numpy()) for u, g in observed.groupby("user")["time"]}
    for name in ("train", "test"):
        part = ml100k.split(name)
        take = np.random.default_rng(0).choice(len(part), 2000, replace=False)
        for row in take:
            u, t, length = part.user[row], part.timestamp[row], part.history_len[row]
            hist = part.history[row]
            assert (hist[: ml100k.max_history - length] == 0).all()
            times = [rated_at[(u, i)] for i in hist[ml100k.max_history - length:]]
            assert all(x < t for x in times) and times == sorted(times)
            assert length == min(np.searchsorted(by_user[u], t, side="left"), ml100k.max_history)


@needs_recbole
def test_ml100k_watch_negatives_are_never_rated(ml100k):
    rows = frame(ml100k)
    rated = set(zip(rows.loc[rows["watch"] == 1, "user"], rows.loc[rows["watch"] == 1, "item"]))
    negatives = rows[rows["watch"] == 0]
    assert not any(pair in rated for pair in zip(negatives["user"], negatives["item"]))
    assert negatives["item"].between(1, ml100k.vocab["item"] - 1).all()


@needs_recbole
def test_ml100k_long_tail_users_have_at_most_20_train_ratings(ml100k):
    rows = frame(ml100k)
    train_ratings = rows[(rows["split"] == "train") & (rows["watch"] == 1)].groupby("user").size()
    expected = set(train_ratings.index[train_ratings <= 20])
    test = ml100k.test
    assert set(test.user[test.long_tail]) == expected and len(expected) == 156
    assert not (set(test.user[~test.long_tail]) & expected)


# --------------------------------------------------------------------------------------------------------------
# Generators


def test_calibrate_bias_hits_the_target():
    logit = np.random.default_rng(0).normal(0, 2, 10_000)
    for target in (0.4, 0.002):
        assert sigmoid(logit + calibrate_bias(logit, target)).mean() == pytest.approx(target, rel=1e-6)


@pytest.fixture(scope="module")
def sim() -> RecData:
    return kuaishou_sim(n_users=1000, n_items=500, seed=0)


def test_simulator_rates_match_their_targets(sim):
    labels = np.concatenate([sim.split(s).labels for s in SPLITS])
    n = len(labels)
    for task, target in RATES.items():
        rate = labels[:, sim.tasks.index(task)].mean()
        assert abs(rate - target) < 4 * np.sqrt(target * (1 - target) / n) + 1e-4, (task, rate, target)
    shown_at_random = np.concatenate([sim.split(s).values["random_exposure"] for s in SPLITS])
    assert shown_at_random.mean() == pytest.approx(0.2, abs=0.01)
    assert 0.2 < labels[:, sim.tasks.index("long_view")].mean() < 0.4


def test_simulator_shape_split_and_history(sim):
    assert sim.tasks == ("long_view", "click", "like", "comment", "forward", "follow")
    assert sum(len(g) for g in sim.task_groups.values()) == len(sim.tasks)
    rows = pd.concat([pd.DataFrame({"user": sim.split(s).user, "item": sim.split(s).item, "split": s,
                                    "time": sim.split(s).timestamp, "click": sim.split(s).labels[:, 1]})
                      for s in SPLITS], ignore_index=True)
    assert not rows.duplicated(["user", "item"]).any()  # an item is shown once to a user
    span = rows.groupby(["user", "split"])["time"].agg(["min", "max"]).unstack("split")
    assert (span[("min", "test")] >= span[("max", "val")]).all()  # every user has 5+ rows, so all three splits
    assert (span[("min", "val")] >= span[("max", "train")]).all()
    clicked_at = {(u, i): t for u, i, t, c in rows[["user", "item", "time", "click"]].itertuples(index=False) if c}
    test = sim.test
    for row in range(0, len(test), 97):
        items = test.history[row][sim.max_history - test.history_len[row]:]
        assert all(clicked_at[(test.user[row], i)] < test.timestamp[row] for i in items)
    watch = test.values["watch_time"]
    assert ((watch > 0) & (watch <= test.values["duration"])).all()
    again = kuaishou_sim(n_users=1000, n_items=500, seed=0)
    np.testing.assert_array_equal(again.test.labels, test.labels)
