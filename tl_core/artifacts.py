"""The run directory: how notebooks hand each other artifacts, written so that nothing is lost on Ctrl-C.

Every notebook takes the papermill parameter ``run_dir``; what one notebook writes there (vocabulary, vectors,
checkpoints, figures, ``metrics.json``) the next one reads. Every file is written to a temporary name in the
same folder and then renamed over the target, so a reader sees either the old file or the new one, never half of
one. Introduced in ``notebooks/00_setup.ipynb``.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

METRICS_FILE = "metrics.json"


class MissingArtifactError(FileNotFoundError):
    """An artifact a notebook needs is not in the run directory: an earlier notebook has not been run."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on any error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_figure(figure, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Save a matplotlib figure atomically (the format comes from the suffix of ``path``)."""
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=path.suffix.lstrip(".") or "png", bbox_inches="tight", **savefig_kwargs)
    return path


def update_metrics(run_dir: str | os.PathLike, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """Set ``metrics.json[section] = values`` in ``run_dir`` (other sections stay) and return the whole file."""
    path = Path(run_dir) / METRICS_FILE
    metrics = read_json(path) if path.exists() else {}
    metrics[section] = values
    write_json(path, metrics)
    return metrics


def require(path: str | os.PathLike, produced_by: str) -> Path:
    """Return ``path`` if it exists, else say which notebook writes it and how to run that one first."""
    path = Path(path)
    if not path.exists():
        raise MissingArtifactError(
            f"{path} is missing: it is written by notebooks/{produced_by}. Run that notebook first with the same "
            f"run_dir ({path.parent}), or run every notebook in order with `make run`.")
    return path
