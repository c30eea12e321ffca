"""report.md (tl_core/report.py): the headline table, read from the sections the notebooks write into metrics.json,
at most 15 rows, robust to sections that are missing; everything else stays in metrics.json."""

import json
import re

from tl_core import report
from tl_core.artifacts import MANIFEST_FILE, METRICS_FILE


def summary_rows(table):
    """fine_tuning.summary rows from {(strategy, n_labels): (mean, std, runs)}."""
    return [{"strategy": strategy, "n_labels": n, "mean": mean, "std": std, "runs": runs}
            for (strategy, n), (mean, std, runs) in table.items()]


#: What a whole run of the course records, in the shapes notebooks 04-07 write (values made up, each one distinct).
METRICS = {
    "data": {"vocab_size": 50000, "domain_gap": {"amazon:kitchen": {"oov_token_share": 0.0241}}},
    "embeddings": {"vocab_coverage": 1.0, "word2vec_seconds": 61.2},
    "fused_lstm": {"parity_max_difference": 2.4e-7, "targets": {"tutorial": 0.91}},
    "language_model": {"val_perplexity": 86.437, "val_loss": 4.4594, "train_tokens": 8_000_000,
                       "train_seconds": 612.4, "tokens_per_second": 13063, "epochs": 1},
    "source": {"test_accuracy": 0.90568, "test_f1": 0.9063, "init": "language_model", "train_seconds": 110.2},
    "transfer": {"target": "amazon:kitchen", "zero_shot_accuracy": 0.7625, "oov_rate": 0.0241,
                 "results": [{"strategy": "scratch", "n_labels": 200, "seed": 1, "accuracy": 0.547}]},
    "fine_tuning": {
        "target": "amazon:kitchen", "zero_shot_accuracy": 0.7625,
        "summary": summary_rows({("scratch", 50): (0.517, 0.026, 3), ("scratch", 100): (0.544, 0.025, 3),
                                 ("scratch", 400): (0.609, 0.049, 3), ("gradual", 100): (0.758, 0.005, 3),
                                 ("hybrid", 100): (0.819, 0.001, 3), ("hybrid", 400): (0.835, 0.014, 3),
                                 ("intermediate", 400): (0.817, 0.004, 3)}),
        "label_multiplier": {"at": 100, "best_strategy": "hybrid", "best_accuracy": 0.819, "baseline": "scratch",
                             "baseline_labels_needed": 1620.0, "multiplier": 16.2, "at_least": None}},
}
MANIFEST = {"profile": "quick", "parameters": {}, "notebooks": {
    "00_setup": {"status": "complete", "seconds": 5.2}, "01_data": {"status": "complete", "seconds": 26.0},
    "05_source_lstm": {"status": "complete", "seconds": 281.0}, "07_fine_tuning": {"status": "complete",
                                                                                   "seconds": 290.4}}}


def write_run(tmp_path, metrics, manifest=MANIFEST):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics))
    if manifest is not None:
        (run_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    return run_dir


def headline_table(markdown):
    """The rows of report.md's headline table as {what: value}."""
    section = markdown.split("## Headline numbers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # without the header
    return dict(tuple(cell.strip() for cell in row.strip("|").split(" | ")) for row in rows)


def test_the_headline_of_a_whole_run(tmp_path):
    table = headline_table(report.build_report(write_run(tmp_path, METRICS)))
    assert table == {
        "IMDB test accuracy of the source model": "90.57 % (starts from: language_model)",
        "language model: validation perplexity": "86.4 (8,000,000 training tokens, 612 s, 13,063 tokens/s)",
        "zero-shot accuracy on the target": "76.2 % (amazon:kitchen)",
        "best at 100 labels": "hybrid 81.9 ± 0.1 % (3 seeds)",
        "best at 400 labels": "hybrid 83.5 ± 1.4 % (3 seeds)",
        "label multiplier": "16.2× (scratch needs about 1,620 labels to match hybrid at 100)",
        "notebook times": "00 5 s · 01 26 s · 05 4.7 min · 07 4.8 min (total 10.0 min)",
    }


def test_everything_else_stays_in_metrics_json(tmp_path):
    markdown = report.build_report(write_run(tmp_path, METRICS))
    for detail in ("domain_gap", "parity_max_difference", "val_loss", "test_f1", "word2vec_seconds", "0.0241"):
        assert detail not in markdown, f"{detail} belongs in metrics.json, not in report.md"
    assert "[`metrics.json`](metrics.json)" in markdown


def test_the_headline_does_not_grow_with_the_run(tmp_path):
    """40 notebooks and 39 label counts: still one row of notebook times and two 'best at' rows (the label
    multiplier's count and the largest), well inside MAX_HEADLINE_ROWS."""
    manifest = {"notebooks": {f"{number:02d}_topic": {"seconds": 1.0} for number in range(40)}}
    metrics = {**METRICS, "fine_tuning": {**METRICS["fine_tuning"], "summary": summary_rows(
        {("scratch", n): (0.5 + n / 10000, 0.01, 2) for n in range(10, 400, 10)})}}
    rows = report.headline(metrics, manifest)
    names = [name for name, _ in rows]
    assert names.count("notebook times") == 1
    assert [name for name in names if name.startswith("best at")] == ["best at 100 labels", "best at 390 labels"]
    assert len(rows) <= report.MAX_HEADLINE_ROWS
    assert len(headline_table(report.build_report(write_run(tmp_path, metrics, manifest)))) == len(rows)


def test_missing_sections_leave_their_rows_out(tmp_path):
    only_data = write_run(tmp_path, {"data": METRICS["data"]}, manifest=None)
    markdown = report.build_report(only_data)
    assert "No notebook that records a headline number has run yet." in markdown
    assert report.headline({"language_model": METRICS["language_model"]}) == [
        ("language model: validation perplexity", "86.4 (8,000,000 training tokens, 612 s, 13,063 tokens/s)")]
    source_without_init = {"source": {"test_accuracy": 0.9043}}
    assert report.headline(source_without_init) == [("IMDB test accuracy of the source model", "90.43 %")]
    broken = {"source": {"test_accuracy": None}, "language_model": {"val_perplexity": float("nan")},
              "fine_tuning": {"label_multiplier": {"at": 100, "multiplier": None, "at_least": None}}}
    assert report.headline(broken) == []


def test_with_notebook_06_alone_the_best_comes_from_its_runs(tmp_path):
    """Without notebook 07's summary, the strategies are summarised from transfer.results (mean ± std over seeds)."""
    results = [{"strategy": strategy, "n_labels": 200, "seed": seed, "accuracy": accuracy}
               for strategy, accuracies in (("scratch", (0.52, 0.56, 0.58)), ("finetune", (0.78, 0.80, 0.82)))
               for seed, accuracy in zip((1, 2, 3), accuracies)]
    rows = dict(report.headline({"transfer": {"target": "amazon:dvd", "zero_shot_accuracy": 0.7, "results": results}}))
    assert rows == {"zero-shot accuracy on the target": "70.0 % (amazon:dvd)",
                    "best at 200 labels": "finetune 80.0 ± 2.0 % (3 seeds)"}


def test_a_multiplier_beyond_the_grid_is_a_lower_bound():
    metrics = {"fine_tuning": {"summary": METRICS["fine_tuning"]["summary"], "label_multiplier": {
        "at": 100, "best_strategy": "hybrid", "baseline": "scratch", "multiplier": None, "at_least": 4.0}}}
    assert dict(report.headline(metrics))["label multiplier"] == (
        "more than 4× (scratch does not match hybrid at 100 within the grid)")


def test_few_labels_fall_back_to_100_then_to_the_smallest_count():
    rows = summary_rows({("scratch", 50): (0.5, 0.0, 1), ("frozen", 100): (0.7, 0.0, 1), ("frozen", 800): (0.8, 0.0, 1)})
    labels = [what for what, _ in report.headline({"fine_tuning": {"summary": rows}})]
    assert labels == ["best at 100 labels", "best at 800 labels"]
    single = [what for what, _ in report.headline({"fine_tuning": {"summary": rows[:1]}})]
    assert single == ["best at 50 labels"]  # the smallest count is also the largest: one row


def test_compare_puts_the_headline_first(tmp_path):
    first = write_run(tmp_path, METRICS)
    table = report.compare_runs([first])
    names = [re.match(r"\| ([^|]+?) \|", line).group(1) for line in table.splitlines()[2:]]
    assert names.index("best at 100 labels") < names.index("source.test_f1")
    assert "| label multiplier | 16.2× (scratch needs about 1,620 labels to match hybrid at 100) |" in table
