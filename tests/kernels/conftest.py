"""Fixtures for the kernel tests: keep the backend registry of ``zoo.kernels`` clean between tests, run the
``compiled`` backend's chain eagerly (tests/kernels/test_compiled_backend.py compiles it), and keep autotuning off
with its in-process choices empty unless a test turns it on."""

import pytest

import zoo.kernels as K
from zoo.kernels import autotune, compiled


@pytest.fixture(autouse=True)
def _eager_compiled_backend_and_no_autotune(monkeypatch, tmp_path):
    """The backend matrix covers many dtype × activation × gradient combinations: compiled, each would cost
    seconds. The compiled chain is the same code, and its own test file compiles it for real. Autotuning is off
    (``ZOO_KERNELS_AUTOTUNE=0``) and points at a per-test cache file, so no test reads a user's cache."""
    monkeypatch.setattr(compiled, "EAGER", True)
    monkeypatch.setenv(autotune.ENV, "0")
    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path / "autotune.json"))
    monkeypatch.setattr(autotune, "_loaded_from", None)
    monkeypatch.setattr(autotune, "_choices", {})
    yield


@pytest.fixture(autouse=True)
def _restore_kernel_registry():
    """Snapshot the registry, the fallback log and the compile-step results before each test; restore them after.

    Tests may call ``register_backend`` freely (custom backends, stand-ins that decline); whatever they add,
    replace or remove is undone here, so no registration leaks into another test, and the "log a fallback
    once" memory starts each test empty.
    """
    backends = dict(K._BACKENDS)
    fallbacks = set(K._logged_fallbacks)
    prepared = dict(K._prepared)
    K._logged_fallbacks.clear()
    yield
    K._BACKENDS.clear()
    K._BACKENDS.update(backends)
    K._logged_fallbacks.clear()
    K._logged_fallbacks.update(fallbacks)
    K._prepared.clear()
    K._prepared.update(prepared)
