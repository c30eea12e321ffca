"""Notebooks 06, 07 and the appendix 08 end to end with papermill (through the course runner), on a tiny CSV
target and tiny source artifacts built here: a vocabulary, an embedding matrix, a briefly trained source checkpoint
and a (random) language model of the same vocabulary."""

import json

import numpy as np
import pytest

from tl_core import data, lm, run, train
from tl_core.embeddings import EMBEDDINGS_FILE, EmbeddingMatrix
from tl_core.models import ModelConfig, SentimentLSTM
from tl_core.text import VOCAB_FILE, Vocab
from test_data import write_fdu
from test_train import VOCAB, loader, synthetic_reviews
from test_transfer import write_target_csv


@pytest.fixture
def tiny_run(tmp_path):
    """A run directory holding what notebooks 01, 02 and 05 would leave, at toy size, and a target CSV."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    vocab = Vocab(VOCAB)
    vocab.save(run_dir / VOCAB_FILE)
    weights = np.random.default_rng(0).normal(0, 0.3, size=(len(VOCAB), 8)).astype(np.float32)
    weights[0] = 0
    has_vector = np.arange(len(VOCAB)) >= 2
    EmbeddingMatrix(weights, has_vector, vocab.fingerprint()).save(run_dir / EMBEDDINGS_FILE)
    train.seed_everything(0)
    model = SentimentLSTM(ModelConfig(vocab_size=len(VOCAB), embedding_dim=8, hidden_size=8, bidirectional=False))
    history = train.fit(model, loader(*synthetic_reviews(512, 1)), loader(*synthetic_reviews(128, 2)),
                        train.TrainConfig(epochs=4, lr=2e-2, progress=False, device="cpu", patience=0))
    assert history.epochs[-1]["val_accuracy"] > 0.95, "the toy source model solves the toy source task"
    train.save_checkpoint(run_dir / train.SOURCE_CHECKPOINT, model, vocab.itos)
    language_model = lm.LanguageModel(lm.LMConfig(vocab_size=len(VOCAB), embedding_dim=8, hidden_size=8,
                                                  output_layer="full"))
    lm.save_language_model(run_dir / lm.LM_CHECKPOINT, language_model, vocab.itos)
    target = write_target_csv(tmp_path / "my reviews.csv", count=160)
    return run_dir, target


@pytest.mark.slow
def test_notebook_06_runs_on_a_csv_target(tiny_run):
    run_dir, target = tiny_run
    overrides = ["-p", "target", str(target), "-p", "n_labels", "40", "-p", "seeds", "[1, 2]",
                 "-p", "strategies", "[scratch, frozen, finetune]", "-p", "transfer_epochs", "2"]
    assert run.main(["--only", "06", "--run-dir", str(run_dir), *overrides]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())["transfer"]
    assert metrics["target"] == str(target.resolve())
    assert metrics["oov_rate"] == 0.0 and metrics["test_examples"] == 32 and metrics["pool_examples"] == 128
    assert 0.0 <= metrics["zero_shot_accuracy"] <= 1.0
    assert [(r["strategy"], r["n_labels"], r["seed"]) for r in metrics["results"]] == [
        (name, 40, seed) for seed in (1, 2) for name in ("scratch", "frozen", "finetune")]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in metrics["results"])
    # the synthetic source already solves the synthetic target: transfer from it must beat chance by far
    assert metrics["zero_shot_accuracy"] > 0.9
    assert (run_dir / "06_strategies.png").stat().st_size > 0
    assert (run_dir / "06_transfer.ipynb").exists()


def test_the_notebooks_offer_exactly_the_strategies_of_tl_core():
    """The runner checks `strategies` against the choices the parameter's comment lists: 06 and the appendix 08
    offer transfer.STRATEGIES, in order; 07, which also fine-tunes the language model, offers them and the
    ULMFiT strategies. A profile or -p that names `ulmfit` for the whole course is therefore refused by 06 before
    anything runs (`--only 07` takes it)."""
    from tl_core import transfer

    notebooks = {nb.number: nb for nb in run.discover_notebooks()}
    offered = {"06": ("strategies", list(transfer.STRATEGIES)),
               "07": ("strategies", list(transfer.STRATEGIES) + list(transfer.ULMFIT_STRATEGIES)),
               "08": ("more_strategies", list(transfer.STRATEGIES))}
    for number, (name, choices) in offered.items():
        help_text = notebooks[number].parameters[name]["help"]
        assert run.allowed_values(help_text) == choices, number
        assert set(notebooks[number].parameters[name]["default"]) <= set(choices), number
    assert {"ulmfit", "ulmfit_imdb"} <= set(notebooks["07"].parameters["strategies"]["default"])


def test_bad_strategy_is_refused_before_anything_runs(tiny_run, capsys):
    run_dir, target = tiny_run
    assert run.main(["--only", "06", "--run-dir", str(run_dir), "-p", "strategies", "[scratch, lora]"]) == 2
    assert ("is not one of: scratch, ngrams, embeddings, frozen, finetune, gradual, selftrain, intermediate, ensemble, hybrid, calibrated"
            in capsys.readouterr().err)
    assert run.main(["--only", "06", "--run-dir", str(run_dir), "-p", "related_targets", "[amazon:garden]"]) == 2
    assert "related_targets=['amazon:garden']: unknown Amazon domain 'garden'" in capsys.readouterr().err
    # the target itself among the related data: the notebook's default target, or a file given as the target
    assert run.main(["--only", "06", "--run-dir", str(run_dir), "-p", "related_targets",
                     "[amazon:books, amazon:kitchen_&_housewares]"]) == 2
    assert ("related_targets=['amazon:books', 'amazon:kitchen']: the target 'amazon:kitchen' cannot be its own "
            "related data" in capsys.readouterr().err)
    assert run.main(["--only", "08", "--run-dir", str(run_dir), "-p", "target", str(target),
                     "-p", "related_targets", f"[{target}]"]) == 2
    assert "cannot be its own related data: the intermediate stage must not train on the target's labels" in (
        capsys.readouterr().err)
    assert not (run_dir / "06_transfer.ipynb").exists()


@pytest.mark.slow
def test_notebook_07_fine_tunes_the_language_model_on_unlabelled_text(tiny_run, tmp_path):
    run_dir, target = tiny_run
    test_texts = data.split_target(data.load_target(str(target))).test.texts
    pool_like = write_target_csv(tmp_path / "other.csv", count=40, seed=5)
    unlabelled = tmp_path / "unlabelled.txt"
    planted = "  " + test_texts[0].upper() + "  "  # a test review, in other case and spacing: must be dropped
    unlabelled.write_text("\n".join([*data.load_target(str(pool_like)).texts, planted]) + "\n", encoding="utf-8")
    # section 9 (the full profile's ten FDU-MTL domains) on one tiny domain in the FDU-MTL file format
    lines = {name: [f"{label}\t{' '.join(VOCAB[i] for i in review)}"
                    for review, label in zip(*synthetic_reviews(count, seed))]
             for name, count, seed in (("train", 60, 11), ("test", 20, 12), ("unlabel", 30, 13))}
    planted_test = lines["test"][0].split("\t")[1].upper()  # a copy of a test review: must be dropped
    fdu_root = write_fdu(tmp_path / "data", "music", lines["train"], lines["test"],
                         [line.split("\t")[1] for line in lines["unlabel"]] + [planted_test])
    assert run.main(["--only", "07", "--run-dir", str(run_dir), "-p", "target", str(target),
                     "-p", "unlabelled", str(unlabelled), "-p", "seeds", "[1, 2]", "-p", "transfer_epochs", "2",
                     "-p", "n_labels_grid", "[20, 40]", "-p", "multiplier_n_labels", "20",
                     "-p", "strategies", "[scratch, finetune, ulmfit_imdb, ulmfit]", "-p", "lm_finetune_epochs", "1",
                     "-p", "saliency_reviews", "2", "-p", "data_dir", str(fdu_root),
                     "-p", "fdu_domains", "[music]", "-p", "fdu_n_labels", "[20]"]) == 0
    grid = json.loads((run_dir / "metrics.json").read_text())["fine_tuning"]
    names = ("scratch", "finetune", "ulmfit_imdb", "ulmfit")
    assert sorted((r["strategy"], r["n_labels"], r["seed"]) for r in grid["results"]) == sorted(
        (name, n, seed) for n in (20, 40) for seed in (1, 2) for name in names)
    assert grid["unlabelled_dropped_as_test"] == 1
    assert grid["unlabelled_texts"] == 40 + 128  # the unlabelled file without the copy, and the pool's texts
    fdu = grid["fdu"]
    assert fdu["domains"] == ["music"]
    assert fdu["language_models"]["music"]["dropped_as_test"] == 1  # the upper-cased copy of a test review
    assert fdu["language_models"]["music"]["texts"] == 30 + 60  # the unlabelled file without it, and the pool
    runs = [(r["domain"], r["strategy"], str(r["labels"]), r["seed"]) for r in fdu["results"]]
    assert sorted(runs) == sorted(("music", name, labels, seed) for name in ("finetune", "ulmfit")
                                  for labels in ("20", "all") for seed in (1, 2))
    assert all(r["n_labels"] == 60 for r in fdu["results"] if r["labels"] == "all")
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["zero_shot"] > 0.9 for r in fdu["results"])  # the toy source
    for figure in ("07_learning_rates.png", "07_label_efficiency.png", "07_fdu_domains.png"):
        assert (run_dir / figure).stat().st_size > 0


@pytest.mark.slow
def test_notebook_08_after_06_adds_its_grid(tiny_run, tmp_path):
    run_dir, target = tiny_run
    related = write_target_csv(tmp_path / "related.csv", count=200, seed=8)  # the intermediate stage's data
    common = ["-p", "target", str(target), "-p", "seeds", "[1, 2]", "-p", "transfer_epochs", "3"]
    assert run.main(["--only", "06", "--run-dir", str(run_dir), *common, "-p", "n_labels", "40",
                     "-p", "strategies", "[scratch, frozen]"]) == 0
    assert run.main(["--only", "08", "--run-dir", str(run_dir), *common, "-p", "n_labels_grid", "[20, 40]",
                     "-p", "multiplier_n_labels", "20", "-p", "more_strategies",
                     "[scratch, frozen, gradual, selftrain, intermediate]", "-p", "related_targets", f"[{related}]",
                     "-p", "intermediate_examples", "160", "-p", "saliency_reviews", "2"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    grid = metrics["more_strategies"]
    names = ("scratch", "frozen", "gradual", "selftrain", "intermediate")
    assert [(r["strategy"], r["n_labels"], r["seed"]) for r in grid["results"]] == [
        (name, n, seed) for n in (20, 40) for seed in (1, 2) for name in names]
    assert {(row["strategy"], row["n_labels"], row["runs"]) for row in grid["summary"]} == {
        (name, n, 2) for n in (20, 40) for name in names}
    stages = grid["intermediate"]  # one stage per seed
    assert stages["specs"] == [str(related.resolve())] and stages["examples"] == 160
    assert set(stages["stages"]) == {"1", "2"} and all(s["epochs_trained"] >= 1 for s in stages["stages"].values())
    assert stages["zero_shot_accuracy"] == pytest.approx(
        np.mean([s["zero_shot_accuracy"] for s in stages["stages"].values()]))
    assert all(r["pseudo_labels"] > 0 for r in grid["results"] if r["strategy"] == "selftrain")
    assert grid["label_multiplier"]["at"] == 20 and grid["label_multiplier"]["baseline"] == "scratch"
    # 06's runs at 40 labels were replaced by 07's runs of the same (strategy, n_labels, seed); 07's are added
    results = metrics["transfer"]["results"]
    keys = [(r["strategy"], r["n_labels"], r["seed"]) for r in results]
    assert len(keys) == len(set(keys)) == 20
    assert metrics["transfer"]["target"] == str(target.resolve()) and "oov_rate" in metrics["transfer"]
    for figure in ("08_learning_rates.png", "08_label_efficiency.png"):
        assert (run_dir / figure).stat().st_size > 0


def test_notebook_07_refuses_a_multiplier_point_outside_the_grid(tiny_run, capsys):
    run_dir, target = tiny_run
    assert run.main(["--only", "07", "--run-dir", str(run_dir), "-p", "target", str(target),
                     "-p", "n_labels_grid", "[20]"]) != 0
    assert "multiplier_n_labels=100 must be one of n_labels_grid=[20]" in capsys.readouterr().err
    assert not (run_dir / "metrics.json").exists(), "nothing recorded"
