"""The environment check a learner runs first (``notebooks/00_setup.ipynb``), and the course's device rule."""

from __future__ import annotations

import importlib
import platform
from pathlib import Path
from typing import Any

import torch

from . import paths
from .artifacts import ENVIRONMENT_FILE, write_json

#: Packages whose versions the setup notebook reports (the pinned ones that matter most for results).
REPORTED_PACKAGES = ("torch", "numpy", "gensim", "matplotlib", "papermill", "nbval")


def default_device() -> torch.device:
    """CUDA when a GPU is present and tl_core._C has its CUDA kernels, the CPU otherwise."""
    if torch.cuda.is_available() and extension_status()["built"] and extension_status()["with_cuda"]:
        return torch.device("cuda")
    return torch.device("cpu")


def extension_status() -> dict[str, Any]:
    """Whether tl_core._C imports, and what it was built with; the import error if it does not."""
    try:
        from . import ops
    except ImportError as error:
        return {"built": False, "with_cuda": False, "cpu_kernel_isa": None, "error": str(error)}
    return {"built": True, **ops.extension_info(), "error": None}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in REPORTED_PACKAGES:
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            versions[name] = "not installed"
    return versions


def dataset_status(data_dir: str | Path | None = None) -> dict[str, Any]:
    """Which datasets the data path rule finds (without downloading anything)."""
    root, chosen_by = paths.data_dir(data_dir)
    found = {}
    for name, source in paths.DATASETS.items():
        location = paths.find_dataset(name, data_dir)
        found[name] = {"title": source.title,
                       "found": location is not None,
                       "layout": location.relative_to(root).as_posix() if location is not None else None}
    return {"data_dir": str(root), "chosen_by": chosen_by, "datasets": found}


def cell_parity_check(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Largest |fused - reference| over the outputs and input gradients of one random LSTM cell step."""
    from . import ops

    generator = torch.Generator().manual_seed(0)
    gates = (3 * torch.randn(32, 4 * 48, generator=generator, dtype=dtype)).to(device).requires_grad_()
    c_prev = torch.randn(32, 48, generator=generator, dtype=dtype).to(device).requires_grad_()
    largest = 0.0
    results = []
    for cell in (ops.lstm_cell, ops.lstm_cell_reference):
        h, c = cell(gates, c_prev)
        grads = torch.autograd.grad(h.sum() + 0.5 * c.sum(), (gates, c_prev))
        results.append((h, c, *grads))
    for fused, reference in zip(*results):
        largest = max(largest, (fused - reference).abs().max().item())
    return largest


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_report(data_dir: str | Path | None = None) -> dict[str, Any]:
    """Everything the setup notebook checks, as one JSON-ready dictionary."""
    device = default_device()
    return {
        "versions": package_versions(),
        "extension": extension_status(),
        "device": {"type": device.type,
                   "name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
                   "cpu_threads": torch.get_num_threads()},
        "data": dataset_status(data_dir),
    }


def save_report(report: dict[str, Any], run_dir: str | Path) -> Path:
    return write_json(Path(run_dir) / ENVIRONMENT_FILE, report)
