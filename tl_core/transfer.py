"""Transfer strategies: configurations of the one training loop (``tl_core.train.fit``), not second code paths.

A strategy says where the weights start (``init_from``: random, Word2Vec embeddings only, the whole source model,
or the source model after an intermediate stage on labelled reviews of related domains), what trains from the
first epoch, whether layer groups are unfrozen one per epoch, how the learning rate falls from the head down to
the embeddings, and which learning-rate schedule the loop follows. Everything else (optimiser, loop, metrics, and
the model architecture but for ``ngrams``) is shared. Introduced in ``notebooks/06_transfer.ipynb`` (scratch,
embeddings, frozen, finetune, zero-shot) and ``notebooks/07_fine_tuning.ipynb`` (gradual, selftrain, intermediate;
``ngrams``, a linear model of the target's words and word pairs that transfers nothing; and the ensembles
``ensemble``, ``hybrid`` and ``calibrated``, which train nothing themselves: they average the predictions of other
strategies' models on the same draw, ``calibrated`` after calibrating each on the draw's validation split).
ULMFiT's own recipe (Howard & Ruder 2018) starts the classifier from a language model instead of the source
classifier: ``ulmfit_imdb`` from the IMDB language model of ``notebooks/04_language_model.ipynb``, ``ulmfit`` from
that model after a second stage on the target's own unlabelled text (:func:`fine_tune_language_model` on
:func:`target_lm_texts`); both are listed in :data:`ULMFIT_STRATEGIES` and need ``language_models=``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Container

import numpy as np
import torch
from torch import nn

# check_related_specs is the rule of the related data's specs; it lives with the specs (data), where the runner's
# parameter checks find it too, and is used here under its old name.
from .data import check_related_specs
from .models import ModelConfig, SentimentLSTM
from .train import TrainConfig, evaluate, fit, seed_everything

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
ULMFIT_STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("ulmfit_imdb", "language_model", new_head=True, gradual_unfreezing=True, lr_decay=2.6,
             schedule="stlr",
             description="ULMFiT without its second stage: the IMDB language model's embedding and LSTM, a new "
                         "concat-pooling head, gradual unfreezing, discriminative learning rates (/2.6), STLR"),
    Strategy("ulmfit", "target_language_model", new_head=True, gradual_unfreezing=True, lr_decay=2.6,
             schedule="stlr",
             description="ULMFiT: the IMDB language model fine-tuned on the target's unlabelled text first, then "
                         "as ulmfit_imdb (new concat-pooling head, gradual unfreezing, /2.6, STLR)"),
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


def language_model_payload(model: nn.Module, vocab_tokens: list[str] | None = None) -> dict[str, Any]:
    """A language model in memory as the checkpoint payload that ``language_models=`` takes (what
    :func:`tl_core.lm.load_language_model` returns for a saved one): its config and a copy of its weights."""
    model = model.module if hasattr(model, "module") else model
    payload = {"model_config": model.config.to_dict(),
               "state_dict": {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}}
    if vocab_tokens is not None:
        payload["vocab"] = list(vocab_tokens)
    return payload


def build_model(strategy: Strategy, source: dict[str, Any], embedding_weights: np.ndarray | torch.Tensor | None,
                seed: int, *, intermediate: "Intermediate | None" = None,
                language_models: dict[str, dict[str, Any]] | None = None, **config_overrides) -> nn.Module:
    """The target model of ``strategy``: the source architecture, initialised as the strategy says.

    ``source`` is the payload of :func:`tl_core.train.load_checkpoint`; ``embedding_weights`` the Word2Vec
    matrix of the same vocabulary (needed by ``init_from="word2vec"``); ``intermediate`` the result of
    :func:`train_intermediate` (needed by ``init_from="intermediate"``); ``language_models`` the language models'
    checkpoint payloads by ``init_from`` (needed by :data:`LANGUAGE_MODEL_STARTS`): such a strategy gets
    :func:`tl_core.lm.classifier_from_language_model` (the language model's embedding and LSTM, sizes and all, and
    a new concat-pooling head), with the source model's dropout and backend settings unless overridden, and the
    language model must share the source model's vocabulary. Seeded: random parts repeat per seed.
    A strategy with ``model="ngrams"`` gets a :class:`~tl_core.models.NgramClassifier` over the source
    vocabulary (its ids), all weights zero; ``config_overrides`` apply to the LSTM only.
    """
    if strategy.members:
        raise ValueError(f"strategy {strategy.name!r} is an ensemble of {list(strategy.members)}: it has no model of "
                         "its own to build; run_grid trains its members and averages them")
    if strategy.init_from in LANGUAGE_MODEL_STARTS:
        from .lm import classifier_from_language_model

        payload = _language_model(strategy.init_from, language_models, [strategy.name])
        _check_language_model_vocab(payload, source["model_config"]["vocab_size"], source.get("vocab"))
        settings = {name: source["model_config"][name] for name in _CLASSIFIER_SETTINGS
                    if name in source["model_config"]}
        seed_everything(seed)  # the new head is drawn from the seed
        return classifier_from_language_model(payload, **{**settings, **config_overrides})
    config = ModelConfig.from_dict({**source["model_config"], **config_overrides})
    seed_everything(seed)
    if strategy.model == "ngrams":
        from .models import NgramClassifier

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
#: never its sizes (those are the language model's).
_CLASSIFIER_SETTINGS = ("embedding_dropout", "lstm_dropout", "output_dropout", "lstm_backend", "padding_idx")


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
    ``lr_decay`` (Howard & Ruder 2018 use 2.6). Any model with ``layer_groups()`` (input first) will do: a
    language model's top group is its output layer (:func:`fine_tune_language_model`)."""
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


# ----------------------------------------------------------------------------------------------------------------
# The protocol: a target split once, labels drawn per seed, every strategy on the same draw, the test used once
# ----------------------------------------------------------------------------------------------------------------

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
        from .text import make_loader

        return make_loader(self.test_encoded, self.split.test.labels, EVAL_BATCH_SIZE, shuffle=False)

    def loader(self, dataset, batch_size: int, *, shuffle: bool, seed: int = 0):
        """A loader of any subset of the pool (a draw, its validation part)."""
        from .text import make_loader, numericalize

        return make_loader(numericalize(dataset.texts, self.vocab, self.max_len), dataset.labels, batch_size,
                           shuffle=shuffle, seed=seed)


def prepare_target(spec: str, vocab, max_len: int, data_dir=None) -> TargetTask:
    """Load a target (any :func:`tl_core.data.load_target` spec), split it once (fixed, stratified test split) and
    measure how much of it the source vocabulary knows. Introduced in ``notebooks/06_transfer.ipynb``."""
    from .data import load_target, split_target
    from .text import numericalize, tokenize_all

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
    from .data import draw_labels, train_val_split

    if n_labels > len(task.split.pool):
        raise ValueError(f"n_labels={n_labels} but the pool of {task.spec} holds only {len(task.split.pool)} "
                         f"labelled examples (the test split of {len(task.split.test)} is never drawn from)")
    drawn = draw_labels(task.split.pool, n_labels, seed)
    return train_val_split(drawn, val_fraction, seed)


#: Unlabelled target texts a self-training run reads at most: a seeded sample of the pool outside the draw (SST-2's
#: pool holds 67k sentences; labelling and training on all of them would cost more than everything else).
MAX_UNLABELLED = 2000


def unlabelled_texts(task: TargetTask, drawn_ids, seed: int, limit: int = MAX_UNLABELLED):
    """The target texts a self-training run may read: the pool's texts outside this run's draw (``drawn_ids``,
    training and validation), their labels removed so that nothing downstream can read them, at most ``limit``
    (a sample seeded by ``seed``). Never a test text: the pool holds none. Introduced in ``07_fine_tuning``."""
    from .data import TextDataset

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
    from .analysis import predict_probabilities
    from .data import TextDataset
    from .text import numericalize

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
    from .data import TextDataset

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


def zero_shot(model: SentimentLSTM, task: TargetTask) -> dict[str, Any]:
    """The source model applied to the target's test split as it is: what domain shift alone leaves of it."""
    return evaluate(model, task.test_loader())


# ----------------------------------------------------------------------------------------------------------------
# A closer source: an intermediate stage on labelled reviews of related domains (never the target's texts)
# ----------------------------------------------------------------------------------------------------------------

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
    from .data import AMAZON_DOMAINS, check_target_spec, same_dataset

    target = check_target_spec(target_spec)
    return [f"amazon:{domain}" for domain in AMAZON_DOMAINS if not same_dataset(f"amazon:{domain}", target)]


def related_data(task: TargetTask, specs: list[str] | None = None, data_dir=None, limit: int | None = None,
                 seed: int = 0):
    """The labelled reviews of the intermediate stage: the datasets ``specs`` (default :func:`related_specs` of
    the target) in one TextDataset, without any review whose text the target also holds (``data.same_text_key``),
    test split or pool, so that no target text is ever trained on with its label. ``limit``: at most this many,
    a stratified draw seeded by ``seed`` (None or 0: all). Returns (dataset, how many were dropped as target
    texts). Introduced in ``notebooks/07_fine_tuning.ipynb``."""
    from .data import TextDataset, draw_labels, load_target, same_text_key

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
    from .data import train_val_split

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


#: the temperatures fit_temperature chooses from: 121 points, log-spaced from 0.1 (sharpen tenfold) to 100
TEMPERATURES = np.logspace(-1, 2, 121)


def fit_temperature(model: nn.Module, loader, temperatures=TEMPERATURES) -> float:
    """Temperature scaling (Guo et al. 2017): the ``T`` of ``temperatures`` under which ``sigmoid(logit / T)`` has
    the lowest cross-entropy on ``loader`` (the draw's validation split, never the test split). One number per
    model, so it moves every probability towards 0.5 (``T > 1``: a model surer than it is right) or away from it
    (``T < 1``: a timid one) and never changes which side of 0.5 a prediction falls on. With no examples to fit
    on it is 1 (the model as it is). Used by the ``calibrated`` strategy before it averages its members."""
    from .train import predict_logits

    logits, labels = predict_logits(model, loader)
    if len(labels) == 0:
        return 1.0
    scaled = logits[None, :].astype(np.float64) / np.asarray(temperatures, dtype=np.float64)[:, None]
    losses = np.mean(np.logaddexp(0.0, scaled) - labels[None, :] * scaled, axis=1)  # -log p(label), stably
    return float(temperatures[int(np.argmin(losses))])


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
        from .models import EnsembleClassifier

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
    import sys

    from tqdm.std import tqdm

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


def accuracy_interval(accuracy: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of an accuracy measured on ``n`` test examples: how far another test sample of
    the same size could move it, all else fixed. The ± over seeds does not hold this (every seed is tested on the
    same split). Introduced in ``notebooks/07_fine_tuning.ipynb``."""
    from statistics import NormalDist

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


def learning_rate_plan(model: SentimentLSTM, strategy: Strategy, config: TrainConfig, steps_per_epoch: int
                       ) -> dict[str, np.ndarray]:
    """The learning rate each layer group trains with at every step of a run of ``strategy`` that lasts all
    ``config.epochs`` epochs: discriminative base rate × the schedule's multiplier, and 0 while the group is
    frozen. Computed with the same functions that :func:`train_strategy` hands to the loop (the requires_grad
    flags of ``model`` are left as the plan's last epoch sets them). Introduced in ``07_fine_tuning.ipynb``."""
    from .train import lr_multiplier

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


# ----------------------------------------------------------------------------------------------------------------
# ULMFiT's second stage: the IMDB language model fine-tuned on the target's own text (no labels)
# ----------------------------------------------------------------------------------------------------------------

#: The top layer group's peak learning rate when the language model is fine-tuned on target text (ULMFiT's
#: second stage): lower than pretraining's, as the model already knows the language.
LM_FINE_TUNE_LR = 1e-3


def target_lm_texts(task: TargetTask, unlabelled: str | None = None, data_dir=None
                    ) -> tuple[list[str], dict[str, Any]]:
    """The text ULMFiT's second stage reads for ``task``: its unlabelled text (:func:`tl_core.data.load_unlabelled`
    of ``unlabelled``, or of the target's own spec when that has some: ``fdu:`` and ``amazon:`` targets) followed
    by the pool's texts without their labels, each part without the texts of the test split
    (:func:`tl_core.data.drop_test_texts`), so that no test text ever trains anything. A target without unlabelled
    text (SST-2, a file of the user's) and ``unlabelled=None`` gives the pool's texts only, and says so.
    Returns (texts, report): the report holds ``unlabelled_texts``, ``pool_texts`` (counts kept),
    ``unlabelled_dropped_as_test``, ``pool_dropped_as_test``, ``unlabelled_spec`` (None when none was read) and
    ``note``."""
    from .data import drop_test_texts, load_unlabelled

    split = getattr(task, "split", None)
    if split is None or not hasattr(split, "test") or not hasattr(split, "pool"):
        raise ValueError(f"target_lm_texts takes a TargetTask (transfer.prepare_target), got {type(task).__name__}")
    if unlabelled is not None and (not isinstance(unlabelled, (str, Path)) or not str(unlabelled).strip()):
        raise ValueError(f"unlabelled must be an unlabelled-text spec (fdu:DOMAIN, amazon:DOMAIN or a .txt, .csv, "
                         f".tsv or .jsonl file) or None for the target's own, got {unlabelled!r}")
    spec = str(unlabelled) if unlabelled is not None else (
        task.spec if str(task.spec).startswith(("fdu:", "amazon:")) else None)
    raw = load_unlabelled(spec, data_dir) if spec is not None else []
    test_texts = list(split.test.texts)
    kept_unlabelled, dropped_unlabelled = drop_test_texts(list(raw), test_texts)
    kept_pool, dropped_pool = drop_test_texts(list(split.pool.texts), test_texts)
    texts = kept_unlabelled + kept_pool
    if not texts:
        raise ValueError(f"target {task.spec!r} leaves no text for the language model: no unlabelled text outside "
                         "the test split and an empty pool")
    note = (f"{len(kept_unlabelled):,} unlabelled texts of {spec} and {len(kept_pool):,} pool texts without labels"
            if spec is not None else
            f"target {task.spec!r} has no unlabelled text of its own (give unlabelled=...): the pool's "
            f"{len(kept_pool):,} texts without labels only")
    report = {"unlabelled_spec": spec, "unlabelled_texts": len(kept_unlabelled), "pool_texts": len(kept_pool),
              "unlabelled_dropped_as_test": dropped_unlabelled, "pool_dropped_as_test": dropped_pool, "note": note}
    return texts, report


def fine_tune_language_model(language_model_payload_or_path: dict[str, Any] | str | Path, texts: list[str], vocab, *,
                             epochs: int = 1, lr: float = LM_FINE_TUNE_LR, lr_decay: float = 2.6,
                             batch_size: int = 32, bptt: int = 70, val_fraction: float = 0.1, seed: int = 0,
                             progress: bool = True, device: str | None = None):
    """ULMFiT's second stage (Howard & Ruder 2018, section 3.2): the IMDB language model (a checkpoint's path, or
    its payload as :func:`tl_core.lm.load_language_model` or :func:`tl_core.train.load_checkpoint` return it; never
    modified) trained further on ``texts`` of the target (:func:`target_lm_texts`) through the one loop, with
    :class:`tl_core.lm.LanguageModelObjective`, discriminative learning rates (the output layer at ``lr``, each
    layer group below it, LSTM layers then the embedding, at the rate above divided by ``lr_decay``; the embedding
    is tied to the output layer, so the word vectors move at the embedding's rate) and the "stlr" schedule. A
    seeded ``val_fraction`` of the texts (at least one) is held out for the validation perplexity that picks the
    best epoch. ``vocab`` is the course Vocab the language model was trained with. Returns (a new
    :class:`tl_core.lm.LanguageModel` of the best epoch, its History); its payload for ``language_models=`` is
    :func:`language_model_payload`."""
    from . import lm, train

    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if lr_decay < 1.0:
        raise ValueError(f"lr_decay must be >= 1 (lower layers learn no faster than upper ones), got {lr_decay}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
        raise ValueError("texts must be a list of strings (target_lm_texts(task)[0])")
    texts = [text for text in texts if text.strip()]
    if len(texts) < 2:
        raise ValueError(f"fine-tuning the language model needs at least two non-empty texts (one held out to "
                         f"validate), got {len(texts)}")
    if isinstance(language_model_payload_or_path, dict):
        payload = language_model_payload_or_path
        if not isinstance(payload.get("model_config"), dict) or not isinstance(payload.get("state_dict"), dict):
            raise ValueError("the language model must be a checkpoint's path or payload (a dict with model_config "
                             "and state_dict, as lm.load_language_model returns it)")
        _check_language_model_vocab(payload, len(vocab), list(vocab.itos))
    else:
        payload = train.load_checkpoint(language_model_payload_or_path, list(vocab.itos), kind=lm.CHECKPOINT_KIND)
    train.seed_everything(seed)
    model = lm.LanguageModel(lm.LMConfig.from_dict(payload["model_config"]))
    train.load_state(model, payload, "the language model")  # copies the weights: the payload stays as it was
    order = np.random.default_rng(seed).permutation(len(texts))
    held_out = max(1, int(round(val_fraction * len(texts))))
    val_ids = lm.encode_texts([texts[i] for i in order[:held_out]], vocab)
    train_ids = lm.encode_texts([texts[i] for i in sorted(order[held_out:])], vocab)
    stream = lm.LMStream(train_ids, batch_size, bptt, seed=seed)
    val_tokens = sum(len(row) + 1 for row in val_ids)
    # A small held-out text gets fewer streams, so that each is at least one window long (as pretrain's).
    val_stream = lm.LMStream(val_ids, max(1, min(batch_size, val_tokens // (bptt + 1))), bptt, variable=False,
                             shuffle=False)
    groups = discriminative_groups(model, lr, lr_decay)
    config = TrainConfig(epochs=epochs, lr=lr, schedule="stlr", patience=0, seed=seed, progress=progress,
                         device=device)
    start = lm.evaluate_perplexity(model, val_stream, device)  # the IMDB model on the held-out target text
    history = fit(model, stream, val_stream, config, param_groups=groups, objective=lm.LanguageModelObjective(),
                  title="target language model")
    history.start = {"val_loss": start["loss"], "val_perplexity": start["perplexity"]}
    return model, history
