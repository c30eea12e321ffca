"""The notebook runner (tl_core/run.py): parameter validation before anything runs, and real papermill runs."""

import json

import nbformat
import pytest

from tl_core import execution, parameters, run
from conftest import REPO


def write_notebook(path, parameters_source, body="print(run_dir)"):
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell(parameters_source)
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [nbformat.v4.new_markdown_cell("# test"), parameters, nbformat.v4.new_code_cell(body)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


@pytest.fixture
def course(tmp_path):
    """A course of two tiny notebooks and two profiles: 00 writes an artifact, 01 reads it and records metrics."""
    notebooks = tmp_path / "notebooks"
    (notebooks / "params").mkdir(parents=True)
    write_notebook(notebooks / "00_first.ipynb",
                   'run_dir = "../runs/lab"\nseed = 0\nname = "x"\nrate = 0.5\n'
                   'folder = None  # type: Optional[str] a folder\nmode = "fast"  # one of: fast, slow',
                   body="import pathlib\npathlib.Path(run_dir).mkdir(parents=True, exist_ok=True)\n"
                        "pathlib.Path(run_dir, 'artifact.txt').write_text(f'{name}-{seed}')")
    write_notebook(notebooks / "01_second.ipynb", 'run_dir = "../runs/lab"\nseed = 0\nepochs = 2\nn_labels = 10',
                   body="import json, pathlib\nfrom tl_core.artifacts import update_metrics, require\n"
                        "artifact = require(pathlib.Path(run_dir, 'artifact.txt'), '00_first.ipynb').read_text()\n"
                        "pathlib.Path(run_dir, 'out.json').write_text(json.dumps({'seed': seed, 'epochs': epochs}))\n"
                        "update_metrics(run_dir, 'toy', {'artifact': artifact, 'accuracy': 0.5 + seed / 8})\n"
                        "update_metrics(run_dir, 'transfer', {'target': 'toy', 'results': [\n"
                        "    {'strategy': 'scratch', 'n_labels': n_labels, 'seed': s, 'accuracy': 0.6 + s / 100}\n"
                        "    for s in range(3)]})")
    (notebooks / "params" / "quick.yaml").write_text("# defaults\n")
    (notebooks / "params" / "full.yaml").write_text("epochs: 5\n")
    return notebooks


def quiet(*args, **kwargs):
    pass


def test_profiles_and_overrides_reach_the_right_notebooks(course, tmp_path):
    planned = run.plan("full", {"seed": 3}, run_dir=tmp_path / "out", notebooks_dir=course)
    assert planned.notebook_parameters["00_first"] == {"seed": 3, "run_dir": str(tmp_path / "out")}
    assert planned.notebook_parameters["01_second"] == {"epochs": 5, "seed": 3, "run_dir": str(tmp_path / "out")}


@pytest.mark.parametrize("overrides,message", [
    ({"epoch": 3}, r"unknown parameter 'epoch'; the selected notebooks take: epochs, folder, mode, n_labels, name, "
                   r"rate, seed"),
    ({"mode": "medium"}, r"mode='medium' is not one of: fast, slow"),
    ({"n_labels": 0}, r"n_labels=0: must be a whole number >= 4"),
    ({"seed": "three"}, r"seed='three' \(str\) but 00_first.ipynb expects int"),
    ({"seed": True}, r"expects int"),
    ({"rate": "fast"}, r"expects float"),
    ({"folder": 3}, r"expects Optional\[str\]"),
    ({"run_dir": "x"}, r"run_dir is set by the runner"),
])
def test_bad_parameters_fail_before_anything_runs(course, tmp_path, overrides, message):
    with pytest.raises(run.ParameterError, match=message):
        run.plan("quick", overrides, run_dir=tmp_path / "out", notebooks_dir=course)
    assert not (tmp_path / "out").exists()


def test_good_values_of_each_type_pass(course, tmp_path):
    """An int where a float is declared, None and a str for Optional[str], a str for str: accepted, and handed to the
    notebook that declares them as they were given (types included), with run_dir; 01 takes none of them."""
    out = str((tmp_path / "o").resolve())
    planned = run.plan("quick", {"rate": 1, "folder": None, "name": "y"}, run_dir=tmp_path / "o", notebooks_dir=course)
    assert planned.parameters == {"rate": 1, "folder": None, "name": "y"}
    first = planned.notebook_parameters["00_first"]
    assert first == {"rate": 1, "folder": None, "name": "y", "run_dir": out}
    assert [type(first[name]) for name in ("rate", "folder", "name", "run_dir")] == [int, type(None), str, str]
    assert planned.notebook_parameters["01_second"] == {"run_dir": out}
    planned = run.plan("quick", {"folder": "/data"}, run_dir=tmp_path / "o", notebooks_dir=course)
    assert planned.notebook_parameters == {"00_first": {"folder": "/data", "run_dir": out},
                                           "01_second": {"run_dir": out}}


def test_parameter_of_an_unselected_notebook_is_unknown(course, tmp_path):
    with pytest.raises(run.ParameterError, match="unknown parameter 'epochs'"):
        run.plan("quick", {"epochs": 1}, only="00", run_dir=tmp_path / "o", notebooks_dir=course)


def test_profile_settings_of_unselected_notebooks_are_left_out(course, tmp_path):
    planned = run.plan("full", only="00", run_dir=tmp_path / "o", notebooks_dir=course)  # full.yaml: epochs: 5 (01)
    assert planned.parameters == {} and planned.notebook_parameters["00_first"] == {"run_dir": str(tmp_path / "o")}
    (course / "params" / "full.yaml").write_text("epochs: 5\nepoch: 3\n")
    with pytest.raises(run.ParameterError, match="unknown parameter 'epoch'"):  # known to no notebook: an error
        run.plan("full", only="00", run_dir=tmp_path / "o", notebooks_dir=course)
    (course / "params" / "full.yaml").write_text("epochs: many\n")
    with pytest.raises(run.ParameterError, match="epochs='many'"):  # a bad value for an unselected one too
        run.plan("full", only="00", run_dir=tmp_path / "o", notebooks_dir=course)


def test_unknown_profile_and_notebook(course):
    with pytest.raises(run.ParameterError, match=r"no profile 'huge'.*profiles: full, quick"):
        run.plan("huge", notebooks_dir=course)
    with pytest.raises(run.ParameterError, match=r"--only: no notebook 07"):
        run.plan("quick", only="00,07", notebooks_dir=course)


def test_override_values_are_read_as_yaml():
    assert run.parse_value("3") == 3
    assert run.parse_value("[50, 100]") == [50, 100]
    assert run.parse_value("amazon:books") == "amazon:books"
    assert run.parse_value("null") is None
    assert run.parse_sweep(["target=amazon:books,amazon:dvd", "n_labels=100,400"]) == {
        "target": ["amazon:books", "amazon:dvd"], "n_labels": [100, 400]}
    with pytest.raises(run.ParameterError, match="NAME=VALUE1,VALUE2"):
        run.parse_sweep(["n_labels"])


def test_execute_runs_in_order_and_records_the_run(course, tmp_path):
    planned = run.plan("full", {"seed": 7}, run_dir=tmp_path / "out", notebooks_dir=course)
    manifest = run.execute(planned, log=quiet)
    out = tmp_path / "out"
    assert json.loads((out / "out.json").read_text()) == {"seed": 7, "epochs": 5}
    assert json.loads((out / "metrics.json").read_text())["toy"] == {"artifact": "x-7", "accuracy": 1.375}
    executed = nbformat.read(out / "01_second.ipynb", as_version=4)
    assert any("injected-parameters" in cell.metadata.get("tags", []) for cell in executed.cells)
    assert {name: record["status"] for name, record in manifest["notebooks"].items()} == {
        "00_first": "complete", "01_second": "complete"}
    assert json.loads((out / "run.json").read_text())["parameters"] == {"epochs": 5, "seed": 7}


def test_failing_notebook_is_recorded(course, tmp_path):
    write_notebook(course / "02_broken.ipynb", 'run_dir = "x"', body="raise ValueError('boom')")
    planned = run.plan("quick", run_dir=tmp_path / "out", notebooks_dir=course)
    with pytest.raises(Exception, match="boom"):
        run.execute(planned, log=quiet)
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert manifest["notebooks"]["02_broken"]["status"] == "failed"
    assert "boom" in manifest["notebooks"]["02_broken"]["error"]


@pytest.mark.slow
def test_setup_notebook_runs_with_papermill(tmp_path, shared_data_dir):
    """`make run` in small: the real 00_setup notebook, executed into a run directory."""
    assert run.main(["--only", "00", "--run-dir", str(tmp_path / "quick")]) == 0
    assert (tmp_path / "quick" / "00_setup.ipynb").exists()
    report = json.loads((tmp_path / "quick" / "environment.json").read_text())
    assert report["extension"]["built"] and report["data"]["datasets"]["imdb"]["found"]


def test_cli_rejects_unknown_parameter(capsys):
    assert run.main(["-p", "no_such_parameter", "1"]) == 2
    assert "unknown parameter 'no_such_parameter'" in capsys.readouterr().err


def test_every_number_and_list_a_notebook_declares_has_a_range():
    """A parameter whose range nobody checks reaches the notebook as it is (lm_finetune_epochs=0, bptt=-5): every
    number or list the notebooks declare has a rule (parameters.RULES) or lists its choices ("one of: ...")."""
    unchecked = sorted({name for notebook in run.discover_notebooks(REPO / "notebooks")
                        for name, info in notebook.parameters.items()
                        if name != "run_dir" and name not in parameters.RULES
                        and not parameters.allowed_values(info.get("help", ""))
                        and not isinstance(info.get("default"), (str, bool)) and info.get("default") != "None"
                        and "str" not in info.get("inferred_type_name", "")})
    assert not unchecked, f"parameters without a range check: {unchecked}"
    for name, value, complaint in (("lm_finetune_epochs", 0, ">= 1"), ("lm_finetune_lr", -1.0, r"\(0, inf\)"),
                                   ("bptt", -5, ">= 0"), ("fdu_n_labels", [2], ">= 4"), ("lm_cutoffs", [0], ">= 1"),
                                   ("fdu_domains", ["kitchen"], "one of: apparel")):
        with pytest.raises(parameters.ParameterError, match=rf"{name}=.*{complaint}"):
            parameters.check({name: value})
    assert parameters.check({"fdu_domains": [], "bptt": 0}) == {"fdu_domains": [], "bptt": 0}


def test_repository_profiles_are_valid():
    notebooks = run.discover_notebooks(REPO / "notebooks")
    for profile in ("quick", "full", "gpu"):
        run.check_parameters(notebooks, run.load_profile(profile))


def test_rerun_skips_complete_notebooks_and_redoes_stale_ones(course, tmp_path):
    out = tmp_path / "out"
    run.execute(run.plan("quick", run_dir=out, notebooks_dir=course), log=quiet)
    lines = []
    run.execute(run.plan("quick", run_dir=out, notebooks_dir=course), log=lambda text, end="": lines.append(text))
    assert len(lines) == 2 and all("complete already, skipped" in line for line in lines), lines
    lines.clear()  # another value of seed: both notebooks are stale and run again
    run.execute(run.plan("quick", {"seed": 2}, run_dir=out, notebooks_dir=course),
                log=lambda text, end="": lines.append(text))
    assert lines and not any("skipped" in line for line in lines)
    assert json.loads((out / "out.json").read_text())["seed"] == 2


def test_report_and_metrics(course, tmp_path):
    out = tmp_path / "out"
    run.execute(run.plan("quick", {"seed": 1}, run_dir=out, notebooks_dir=course), log=quiet)
    report = (out / "report.md").read_text()
    assert "| 00_first | complete |" in report and "[html](html/01_second.html)" in report
    assert "| best at 10 labels | scratch 61.0 ± 1.0 % (3 seeds) |" in report  # mean ± std of 0.60, 0.61, 0.62
    assert "toy.accuracy" not in report, "only the headline numbers: the rest stays in metrics.json"
    assert (out / "html" / "00_first.html").read_text().startswith("<!DOCTYPE html>")


def test_reuse_links_the_artifacts_of_an_earlier_run(course, tmp_path):
    base = tmp_path / "base"
    run.execute(run.plan("quick", {"name": "base"}, run_dir=base, notebooks_dir=course), log=quiet)
    with pytest.raises(Exception, match="00_first.ipynb"):  # without --reuse, 01 alone misses 00's artifact
        run.execute(run.plan("quick", only="01", run_dir=tmp_path / "alone", notebooks_dir=course), log=quiet)
    reused = tmp_path / "reused"
    run.execute(run.plan("quick", {"epochs": 9}, only="01", run_dir=reused, notebooks_dir=course, reuse=base),
                log=quiet)
    assert json.loads((reused / "metrics.json").read_text())["toy"]["artifact"] == "base-0"
    assert (reused / "artifact.txt").stat().st_ino == (base / "artifact.txt").stat().st_ino  # linked, not copied
    assert not (reused / "00_first.ipynb").exists()


@pytest.mark.slow
def test_sweep_runs_in_parallel_and_resumes(course, tmp_path, capsys):
    arguments = ["--notebooks", str(course), "--run-dir", str(tmp_path / "sweep"), "--sweep", "seed=1,2",
                 "--jobs", "2"]
    assert run.main(arguments) == 0
    first = capsys.readouterr().out
    assert first.count(": done in") == 2 and "2 of 2 runs complete" in first
    for seed in (1, 2):
        metrics = json.loads((tmp_path / "sweep" / f"seed={seed}" / "metrics.json").read_text())
        assert metrics["toy"]["artifact"] == f"x-{seed}"
    (tmp_path / "sweep" / "seed=2" / "01_second.ipynb").unlink()  # as if Ctrl-C had stopped that run
    assert run.main(arguments) == 0
    second = capsys.readouterr().out
    assert "seed=1: complete already, skipped" in second and "seed=2: done in" in second


def test_a_failing_sweep_point_is_reported_and_logged(course, tmp_path, capsys):
    """One point of the sweep fails (seed=2): the other completes, the summary counts 1 of 2, the failed point's
    output is in its runner.log, and the exit code says something failed."""
    write_notebook(course / "02_check.ipynb", 'run_dir = "../runs/lab"\nseed = 0',
                   body="if seed == 2:\n    raise ValueError('seed two is refused')")
    arguments = ["--notebooks", str(course), "--run-dir", str(tmp_path / "sweep"), "--sweep", "seed=1,2"]
    assert run.main(arguments) == 1
    out = capsys.readouterr().out
    assert "seed=1: done in" in out and "seed=2: FAILED after" in out and "1 of 2 runs complete" in out
    assert "seed two is refused" in (tmp_path / "sweep" / "seed=2" / execution.RUNNER_LOG).read_text()
    assert not (tmp_path / "sweep" / "seed=1" / execution.RUNNER_LOG).exists()


def test_sweep_values_are_checked_before_anything_runs(course, tmp_path, capsys):
    assert run.main(["--notebooks", str(course), "--run-dir", str(tmp_path / "s"),
                     "--sweep", "mode=fast,turbo"]) == 2
    assert "mode='turbo' is not one of: fast, slow" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_dry_run_prints_commands_a_scheduler_can_run(course, tmp_path, capsys):
    import subprocess

    base = tmp_path / "base"
    run.execute(run.plan("quick", run_dir=base, notebooks_dir=course), log=quiet)
    assert run.main(["--notebooks", str(course), "--only", "01", "--reuse", str(base), "--run-dir",
                     str(tmp_path / "sweep"), "--sweep", "n_labels=5,7", "--dry-run"]) == 0
    commands = capsys.readouterr().out.strip().splitlines()
    assert len(commands) == 2 and all(" -m papermill " in command for command in commands)
    assert not (tmp_path / "sweep").exists(), "a dry run executes nothing"
    subprocess.run(["bash", "-c", commands[1]], check=True, capture_output=True)
    done = tmp_path / "sweep" / "n_labels=7"
    assert json.loads((done / "metrics.json").read_text())["transfer"]["results"][0]["n_labels"] == 7
    assert (done / "report.md").exists() and (done / "run.json").exists()
    planned = run.plan("quick", {"n_labels": 7}, only="01", run_dir=done, notebooks_dir=course, reuse=base)
    assert run.executed_status(done, planned.notebooks[0], planned.notebook_parameters["01_second"]) == "complete"


def test_compare_tabulates_runs(course, tmp_path, capsys):
    for seed in (1, 2):
        run.execute(run.plan("quick", {"seed": seed}, run_dir=tmp_path / f"s{seed}", notebooks_dir=course),
                    log=quiet)
    assert run.main(["compare", str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(tmp_path / "c.md")]) == 0
    table = capsys.readouterr().out
    assert "| run | s1 | s2 |" in table and "| param.seed | 1 | 2 |" in table
    assert "| toy.accuracy | 0.625 | 0.75 |" in table
    assert (tmp_path / "c.md").read_text().strip() == table.strip()


def test_target_is_checked_and_a_relative_path_made_absolute(tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    (notebooks / "params").mkdir(parents=True)
    (notebooks / "params" / "quick.yaml").write_text("")
    write_notebook(notebooks / "05_target.ipynb", 'run_dir = "x"\ntarget = "amazon:kitchen"  # a target spec')
    with pytest.raises(run.ParameterError, match=r"target='amazon:toys': unknown Amazon domain 'toys'"):
        run.plan("quick", {"target": "amazon:toys"}, notebooks_dir=notebooks)
    with pytest.raises(run.ParameterError, match=r"target file .*mine.csv does not exist"):
        run.plan("quick", {"target": "mine.csv"}, notebooks_dir=notebooks)
    (tmp_path / "mine.csv").write_text("text,label\ngood,1\nbad,0\n")
    monkeypatch.chdir(tmp_path)
    planned = run.plan("quick", {"target": "mine.csv"}, run_dir=tmp_path / "o", notebooks_dir=notebooks)
    assert planned.notebook_parameters["05_target"]["target"] == str(tmp_path / "mine.csv")
    assert run.plan("quick", {"target": "amazon:kitchen_&_housewares"}, run_dir=tmp_path / "o",
                    notebooks_dir=notebooks).parameters["target"] == "amazon:kitchen"


# ------------------------------------------------------------------------------------------- resuming


def test_a_notebook_whose_kernel_died_runs_again_on_resume(course, tmp_path):
    """As the out-of-memory killer does: the kernel dies in 01's cell. papermill still marks the copy finished
    without an exception; the rerun must not skip it."""
    write_notebook(course / "01_second.ipynb", 'run_dir = "x"\nseed = 0',
                   body="import os, pathlib, signal\nmarker = pathlib.Path(run_dir, 'died-once')\n"
                        "if not marker.exists():\n    marker.write_text('x')\n"
                        "    os.kill(os.getpid(), signal.SIGKILL)\n"
                        "pathlib.Path(run_dir, 'second.txt').write_text('done')")
    out = tmp_path / "out"
    with pytest.raises(Exception):
        run.execute(run.plan("quick", run_dir=out, notebooks_dir=course), log=quiet)
    assert json.loads((out / "run.json").read_text())["notebooks"]["01_second"]["status"] == "failed"
    lines = []
    run.execute(run.plan("quick", run_dir=out, notebooks_dir=course), log=lambda text, end="": lines.append(text))
    assert lines[0] == "[1/2] 00_first: complete already, skipped"
    assert lines[1].startswith("[2/2] 01_second (again: failed last time)") and lines[2].startswith("done in")
    assert (out / "second.txt").read_text() == "done"


def test_a_copy_with_a_cell_that_never_ran_is_not_complete(course, tmp_path):
    """The record alone is not enough either: a copy whose last cell has no reply (papermill marks such cells
    completed anyway) runs again."""
    import nbformat as nbf

    out = tmp_path / "out"
    planned = run.plan("quick", run_dir=out, notebooks_dir=course)
    run.execute(planned, log=quiet)
    nb = planned.notebooks[1]
    assert run.executed_status(out, nb, planned.notebook_parameters[nb.stem]) == "complete"
    executed = nbf.read(out / nb.path.name, as_version=4)
    del executed.cells[-1].metadata["execution"]["shell.execute_reply"]
    nbf.write(executed, out / nb.path.name)
    assert run.executed_status(out, nb, planned.notebook_parameters[nb.stem]) == "incomplete"


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_the_notebook_runs_again(course, tmp_path):
    """Ctrl-C in a terminal signals the runner's process group (the kernel has a session of its own): one line
    says what stopped and how to resume, no traceback; the next run does the notebook again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    write_notebook(course / "00_first.ipynb", 'run_dir = "x"\nseed = 0',
                   body="import pathlib, time\nmarker = pathlib.Path(run_dir, 'interrupted-once')\n"
                        "if not marker.exists():\n    marker.write_text('x')\n    for _ in range(1200):\n"
                        "        time.sleep(0.1)\npathlib.Path(run_dir, 'first.txt').write_text('done')")
    out = tmp_path / "out"
    arguments = ["--notebooks", str(course), "--run-dir", str(out), "--only", "00"]
    process = subprocess.Popen([sys.executable, "-m", "tl_core.run", *arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out / "interrupted-once").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 130
    lines = [line for line in errors.splitlines() if line.strip()]
    assert len(lines) == 1, errors
    assert lines[0].startswith("interrupted: 00_first stopped after") and "Resume with: python -m tl_core.run" in (
        lines[0]) and str(out) in lines[0]
    assert json.loads((out / "run.json").read_text())["notebooks"]["00_first"]["status"] == "interrupted"
    assert not (out / "first.txt").exists()
    assert run.main(arguments) == 0
    assert (out / "first.txt").read_text() == "done"


# ---------------------------------------------------------------------------------------------- sweeps


def test_sweep_values_that_read_alike_get_folders_of_their_own():
    folders = run.sweep_folders({"target": ["/d/a b.csv", "/d/a-b.csv", "amazon:books"], "n_labels": [100]})
    assert len(set(folders)) == 3
    assert folders[2] == "n_labels=100__target=amazon-books"  # a readable name stays where nothing collides
    assert all(folder.startswith("n_labels=100__target=d-a-b.csv-") for folder in folders[:2])
    assert len(set(f.lower() for f in run.sweep_folders({"name": ["Big", "big"]}))) == 2  # case-blind disks
    unreadable = run.sweep_folders({"name": ["///"]})[0]
    assert unreadable.startswith("name=") and len(unreadable) > len("name=")  # a value that reads as nothing


@pytest.mark.slow
def test_colliding_sweep_values_run_in_two_folders_and_dry_run_names_the_same(course, tmp_path, capsys):
    arguments = ["--notebooks", str(course), "--only", "00", "--run-dir", str(tmp_path / "sweep"),
                 "--sweep", "name=a b,a-b"]
    assert run.main([*arguments, "--dry-run"]) == 0
    commands = capsys.readouterr().out.strip().splitlines()
    assert run.main(arguments) == 0
    assert "2 of 2 runs complete" in capsys.readouterr().out
    folders = sorted(path for path in (tmp_path / "sweep").iterdir())
    assert len(folders) == 2
    assert sorted(folder.joinpath("artifact.txt").read_text() for folder in folders) == ["a b-0", "a-b-0"]
    for folder in folders:
        assert sum(f"{folder}/00_first.ipynb" in command for command in commands) == 1


@pytest.mark.slow
def test_list_parameters_can_be_swept(course, tmp_path, capsys):
    write_notebook(course / "02_grid.ipynb", 'run_dir = "x"\ngrid = [1, 2]',
                   body="import json, pathlib\npathlib.Path(run_dir, 'grid.json').write_text(json.dumps(grid))")
    assert run.parse_sweep(["grid=[1, 2],[3]", "name=x"]) == {"grid": [[1, 2], [3]], "name": ["x"]}
    assert run.main(["--notebooks", str(course), "--only", "02", "--run-dir", str(tmp_path / "s"),
                     "--sweep", "grid=[1,2],[3]"]) == 0
    assert "2 of 2 runs complete" in capsys.readouterr().out
    assert json.loads((tmp_path / "s" / "grid=3" / "grid.json").read_text()) == [3]
    assert json.loads((tmp_path / "s" / "grid=1-2" / "grid.json").read_text()) == [1, 2]
    with pytest.raises(run.ParameterError, match="not closed"):
        run.parse_sweep(["grid=[1,2"])


# ------------------------------------------------------------------------------------ parameter checks


def test_numbers_in_scientific_notation_are_numbers(course, tmp_path):
    assert run.parse_value("1e-3") == 0.001 and run.parse_value("2E5") == 200000.0
    assert run.parse_value("[1e-3, 5e-4]") == [0.001, 0.0005] and run.parse_value("1.5e-3") == 0.0015
    assert run.parse_value("1e3x") == "1e3x"
    assert run.plan("quick", {"rate": run.parse_value("1e-3")}, run_dir=tmp_path / "o",
                    notebooks_dir=course).parameters == {"rate": 0.001}
    (course / "params" / "full.yaml").write_text("rate: 5e-4\n")
    assert run.plan("full", run_dir=tmp_path / "o", notebooks_dir=course).parameters == {"rate": 0.0005}


@pytest.fixture
def transfer_course(tmp_path):
    """One notebook with the course's transfer parameters and a user's CSV target of 100 rows (a pool of 80)."""
    notebooks = tmp_path / "notebooks"
    (notebooks / "params").mkdir(parents=True)
    (notebooks / "params" / "quick.yaml").write_text("")
    target = tmp_path / "target.csv"
    target.write_text("text,label\n" + "".join(f"review {i},{i % 2}\n" for i in range(100)))
    write_notebook(notebooks / "06_grid.ipynb",
                   f'run_dir = "x"\ntarget = "{target}"\nn_labels = 20\nn_labels_grid = [10, 20]\n'
                   'multiplier_n_labels = 10\nseeds = [1, 2]\nhidden_size = 8\nsource_epochs = 2\nsource_lr = 0.002\n'
                   'val_fraction = 0.1\nembedding_dropout = 0.3\ntransfer_batch_size = 16\nseed = 0\n'
                   'strategies = ["scratch", "finetune"]')
    return notebooks


@pytest.mark.parametrize("overrides, message", [
    ({"hidden_size": 0}, r"hidden_size=0: must be a whole number >= 1"),
    ({"source_epochs": -3}, r"source_epochs=-3: must be a whole number >= 1"),
    ({"val_fraction": 1.5}, r"val_fraction=1.5: must be in \(0, 1\)"),
    ({"val_fraction": 0}, r"val_fraction=0: must be in \(0, 1\)"),
    ({"embedding_dropout": 1.0}, r"embedding_dropout=1.0: must be in \[0, 1\)"),
    ({"transfer_batch_size": 0}, r"transfer_batch_size=0: must be a whole number >= 1"),
    ({"source_lr": 0.0}, r"source_lr=0.0: must be in \(0, inf\)"),
    ({"seed": -1}, r"seed=-1: must be a whole number >= 0"),
    ({"seeds": [1, 1]}, r"seeds=\[1, 1\]: names 1 twice"),
    ({"seeds": []}, r"seeds=\[\]: must be a non-empty list"),
    ({"n_labels_grid": [10, 2]}, r"n_labels_grid=\[10, 2\]: 2 must be a whole number >= 4"),
    ({"n_labels": 100000}, r"n_labels: 100000 labels, but the pool of .*target.csv holds 80 labelled examples"),
    ({"n_labels_grid": [10, 81]}, r"n_labels_grid: 81 labels, but the pool .* holds 80"),
    ({"multiplier_n_labels": 30}, r"multiplier_n_labels=30 must be one of n_labels_grid=\[10, 20\]"),
    ({"strategies": ["finetune"]}, r"strategies=\['finetune'\] must hold 'scratch'"),
])
def test_ranges_and_relations_are_checked_before_anything_runs(transfer_course, tmp_path, overrides, message):
    with pytest.raises(run.ParameterError, match=message):
        run.plan("quick", overrides, run_dir=tmp_path / "out", notebooks_dir=transfer_course)
    assert not (tmp_path / "out").exists()


def test_the_largest_label_count_the_pool_gives_passes(transfer_course, tmp_path):
    planned = run.plan("quick", {"n_labels": 80, "n_labels_grid": [10, 80], "source_lr": 1e-3},
                       run_dir=tmp_path / "o", notebooks_dir=transfer_course)
    assert planned.parameters["n_labels"] == 80


def test_notebooks_and_functions_check_the_same_rules(tmp_path):
    from tl_core import parameters

    target = tmp_path / "t.csv"
    target.write_text("text,label\n" + "".join(f"r {i},{i % 2}\n" for i in range(10)))
    assert parameters.check({"target": str(target), "n_labels": 8, "target_val_fraction": 0.2}) == {
        "target": str(target.resolve()), "n_labels": 8, "target_val_fraction": 0.2}
    with pytest.raises(parameters.ParameterError, match=r"target_val_fraction=1: must be in \(0, 1\)"):
        parameters.check({"target_val_fraction": 1})
    with pytest.raises(parameters.ParameterError, match=r"n_labels: 9 labels, but the pool"):
        parameters.check({"target": str(target), "n_labels": 9})
    with pytest.raises(parameters.ParameterError, match=r"cannot be its own related data"):
        parameters.check({"related_targets": ["amazon:books"]}, defaults={"target": "fdu:books"})


def test_a_malformed_target_file_is_refused_before_anything_runs(transfer_course, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('text,label\n"never closed,1\nok,0\n')
    with pytest.raises(run.ParameterError, match=r"bad.csv line 2: not a well-formed CSV row"):
        run.plan("quick", {"target": str(bad)}, run_dir=tmp_path / "out", notebooks_dir=transfer_course)


def test_fdu_targets_are_valid_specs(tmp_path):
    notebooks = tmp_path / "notebooks"
    (notebooks / "params").mkdir(parents=True)
    (notebooks / "params" / "quick.yaml").write_text("")
    write_notebook(notebooks / "05_target.ipynb", 'run_dir = "x"\ntarget = "amazon:kitchen"  # a target spec')
    assert run.plan("quick", {"target": "fdu:magazines"}, run_dir=tmp_path / "o",
                    notebooks_dir=notebooks).parameters["target"] == "fdu:magazines"
    with pytest.raises(run.ParameterError, match=r"unknown FDU-MTL domain 'toys'"):
        run.plan("quick", {"target": "fdu:toys"}, run_dir=tmp_path / "o", notebooks_dir=notebooks)


# ------------------------------------------------------------------------------- folders and the course


def test_run_dir_naming_a_file_is_a_clear_error(course, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    for run_dir in (tmp_path / "taken", tmp_path / "taken" / "below"):
        assert run.main(["--notebooks", str(course), "--run-dir", str(run_dir)]) == 2
        error = capsys.readouterr().err
        assert f"{tmp_path / 'taken'} is a file, not a folder" in error and "failed" not in error
    assert (tmp_path / "taken").read_text() == "a file"


def test_report_of_a_mistyped_path_is_an_error_and_creates_nothing(course, tmp_path, capsys):
    assert run.main(["report", str(tmp_path / "runs" / "quikc")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    run.execute(run.plan("quick", run_dir=tmp_path / "good", notebooks_dir=course), log=quiet)
    assert run.main(["report", str(tmp_path / "good")]) == 0


def test_the_course_is_found_from_the_current_folder(course, tmp_path, tmp_path_factory, monkeypatch, capsys):
    from tl_core.course import CourseNotFoundError, find_notebooks

    monkeypatch.chdir(course / "params")  # anywhere inside the course
    assert find_notebooks() == course
    assert [nb.stem for nb in run.discover_notebooks()] == ["00_first", "01_second"]
    assert run.plan("quick").run_dir == tmp_path / "runs" / "quick"  # beside notebooks/, not beside tl_core
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # outside the course
    with pytest.raises(CourseNotFoundError, match=r"no course found: neither .*elsewhere0 nor a folder above it"):
        find_notebooks()
    assert run.main(["params"]) == 2 and "--notebooks" in capsys.readouterr().err
    assert find_notebooks(tmp_path) == course  # the course folder given works as well as its notebooks/


def test_notebook_values_are_its_defaults_under_a_profile(course):
    """What code outside the notebooks reads to size things as a profile does: a notebook's own defaults, the
    profile's values for its parameters on top, nothing of another notebook's."""
    from tl_core.course import notebook_values

    quick = notebook_values("01", "quick", course)
    assert quick == {"run_dir": "../runs/lab", "seed": 0, "epochs": 2, "n_labels": 10}
    assert notebook_values("01", "full", course) == {**quick, "epochs": 5}  # full.yaml: epochs 5
    assert notebook_values("00", "full", course)["name"] == "x"
    assert "epochs" not in notebook_values("00", "full", course)  # 01's parameter does not leak into 00
    with pytest.raises(parameters.ParameterError, match="no notebook 07"):
        notebook_values("07", "quick", course)
    with pytest.raises(parameters.ParameterError, match="no profile 'huge'"):
        notebook_values("01", "huge", course)
