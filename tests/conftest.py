"""Shared test settings."""

import os
import shutil

# Without a GPU, Triton kernels can only run under the interpreter, which must be chosen before triton loads.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_precision():
    """Every test starts from the same seed, with fp32 matmuls that are really fp32 (no TF32 on GPUs)."""
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
