"""Reports of runs: ``report.md`` and HTML renderings of one run directory, and runs compared side by side.

Used by ``python -m tl_core.run`` (after every run, and as ``report`` / ``compare``); introduced in the README's
"Running with other parameters".
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
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
    """(strategy, n_labels) -> (mean accuracy, standard deviation over seeds, number of seeds)."""
    groups: dict[tuple[str, int], list[float]] = defaultdict(list)
    for record in results:
        groups[(record["strategy"], int(record["n_labels"]))].append(float(record["accuracy"]))
    return {key: (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))
            for key, values in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0]))}


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
    """The markdown of report.md: what ran, the headline numbers, the transfer table, figures, environment."""
    run_dir = Path(run_dir)
    manifest = read_json(run_dir / MANIFEST_FILE) if (run_dir / MANIFEST_FILE).exists() else {}
    metrics = read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else {}
    lines = [f"# Run report: `{run_dir.name}`", ""]
    if manifest:
        overrides = ", ".join(f"`{k}={v!r}`" for k, v in manifest.get("parameters", {}).items()) or "none"
        lines += [f"Profile **{manifest.get('profile', '?')}**; parameters beyond the profile's defaults: {overrides}."]
        if manifest.get("reused"):
            lines += [f"Artifacts of notebooks not run here came from `{manifest['reused']}`."]
        rows = []
        for stem, record in manifest.get("notebooks", {}).items():
            html = run_dir / HTML_DIR / f"{stem}.html"
            link = f"[html]({HTML_DIR}/{stem}.html)" if html.exists() else ""
            seconds = record.get("seconds")
            rows.append([stem, record.get("status", "?"), f"{seconds:.0f} s" if seconds is not None else "", link])
        lines += ["", "## Notebooks", "", _markdown_table(["notebook", "status", "time", "rendering"], rows)]
    headline = {k: v for k, v in flatten(metrics).items()}
    if headline:
        lines += ["", "## Headline numbers", "",
                  _markdown_table(["metric", "value"], [[k, format_value(v)] for k, v in headline.items()])]
    results = metrics.get("transfer", {}).get("results")
    if results:
        summary = transfer_summary(results)
        strategies = sorted({strategy for strategy, _ in summary})
        label_counts = sorted({n for _, n in summary})
        rows = []
        for strategy in strategies:
            row = [strategy]
            for n in label_counts:
                if (strategy, n) in summary:
                    mean, std, seeds = summary[(strategy, n)]
                    row.append(f"{100 * mean:.1f} ± {100 * std:.1f} ({seeds})")
                else:
                    row.append("")
            rows.append(row)
        lines += ["", f"## Transfer: target accuracy (%), mean ± std over seeds (number of seeds)", "",
                  _markdown_table(["strategy"] + [f"{n} labels" for n in label_counts], rows)]
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
    """A markdown table of several runs side by side: parameters, then every headline number."""
    columns = []
    for run_dir in run_dirs:
        manifest = read_json(run_dir / MANIFEST_FILE) if (run_dir / MANIFEST_FILE).exists() else {}
        metrics = read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else {}
        values = {f"param.{k}": v for k, v in manifest.get("parameters", {}).items()}
        values["profile"] = manifest.get("profile")
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
