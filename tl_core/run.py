"""Run the course's notebooks with papermill: ``make run`` and ``python -m tl_core.run``.

    python -m tl_core.run                              # every notebook, quick profile, into runs/quick/
    python -m tl_core.run --profile full               # notebooks/params/full.yaml, into runs/full/
    python -m tl_core.run --only 05,06 -p target amazon:books --run-dir runs/books
    python -m tl_core.run params                       # every notebook parameter, its default and help

Each notebook declares its parameters in a cell tagged ``parameters`` (the one source of truth for names and
defaults); a profile (``notebooks/params/<name>.yaml``) and ``-p name value`` override them. Names that no
selected notebook declares are an error before anything runs. Executed notebooks, ``metrics.json``, figures and
``run.json`` (what ran, with which parameters, how long it took) land in the run directory.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .artifacts import read_json, write_json

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
PROFILES = NOTEBOOKS / "params"
RUNS = REPO / "runs"
KERNEL_NAME = "tl-course"
MANIFEST = "run.json"


class ParameterError(ValueError):
    """A profile or override names a parameter no selected notebook has, or gives it a value it cannot take."""


@dataclass
class Notebook:
    path: Path
    parameters: dict[str, dict[str, Any]]  # name -> papermill's inspection: default, inferred_type_name, help

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def number(self) -> str:
        return self.path.name[:2]


@dataclass
class RunPlan:
    run_dir: Path
    notebooks: list[Notebook]
    parameters: dict[str, Any]  # profile + overrides, before run_dir is added
    profile: str
    notebook_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)  # stem -> what it receives


def discover_notebooks(notebooks_dir: Path = NOTEBOOKS) -> list[Notebook]:
    """The numbered notebooks ``NN_topic.ipynb`` in order, with their declared parameters."""
    import papermill

    found = []
    for path in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        parameters = {name: _with_type(dict(info)) for name, info in papermill.inspect_notebook(str(path)).items()}
        found.append(Notebook(path, parameters))
    if not found:
        raise FileNotFoundError(f"no notebooks named NN_topic.ipynb in {notebooks_dir}")
    return found


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


def select(notebooks: list[Notebook], only: str | None) -> list[Notebook]:
    """``only`` is a comma-separated list of numbers ("00,03") or stems; None selects all."""
    if not only:
        return notebooks
    wanted = [item.strip() for item in only.split(",") if item.strip()]
    chosen = [nb for nb in notebooks if nb.number in wanted or nb.stem in wanted]
    unknown = [item for item in wanted if not any(item in (nb.number, nb.stem) for nb in notebooks)]
    if unknown:
        raise ParameterError(f"--only: no notebook {', '.join(unknown)}; there are "
                             f"{', '.join(nb.stem for nb in notebooks)}")
    return chosen


def load_profile(name: str, profiles_dir: Path = PROFILES) -> dict[str, Any]:
    path = profiles_dir / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
        raise ParameterError(f"no profile {name!r} ({path} does not exist); profiles: {', '.join(known)}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path} must map parameter names to values, got {type(data).__name__}")
    return data


def parse_override(name: str, value: str) -> tuple[str, Any]:
    """``-p name value``: the value is read as YAML, so 3 is an int, 0.5 a float, [1, 2] a list, null None."""
    try:
        return name, yaml.safe_load(value)
    except yaml.YAMLError:
        return name, value


_TYPE_OF = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}


def accepted_types(type_name: str) -> tuple[type, ...] | None:
    """Python types a parameter accepts, from papermill's inferred type name ("int", "Optional[str]", ...)."""
    optional = type_name.startswith("Optional[") and type_name.endswith("]")
    inner = type_name[len("Optional["):-1] if optional else type_name
    if inner not in _TYPE_OF:
        return None  # "None" (a default of None without a type comment) or something we do not check
    return _TYPE_OF[inner] + ((type(None),) if optional else ())


def type_matches(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # True is an int to Python, but not a sensible number of epochs
    return isinstance(value, types)


def check_parameters(notebooks: list[Notebook], parameters: dict[str, Any]) -> None:
    """Every name must be declared by a selected notebook; every value must have its default's type."""
    declared: dict[str, list[Notebook]] = {}
    for nb in notebooks:
        for name in nb.parameters:
            declared.setdefault(name, []).append(nb)
    problems = []
    for name, value in parameters.items():
        if name == "run_dir":
            problems.append("run_dir is set by the runner (use --run-dir)")
            continue
        if name not in declared:
            problems.append(f"unknown parameter {name!r}; the selected notebooks take: "
                            f"{', '.join(sorted(n for n in declared if n != 'run_dir'))}")
            continue
        for nb in declared[name]:
            type_name = nb.parameters[name].get("inferred_type_name", "None")
            types = accepted_types(type_name)
            if types is not None and not type_matches(value, types):
                problems.append(f"{name}={value!r} ({type(value).__name__}) but {nb.path.name} expects {type_name} "
                                f"(default {nb.parameters[name].get('default')})")
    if problems:
        raise ParameterError("bad parameters, nothing was run:\n  - " + "\n  - ".join(problems))


def plan(profile: str = "quick", overrides: dict[str, Any] | None = None, only: str | None = None,
         run_dir: str | Path | None = None, notebooks_dir: Path = NOTEBOOKS) -> RunPlan:
    notebooks = select(discover_notebooks(notebooks_dir), only)
    parameters = {**load_profile(profile, notebooks_dir / "params"), **(overrides or {})}
    check_parameters(notebooks, parameters)
    run_path = Path(run_dir) if run_dir is not None else RUNS / profile
    result = RunPlan(run_path.resolve(), notebooks, parameters, profile)
    for nb in notebooks:
        given = {name: value for name, value in parameters.items() if name in nb.parameters}
        given["run_dir"] = str(result.run_dir)
        result.notebook_parameters[nb.stem] = given
    return result


def kernel_name() -> str:
    """The course kernel when it is registered (make install does it), else the current Python's."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def execute(run: RunPlan, log=print) -> dict[str, Any]:
    """Execute the planned notebooks in order; stop at the first failure. Returns the manifest."""
    import papermill

    run.run_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = run.run_dir / MANIFEST
    manifest = read_json(manifest_path) if manifest_path.exists() else {}
    manifest.update({"profile": run.profile, "parameters": run.parameters})
    manifest.setdefault("notebooks", {})
    kernel = kernel_name()
    for index, nb in enumerate(run.notebooks, start=1):
        output = run.run_dir / nb.path.name
        log(f"[{index}/{len(run.notebooks)}] {nb.stem} ... ", end="")
        started = time.perf_counter()
        record = {"parameters": run.notebook_parameters[nb.stem], "output": output.name, "status": "running"}
        manifest["notebooks"][nb.stem] = record
        write_json(manifest_path, manifest)
        try:
            papermill.execute_notebook(str(nb.path), str(output), parameters=run.notebook_parameters[nb.stem],
                                       kernel_name=kernel, cwd=str(nb.path.parent), progress_bar=False)
        except BaseException as error:
            record.update(status="failed", seconds=round(time.perf_counter() - started, 1),
                          error=f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}")
            write_json(manifest_path, manifest)
            log("FAILED")
            raise
        record.update(status="complete", seconds=round(time.perf_counter() - started, 1))
        write_json(manifest_path, manifest)
        log(f"done in {record['seconds']:.0f} s")
    return manifest


def describe_parameters(notebooks: list[Notebook]) -> str:
    lines = []
    for nb in notebooks:
        lines.append(nb.path.name)
        for name, info in nb.parameters.items():
            help_text = f"  # {info['help']}" if info.get("help") else ""
            lines.append(f"  {name} = {info.get('default')!r}{help_text}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tl_core.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "params"],
                        help="run the notebooks (default), or list their parameters")
    parser.add_argument("--profile", default="quick", help="notebooks/params/<profile>.yaml (default: quick)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override one parameter (value read as YAML); repeatable")
    parser.add_argument("--only", help="comma-separated notebook numbers or names, e.g. 00,03")
    parser.add_argument("--run-dir", help="where outputs go (default: runs/<profile>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "params":
            print(describe_parameters(select(discover_notebooks(), args.only)))
            return 0
        overrides = dict(parse_override(name, value) for name, value in args.parameter)
        run = plan(args.profile, overrides, args.only, args.run_dir)
    except (ParameterError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Running {len(run.notebooks)} notebook(s), profile {run.profile!r}, into {run.run_dir}")
    started = time.perf_counter()
    try:
        execute(run, log=lambda text, end="\n": print(text, end=end, flush=True))
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished notebooks and artifacts are kept in {run.run_dir}", file=sys.stderr)
        return 130
    except Exception as error:  # papermill's execution error carries the failing cell
        print(f"\nA notebook failed: {error}\nIts partial output is in {run.run_dir}", file=sys.stderr)
        return 1
    print(f"\nAll done in {time.perf_counter() - started:.0f} s.")
    print(f"Executed notebooks: {run.run_dir}/*.ipynb")
    metrics = run.run_dir / "metrics.json"
    if metrics.exists():
        print(f"Results:            {metrics}")
    print(f"What ran:           {run.run_dir / MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
