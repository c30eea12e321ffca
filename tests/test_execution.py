"""What the runner leaves in a run directory and in notebooks/ (tl_core/execution.py): executed copies whose outputs
hold a progress bar's final line and no kernel warning, the run each copy belongs to, and the committed notebooks
made from one complete run (`make notebooks`); an appendix that only the larger profiles run."""

import copy
import json
import os

import nbformat
import pytest
from nbval.plugin import coalesce_streams

from tl_core import execution, run
from test_run import quiet, write_notebook

WARNING = ("[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication (including "
           "code and outputs) is sent in plain text and is susceptible to eavesdropping.\n")


def stream(text, name="stdout"):
    return nbformat.v4.new_output("stream", name=name, text=text)


def crafted_notebook():
    """One cell as papermill stores it: a progress bar as one output per frame (each starting with a carriage
    return) on stdout, a figure between two prints, the kernel's warning and a real warning on stderr."""
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("work()", execution_count=3)
    cell.outputs = [
        stream("loading\n"),
        stream("\rtokenizing:   0%|          | 0/300 [00:00<?, ? texts/s]"),
        stream("\rtokenizing:  50%|█████     | 150/300 [00:01<00:01, 149.9 texts/s]"),
        stream("\rtokenizing: 100%|██████████| 300/300 [00:02<00:00, 150.1 texts/s]"),
        stream("\n"),
        stream(WARNING, "stderr"),
        stream("UserWarning: a real warning\n", "stderr"),
        nbformat.v4.new_output("display_data", data={"text/plain": "<Figure>"}),
        stream("epoch 1: 10%|#", "stdout"),
        stream("\repoch 1: 100%|##########|\ndone\n", "stdout"),
    ]
    notebook.cells = [nbformat.v4.new_markdown_cell("# crafted"), cell]
    return notebook


def test_progress_frames_collapse_to_the_final_line_and_the_kernel_warning_goes():
    notebook = crafted_notebook()
    assert execution.clean_outputs(notebook) == 6  # 6 merged into the stream before them, none left empty
    outputs = notebook.cells[1].outputs
    assert [(output.output_type, output.get("name")) for output in outputs] == [
        ("stream", "stdout"), ("stream", "stderr"), ("display_data", None), ("stream", "stdout")]
    assert outputs[0].text == "loading\ntokenizing: 100%|██████████| 300/300 [00:02<00:00, 150.1 texts/s]\n"
    assert outputs[1].text == "UserWarning: a real warning\n"
    assert outputs[3].text == "epoch 1: 100%|##########|\ndone\n"
    assert not any("\r" in output.get("text", "") for output in outputs)


def test_a_stream_left_empty_is_dropped():
    """The kernel's warning alone on stderr (after a figure, so merged with nothing): nothing is left of it."""
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("work()", execution_count=1)
    cell.outputs = [stream("result\n"), nbformat.v4.new_output("display_data", data={"text/plain": "<Figure>"}),
                    stream(WARNING, "stderr")]
    notebook.cells = [cell]
    assert execution.clean_outputs(notebook) == 1
    assert [(output.output_type, output.get("name")) for output in cell.outputs] == [
        ("stream", "stdout"), ("display_data", None)]


def test_stored_outputs_read_by_nbval_as_the_fresh_ones():
    """nbval merges a cell's streams and applies carriage returns before comparing; what is stored after cleaning
    must come out of that the same as the raw outputs of a fresh run (the kernel warning aside, which the
    sanitize file masks)."""
    raw = crafted_notebook()
    raw.cells[1].outputs = [output for output in raw.cells[1].outputs if WARNING not in output.get("text", "")]
    cleaned = copy.deepcopy(raw)
    execution.clean_outputs(cleaned)
    assert coalesce_streams(copy.deepcopy(cleaned.cells[1].outputs)) == coalesce_streams(
        copy.deepcopy(raw.cells[1].outputs))


def test_text_without_carriage_returns_is_kept_as_it_is():
    text = "a\tb  \n\nc \\r not a carriage return\n"
    assert execution.final_text(text) == text
    assert execution.final_text("open bar 3%\r") == "open bar 3%\r"  # nothing written over it yet: kept, as nbval


# ------------------------------------------------------------------------------------------------ the run

BAR = ("import sys\nfrom tqdm import tqdm\n"
       "for _ in tqdm(range(50), file=sys.stdout, mininterval=0, miniters=1, desc='steps'):\n    pass\n"
       "for _ in tqdm(range(5), mininterval=0, desc='on stderr'):\n    pass\nprint('after the bars')")


@pytest.fixture
def toy_course(tmp_path):
    """Two notebooks that print progress bars, a third that only the full profile runs, and two profiles."""
    notebooks = tmp_path / "notebooks"
    (notebooks / "params").mkdir(parents=True)
    write_notebook(notebooks / "00_first.ipynb", 'run_dir = "../runs/lab"\nseed = 0', body=BAR)
    write_notebook(notebooks / "01_second.ipynb", 'run_dir = "../runs/lab"\nseed = 0',
                   body="print('second', seed)")
    write_notebook(notebooks / "02_appendix.ipynb", 'run_dir = "../runs/lab"\nextra = 1', body="print(extra)")
    appendix = nbformat.read(notebooks / "02_appendix.ipynb", as_version=4)
    appendix.metadata["tl_course"] = {"profiles": ["full"]}
    nbformat.write(appendix, notebooks / "02_appendix.ipynb")
    (notebooks / "params" / "quick.yaml").write_text("# the defaults\n")
    (notebooks / "params" / "full.yaml").write_text("seed: 4\nextra: 2\n")
    return notebooks


def identity_of(path):
    return execution.run_identity(nbformat.read(path, as_version=4))


def test_executed_copies_hold_the_final_bars_and_their_run(toy_course, tmp_path):
    out = tmp_path / "out"
    manifest = run.execute(run.plan("quick", run_dir=out, notebooks_dir=toy_course), log=quiet)
    executed = nbformat.read(out / "00_first.ipynb", as_version=4)
    outputs = executed.cells[-1].outputs
    names = [output.name for output in outputs]
    assert all(first != second for first, second in zip(names, names[1:])), f"consecutive streams merged: {names}"
    text = {name: "".join(output.text for output in outputs if output.name == name) for name in names}
    assert text["stdout"].startswith("steps: 100%|") and text["stdout"].endswith("\nafter the bars\n")
    assert text["stdout"].count("\n") == 2 and text["stderr"].count("\n") == 1, "one line per bar: its last frame"
    assert text["stderr"].startswith("on stderr: 100%|") and "\r" not in text["stdout"] + text["stderr"]
    assert "encryption" not in (out / "00_first.ipynb").read_text()
    identity = identity_of(out / "00_first.ipynb")
    assert identity == {**manifest["run"], "profile": "quick"} and identity["id"]
    assert identity_of(out / "01_second.ipynb") == identity
    assert run.executed_status(out, run.discover_notebooks(toy_course)[0], {"run_dir": str(out)}) == "complete"


def test_a_resumed_run_keeps_its_id_and_a_notebook_run_again_alone_gets_another(toy_course, tmp_path):
    out = tmp_path / "out"
    first = run.execute(run.plan("quick", run_dir=out, notebooks_dir=toy_course), log=quiet)["run"]["id"]
    (out / "01_second.ipynb").unlink()  # as if Ctrl-C had stopped the run in 01
    assert run.execute(run.plan("quick", run_dir=out, notebooks_dir=toy_course), log=quiet)["run"]["id"] == first
    assert identity_of(out / "01_second.ipynb")["id"] == first
    # 00 edited and run again alone: 01's copy is now older than what it read, so 00 belongs to another run
    os.utime(toy_course / "00_first.ipynb", (os.path.getmtime(out / "01_second.ipynb") + 5,) * 2)
    run.execute(run.plan("quick", only="00", run_dir=out, notebooks_dir=toy_course), log=quiet)
    assert identity_of(out / "00_first.ipynb")["id"] != first == identity_of(out / "01_second.ipynb")["id"]
    # the whole chain again from 00: one run again
    os.utime(toy_course / "00_first.ipynb", (os.path.getmtime(out / "01_second.ipynb") + 10,) * 2)
    latest = run.execute(run.plan("quick", run_dir=out, notebooks_dir=toy_course), log=quiet)["run"]["id"]
    assert identity_of(out / "00_first.ipynb")["id"] == identity_of(out / "01_second.ipynb")["id"] == latest
    forced = run.execute(run.plan("quick", run_dir=out, notebooks_dir=toy_course), log=quiet, force=True)
    assert forced["run"]["id"] != latest, "--force starts a new run"
    other = run.execute(run.plan("quick", {"seed": 5}, run_dir=out, notebooks_dir=toy_course), log=quiet)
    assert other["run"]["id"] != forced["run"]["id"], "other parameters: another run"
    assert identity_of(out / "00_first.ipynb") == identity_of(out / "01_second.ipynb") == {**other["run"],
                                                                                            "profile": "quick"}


def test_an_appendix_runs_only_in_its_profiles_or_when_named(toy_course, tmp_path):
    stems = lambda plan: [nb.stem for nb in plan.notebooks]  # noqa: E731
    assert stems(run.plan("quick", run_dir=tmp_path / "q", notebooks_dir=toy_course)) == ["00_first", "01_second"]
    assert stems(run.plan("full", run_dir=tmp_path / "f", notebooks_dir=toy_course)) == [
        "00_first", "01_second", "02_appendix"]
    assert stems(run.plan("quick", only="02", run_dir=tmp_path / "a", notebooks_dir=toy_course)) == ["02_appendix"]
    notebooks = {nb.stem: nb for nb in run.discover_notebooks(toy_course)}
    assert notebooks["02_appendix"].profiles == ["full"] and notebooks["00_first"].profiles is None
    assert not notebooks["02_appendix"].runs_in("quick") and notebooks["00_first"].runs_in("smoke")


# ----------------------------------------------------------------------------------- committing notebooks

def test_commit_copies_one_whole_quick_run_over_the_notebooks(toy_course, tmp_path, capsys):
    out = tmp_path / "out"
    manifest = run.execute(run.plan("quick", run_dir=out, notebooks_dir=toy_course), log=quiet)
    before = {path.name: nbformat.read(path, as_version=4) for path in toy_course.glob("0*.ipynb")}
    assert run.main(["commit", str(out), "--notebooks", str(toy_course)]) == 0
    assert "committed 2 notebook(s)" in capsys.readouterr().out
    for name in ("00_first.ipynb", "01_second.ipynb"):
        committed = nbformat.read(toy_course / name, as_version=4)
        assert [cell.source for cell in committed.cells] == [cell.source for cell in before[name].cells], (
            "the cells of the notebook, without the one papermill injected")
        assert committed.metadata["tl_course"]["run"] == {**manifest["run"], "profile": "quick", "parameters": {}}
        assert "papermill" not in committed.metadata and "language_info" in committed.metadata
        code = [cell for cell in committed.cells if cell.cell_type == "code"]
        assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
        assert all(not {"execution", "papermill"} & set(cell.metadata) for cell in committed.cells)
        assert (toy_course / name).read_text().endswith("}\n")
    assert nbformat.read(toy_course / "01_second.ipynb", as_version=4).cells[-1].outputs[0].text == "second 0\n"
    assert nbformat.read(toy_course / "02_appendix.ipynb", as_version=4) == before["02_appendix.ipynb"], (
        "the appendix is not part of the quick run: left as it is")


def unchanged(notebooks):
    return {path.name: path.read_bytes() for path in notebooks.glob("0*.ipynb")}


@pytest.mark.parametrize("case, message", [
    ("override", r"00_first.ipynb: ran with \{'seed': 3\}, but the quick profile gives it \{\}"),
    ("edited", r"01_second.ipynb: its cells differ from the notebook's: it was edited after the run"),
    ("missing", r"01_second.ipynb: it was not run"),
    ("two runs", r"the notebooks come from different runs: 00_first.ipynb \S+, 01_second.ipynb \S+"),
    ("profile", r"is a run of profile 'full', not 'quick'"),
])
def test_commit_refuses_anything_but_one_complete_quick_run(toy_course, tmp_path, case, message):
    out = tmp_path / "out"
    overrides = {"seed": 3} if case == "override" else {}
    run.execute(run.plan("full" if case == "profile" else "quick", overrides, run_dir=out,
                         notebooks_dir=toy_course), log=quiet)
    if case == "edited":
        notebook = nbformat.read(toy_course / "01_second.ipynb", as_version=4)
        notebook.cells[-1].source = "print('changed')"
        nbformat.write(notebook, toy_course / "01_second.ipynb")
    elif case == "missing":
        (out / "01_second.ipynb").unlink()
    elif case == "two runs":
        run.execute(run.plan("quick", only="01", run_dir=out, notebooks_dir=toy_course), log=quiet, force=True)
    before = unchanged(toy_course)
    with pytest.raises(execution.CommitError, match=message) as raised:
        execution.commit_notebooks(out, toy_course)
    assert "make notebooks" in str(raised.value)
    assert unchanged(toy_course) == before, "nothing is written unless everything passes"


def test_commit_on_the_command_line_says_what_is_wrong(toy_course, tmp_path, capsys):
    assert run.main(["commit", str(tmp_path / "nothing"), "--notebooks", str(toy_course)]) == 2
    error = capsys.readouterr().err
    assert "00_first.ipynb: it was not run" in error and "make notebooks" in error


def test_an_appendix_run_into_the_same_folder_is_committed_with_the_chain(toy_course, tmp_path):
    out = tmp_path / "out"
    manifest = run.execute(run.plan("quick", run_dir=out, notebooks_dir=toy_course), log=quiet)
    run.execute(run.plan("quick", only="02", run_dir=out, notebooks_dir=toy_course), log=quiet)
    written = execution.commit_notebooks(out, toy_course)
    assert [path.name for path in written] == ["00_first.ipynb", "01_second.ipynb", "02_appendix.ipynb"]
    appendix = nbformat.read(toy_course / "02_appendix.ipynb", as_version=4)
    assert appendix.metadata["tl_course"]["run"] == {**manifest["run"], "profile": "quick", "parameters": {}}
    assert appendix.cells[-1].outputs[0].text == "1\n", "the appendix's own defaults"


def test_commit_only_adds_an_appendix_to_the_committed_run_and_leaves_the_rest(toy_course, tmp_path, capsys):
    out = tmp_path / "out"
    manifest = run.execute(run.plan("quick", run_dir=out, notebooks_dir=toy_course), log=quiet)
    execution.commit_notebooks(out, toy_course)
    chain = {name: data for name, data in unchanged(toy_course).items() if name != "02_appendix.ipynb"}
    # An appendix run on the same artifacts but in another folder belongs to another run: refused.
    other = tmp_path / "other"
    run.execute(run.plan("quick", only="02", run_dir=other, notebooks_dir=toy_course), log=quiet)
    before = unchanged(toy_course)
    with pytest.raises(execution.CommitError, match=r"different runs: 02_appendix.ipynb \S+, the committed "
                                                    r"00_first.ipynb " + manifest["run"]["id"]):
        execution.commit_notebooks(other, toy_course, only="02")
    assert unchanged(toy_course) == before
    run.execute(run.plan("quick", only="02", run_dir=out, notebooks_dir=toy_course), log=quiet)
    assert run.main(["commit", str(out), "--notebooks", str(toy_course), "--only", "02"]) == 0
    assert "committed 1 notebook(s)" in capsys.readouterr().out
    assert {name: data for name, data in unchanged(toy_course).items() if name != "02_appendix.ipynb"} == chain
    assert identity_of(toy_course / "02_appendix.ipynb")["id"] == manifest["run"]["id"]


def test_the_record_of_run_json_agrees_with_the_copies(toy_course, tmp_path):
    out = tmp_path / "out"
    manifest = run.execute(run.plan("quick", run_dir=out, notebooks_dir=toy_course), log=quiet)
    recorded = json.loads((out / "run.json").read_text())["run"]
    assert set(recorded) == {"id", "started", "profile"} and recorded["profile"] == "quick"
    copies = sorted(out.glob("0*.ipynb"))
    assert copies and all(identity_of(copy) == recorded for copy in copies), "every executed copy names this run"
