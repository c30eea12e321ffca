"""Self-training (the ``selftrain`` strategy): a model trained on the drawn labels labels the pool's unlabelled
texts it is surest of (:func:`unlabelled_texts`, :func:`pseudo_label`), and the same recipe is trained again on
the real labels plus these (:func:`self_train`). No test text is ever read: the pool holds none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis import predict_probabilities
from ..data import TextDataset
from ..models import SentimentLSTM
from ..text import numericalize
from ..train import TrainConfig
from .protocol import TargetTask
from .strategies import Strategy, train_strategy

if TYPE_CHECKING:
    from .intermediate import Intermediate


#: Unlabelled target texts a self-training run reads at most: a seeded sample of the pool outside the draw (SST-2's
#: pool holds 67k sentences; labelling and training on all of them would cost more than everything else).
MAX_UNLABELLED = 2000


def unlabelled_texts(task: TargetTask, drawn_ids, seed: int, limit: int = MAX_UNLABELLED):
    """The target texts a self-training run may read: the pool's texts outside this run's draw (``drawn_ids``,
    training and validation), their labels removed so that nothing downstream can read them, at most ``limit``
    (a sample seeded by ``seed``). Never a test text: the pool holds none. Introduced in ``07_fine_tuning``."""
    pool, drawn = task.split.pool, set(drawn_ids)
    rest = np.array([index for index, id_ in enumerate(pool.ids) if id_ not in drawn], dtype=np.int64)
    if len(rest) > limit:
        rest = np.sort(np.random.default_rng(seed).choice(rest, size=limit, replace=False))
    texts = pool.subset(rest)
    return TextDataset(name=f"{pool.name.removesuffix('/pool')}/unlabelled", texts=texts.texts, labels=None,
                       ids=texts.ids)


def pseudo_label(model: SentimentLSTM, task: TargetTask, unlabelled, fraction: float, class_shares: dict[int, float]):
    """Self-training's labels: ``model``'s own predictions on the ``unlabelled`` texts it is surest of, about
    ``fraction`` of them in all, split between the classes as ``class_shares`` says (the labelled draw's balance,
    so that a model leaning towards one class does not hand its lean on), and only where the prediction is that
    class. Returns a labelled TextDataset (the texts' ids kept). Introduced in ``07_fine_tuning``."""
    if unlabelled.labels is not None:
        raise ValueError("pseudo_label takes unlabelled texts (labels=None): self-training must not see labels")
    name = f"{unlabelled.name}/pseudo-labelled"
    if len(unlabelled) == 0:
        return TextDataset(name=name, texts=[], labels=np.zeros(0, dtype=np.int64), ids=[])
    probabilities = predict_probabilities(model, numericalize(unlabelled.texts, task.vocab, task.max_len))
    total = int(round(fraction * len(unlabelled)))
    positives = int(round(total * class_shares[1]))
    order = np.argsort(probabilities, kind="stable")  # surest negative first, surest positive last
    negative = [i for i in order[:total - positives] if probabilities[i] < 0.5]
    positive = [i for i in order[::-1][:positives] if probabilities[i] >= 0.5]
    chosen = np.sort(np.asarray(negative + positive, dtype=np.int64))
    return TextDataset(name=name, texts=[unlabelled.texts[i] for i in chosen],
                       labels=(probabilities[chosen] >= 0.5).astype(np.int64), ids=[unlabelled.ids[i] for i in chosen])


def self_train(strategy: Strategy, teacher: tuple[SentimentLSTM, Any], source: dict[str, Any], embedding_weights,
               task: TargetTask, train_data, unlabelled, val_loader, config: TrainConfig, batch_size: int, *,
               intermediate: "Intermediate | None" = None, language_models: dict[str, Any] | None = None):
    """Self-training (Yarowsky 1995; "pseudo-labelling"): ``teacher`` = (model, history) of ``strategy.recipe``
    trained on ``train_data`` labels the ``unlabelled`` texts it is surest of (:func:`pseudo_label`); the recipe is
    then trained again, from the source, on ``train_data`` plus those, validated on the same real labels.
    ``intermediate``, ``language_models``: as for :func:`train_strategy`. Returns (model, history, pseudo-labelled
    dataset); with no unlabelled text left, the teacher is the result.
    Introduced in ``notebooks/07_fine_tuning.ipynb``."""
    shares = {label: float(np.mean(train_data.labels == label)) for label in (0, 1)}
    pseudo = pseudo_label(teacher[0], task, unlabelled, strategy.pseudo_label_fraction, shares)
    if len(pseudo) == 0:
        return teacher[0], teacher[1], pseudo
    combined = TextDataset(name=f"{train_data.name}+pseudo", texts=list(train_data.texts) + pseudo.texts,
                           labels=np.concatenate([train_data.labels, pseudo.labels]),
                           ids=list(train_data.ids) + pseudo.ids)
    model, history = train_strategy(strategy.recipe, source, embedding_weights,
                                    task.loader(combined, batch_size, shuffle=True, seed=config.seed), val_loader,
                                    config, intermediate=intermediate, language_models=language_models)
    return model, history, pseudo
