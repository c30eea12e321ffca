"""The smoke chain: every notebook of the course's chain, executed in order through the course runner
(``python -m tl_core.run --profile smoke``) on ``notebooks/params/smoke.yaml`` (a few hundred to a few thousand
reviews, one epoch), then what each one recorded in metrics.json checked section by section. Part of `make test`.

The chain is discovered: the numbered notebooks that the quick profile runs (an appendix that only larger profiles
run says so in its metadata, ``"tl_course": {"profiles": ["full", "gpu"]}``, and is left out). A notebook runs here
only once it declares the parameters that size it (:data:`SIZES`, by topic) and smoke.yaml sets them; until then
it is skipped with the names it lacks, and so is every notebook after it (they read what it writes). A notebook
of a topic not in :data:`SIZES` runs as it is, and the time limit below says so if that is too slow.
"""

import json
import math
import os
from pathlib import Path

import nbformat
import pytest
import torch

from tl_core import execution, report, run
from tl_core.course import execution_problem, load_profile
from conftest import REPO

pytestmark = pytest.mark.smoke

NOTEBOOKS = REPO / "notebooks"
PROFILE = "smoke"
SMOKE = load_profile(PROFILE, NOTEBOOKS)
CHAIN = [nb for nb in run.discover_notebooks(NOTEBOOKS) if nb.runs_in("quick")]
#: The parameters that size each notebook (by topic: its name without the number), which smoke.yaml must set.
SIZES = {
    "setup": (),
    "data": ("imdb_reviews",),
    "embeddings": ("w2v_reviews", "w2v_epochs"),
    "fused_lstm": ("bench_shapes", "bench_repeats", "bench_warmup"),
    "language_model": ("lm_corpus_reviews", "lm_max_tokens", "lm_val_reviews", "lm_epochs"),
    "source_lstm": ("source_train_reviews", "test_reviews", "source_epochs", "compare_reviews",
                    "packed_reviews"),
    "transfer": ("n_labels", "seeds", "transfer_epochs", "target"),  # strategies: the defaults (four, five)
    "fine_tuning": ("n_labels_grid", "seeds", "transfer_epochs", "target", "lm_finetune_epochs"),
}
#: The longest a notebook may take on the smoke profile (2 busy cores); the whole chain should take a few minutes.
SMOKE_SECONDS = 150


def topic(nb) -> str:
    return nb.stem.split("_", 1)[1]


def missing_sizes(nb) -> list[str]:
    return [name for name in SIZES.get(topic(nb), ()) if name not in nb.parameters]


def plan_chain() -> tuple[list, dict[str, str]]:
    """The notebooks to run, and why each of the others is skipped."""
    ready, skipped = [], {}
    for nb in CHAIN:
        if skipped:
            first = next(iter(skipped))
            skipped[nb.stem] = f"{first} is skipped, and the notebooks after it read what it writes"
        elif missing_sizes(nb):
            skipped[nb.stem] = (f"{nb.stem} does not declare its smoke-profile sizes yet ({', '.join(missing_sizes(nb))}"
                                "); it is skipped rather than run at full size. Add them to its parameters cell and "
                                "to notebooks/params/smoke.yaml")
        else:
            ready.append(nb)
    return ready, skipped


READY, SKIPPED = plan_chain()
RAN = {nb.stem for nb in READY}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The chain's ready notebooks run once, in order, by the course runner; the run directory."""
    data_dir = os.environ.get("TL_DATA_DIR")
    if not data_dir or not Path(data_dir).is_dir():
        pytest.skip("the smoke chain reads the datasets: set TL_DATA_DIR to the folder that holds them (README: Data)")
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    code = run.main(["--profile", PROFILE, "--notebooks", str(NOTEBOOKS), "--run-dir", str(run_dir),
                     "--only", ",".join(nb.stem for nb in READY)])
    manifest = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    return {"dir": run_dir, "code": code, "manifest": manifest,
            "metrics": json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists()
            else {}}


def section(smoke_run, name, notebook_topic):
    """metrics.json[name], written by the notebook of ``notebook_topic``; skipped when that notebook did not run."""
    stems = [nb.stem for nb in CHAIN if topic(nb) == notebook_topic]
    if not stems:
        pytest.skip(f"the course has no notebook NN_{notebook_topic} yet")
    if stems[0] not in RAN:
        pytest.skip(f"{stems[0]} did not run in the smoke chain: {SKIPPED[stems[0]]}")
    metrics = smoke_run["metrics"]
    assert name in metrics, f"{stems[0]} ran but wrote no metrics.json[{name!r}] (sections: {sorted(metrics)})"
    return metrics[name]


def fraction(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


# --------------------------------------------------------------------------------------------- the profile

def test_the_smoke_profile_is_valid_for_the_whole_course():
    planned = run.plan(PROFILE, notebooks_dir=NOTEBOOKS, run_dir=REPO / "runs" / "smoke-check")
    assert [nb.stem for nb in planned.notebooks] == [nb.stem for nb in CHAIN], "smoke runs the quick chain"


@pytest.mark.parametrize("nb", CHAIN, ids=[nb.stem for nb in CHAIN])
def test_the_smoke_profile_sets_every_size_a_notebook_declares(nb):
    declared = [name for name in SIZES.get(topic(nb), ()) if name in nb.parameters]
    unset = [name for name in declared if name not in SMOKE]
    assert not unset, (f"{nb.stem} declares {', '.join(unset)} but notebooks/params/smoke.yaml does not set them: "
                       "the smoke chain would run it at full size")


# ------------------------------------------------------------------------------------------- the notebooks

@pytest.mark.parametrize("nb", CHAIN, ids=[nb.stem for nb in CHAIN])
def test_each_notebook_runs_to_its_end_in_seconds(smoke_run, nb):
    if nb.stem in SKIPPED:
        pytest.skip(SKIPPED[nb.stem])
    record = smoke_run["manifest"].get("notebooks", {}).get(nb.stem, {})
    assert record.get("status") == "complete", (
        f"{nb.stem} on the smoke profile: {record.get('status', 'never started')} {record.get('error', '')}; its "
        f"executed copy is {smoke_run['dir'] / nb.path.name}")
    assert execution_problem(smoke_run["dir"] / nb.path.name) is None
    assert record["seconds"] <= SMOKE_SECONDS, (
        f"{nb.stem} took {record['seconds']:.0f} s on the smoke profile (limit {SMOKE_SECONDS} s): give it size "
        "parameters (fewer reviews, fewer epochs), set them in notebooks/params/smoke.yaml and list them in SIZES")


def test_the_chain_ran_as_one_run_with_clean_outputs(smoke_run):
    if not READY:
        pytest.skip("no notebook of the chain is ready for the smoke profile")
    assert smoke_run["code"] == 0, f"the runner failed; see {smoke_run['dir'] / 'run.json'}"
    identities = {nb.stem: execution.run_identity(nbformat.read(smoke_run["dir"] / nb.path.name, as_version=4))
                  for nb in READY}
    assert len({identity["id"] for identity in identities.values()}) == 1, identities
    assert all(identity["profile"] == PROFILE for identity in identities.values())
    for nb in READY:
        for index, cell in enumerate(nbformat.read(smoke_run["dir"] / nb.path.name, as_version=4).cells):
            for output in cell.get("outputs", []):
                text = output.get("text", "") if output.get("output_type") == "stream" else ""
                assert execution.final_text(text) == text, f"{nb.stem} cell {index}: progress frames stored"
                assert "without encryption" not in text, f"{nb.stem} cell {index}: the kernel's warning stored"


def test_the_report_has_a_short_headline(smoke_run):
    if not READY:
        pytest.skip("no notebook of the chain is ready for the smoke profile")
    markdown = (smoke_run["dir"] / "report.md").read_text()
    rows = report.headline(smoke_run["metrics"], smoke_run["manifest"])
    assert 1 <= len(rows) <= report.MAX_HEADLINE_ROWS
    assert dict(rows)["notebook times"].startswith(READY[0].number)
    assert all(f"| {what} | {value} |" in markdown for what, value in rows)


# ---------------------------------------------------------------------------------- what each one recorded

def test_data(smoke_run):
    data = section(smoke_run, "data", "data")
    reviews = SMOKE["imdb_reviews"]
    assert data["imdb_reviews"] == {"train": reviews, "test": reviews, "unsup": reviews}
    for split, tokens in data["imdb_tokens"].items():
        assert 50 * reviews < tokens < 1000 * reviews, f"{split}: {tokens} tokens for {reviews} reviews"
    assert 2 < data["vocab_size"] <= data["vocab_max_size"]
    assert data["target"] == SMOKE["target"] and 0 < data["target_test"] < data["target_pool"]
    gap = data["domain_gap"]
    assert gap[SMOKE["target"]]["texts"] == (data["target_test"] + data["target_pool"]
                                             + data["target_pool_dropped_as_test"])
    assert "unsup_dropped_as_test" in data, "how many unlabelled reviews the vocabulary left out as test copies"
    assert all(fraction(values["oov_token_share"]) and values["median_tokens"] > 0 for values in gap.values())
    assert gap[SMOKE["target"]]["oov_token_share"] > gap["imdb:test"]["oov_token_share"], (
        "the target has more words the IMDB vocabulary does not know than IMDB test has: the domain gap")
    assert (smoke_run["dir"] / "vocab.json").exists()


def test_embeddings(smoke_run):
    embeddings = section(smoke_run, "embeddings", "embeddings")
    assert embeddings["word2vec"]["epochs"] == SMOKE["w2v_epochs"]
    assert embeddings["word2vec_words"] >= 100 and embeddings["word2vec_seconds"] > 0
    assert 0.5 < embeddings["vocab_coverage"] <= 1 and 0.5 < embeddings["imdb_token_coverage"] <= 1
    coverage = embeddings["token_coverage"]
    assert all(fraction(share) for share in coverage.values())
    assert coverage["imdb:test"] > coverage[SMOKE["target"]], "IMDB's vectors cover IMDB better than the target"
    assert all((smoke_run["dir"] / name).stat().st_size > 0 for name in embeddings["files"])


def test_fused_lstm(smoke_run):
    fused = section(smoke_run, "fused_lstm", "fused_lstm")
    assert 0 <= fused["parity_max_difference"] < 1e-4, "FusedLSTM and nn.LSTM agree to float32 rounding"
    assert fused["benchmark_device"] in ("cpu", "cuda")
    benchmark = json.loads((smoke_run["dir"] / "lstm_benchmark.json").read_text())
    assert {result["shape"] for result in benchmark["results"]} == set(SMOKE["bench_shapes"].split(","))
    assert all(result["runs"] == SMOKE["bench_repeats"] and result["median_ms"] > 0 for result in benchmark["results"])
    assert all(ratio > 0 for ratio in fused["targets"].values())


def test_language_model(smoke_run):
    model = section(smoke_run, "language_model", "language_model")
    vocab_size = smoke_run["metrics"]["data"]["vocab_size"]
    assert 1 < model["val_perplexity"] < vocab_size, "better than a uniform guess over the vocabulary"
    assert 0 < model["train_tokens"] <= SMOKE["lm_max_tokens"] * SMOKE["lm_epochs"]
    assert model["train_seconds"] > 0 and model["tokens_per_second"] > 0


def test_source(smoke_run):
    source = section(smoke_run, "source", "source_lstm")
    assert 0.4 <= source["test_accuracy"] <= 1 and fraction(source["test_f1"]), (
        "an accuracy is a fraction; a model that learned nothing scores about 0.5 on the balanced test set")
    assert 1 <= source["epochs"] <= SMOKE["source_epochs"]
    assert (source["comparison_reviews"], source["packed_reviews"]) == (
        SMOKE["compare_reviews"], SMOKE["packed_reviews"])
    assert source["loss_curve_max_difference"] < 1e-3, "FusedLSTM and nn.LSTM (packed) train the same model"
    assert source["tokens_per_second_fused"] > 0
    assert (smoke_run["dir"] / "source_model.pt").stat().st_size > 0
    recipe = source["train_config"]
    assert (recipe["gradual"], recipe["body_lr"], recipe["lr_decay"]) == (
        SMOKE["source_gradual"], SMOKE["source_body_lr"], SMOKE["source_lr_decay"])
    assert source["model_config"]["bptt"] == SMOKE["bptt"]
    classifier = torch.load(smoke_run["dir"] / "source_model.pt", weights_only=True)["state_dict"]
    language_model = torch.load(smoke_run["dir"] / "language_model.pt", weights_only=True)["state_dict"]
    lstm = [name for name in classifier if name.startswith("lstm.")]
    assert lstm and all(torch.equal(classifier[name], language_model[name]) for name in lstm), (
        "gradual unfreezing: in its one epoch only the head of the classifier from the language model trains")
    assert source["init"] == "language_model"


def strategies_of(stem):
    """The strategies a notebook runs on the smoke profile: the profile's, else the notebook's own defaults."""
    if "strategies" in SMOKE:
        return SMOKE["strategies"]
    return next(nb for nb in CHAIN if nb.stem == stem).parameters["strategies"]["default"]


def expected_runs(strategies, label_counts):
    return {(strategy, n, seed) for strategy in strategies for n in label_counts for seed in SMOKE["seeds"]}


def test_transfer(smoke_run):
    transfer = section(smoke_run, "transfer", "transfer")
    data = smoke_run["metrics"]["data"]
    assert transfer["target"] == SMOKE["target"] and fraction(transfer["zero_shot_accuracy"])
    assert (transfer["test_examples"], transfer["pool_examples"]) == (data["target_test"], data["target_pool"])
    runs = {(record["strategy"], record["n_labels"], record["seed"]) for record in transfer["results"]}
    assert expected_runs(strategies_of("06_transfer"), [SMOKE["n_labels"]]) <= runs
    assert all(fraction(record["accuracy"]) for record in transfer["results"])


def test_fine_tuning(smoke_run):
    tuning = section(smoke_run, "fine_tuning", "fine_tuning")
    grid = SMOKE["n_labels_grid"]
    assert {(row["strategy"], row["n_labels"]) for row in tuning["summary"]} == {
        (strategy, n) for strategy in strategies_of("07_fine_tuning") for n in grid}
    assert {(r["strategy"], r["n_labels"], r["seed"]) for r in tuning["results"]} == expected_runs(
        strategies_of("07_fine_tuning"), grid)
    for row in tuning["summary"]:  # each row: the mean and the sample spread (ddof=1) of its seeds' accuracies
        accuracies = [r["accuracy"] for r in tuning["results"]
                      if (r["strategy"], r["n_labels"]) == (row["strategy"], row["n_labels"])]
        assert row["runs"] == len(accuracies) == len(SMOKE["seeds"]) and fraction(row["mean"])
        mean = sum(accuracies) / len(accuracies)
        squares = sum((accuracy - mean) ** 2 for accuracy in accuracies)
        spread = math.sqrt(squares / (len(accuracies) - 1)) if len(accuracies) > 1 else 0.0
        assert row["mean"] == pytest.approx(mean) and row["std"] == pytest.approx(spread, abs=1e-12), row
    assert tuning["unlabelled_texts"] > 0 and tuning["unlabelled_dropped_as_test"] >= 0
    fdu = tuning["fdu"]  # section 9, the FDU-MTL domains: finetune and ulmfit per domain, at each label count
    assert fdu["domains"] == SMOKE.get("fdu_domains", [])
    assert {(r["domain"], r["strategy"], r["labels"], r["seed"]) for r in fdu["results"]} == {
        (domain, strategy, labels, seed) for domain in fdu["domains"] for strategy in ("finetune", "ulmfit")
        for labels in [*SMOKE["fdu_n_labels"], "all"] for seed in SMOKE["seeds"]}
    assert all(fraction(r["accuracy"]) and fraction(r["zero_shot"]) for r in fdu["results"])
    multiplier = tuning["label_multiplier"]
    assert multiplier["at"] == SMOKE["multiplier_n_labels"] and multiplier["best_strategy"] not in ("scratch", "ngrams")
    if multiplier["multiplier"] is None:
        assert multiplier["at_least"] == max(grid) / multiplier["at"]
    else:
        assert multiplier["multiplier"] > 0 and not math.isnan(multiplier["multiplier"])
    if "transfer" in smoke_run["metrics"]:
        assert tuning["zero_shot_accuracy"] == smoke_run["metrics"]["transfer"]["zero_shot_accuracy"], (
            "the same source model on the same test split")
