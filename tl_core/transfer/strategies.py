"""The strategies: what a transfer strategy is (:class:`Strategy`), the ones the notebooks offer (:data:`STRATEGIES`,
:data:`ULMFIT_STRATEGIES`), and how one becomes a run of the one training loop: the model it starts from
(:func:`build_model`: random, Word2Vec embeddings, the source model, the intermediate stage's, or a language
model's encoder under a new head), which layer groups train when (:func:`set_trainable`, :func:`training_plan`),
at which discriminative learning rates (:func:`discriminative_groups`, :func:`learning_rate_plan`), and the run
itself (:func:`train_strategy`). The checks that refuse a strategy whose intermediate stage or language model was
not given live here too, as :func:`build_model` and the grid share them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from ..models import ModelConfig, NgramClassifier, SentimentLSTM
from ..train import TrainConfig, fit, lr_multiplier, seed_everything

if TYPE_CHECKING:
    from .intermediate import Intermediate


INIT_FROM = ("random", "word2vec", "source", "intermediate", "members", "language_model", "target_language_model")
#: the starts that are a language model (checkpoint payloads passed as ``language_models={init_from: payload}``):
#: "language_model", the IMDB language model; "target_language_model", the same after fine-tuning on target text
LANGUAGE_MODEL_STARTS = ("language_model", "target_language_model")
#: the model a strategy trains: "lstm", the source architecture (models.SentimentLSTM); "ngrams", a linear model over
#: words and word pairs (models.NgramClassifier), which has nothing to take from the source model
MODELS = ("lstm", "ngrams")


@dataclass(frozen=True)
class Strategy:
    """One way of moving (or not moving) knowledge from the source model to the target task."""

    name: str  # how tables and plots call it
    init_from: str  # "random": nothing transferred; "word2vec": the embedding matrix; "source": every weight;
    # "intermediate": every weight of the source model after an intermediate stage on related domains (Intermediate);
    # "members": no weights of its own, an ensemble of the models of ``members``; "language_model": the embedding
    # and LSTM of the IMDB language model, a new concat-pooling head; "target_language_model": the same from the
    # language model fine-tuned on the target's text (LANGUAGE_MODEL_STARTS)
    train_only_head: bool = False  # freeze everything below the head for the whole run (feature extraction)
    new_head: bool = False  # replace the source model's head with a freshly initialised one
    gradual_unfreezing: bool = False  # train the head first, then unfreeze one more layer group per epoch
    lr_decay: float = 1.0  # discriminative learning rates: each lower layer group's rate is divided by this
    lr_scale: float = 1.0  # the top group's rate is the run's learning rate times this: a fresh head over a language
    # model, which knows no sentiment yet, learns at a higher rate than weights that already classify reviews
    schedule: str = "constant"  # the loop's learning-rate schedule ("stlr": slanted triangular)
    pseudo_label_fraction: float = 0.0  # self-training: share of the unlabelled target texts that a first model of
    # this recipe labels (those it is surest of) and a second run of it adds to the labelled ones (0: off)
    model: str = "lstm"  # which model it trains (MODELS): the source architecture, or a linear n-gram model
    members: tuple[str, ...] = ()  # an ensemble (init_from="members"): the strategies whose models, trained on the
    # same draw, average their probabilities (models.EnsembleClassifier); nothing else is trained
    calibrate: bool = False  # an ensemble only: each member's logit divided by a temperature fitted on the draw's
    # validation split (fit_temperature) before the probabilities are averaged
    description: str = ""

    def __post_init__(self):
        if self.init_from not in INIT_FROM:
            raise ValueError(f"init_from must be one of {INIT_FROM}, got {self.init_from!r}")
        if not self.lr_scale > 0:
            raise ValueError(f"lr_scale must be > 0, got {self.lr_scale}")
        if self.lr_decay < 1.0:
            raise ValueError(f"lr_decay must be >= 1 (lower layers learn no faster than upper ones), "
                             f"got {self.lr_decay}")
        if not 0.0 <= self.pseudo_label_fraction <= 1.0:
            raise ValueError(f"pseudo_label_fraction must be in [0, 1], got {self.pseudo_label_fraction}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.model == "ngrams" and (self.init_from != "random" or self.train_only_head or self.new_head):
            raise ValueError(f"strategy {self.name!r}: the n-gram model shares no weights with the source model, so "
                             "it starts from init_from='random' and has no source head to keep or replace")
        if (self.init_from == "members") != bool(self.members):
            raise ValueError(f"strategy {self.name!r}: an ensemble has init_from='members' and names its members "
                             f"(got init_from={self.init_from!r}, members={self.members!r})")
        if self.calibrate and not self.members:
            raise ValueError(f"strategy {self.name!r}: calibrate=True fits one temperature per ensemble member; "
                             "a strategy without members has nothing to calibrate")
        if len(set(self.members)) != len(self.members) or self.name in self.members:
            raise ValueError(f"strategy {self.name!r}: members must be distinct other strategies, got {self.members}")

    @property
    def recipe(self) -> "Strategy":
        """The strategy without its name, description and self-training: two strategies with the same recipe
        train the same model from the same draw and seed (``run_grid`` trains it once)."""
        return replace(self, name="", description="", pseudo_label_fraction=0.0)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("scratch", "random", description="random embeddings and LSTM: the baseline, nothing transferred"),
    Strategy("ngrams", "random", model="ngrams",
             description="a linear model over the target's words and word pairs (hashed bigrams), trained on the "
                         "labels alone: the classical baseline, nothing transferred"),
    Strategy("embeddings", "word2vec", description="Word2Vec embeddings from IMDB, everything else random"),
    Strategy("frozen", "source", train_only_head=True, new_head=True,
             description="the source encoder frozen as a feature extractor, a new head trained on top"),
    Strategy("finetune", "source", description="every source weight, all layers trained at one learning rate"),
    Strategy("gradual", "source", gradual_unfreezing=True, lr_decay=2.6, schedule="stlr",
             description="ULMFiT: gradual unfreezing, discriminative learning rates (/2.6 per group), STLR"),
    Strategy("selftrain", "source", gradual_unfreezing=True, lr_decay=2.6, schedule="stlr",
             pseudo_label_fraction=0.5,
             description="gradual, then gradual again on the labels plus the unlabelled target texts its first "
                         "model is surest of, labelled by it (self-training)"),
    Strategy("intermediate", "intermediate", gradual_unfreezing=True, lr_decay=2.6, schedule="stlr",
             description="the source model trained first on labelled reviews of related domains (never the "
                         "target's), then gradual on the target"),
    Strategy("ensemble", "members", members=("finetune", "gradual", "intermediate"),
             description="finetune, gradual and intermediate trained on the same draw, their probabilities "
                         "averaged: three models' training and prediction for one answer"),
    Strategy("hybrid", "members", members=("intermediate", "ngrams"),
             description="intermediate and ngrams trained on the same draw, their probabilities averaged: the "
                         "transferred LSTM's sentiment plus the target's own words and word pairs"),
    Strategy("calibrated", "members", members=("intermediate", "ngrams"), calibrate=True,
             description="hybrid, but each member's confidence first calibrated on the draw's validation split "
                         "(one temperature per model), so that the surer model does not simply outvote the other"),
)}


#: ULMFiT's classifiers, started from a language model rather than from the source classifier. Kept apart from
#: :data:`STRATEGIES` (the choices notebooks 06 and 07 offer) because they need the language models passed in
#: (``language_models=`` of :func:`run_grid`); :func:`get_strategy` knows them by name.
#: Their top rate is 5x the run's (``lr_scale``): 1e-2 at the default 2e-3, the rate fastai's ULMFiT recipe
#: starts its classifier with; measured on amazon:kitchen at 100 labels (quick language model, 3 seeds), the
#: IMDB-LM classifier stayed near chance at the run's rate.
ULMFIT_STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("ulmfit_imdb", "language_model", new_head=True, gradual_unfreezing=True, lr_decay=2.6, lr_scale=5.0,
             schedule="stlr",
             description="ULMFiT without its second stage: the IMDB language model's embedding and LSTM, a new "
                         "concat-pooling head, gradual unfreezing, discriminative learning rates (/2.6), STLR, "
                         "5x the run's rate"),
    Strategy("ulmfit", "target_language_model", new_head=True, gradual_unfreezing=True, lr_decay=2.6, lr_scale=5.0,
             schedule="stlr",
             description="ULMFiT: the IMDB language model fine-tuned on the target's unlabelled text first, then "
                         "as ulmfit_imdb (new concat-pooling head, gradual unfreezing, /2.6, STLR, 5x the rate)"),
)}


def get_strategy(name: str) -> Strategy:
    known = {**STRATEGIES, **ULMFIT_STRATEGIES}
    if name not in known:
        raise ValueError(f"unknown strategy {name!r}; one of: {', '.join(known)}")
    return known[name]


def members_of(strategy: Strategy, strategies=()) -> list[Strategy]:
    """The member strategies of an ensemble: by name from ``strategies`` (names or Strategy objects: variants
    given there win), else from :data:`STRATEGIES`; an ensemble among them is refused (one level only)."""
    given = {s.name: s for s in strategies if isinstance(s, Strategy)}
    members = [given.get(name) or get_strategy(name) for name in strategy.members]
    nested = [member.name for member in members if member.members]
    if nested:
        raise ValueError(f"ensemble {strategy.name!r}: its members {nested} are ensembles themselves; name the "
                         "strategies they average instead")
    return members


def transfers(strategy: Strategy | str, strategies=()) -> bool:
    """Whether ``strategy`` (a Strategy or a name) takes anything from the source: its own start is not random,
    or, for an ensemble, one of its members' is. ``scratch`` and ``ngrams`` do not."""
    strategy = strategy if isinstance(strategy, Strategy) else get_strategy(strategy)
    if strategy.members:
        return any(transfers(member) for member in members_of(strategy, strategies))
    return strategy.init_from != "random"


def from_intermediate(strategies) -> list[str]:
    """The names of those ``strategies`` (names or Strategy objects) that start from the intermediate model,
    directly or through an ensemble's member."""
    chosen = [s if isinstance(s, Strategy) else get_strategy(s) for s in strategies]
    return [strategy.name for strategy in chosen if strategy.init_from == "intermediate"
            or any(member.init_from == "intermediate" for member in members_of(strategy, chosen))]


def _need_intermediate(names: list[str], intermediate) -> None:
    if names and intermediate is None:
        raise ValueError(f"strategies {names} start from the intermediate model: train it first, one stage per "
                         "seed with transfer.intermediate_for(strategies, task, source, epochs=..., seeds=...) or "
                         "one shared stage with transfer.train_intermediate(task, source, config, ...), and pass "
                         "it as intermediate=")


def from_language_model(strategies) -> list[str]:
    """The names of those ``strategies`` (names or Strategy objects) that start from a language model, directly
    or through an ensemble's member."""
    chosen = [s if isinstance(s, Strategy) else get_strategy(s) for s in strategies]
    return [strategy.name for strategy in chosen if strategy.init_from in LANGUAGE_MODEL_STARTS
            or any(member.init_from in LANGUAGE_MODEL_STARTS for member in members_of(strategy, chosen))]


def _need_language_models(strategies, language_models, vocab_tokens: list[str] | None = None) -> None:
    """Refuse, before anything trains, strategies whose language model is not in ``language_models``, and a
    language model of another vocabulary than ``vocab_tokens`` (the task's, when given)."""
    chosen = [s if isinstance(s, Strategy) else get_strategy(s) for s in strategies]
    needed = {member.init_from for strategy in chosen for member in [strategy, *members_of(strategy, chosen)]
              if member.init_from in LANGUAGE_MODEL_STARTS}
    for init_from in sorted(needed):
        payload = _language_model(init_from, language_models, from_language_model(chosen))
        if vocab_tokens is not None:
            _check_language_model_vocab(payload, len(vocab_tokens), vocab_tokens)


def _language_model(init_from: str, language_models, names) -> dict[str, Any]:
    if language_models is not None and not isinstance(language_models, dict):
        raise ValueError(f"language_models must be a dict such as {{'language_model': payload}}, got "
                         f"{type(language_models).__name__}")
    payload = (language_models or {}).get(init_from)
    if payload is None:
        how = ("lm.load_language_model(path)[1] (notebook 04's checkpoint)" if init_from == "language_model" else
               "the IMDB language model after transfer.fine_tune_language_model on transfer.target_lm_texts(task)")
        raise ValueError(f"strategies {list(names)} start from the {init_from.replace('_', ' ')}, which was not "
                         f"given: pass language_models={{{init_from!r}: payload}} with the payload of {how}")
    if not isinstance(payload, dict) or not isinstance(payload.get("model_config"), dict) \
            or not isinstance(payload.get("state_dict"), dict):
        raise ValueError(f"language_models[{init_from!r}] must be a checkpoint payload (a dict with model_config and "
                         "state_dict, as lm.load_language_model returns it), or language_model_payload(model)")
    return payload


def _check_language_model_vocab(payload: dict[str, Any], vocab_size: int, vocab_tokens: list[str] | None = None
                                ) -> None:
    """A classifier from a language model reads the task's token ids: the language model must have been trained
    with the same vocabulary (its size always; its tokens when both are known)."""
    lm_size = payload["model_config"].get("vocab_size")
    if lm_size != vocab_size:
        raise ValueError(f"the language model reads a vocabulary of {lm_size} words but the task's (the source "
                         f"model's) has {vocab_size}: the classifier would read other words under the same ids; "
                         "use the language model and the source model of the same run directory (one Vocab)")
    saved = payload.get("vocab")
    if vocab_tokens is not None and saved is not None and list(saved) != list(vocab_tokens):
        raise ValueError("the language model was trained with another vocabulary than the task's (same size, other "
                         "words): use the language model and the source model of the same run directory")


def build_model(strategy: Strategy, source: dict[str, Any], embedding_weights: np.ndarray | torch.Tensor | None,
                seed: int, *, intermediate: "Intermediate | None" = None,
                language_models: dict[str, dict[str, Any]] | None = None, **config_overrides) -> nn.Module:
    """The target model of ``strategy``: the source architecture, initialised as the strategy says.

    ``source`` is the payload of :func:`tl_core.train.load_checkpoint`; ``embedding_weights`` the Word2Vec
    matrix of the same vocabulary (needed by ``init_from="word2vec"``); ``intermediate`` the result of
    :func:`train_intermediate` (needed by ``init_from="intermediate"``); ``language_models`` the language models'
    checkpoint payloads by ``init_from`` (needed by :data:`LANGUAGE_MODEL_STARTS`): such a strategy gets
    :func:`tl_core.lm.classifier_from_language_model` (the language model's embedding and LSTM, sizes and all, and
    a new concat-pooling head), with the source model's dropout, backend and ``bptt`` unless overridden, and the
    language model must share the source model's vocabulary. Seeded: random parts repeat per seed.
    A strategy with ``model="ngrams"`` gets a :class:`~tl_core.models.NgramClassifier` over the source
    vocabulary (its ids), all weights zero; ``config_overrides`` apply to the LSTM only.
    """
    if strategy.members:
        raise ValueError(f"strategy {strategy.name!r} is an ensemble of {list(strategy.members)}: it has no model of "
                         "its own to build; run_grid trains its members and averages them")
    if strategy.init_from in LANGUAGE_MODEL_STARTS:
        from ..lm import classifier_from_language_model  # here: importing tl_core.lm loads the compiled extension

        payload = _language_model(strategy.init_from, language_models, [strategy.name])
        _check_language_model_vocab(payload, source["model_config"]["vocab_size"], source.get("vocab"))
        settings = {name: source["model_config"][name] for name in _CLASSIFIER_SETTINGS
                    if name in source["model_config"]}
        seed_everything(seed)  # the new head is drawn from the seed
        return classifier_from_language_model(payload, **{**settings, **config_overrides})
    config = ModelConfig.from_dict({**source["model_config"], **config_overrides})
    seed_everything(seed)
    if strategy.model == "ngrams":
        return NgramClassifier(config.vocab_size, padding_idx=config.padding_idx)
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
    elif strategy.init_from in ("source", "intermediate"):
        _need_intermediate(from_intermediate([strategy]), intermediate)
        model.load_state_dict(source["state_dict"] if strategy.init_from == "source" else intermediate.state_dict)
        if strategy.new_head:
            model.head.load_state_dict(fresh_head)
    return model


#: What a classifier from a language model takes from the source model's config: how it regularises and runs,
#: never its sizes (those are the language model's). ``bptt`` too: the full profile's two-layer language model
#: reads reviews in pieces in notebook 05 because its gradient through a whole review can reach infinity, and the
#: same happens to its classifiers on a target (one diverged at epoch 7 on 256-token kitchen reviews).
_CLASSIFIER_SETTINGS = ("embedding_dropout", "lstm_dropout", "output_dropout", "lstm_backend", "padding_idx", "bptt")


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


def discriminative_groups(model: SentimentLSTM, lr: float, lr_decay: float,
                          body_lr: float | None = None) -> list[dict[str, Any]]:
    """AdamW parameter groups, the head at ``lr`` and each group below it at the rate above divided by
    ``lr_decay`` (Howard & Ruder 2018 use 2.6). ``body_lr``: the rate of the group just below the head (a new head
    on a pretrained body may need a far higher rate than the body stands); None: ``lr / lr_decay``. Any model with
    ``layer_groups()`` (input first) will do: a language model's top group is its output layer
    (:func:`fine_tune_language_model`)."""
    if lr <= 0 or lr_decay <= 0 or (body_lr is not None and body_lr <= 0):
        raise ValueError(f"learning rates and their decay must be positive, got lr={lr}, lr_decay={lr_decay}, "
                         f"body_lr={body_lr}")
    groups = model.layer_groups()
    top_of_body = lr / lr_decay if body_lr is None else body_lr
    rates = [top_of_body / lr_decay ** (len(groups) - 2 - depth) for depth in range(len(groups) - 1)] + [lr]
    return [{"params": params, "lr": rate, "name": name} for (name, params), rate in zip(groups, rates)]


def training_plan(model: SentimentLSTM, strategy: Strategy, lr: float,
                  ) -> tuple[list[dict[str, Any]], Callable[[int, nn.Module], None]]:
    """Parameter groups and the epoch hook that carry out ``strategy`` inside :func:`tl_core.train.fit`."""
    groups = discriminative_groups(model, lr * strategy.lr_scale, strategy.lr_decay)

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
                   config: TrainConfig, *, intermediate: "Intermediate | None" = None,
                   language_models: dict[str, dict[str, Any]] | None = None,
                   **config_overrides) -> tuple[SentimentLSTM, Any]:
    """Build the model of ``strategy`` (seeded by ``config.seed``) and train it with the shared loop.
    ``intermediate`` and ``language_models``: as for :func:`build_model`."""
    model = build_model(strategy, source, embedding_weights, config.seed, intermediate=intermediate,
                        language_models=language_models, **config_overrides)
    groups, hook = training_plan(model, strategy, config.lr)
    history = fit(model, train_loader, val_loader, replace(config, schedule=strategy.schedule),
                  param_groups=groups, on_epoch_start=hook, title=strategy.name)
    return model, history


def describe_strategies() -> list[dict[str, Any]]:
    """The strategy table, for the notebooks."""
    return [asdict(strategy) for strategy in STRATEGIES.values()]


def learning_rate_plan(model: SentimentLSTM, strategy: Strategy, config: TrainConfig, steps_per_epoch: int
                       ) -> dict[str, np.ndarray]:
    """The learning rate each layer group trains with at every step of a run of ``strategy`` that lasts all
    ``config.epochs`` epochs: discriminative base rate × the schedule's multiplier, and 0 while the group is
    frozen. Computed with the same functions that :func:`train_strategy` hands to the loop (the requires_grad
    flags of ``model`` are left as the plan's last epoch sets them). Introduced in ``07_fine_tuning.ipynb``."""
    groups, on_epoch_start = training_plan(model, strategy, config.lr)
    total_steps = config.epochs * steps_per_epoch
    rates = {group["name"]: np.zeros(total_steps) for group in groups}
    for epoch in range(1, config.epochs + 1):
        on_epoch_start(epoch, model)
        for step in range((epoch - 1) * steps_per_epoch, epoch * steps_per_epoch):
            multiplier = lr_multiplier(strategy.schedule, step, total_steps, config.stlr_cut_fraction,
                                       config.stlr_ratio)
            for group in groups:
                if any(parameter.requires_grad for parameter in group["params"]):
                    rates[group["name"]][step] = group["lr"] * multiplier
    return rates
