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
    """A course of two tiny notebooks and two profiles."""
    notebooks = tmp_path / "notebooks"
    (notebooks / "params").mkdir(parents=True)
    write_notebook(notebooks / "00_first.ipynb",
                   'run_dir = "../runs/lab"\nseed = 0\nname = "x"\nrate = 0.5\nfolder = None  # type: Optional[str]')
    write_notebook(notebooks / "01_second.ipynb", 'run_dir = "../runs/lab"\nseed = 0\nepochs = 2',
                   body="import json, pathlib\n"
                        "pathlib.Path(run_dir, 'out.json').write_text(json.dumps({'seed': seed, 'epochs': epochs}))")
    (notebooks / "params" / "quick.yaml").write_text("# defaults\n")
    (notebooks / "params" / "full.yaml").write_text("epochs: 5\n")
    return notebooks


def test_profiles_and_overrides_reach_the_right_notebooks(course, tmp_path):
    planned = run.plan("full", {"seed": 3}, run_dir=tmp_path / "out", notebooks_dir=course)
    assert planned.notebook_parameters["00_first"] == {"seed": 3, "run_dir": str(tmp_path / "out")}
    assert planned.notebook_parameters["01_second"] == {"epochs": 5, "seed": 3, "run_dir": str(tmp_path / "out")}


@pytest.mark.parametrize("overrides,message", [
    ({"epoch": 3}, r"unknown parameter 'epoch'; the selected notebooks take: epochs, folder, name, rate, seed"),
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


def test_unknown_profile_and_notebook(course):
    with pytest.raises(run.ParameterError, match=r"no profile 'huge'.*profiles: full, quick"):
        run.plan("huge", notebooks_dir=course)
    with pytest.raises(run.ParameterError, match=r"--only: no notebook 07"):
        run.plan("quick", only="00,07", notebooks_dir=course)


def test_override_values_are_read_as_yaml():
    assert run.parse_override("n", "3") == ("n", 3)
    assert run.parse_override("n", "[50, 100]") == ("n", [50, 100])
    assert run.parse_override("t", "amazon:books") == ("t", "amazon:books")
    assert run.parse_override("d", "null") == ("d", None)


def test_execute_runs_in_order_and_records_the_run(course, tmp_path):
    planned = run.plan("full", {"seed": 7}, run_dir=tmp_path / "out", notebooks_dir=course)
    manifest = run.execute(planned, log=lambda *args, **kwargs: None)
    out = tmp_path / "out"
    assert json.loads((out / "out.json").read_text()) == {"seed": 7, "epochs": 5}
    executed = nbformat.read(out / "01_second.ipynb", as_version=4)
    assert any("injected-parameters" in cell.metadata.get("tags", []) for cell in executed.cells)
    assert {name: record["status"] for name, record in manifest["notebooks"].items()} == {
        "00_first": "complete", "01_second": "complete"}
    assert json.loads((out / "run.json").read_text())["parameters"] == {"epochs": 5, "seed": 7}


def test_failing_notebook_is_recorded(course, tmp_path):
    write_notebook(course / "02_broken.ipynb", 'run_dir = "x"', body="raise ValueError('boom')")
    planned = run.plan("quick", run_dir=tmp_path / "out", notebooks_dir=course)
    with pytest.raises(Exception, match="boom"):
        run.execute(planned, log=lambda *args, **kwargs: None)
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
