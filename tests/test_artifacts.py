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
