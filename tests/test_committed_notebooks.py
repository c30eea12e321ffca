"""The committed notebooks are a course, not a lab log: every numbered notebook of the quick chain holds the outputs
of one and the same run of the quick profile (one run id, the profile's parameters), and no stored output holds a
progress bar's intermediate frames or the kernel's transport warning.

These read the committed files only (no kernel): part of `make test`.
"""

import nbformat
import pytest

from tl_core import execution
from tl_core.course import discover_notebooks, load_profile
from conftest import REPO

NOTEBOOKS = REPO / "notebooks"
PROFILE = "quick"
CHAIN = [nb for nb in discover_notebooks(NOTEBOOKS) if nb.runs_in(PROFILE)]
COMMITTED = sorted(path for path in NOTEBOOKS.rglob("*.ipynb")  # not .ipynb_checkpoints/ and the like
                   if not any(part.startswith(".") for part in path.relative_to(NOTEBOOKS).parts))
FIX = ("\nThe committed notebooks must be the outputs of one run of the quick profile, executed in order. Regenerate "
       "them all with `make notebooks` (it runs `python -m tl_core.run --profile quick --run-dir "
       "runs/notebooks-<time>` into a fresh folder, the appendix (08) into the same folder, then `python -m "
       "tl_core.run commit runs/notebooks-<time>`, which copies the executed notebooks over notebooks/), and commit "
       "notebooks/*.ipynb.")


def read(path):
    return nbformat.read(path, as_version=4)


def test_the_quick_chain_is_not_empty():
    assert [nb.path.name for nb in CHAIN][:2] == ["00_setup.ipynb", "01_data.ipynb"]


def test_every_committed_notebook_comes_from_one_quick_run():
    profile = load_profile(PROFILE, NOTEBOOKS)
    problems, runs = [], {}
    for nb in CHAIN:
        identity = execution.run_identity(read(nb.path))
        if not identity:
            problems.append(f"{nb.path.name}: no run identity (metadata.tl_course.run): its outputs were not "
                            "committed from a run of the course runner")
            continue
        runs.setdefault(identity.get("id"), []).append(nb.path.name)
        expected = nb.given_by(profile)
        if identity.get("profile") != PROFILE or identity.get("parameters") != expected:
            problems.append(f"{nb.path.name}: ran with profile {identity.get('profile')!r} and parameters "
                            f"{identity.get('parameters')}, not the {PROFILE} profile's {expected}")
    if len(runs) > 1:
        problems.append("the notebooks come from different runs: " + "; ".join(
            f"run {run_id}: {', '.join(names)}" for run_id, names in runs.items()))
    assert not problems, "\n".join(problems) + FIX


def test_an_appendix_with_stored_outputs_comes_from_the_same_run():
    """An appendix the quick profile does not run (08) may hold outputs only of the committed run: run into its
    folder afterwards with its own defaults (`make notebooks` does it; `commit --only` adds one)."""
    profile = load_profile(PROFILE, NOTEBOOKS)
    chain_runs = {(execution.run_identity(read(nb.path)) or {}).get("id") for nb in CHAIN}
    problems = []
    for nb in discover_notebooks(NOTEBOOKS):
        notebook = read(nb.path)
        if nb.runs_in(PROFILE) or not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"):
            continue
        identity = execution.run_identity(notebook) or {}
        expected = nb.given_by(profile)
        if identity.get("id") not in chain_runs or identity.get("parameters") != expected:
            problems.append(f"{nb.path.name}: outputs of run {identity.get('id')} with parameters "
                            f"{identity.get('parameters')}; the chain's run is {sorted(map(str, chain_runs))}")
    assert not problems, "\n".join(problems) + FIX


def streams_as_shown(cell):
    """The cell's stream outputs as a front end shows them: consecutive outputs of one stream joined."""
    shown = []
    for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
        if output.get("output_type") != "stream":
            shown.append(None)
        elif shown and shown[-1] is not None and shown[-1][0] == output.name:
            shown[-1] = (output.name, shown[-1][1] + output.text)
        else:
            shown.append((output.name, output.text))
    return [text for item in shown if item is not None for _, text in [item]]


@pytest.mark.parametrize("path", COMMITTED, ids=[str(path.relative_to(NOTEBOOKS)) for path in COMMITTED])
def test_stored_outputs_hold_no_progress_frames_or_kernel_warnings(path):
    found = []
    for index, cell in enumerate(read(path).cells):
        for text in streams_as_shown(cell):
            shown = execution.final_text(text)
            if shown != text:
                last = shown.strip().splitlines()[-1] if shown.strip() else ""
                found.append(f"cell {index}: {text.count(chr(13))} progress-bar frames written over each other "
                             f"(a reader sees only the last: {last[:70]!r})")
            if execution.KERNEL_WARNING.search(text):
                found.append(f"cell {index}: the kernel's warning about TCP without encryption")
    assert not found, (f"{path.relative_to(REPO)} stores outputs a reader never sees:\n  " + "\n  ".join(found)
                       + "\nThe runner keeps only a bar's final line (tl_core.execution.clean_outputs)." + FIX)
