"""Transfer strategies: configurations of the one training loop (``tl_core.train.fit``), not second code paths.

A strategy says where the weights start (``init_from``: random, Word2Vec embeddings only, or the whole source
model), what trains from the first epoch, whether layer groups are unfrozen one per epoch, how the learning rate
falls from the head down to the embeddings, and which learning-rate schedule the loop follows. Everything else
(model architecture, optimiser, loop, metrics) is shared. Introduced in ``notebooks/05_transfer.ipynb`` (scratch,
embeddings, frozen, finetune, zero-shot) and ``notebooks/06_fine_tuning.ipynb`` (gradual).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .models import ModelConfig, SentimentLSTM
from .train import TrainConfig, evaluate, fit, seed_everything

INIT_FROM = ("random", "word2vec", "source")


@dataclass(frozen=True)
class Strategy:
    """One way of moving (or not moving) knowledge from the source model to the target task."""

    name: str  # how tables and plots call it
    init_from: str  # "random": nothing transferred; "word2vec": the embedding matrix; "source": every weight
    train_only_head: bool = False  # freeze everything below the head for the whole run (feature extraction)
    new_head: bool = False  # replace the source model's head with a freshly initialised one
    gradual_unfreezing: bool = False  # train the head first, then unfreeze one more layer group per epoch
    lr_decay: float = 1.0  # discriminative learning rates: each lower layer group's rate is divided by this
    schedule: str = "constant"  # the loop's learning-rate schedule ("stlr": slanted triangular)
    description: str = ""

    def __post_init__(self):
        if self.init_from not in INIT_FROM:
            raise ValueError(f"init_from must be one of {INIT_FROM}, got {self.init_from!r}")
        if self.lr_decay < 1.0:
            raise ValueError(f"lr_decay must be >= 1 (lower layers learn no faster than upper ones), "
                             f"got {self.lr_decay}")


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("scratch", "random", description="random embeddings and LSTM: the baseline, nothing transferred"),
    Strategy("embeddings", "word2vec", description="Word2Vec embeddings from IMDB, everything else random"),
    Strategy("frozen", "source", train_only_head=True, new_head=True,
             description="the source encoder frozen as a feature extractor, a new head trained on top"),
    Strategy("finetune", "source", description="every source weight, all layers trained at one learning rate"),
    Strategy("gradual", "source", gradual_unfreezing=True, lr_decay=2.6, schedule="stlr",
             description="ULMFiT: gradual unfreezing, discriminative learning rates (/2.6 per group), STLR"),
)}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; one of: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def build_model(strategy: Strategy, source: dict[str, Any], embedding_weights: np.ndarray | torch.Tensor | None,
                seed: int, **config_overrides) -> SentimentLSTM:
    """The target model of ``strategy``: the source architecture, initialised as the strategy says.

    ``source`` is the payload of :func:`tl_core.train.load_checkpoint`; ``embedding_weights`` the Word2Vec
    matrix of the same vocabulary (needed by ``init_from="word2vec"``). Seeded: random parts repeat per seed.
    """
    config = ModelConfig.from_dict({**source["model_config"], **config_overrides})
    seed_everything(seed)
    model = SentimentLSTM(config)  # random init of every part, drawn in the same order for every strategy
    fresh_head = {k: v.clone() for k, v in model.head.state_dict().items()}
    if strategy.init_from == "word2vec":
        if embedding_weights is None:
            raise ValueError("strategy 'embeddings' needs the Word2Vec embedding matrix (notebook 02)")
        weights = torch.as_tensor(np.asarray(embedding_weights), dtype=model.embedding.weight.dtype)
        if weights.shape != model.embedding.weight.shape:
            raise ValueError(f"embedding matrix has shape {tuple(weights.shape)}, the model needs "
                             f"{tuple(model.embedding.weight.shape)}: build both from the same vocabulary")
        with torch.no_grad():
            model.embedding.weight.copy_(weights)
    elif strategy.init_from == "source":
        model.load_state_dict(source["state_dict"])
        if strategy.new_head:
            model.head.load_state_dict(fresh_head)
    return model


def set_trainable(model: SentimentLSTM, top_groups: int | None) -> list[str]:
    """Let only the top ``top_groups`` layer groups train (None: all); returns the names of those training.
    Embeddings frozen by the model's config stay frozen."""
    groups = model.layer_groups()
    training = []
    for depth_from_top, (name, params) in enumerate(reversed(groups)):
        trains = top_groups is None or depth_from_top < top_groups
        if name == "embedding" and model.config.freeze_embeddings:
            trains = False
        for parameter in params:
            parameter.requires_grad_(trains)
        if trains:
            training.append(name)
    return list(reversed(training))


def discriminative_groups(model: SentimentLSTM, lr: float, lr_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups, the head at ``lr`` and each group below it at the rate above divided by
    ``lr_decay`` (Howard & Ruder 2018 use 2.6)."""
    groups = model.layer_groups()
    return [{"params": params, "lr": lr / lr_decay ** (len(groups) - 1 - depth), "name": name}
            for depth, (name, params) in enumerate(groups)]


def training_plan(model: SentimentLSTM, strategy: Strategy, lr: float,
                  ) -> tuple[list[dict[str, Any]], Callable[[int, nn.Module], None]]:
    """Parameter groups and the epoch hook that carry out ``strategy`` inside :func:`tl_core.train.fit`."""
    groups = discriminative_groups(model, lr, strategy.lr_decay)

    def on_epoch_start(epoch: int, _model: nn.Module) -> None:
        if strategy.train_only_head:
            set_trainable(model, 1)
        elif strategy.gradual_unfreezing:
            set_trainable(model, epoch)  # epoch 1: the head; each further epoch one more group from the top
        else:
            set_trainable(model, None)

    on_epoch_start(1, model)  # so that the state is right before the first epoch too
    return groups, on_epoch_start


def train_strategy(strategy: Strategy, source: dict[str, Any], embedding_weights, train_loader, val_loader,
                   config: TrainConfig, **config_overrides) -> tuple[SentimentLSTM, Any]:
    """Build the model of ``strategy`` (seeded by ``config.seed``) and train it with the shared loop."""
    model = build_model(strategy, source, embedding_weights, config.seed, **config_overrides)
    groups, hook = training_plan(model, strategy, config.lr)
    history = fit(model, train_loader, val_loader, replace(config, schedule=strategy.schedule),
                  param_groups=groups, on_epoch_start=hook, title=strategy.name)
    return model, history


def run_strategy(strategy: Strategy, source: dict[str, Any], embedding_weights, train_loader, val_loader,
                 test_loader, config: TrainConfig, n_labels: int, **config_overrides) -> dict[str, Any]:
    """Train one strategy for one (n_labels, seed) and measure it once on the target's test split."""
    started = time.perf_counter()
    model, history = train_strategy(strategy, source, embedding_weights, train_loader, val_loader, config,
                                    **config_overrides)
    test = evaluate(model, test_loader)
    return {"strategy": strategy.name, "n_labels": n_labels, "seed": config.seed, "accuracy": test["accuracy"],
            "f1": test["f1"], "epochs_trained": len(history.epochs), "best_epoch": history.best_epoch,
            "seconds": round(time.perf_counter() - started, 2)}


def describe_strategies() -> list[dict[str, Any]]:
    """The strategy table, for the notebooks."""
    return [asdict(strategy) for strategy in STRATEGIES.values()]
