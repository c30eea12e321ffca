"""The protocol every strategy is measured by: a target split once into a fixed test split and a labelled pool
(:func:`prepare_target`, :class:`TargetTask`), labels drawn from the pool per (n_labels, seed) and split into
training and validation (:func:`draw_training_data`), and the source model applied to the test split as it is
(:func:`zero_shot`). The test split is never trained on and never used for a choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..data import draw_labels, load_target, split_target, train_val_split
from ..models import SentimentLSTM
from ..text import make_loader, numericalize, tokenize_all
from ..train import evaluate


#: Reviews per evaluation batch (no gradients, so larger than a training batch).
EVAL_BATCH_SIZE = 256


@dataclass
class TargetTask:
    """A target task prepared for transfer: its fixed test split (encoded once) and the labelled pool.
    Introduced in ``notebooks/06_transfer.ipynb``."""

    spec: str  # the load_target spec it came from
    split: Any  # tl_core.data.TargetSplit: test (never trained on, never used for choices) and pool
    vocab: Any  # tl_core.text.Vocab of the source model (kept: the target's words map into it)
    max_len: int  # reviews are cut to their first max_len tokens, as for the source model
    test_encoded: Any  # tl_core.text.Encoded of split.test
    oov_rate: float  # share of the target's running tokens unknown to the source vocabulary (become <unk>)

    def test_loader(self):
        return make_loader(self.test_encoded, self.split.test.labels, EVAL_BATCH_SIZE, shuffle=False)

    def loader(self, dataset, batch_size: int, *, shuffle: bool, seed: int = 0):
        """A loader of any subset of the pool (a draw, its validation part)."""
        return make_loader(numericalize(dataset.texts, self.vocab, self.max_len), dataset.labels, batch_size,
                           shuffle=shuffle, seed=seed)


def prepare_target(spec: str, vocab, max_len: int, data_dir=None) -> TargetTask:
    """Load a target (any :func:`tl_core.data.load_target` spec), split it once (fixed, stratified test split) and
    measure how much of it the source vocabulary knows. Introduced in ``notebooks/06_transfer.ipynb``."""
    dataset = load_target(spec, data_dir)
    split = split_target(dataset)
    if len(split.pool) < 2 or len(split.test) < 2:
        raise ValueError(f"target {spec!r} has {len(dataset)} labelled examples: too few for a test split and a "
                         "pool to draw training labels from (at least a few of each class are needed)")
    token_lists = tokenize_all(dataset.texts)
    tokens_of = dict(zip(dataset.ids, token_lists))  # the test split's texts are tokenized once, here
    test_encoded = numericalize([tokens_of[id_] for id_ in split.test.ids], vocab, max_len)
    return TargetTask(spec=str(spec), split=split, vocab=vocab, max_len=max_len, test_encoded=test_encoded,
                      oov_rate=1.0 - vocab.coverage(token_lists))


def draw_training_data(task: TargetTask, n_labels: int, seed: int, val_fraction: float):
    """The labelled data of one run: ``n_labels`` examples drawn from the pool with ``seed`` (stratified; the
    same seed gives the same draw), split into training and validation (``val_fraction`` of the draw, stratified,
    for early stopping and the best epoch). Neither part ever holds a test example: the pool excludes them.
    Returns (train, val) TextDatasets. Introduced in ``notebooks/06_transfer.ipynb``."""
    if n_labels > len(task.split.pool):
        raise ValueError(f"n_labels={n_labels} but the pool of {task.spec} holds only {len(task.split.pool)} "
                         f"labelled examples (the test split of {len(task.split.test)} is never drawn from)")
    drawn = draw_labels(task.split.pool, n_labels, seed)
    train, val = train_val_split(drawn, val_fraction, seed)
    if len(train) == 0 or len(val) == 0:  # early stopping and the best epoch would read an empty validation split
        raise ValueError(f"n_labels={n_labels} leaves {len(train)} training and {len(val)} validation examples "
                         f"(val_fraction={val_fraction} of each class, at least one of a class of two or more): "
                         "draw at least 4 labels, two of each class")
    return train, val


def zero_shot(model: SentimentLSTM, task: TargetTask) -> dict[str, Any]:
    """The source model applied to the target's test split as it is: what domain shift alone leaves of it."""
    return evaluate(model, task.test_loader())
