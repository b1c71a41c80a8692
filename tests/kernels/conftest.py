"""Fixtures for the kernel tests: keep the backend registry of ``zoo.kernels`` clean between tests."""

import pytest

import zoo.kernels as K


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
