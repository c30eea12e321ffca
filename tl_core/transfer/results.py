"""What the grid's records say: mean and spread over seeds per (strategy, n_labels) (:func:`summarize`,
:func:`format_summary`), paired differences between two strategies on the same draws
(:func:`paired_difference`), how far the test sample alone could move an accuracy (:func:`accuracy_interval`),
how many labels a strategy needs and the label multiplier (:func:`labels_needed`, :func:`label_multiplier`), and
records of two grids merged (:func:`merge_results`).
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np

from .strategies import STRATEGIES, transfers


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation (over seeds, ddof=1; 0 for a single seed) of the accuracy per (strategy,
    n_labels), in the order strategies first appear, then by n_labels."""
    order = list(dict.fromkeys(record["strategy"] for record in records))
    groups: dict[tuple[str, int], list[float]] = {}
    for record in records:
        groups.setdefault((record["strategy"], record["n_labels"]), []).append(record["accuracy"])
    rows = []
    for (strategy, n_labels), accuracies in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        rows.append({"strategy": strategy, "n_labels": n_labels, "mean": float(np.mean(accuracies)),
                     "std": _std(accuracies), "runs": len(accuracies)})
    return rows


def paired_difference(records: list[dict[str, Any]], strategy: str, baseline: str, n_labels: int
                      ) -> tuple[float, float]:
    """How much better ``strategy`` did than ``baseline`` at ``n_labels``, in accuracy points, paired by seed (the
    two trained on the same draw): the mean and standard deviation (ddof=1; 0 for a single seed) over the seeds of
    ``strategy`` of its accuracy minus the baseline's. A seed that has ``strategy`` but not ``baseline`` is an error,
    and so is a ``strategy`` with no record at ``n_labels``. Paired differences vary less than two strategies'
    own spreads suggest: within a seed both saw the same labels (notebooks 07 and 08)."""
    mine = {r["seed"]: r["accuracy"] for r in records if r["strategy"] == strategy and r["n_labels"] == n_labels}
    base = {r["seed"]: r["accuracy"] for r in records if r["strategy"] == baseline and r["n_labels"] == n_labels}
    if not mine:
        raise ValueError(f"no results for strategy {strategy!r} at n_labels={n_labels}")
    unpaired = sorted(seed for seed in mine if seed not in base)
    if unpaired:
        raise ValueError(f"{baseline!r} has no result at n_labels={n_labels} for seeds {unpaired} of {strategy!r}: "
                         "a paired difference needs both on the same draws")
    differences = 100 * np.array([mine[seed] - base[seed] for seed in mine])
    return float(differences.mean()), _std(differences)


def accuracy_interval(accuracy: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of an accuracy measured on ``n`` test examples: how far another test sample of
    the same size could move it, all else fixed. The ± over seeds does not hold this (every seed is tested on the
    same split). Introduced in ``notebooks/07_fine_tuning.ipynb``."""
    if n <= 0:
        raise ValueError(f"an accuracy interval needs at least one test example, got n={n}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    denominator = 1 + z * z / n
    centre = (accuracy + z * z / (2 * n)) / denominator
    half = z * float(np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _std(values) -> float:
    """The spread this module reports: the sample standard deviation (ddof=1), 0 for a single value."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def format_summary(rows: list[dict[str, Any]], zero_shot_accuracy: float | None = None) -> str:
    """A plain-text table: one row per strategy, one column per n_labels, ``mean ± std`` in percent."""
    strategies = list(dict.fromkeys(row["strategy"] for row in rows))
    sizes = sorted({row["n_labels"] for row in rows})
    cell = {(row["strategy"], row["n_labels"]): f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}" for row in rows}
    width = max(14, *(len(value) + 2 for value in cell.values()))
    lines = [f"{'strategy':<12}" + "".join(f"{f'{n} labels':>{width}}" for n in sizes)]
    for strategy in strategies:
        lines.append(f"{strategy:<12}" + "".join(f"{cell.get((strategy, n), '-'):>{width}}" for n in sizes))
    if zero_shot_accuracy is not None:
        lines.append(f"{'zero-shot':<12}" + f"{100 * zero_shot_accuracy:>{width}.1f}" + " (no target labels)")
    return "\n".join(lines)


def labels_needed(rows: list[dict[str, Any]], strategy: str, accuracy: float) -> float | None:
    """How many labels ``strategy`` needs to reach ``accuracy`` (mean over seeds): the first grid point that
    reaches it, interpolated linearly in log(n_labels) from the point before; None if no point of the grid does
    (then it needs more than the largest n_labels measured)."""
    curve = sorted((row["n_labels"], row["mean"]) for row in rows if row["strategy"] == strategy)
    if not curve:
        raise ValueError(f"no results for strategy {strategy!r}")
    for index, (n_labels, mean) in enumerate(curve):
        if mean >= accuracy:
            if index == 0:
                return float(n_labels)
            (n_before, mean_before) = curve[index - 1]
            share = (accuracy - mean_before) / (mean - mean_before)
            return float(np.exp(np.log(n_before) + share * (np.log(n_labels) - np.log(n_before))))
    return None


def label_multiplier(rows: list[dict[str, Any]], at: int, baseline: str = "scratch") -> dict[str, Any]:
    """ULMFiT's question: the best transfer strategy at ``at`` labels reaches some accuracy; how many labels does
    ``baseline`` need for it, as a multiple of ``at``? ``multiplier`` is None (with ``at_least`` = largest grid
    point / at) when the baseline never gets there within the grid. Candidates are all strategies but the
    baseline and those of :data:`STRATEGIES` that transfer nothing (``ngrams``); unknown names (variants) count."""
    candidates = [row for row in rows if row["n_labels"] == at and row["strategy"] != baseline
                  and (row["strategy"] not in STRATEGIES or transfers(row["strategy"]))]
    if not candidates:
        raise ValueError(f"no transfer results at n_labels={at}; put {at} into the grid")
    best = max(candidates, key=lambda row: row["mean"])
    needed = labels_needed(rows, baseline, best["mean"])
    largest = max(row["n_labels"] for row in rows if row["strategy"] == baseline)
    return {"at": at, "best_strategy": best["strategy"], "best_accuracy": best["mean"], "baseline": baseline,
            "baseline_labels_needed": needed, "multiplier": None if needed is None else needed / at,
            "at_least": None if needed is not None else largest / at}


def merge_results(existing: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``existing`` records with ``new`` ones added; a new record replaces an old one of the same (strategy,
    n_labels, seed). Notebook 07 adds its label-efficiency grid to notebook 06's ``metrics.json["transfer"]``."""
    def key(record):
        return record["strategy"], record["n_labels"], record["seed"]

    replaced = {key(record) for record in new}
    return [record for record in existing if key(record) not in replaced] + list(new)
