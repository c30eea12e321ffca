"""Atomic writes and the run directory's metrics.json (tl_core/artifacts.py)."""

import pytest

from tl_core import artifacts


def test_write_json_round_trip(tmp_path):
    artifacts.write_json(tmp_path / "a" / "b.json", {"x": [1, 2], "y": "é"})
    assert artifacts.read_json(tmp_path / "a" / "b.json") == {"x": [1, 2], "y": "é"}


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "vocab.json"
    artifacts.write_json(target, {"version": 1})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        artifacts.write_json(target, {"version": Unserialisable()})
    assert artifacts.read_json(target) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]


def test_interrupt_inside_atomic_path_leaves_nothing(tmp_path):
    target = tmp_path / "model.pt"
    with pytest.raises(KeyboardInterrupt):
        with artifacts.atomic_path(target) as temporary:
            temporary.write_bytes(b"half of a checkpoint")
            raise KeyboardInterrupt
    assert not any(tmp_path.iterdir())


def test_update_metrics_keeps_other_sections(tmp_path):
    artifacts.update_metrics(tmp_path, "source", {"test_accuracy": 0.9})
    merged = artifacts.update_metrics(tmp_path, "transfer", {"target": "amazon:kitchen"})
    assert merged == {"source": {"test_accuracy": 0.9}, "transfer": {"target": "amazon:kitchen"}}
    assert artifacts.read_json(tmp_path / "metrics.json") == merged


def test_require_names_the_notebook_to_run(tmp_path):
    with pytest.raises(artifacts.MissingArtifactError, match=r"notebooks/01_data.ipynb"):
        artifacts.require(tmp_path / "vocab.json", produced_by="01_data.ipynb")
    (tmp_path / "vocab.json").write_text("{}")
    assert artifacts.require(tmp_path / "vocab.json", "01_data.ipynb") == tmp_path / "vocab.json"


def test_artifacts_honour_the_umask(tmp_path):
    """mkstemp makes 0600 files: a teacher's run directory could not be --reuse'd by students."""
    import os

    previous = os.umask(0o022)
    try:
        artifacts.write_json(tmp_path / "shared.json", {"a": 1})
        os.umask(0o077)
        artifacts.write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600


def test_concurrent_metric_writers_keep_every_section(tmp_path):
    """Two processes writing 200 sections each at the same time: all 400 stay (read-modify-write under a lock)."""
    import subprocess
    import sys

    writer = ("import sys\nfrom tl_core.artifacts import update_metrics\n"
              "for i in range(200):\n    update_metrics(sys.argv[1], f'{sys.argv[2]}{i}', {'i': i})\n")
    processes = [subprocess.Popen([sys.executable, "-c", writer, str(tmp_path), prefix]) for prefix in ("a", "b")]
    assert [process.wait(timeout=120) for process in processes] == [0, 0]
    metrics = artifacts.read_json(tmp_path / "metrics.json")
    assert len(metrics) == 400 and metrics["a199"] == {"i": 199} and metrics["b0"] == {"i": 0}


def test_truncated_json_artifact_names_the_file(tmp_path):
    (tmp_path / "metrics.json").write_text('{"source": {"test_accuracy": 0.9')
    with pytest.raises(artifacts.CorruptArtifactError, match=r"metrics.json is not valid JSON.*truncated"):
        artifacts.read_json(tmp_path / "metrics.json")
