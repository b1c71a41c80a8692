"""Reading users' CSV files: formats, frequencies, fill policies, future timestamps and one-line errors."""

import numpy as np
import pandas as pd
import pytest

from zoo.errors import ZooValueError
from zoo.tasks.forecasting.csvio import check_length, future_timestamps, load_csv, timestamps


def write(tmp_path, text, name="in.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def by_id(series):
    return {s.id: s for s in series}


# ---------------------------------------------------------------------------------------------------- formats


def test_long_with_timestamps_is_sorted_per_series_and_gets_its_frequency(tmp_path):
    path = write(tmp_path, "id,timestamp,value\n"
                           "a,2020-03-31,3\nb,2021-01-01,10\na,2020-01-31,1\nb,2021-02-01,11\na,2020-02-29,2\n")
    s = by_id(load_csv(path))
    assert list(s) == ["a", "b"]
    a, b = s["a"], s["b"]
    np.testing.assert_array_equal(a.values, [1, 2, 3])
    assert (a.period, a.m, a.start, a.attrs["freq"], a.test, a.horizon) == ("MONTHLY", 12, "2020-01-31", "ME", None,
                                                                               None)
    assert (b.period, b.start, b.attrs["freq"]) == ("MONTHLY", "2021-01-01", "MS")
    assert [str(t.date()) for t in timestamps(a)] == ["2020-01-31", "2020-02-29", "2020-03-31"]


@pytest.mark.parametrize("header", ["unique_id,ds,y", "ID,Date,Value", " series , time , VALUE "])
def test_long_column_synonyms_and_case(tmp_path, header):
    path = write(tmp_path, f"{header}\nk,2020-01-01,1\nk,2020-01-02,2\nk,2020-01-03,4\n")
    (s,) = load_csv(path)
    assert (s.id, s.period, s.m, s.start) == ("k", "DAILY", 7, "2020-01-01")
    np.testing.assert_array_equal(s.values, [1, 2, 4])


def test_long_without_timestamps_keeps_row_order_and_interleaving(tmp_path):
    s = by_id(load_csv(write(tmp_path, "id,value\na,1\nb,10\n\na,2\n,\nb,20\na,3\n")))  # blank lines skipped
    np.testing.assert_array_equal(s["a"].values, [1, 2, 3])
    np.testing.assert_array_equal(s["b"].values, [10, 20])
    assert (s["a"].period, s["a"].m, s["a"].start, s["a"].attrs) == ("OTHER", 1, None, {})
    assert timestamps(s["a"]) is None and future_timestamps(s["a"], 3) is None


def test_lone_value_column_is_one_series(tmp_path):
    (s,) = load_csv(write(tmp_path, "value\n1.5\n2\n-3e2\n"))
    assert s.id == "series"
    np.testing.assert_array_equal(s.values, [1.5, 2, -300])


def test_wide_with_timestamp_column_and_ragged_starts(tmp_path):
    path = write(tmp_path, "date,sales,visits\n2020-01-01,,7\n2020-01-02,5,8\n2020-01-03,6,9\n2020-01-04,7,\n")
    s = by_id(load_csv(path))
    assert list(s) == ["sales", "visits"]
    np.testing.assert_array_equal(s["sales"].values, [5, 6, 7])
    assert s["sales"].start == "2020-01-02" and s["visits"].start == "2020-01-01"
    np.testing.assert_array_equal(s["visits"].values, [7, 8, 9])  # the trailing empty cell ends the series
    assert s["sales"].period == s["visits"].period == "DAILY"


def test_wide_without_timestamps_every_column_is_a_series(tmp_path):
    s = by_id(load_csv(write(tmp_path, "north,south\n1,4\n2,5\n3,\n")))
    np.testing.assert_array_equal(s["north"].values, [1, 2, 3])
    np.testing.assert_array_equal(s["south"].values, [4, 5])
    assert s["north"].start is None


@pytest.mark.parametrize(
    ("freq", "period"),
    [("YS", "YEARLY"), ("QE", "QUARTERLY"), ("MS", "MONTHLY"), ("W-MON", "WEEKLY"), ("D", "DAILY"),
     ("h", "HOURLY"), ("30min", "HALF_HOURLY"), ("10min", "10_MINUTES"), ("min", "MINUTELY"), ("15min", "OTHER"),
     ("B", "OTHER"), ("2D", "OTHER")],
)
def test_frequency_maps_to_the_zoo_period_names(tmp_path, freq, period):
    stamps = pd.date_range("2021-01-04", periods=6, freq=freq)
    path = write(tmp_path, "timestamp,value\n" + "".join(f"{t.isoformat()},{i}\n" for i, t in enumerate(stamps)))
    (s,) = load_csv(path)
    assert s.period == period
    assert list(timestamps(s)) == list(stamps)


def test_same_day_of_month_and_other_date_formats(tmp_path):
    (s,) = load_csv(write(tmp_path, "ds,y\n2020-01-15,1\n2020-02-15,2\n2020-03-15,3\n"))
    assert s.period == "MONTHLY" and [str(t.date()) for t in future_timestamps(s, 2)] == ["2020-04-15", "2020-05-15"]
    (s,) = load_csv(write(tmp_path, "date,value\n01/31/2020,1\n02/29/2020,2\n03/31/2020,3\n"))
    assert (s.period, s.start) == ("MONTHLY", "2020-01-31")
    (s,) = load_csv(write(tmp_path, "date,value\n1990,1\n1991,2\n1992,3\n"))
    assert s.period == "YEARLY"


def test_a_single_timestamp_borrows_the_files_step(tmp_path):
    s = by_id(load_csv(write(tmp_path, "id,date,value\na,2020-01-31,1\na,2020-02-29,2\nb,2020-05-31,9\n")))
    assert s["b"].period == "MONTHLY"
    assert [str(t.date()) for t in future_timestamps(s["b"], 2)] == ["2020-06-30", "2020-07-31"]


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", ["empty"]),
        ("id,value\n", ["only a header"]),
        ("id,amount\na,1\n", ["expected a header with a 'value' column"]),
        ("id,value\na,1\na,x\n", ["in.csv:3:", "value 'x' is not a number", "series 'a'"]),
        ("id,value\na,1\nb,inf\n", ["in.csv:3:", "'inf' is not finite", "series 'b'"]),
        ("id,ds,value\na,2020-01-01,1\nb,2020-01-01,1\na,2020-01-01,2\n",
         ["in.csv:4:", "duplicate timestamp 2020-01-01", "series 'a'", "line 2"]),
        ("ds,value\n2020-01-01,1\n2020-01-02,2\n2020-01-03 12:00,3\n2020-01-04,4\n2020-01-05,5\n",
         ["in.csv:4:", "irregular", "2020-01-03T12:00:00", "step 'D'"]),
        ("ds,value\n2020-01-31,1\n2020-02-29,2\n2020-03-31,3\n2020-04-15,4\n2020-05-31,5\n",
         ["in.csv:5:", "irregular", "2020-04-15", "'ME'"]),
        ("id,ds,value\na,2020-01-31,1\na,2020-02-29,2\na,2020-04-30,4\n",
         ["in.csv:4:", "series 'a'", "gap", "no row for 2020-03-31", "fill="]),
        ("id,value\na,1\na,\na,3\n", ["in.csv:3:", "series 'a'", "missing value", "fill="]),
        ("id,value\na,1\na,NA\na,3\n", ["in.csv:3:", "missing value"]),
        ("id,value\na,\nb,1\n", ["series 'a'", "no observed value"]),
        ("id,ds,value\na,2020-01-01,1\na,soon,2\n", ["in.csv:3:", "timestamp 'soon' is not a date", "series 'a'"]),
        ("id,ds,value\na,,1\n", ["in.csv:2:", "empty timestamp"]),
        ("id,value\n,1\n", ["in.csv:2:", "empty 'id' cell"]),
        ("id,value,note\na,1,x\n", ["unexpected column(s) 'note'"]),
        ("id,value,y\na,1,2\n", ["'value', 'y' all mean value"]),
        ("a,b,a\n1,2,3\n", ["'a' appears twice"]),
        ("1,2\n3,4\n", ["all numbers", "header"]),
        ("id;value\na;1\n", ["';'"]),
        ("id,value\na,1,2\n", ["not a valid CSV"]),
        ("ds,value\n2020-01-01,1\n2020-01-02,2\n2020-01-03,3\n2020-03-01,4\n", ["more than half gaps"]),
        ("id,date,value\na,2020-01-31,1\nb,2020-01-31,1\n", ["series 'a'", "single timestamp"]),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, content, words):
    with pytest.raises(ZooValueError) as info:
        load_csv(write(tmp_path, content))
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "in.csv") in message
    for word in words:
        assert word in message, (word, message)


def test_missing_file_and_unknown_fill(tmp_path):
    with pytest.raises(ZooValueError, match="no such file"):
        load_csv(tmp_path / "nope.csv")
    with pytest.raises(ZooValueError, match="fill='zero' is not allowed"):
        load_csv(write(tmp_path, "value\n1\n"), fill="zero")


# ---------------------------------------------------------------------------------------------------- fill


def test_interpolate_is_linear_in_time_across_gaps_and_empty_cells(tmp_path):
    path = write(tmp_path, "date,value\n2020-01-31,1\n2020-03-31,3\n2020-04-30,\n2020-05-31,5\n")
    (s,) = load_csv(path, fill="interpolate")
    # Feb 29 is 29 of the 60 days from Jan 31 to Mar 31; Apr 30 is 30 of the 61 days to May 31.
    np.testing.assert_allclose(s.values, [1, 1 + 2 * 29 / 60, 3, 3 + 2 * 30 / 61, 5])
    assert [str(t.date()) for t in timestamps(s)][1] == "2020-02-29"


def test_ffill_and_positional_interpolation(tmp_path):
    path = write(tmp_path, "date,value\n2020-01-01,1\n2020-01-03,3\n2020-01-04,\n2020-01-05,5\n")
    (s,) = load_csv(path, fill="ffill")
    np.testing.assert_array_equal(s.values, [1, 1, 3, 3, 5])
    (s,) = load_csv(write(tmp_path, "value\n\n2\nnan\n\n8\n\n"), fill="interpolate")
    np.testing.assert_array_equal(s.values, [2, 4, 6, 8])  # one column: empty lines are missing values; the
    # leading and trailing ones are dropped


# ---------------------------------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        (["2023-11-30", "2023-12-31", "2024-01-31"], ["2024-02-29", "2024-03-31", "2024-04-30"]),
        (["2023-11-01", "2023-12-01", "2024-01-01"], ["2024-02-01", "2024-03-01", "2024-04-01"]),
        (["2024-02-27", "2024-02-28"], ["2024-02-29", "2024-03-01", "2024-03-02"]),
        (["2024-01-01 23:00", "2024-01-01 23:30"], ["2024-01-02 00:00", "2024-01-02 00:30", "2024-01-02 01:00"]),
    ],
    ids=["month-ends", "month-starts", "daily-leap", "half-hourly-midnight"],
)
def test_future_timestamps(tmp_path, stamps, expected):
    (s,) = load_csv(write(tmp_path, "ds,y\n" + "".join(f"{t},{i}\n" for i, t in enumerate(stamps))))
    assert list(future_timestamps(s, 3)) == [pd.Timestamp(t) for t in expected]


def test_check_length_names_the_series_and_the_need(tmp_path):
    series = load_csv(write(tmp_path, "id,value\na,1\na,2\nb,1\nc," + "\nc,".join("123456789") + "\n"))
    with pytest.raises(ZooValueError) as info:
        check_length(series, 33, "lookback 15 + horizon 18", source="in.csv")
    assert str(info.value) == ("in.csv: series 'a' has 2 point(s); lookback 15 + horizon 18 = 33 are needed to train "
                               "(2 more series are shorter too)")
    check_length(series, 1, "one point")


def test_utc_offsets_that_change_with_daylight_saving_become_utc(tmp_path):
    stamps = ["2021-03-28T00:00:00+01:00", "2021-03-28T01:00:00+01:00", "2021-03-28T03:00:00+02:00"]
    (s,) = load_csv(write(tmp_path, "ds,y\n" + "".join(f"{t},{i}\n" for i, t in enumerate(stamps))))
    assert (s.period, s.start) == ("HOURLY", "2021-03-27T23:00:00+00:00")
    assert future_timestamps(s, 1)[0] == pd.Timestamp("2021-03-28T02:00:00Z")
