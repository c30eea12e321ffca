"""The classroom: each notebook's exercises as an nbgrader assignment (``make assignments``).

    python -m tl_core.classroom release                      # every instructor source -> classroom/release/
    python -m tl_core.classroom release --course-dir ~/tl    # an nbgrader course directory elsewhere
    python -m tl_core.classroom list                         # the instructor sources and what each needs

**Instructor sources** live in ``notebooks/assignments/NN_topic.ipynb``, one per numbered notebook that has
exercises, and are the one place where each exercise, its solution and its tests are written. They are ordinary
notebooks run by nbval like the chapters (outputs stored from a clean run), with nbgrader's cell metadata:

- solutions inside ``### BEGIN SOLUTION`` / ``### END SOLUTION`` in cells marked *Autograded answer*; the student
  version gets ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` instead;
- *Autograder tests* cells (``grade: true``, with points): visible asserts, then the hidden ones between
  ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``. Tests recompute the expected answer with ``tl_core``
  from the notebook's own data, so they hold for any run directory and any dataset folder;
- written answers ("why?"): *Manually graded answer* markdown cells (``solution: true, grade: true``, 1 point)
  holding the model answer between the solution markers. The student sees ``YOUR ANSWER HERE``; autograding
  gives an unanswered one 0 and leaves an answered one to the teacher (nbgrader's formgrader);
- the ``parameters`` cell and the set-up cells are *Read-only* (``locked``), so autograding restores them: the
  grader's machine decides where the run directory is (:func:`assignment_run_dir`), not the student's notebook.

The notebook metadata ``tl_course.needs`` names the chapter notebooks whose artifacts an assignment reads from
the run directory (``[]`` for none); the autograding test runs those, and every chapter before the last of
them, with the smoke profile first (the tests recompute their answers, so a smoke run's artifacts must do).

**Recipe: converting a notebook's exercises and its solutions notebook into an instructor source** (done for
00-07; the same steps for each later notebook):

1. Copy ``notebooks/solutions/NN_topic_solutions.ipynb`` to ``notebooks/assignments/NN_topic.ipynb``. Its title
   becomes ``# NN · Topic — exercises``; say what it needs and how long it runs.
2. Parameters: keep the ``parameters`` cell, but ``run_dir = None`` (read with
   ``run_dir = classroom.assignment_run_dir(run_dir)``): nbgrader executes a submission in a folder of its own,
   so a path relative to the notebook would not find the run. Set ``metadata.tl_course.needs``.
3. For each exercise: the exercise text from the chapter's *Exercises* list as a markdown cell, rewritten where it
   is open-ended so that at least one part is checkable: a function the learner writes (checked against
   ``tl_core``, autograd or a reference on inputs the learner never saw) or a number within a tolerance. A plot's
   existence, a timing or a sentence is not a test; keep those parts as code whose output is not graded, and the
   "why" as a written answer holding the solutions notebook's explanation as the model answer.
4. Move the solution code into the answer cell between the solution markers, the function signature and
   docstring outside them; cells that only use the answer stay ordinary code cells.
5. After each answer, a test cell: one or two visible asserts that show the expected form, then hidden tests
   that recompute the answer independently. Points: 1-2 per test cell.
6. Mark the cells in JupyterLab (nbgrader's *Create Assignment* cell toolbar) or in the cell metadata
   (``metadata.nbgrader``, as in the converted sources); ``grade_id``: ``exN_name`` for answers, ``exN_tests`` for
   tests, unique within the notebook.
7. Tag volatile output cells (timings, multi-threaded training) ``nbval-ignore-output``; run the notebook from a
   clean kernel (``jupyter nbconvert --execute --inplace`` with ``TL_RUN_DIR`` pointing at a run of the
   ``needs``) so that its stored outputs are nbval's reference; keep it under 2 minutes on 2 cores.
8. Point the chapter's *Exercises* section at ``assignments/NN_topic.ipynb`` (same exercise list), delete
   ``notebooks/solutions/NN_topic_solutions.ipynb``, and run ``make assignments`` and
   ``make test-assignments`` (full marks for the source's test cells, none for the release, no solution left).

Introduced for teachers in the README ("For teachers").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .course import CourseNotFoundError, find_course, find_notebooks

RUN_DIR_ENV = "TL_RUN_DIR"
SOURCE_PATTERN = "[0-9][0-9]_*.ipynb"
COURSE_ID = "tl-course"
# Every assignment is executed with the course kernel; a cell may tokenize IMDB or train Word2Vec on a sample
# (under a minute on 2 cores), so nbgrader's default of 30 s per cell is too short.
EXECUTE_TIMEOUT = 600

NBGRADER_CONFIG = '''\
# nbgrader configuration of the course's classroom, written by `python -m tl_core.classroom release`.
# Run nbgrader from this folder, with the course's environment: `../.venv/bin/nbgrader autograde 01_data`.
c = get_config()
c.CourseDirectory.course_id = "{course_id}"
# A cell may tokenize IMDB or train Word2Vec on a sample: more than nbgrader's default of 30 s per cell.
c.Execute.timeout = {timeout}
# Where assignments read the run directory of the chapter notebooks: TL_RUN_DIR if set, else the course's runs/lab.
# On a JupyterHub with nbgrader's exchange, set c.Exchange.root here (see nbgrader's documentation).
'''


class AssignmentError(RuntimeError):
    """An instructor source is malformed or nbgrader failed on it."""


# The course folder (the clone) is found from the current folder upwards (course.find_notebooks), not from where
# this package is installed.
def assignments_dir() -> Path:
    """The instructor sources: ``notebooks/assignments/`` of the course folder."""
    return find_notebooks() / "assignments"


def classroom_dir() -> Path:
    """Where `make assignments` assembles the nbgrader course directory: ``classroom/`` of the course folder
    (git-ignored; never removed by `make clean`, since a teacher's gradebook and collected submissions live there)."""
    return find_course() / "classroom"


def lab_run_dir() -> Path:
    """``runs/lab/`` of the course folder: where the chapter notebooks write when run in JupyterLab."""
    try:
        return find_course() / "runs" / "lab"
    except CourseNotFoundError as error:
        raise CourseNotFoundError(f"{error} Or set {RUN_DIR_ENV} to the run directory of the chapter "
                                  "notebooks.") from None


def assignment_run_dir(run_dir: str | os.PathLike | None = None) -> Path:
    """The run directory an assignment reads: ``run_dir`` if given, else ``$TL_RUN_DIR`` if set, else ``runs/lab/``
    of the course folder (where the chapter notebooks write when run in JupyterLab).

    nbgrader executes a submission in a folder of its own (``autograded/<student>/<assignment>/``), so a path
    relative to the notebook, as the chapters use, would not find the run there. Used by the instructor sources in
    ``notebooks/assignments/``.
    """
    if run_dir is not None:
        return Path(run_dir).expanduser()
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV]).expanduser()
    return lab_run_dir()


def discover_sources(directory: str | os.PathLike | None = None) -> list[Path]:
    """The instructor sources ``NN_topic.ipynb`` in notebook order (default: :func:`assignments_dir`)."""
    return sorted(Path(directory or assignments_dir()).glob(SOURCE_PATTERN))


def assignment_id(source: str | os.PathLike) -> str:
    """nbgrader's name of an assignment: the notebook's stem (``01_data``)."""
    return Path(source).stem


def needs(source: str | os.PathLike) -> list[str]:
    """The chapter notebooks (stems) whose artifacts the assignment reads from the run directory."""
    metadata = json.loads(Path(source).read_text(encoding="utf-8"))["metadata"]
    try:
        return list(metadata["tl_course"]["needs"])
    except KeyError:
        raise AssignmentError(f"{source}: metadata.tl_course.needs is missing (the chapter notebooks whose "
                              "artifacts it reads, [] for none)") from None


def assemble_course(course_dir: str | os.PathLike | None = None, sources: list[Path] | None = None) -> Path:
    """An nbgrader course directory: ``nbgrader_config.py`` and ``source/<id>/<id>.ipynb`` copied from the
    instructor sources (copies, not links: nbgrader follows the course directory, not the repository)."""
    course_dir = Path(course_dir or classroom_dir())
    sources = discover_sources() if sources is None else sources
    if not sources:
        raise AssignmentError(f"no instructor sources named NN_topic.ipynb in {assignments_dir()}")
    (course_dir / "source").mkdir(parents=True, exist_ok=True)
    config = course_dir / "nbgrader_config.py"
    config.write_text(NBGRADER_CONFIG.format(course_id=COURSE_ID, timeout=EXECUTE_TIMEOUT), encoding="utf-8")
    for source in sources:
        target = course_dir / "source" / assignment_id(source) / Path(source).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return course_dir


def grader(course_dir: str | os.PathLike | None = None):
    """nbgrader's API on a course directory, configured as its ``nbgrader_config.py`` says."""
    try:
        from nbgrader.apps import NbGraderAPI
    except ImportError:
        raise AssignmentError("nbgrader is not installed: `make assignments` installs requirements-classroom.txt "
                              "into .venv") from None
    from traitlets.config import Config

    # nbgrader runs `alembic` (its gradebook's migrations) by name: this environment's scripts must be on PATH even
    # when it is not activated (make calls .venv/bin/python directly)
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])
    config = Config()
    config.CourseDirectory.root = str(Path(course_dir or classroom_dir()).resolve())
    config.CourseDirectory.course_id = COURSE_ID
    config.Execute.timeout = EXECUTE_TIMEOUT
    return NbGraderAPI(config=config)


def _checked(result: dict, what: str) -> str:
    if not result.get("success"):
        raise AssignmentError(f"{what} failed:\n{result.get('error') or ''}\n{result.get('log') or ''}")
    return result.get("log") or ""


def release(course_dir: str | os.PathLike | None = None, sources: list[Path] | None = None) -> list[Path]:
    """Assemble the course directory and generate the student version of every instructor source
    (``nbgrader generate_assignment``) into ``<course_dir>/release/<id>/<id>.ipynb``."""
    api = grader(course_dir)  # a clear error before anything is written when nbgrader is missing
    sources = discover_sources() if sources is None else sources
    course_dir = assemble_course(course_dir, sources)
    released = []
    for source in sources:
        name = assignment_id(source)
        _checked(api.generate_assignment(name, force=True), f"nbgrader generate_assignment {name}")
        released.append(course_dir / "release" / name / Path(source).name)
        if not released[-1].exists():
            raise AssignmentError(f"nbgrader wrote no {released[-1]}")
    return released


@dataclass
class CellGrade:
    """One graded cell of an autograded submission, as the gradebook holds it."""
    name: str  # the cell's grade_id
    autograded: bool  # a test cell (scored by running it); False: a written answer for the teacher
    score: float | None  # None: waiting for the teacher
    max_score: float


def autograde(course_dir: str | os.PathLike, name: str, student: str,
              submission: str | os.PathLike) -> list[CellGrade]:
    """Put ``submission`` where ``nbgrader collect`` would (``submitted/<student>/<name>/``), run
    ``nbgrader autograde`` on it and return its grades. The assignment must have been released."""
    course_dir = Path(course_dir)
    target = course_dir / "submitted" / student / name / f"{name}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(submission, target)
    api = grader(course_dir)
    _checked(api.autograde(name, student, force=True), f"nbgrader autograde {name} for {student}")
    from nbgrader.api import Gradebook

    with Gradebook(api.coursedir.db_url) as gradebook:
        notebook = gradebook.find_submission_notebook(name, name, student)
        return [CellGrade(grade.name, grade.cell.cell_type == "code", grade.score if not grade.needs_manual_grade
                          else None, grade.max_score) for grade in notebook.grades]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tl_core.classroom", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    release_parser = commands.add_parser("release", help="student versions of every instructor source")
    release_parser.add_argument("--course-dir", type=Path, default=None,
                                help="the nbgrader course directory (default: classroom/)")
    commands.add_parser("list", help="the instructor sources and the chapter notebooks each needs")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "list":
            for source in discover_sources():
                print(f"{assignment_id(source)}: needs {', '.join(needs(source)) or 'nothing'} from the run")
            return 0
        for path in release(arguments.course_dir):
            print(f"released {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
        return 0
    except (AssignmentError, CourseNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
