"""The notebooks' parameters: how values are read, and the one place that says which values each one may take.

A notebook declares its parameters in a cell tagged ``parameters`` (names, defaults, a help comment that may list
``# one of: a, b``). Beyond its type and those choices, a value must pass the **rules** here: ranges
(:data:`RULES`: positive sizes, fractions in (0, 1), rates above 0, distinct seeds, ...) and **relations** between
parameters (:func:`relation_problems`: the label counts a target's pool can give, ``multiplier_n_labels`` in
``n_labels_grid``, related data that is not the target). The runner (``python -m tl_core.run``) checks them before
any notebook runs; a notebook or a ``tl_core`` function checks the same rules with :func:`check`::

    from tl_core import parameters
    parameters.check({"target": target, "n_labels": n_labels, "target_val_fraction": target_val_fraction})

Values on the command line and in profiles are YAML (``3``, ``0.5``, ``[50, 100]``, ``null``), with one change:
``1e-3`` is a number (YAML 1.1 reads it as a string). Introduced in the README's "Running with other parameters".
"""

from __future__ import annotations

import math
import os
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from .data import check_related_specs, check_target_spec, check_unlabelled_spec, load_target, split_target
from .paths import find_dataset
from .target_files import FDU_DOMAINS


class ParameterError(ValueError):
    """A profile or override names a parameter no selected notebook has, or gives it a value it cannot take."""


# ------------------------------------------------------------------------------------------ reading values

class _Loader(yaml.SafeLoader):
    """YAML 1.1 with ``1e-3`` and ``2E5`` read as numbers, as everyone writes a learning rate."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
                              list("-+0123456789."))


def load_yaml(text: str, where: str = "the value") -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        raise ParameterError(f"{where} is not valid YAML: {error}") from None


def parse_value(text: str) -> Any:
    """A value from the command line, read as YAML: 3 is an int, 0.5 and 1e-3 floats, [1, 2] a list, null None;
    text YAML cannot read stays the text it is."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def split_values(text: str) -> list[str]:
    """``V1,V2,...`` split at the commas outside brackets and quotes, so that lists can be swept:
    ``[50,100],[400]`` -> ``["[50,100]", "[400]"]``."""
    parts, current, depth, quote = [], "", 0, None
    for character in text:
        if quote:
            quote = None if character == quote else quote
        elif character in "\"'" and not current.strip():
            quote = character  # a quote opens a quoted value only at its start (paths may hold apostrophes)
        elif character in "[{":
            depth += 1
        elif character in "]}":
            depth -= 1
        elif character == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += character
    if depth or quote:
        raise ParameterError(f"--sweep values {text!r}: a bracket or quote is not closed")
    return parts + [current]


def parse_sweep(items: list[str]) -> dict[str, list[Any]]:
    """``["target=amazon:books,amazon:dvd", "n_labels_grid=[50,100],[400]"]`` ->
    {"target": ["amazon:books", "amazon:dvd"], "n_labels_grid": [[50, 100], [400]]}."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, separator, values = item.partition("=")
        if not separator or not name or not values:
            raise ParameterError(f"--sweep takes NAME=VALUE1,VALUE2,... ; got {item!r}")
        if name in grid:
            raise ParameterError(f"--sweep names {name!r} twice")
        parsed = [parse_value(value.strip()) for value in split_values(values)]
        repeated = [value for index, value in enumerate(parsed) if value in parsed[:index]]
        if repeated:
            raise ParameterError(f"--sweep {name}: {repeated[0]!r} is given twice")
        grid[name] = parsed
    return grid


# ---------------------------------------------------------------------------------------- types, choices

_TYPE_OF = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}


def accepted_types(type_name: str) -> tuple[type, ...] | None:
    """Python types a parameter accepts, from its type name ("int", "Optional[str]", ...); None: unchecked."""
    optional = type_name.startswith("Optional[") and type_name.endswith("]")
    inner = type_name[len("Optional["):-1] if optional else type_name
    if inner not in _TYPE_OF:
        return None
    return _TYPE_OF[inner] + ((type(None),) if optional else ())


def type_matches(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # True is an int to Python, but not a sensible number of epochs
    return isinstance(value, types)


def allowed_values(help_text: str) -> list[str] | None:
    """The choices a help comment lists as ``one of: a, b, c`` (up to the next ';' or '.' + space), else None."""
    match = re.search(r"one of:\s*([^;]+?)(?:;|\.\s|\.$|$)", help_text or "")
    return [choice.strip() for choice in match.group(1).split(",") if choice.strip()] if match else None


# ------------------------------------------------------------------------------------------------ ranges

Rule = Callable[[Any], "str | None"]  # a complaint, or None when the value is fine


def _whole(minimum: int) -> Rule:
    def rule(value):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        return None if ok else f"must be a whole number >= {minimum}"
    return rule


def _number(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = True) -> Rule:
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def rule(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return f"must be a number in {interval}"
        inside = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
        return None if inside else f"must be in {interval}"
    return rule


def _one_of(*choices: str) -> Rule:
    return lambda value: None if value in choices else f"must be one of: {', '.join(choices)}"


def _list_of(rule: Rule, what: str) -> Rule:
    """A non-empty list of distinct values that each pass ``rule``."""
    def check_list(value):
        if not isinstance(value, list) or not value:
            return f"must be a non-empty list of {what}"
        complaints = [f"{item!r} {complaint}" for item in value if (complaint := rule(item))]
        if complaints:
            return "; ".join(complaints)
        repeated = [item for index, item in enumerate(value) if item in value[:index]]
        return f"names {repeated[0]!r} twice" if repeated else None
    return check_list


def _optional(rule: Rule) -> Rule:
    return lambda value: None if value is None else rule(value)


def _existing_folder(value):
    return None if Path(value).expanduser().is_dir() else "is not a folder"


def _target(value):
    check_target_spec(value)  # raises ValueError / FileNotFoundError with the message the user sees


def _unlabelled(value):
    check_unlabelled_spec(value)


def _targets(value):
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of target specs (or None)"
    for spec in value:
        _target(spec)
    return None


_FRACTION = _number(0, 1, low_open=True, high_open=True)
_DROPOUT = _number(0, 1)
_RATE = _number(0, low_open=True)

#: The range of each parameter the notebooks declare, by name (a name means the same in every notebook).
RULES: dict[str, Rule] = {
    "data_dir": _optional(_existing_folder),
    "target": _target,
    "related_targets": _optional(_targets),
    "unlabelled": _optional(_unlabelled),
    "seed": _whole(0),
    "seeds": _list_of(_whole(0), "seeds (whole numbers >= 0)"),
    # a draw of labels is split into training and validation by class: two of each class at least, so four
    "n_labels": _whole(4),
    "n_labels_grid": _list_of(_whole(4), "label counts (whole numbers >= 4)"),
    "multiplier_n_labels": _whole(4),
    "fdu_n_labels": _list_of(_whole(4), "label counts (whole numbers >= 4)"),
    "fdu_domains": lambda value: None if value == [] else _list_of(_one_of(*FDU_DOMAINS), "FDU-MTL domains")(value),
    "strategies": _list_of(lambda value: None, "strategy names"),
    "vocab_min_freq": _whole(1),
    "vocab_max_size": _whole(3),  # the specials <pad>, <unk> and <eos> take three entries
    "val_fraction": _FRACTION,
    "target_val_fraction": _FRACTION,
    "w2v_vector_size": _whole(1),
    "w2v_window": _whole(1),
    "w2v_min_count": _whole(1),
    "w2v_epochs": _whole(1),
    "w2v_workers": _optional(_whole(1)),
    "w2v_architecture": _one_of("cbow", "skipgram"),
    "bench_repeats": _whole(1),
    "bench_warmup": _whole(0),
    "bench_device": _optional(_one_of("cpu", "cuda")),
    "max_len": _whole(1),
    "source_max_len": _whole(1),
    "batch_size": _whole(1),
    "hidden_size": _whole(1),
    "num_layers": _whole(1),
    "embedding_dropout": _DROPOUT,
    "output_dropout": _DROPOUT,
    "lstm_dropout": _DROPOUT,
    "source_epochs": _whole(1),
    "source_lr": _RATE,
    "source_weight_decay": _number(0),
    "source_patience": _whole(0),  # 0: never stop early (TrainConfig.patience)
    "compare_reviews": _whole(1),
    "packed_reviews": _whole(1),
    "transfer_epochs": _whole(1),
    "transfer_lr": _RATE,
    "transfer_batch_size": _whole(1),
    "transfer_patience": _whole(0),
    "intermediate_examples": _whole(0),  # 0: all
    "intermediate_epochs": _whole(1),
    "saliency_reviews": _whole(0),
    # sizes of a smoke run (None: everything)
    "imdb_reviews": _optional(_whole(1)),
    "w2v_reviews": _optional(_whole(1)),
    "lm_corpus_reviews": _optional(_whole(2)),
    "source_train_reviews": _optional(_whole(2)),
    "test_reviews": _optional(_whole(2)),
    # the language model (04)
    "lm_val_reviews": _whole(1),
    "lm_hidden_size": _whole(1),
    "lm_num_layers": _whole(1),
    "lm_output_layer": _one_of("sampled", "adaptive", "full"),
    "lm_sampled_words": _whole(1),
    "lm_embedding_dropout": _DROPOUT,
    "lm_input_dropout": _DROPOUT,
    "lm_hidden_dropout": _DROPOUT,
    "lm_weight_drop": _DROPOUT,
    "lm_output_dropout": _DROPOUT,
    "lm_batch_size": _whole(1),
    "lm_bptt": _whole(2),
    "lm_epochs": _whole(1),
    "lm_max_tokens": _optional(_whole(2)),
    "lm_lr": _RATE,
    "lm_cutoffs": _list_of(_whole(1), "frequency ranks (whole numbers >= 1)"),
    "source_lr_decay": _number(1),
    "source_body_lr": _optional(_RATE),
    "bptt": _whole(0),  # 0: back-propagate through the whole review
    # ULMFiT's second stage (07)
    "lm_finetune_epochs": _whole(1),
    "lm_finetune_lr": _RATE,
}

#: Values rewritten once they pass: paths made absolute from the folder the check runs in (notebooks run
#: elsewhere), dataset specs in their canonical spelling.
NORMALISERS: dict[str, Callable[[Any], Any]] = {
    "target": check_target_spec,
    "related_targets": lambda specs: [check_target_spec(spec) for spec in specs],
    "unlabelled": check_unlabelled_spec,
    "data_dir": lambda folder: str(Path(folder).expanduser().resolve()),
}


def value_problems(values: dict[str, Any]) -> list[str]:
    """What is wrong with each value by its :data:`RULES` (names without a rule pass)."""
    problems = []
    for name, value in values.items():
        if name not in RULES:
            continue
        try:
            complaint = RULES[name](value)
        except (ValueError, TypeError, FileNotFoundError) as error:
            complaint = str(error)
        if complaint:
            problems.append(f"{name}={value!r}: {complaint}")
    return problems


def normalised(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with paths made absolute and specs canonical (they must have passed :func:`value_problems`)."""
    return {name: NORMALISERS[name](value) if name in NORMALISERS and value is not None else value
            for name, value in values.items()}


# --------------------------------------------------------------------------------------------- relations


def relation_problems(values: dict[str, Any]) -> list[str]:
    """What is wrong between parameters of one notebook (``values``: everything it will receive, its defaults
    included, each value already in range)."""
    problems = []
    grid, at = values.get("n_labels_grid"), values.get("multiplier_n_labels")
    if isinstance(grid, list) and at is not None and at not in grid:
        problems.append(f"multiplier_n_labels={at} must be one of n_labels_grid={grid} (the label multiplier is "
                        "read off the curve at that point)")
    strategies = values.get("strategies")
    if "multiplier_n_labels" in values and isinstance(strategies, list) and (
            "scratch" not in strategies or len(strategies) < 2):
        problems.append(f"strategies={strategies} must hold 'scratch' (the label multiplier's baseline) and at "
                        "least one transfer strategy")
    target = values.get("target")
    if isinstance(target, str) and values.get("related_targets"):
        try:
            check_related_specs(target, values["related_targets"])
        except ValueError as error:
            problems.append(f"related_targets={values['related_targets']!r}: {error}")
    counts = [("n_labels", values.get("n_labels"))] + [("n_labels_grid", n) for n in values.get("n_labels_grid") or []]
    counts = [(name, n) for name, n in counts if isinstance(n, int)]
    if isinstance(target, str) and counts:
        try:
            pool = pool_size(target, values.get("data_dir"))
        except (ValueError, OSError) as error:
            return problems + [f"target={target!r}: {error}"]
        for name, n in counts:
            if pool is not None and n > pool:
                problems.append(f"{name}: {n} labels, but the pool of {target} holds {pool} labelled examples (its "
                                "test split is never drawn from)")
    return problems


def pool_size(target: str, data_dir: str | os.PathLike | None = None) -> int | None:
    """How many labelled examples the pool of ``target`` holds (what ``n_labels`` may reach); None when its data
    is not here (a parameter check never downloads)."""
    spec = check_target_spec(target)
    dataset = {"amazon": "amazon", "fdu": "fdu", "sst2": "sst2"}.get(spec.partition(":")[0])
    if dataset is not None and find_dataset(dataset, data_dir) is None:
        return None
    location = Path(spec) if dataset is None else None
    stamp = location.stat().st_mtime_ns if location is not None else 0
    return _pool_size(spec, None if data_dir is None else str(data_dir), stamp)


@lru_cache(maxsize=32)
def _pool_size(spec: str, data_dir: str | None, stamp: int) -> int:  # noqa: ARG001 (stamp keys the cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FDU-MTL dvd's repaired line: reported where the data is loaded for use
        return len(split_target(load_target(spec, data_dir)).pool)


def check(values: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check parameter values by the rules and relations here and return them normalised; raise
    :class:`ParameterError` listing every problem. ``defaults`` fill in what ``values`` leaves out for the
    relations (a notebook's own defaults). For notebooks and tl_core functions; the runner calls the same rules."""
    problems = value_problems(values)
    if not problems:
        problems = relation_problems(normalised({**(defaults or {}), **values}))
    if problems:
        raise ParameterError("bad parameters:\n  - " + "\n  - ".join(problems))
    return normalised(values)


def check_notebook_parameters(notebooks: Iterable, parameters: dict[str, Any]) -> None:
    """The runner's check, before anything runs: every name declared by a selected notebook (``notebooks``: objects
    with ``path`` and papermill's ``parameters``), every value of the declared type, among the choices its help
    comment lists, in range (:data:`RULES`), and consistent with the rest of what each notebook receives
    (:func:`relation_problems`)."""
    notebooks = list(notebooks)
    declared: dict[str, list] = {}
    for nb in notebooks:
        for name in nb.parameters:
            declared.setdefault(name, []).append(nb)
    problems = []
    for name, value in parameters.items():
        if name == "run_dir":
            problems.append("run_dir is set by the runner (use --run-dir)")
        elif name not in declared:
            problems.append(f"unknown parameter {name!r}; the selected notebooks take: "
                            f"{', '.join(sorted(n for n in declared if n != 'run_dir'))}")
        else:
            problems += _declared_problems(name, value, declared[name]) or value_problems({name: value})
    if not problems:
        for nb in notebooks:
            given = {name: value for name, value in parameters.items() if name in nb.parameters}
            defaults = {name: info.get("default") for name, info in nb.parameters.items()}
            problems += [problem for problem in relation_problems(normalised({**defaults, **given}))
                         if problem not in problems]
    if problems:
        raise ParameterError("bad parameters, nothing was run:\n  - " + "\n  - ".join(problems))


def _declared_problems(name: str, value: Any, notebooks: list) -> list[str]:
    for nb in notebooks:
        info = nb.parameters[name]
        types = accepted_types(info.get("inferred_type_name", "None"))
        if types is not None and not type_matches(value, types):
            return [f"{name}={value!r} ({type(value).__name__}) but {nb.path.name} expects "
                    f"{info['inferred_type_name']} (default {info.get('default')!r})"]
        choices = allowed_values(info.get("help", ""))
        values = value if isinstance(value, list) else [value]
        if choices is not None and any(str(v) not in choices for v in values):
            return [f"{name}={value!r} is not one of: {', '.join(choices)} ({nb.path.name})"]
    return []
