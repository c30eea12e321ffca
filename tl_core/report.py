"""Reports of runs: ``report.md`` and HTML renderings of one run directory, and runs compared side by side.

``report.md`` says what ran (each notebook, its status and time) and gives the run's **headline numbers** in one
table of at most :data:`MAX_HEADLINE_ROWS` rows (:func:`headline`): the source model's IMDB accuracy, the language
model's perplexity, zero-shot accuracy on the target, the best strategy with few labels and with the most labels,
the label multiplier, and the notebooks' times. Everything else stays in ``metrics.json``. Each row is read from the
section a notebook writes there, and a section that is missing (its notebook did not run) leaves its rows out.

Used by ``python -m tl_core.run`` (after every run, and as ``report`` / ``compare``); introduced in the README's
"Running with other parameters".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .artifacts import ENVIRONMENT_FILE, HTML_DIR, METRICS_FILE, MANIFEST_FILE, REPORT_FILE, read_json, write_text


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar entries of a nested dictionary as ``section.key`` -> value; lists of records are left out
    (``transfer.results`` is summarised by :func:`transfer_summary`)."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[name] = value
    return flat


def transfer_summary(results: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[float, float, int]]:
    """(strategy, n_labels) -> (mean accuracy, standard deviation over seeds, number of seeds), by n_labels then
    strategy: :func:`tl_core.transfer.summarize` of the records, keyed for lookup."""
    from .transfer import summarize  # here, not at the top: tl_core.transfer imports torch, which reports do not need

    rows = summarize([{"strategy": record["strategy"], "n_labels": int(record["n_labels"]),
                       "accuracy": float(record["accuracy"])} for record in results])
    return {(row["strategy"], row["n_labels"]): (row["mean"], row["std"], row["runs"])
            for row in sorted(rows, key=lambda row: (row["n_labels"], row["strategy"]))}


#: The most rows the headline table of report.md may have.
MAX_HEADLINE_ROWS = 15
#: The label count the headline compares strategies at when notebook 07's label multiplier does not name one.
FEW_LABELS = 100


def _percent(fraction: Any, decimals: int = 1) -> str | None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or math.isnan(fraction):
        return None
    return f"{100 * fraction:.{decimals}f} %"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def strategy_summary(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean and spread over seeds per (strategy, n_labels): notebook 07's recorded ``fine_tuning.summary`` when it
    is there, else computed from the runs notebook 06 recorded in ``transfer.results``."""
    rows = metrics.get("fine_tuning", {}).get("summary")
    if rows:
        return [row for row in rows if {"strategy", "n_labels", "mean"} <= set(row)]
    return [{"strategy": strategy, "n_labels": n, "mean": mean, "std": std, "runs": seeds}
            for (strategy, n), (mean, std, seeds) in transfer_summary(metrics.get("transfer", {}).get("results") or [])
            .items()]


def _best_at(rows: list[dict[str, Any]], n_labels: int) -> str | None:
    candidates = [row for row in rows if row["n_labels"] == n_labels and _number(row["mean"])]
    if not candidates:
        return None
    best = max(candidates, key=lambda row: row["mean"])
    spread = f" ± {100 * best['std']:.1f}" if _number(best.get("std")) and best.get("runs", 1) > 1 else ""
    seeds = f" ({best['runs']} seeds)" if best.get("runs", 1) > 1 else ""
    return f"{best['strategy']} {100 * best['mean']:.1f}{spread} %{seeds}"


def headline(metrics: dict[str, Any], manifest: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """The run's headline numbers as (what, value) rows, read from the metrics.json sections of the notebooks that
    ran (``source``, ``language_model``, ``transfer``, ``fine_tuning``) and from run.json's times; rows whose
    section or value is missing are left out."""
    rows: list[tuple[str, str]] = []
    source = metrics.get("source", {})
    accuracy = _percent(source.get("test_accuracy"), 2)
    if accuracy:
        init = f" (starts from: {source['init']})" if source.get("init") else ""
        rows.append(("IMDB test accuracy of the source model", accuracy + init))
    language_model = metrics.get("language_model", {})
    if _number(language_model.get("val_perplexity")):
        details = []
        if _number(language_model.get("train_tokens")):
            details.append(f"{language_model['train_tokens']:,} training tokens")
        if _number(language_model.get("train_seconds")):
            details.append(f"{language_model['train_seconds']:.0f} s")
        if _number(language_model.get("tokens_per_second")):
            details.append(f"{language_model['tokens_per_second']:,.0f} tokens/s")
        rows.append(("language model: validation perplexity",
                     f"{language_model['val_perplexity']:.1f}" + (f" ({', '.join(details)})" if details else "")))
    transfer = {**metrics.get("transfer", {}), **metrics.get("fine_tuning", {})}
    zero_shot = _percent(transfer.get("zero_shot_accuracy"))
    if zero_shot:
        target = f" ({transfer['target']})" if transfer.get("target") else ""
        rows.append(("zero-shot accuracy on the target", zero_shot + target))
    summary = strategy_summary(metrics)
    counts = sorted({row["n_labels"] for row in summary})
    if counts:
        multiplier = metrics.get("fine_tuning", {}).get("label_multiplier") or {}
        few = multiplier.get("at") if multiplier.get("at") in counts else FEW_LABELS if FEW_LABELS in counts \
            else counts[0]
        for n_labels in dict.fromkeys([few, counts[-1]]):
            best = _best_at(summary, n_labels)
            if best:
                rows.append((f"best at {n_labels:,} labels", best))
    multiplier = metrics.get("fine_tuning", {}).get("label_multiplier") or {}
    if multiplier.get("at"):
        baseline, at = multiplier.get("baseline", "scratch"), multiplier["at"]
        if _number(multiplier.get("multiplier")):
            value = (f"{multiplier['multiplier']:.1f}× ({baseline} needs about "
                     f"{multiplier['baseline_labels_needed']:,.0f} labels to match {multiplier['best_strategy']} at "
                     f"{at})")
        elif _number(multiplier.get("at_least")):
            value = (f"more than {multiplier['at_least']:.0f}× ({baseline} does not match "
                     f"{multiplier['best_strategy']} at {at} within the grid)")
        else:
            value = None
        if value:
            rows.append(("label multiplier", value))
    times = [(stem, record["seconds"]) for stem, record in (manifest or {}).get("notebooks", {}).items()
             if _number(record.get("seconds"))]
    if times:
        total = sum(seconds for _, seconds in times)
        rows.append(("notebook times", " · ".join(f"{stem[:2]} {_duration(seconds)}" for stem, seconds in times)
                     + f" (total {_duration(total)})"))
    return rows[:MAX_HEADLINE_ROWS]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render_html(run_dir: Path) -> list[Path]:
    """HTML renderings of the executed notebooks in run_dir (only those newer than their rendering)."""
    import nbformat
    from nbconvert import HTMLExporter

    written = []
    exporter = None
    for notebook in sorted(run_dir.glob("*.ipynb")):
        target = run_dir / HTML_DIR / f"{notebook.stem}.html"
        if target.exists() and target.stat().st_mtime >= notebook.stat().st_mtime:
            continue
        exporter = exporter or HTMLExporter()
        body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
        written.append(write_text(target, body))
    return written


def build_report(run_dir: Path) -> str:
    """The markdown of report.md: what ran, the headline numbers (:func:`headline`), figures, environment."""
    run_dir = Path(run_dir)
    manifest = read_json(run_dir / MANIFEST_FILE) if (run_dir / MANIFEST_FILE).exists() else {}
    metrics = read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else {}
    lines = [f"# Run report: `{run_dir.name}`", ""]
    if manifest:
        overrides = ", ".join(f"`{k}={v!r}`" for k, v in manifest.get("parameters", {}).items()) or "none"
        lines += [f"Profile **{manifest.get('profile', '?')}**; parameters beyond the notebooks' defaults: {overrides}."]
        if manifest.get("reused"):
            lines += [f"Artifacts of notebooks not run here came from `{manifest['reused']}`."]
        rows = []
        for stem, record in manifest.get("notebooks", {}).items():
            html = run_dir / HTML_DIR / f"{stem}.html"
            link = f"[html]({HTML_DIR}/{stem}.html)" if html.exists() else ""
            seconds = record.get("seconds")
            rows.append([stem, record.get("status", "?"), f"{seconds:.0f} s" if seconds is not None else "", link])
        lines += ["", "## Notebooks", "", _markdown_table(["notebook", "status", "time", "rendering"], rows)]
    rows = headline(metrics, manifest)
    lines += ["", "## Headline numbers", ""]
    lines += [_markdown_table(["result", "value"], [list(row) for row in rows])] if rows else [
        "No notebook that records a headline number has run yet."]
    lines += ["", f"Everything else every notebook recorded is in [`{METRICS_FILE}`]({METRICS_FILE})."]
    figures = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*.png")
                     if HTML_DIR not in p.relative_to(run_dir).parts)
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    if (run_dir / ENVIRONMENT_FILE).exists():
        environment = read_json(run_dir / ENVIRONMENT_FILE)
        versions = ", ".join(f"{k} {v}" for k, v in environment.get("versions", {}).items())
        device = environment.get("device", {})
        lines += ["", "## Environment", "", f"{device.get('type', '?')} ({device.get('name', '?')}, "
                  f"{device.get('cpu_threads', '?')} threads); {versions}"]
    return "\n".join(lines) + "\n"


def manifest_from_notebooks(run_dir: Path) -> dict[str, Any]:
    """What ran in run_dir, read from the papermill metadata of the executed notebooks: for runs executed by
    plain papermill commands (``--dry-run`` on a scheduler), which write no run.json."""
    import nbformat

    from .course import NOTEBOOK_PATTERN, execution_problem

    manifest: dict[str, Any] = {"profile": None, "parameters": {}, "reused": None, "notebooks": {}}
    for notebook in sorted(Path(run_dir).glob(NOTEBOOK_PATTERN)):
        problem = execution_problem(notebook)
        meta = {} if problem and problem.startswith("unreadable") else \
            nbformat.read(notebook, as_version=4).metadata.get("papermill", {})
        parameters = {k: v for k, v in meta.get("parameters", {}).items() if k != "run_dir"}
        manifest["parameters"].update(parameters)
        record = {"parameters": meta.get("parameters", {}), "output": notebook.name,
                  "status": "failed" if problem else "complete", "seconds": meta.get("duration")}
        manifest["notebooks"][notebook.stem] = {**record, "error": problem} if problem else record
    return manifest


def write_report(run_dir: Path) -> Path:
    """Render the executed notebooks to HTML and (re)write ``report.md`` in run_dir (and ``run.json`` when the
    run was executed without the runner)."""
    from .artifacts import write_json

    run_dir = Path(run_dir)
    if not run_dir.is_dir():  # a mistyped path must not become an empty run directory
        raise FileNotFoundError(f"{run_dir} is not a run directory (no such folder)")
    if not (run_dir / MANIFEST_FILE).exists():
        write_json(run_dir / MANIFEST_FILE, manifest_from_notebooks(run_dir))
    render_html(run_dir)
    return write_text(run_dir / REPORT_FILE, build_report(run_dir))


def compare_runs(run_dirs: list[Path]) -> str:
    """A markdown table of several runs side by side: parameters, the headline numbers (:func:`headline`), then
    every other number of metrics.json."""
    columns = []
    for run_dir in run_dirs:
        manifest = read_json(run_dir / MANIFEST_FILE) if (run_dir / MANIFEST_FILE).exists() else {}
        metrics = read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else {}
        values = {f"param.{k}": v for k, v in manifest.get("parameters", {}).items()}
        values["profile"] = manifest.get("profile")
        values.update(headline(metrics, manifest))
        values.update(flatten(metrics))
        for (strategy, n), (mean, std, seeds) in transfer_summary(
                metrics.get("transfer", {}).get("results", [])).items():
            values[f"transfer.{strategy}@{n}"] = f"{100 * mean:.1f} ± {100 * std:.1f}"
        columns.append(values)
    keys = []
    for values in columns:
        keys += [k for k in values if k not in keys]
    rows = [[key] + [format_value(values[key]) if key in values else "" for values in columns] for key in keys]
    return _markdown_table(["run"] + [run_dir.name for run_dir in run_dirs], rows)
