"""One training loop for every notebook: ``fit``, ``evaluate``, learning-rate schedules, checkpoints.

Introduced in ``notebooks/05_source_lstm.ipynb``; the transfer strategies of ``06_transfer`` and
``07_fine_tuning`` are configurations of the same loop (parameter groups with their own learning rates, a
schedule, and an epoch hook that unfreezes layers), not a second code path.
"""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from .artifacts import SOURCE_CHECKPOINT, atomic_path  # noqa: F401 (train.SOURCE_CHECKPOINT, as notebooks use it)
from .environment import default_device
from .text import tokens_fingerprint

SCHEDULES = ("constant", "linear", "stlr")
CHECKPOINT_FORMAT = "tl-course-checkpoint/1"


@dataclass
class TrainConfig:
    """How to train (the model's architecture is :class:`tl_core.models.ModelConfig`)."""

    epochs: int = 2  # passes over the training data (early stopping may end sooner)
    lr: float = 2e-3  # peak learning rate of the top parameter group
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    grad_clip: float = 1.0  # largest gradient norm; 0 turns clipping off
    schedule: str = "constant"  # "constant", "linear" (decay to 0), "stlr" (slanted triangular, ULMFiT)
    stlr_cut_fraction: float = 0.1  # stlr: share of the steps spent warming up
    stlr_ratio: float = 32.0  # stlr: how much smaller the lowest learning rate is than the peak
    patience: int = 1  # epochs without a better validation accuracy before stopping; 0 never stops early
    seed: int = 0  # seeds model init (when built inside the seeded scope), shuffling and dropout
    device: str | None = None  # "cpu", "cuda"; None: CUDA when available (tl_core.environment.default_device)
    progress: bool = True  # show a progress bar per epoch

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")


def seed_everything(seed: int) -> None:
    """Same seed, same machine, same numbers: Python, NumPy and torch generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_multiplier(schedule: str, step: int, total_steps: int, cut_fraction: float = 0.1,
                  ratio: float = 32.0) -> float:
    """Factor applied to each group's base learning rate at optimisation step ``step`` (0-based).

    ``stlr`` is ULMFiT's slanted triangular schedule (Howard & Ruder 2018): a short linear rise over the first
    ``cut_fraction`` of the steps from 1/ratio to 1, then a long linear decay back to 1/ratio.
    """
    if schedule == "constant" or total_steps <= 1:
        return 1.0
    if schedule == "linear":
        return max(0.0, 1.0 - step / total_steps)
    cut = max(1, math.floor(total_steps * cut_fraction))
    # The paper divides the decay by cut * (1 / cut_fraction - 1), which equals total_steps - cut only when
    # total_steps * cut_fraction is whole; with few steps (a few hundred target labels) it is not, and the
    # paper's form would run below 1/ratio and then negative. Decaying over the steps left is the same schedule
    # where the paper's form is right, and stays in [1/ratio, 1] everywhere.
    p = step / cut if step < cut else max(0.0, 1 - (step - cut) / max(1, total_steps - cut))
    return (1 + p * (ratio - 1)) / ratio


@dataclass
class History:
    """What happened during ``fit``: per-epoch metrics and per-step losses. Plots itself."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    step_lrs: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    metric: str = "accuracy"  # the validation metric that picked the best epoch (the objective's)
    start: dict[str, float] = field(default_factory=dict)  # validation metrics before the first step, where the
    # caller measured them (the language model's second stage: the IMDB model's perplexity on the target's text)

    @property
    def seconds(self) -> float:
        return sum(epoch["seconds"] for epoch in self.epochs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def plot(self, title: str = "training", smoothing: int = 20):
        """Training loss per step (smoothed), validation loss per epoch, and the validation metric per epoch."""
        import matplotlib.pyplot as plt

        figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 3.5))
        steps = np.arange(1, len(self.step_losses) + 1)
        if self.step_losses:
            window = max(1, min(smoothing, len(self.step_losses)))
            smoothed = np.convolve(self.step_losses, np.ones(window) / window, mode="valid")
            loss_axis.plot(steps[window - 1:], smoothed, label=f"train (mean of {window} steps)")
        steps_per_epoch = len(self.step_losses) / max(1, len(self.epochs))
        epoch_ends = [(i + 1) * steps_per_epoch for i in range(len(self.epochs))]
        loss_axis.plot(epoch_ends, [e["val_loss"] for e in self.epochs], "o-", label="validation")
        loss_name = "binary cross-entropy" if self.metric == "accuracy" else "cross-entropy per token"
        loss_axis.set(xlabel="step", ylabel=loss_name, title=f"{title}: loss")
        loss_axis.legend()
        values = [e[f"val_{self.metric}"] * (100 if self.metric == "accuracy" else 1) for e in self.epochs]
        metric_axis.plot(range(1, len(self.epochs) + 1), values, "o-")
        if self.best_epoch is not None:
            metric_axis.axvline(self.best_epoch, color="grey", linestyle=":", label="best (kept)")
            metric_axis.legend()
        label = "validation accuracy (%)" if self.metric == "accuracy" else f"validation {self.metric}"
        metric_axis.set(xlabel="epoch", ylabel=label, title=f"{title}: {self.metric}")
        metric_axis.set_xticks(range(1, len(self.epochs) + 1))
        figure.tight_layout()
        return figure


def _batches_to(device: torch.device, batch) -> tuple[Tensor, Tensor, Tensor]:
    tokens, lengths, labels = batch
    return tokens.to(device, non_blocking=True), lengths, labels.to(device, torch.float32)


def binary_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
    """Accuracy, F1 of the positive class, and the confusion matrix [[TN, FP], [FN, TP]]."""
    labels = labels.astype(int)
    predictions = predictions.astype(int)
    tp = int(((predictions == 1) & (labels == 1)).sum())
    tn = int(((predictions == 0) & (labels == 0)).sum())
    fp = int(((predictions == 1) & (labels == 0)).sum())
    fn = int(((predictions == 0) & (labels == 1)).sum())
    total = max(1, len(labels))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {"accuracy": (tp + tn) / total, "f1": f1, "confusion": [[tn, fp], [fn, tp]], "count": int(len(labels))}


@torch.no_grad()
def predict_logits(model: nn.Module, loader: Iterable, device: str | torch.device | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The model's logits (before the sigmoid) and the labels, in the loader's order."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    logits, labels = [], []
    for batch in loader:
        tokens, lengths, target = _batches_to(device, batch)
        logits.append(model(tokens, lengths).float().cpu())
        labels.append(target.cpu())
    if not logits:
        return np.zeros(0), np.zeros(0)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def predict(model: nn.Module, loader: Iterable, device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of "positive" and the labels, in the loader's order."""
    logits, labels = predict_logits(model, loader, device)
    return torch.sigmoid(torch.from_numpy(logits)).numpy(), labels


def evaluate(model: nn.Module, loader: Iterable, device: str | torch.device | None = None) -> dict[str, Any]:
    """Accuracy, F1, confusion matrix and mean binary cross-entropy of ``model`` on ``loader``."""
    probabilities, labels = predict(model, loader, device)
    metrics = binary_metrics(labels, probabilities >= 0.5)
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    metrics["loss"] = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))) \
        if len(labels) else float("nan")
    return metrics


class Objective:
    """What :func:`fit` minimises on a training batch and how it scores a validation pass.

    The default, :class:`ClassifierObjective`, is the sentiment classifier's (binary cross-entropy, validation
    accuracy); :class:`tl_core.lm.LanguageModelObjective` is the language model's (next-word cross-entropy with
    the hidden state carried from one window to the next, validation perplexity). One loop, two objectives:
    introduced in ``notebooks/04_language_model.ipynb``.
    """

    #: the validation metric that picks the best epoch, as named in the records (``val_<metric>``)
    metric = "accuracy"
    #: True when a larger ``metric`` is better
    higher_is_better = True

    def start_epoch(self, model: nn.Module) -> None:
        """Called before each training epoch (a language model forgets its carried state here)."""

    def batch_loss(self, model: nn.Module, batch, device: torch.device) -> tuple[Tensor, int, int]:
        """The mean loss of one training batch, how many examples it averages over, and how many tokens it read."""
        raise NotImplementedError

    def validate(self, model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
        """Validation metrics: at least ``loss`` and :attr:`metric`."""
        raise NotImplementedError

    def progress(self, mean_loss: float) -> dict[str, str]:
        """Fields of the progress bar from the running mean of the training loss."""
        return {"loss": f"{mean_loss:.4f}"}

    def describe(self, validation: dict[str, float]) -> str:
        return f"validation loss {validation['loss']:.4f}, {self.metric} {validation[self.metric]:.4f}"


class ClassifierObjective(Objective):
    """The sentiment classifier's: batches ``(tokens, lengths, labels)``, binary cross-entropy on the logit,
    validation accuracy (:func:`evaluate`)."""

    metric = "accuracy"

    def __init__(self):
        self.loss_function = nn.BCEWithLogitsLoss()

    def batch_loss(self, model, batch, device):
        tokens, lengths, labels = _batches_to(device, batch)
        return self.loss_function(model(tokens, lengths), labels), len(labels), int(lengths.sum())

    def validate(self, model, loader, device):
        metrics = evaluate(model, loader, device)
        return {"loss": metrics["loss"], "accuracy": metrics["accuracy"], "f1": metrics["f1"]}

    def describe(self, validation):
        return f"validation loss {validation['loss']:.4f}, accuracy {100 * validation['accuracy']:.2f}%"


def _diverged(title: str, what: str, value: float, epoch: int, step: int, config: TrainConfig) -> FloatingPointError:
    """The error :func:`fit` raises when a step's loss or gradient is not a finite number: the step is not taken."""
    where = f"is {value}" if not math.isfinite(value) else "is not finite on another process"
    return FloatingPointError(
        f"{title}: the {what} {where} at epoch {epoch}, step {step}: training diverged, and this step was not "
        f"taken. Lower the learning rate (lr; with discriminative rates a larger decay lowers the lower groups') "
        f"and train again{'' if config.grad_clip > 0 else ', with gradient clipping on (grad_clip, now 0)'}.")


def _finite_on_every_process(value: float, device: torch.device) -> bool:
    """Whether ``value`` is finite here and, under ``torch.distributed``, on every other process too: all of them
    must stop at the same step, or those that go on wait for the others in the gradients' all-reduce. (A gradient
    norm needs no such check: it is taken after the all-reduce, so it is the same everywhere.)"""
    finite = math.isfinite(value)
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        flag = torch.tensor([0.0 if finite else 1.0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        finite = bool(flag.item() == 0.0)
    return finite


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable, config: TrainConfig, *,
        param_groups: list[dict[str, Any]] | None = None,
        on_epoch_start: Callable[[int, nn.Module], None] | None = None,
        checkpoint: Callable[[nn.Module, dict[str, Any]], None] | None = None,
        objective: Objective | None = None,
        title: str = "training") -> History:
    """Train ``model`` and keep the weights of its best validation epoch (restored at the end).

    ``param_groups``: AdamW parameter groups, each with its own ``lr`` (discriminative learning rates); by
    default one group of every parameter at ``config.lr``. Frozen parameters (``requires_grad=False``) may be
    included: they are skipped until unfrozen. ``on_epoch_start(epoch, model)`` runs before each epoch (1-based),
    e.g. to unfreeze a layer group. ``checkpoint(model, info)`` is called whenever validation improves.
    ``objective``: what a batch's loss is and how validation scores (default: :class:`ClassifierObjective`; the
    language model passes :class:`tl_core.lm.LanguageModelObjective`). ``model`` may be wrapped in
    ``DistributedDataParallel``: each process then trains on its own shard and the gradients are averaged.
    A step whose loss or gradient norm is not a finite number stops training with a ``FloatingPointError`` before
    the optimizer moves (a diverged run is an error, not a model at chance level).
    """
    from tqdm.std import tqdm

    objective = objective or ClassifierObjective()
    device = torch.device(config.device) if config.device else default_device()
    model.to(device)
    groups = param_groups or [{"params": list(model.parameters()), "lr": config.lr}]
    for group in groups:
        group.setdefault("lr", config.lr)
        group["base_lr"] = group["lr"]
    # fused: one kernel over every parameter instead of a chain of foreach ops; on a CPU the 50,000-word embedding
    # table makes the default implementation the most expensive part of a step (measured: about 7x slower).
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    generator = torch.Generator().manual_seed(config.seed)
    total_steps = config.epochs * len(train_loader)
    history = History(metric=objective.metric)
    best_score, best_state, epochs_without_gain, step = -math.inf, None, 0, 0
    for epoch in range(1, config.epochs + 1):
        sampler = getattr(train_loader, "batch_sampler", None) or train_loader
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # a new, seeded shuffle of the batches (or of the windows) each epoch
        if on_epoch_start is not None:
            on_epoch_start(epoch, model)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))  # dropout of this epoch
        model.train()
        objective.start_epoch(model)
        started = time.perf_counter()
        total_loss, seen, tokens_seen = 0.0, 0, 0
        bar = tqdm(train_loader, desc=f"{title} epoch {epoch}/{config.epochs}", file=sys.stdout,
                   disable=not config.progress, leave=True, dynamic_ncols=False, ncols=110, mininterval=2.0)
        for batch in bar:
            multiplier = lr_multiplier(config.schedule, step, total_steps, config.stlr_cut_fraction,
                                       config.stlr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * multiplier
            optimizer.zero_grad(set_to_none=True)
            loss, examples, tokens = objective.batch_loss(model, batch, device)
            batch_loss = loss.item()
            if not _finite_on_every_process(batch_loss, loss.device):
                bar.close()
                raise _diverged(title, "training loss", batch_loss, epoch, step + 1, config)
            loss.backward()
            if config.grad_clip > 0:
                norm = nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None],
                                                config.grad_clip).item()
                if not math.isfinite(norm):
                    bar.close()
                    raise _diverged(title, "gradient norm", norm, epoch, step + 1, config)
            optimizer.step()
            step += 1
            history.step_losses.append(batch_loss)
            history.step_lrs.append(optimizer.param_groups[-1]["lr"])
            total_loss += batch_loss * examples
            seen += examples
            tokens_seen += tokens
            elapsed = time.perf_counter() - started
            bar.set_postfix(**objective.progress(total_loss / seen), tok_s=f"{tokens_seen / max(elapsed, 1e-9):,.0f}",
                            refresh=False)
        bar.close()
        train_seconds = time.perf_counter() - started
        validation = objective.validate(model, val_loader, device)
        record = {"epoch": epoch, "train_loss": total_loss / max(1, seen),
                  **{f"val_{name}": value for name, value in validation.items()},
                  "seconds": train_seconds, "tokens": tokens_seen,
                  "tokens_per_second": tokens_seen / max(train_seconds, 1e-9)}
        history.epochs.append(record)
        score = validation[objective.metric] * (1 if objective.higher_is_better else -1)
        improved = score > best_score
        if config.progress:
            print(f"epoch {epoch}: train loss {record['train_loss']:.4f} | {objective.describe(validation)}"
                  + (" (best so far)" if improved else ""))
        if improved:
            best_score, history.best_epoch, epochs_without_gain = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            if checkpoint is not None:
                checkpoint(model, {"epoch": epoch, f"val_{objective.metric}": validation[objective.metric]})
        else:
            epochs_without_gain += 1
            if config.patience and epochs_without_gain >= config.patience and epoch < config.epochs:
                history.stopped_early = True
                if config.progress:
                    print(f"stopping early: no better validation {objective.metric} for {epochs_without_gain} "
                          "epoch(s)")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------

class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the vocabulary or the configuration it is loaded with."""


#: What save_checkpoint writes besides the format tag, and the kind of value each holds.
_CHECKPOINT_KEYS = {"model_config": dict, "vocab": list, "vocab_fingerprint": str, "state_dict": dict}


def save_checkpoint(path: str | Path, model: nn.Module, vocab_tokens: list[str],
                    extra: dict[str, Any] | None = None, kind: str = "classifier") -> Path:
    """Weights, the model config and the vocabulary, written atomically (a reader never sees half a file).
    ``kind`` says which model it is ("classifier", or "language_model" for :mod:`tl_core.lm`)."""
    payload = {"format": CHECKPOINT_FORMAT, "kind": kind, "model_config": model.config.to_dict(),
               "vocab": list(vocab_tokens), "vocab_fingerprint": tokens_fingerprint(list(vocab_tokens)),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "extra": extra or {}}
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return Path(path)


def load_checkpoint(path: str | Path, vocab_tokens: list[str] | None = None,
                    expected_config: dict[str, Any] | None = None, kind: str | None = "classifier"
                    ) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check it against the vocabulary and config in use,
    and that it holds the ``kind`` of model asked for (None: any).

    Raises :class:`CheckpointMismatchError` naming what differs.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointMismatchError(f"{path} is not a readable checkpoint ({type(error).__name__}: {error})") \
            from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    missing = [key for key, expected in _CHECKPOINT_KEYS.items() if not isinstance(payload.get(key), expected)]
    if missing:
        raise CheckpointMismatchError(
            f"{path} says it is a {CHECKPOINT_FORMAT} checkpoint but lacks {', '.join(missing)} (or holds the wrong "
            "kind of value there): it was not written by tl_core.train.save_checkpoint. Fix: run the notebook that "
            "trains it again.")
    saved_kind = payload.get("kind", "classifier")
    if kind is not None and saved_kind != kind:
        raise CheckpointMismatchError(f"{path} holds a {saved_kind.replace('_', ' ')}, not a "
                                      f"{kind.replace('_', ' ')}")
    if vocab_tokens is not None and payload["vocab_fingerprint"] != tokens_fingerprint(list(vocab_tokens)):
        saved = payload["vocab"]
        first_difference = next((i for i, (a, b) in enumerate(zip(saved, vocab_tokens)) if a != b),
                                min(len(saved), len(vocab_tokens)))
        raise CheckpointMismatchError(
            f"{path} was trained with a different vocabulary ({len(saved):,} tokens) than the one given "
            f"({len(vocab_tokens):,} tokens; first difference at id {first_difference}). Use the vocabulary saved "
            "in the checkpoint (its 'vocab' entry) or the one from the same run directory.")
    if expected_config is not None:
        differing = {k: (payload["model_config"].get(k), v) for k, v in expected_config.items()
                     if payload["model_config"].get(k) != v}
        if differing:
            described = ", ".join(f"{k}: checkpoint {a!r} vs expected {b!r}" for k, (a, b) in differing.items())
            raise CheckpointMismatchError(f"{path} has a different model configuration: {described}")
    return payload


def load_state(model: nn.Module, payload: dict[str, Any], path: str | Path) -> nn.Module:
    """Load a checkpoint's weights into ``model``, built from its configuration; weights that do not fit it are a
    :class:`CheckpointMismatchError` naming each one."""
    differences = _state_differences(payload["state_dict"], model.state_dict())
    if differences:
        raise CheckpointMismatchError(
            f"{path}: the weights do not fit the model its configuration builds ({'; '.join(differences[:5])}"
            f"{f'; and {len(differences) - 5} more' if len(differences) > 5 else ''}). The checkpoint's config and "
            "weights disagree, or an override changed the architecture; only dropout, backend and freezing "
            "settings may be overridden.")
    model.load_state_dict(payload["state_dict"])
    return model


def model_from_checkpoint(path: str | Path, vocab_tokens: list[str] | None = None,
                          **config_overrides) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the saved :class:`SentimentLSTM` (optionally with other dropout/backend/freezing settings)."""
    from .models import ModelConfig, SentimentLSTM

    payload = load_checkpoint(path, vocab_tokens)
    try:
        config = ModelConfig.from_dict({**payload["model_config"], **config_overrides})
    except (TypeError, ValueError) as error:
        raise CheckpointMismatchError(f"{path}: its model configuration cannot be rebuilt ({error})") from error
    return load_state(SentimentLSTM(config), payload, path), payload


def _state_differences(saved: dict[str, Any], expected: dict[str, Tensor]) -> list[str]:
    """Each weight that is missing, unexpected or of another shape, named (torch's own error lists them all in one
    unreadable line, and calls none of them a checkpoint problem)."""
    differences = [f"{name} missing from the checkpoint" for name in expected if name not in saved]
    differences += [f"{name} in the checkpoint but not in the model" for name in saved if name not in expected]
    for name, tensor in expected.items():
        if name in saved:
            shape = tuple(getattr(saved[name], "shape", ()))
            if shape != tuple(tensor.shape):
                differences.append(f"{name}: checkpoint {shape} vs model {tuple(tensor.shape)}")
    return differences
