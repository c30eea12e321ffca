"""A closer source: the source model trained first on labelled reviews of related domains, never the target's
texts (:func:`related_specs`, :func:`related_data`, :func:`train_intermediate`), once for all seeds
(:class:`Intermediate`) or once per seed (:class:`IntermediateStages`, :func:`intermediate_for`); the
``intermediate`` strategy and the ensembles that hold it start from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# check_related_specs is the rule of the related data's specs; it lives with the specs (data), where the runner's
# parameter checks find it too (the package re-exports it as transfer.check_related_specs, its old name).
from ..data import (AMAZON_DOMAINS, TextDataset, check_related_specs, check_target_spec, draw_labels, load_target,
                    same_dataset, same_text_key, train_val_split)
from ..train import TrainConfig
from .protocol import EVAL_BATCH_SIZE, TargetTask, zero_shot
from .results import _std
from .strategies import Strategy, from_intermediate, train_strategy


#: The intermediate stage's learning rate (AdamW, every layer), half the transfer runs' default: the stage starts
#: from a trained model and sees thousands of labelled reviews.
INTERMEDIATE_LR = 1e-3

#: How the intermediate stage trains: every source weight at once, the learning rate decaying linearly to 0.
INTERMEDIATE_RECIPE = Strategy("intermediate stage", "source", schedule="linear",
                               description="the source model trained on labelled reviews of related domains")


@dataclass
class Intermediate:
    """The source model after an intermediate stage on labelled reviews of related domains
    (:func:`train_intermediate`): the starting point of ``init_from="intermediate"`` strategies."""

    state_dict: dict[str, torch.Tensor]  # the weights after the stage (same architecture as the source)
    specs: list[str]  # the related datasets (load_target specs)
    examples: int  # labelled related reviews used (training + validation)
    dropped: int  # related reviews left out because the target holds the same text
    val_accuracy: float  # on the related validation part, at the epoch kept
    zero_shot_accuracy: float  # on the target's test split: the stage used no target label
    history: Any  # tl_core.train.History of the stage

    def for_seed(self, seed: int) -> "Intermediate":  # noqa: ARG002 (as IntermediateStages.for_seed)
        """This stage, whatever the seed: every run starts from it (see :class:`IntermediateStages`)."""
        return self

    def summary(self) -> dict[str, Any]:
        """What ``metrics.json`` records of the stage."""
        return {"specs": self.specs, "examples": self.examples, "dropped_as_target_texts": self.dropped,
                "val_accuracy": self.val_accuracy, "zero_shot_accuracy": self.zero_shot_accuracy,
                "epochs_trained": len(self.history.epochs), "best_epoch": self.history.best_epoch,
                "seconds": round(self.history.seconds, 2)}


@dataclass
class IntermediateStages:
    """One intermediate stage per seed (:func:`intermediate_for`): the ``intermediate`` runs of a seed start from
    that seed's stage, so their spread over seeds includes the stage's own randomness, not only the target draw's.
    Read like one :class:`Intermediate` where a single number is wanted (``zero_shot_accuracy`` is the mean)."""

    by_seed: dict[int, Intermediate]

    def __post_init__(self):
        if not self.by_seed:
            raise ValueError("IntermediateStages needs at least one stage (one per seed)")

    def for_seed(self, seed: int) -> Intermediate:
        """The stage the runs of ``seed`` start from."""
        if seed not in self.by_seed:
            raise ValueError(f"no intermediate stage for seed {seed}: stages were trained for seeds "
                             f"{sorted(self.by_seed)}; train them with intermediate_for(..., seeds=...) for every "
                             "seed of the grid")
        return self.by_seed[seed]

    @property
    def specs(self) -> list[str]:
        return next(iter(self.by_seed.values())).specs

    @property
    def examples(self) -> int:
        return next(iter(self.by_seed.values())).examples

    @property
    def zero_shot_accuracy(self) -> float:
        """Mean over the stages of the zero-shot accuracy on the target's test split."""
        return float(np.mean([stage.zero_shot_accuracy for stage in self.by_seed.values()]))

    @property
    def zero_shot_std(self) -> float:
        """Their standard deviation over the stages (as :func:`summarize`'s, ddof=1; 0 for one stage)."""
        return _std([stage.zero_shot_accuracy for stage in self.by_seed.values()])

    def summary(self) -> dict[str, Any]:
        """What ``metrics.json`` records: the mean zero-shot accuracy and each seed's stage."""
        return {"specs": self.specs, "examples": self.examples, "zero_shot_accuracy": self.zero_shot_accuracy,
                "zero_shot_std": self.zero_shot_std,
                "stages": {str(seed): stage.summary() for seed, stage in sorted(self.by_seed.items())}}


def intermediate_for(strategies, task: TargetTask, source: dict[str, Any], *, epochs: int, seeds: list[int],
                     specs=None, data_dir=None, limit: int = 0) -> "IntermediateStages | None":
    """The intermediate stages of the notebooks, if any of ``strategies`` (names or Strategy objects) starts from
    them, else None: for every seed, :func:`train_intermediate` seeded by it (its related draw, validation part,
    order and initialisation) for ``epochs`` at :data:`INTERMEDIATE_LR`, patience 1, on at most ``limit`` related
    reviews (0: all). Used by notebooks 06 and 07."""
    if not from_intermediate(strategies):
        return None
    if not seeds:
        raise ValueError("intermediate_for needs the seeds of the grid: one stage is trained per seed")
    return IntermediateStages({seed: train_intermediate(
        task, source, TrainConfig(epochs=epochs, lr=INTERMEDIATE_LR, patience=1, seed=seed), specs=specs,
        data_dir=data_dir, limit=limit or None) for seed in seeds})


def related_specs(target_spec: str) -> list[str]:
    """The related datasets of a target: every Amazon domain (Blitzer et al. 2007) except the target's own (or,
    for an FDU-MTL domain, its counterpart); all four for a target that is not an Amazon domain (SST-2, a user's
    file)."""
    target = check_target_spec(target_spec)
    return [f"amazon:{domain}" for domain in AMAZON_DOMAINS if not same_dataset(f"amazon:{domain}", target)]


def related_data(task: TargetTask, specs: list[str] | None = None, data_dir=None, limit: int | None = None,
                 seed: int = 0):
    """The labelled reviews of the intermediate stage: the datasets ``specs`` (default :func:`related_specs` of
    the target) in one TextDataset, without any review whose text the target also holds (``data.same_text_key``),
    test split or pool, so that no target text is ever trained on with its label. ``limit``: at most this many,
    a stratified draw seeded by ``seed`` (None or 0: all). Returns (dataset, how many were dropped as target
    texts). Introduced in ``notebooks/07_fine_tuning.ipynb``."""
    specs = check_related_specs(task.spec, related_specs(task.spec) if specs is None else specs)
    target_texts = {same_text_key(text) for text in [*task.split.test.texts, *task.split.pool.texts]}
    texts, labels, ids, dropped = [], [], [], 0
    for spec in specs:
        part = load_target(spec, data_dir)
        for text, label, id_ in zip(part.texts, part.labels.tolist(), part.ids):
            if same_text_key(text) in target_texts:
                dropped += 1
                continue
            texts.append(text)
            labels.append(label)
            ids.append(f"{spec}/{id_}")
    if len(set(labels)) < 2:
        raise ValueError(f"the related datasets {specs} leave {len(texts)} reviews outside the target, not both "
                         "classes: nothing for the intermediate stage to learn from")
    related = TextDataset(name="related", texts=texts, labels=np.asarray(labels, dtype=np.int64), ids=ids)
    if limit and limit < len(related):
        related = draw_labels(related, limit, seed)
    return related, dropped


def train_intermediate(task: TargetTask, source: dict[str, Any], config: TrainConfig, *, batch_size: int = 32,
                       specs: list[str] | None = None, data_dir=None, limit: int | None = None,
                       val_fraction: float = 0.1) -> Intermediate:
    """The intermediate stage: the source model trained on :func:`related_data` (every weight,
    :data:`INTERMEDIATE_RECIPE`, validation carved from the related data, never from the target) and measured
    zero-shot on the target's test split. Seeded by ``config.seed``. The ``intermediate`` strategy starts from it.
    Introduced in ``notebooks/07_fine_tuning.ipynb``."""
    specs = check_related_specs(task.spec, related_specs(task.spec) if specs is None else specs)
    related, dropped = related_data(task, specs, data_dir, limit, config.seed)
    train_part, val_part = train_val_split(related, val_fraction, config.seed)
    model, history = train_strategy(INTERMEDIATE_RECIPE, source, None,
                                    task.loader(train_part, batch_size, shuffle=True, seed=config.seed),
                                    task.loader(val_part, EVAL_BATCH_SIZE, shuffle=False), config)
    best = next(epoch for epoch in history.epochs if epoch["epoch"] == history.best_epoch)
    return Intermediate(state_dict={name: value.detach().cpu().clone() for name, value in model.state_dict().items()},
                        specs=specs, examples=len(related), dropped=dropped,
                        val_accuracy=float(best["val_accuracy"]),
                        zero_shot_accuracy=float(zero_shot(model, task)["accuracy"]), history=history)
