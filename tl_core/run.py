"""Run the course's notebooks with papermill: ``make run``, reruns with other parameters, sweeps, reports.

    python -m tl_core.run                              # every notebook, quick profile, into runs/quick/
    python -m tl_core.run --profile full               # notebooks/params/full.yaml, into runs/full/
    python -m tl_core.run --only 05,06 --reuse runs/quick -p target amazon:books --run-dir runs/books
    python -m tl_core.run --only 05,06 --reuse runs/quick --sweep target=amazon:books,amazon:dvd n_labels=100,400
    python -m tl_core.run ... --sweep ... --jobs 2     # two runs at a time on this machine
    python -m tl_core.run ... --sweep ... --dry-run    # one self-contained command per run, for a scheduler
    python -m tl_core.run params                       # every notebook parameter, its default and help
    python -m tl_core.run report runs/books            # (re)write report.md and the HTML renderings
    python -m tl_core.run compare runs/quick runs/full # headline numbers of several runs side by side

Each notebook declares its parameters in a cell tagged ``parameters`` (the one source of truth for names, defaults
and, in the help comment, allowed values: ``# one of: a, b``); a profile (``notebooks/params/<name>.yaml``) and
``-p name value`` override them. Unknown names, values of the wrong type and values outside the allowed ones are
errors before anything runs. A run directory holds the executed notebooks, the artifacts, ``metrics.json``,
figures, ``html/`` renderings, ``report.md`` and ``run.json``. A notebook counts as complete when its executed copy
in the run directory finished without an exception and with the same parameters, so an interrupted run or sweep
resumes where it stopped (``--force`` reruns everything).
"""

from __future__ import annotations

import argparse
import ast
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .artifacts import read_json, write_json, write_text

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
RUNS = REPO / "runs"
KERNEL_NAME = "tl-course"
MANIFEST = "run.json"
REPORT = "report.md"
HTML_DIR = "html"
# What a reused run directory lends a new one: everything but what belongs to the run itself.
NOT_REUSED = {MANIFEST, REPORT, HTML_DIR}


class ParameterError(ValueError):
    """A profile or override names a parameter no selected notebook has, or gives it a value it cannot take."""


# ----------------------------------------------------------------------------------------------------------------
# Notebooks and their parameters
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Notebook:
    path: Path
    parameters: dict[str, dict[str, Any]]  # name -> default, inferred_type_name, help (papermill's inspection)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def number(self) -> str:
        return self.path.name[:2]


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


def discover_notebooks(notebooks_dir: Path = NOTEBOOKS) -> list[Notebook]:
    """The numbered notebooks ``NN_topic.ipynb`` in order, with their declared parameters."""
    import papermill

    found = []
    for path in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb")):
        parameters = {name: _with_type(dict(info)) for name, info in papermill.inspect_notebook(str(path)).items()}
        found.append(Notebook(path, parameters))
    if not found:
        raise FileNotFoundError(f"no notebooks named NN_topic.ipynb in {notebooks_dir}")
    return found


def select(notebooks: list[Notebook], only: str | None) -> list[Notebook]:
    """``only`` is a comma-separated list of numbers ("00,03") or stems; None selects all."""
    if not only:
        return notebooks
    wanted = [item.strip() for item in only.split(",") if item.strip()]
    unknown = [item for item in wanted if not any(item in (nb.number, nb.stem) for nb in notebooks)]
    if unknown:
        raise ParameterError(f"--only: no notebook {', '.join(unknown)}; there are "
                             f"{', '.join(nb.stem for nb in notebooks)}")
    return [nb for nb in notebooks if nb.number in wanted or nb.stem in wanted]


def load_profile(name: str, profiles_dir: Path = NOTEBOOKS / "params") -> dict[str, Any]:
    path = Path(profiles_dir) / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))
        raise ParameterError(f"no profile {name!r} ({path} does not exist); profiles: {', '.join(known)}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path} must map parameter names to values, got {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """A value from the command line, read as YAML: 3 is an int, 0.5 a float, [1, 2] a list, null is None."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_sweep(items: list[str]) -> dict[str, list[Any]]:
    """``["target=amazon:books,amazon:dvd", "n_labels=100,400"]`` -> {"target": [...], "n_labels": [100, 400]}."""
    grid = {}
    for item in items:
        name, separator, values = item.partition("=")
        if not separator or not name or not values:
            raise ParameterError(f"--sweep takes NAME=VALUE1,VALUE2,... ; got {item!r}")
        if name in grid:
            raise ParameterError(f"--sweep names {name!r} twice")
        grid[name] = [parse_value(value) for value in values.split(",")]
    return grid


_TYPE_OF = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}


def accepted_types(type_name: str) -> tuple[type, ...] | None:
    """Python types a parameter accepts, from its type name ("int", "Optional[str]", ...); None: unchecked."""
    optional = type_name.startswith("Optional[") and type_name.endswith("]")
    inner = type_name[len("Optional["):-1] if optional else type_name
    if inner not in _TYPE_OF:
        return None
    return _TYPE_OF[inner] + ((type(None),) if optional else ())


def type_matches(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # True is an int to Python, but not a sensible number of epochs
    return isinstance(value, types)


def allowed_values(help_text: str) -> list[str] | None:
    """The choices a help comment lists as ``one of: a, b, c`` (up to the next ';' or '.' + space), else None."""
    match = re.search(r"one of:\s*([^;]+?)(?:;|\.\s|\.$|$)", help_text or "")
    return [choice.strip() for choice in match.group(1).split(",") if choice.strip()] if match else None


def _target_spec(value: Any) -> str | None:
    from .data import check_target_spec

    check_target_spec(value)
    return None


def _normalised_target(value: Any) -> Any:
    """A target file path made absolute from the folder the runner was started in (notebooks run elsewhere)."""
    from .data import check_target_spec

    return check_target_spec(value) if isinstance(value, str) else value


def _target_specs(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of target specs (or None)"
    for spec in value:
        _target_spec(spec)
    return None


def _normalised_targets(value: Any) -> Any:
    return [_normalised_target(spec) for spec in value] if isinstance(value, list) else value


def _positive_int(value: Any) -> str | None:
    return None if isinstance(value, int) and value >= 1 else "must be a whole number >= 1"


def _positive_ints(value: Any) -> str | None:
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                 for v in value):
        return None
    return "must be a non-empty list of whole numbers >= 1"


#: Checks of values beyond their type, by parameter name: return a complaint, or raise ValueError.
VALUE_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "target": _target_spec,
    "related_targets": _target_specs,
    "n_labels": _positive_int,
    "n_labels_grid": _positive_ints,
    "seeds": _positive_ints,
}

#: Values rewritten once they have passed the checks, by parameter name.
VALUE_NORMALISERS: dict[str, Callable[[Any], Any]] = {"target": _normalised_target,
                                                      "related_targets": _normalised_targets}


def check_parameters(notebooks: list[Notebook], parameters: dict[str, Any]) -> None:
    """Every name must be declared by a selected notebook, and every value acceptable to each that declares it."""
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
            info = nb.parameters[name]
            types = accepted_types(info.get("inferred_type_name", "None"))
            if types is not None and not type_matches(value, types):
                problems.append(f"{name}={value!r} ({type(value).__name__}) but {nb.path.name} expects "
                                f"{info['inferred_type_name']} (default {info.get('default')!r})")
                break
            choices = allowed_values(info.get("help", ""))
            values = value if isinstance(value, list) else [value]
            if choices is not None and any(str(v) not in choices for v in values):
                problems.append(f"{name}={value!r} is not one of: {', '.join(choices)} ({nb.path.name})")
                break
        else:
            if name in VALUE_CHECKS and value is not None:
                try:
                    complaint = VALUE_CHECKS[name](value)
                except (ValueError, TypeError, FileNotFoundError) as error:
                    complaint = str(error)
                if complaint:
                    problems.append(f"{name}={value!r}: {complaint}")
    if problems:
        raise ParameterError("bad parameters, nothing was run:\n  - " + "\n  - ".join(problems))


def _check_related_is_not_the_target(nb: Notebook, parameters: dict[str, Any]) -> None:
    """The intermediate stage's related data must not hold the target (given, or the notebook's default): refused
    before anything runs, not when the notebook reaches the stage (the rule is transfer.check_related_specs)."""
    from .transfer import check_related_specs

    if "target" not in nb.parameters or "related_targets" not in nb.parameters:
        return
    related = parameters.get("related_targets", nb.parameters["related_targets"].get("default"))
    target = parameters.get("target", nb.parameters["target"].get("default"))
    if related and isinstance(target, str):
        try:
            check_related_specs(target, related)
        except ValueError as error:
            raise ParameterError(f"related_targets={related!r}: {error}") from None


# ----------------------------------------------------------------------------------------------------------------
# Planning a run
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class RunPlan:
    run_dir: Path
    notebooks: list[Notebook]
    parameters: dict[str, Any]  # profile + overrides (+ this sweep point), without run_dir
    profile: str
    reuse: Path | None = None  # a run directory whose artifacts this run starts from
    notebooks_dir: Path = NOTEBOOKS
    notebook_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)  # stem -> what it receives

    @property
    def label(self) -> str:
        return self.run_dir.name


def plan(profile: str = "quick", overrides: dict[str, Any] | None = None, only: str | None = None,
         run_dir: str | Path | None = None, notebooks_dir: Path = NOTEBOOKS, reuse: str | Path | None = None,
         ) -> RunPlan:
    course = discover_notebooks(notebooks_dir)
    notebooks = select(course, only)
    profile_values = load_profile(profile, Path(notebooks_dir) / "params")
    # A profile sizes the whole course, so `--profile full --only 05,06` must work: its settings are checked
    # against every notebook, and those of notebooks outside --only are left out. Overrides stay strict.
    check_parameters(course, profile_values)
    selected_names = {name for nb in notebooks for name in nb.parameters}
    parameters = {**{name: value for name, value in profile_values.items() if name in selected_names},
                  **(overrides or {})}
    check_parameters(notebooks, parameters)
    parameters = {name: VALUE_NORMALISERS[name](value) if name in VALUE_NORMALISERS else value
                  for name, value in parameters.items()}
    for nb in notebooks:
        _check_related_is_not_the_target(nb, parameters)
    if reuse is not None and not Path(reuse).is_dir():
        raise ParameterError(f"--reuse {reuse}: no such run directory")
    run_path = Path(run_dir) if run_dir is not None else RUNS / profile
    result = RunPlan(run_path.resolve(), notebooks, parameters, profile,
                     Path(reuse).resolve() if reuse is not None else None, Path(notebooks_dir).resolve())
    for nb in notebooks:
        given = {name: value for name, value in parameters.items() if name in nb.parameters}
        given["run_dir"] = str(result.run_dir)
        result.notebook_parameters[nb.stem] = given
    return result


def sweep_label(point: dict[str, Any]) -> str:
    """A folder name for one sweep point: ``n_labels=100__target=amazon-books``."""
    parts = []
    for name, value in sorted(point.items()):
        text = re.sub(r"[^A-Za-z0-9._=-]+", "-", str(value)).strip("-")
        parts.append(f"{name}={text}")
    return "__".join(parts)


def plan_sweep(grid: dict[str, list[Any]], profile: str = "quick", overrides: dict[str, Any] | None = None,
               only: str | None = None, run_dir: str | Path | None = None, notebooks_dir: Path = NOTEBOOKS,
               reuse: str | Path | None = None) -> list[RunPlan]:
    """One run per point of the grid's cartesian product, each in ``<run_dir>/<label>``; all checked up front."""
    base = Path(run_dir) if run_dir is not None else RUNS / f"{profile}-sweep"
    clashes = sorted(set(grid) & set(overrides or {}))
    if clashes:
        raise ParameterError(f"{', '.join(clashes)} given both by -p and by --sweep")
    plans = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values))
        plans.append(plan(profile, {**(overrides or {}), **point}, only, base / sweep_label(point), notebooks_dir,
                          reuse))
    return plans


# ----------------------------------------------------------------------------------------------------------------
# Executing
# ----------------------------------------------------------------------------------------------------------------

def kernel_name() -> str:
    """The course kernel when it is registered (make install does it), else the current Python's."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def executed_status(run_dir: Path, nb: Notebook, parameters: dict[str, Any]) -> str:
    """"complete" if run_dir holds this notebook executed without an exception and with these parameters;
    "failed", "stale" (other parameters or source), or "missing" otherwise."""
    import nbformat

    output = Path(run_dir) / nb.path.name
    if not output.exists():
        return "missing"
    try:
        meta = nbformat.read(output, as_version=4).metadata.get("papermill", {})
    except Exception:  # an unreadable or half-written notebook: run it again
        return "failed"
    if meta.get("exception") or not meta.get("end_time"):
        return "failed"
    if meta.get("parameters") != parameters or output.stat().st_mtime < nb.path.stat().st_mtime:
        return "stale"
    return "complete"


def link_reused(source: Path, run_dir: Path) -> list[str]:
    """Hard-link (or copy) a finished run's artifacts into run_dir, without overwriting anything there."""
    linked = []
    run_dir.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        if entry.name in NOT_REUSED or entry.suffix == ".ipynb" or entry.name.startswith("."):
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


def execute(run: RunPlan, log: Callable[..., None] = print, force: bool = False, report: bool = True,
            ) -> dict[str, Any]:
    """Execute the planned notebooks in order, skipping a leading run of complete ones; stop at the first failure.
    Returns the manifest (also written to run.json)."""
    import papermill

    run.run_dir.mkdir(parents=True, exist_ok=True)
    if run.reuse is not None:
        link_reused(run.reuse, run.run_dir)
    manifest_path = run.run_dir / MANIFEST
    manifest = read_json(manifest_path) if manifest_path.exists() else {}
    manifest.update({"profile": run.profile, "parameters": run.parameters,
                     "reused": str(run.reuse) if run.reuse else None})
    manifest.setdefault("notebooks", {})
    kernel = kernel_name()
    rerun_rest = force
    for index, nb in enumerate(run.notebooks, start=1):
        parameters = run.notebook_parameters[nb.stem]
        prefix = f"[{index}/{len(run.notebooks)}] {nb.stem}"
        if not rerun_rest and executed_status(run.run_dir, nb, parameters) == "complete":
            log(f"{prefix}: complete already, skipped")
            continue
        rerun_rest = True  # what follows may read what this one writes
        log(f"{prefix} ... ", end="")
        started = time.perf_counter()
        record = {"parameters": parameters, "output": nb.path.name, "status": "running"}
        manifest["notebooks"][nb.stem] = record
        write_json(manifest_path, manifest)
        try:
            papermill.execute_notebook(str(nb.path), str(run.run_dir / nb.path.name), parameters=parameters,
                                       kernel_name=kernel, cwd=str(nb.path.parent), progress_bar=False)
        except BaseException as error:
            lines = str(error).strip().splitlines()
            record.update(status="interrupted" if isinstance(error, KeyboardInterrupt) else "failed",
                          seconds=round(time.perf_counter() - started, 1),
                          error=f"{type(error).__name__}: {lines[-1] if lines else ''}")
            write_json(manifest_path, manifest)
            log("FAILED" if record["status"] == "failed" else "interrupted")
            raise
        record.update(status="complete", seconds=round(time.perf_counter() - started, 1))
        write_json(manifest_path, manifest)
        log(f"done in {record['seconds']:.0f} s")
    if report:
        from .report import write_report

        write_report(run.run_dir)
    return manifest


def papermill_command(run: RunPlan) -> str:
    """One self-contained shell command that executes a planned run with papermill (for a scheduler)."""
    steps = []
    if run.reuse is not None:
        steps.append(f"{shlex.quote(sys.executable)} -m tl_core.run link {shlex.quote(str(run.reuse))} "
                     f"{shlex.quote(str(run.run_dir))}")
    steps.append(f"mkdir -p {shlex.quote(str(run.run_dir))}")
    for nb in run.notebooks:
        parameters = yaml.safe_dump(run.notebook_parameters[nb.stem], default_flow_style=True, width=1 << 16)
        arguments = [shlex.quote(str(nb.path)), shlex.quote(str(run.run_dir / nb.path.name)),
                     "-k", KERNEL_NAME, "--cwd", shlex.quote(str(nb.path.parent)),
                     "-y", shlex.quote(parameters.strip())]
        steps.append(f"{shlex.quote(sys.executable)} -m papermill " + " ".join(arguments))
    steps.append(f"{shlex.quote(sys.executable)} -m tl_core.run report {shlex.quote(str(run.run_dir))}")
    return " && ".join(steps)


def run_sweep(plans: list[RunPlan], jobs: int = 1, force: bool = False, log: Callable[..., None] = print,
              ) -> dict[str, str]:
    """Run each planned run in its own process, ``jobs`` at a time, with a progress line per run.
    Complete runs are skipped. Returns label -> "complete" | "skipped" | "failed"."""
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

    def one(run: RunPlan) -> tuple[RunPlan, str, float]:
        started = time.perf_counter()
        command = [sys.executable, "-m", "tl_core.run", "--profile", run.profile, "--run-dir", str(run.run_dir),
                   "--only", ",".join(nb.stem for nb in run.notebooks), "--notebooks", str(run.notebooks_dir),
                   "--quiet"]
        for name, value in run.parameters.items():
            command += ["-p", name, yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")]
        if run.reuse is not None:
            command += ["--reuse", str(run.reuse)]
        if force:
            command.append("--force")
        result = subprocess.run(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        if result.returncode != 0:
            write_text(run.run_dir / "runner.log", result.stdout)
        return run, "complete" if result.returncode == 0 else "failed", time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for run, outcome, seconds in pool.map(one, pending):
            outcomes[run.label] = outcome
            detail = f"done in {seconds:.0f} s" if outcome == "complete" else \
                f"FAILED after {seconds:.0f} s (see {run.run_dir / 'runner.log'})"
            log(f"[{len(outcomes)}/{len(plans)}] {run.label}: {detail}")
    return outcomes


def describe_parameters(notebooks: list[Notebook]) -> str:
    lines = []
    for nb in notebooks:
        lines.append(nb.path.name)
        for name, info in nb.parameters.items():
            help_text = f"  # {info['help']}" if info.get("help") else ""
            lines.append(f"  {name} = {info.get('default')!r}{help_text}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tl_core.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", help="notebooks/params/<profile>.yaml (default: quick)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override one parameter (value read as YAML); repeatable")
    parser.add_argument("--only", help="comma-separated notebook numbers or names, e.g. 05,06")
    parser.add_argument("--run-dir", help="where outputs go (default: runs/<profile>, or runs/<profile>-sweep/)")
    parser.add_argument("--reuse", help="a finished run directory whose artifacts this run starts from "
                                        "(for --only runs that need the outputs of notebooks not selected)")
    parser.add_argument("--sweep", nargs="+", metavar="NAME=V1,V2", help="one run per combination of values")
    parser.add_argument("--jobs", type=int, default=1, help="sweep runs executed at the same time (default 1)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print one self-contained papermill command per run instead of running")
    parser.add_argument("--force", action="store_true", help="rerun notebooks that are complete already")
    parser.add_argument("--notebooks", default=str(NOTEBOOKS), help=argparse.SUPPRESS)  # another course folder
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"params": _main_params, "report": _main_report, "compare": _main_compare, "link": _main_link}
    if argv and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    if argv and argv[0] == "run":
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return 2
    try:
        overrides = {name: parse_value(value) for name, value in args.parameter}
        if args.sweep:
            plans = plan_sweep(parse_sweep(args.sweep), args.profile, overrides, args.only, args.run_dir,
                               Path(args.notebooks), args.reuse)
        else:
            plans = [plan(args.profile, overrides, args.only, args.run_dir, Path(args.notebooks), args.reuse)]
    except (ParameterError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        for run in plans:
            print(papermill_command(run))
        return 0
    if args.sweep:
        print(f"Sweep of {len(plans)} runs ({args.jobs} at a time) into {plans[0].run_dir.parent}")
        outcomes = run_sweep(plans, args.jobs, args.force, log=lambda text, end="\n": print(text, end=end,
                                                                                              flush=True))
        failed = [label for label, outcome in outcomes.items() if outcome == "failed"]
        print(f"\n{len(outcomes) - len(failed)} of {len(plans)} runs complete. "
              f"Compare them: python -m tl_core.run compare {plans[0].run_dir.parent}/*")
        return 1 if failed else 0
    run = plans[0]
    log = (lambda *a, **k: None) if args.quiet else (lambda text, end="\n": print(text, end=end, flush=True))
    log(f"Running {len(run.notebooks)} notebook(s), profile {run.profile!r}, into {run.run_dir}")
    started = time.perf_counter()
    try:
        execute(run, log=log, force=args.force)
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished notebooks and artifacts are kept in {run.run_dir}, and the next run "
              "resumes after them", file=sys.stderr)
        return 130
    except Exception as error:  # papermill's execution error carries the failing cell
        print(f"\nA notebook failed: {error}\nIts partial output is in {run.run_dir}", file=sys.stderr)
        return 1
    log(f"\nAll done in {time.perf_counter() - started:.0f} s.")
    log(f"Executed notebooks: {run.run_dir}/*.ipynb (HTML in {run.run_dir / HTML_DIR})")
    log(f"Headline numbers:   {run.run_dir / REPORT}")
    if (run.run_dir / "metrics.json").exists():
        log(f"All results:        {run.run_dir / 'metrics.json'}")
    return 0


def _main_params(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tl_core.run params")
    parser.add_argument("--only")
    args = parser.parse_args(argv)
    print(describe_parameters(select(discover_notebooks(), args.only)))
    return 0


def _main_report(argv: list[str]) -> int:
    from .report import write_report

    parser = argparse.ArgumentParser(prog="python -m tl_core.run report")
    parser.add_argument("run_dir", nargs="+")
    for run_dir in parser.parse_args(argv).run_dir:
        print(f"wrote {write_report(Path(run_dir))}")
    return 0


def _main_compare(argv: list[str]) -> int:
    from .report import compare_runs

    parser = argparse.ArgumentParser(prog="python -m tl_core.run compare")
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    runs = [Path(d) for d in args.run_dirs if (Path(d) / "metrics.json").exists() or (Path(d) / MANIFEST).exists()]
    if not runs:
        print("error: none of these folders is a run directory (no metrics.json or run.json)", file=sys.stderr)
        return 2
    table = compare_runs(runs)
    print(table)
    if args.out:
        write_text(args.out, table + "\n")
    return 0


def _main_link(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tl_core.run link",
                                     description="link a finished run's artifacts into another run directory")
    parser.add_argument("source")
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    linked = link_reused(Path(args.source), Path(args.run_dir))
    print(f"linked {len(linked)} artifact(s) from {args.source} into {args.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
