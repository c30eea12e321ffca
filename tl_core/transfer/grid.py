"""The grid runner: every (n_labels, seed, strategy) on the same labelled draw per (n_labels, seed), a paired
comparison, each model trained by the one loop and measured once on the test split (:func:`run_grid`). Within a
draw (:class:`_Draw`) a recipe is trained once, however many strategies (self-training, ensembles) reuse it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from typing import Any, Container

import numpy as np
from torch import nn
from tqdm.std import tqdm

from ..models import EnsembleClassifier, SentimentLSTM
from ..train import TrainConfig, evaluate
from .calibration import fit_temperature
from .intermediate import Intermediate, IntermediateStages
from .protocol import EVAL_BATCH_SIZE, TargetTask, draw_training_data
from .selftrain import self_train, unlabelled_texts
from .strategies import (Strategy, _need_intermediate, _need_language_models, from_intermediate, get_strategy,
                         members_of, train_strategy)


class _Draw:
    """One (n_labels, seed) draw of :func:`run_grid`: trains each strategy on it once. A self-training strategy
    reuses the model its recipe already trained on the draw; an ensemble reuses (or trains) its members' models."""

    def __init__(self, task, train_data, val_data, source, embedding_weights, config, batch_size, stage, chosen,
                 language_models=None):
        self.task, self.train_data, self.val_data, self.source = task, train_data, val_data, source
        self.language_models = language_models
        self.embedding_weights, self.config, self.batch_size, self.stage = embedding_weights, config, batch_size, stage
        self.chosen = chosen
        self.train_loader = task.loader(train_data, batch_size, shuffle=True, seed=config.seed)
        self.val_loader = task.loader(val_data, EVAL_BATCH_SIZE, shuffle=False)
        self.by_recipe: dict[Strategy, tuple[SentimentLSTM, Any]] = {}  # recipe -> (model, history) on this draw
        self.done: dict[str, tuple] = {}  # strategy name -> (model, history, pseudo-labelled data, seconds)

    def _recipe(self, recipe: Strategy) -> tuple[SentimentLSTM, Any]:
        if recipe not in self.by_recipe:
            self.by_recipe[recipe] = train_strategy(recipe, self.source, self.embedding_weights, self.train_loader,
                                                    self.val_loader, self.config, intermediate=self.stage,
                                                    language_models=self.language_models)
        return self.by_recipe[recipe]

    def train(self, strategy: Strategy) -> tuple[nn.Module, Any, Any, float]:
        """(model, history or None for an ensemble, pseudo-labels or None, seconds of training it cost)."""
        if strategy.name in self.done:
            return self.done[strategy.name]
        started, history, pseudo = time.perf_counter(), None, None
        if strategy.members:
            parts = [self.train(member) for member in members_of(strategy, self.chosen)]
            members, calibrating = [part[0] for part in parts], time.perf_counter()
            temperatures = [fit_temperature(member, self.val_loader) for member in members] \
                if strategy.calibrate else None
            model = EnsembleClassifier(members, temperatures)
            seconds = sum(part[3] for part in parts) + time.perf_counter() - calibrating
        elif strategy.pseudo_label_fraction > 0:
            teacher = self._recipe(strategy.recipe)
            unlabelled = unlabelled_texts(self.task, self.train_data.ids + self.val_data.ids, self.config.seed)
            model, history, pseudo = self_train(strategy, teacher, self.source, self.embedding_weights, self.task,
                                                self.train_data, unlabelled, self.val_loader, self.config,
                                                self.batch_size, intermediate=self.stage,
                                                language_models=self.language_models)
            seconds = time.perf_counter() - started
        else:
            model, history = self._recipe(strategy.recipe)
            seconds = time.perf_counter() - started
        self.done[strategy.name] = (model, history, pseudo, seconds)
        return self.done[strategy.name]


def run_grid(task: TargetTask, source: dict[str, Any], embedding_weights, strategies: list[str | Strategy],
             n_labels_grid: list[int], seeds: list[int], config: TrainConfig, *, batch_size: int,
             val_fraction: float, keep_models: bool | Container[tuple[str, int, int]] = False,
             progress: bool = True, intermediate: "Intermediate | IntermediateStages | None" = None,
             language_models: dict[str, dict[str, Any]] | None = None,
             ) -> tuple[list[dict[str, Any]], dict[tuple[str, int, int], SentimentLSTM]]:
    """Every (n_labels, seed, strategy): the same labelled draw for all strategies of a (n_labels, seed) (a paired
    comparison), trained by the one loop and measured once on the test split. Returns the records
    ``{strategy, n_labels, seed, accuracy, ...}`` and the trained models by ``(strategy, n_labels, seed)``:
    all with ``keep_models=True``, those whose key is in ``keep_models`` when it is a collection of keys.
    ``strategies`` are names of :data:`STRATEGIES` or :class:`Strategy` objects (variants, e.g. in notebook 07's
    exercises). Strategies that start from the intermediate model need ``intermediate``: one stage
    (:func:`train_intermediate`) shared by every seed, or one per seed (:func:`intermediate_for`). Strategies that
    start from a language model (:data:`ULMFIT_STRATEGIES`) need it in ``language_models``, by ``init_from``:
    ``{"language_model": the IMDB language model's payload, "target_language_model": the payload after
    :func:`fine_tune_language_model`}``, of the task's vocabulary (checked before anything trains). An ensemble's
    members are trained once per draw, shared with their own rows when listed too; its record's ``seconds`` is
    the sum of its members' training (plus fitting their temperatures when it calibrates; the record then holds
    ``temperatures``, one per member) and its ``epochs_trained``/``best_epoch`` are None.
    Introduced in ``notebooks/06_transfer.ipynb``."""
    chosen = [name if isinstance(name, Strategy) else get_strategy(name) for name in strategies]
    starts_there = from_intermediate(chosen)
    _need_intermediate(starts_there, intermediate)  # refused before anything trains, as a seed without a stage
    _need_language_models(chosen, language_models, list(task.vocab.itos))
    stages = {seed: intermediate.for_seed(seed) if starts_there else None for seed in seeds}
    records, models = [], {}
    test_loader = task.test_loader()
    runs = [(n, seed) for n in n_labels_grid for seed in seeds]
    bar = tqdm(total=len(runs) * len(chosen), desc="runs", file=sys.stdout, disable=not progress, ncols=100)
    pool_labels = dict(zip(task.split.pool.ids, task.split.pool.labels.tolist()))
    for n_labels, seed in runs:
        draw = _Draw(task, *draw_training_data(task, n_labels, seed, val_fraction), source, embedding_weights,
                     replace(config, seed=seed, progress=False), batch_size, stages[seed], chosen, language_models)
        for strategy in chosen:
            model, history, pseudo, seconds = draw.train(strategy)
            test = evaluate(model, test_loader)
            record = {"strategy": strategy.name, "n_labels": n_labels, "seed": seed,
                      "accuracy": test["accuracy"], "f1": test["f1"], "train_examples": len(draw.train_data),
                      "val_examples": len(draw.val_data),
                      "epochs_trained": len(history.epochs) if history is not None else None,
                      "best_epoch": history.best_epoch if history is not None else None, "seconds": round(seconds, 2)}
            if strategy.members:
                record["members"] = list(strategy.members)
                if strategy.calibrate:
                    record["temperatures"] = [round(float(t), 4) for t in model.temperatures]
            if pseudo is not None:  # how right the self-made labels were: read from the pool after the run
                record["pseudo_labels"] = len(pseudo)
                record["pseudo_label_accuracy"] = float(np.mean(
                    [pool_labels[id_] == label for id_, label in zip(pseudo.ids, pseudo.labels.tolist())])) \
                    if len(pseudo) else None
            records.append(record)
            key = (strategy.name, n_labels, seed)
            if keep_models is True or (not isinstance(keep_models, bool) and key in keep_models):
                models[key] = model
            bar.set_postfix(last=f"{strategy.name}@{n_labels}/s{seed}: {100 * test['accuracy']:.1f}%", refresh=False)
            bar.update()
    bar.close()
    return records, models
