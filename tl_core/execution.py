"""Executing planned runs (``tl_core.planning``) with papermill: in order, resuming where a run stopped, lending a
finished run's artifacts (``--reuse``), several sweep runs at a time. Used by ``python -m tl_core.run`` (README
"Running with other parameters").

**Resuming.** A notebook counts as done only when the run's record (``run.json``) says it completed with the same
parameters *and* its executed copy shows every code cell run to its end without an error output; anything else
(interrupted, failed, a kernel that died, other parameters, a newer notebook) runs again, and so does everything
after it, since later notebooks read what earlier ones write.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .artifacts import (KERNEL_LOG, MANIFEST_FILE, RUN_OWN_FILES, RUNNER_LOG, CorruptArtifactError, read_json,
                        write_json, write_text)
from .course import Notebook, execution_problem
from .planning import KERNEL_NAME, RunPlan, runner_arguments


class NotebookInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a notebook; its record says "interrupted" and the next run starts it again."""

    def __init__(self, notebook: str, seconds: float):
        super().__init__(notebook)
        self.notebook, self.seconds = notebook, seconds


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a sweep; the runs that completed stay complete and are skipped next time."""

    def __init__(self, complete: int, total: int):
        super().__init__(f"{complete} of {total}")
        self.complete, self.total = complete, total


def kernel_name() -> str:
    """The course kernel when it is registered (make install does it), else the current Python's."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST_FILE
    try:
        return read_json(path) if path.exists() else {}
    except CorruptArtifactError:
        return {}  # a damaged record proves nothing: every notebook runs again


def executed_status(run_dir: Path, nb: Notebook, parameters: dict[str, Any]) -> str:
    """"complete" when the run's record and the executed copy of ``nb`` in ``run_dir`` both say it ran to its end
    with these parameters (see the module's doc); else why not: "missing", the record's own status ("failed",
    "interrupted", "running": the runner itself was killed), "unrecorded", "stale" (other parameters, or the notebook
    changed since) or "incomplete" (the copy shows a cell that did not run or ended in an error)."""
    output = Path(run_dir) / nb.path.name
    if not output.exists():
        return "missing"
    record = read_manifest(run_dir).get("notebooks", {}).get(nb.stem)
    if not record:
        return "unrecorded"
    if record.get("status") != "complete":
        return str(record.get("status"))
    if record.get("parameters") != parameters or output.stat().st_mtime < nb.path.stat().st_mtime:
        return "stale"
    import nbformat

    try:
        copied = nbformat.read(output, as_version=4).metadata.get("papermill", {}).get("parameters")
    except Exception:  # unreadable: execution_problem says so below
        copied = parameters
    if copied != parameters:
        return "stale"
    return "incomplete" if execution_problem(output) else "complete"


def link_reused(source: Path, run_dir: Path) -> list[str]:
    """Hard-link (or copy) a finished run's artifacts into run_dir, without overwriting anything there."""
    linked = []
    run_dir.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        if entry.name in RUN_OWN_FILES or entry.suffix == ".ipynb" or entry.name.startswith("."):
            continue
        target = run_dir / entry.name
        if target.exists():
            continue
        if entry.is_dir():
            shutil.copytree(entry, target, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, target)
        linked.append(entry.name)
    return linked


def _link_or_copy(source, target):
    try:
        os.link(source, target)  # artifacts are replaced by rename, never edited in place, so sharing is safe
    except OSError:
        shutil.copy2(source, target)
    return target


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send this process's stderr, and so that of the kernels it starts (they inherit it), to ``path`` while the
    block runs: Jupyter's warnings and a dying kernel's traceback land there instead of between the runner's
    lines (the error a notebook raises still reaches the runner as an exception)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def execute(run: RunPlan, log: Callable[..., None] = print, force: bool = False, report: bool = True,
            ) -> dict[str, Any]:
    """Execute the planned notebooks in order, skipping a leading run of complete ones; stop at the first failure.
    Ctrl-C raises :class:`NotebookInterrupted` once the record says which notebook it stopped. Returns the
    manifest (also written to run.json)."""
    import papermill

    run.run_dir.mkdir(parents=True, exist_ok=True)
    if run.reuse is not None:
        link_reused(run.reuse, run.run_dir)
    manifest_path = run.run_dir / MANIFEST_FILE
    manifest = read_manifest(run.run_dir)
    manifest.update({"profile": run.profile, "parameters": run.parameters,
                     "reused": str(run.reuse) if run.reuse else None})
    manifest.setdefault("notebooks", {})
    kernel = kernel_name()
    rerun_rest = force
    for index, nb in enumerate(run.notebooks, start=1):
        parameters = run.notebook_parameters[nb.stem]
        prefix = f"[{index}/{len(run.notebooks)}] {nb.stem}"
        status = "missing" if rerun_rest else executed_status(run.run_dir, nb, parameters)
        if status == "complete":
            log(f"{prefix}: complete already, skipped")
            continue
        rerun_rest = True  # what follows may read what this one writes
        again = "" if status in ("missing", "unrecorded", "stale") else f" (again: {status} last time)"
        log(f"{prefix}{again} ... ", end="")
        started = time.perf_counter()
        record = {"parameters": parameters, "output": nb.path.name, "status": "running"}
        manifest["notebooks"][nb.stem] = record
        write_json(manifest_path, manifest)
        try:
            with _stderr_to(run.run_dir / KERNEL_LOG):
                papermill.execute_notebook(str(nb.path), str(run.run_dir / nb.path.name), parameters=parameters,
                                           kernel_name=kernel, cwd=str(nb.path.parent), progress_bar=False)
        except BaseException as error:
            interrupted = isinstance(error, KeyboardInterrupt)
            lines = str(error).strip().splitlines()
            record.update(status="interrupted" if interrupted else "failed",
                          seconds=round(time.perf_counter() - started, 1),
                          error=f"{type(error).__name__}: {lines[-1] if lines else ''}")
            write_json(manifest_path, manifest)
            log("interrupted" if interrupted else "FAILED")
            if interrupted:
                raise NotebookInterrupted(nb.stem, record["seconds"]) from None
            raise
        record.update(status="complete", seconds=round(time.perf_counter() - started, 1))
        write_json(manifest_path, manifest)
        log(f"done in {record['seconds']:.0f} s")
    if report:
        from .report import write_report

        write_report(run.run_dir)
    return manifest


def run_sweep(plans: list[RunPlan], jobs: int = 1, force: bool = False, log: Callable[..., None] = print,
              ) -> dict[str, str]:
    """Run each planned run in its own process, ``jobs`` at a time, with a progress line per run.
    Complete runs are skipped. Returns label -> "complete" | "skipped" | "failed". Ctrl-C stops the running ones
    (their records say so) and raises :class:`SweepInterrupted`."""
    outcomes: dict[str, str] = {}
    pending = []
    for run in plans:
        if not force and all(executed_status(run.run_dir, nb, run.notebook_parameters[nb.stem]) == "complete"
                             for nb in run.notebooks):
            outcomes[run.label] = "skipped"
            log(f"[{len(outcomes)}/{len(plans)}] {run.label}: complete already, skipped")
        else:
            pending.append(run)
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    running: set[subprocess.Popen] = set()
    lock = threading.Lock()
    stopping = threading.Event()

    def one(run: RunPlan) -> tuple[RunPlan, str, float]:
        started = time.perf_counter()
        if stopping.is_set():
            return run, "not started", 0.0
        command = [sys.executable, "-m", "tl_core.run", *runner_arguments(run), "--quiet"]
        if force:
            command.append("--force")
        with subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as process:
            with lock:
                running.add(process)
                if stopping.is_set():  # started while Ctrl-C was being handled: stop it too
                    process.send_signal(signal.SIGINT)
            output, _ = process.communicate()
            with lock:
                running.discard(process)
        if process.returncode != 0:
            write_text(run.run_dir / RUNNER_LOG, output)
        return run, "complete" if process.returncode == 0 else "failed", time.perf_counter() - started

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        for run, outcome, seconds in pool.map(one, pending):
            outcomes[run.label] = outcome
            detail = f"done in {seconds:.0f} s" if outcome == "complete" else \
                f"FAILED after {seconds:.0f} s (see {run.run_dir / RUNNER_LOG})"
            log(f"[{len(outcomes)}/{len(plans)}] {run.label}: {detail}")
    except KeyboardInterrupt:
        stopping.set()
        with lock:
            for process in running:  # a terminal's Ctrl-C reaches them too; a signal sent to the runner alone not
                process.send_signal(signal.SIGINT)
        pool.shutdown(wait=True, cancel_futures=True)
        raise SweepInterrupted(sum(1 for outcome in outcomes.values() if outcome in ("complete", "skipped")),
                               len(plans)) from None
    pool.shutdown(wait=True)
    return outcomes
