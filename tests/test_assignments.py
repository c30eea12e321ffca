"""The assignments (``notebooks/assignments/``): every instructor source released with nbgrader into a course
directory of its own, then autograded twice: as the instructor wrote it (full marks on every test cell) and as a
student receives it (no marks, no crash, no solution left in it).

The nbgrader tests are marked ``classroom`` (``make test-assignments``: they need nbgrader from
requirements-classroom.txt and the datasets on TL_DATA_DIR); the checks of the sources themselves run everywhere.
"""

import json
import os
import re
from pathlib import Path

import pytest

from tl_core import classroom, run
from tl_core.course import find_notebooks

SOURCES = classroom.discover_sources()
SOURCE_IDS = [source.stem for source in SOURCES]
MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


def cells_of(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text(encoding="utf-8"))["cells"]


def grading(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def hidden_lines(source: Path) -> set[str]:
    """Lines only the instructor may see: inside solution or hidden-test regions and nowhere outside them."""
    inside, outside = set(), set()
    for cell in cells_of(source):
        hidden = False
        for line in "".join(cell["source"]).splitlines():
            stripped = line.strip()
            if stripped in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
                hidden = True
            elif stripped in ("### END SOLUTION", "### END HIDDEN TESTS"):
                hidden = False
            elif len(stripped) >= 12:
                (inside if hidden else outside).add(stripped)
    return inside - outside


def test_there_are_instructor_sources():
    assert SOURCE_IDS, "notebooks/assignments/ holds the instructor sources"
    chapters = {path.stem for path in run.discover_notebooks()}
    assert set(SOURCE_IDS) <= chapters, "each instructor source is named after its chapter notebook"


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_every_exercise_has_an_autograded_test(source):
    grade_ids = [grading(cell)["grade_id"] for cell in cells_of(source) if grading(cell)]
    assert len(grade_ids) == len(set(grade_ids)), "grade ids are unique within a notebook"
    exercises = sorted({grade_id.split("_")[0] for grade_id in grade_ids if re.match(r"ex\d+_", grade_id)})
    assert exercises, "an assignment has exercises"
    for exercise in exercises:
        tests = [cell for cell in cells_of(source) if grading(cell).get("grade_id") == f"{exercise}_tests"]
        assert tests and tests[0]["cell_type"] == "code" and grading(tests[0])["points"] > 0, exercise
        assert "### BEGIN HIDDEN TESTS" in "".join(tests[0]["source"]), f"{exercise}: its test cell hides tests"


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_sources_are_well_formed(source):
    """Solutions only in solution cells, markers in pairs, set-up locked, what the run must hold declared."""
    for cell in cells_of(source):
        text = "".join(cell["source"])
        counts = [text.count(marker) for marker in MARKERS]
        assert counts[0] == counts[1] and counts[2] == counts[3], text[:80]
        if counts[0]:
            assert grading(cell).get("solution"), f"a solution region outside a solution cell: {text[:80]}"
        if counts[2]:
            assert grading(cell).get("grade") and cell["cell_type"] == "code", text[:80]
        is_parameters = "parameters" in cell.get("metadata", {}).get("tags", [])
        assert is_parameters == (grading(cell).get("grade_id") == "parameters"), "papermill finds the parameters"
        if is_parameters:
            assert grading(cell).get("locked"), "autograding restores the parameters: the grader's run decides"
    chapters = {path.stem for path in run.discover_notebooks()}
    assert set(classroom.needs(source)) <= chapters


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_the_chapter_points_at_its_assignment_and_has_no_second_copy(source):
    chapter = find_notebooks() / source.name
    assert f"assignments/{source.name}" in "".join(cells_of(chapter)[-1]["source"]), (
        "the chapter's Exercises section (its last cell) names its assignment")
    assert not (find_notebooks() / "solutions" / f"{source.stem}_solutions.ipynb").exists(), (
        "the instructor source is the one place of each solution")


# ---- nbgrader: release, then autograde ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def course(tmp_path_factory):
    pytest.importorskip("nbgrader", reason="`make test-assignments` installs nbgrader (requirements-classroom.txt)")
    return classroom.release(tmp_path_factory.mktemp("classroom"))[0].parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory holding what the assignments read: the chapter notebooks they need and every chapter before
    the last of them (each reads what the earlier ones wrote), run by the course's runner with the smoke profile.
    The assignments' tests recompute their answers from the notebook's own data, so any run directory will do; the
    quick profile would take some twenty minutes for 01-07."""
    if not os.environ.get("TL_DATA_DIR"):
        pytest.skip("TL_DATA_DIR is not set to a folder holding the datasets (see README: Data)")
    path = tmp_path_factory.mktemp("run")
    needed = {stem for source in SOURCES for stem in classroom.needs(source)}
    if needed:
        chain = [notebook.stem[:2] for notebook in run.discover_notebooks() if notebook.stem <= max(needed)]
        assert run.main(["--profile", "smoke", "--only", ",".join(chain), "--run-dir", str(path)]) == 0
    return path


@pytest.mark.classroom
@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_the_instructor_version_gets_full_marks(source, course, run_dir, monkeypatch):
    monkeypatch.setenv(classroom.RUN_DIR_ENV, str(run_dir))
    grades = classroom.autograde(course, source.stem, "instructor", source)
    tests = {grade.name: (grade.score, grade.max_score) for grade in grades if grade.autograded}
    assert tests and all(score == max_score > 0 for score, max_score in tests.values()), tests
    written = [grade for grade in grades if not grade.autograded]
    assert all(grade.score is None for grade in written), "written answers wait for the teacher"


@pytest.mark.classroom
@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_the_student_version_has_no_solution_and_gets_no_marks(source, course, run_dir, monkeypatch):
    released = course / "release" / source.stem / source.name
    text = released.read_text(encoding="utf-8")
    for marker in MARKERS:
        assert marker.split(" ", 1)[1] not in text
    released_lines = {line.strip() for cell in cells_of(released) for line in "".join(cell["source"]).splitlines()}
    leaked = hidden_lines(source) & released_lines
    assert not leaked, f"solution or hidden-test lines in the student version: {sorted(leaked)[:5]}"
    assert not any(cell.get("outputs") for cell in cells_of(released)), "outputs would show the answers"
    assert "raise NotImplementedError()" in text and "YOUR ANSWER HERE" in text

    monkeypatch.setenv(classroom.RUN_DIR_ENV, str(run_dir))
    grades = classroom.autograde(course, source.stem, "student", released)  # raises if nbgrader fails
    tests = {grade.name: grade.score for grade in grades if grade.autograded}
    assert tests and all(score == 0 for score in tests.values()), tests
    assert all(grade.score == 0 for grade in grades if not grade.autograded), "an unanswered question scores 0"
