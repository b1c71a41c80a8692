"""Fixtures of the audio tests: one torch thread for every test module (the probes and models train inside
fixtures), and a private ``$ZOO_HOME`` holding a tiny corpus and its codec."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def home(request, tmp_path_factory):
    """A private ``$ZOO_HOME`` for the whole module, holding the corpus of the module's ``SEED``, ``N_SPEECH`` and
    ``N_MUSIC`` and its codec, prepared once."""
    from zoo.tasks.audio import data

    module = request.module
    folder = tmp_path_factory.mktemp("zoo-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(folder))
        data.prepare.cache_clear()  # memoised per process: build (and cache) it in this home
        data.prepare(module.SEED, module.N_SPEECH, module.N_MUSIC)
        yield folder
        data.prepare.cache_clear()
