"""Executing planned runs (``tl_core.planning``) with papermill: in order, resuming where a run stopped, lending a
finished run's artifacts (``--reuse``), several sweep runs at a time. Used by ``python -m tl_core.run`` (README
"Running with other parameters").

**Resuming.** A notebook counts as done only when the run's record (``run.json``) says it completed with the same
parameters *and* its executed copy shows every code cell run to its end without an error output; anything else
(interrupted, failed, a kernel that died, other parameters, a newer notebook) runs again, and so does everything
after it, since later notebooks read what earlier ones write.

**What an executed copy holds.** Its outputs as a reader sees them: a progress bar's frames (written over each
other with carriage returns) collapsed to the bar's final line, and no kernel start-up warnings
(:func:`clean_outputs`); and the run it belongs to, ``metadata.tl_course.run`` (an id, when the run started, the
profile). The id stays the same while a run continues in order (resuming after Ctrl-C or a failure, with the same
profile and parameters) and changes when a notebook is executed again while later notebooks of the run directory
keep their older copies, so that notebooks with one id are the outputs of one run. :func:`commit_notebooks` copies the notebooks of one complete
quick run over ``notebooks/`` (``make notebooks``): the committed outputs all come from that run.
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
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
from .course import NOTEBOOK_PATTERN, Notebook, discover_notebooks, execution_problem, find_notebooks, select
from .planning import KERNEL_NAME, RunPlan, runner_arguments

#: Where an executed notebook records the run it belongs to (``metadata.tl_course.run``).
RUN_METADATA = "run"
#: The tag papermill gives the cell it adds with the run's parameters.
INJECTED_TAG = "injected-parameters"
#: Lines a kernel writes at start-up that are about the transport, not the course; never stored as output.
KERNEL_WARNING = re.compile(r"^[^\n]*Kernel is running over TCP without encryption[^\n]*(?:\n|$)", re.MULTILINE)
# A line written over with carriage returns keeps what was written last: nbval's rule (``nbval.plugin``'s
# coalesce_streams), so that the stored outputs and nbval's view of a fresh run agree.
_OVERWRITTEN = re.compile(r"^.*\r(?=[^\n])", re.MULTILINE)


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


# ------------------------------------------------------------------------------------- outputs as a reader sees them

def final_text(text: str) -> str:
    """Stream text as a terminal leaves it: a line written over with carriage returns (a progress bar's frames)
    reduced to what was written last. A carriage return at the very end (a bar still open when its cell ended)
    stays, as in nbval."""
    return _OVERWRITTEN.sub("", text)


def clean_outputs(notebook) -> int:
    """Tidy the stream outputs of every code cell of ``notebook`` (an nbformat node) in place: consecutive outputs of
    one stream (stdout, stderr) merged, as a notebook front end shows them; progress-bar frames collapsed to the
    final state (:func:`final_text`); the kernel's transport warning (:data:`KERNEL_WARNING`) removed. Returns how
    many outputs were merged away or dropped."""
    removed = 0
    for cell in notebook.cells:
        if cell.get("cell_type") != "code" or not cell.get("outputs"):
            continue
        outputs = []
        for output in cell.outputs:
            if output.get("output_type") == "stream":
                text = output.text if isinstance(output.text, str) else "".join(output.text)
                if outputs and outputs[-1].get("output_type") == "stream" and outputs[-1].name == output.name:
                    outputs[-1].text += text
                    removed += 1
                    continue
                output.text = text
            outputs.append(output)
        kept = []
        for output in outputs:
            if output.get("output_type") == "stream":
                output.text = KERNEL_WARNING.sub("", final_text(output.text))
                if not output.text:
                    removed += 1
                    continue
            kept.append(output)
        cell.outputs = kept
    return removed


def new_run_identity(profile: str) -> dict[str, str]:
    """A run's identity: an id unique to it (when it started, plus a random part) and its profile."""
    started = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return {"id": f"{started:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}", "started": started.isoformat(),
            "profile": profile}


def run_identity(notebook) -> dict[str, Any] | None:
    """The run an executed notebook belongs to (``metadata.tl_course.run``), or None."""
    return notebook.metadata.get("tl_course", {}).get(RUN_METADATA)


def tidy_executed_copy(path: Path, identity: dict[str, Any]) -> None:
    """Clean the outputs of the executed copy at ``path`` (:func:`clean_outputs`) and record the run it belongs
    to; written atomically, so an interrupted tidy leaves papermill's file as it was."""
    import nbformat

    notebook = nbformat.read(os.fspath(path), as_version=4)
    clean_outputs(notebook)
    notebook.metadata.setdefault("tl_course", {})[RUN_METADATA] = dict(identity)
    write_text(path, nbformat.writes(notebook) + "\n")


def _continues_the_run(run: RunPlan, manifest: dict[str, Any], first: int, force: bool) -> bool:
    """Whether executing ``run.notebooks[first:]`` continues the run recorded in ``manifest`` (its id is kept): the
    same profile and parameters, not forced, and no executed copy of a later notebook left behind in the run
    directory (it would be older than the notebooks it reads)."""
    if (force or not manifest.get("run") or manifest.get("profile") != run.profile
            or manifest.get("parameters") != run.parameters):
        return False
    first_stem = run.notebooks[first].stem
    rerun = {nb.path.name for nb in run.notebooks[first:]}
    left_behind = [copy.name for copy in run.run_dir.glob(NOTEBOOK_PATTERN)
                   if copy.stem > first_stem and copy.name not in rerun]
    return not left_behind


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
    statuses, first = {}, None  # leading complete notebooks are skipped; from the first other one on, all run
    for index, nb in enumerate(run.notebooks):  # (what follows a notebook may read what it writes)
        statuses[nb.stem] = "missing" if force else executed_status(run.run_dir, nb, run.notebook_parameters[nb.stem])
        if statuses[nb.stem] != "complete":
            first = index
            break
    if first is not None and not _continues_the_run(run, manifest, first, force):
        manifest["run"] = new_run_identity(run.profile)
    identity = {**manifest.get("run", {}), "profile": run.profile}
    manifest.update({"profile": run.profile, "parameters": run.parameters,
                     "reused": str(run.reuse) if run.reuse else None})
    manifest.setdefault("notebooks", {})
    kernel = kernel_name()
    for index, nb in enumerate(run.notebooks, start=1):
        parameters = run.notebook_parameters[nb.stem]
        prefix = f"[{index}/{len(run.notebooks)}] {nb.stem}"
        status = statuses.get(nb.stem, "missing")
        if status == "complete":
            log(f"{prefix}: complete already, skipped")
            continue
        again = "" if status in ("missing", "unrecorded", "stale") else f" (again: {status} last time)"
        log(f"{prefix}{again} ... ", end="")
        started = time.perf_counter()
        record = {"parameters": parameters, "output": nb.path.name, "status": "running"}
        manifest["notebooks"][nb.stem] = record
        write_json(manifest_path, manifest)
        output = run.run_dir / nb.path.name
        try:
            with _stderr_to(run.run_dir / KERNEL_LOG):
                papermill.execute_notebook(str(nb.path), str(output), parameters=parameters,
                                           kernel_name=kernel, cwd=str(nb.path.parent), progress_bar=False)
        except BaseException as error:
            try:  # the partial copy of a failed notebook is read too (its error), so it is tidied as well
                tidy_executed_copy(output, identity)
            except Exception:  # nothing readable was written: the notebook's own error is what matters
                pass
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
        tidy_executed_copy(output, identity)
        record.update(status="complete", seconds=round(time.perf_counter() - started, 1))
        write_json(manifest_path, manifest)
        log(f"done in {record['seconds']:.0f} s")
    if report:
        from .report import write_report

        write_report(run.run_dir)
    return manifest


# ------------------------------------------------------------------------------------ the committed notebooks

class CommitError(ValueError):
    """A run directory's notebooks cannot become the committed ones: the message says why and what to run."""


#: Cell metadata that belongs to one execution (timings, papermill's status), not to the committed notebook.
EXECUTION_CELL_METADATA = ("execution", "papermill")


def committed_copy(executed, source):
    """The notebook to commit from ``executed`` (a run's copy of ``source``, both nbformat nodes): ``source``'s cells
    with the run's outputs, without the cell papermill injected and without per-execution metadata, execution
    counts renumbered from 1, and ``metadata.tl_course.run`` holding the run's identity and the parameters the
    notebook received (``run_dir`` left out: it names a folder of the machine that ran it)."""
    import copy

    import nbformat

    cells = [cell for cell in executed.cells if INJECTED_TAG not in cell.metadata.get("tags", [])]
    if [cell.source for cell in cells] != [cell.source for cell in source.cells]:
        raise CommitError("its cells differ from the notebook's: it was edited after the run")
    result = nbformat.v4.new_notebook()
    result.metadata = copy.deepcopy(source.metadata)
    if "language_info" in executed.metadata:
        result.metadata["language_info"] = copy.deepcopy(executed.metadata["language_info"])
    parameters = {name: value for name, value in executed.metadata.get("papermill", {}).get("parameters", {}).items()
                  if name != "run_dir"}
    result.metadata.setdefault("tl_course", {})[RUN_METADATA] = {**run_identity(executed), "parameters": parameters}
    count = 0
    for cell in cells:
        cell = copy.deepcopy(cell)
        for key in EXECUTION_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code" and cell.get("execution_count") is not None:
            count += 1
            cell.execution_count = count
            for output in cell.outputs:
                if "execution_count" in output:
                    output.execution_count = count
        result.cells.append(cell)
    clean_outputs(result)
    return result


def commit_notebooks(run_dir: str | os.PathLike, notebooks_dir: str | os.PathLike | None = None,
                     profile: str = "quick", only: str | None = None) -> list[Path]:
    """Copy the executed notebooks of ``run_dir`` over the course's numbered notebooks (``make notebooks``), after
    checking that they are one complete run of ``profile`` with the profile's own parameters: every notebook that
    runs in the profile ran to its end, all with one run id, none with overrides, none edited since. An appendix
    that the profile does not run (08) is committed with them when the run directory holds a copy of it: run into
    the same directory afterwards (``--only 08 --run-dir`` continues the run's id), it passes the same checks.

    ``only`` (numbers or stems, as ``--only``) commits just those notebooks, which must belong to the run the
    committed notebooks of the chain already come from: an appendix added to the committed run without touching
    the rest. Nothing is written unless every check passes. Returns the paths written."""
    import nbformat

    from .course import load_profile

    run_dir = Path(run_dir)
    notebooks_dir = find_notebooks(notebooks_dir)
    manifest = read_manifest(run_dir)
    course = discover_notebooks(notebooks_dir)
    chain = [nb for nb in course if nb.runs_in(profile)]
    selected = select(course, only) if only else chain + [
        nb for nb in course if not nb.runs_in(profile) and (run_dir / nb.path.name).exists()]
    profile_values = load_profile(profile, notebooks_dir)
    problems, copies, identities = [], {}, {}
    if manifest.get("profile") != profile:
        problems.append(f"{run_dir} is a run of profile {manifest.get('profile')!r}, not {profile!r}")
    for nb in selected:
        executed_path = run_dir / nb.path.name
        record = manifest.get("notebooks", {}).get(nb.stem, {})
        problem = ("it was not run" if not executed_path.exists() else execution_problem(executed_path)
                   or (None if record.get("status") == "complete" else f"run.json says {record.get('status')!r}"))
        if problem:
            problems.append(f"{nb.path.name}: {problem}")
            continue
        executed = nbformat.read(executed_path, as_version=4)
        given = {name: value for name, value in executed.metadata.get("papermill", {}).get("parameters", {}).items()
                 if name != "run_dir"}
        expected = nb.given_by(profile_values)
        if given != expected:
            problems.append(f"{nb.path.name}: ran with {given}, but the {profile} profile gives it {expected}")
        identity = run_identity(executed)
        if not identity:
            problems.append(f"{nb.path.name}: no run identity (metadata.tl_course.{RUN_METADATA}): not executed by "
                            "this runner")
            continue
        identities[nb.path.name] = identity.get("id")
        try:
            copies[nb.path] = committed_copy(executed, nbformat.read(nb.path, as_version=4))
        except CommitError as error:
            problems.append(f"{nb.path.name}: {error}")
    if only:
        # The notebooks committed alone join the committed chain's run: they must have run on its artifacts.
        committed = {(run_identity(nbformat.read(nb.path, as_version=4)) or {}).get("id") for nb in chain}
        if len(committed) != 1 or None in committed:
            problems.append("the committed notebooks of the chain do not come from one run to add to")
        else:
            identities[f"the committed {chain[0].path.name}"] = next(iter(committed))
    if len(set(identities.values())) > 1:
        problems.append("the notebooks come from different runs: " + ", ".join(
            f"{name} {run_id}" for name, run_id in identities.items()))
    if problems:
        raise CommitError(f"nothing was committed from {run_dir}:\n  - " + "\n  - ".join(problems) +
                          f"\nRun the whole {profile} profile into a fresh run directory and commit that: make notebooks")
    return [write_text(path, nbformat.writes(notebook) + "\n") for path, notebook in copies.items()]


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
