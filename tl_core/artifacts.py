"""The run directory: how notebooks hand each other artifacts, written so that nothing is lost on Ctrl-C.

Every notebook takes the papermill parameter ``run_dir``; what one notebook writes there (vocabulary, vectors,
checkpoints, figures, ``metrics.json``) the next one reads. Every file is written to a temporary name in the
same folder and then renamed over the target, so a reader sees either the old file or the new one, never half of
one; it gets the permissions the umask gives a new file (0644 under 022), so a teacher's run directory can be
``--reuse``d by students. ``metrics.json`` is updated under a lock, so notebooks or sweeps that write sections of it
at the same time keep every section. Introduced in ``notebooks/00_setup.ipynb``.

The names of the run directory's files live here, and only here; every module imports them.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent metric writers are not supported there
    fcntl = None

# ------------------------------------------------------------------------------- the run directory's files

#: What ran, with which parameters, how it ended (written by the runner, tl_core.run).
MANIFEST_FILE = "run.json"
#: The headline numbers of a run (tl_core.report).
REPORT_FILE = "report.md"
#: HTML renderings of the executed notebooks (tl_core.report).
HTML_DIR = "html"
#: Every notebook's results, one section per notebook (update_metrics).
METRICS_FILE = "metrics.json"
#: A failed sweep run's output (tl_core.run --sweep).
RUNNER_LOG = "runner.log"
#: What the kernels and papermill write to stderr (Jupyter's warnings, a crash's traceback), kept off the terminal.
KERNEL_LOG = "kernel.log"
#: The environment check of notebooks/00_setup.ipynb.
ENVIRONMENT_FILE = "environment.json"
#: The vocabulary (notebooks/01_data.ipynb; tl_core.text.Vocab).
VOCAB_FILE = "vocab.json"
#: Word2Vec's vectors and the embedding matrix aligned to the vocabulary (notebooks/02_embeddings.ipynb).
VECTORS_FILE = "word2vec.kv"
EMBEDDINGS_FILE = "embedding_matrix.npz"
#: The language model pretrained on IMDB (notebooks/04_language_model.ipynb; tl_core.lm), read by 05 and 07.
LM_CHECKPOINT = "language_model.pt"
#: The source classifier (notebooks/05_source_lstm.ipynb; tl_core.train.save_checkpoint), read by 06 and 07.
SOURCE_CHECKPOINT = "source_model.pt"
#: What belongs to one run and is never lent to another by ``--reuse``.
RUN_OWN_FILES = frozenset({MANIFEST_FILE, REPORT_FILE, HTML_DIR, RUNNER_LOG, KERNEL_LOG})


class MissingArtifactError(FileNotFoundError):
    """An artifact a notebook needs is not in the run directory: an earlier notebook has not been run."""


class CorruptArtifactError(ValueError):
    """An artifact exists but cannot be read (a truncated or hand-edited file); the message names it."""


def _umask() -> int:
    """The process's umask, read without changing it (os.umask sets while it reads, which races with threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            match = re.search(r"^Umask:\s*([0-7]+)", status.read(), re.MULTILINE)
        if match:
            return int(match.group(1), 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path`` with the permissions a new
    file gets under the umask (mkstemp's are 0600), on any error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
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
    """Read a JSON artifact; a truncated or damaged one is a :class:`CorruptArtifactError` naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptArtifactError(
            f"{path} is not valid JSON ({error}): the file is truncated or damaged. Fix: run the notebook that "
            "writes it again (same run_dir), or delete it.") from error


def save_figure(figure, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Save a matplotlib figure atomically (the format comes from the suffix of ``path``)."""
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=path.suffix.lstrip(".") or "png", bbox_inches="tight", **savefig_kwargs)
    return path


@contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` + ``.lock`` (a hidden file beside it) while the block runs: writers that
    read, change and rewrite one file take turns instead of overwriting each other's changes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)


def update_metrics(run_dir: str | os.PathLike, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """Set ``metrics.json[section] = values`` in ``run_dir`` (other sections stay, also those another process
    writes at the same time) and return the whole file."""
    path = Path(run_dir) / METRICS_FILE
    with locked(path):
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
