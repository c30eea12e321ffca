"""ULMFiT's second stage: the IMDB language model fine-tuned on the target's own text, no labels
(:func:`fine_tune_language_model`), reading the target's unlabelled text and its pool's texts without their labels
and without any text of the test split (:func:`target_lm_texts`); :func:`language_model_payload` hands the result
to ``language_models=`` of the grid, for the ``ulmfit`` strategy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..data import drop_test_texts, load_unlabelled
from ..train import TrainConfig, fit, load_checkpoint, load_state, seed_everything
from .protocol import TargetTask
from .strategies import _check_language_model_vocab, discriminative_groups


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
    from .. import lm  # here, not at the top: importing tl_core.lm loads the compiled extension

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
        payload = load_checkpoint(language_model_payload_or_path, list(vocab.itos), kind=lm.CHECKPOINT_KIND)
    seed_everything(seed)
    model = lm.LanguageModel(lm.LMConfig.from_dict(payload["model_config"]))
    load_state(model, payload, "the language model")  # copies the weights: the payload stays as it was
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


def language_model_payload(model: nn.Module, vocab_tokens: list[str] | None = None) -> dict[str, Any]:
    """A language model in memory as the checkpoint payload that ``language_models=`` takes (what
    :func:`tl_core.lm.load_language_model` returns for a saved one): its config and a copy of its weights."""
    model = model.module if hasattr(model, "module") else model
    payload = {"model_config": model.config.to_dict(),
               "state_dict": {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}}
    if vocab_tokens is not None:
        payload["vocab"] = list(vocab_tokens)
    return payload
