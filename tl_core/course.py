"""The course on disk: where its notebooks and profiles are, what parameters each notebook declares, and whether an
executed copy of a notebook ran to its end. Used by the runner (``python -m tl_core.run``, README "Running with
other parameters").

A course folder holds ``notebooks/NN_topic.ipynb`` and ``notebooks/params/<profile>.yaml``. It is found from an
argument (``--notebooks``) or by walking up from the current folder, never from where ``tl_core`` is installed.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .parameters import ParameterError, load_yaml, normalised

NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
PROFILES = "params"


class CourseNotFoundError(FileNotFoundError):
    """Neither the folder given nor any folder above the current one holds the course's notebooks/params/."""


def find_notebooks(start: str | os.PathLike | None = None) -> Path:
    """The course's notebooks folder: ``start`` (given with ``--notebooks``: the notebooks folder or the course
    folder above it), else the ``notebooks/`` of the first folder from the current one upwards that holds
    ``notebooks/params/``."""
    if start is not None:
        given = Path(start).expanduser().resolve()
        for folder in (given, given / "notebooks"):
            if (folder / PROFILES).is_dir():
                return folder
        raise CourseNotFoundError(f"{given} is not a course's notebooks folder: it holds no {PROFILES}/ (the "
                                  "profiles beside the numbered notebooks), nor does its notebooks/")
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks" / PROFILES).is_dir():
            return folder / "notebooks"
    raise CourseNotFoundError(
        f"no course found: neither {here} nor a folder above it holds notebooks/{PROFILES}/ (the numbered notebooks "
        "and their profiles). Run from the course folder (the clone), or pass --notebooks PATH/TO/notebooks.")


def find_course(start: str | os.PathLike | None = None) -> Path:
    """The course folder (the clone): the folder that holds :func:`find_notebooks`'s notebooks folder."""
    return find_notebooks(start).parent


def runs_in_profile(profiles: list[str] | None, profile: str) -> bool:
    """Whether a notebook whose metadata names ``profiles`` (``tl_course.profiles``; None: not named) runs in a run
    of ``profile``: without the key, in every profile; an appendix that only larger profiles run names them."""
    return profiles is None or profile in profiles


@dataclass
class Notebook:
    path: Path
    parameters: dict[str, dict[str, Any]]  # name -> default, inferred_type_name, help (papermill's inspection)
    profiles: list[str] | None = None  # the profiles it runs in (metadata.tl_course.profiles); None: every one

    def runs_in(self, profile: str) -> bool:
        """Whether a run of ``profile`` executes this notebook without naming it: an appendix that only a larger
        profile runs says so in its metadata, ``"tl_course": {"profiles": ["full", "gpu"]}``."""
        return runs_in_profile(self.profiles, profile)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def number(self) -> str:
        return self.path.name[:2]

    def defaults(self) -> dict[str, Any]:
        return {name: info.get("default") for name, info in self.parameters.items()}

    def given_by(self, profile_values: dict[str, Any]) -> dict[str, Any]:
        """The values a profile passes to this notebook (those of its own parameters), as papermill records them
        in an executed copy (normalised)."""
        return normalised({name: value for name, value in profile_values.items() if name in self.parameters})


def _with_type(info: dict[str, Any]) -> dict[str, Any]:
    """papermill reports a parameter's default as source text and its type only when annotated; read the default
    as a Python literal and take its type unless a ``# type:`` comment says more (``# type: Optional[str]``)."""
    try:
        info["default"] = ast.literal_eval(info["default"])
    except (ValueError, SyntaxError):
        pass  # an expression, not a literal: its type is not checked
    else:
        if info.get("inferred_type_name", "None") == "None" and info["default"] is not None:
            info["inferred_type_name"] = type(info["default"]).__name__
    return info


def profiles_of(path: str | os.PathLike) -> list[str] | None:
    """The profiles a notebook runs in, from its metadata (``tl_course.profiles``); None: every one."""
    import nbformat

    profiles = nbformat.read(path, as_version=4).metadata.get("tl_course", {}).get("profiles")
    return list(profiles) if profiles is not None else None


def discover_notebooks(notebooks_dir: str | os.PathLike | None = None) -> list[Notebook]:
    """The numbered notebooks ``NN_topic.ipynb`` in order, with their declared parameters."""
    import nbformat
    import papermill

    notebooks_dir = find_notebooks(notebooks_dir)
    found = []
    for path in sorted(notebooks_dir.glob(NOTEBOOK_PATTERN)):
        parameters = {name: _with_type(dict(info)) for name, info in papermill.inspect_notebook(str(path)).items()}
        found.append(Notebook(path, parameters, profiles_of(path)))
    if not found:
        raise CourseNotFoundError(f"no notebooks named NN_topic.ipynb in {notebooks_dir}")
    return found


def select(notebooks: list[Notebook], only: str | None, profile: str | None = None) -> list[Notebook]:
    """``only`` is a comma-separated list of numbers ("00,03") or stems, whatever profiles they run in; None selects
    every notebook that runs in ``profile`` (all of them when no profile is given)."""
    if not only:
        return [nb for nb in notebooks if profile is None or nb.runs_in(profile)]
    wanted = [item.strip() for item in only.split(",") if item.strip()]
    unknown = [item for item in wanted if not any(item in (nb.number, nb.stem) for nb in notebooks)]
    if unknown:
        raise ParameterError(f"--only: no notebook {', '.join(unknown)}; there are "
                             f"{', '.join(nb.stem for nb in notebooks)}")
    return [nb for nb in notebooks if nb.number in wanted or nb.stem in wanted]


def load_profile(name: str, notebooks_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The parameter values of profile ``name`` (``notebooks/params/<name>.yaml``)."""
    profiles = find_notebooks(notebooks_dir) / PROFILES
    path = profiles / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in profiles.glob("*.yaml"))
        raise ParameterError(f"no profile {name!r} ({path} does not exist); profiles: {', '.join(known)}")
    data = load_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path} must map parameter names to values, got {type(data).__name__}")
    return data


def describe_parameters(notebooks: list[Notebook]) -> str:
    lines = []
    for nb in notebooks:
        lines.append(nb.path.name)
        for name, info in nb.parameters.items():
            help_text = f"  # {info['help']}" if info.get("help") else ""
            lines.append(f"  {name} = {info.get('default')!r}{help_text}")
    return "\n".join(lines)


def execution_problem(path: str | os.PathLike) -> str | None:
    """None when the executed notebook at ``path`` ran every code cell to its end without an error output; else
    what is wrong. papermill marks a notebook, and every cell it did not reach, finished even when its kernel died
    or Ctrl-C stopped it, and records an exception only for a cell that raised one; so the cells are read: each
    needs an execution count and, where nbclient recorded timings, the kernel's reply to it."""
    import nbformat

    try:
        notebook = nbformat.read(os.fspath(path), as_version=4)
    except Exception as error:  # a half-written or hand-damaged file: it has to run again
        return f"unreadable ({type(error).__name__})"
    meta = notebook.metadata.get("papermill", {})
    if meta.get("exception"):
        return "a cell raised an exception"
    if not meta.get("end_time"):
        return "it did not finish"
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue  # the kernel is never asked to run an empty cell
        timing = cell.metadata.get("execution")
        if cell.get("execution_count") is None or (timing is not None and "shell.execute_reply" not in timing):
            return f"code cell {index} did not run to its end"
        expected = "raises-exception" in cell.metadata.get("tags", [])
        if not expected and any(output.get("output_type") == "error" for output in cell.get("outputs", [])):
            return f"code cell {index} has an error output"
    return None


def notebook_values(number: str, profile: str = "quick", notebooks_dir: str | os.PathLike | None = None
                    ) -> dict[str, Any]:
    """The parameter values notebook ``number`` (e.g. ``"04"``) runs with under ``profile``: its defaults, with the
    profile's values for its parameters on top. For code outside the notebooks that must size things as a profile
    does (``benchmarks/lm.py``, the benchmark shapes' tests)."""
    found = [nb for nb in discover_notebooks(notebooks_dir) if nb.number == number]
    if not found:
        raise ParameterError(f"no notebook {number} in {find_notebooks(notebooks_dir)}")
    return {**found[0].defaults(), **found[0].given_by(load_profile(profile, notebooks_dir))}
