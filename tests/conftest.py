"""Shared test fixtures. CUDA tests skip cleanly where there is no GPU or the extension was built without CUDA."""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def cuda_ready() -> bool:
    if not torch.cuda.is_available():
        return False
    from tl_core import ops

    return bool(ops._C.with_cuda)


requires_cuda = pytest.mark.skipif(not cuda_ready(), reason="needs a CUDA device and tl_core._C built with CUDA")

#: The devices each device-parametrized test runs on: the CPU always, CUDA where it can run.
DEVICES = ["cpu", pytest.param("cuda", marks=[requires_cuda, pytest.mark.cuda])]


@pytest.fixture
def shared_data_dir() -> Path:
    """The real datasets (TL_DATA_DIR, set by .ci/run); tests that need them skip with a reason otherwise."""
    value = os.environ.get("TL_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("TL_DATA_DIR is not set to a folder holding the datasets (see README: Data)")
    return Path(value)


@pytest.fixture
def cpu_threads():
    """Sets torch's CPU thread count for one test (the test tier runs with one thread) and restores it after."""
    saved = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(saved)
