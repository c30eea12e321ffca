"""The notebook runner (tl_core/run.py): parameter validation before anything runs, and real papermill runs."""

import json

import nbformat
import pytest

from tl_core import run
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
    ({"n_labels": 0}, r"n_labels=0: must be a whole number >= 1"),
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
    run.plan("quick", {"rate": 1, "folder": None, "name": "y"}, run_dir=tmp_path / "o", notebooks_dir=course)
    run.plan("quick", {"folder": "/data"}, run_dir=tmp_path / "o", notebooks_dir=course)


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


def test_setup_notebook_runs_with_papermill(tmp_path, shared_data_dir):
    """`make run` in small: the real 00_setup notebook, executed into a run directory."""
    assert run.main(["--only", "00", "--run-dir", str(tmp_path / "quick")]) == 0
    assert (tmp_path / "quick" / "00_setup.ipynb").exists()
    report = json.loads((tmp_path / "quick" / "environment.json").read_text())
    assert report["extension"]["built"] and report["data"]["datasets"]["imdb"]["found"]


def test_cli_rejects_unknown_parameter(capsys):
    assert run.main(["-p", "no_such_parameter", "1"]) == 2
    assert "unknown parameter 'no_such_parameter'" in capsys.readouterr().err


def test_repository_profiles_are_valid():
    notebooks = run.discover_notebooks(REPO / "notebooks")
    for profile in ("quick", "full", "gpu"):
        run.check_parameters(notebooks, run.load_profile(profile))


def test_rerun_skips_complete_notebooks_and_redoes_stale_ones(course, tmp_path):
    out = tmp_path / "out"
    run.execute(run.plan("quick", run_dir=out, notebooks_dir=course), log=quiet)
    lines = []
    run.execute(run.plan("quick", run_dir=out, notebooks_dir=course), log=lambda text, end="": lines.append(text))
    assert all("complete already, skipped" in line for line in lines)
    lines.clear()  # another value of seed: both notebooks are stale and run again
    run.execute(run.plan("quick", {"seed": 2}, run_dir=out, notebooks_dir=course),
                log=lambda text, end="": lines.append(text))
    assert not any("skipped" in line for line in lines)
    assert json.loads((out / "out.json").read_text())["seed"] == 2


def test_report_and_metrics(course, tmp_path):
    out = tmp_path / "out"
    run.execute(run.plan("quick", {"seed": 1}, run_dir=out, notebooks_dir=course), log=quiet)
    report = (out / "report.md").read_text()
    assert "| 00_first | complete |" in report and "[html](html/01_second.html)" in report
    assert "| toy.accuracy | 0.625 |" in report and "| toy.artifact | x-1 |" in report
    assert "| scratch | 61.0 ± 1.0 (3) |" in report  # mean ± std of 0.60, 0.61, 0.62 over 3 seeds
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


def test_sweep_values_are_checked_before_anything_runs(course, tmp_path, capsys):
    assert run.main(["--notebooks", str(course), "--run-dir", str(tmp_path / "s"),
                     "--sweep", "mode=fast,turbo"]) == 2
    assert "mode='turbo' is not one of: fast, slow" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


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
