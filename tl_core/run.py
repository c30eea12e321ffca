"""Run the course's notebooks with papermill: ``make run``, reruns with other parameters, sweeps, reports.

    python -m tl_core.run                              # every notebook, quick profile, into runs/quick/
    python -m tl_core.run --profile full               # notebooks/params/full.yaml, into runs/full/
    python -m tl_core.run --only 05,06 --reuse runs/quick -p target amazon:books --run-dir runs/books
    python -m tl_core.run --only 05,06 --reuse runs/quick --sweep target=amazon:books,amazon:dvd n_labels=100,400
    python -m tl_core.run ... --sweep "n_labels_grid=[50,100],[400]"   # list values: commas inside brackets
    python -m tl_core.run ... --sweep ... --jobs 2     # two runs at a time on this machine
    python -m tl_core.run ... --sweep ... --dry-run    # one self-contained command per run, for a scheduler
    python -m tl_core.run params                       # every notebook parameter, its default and help
    python -m tl_core.run report runs/books            # (re)write report.md and the HTML renderings
    python -m tl_core.run compare runs/quick runs/full # headline numbers of several runs side by side
    python -m tl_core.run commit runs/notebooks-...    # a whole quick run's notebooks become notebooks/ (make notebooks)
    python -m tl_core.run commit runs/notebooks-... --only 08   # add the appendix, run into that same folder

The course is found from the current folder (the first folder upwards that holds notebooks/params/) or from
``--notebooks``. Each notebook declares its parameters in a cell tagged ``parameters`` (names, defaults and, in the
help comment, allowed values: ``# one of: a, b``); a profile (``notebooks/params/<name>.yaml``) and ``-p name
value`` override them (values are YAML; ``1e-3`` is a number). Before anything runs, every value is checked: its
name, type and allowed values, its range and its relations to the others (``tl_core.parameters``: positive sizes,
fractions in (0, 1), label counts the target's pool can give, ...); a sweep's points and folders too. A run
directory holds the executed notebooks, the artifacts, ``metrics.json``, figures, ``html/`` renderings,
``report.md`` and ``run.json``. A notebook counts as done only when ``run.json`` says it completed with the same
parameters and its executed copy shows every cell run without an error, so a run or sweep stopped by Ctrl-C, a
failure or a dead kernel resumes where it stopped (``--force`` reruns everything).

This module is the command line; the work is done by ``tl_core.course`` (notebooks, profiles),
``tl_core.parameters`` (values and their rules), ``tl_core.planning`` (runs, sweeps, commands) and
``tl_core.execution`` (papermill, resuming, sweeps in parallel).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from .artifacts import HTML_DIR, MANIFEST_FILE, METRICS_FILE, REPORT_FILE, write_text
from .course import CourseNotFoundError, describe_parameters, discover_notebooks, load_profile, select  # noqa: F401
from .execution import (CommitError, NotebookInterrupted, SweepInterrupted, commit_notebooks,  # noqa: F401
                        execute, executed_status, link_reused, run_sweep)
from .parameters import (ParameterError, allowed_values, check_notebook_parameters, parse_sweep,  # noqa: F401
                         parse_value)
from .planning import RunPlan, papermill_command, plan, plan_sweep, sweep_folders  # noqa: F401

#: The checks the runner makes before anything runs (the name its tests and notebooks have used).
check_parameters = check_notebook_parameters


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
    parser.add_argument("--sweep", nargs="+", metavar="NAME=V1,V2", help="one run per combination of values "
                        "(a list value in brackets: n_labels_grid=[50,100],[400])")
    parser.add_argument("--jobs", type=int, default=1, help="sweep runs executed at the same time (default 1)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print one self-contained papermill command per run instead of running")
    parser.add_argument("--force", action="store_true", help="rerun notebooks that are complete already")
    parser.add_argument("--notebooks", help="the course's notebooks folder (default: notebooks/ of the first folder "
                                            "from here upwards that holds notebooks/params/)")
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    return parser


def _resume_hint(argv: list[str]) -> str:
    return "python -m tl_core.run " + shlex.join(argv) if argv else "python -m tl_core.run"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"params": _main_params, "report": _main_report, "compare": _main_compare, "link": _main_link,
                "commit": _main_commit}
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return _main_run(argv[1:] if argv and argv[0] == "run" else argv)
    except NotebookInterrupted as stopped:
        print(f"\ninterrupted: {stopped.notebook} stopped after {stopped.seconds:.0f} s; notebooks finished before "
              f"it are kept. Resume with: {_resume_hint(argv)}", file=sys.stderr)
    except SweepInterrupted as stopped:
        print(f"\ninterrupted: the sweep stopped with {stopped.complete} of {stopped.total} runs complete. Resume "
              f"with: {_resume_hint(argv)} (complete runs are skipped)", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"\ninterrupted before a notebook started or after the last one ended; nothing is lost. Run again "
              f"with: {_resume_hint(argv)}", file=sys.stderr)
    return 130


def _main_run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return 2
    try:
        overrides = {name: parse_value(value) for name, value in args.parameter}
        if args.sweep:
            plans = plan_sweep(parse_sweep(args.sweep), args.profile, overrides, args.only, args.run_dir,
                               args.notebooks, args.reuse)
        else:
            plans = [plan(args.profile, overrides, args.only, args.run_dir, args.notebooks, args.reuse)]
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
        raise
    except Exception as error:  # papermill's execution error carries the failing cell
        print(f"\nA notebook failed: {error}\nIts partial output is in {run.run_dir}; the next run starts again "
              "from that notebook.", file=sys.stderr)
        return 1
    log(f"\nAll done in {time.perf_counter() - started:.0f} s.")
    log(f"Executed notebooks: {run.run_dir}/*.ipynb (HTML in {run.run_dir / HTML_DIR})")
    log(f"Headline numbers:   {run.run_dir / REPORT_FILE}")
    if (run.run_dir / METRICS_FILE).exists():
        log(f"All results:        {run.run_dir / METRICS_FILE}")
    return 0


def _main_params(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tl_core.run params")
    parser.add_argument("--only")
    parser.add_argument("--notebooks")
    args = parser.parse_args(argv)
    try:
        print(describe_parameters(select(discover_notebooks(args.notebooks), args.only)))
    except (ParameterError, CourseNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _is_run_directory(folder: Path) -> bool:
    return folder.is_dir() and ((folder / METRICS_FILE).exists() or (folder / MANIFEST_FILE).exists()
                                or any(folder.glob("[0-9][0-9]_*.ipynb")))


def _main_report(argv: list[str]) -> int:
    from .report import write_report

    parser = argparse.ArgumentParser(prog="python -m tl_core.run report")
    parser.add_argument("run_dir", nargs="+")
    folders = [Path(run_dir) for run_dir in parser.parse_args(argv).run_dir]
    missing = [str(folder) for folder in folders if not _is_run_directory(folder)]
    if missing:  # checked first: a mistyped path must not become an empty run directory
        print(f"error: not a run directory (no executed notebooks, metrics.json or run.json): "
              f"{', '.join(missing)}", file=sys.stderr)
        return 2
    for folder in folders:
        print(f"wrote {write_report(folder)}")
    return 0


def _main_compare(argv: list[str]) -> int:
    from .report import compare_runs

    parser = argparse.ArgumentParser(prog="python -m tl_core.run compare")
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    runs = [Path(d) for d in args.run_dirs if (Path(d) / METRICS_FILE).exists() or (Path(d) / MANIFEST_FILE).exists()]
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
    if not Path(args.source).is_dir():
        print(f"error: {args.source} is not a run directory", file=sys.stderr)
        return 2
    linked = link_reused(Path(args.source), Path(args.run_dir))
    print(f"linked {len(linked)} artifact(s) from {args.source} into {args.run_dir}")
    return 0


def _main_commit(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tl_core.run commit", description="copy the executed notebooks of one complete run over the "
        "course's notebooks/ (what `make notebooks` does after running the quick profile into a fresh folder)")
    parser.add_argument("run_dir")
    parser.add_argument("--profile", default="quick", help="the profile the run must be of (default: quick)")
    parser.add_argument("--notebooks", help="the course's notebooks folder (default: found from here)")
    parser.add_argument("--only", help="commit just these notebooks (numbers or stems, e.g. 08), which must belong to "
                        "the run the committed notebooks come from: an appendix run into that run's directory")
    args = parser.parse_args(argv)
    try:
        written = commit_notebooks(args.run_dir, args.notebooks, args.profile, args.only)
    except (CommitError, ParameterError, CourseNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"committed {len(written)} notebook(s) from {args.run_dir}: " + ", ".join(path.name for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
