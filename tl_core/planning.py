"""Planning runs of the course's notebooks: which notebooks, with which parameters, into which run directory;
a sweep's runs and their folders; the self-contained papermill command of a run (``--dry-run``). Nothing here
executes a notebook (``tl_core.execution`` does). Used by ``python -m tl_core.run`` (README "Running with other
parameters").
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .course import Notebook, discover_notebooks, find_notebooks, load_profile, select
from .parameters import ParameterError, check_notebook_parameters, normalised

KERNEL_NAME = "tl-course"
RUNS = "runs"  # the default home of run directories, beside notebooks/ in the course folder


@dataclass
class RunPlan:
    run_dir: Path
    notebooks: list[Notebook]
    parameters: dict[str, Any]  # profile + overrides (+ this sweep point), without run_dir
    profile: str
    reuse: Path | None = None  # a run directory whose artifacts this run starts from
    notebooks_dir: Path | None = None
    notebook_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)  # stem -> what it receives

    @property
    def label(self) -> str:
        return self.run_dir.name


def _check_run_dir(run_dir: Path) -> Path:
    """``run_dir`` as an absolute path, refused when it, or a folder it would be created in, is a file."""
    run_dir = run_dir.expanduser().resolve()
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ParameterError(f"--run-dir {run_dir}: {folder} is a file, not a folder; name a folder (it is "
                                     "created if missing)")
            break
    return run_dir


def plan(profile: str = "quick", overrides: dict[str, Any] | None = None, only: str | None = None,
         run_dir: str | Path | None = None, notebooks_dir: str | Path | None = None,
         reuse: str | Path | None = None) -> RunPlan:
    """Check everything a run needs before anything runs, and say what each notebook will receive."""
    notebooks_dir = find_notebooks(notebooks_dir)
    course = discover_notebooks(notebooks_dir)
    notebooks = select(course, only, profile)  # an appendix of larger profiles only when --only names it
    profile_values = load_profile(profile, notebooks_dir)
    # A profile sizes the whole course, so `--profile full --only 05,06` must work: its settings are checked
    # against every notebook, and those of notebooks outside --only are left out. Overrides stay strict.
    check_notebook_parameters(course, profile_values)
    selected_names = {name for nb in notebooks for name in nb.parameters}
    parameters = {**{name: value for name, value in profile_values.items() if name in selected_names},
                  **(overrides or {})}
    check_notebook_parameters(notebooks, parameters)
    parameters = normalised(parameters)
    if reuse is not None and not Path(reuse).is_dir():
        raise ParameterError(f"--reuse {reuse}: no such run directory")
    run_path = _check_run_dir(Path(run_dir) if run_dir is not None else notebooks_dir.parent / RUNS / profile)
    result = RunPlan(run_path, notebooks, parameters, profile,
                     Path(reuse).resolve() if reuse is not None else None, notebooks_dir)
    for nb in notebooks:
        given = {name: value for name, value in parameters.items() if name in nb.parameters}
        given["run_dir"] = str(result.run_dir)
        result.notebook_parameters[nb.stem] = given
    return result


def _readable(value: Any) -> str:
    """A value as a piece of a folder name: ``amazon:books`` -> ``amazon-books``, ``[50, 100]`` -> ``50-100``."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-.")[:48]


def _short_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:6]


def sweep_folders(grid: dict[str, list[Any]]) -> list[str]:
    """One folder name per point of the grid's cartesian product (in its order): ``n_labels=100__target=amazon-
    books``. A value keeps its readable name unless another value of the same parameter reads the same (``/d/a
    b.csv`` and ``/d/a-b.csv``; also in another case, for case-blind file systems) or reads as nothing: then a short
    hash of the value is added (``target=d-a-b.csv-1f3a9c``), so every point has a folder of its own."""
    names: dict[str, list[str]] = {}
    for name, values in grid.items():
        readable = [_readable(value) for value in values]
        names[name] = [text if text and [r.lower() for r in readable].count(text.lower()) == 1
                       else f"{text}-{_short_hash(value)}".lstrip("-") for text, value in zip(readable, values)]
    folders = ["__".join(f"{name}={text}" for name, text in sorted(zip(grid, point)))
               for point in itertools.product(*names.values())]
    clashes = sorted({folder for folder in folders if [f.lower() for f in folders].count(folder.lower()) > 1})
    if clashes:  # only if two values hash alike: a safeguard, not a case that should ever be seen
        raise ParameterError(f"--sweep: two points would share the folder {clashes[0]}")
    return folders


def plan_sweep(grid: dict[str, list[Any]], profile: str = "quick", overrides: dict[str, Any] | None = None,
               only: str | None = None, run_dir: str | Path | None = None, notebooks_dir: str | Path | None = None,
               reuse: str | Path | None = None) -> list[RunPlan]:
    """One run per point of the grid's cartesian product, each in ``<run_dir>/<folder>`` (:func:`sweep_folders`);
    every point checked, and the folders checked to be distinct, before anything runs."""
    notebooks_dir = find_notebooks(notebooks_dir)
    base = Path(run_dir) if run_dir is not None else notebooks_dir.parent / RUNS / f"{profile}-sweep"
    _check_run_dir(base)
    clashes = sorted(set(grid) & set(overrides or {}))
    if clashes:
        raise ParameterError(f"{', '.join(clashes)} given both by -p and by --sweep")
    plans = []
    for values, folder in zip(itertools.product(*grid.values()), sweep_folders(grid)):
        point = dict(zip(grid, values))
        plans.append(plan(profile, {**(overrides or {}), **point}, only, base / folder, notebooks_dir, reuse))
    return plans


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip().removesuffix("\n...")


def runner_arguments(run: RunPlan) -> list[str]:
    """The ``python -m tl_core.run`` arguments that run this plan again (a sweep runs each point this way)."""
    arguments = ["--profile", run.profile, "--run-dir", str(run.run_dir), "--only",
                 ",".join(nb.stem for nb in run.notebooks), "--notebooks", str(run.notebooks_dir)]
    for name, value in run.parameters.items():
        arguments += ["-p", name, _yaml_value(value)]
    if run.reuse is not None:
        arguments += ["--reuse", str(run.reuse)]
    return arguments


def papermill_command(run: RunPlan) -> str:
    """One self-contained shell command that executes a planned run with papermill (for a scheduler)."""
    python = shlex.quote(sys.executable)
    steps = []
    if run.reuse is not None:
        steps.append(f"{python} -m tl_core.run link {shlex.quote(str(run.reuse))} {shlex.quote(str(run.run_dir))}")
    steps.append(f"mkdir -p {shlex.quote(str(run.run_dir))}")
    for nb in run.notebooks:
        arguments = [shlex.quote(str(nb.path)), shlex.quote(str(run.run_dir / nb.path.name)),
                     "-k", KERNEL_NAME, "--cwd", shlex.quote(str(nb.path.parent)),
                     "-y", shlex.quote(_yaml_value(run.notebook_parameters[nb.stem]))]
        steps.append(f"{python} -m papermill " + " ".join(arguments))
    steps.append(f"{python} -m tl_core.run report {shlex.quote(str(run.run_dir))}")
    return " && ".join(steps)
