"""Pretraining the language model (tl_core/pretrain.py): corpora, the command line, and two processes under torchrun
giving the same model as one process on the same global batch."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tl_core import lm, pretrain, text, train

WORDS = ["the", "movie", "was", "great", "bad", "plot", "is", "good", "a", "film", "and", "not"]


def write_run_dir(tmp_path: Path) -> tuple[Path, Path]:
    """A run directory with a small vocabulary, and a corpus file of generated reviews (one per line)."""
    run_dir = tmp_path / "run"
    vocab = text.Vocab([*text.SPECIALS, *WORDS, *[f"w{i}" for i in range(40 - len(text.SPECIALS) - len(WORDS))]])
    vocab.save(run_dir / text.VOCAB_FILE)
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, size=rng.integers(5, 15))) for _ in range(200)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run_dir, corpus


QUIET = ["--embedding-dim", "8", "--hidden-size", "12", "--num-layers", "2", "--cutoffs", "10", "25",
         "--embedding-dropout", "0", "--input-dropout", "0", "--hidden-dropout", "0", "--weight-drop", "0",
         "--output-dropout", "0", "--no-word2vec", "--batch-size", "4", "--bptt", "8", "--max-tokens", "80",
         "--epochs", "1", "--lr", "0.01"]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(pretrain.__file__).parents[1])}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_processes_under_torchrun_train_the_same_model_as_one(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    run_dir, corpus = write_run_dir(tmp_path)
    common = ["-m", "tl_core.pretrain", "--run-dir", str(run_dir), "--corpus", str(corpus), *QUIET]
    run([sys.executable, *common, "--output", "one.pt"], tmp_path)
    two = run([torchrun, "--standalone", "--nproc_per_node", "2", *common, "--output", "two.pt"], tmp_path)
    assert "2 process(es)" in two.stdout
    vocab = text.Vocab.load(run_dir / text.VOCAB_FILE)
    one_model, one_payload = lm.load_language_model(run_dir / "one.pt", vocab.itos)
    two_model, two_payload = lm.load_language_model(run_dir / "two.pt", vocab.itos)
    assert one_payload["extra"]["processes"] == 1 and two_payload["extra"]["processes"] == 2
    assert one_payload["extra"]["train_tokens"] == two_payload["extra"]["train_tokens"] > 0
    train.seed_everything(0)  # the seed pretrain starts from (TrainConfig.seed): its initial weights
    initial = lm.LanguageModel(one_model.config)  # to check that training moved the weights at all
    for (name, a), (_, b) in zip(one_model.state_dict().items(), two_model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), name
    assert not torch.allclose(one_model.lstm.weight_hh_l0, initial.lstm.weight_hh_l0)


@pytest.mark.slow
def test_command_line_trains_and_saves_a_checkpoint(tmp_path):
    run_dir, corpus = write_run_dir(tmp_path)
    result = run([sys.executable, "-m", "tl_core.pretrain", "--run-dir", str(run_dir), "--corpus", str(corpus),
                  *QUIET], tmp_path)
    assert "saved" in result.stdout and (run_dir / lm.LM_CHECKPOINT).exists()
    model, payload = lm.load_language_model(run_dir / lm.LM_CHECKPOINT)
    assert payload["extra"]["val_perplexity"] > 1 and model.config.hidden_size == 12


def test_file_corpus_holds_texts_out_for_validation(tmp_path):
    run_dir, corpus = write_run_dir(tmp_path)
    vocab = text.Vocab.load(run_dir / text.VOCAB_FILE)
    first = pretrain.file_corpus(corpus, vocab, val_fraction=0.1, seed=0)
    assert len(first.train) == 180 and len(first.val) == 20
    lines = corpus.read_text(encoding="utf-8").splitlines()
    encoded = [tuple(row) for row in lm.encode_texts(lines, vocab)]
    train_rows, val_rows = [tuple(row) for row in first.train], [tuple(row) for row in first.val]
    assert sorted(train_rows + val_rows) == sorted(encoded), "every text once, in training or held out"
    assert len(set(encoded)) == len(encoded) and not set(val_rows) & set(train_rows), "no held-out text trains"
    again = pretrain.file_corpus(corpus, vocab, val_fraction=0.1, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(first.val, again.val))
    one_line = tmp_path / "one.txt"
    one_line.write_text("just one review\n", encoding="utf-8")
    with pytest.raises(ValueError, match="at least two"):
        pretrain.file_corpus(one_line, vocab)


@pytest.mark.slow
def test_imdb_corpus_never_holds_a_test_review(shared_data_dir):
    from tl_core import data

    vocab = text.Vocab([*text.SPECIALS, *WORDS])
    corpus = pretrain.imdb_corpus(vocab, str(shared_data_dir), val_reviews=2000)
    assert corpus.dropped_as_test > 0  # the data README: unsup texts that also occur in train or test
    assert len(corpus.val) == 2000 and len(corpus.train) == 25_000 + 50_000 - corpus.dropped_as_test - 2000
    unsup = data.load_imdb("unsup", str(shared_data_dir)).texts
    test_keys = {data.same_text_key(review) for review in data.load_imdb("test", str(shared_data_dir)).texts}
    assert sum(data.same_text_key(review) in test_keys for review in unsup) == corpus.dropped_as_test


@pytest.mark.parametrize("profile", ["quick", "full", "gpu"])
def test_profile_lm_config_is_the_model_notebook_04_builds(profile):
    """benchmarks/lm.py measures the course's own language model: profile_lm_config must give the config that
    notebook 04's own cell builds from the same profile's values (its code run here on them, with notebook 02's
    vector size as the matrix's width)."""
    from types import SimpleNamespace

    import nbformat

    from tl_core.course import notebook_values
    from conftest import REPO

    notebook = nbformat.read(REPO / "notebooks" / "04_language_model.ipynb", as_version=4)
    cell = next(c.source for c in notebook.cells if c.cell_type == "code" and "config = lm.LMConfig(" in c.source)
    statement = cell[cell.index("config = lm.LMConfig("):cell.index("\n", cell.index("sampled_words="))]
    width = notebook_values("02", profile, REPO / "notebooks")["w2v_vector_size"]
    namespace = {**notebook_values("04", profile, REPO / "notebooks"), "lm": lm, "vocab": range(50_000),
                 "matrix": SimpleNamespace(dim=width)}
    exec(statement, namespace)  # noqa: S102 (the notebook's own source)
    assert pretrain.profile_lm_config(profile, 50_000, REPO / "notebooks") == namespace["config"]
    assert namespace["config"].embedding_dim == width
