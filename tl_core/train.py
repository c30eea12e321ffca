"""One training loop for every notebook: ``fit``, ``evaluate``, learning-rate schedules, checkpoints.

Introduced in ``notebooks/04_source_lstm.ipynb``; the transfer strategies of ``05_transfer`` and
``06_fine_tuning`` are configurations of the same loop (parameter groups with their own learning rates, a
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
    p = step / cut if step < cut else 1 - (step - cut) / max(1, total_steps - cut)
    return (1 + p * (ratio - 1)) / ratio


@dataclass
class History:
    """What happened during ``fit``: per-epoch metrics and per-step losses. Plots itself."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    step_lrs: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def seconds(self) -> float:
        return sum(epoch["seconds"] for epoch in self.epochs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def plot(self, title: str = "training", smoothing: int = 20):
        """Training loss per step (smoothed), validation loss and accuracy per epoch."""
        import matplotlib.pyplot as plt

        figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.5))
        steps = np.arange(1, len(self.step_losses) + 1)
        if self.step_losses:
            window = max(1, min(smoothing, len(self.step_losses)))
            smoothed = np.convolve(self.step_losses, np.ones(window) / window, mode="valid")
            loss_axis.plot(steps[window - 1:], smoothed, label=f"train (mean of {window} steps)")
        steps_per_epoch = len(self.step_losses) / max(1, len(self.epochs))
        epoch_ends = [(i + 1) * steps_per_epoch for i in range(len(self.epochs))]
        loss_axis.plot(epoch_ends, [e["val_loss"] for e in self.epochs], "o-", label="validation")
        loss_axis.set(xlabel="step", ylabel="binary cross-entropy", title=f"{title}: loss")
        loss_axis.legend()
        accuracy_axis.plot(range(1, len(self.epochs) + 1), [100 * e["val_accuracy"] for e in self.epochs], "o-")
        if self.best_epoch is not None:
            accuracy_axis.axvline(self.best_epoch, color="grey", linestyle=":", label="best (kept)")
            accuracy_axis.legend()
        accuracy_axis.set(xlabel="epoch", ylabel="validation accuracy (%)", title=f"{title}: accuracy")
        accuracy_axis.set_xticks(range(1, len(self.epochs) + 1))
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


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable, config: TrainConfig, *,
        param_groups: list[dict[str, Any]] | None = None,
        on_epoch_start: Callable[[int, nn.Module], None] | None = None,
        checkpoint: Callable[[nn.Module, dict[str, Any]], None] | None = None,
        title: str = "training") -> History:
    """Train ``model`` and keep the weights of its best validation epoch (restored at the end).

    ``param_groups``: AdamW parameter groups, each with its own ``lr`` (discriminative learning rates); by
    default one group of every parameter at ``config.lr``. Frozen parameters (``requires_grad=False``) may be
    included: they are skipped until unfrozen. ``on_epoch_start(epoch, model)`` runs before each epoch (1-based),
    e.g. to unfreeze a layer group. ``checkpoint(model, info)`` is called whenever validation improves.
    """
    from tqdm.std import tqdm

    device = torch.device(config.device) if config.device else default_device()
    model.to(device)
    groups = param_groups or [{"params": list(model.parameters()), "lr": config.lr}]
    for group in groups:
        group.setdefault("lr", config.lr)
        group["base_lr"] = group["lr"]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    loss_function = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(config.seed)
    total_steps = config.epochs * len(train_loader)
    history = History()
    best_accuracy, best_state, epochs_without_gain, step = -1.0, None, 0, 0
    for epoch in range(1, config.epochs + 1):
        sampler = getattr(train_loader, "batch_sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # a new, seeded shuffle of the length buckets each epoch
        if on_epoch_start is not None:
            on_epoch_start(epoch, model)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))  # dropout of this epoch
        model.train()
        started = time.perf_counter()
        total_loss, seen, tokens_seen = 0.0, 0, 0
        bar = tqdm(train_loader, desc=f"{title} epoch {epoch}/{config.epochs}", file=sys.stdout,
                   disable=not config.progress, leave=True, dynamic_ncols=False, ncols=100)
        for batch in bar:
            tokens, lengths, labels = _batches_to(device, batch)
            multiplier = lr_multiplier(config.schedule, step, total_steps, config.stlr_cut_fraction,
                                       config.stlr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * multiplier
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(model(tokens, lengths), labels)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], config.grad_clip)
            optimizer.step()
            step += 1
            batch_loss = loss.item()
            history.step_losses.append(batch_loss)
            history.step_lrs.append(optimizer.param_groups[-1]["lr"])
            total_loss += batch_loss * len(labels)
            seen += len(labels)
            tokens_seen += int(lengths.sum())
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
        bar.close()
        train_seconds = time.perf_counter() - started
        validation = evaluate(model, val_loader, device)
        record = {"epoch": epoch, "train_loss": total_loss / max(1, seen), "val_loss": validation["loss"],
                  "val_accuracy": validation["accuracy"], "val_f1": validation["f1"], "seconds": train_seconds,
                  "tokens_per_second": tokens_seen / max(train_seconds, 1e-9)}
        history.epochs.append(record)
        improved = validation["accuracy"] > best_accuracy
        if config.progress:
            print(f"epoch {epoch}: train loss {record['train_loss']:.4f} | validation loss {validation['loss']:.4f}, "
                  f"accuracy {100 * validation['accuracy']:.2f}%" + (" (best so far)" if improved else ""))
        if improved:
            best_accuracy, history.best_epoch, epochs_without_gain = validation["accuracy"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            if checkpoint is not None:
                checkpoint(model, {"epoch": epoch, "val_accuracy": validation["accuracy"]})
        else:
            epochs_without_gain += 1
            if config.patience and epochs_without_gain >= config.patience and epoch < config.epochs:
                history.stopped_early = True
                if config.progress:
                    print(f"stopping early: no better validation accuracy for {epochs_without_gain} epoch(s)")
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
                    extra: dict[str, Any] | None = None) -> Path:
    """Weights, the model config and the vocabulary, written atomically (a reader never sees half a file)."""
    payload = {"format": CHECKPOINT_FORMAT, "model_config": model.config.to_dict(),
               "vocab": list(vocab_tokens), "vocab_fingerprint": tokens_fingerprint(list(vocab_tokens)),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "extra": extra or {}}
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return Path(path)


def load_checkpoint(path: str | Path, vocab_tokens: list[str] | None = None,
                    expected_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check it against the vocabulary and config in use.

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
    missing = [key for key, kind in _CHECKPOINT_KEYS.items() if not isinstance(payload.get(key), kind)]
    if missing:
        raise CheckpointMismatchError(
            f"{path} says it is a {CHECKPOINT_FORMAT} checkpoint but lacks {', '.join(missing)} (or holds the wrong "
            "kind of value there): it was not written by tl_core.train.save_checkpoint. Fix: run the notebook that "
            "trains it again.")
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


def model_from_checkpoint(path: str | Path, vocab_tokens: list[str] | None = None,
                          **config_overrides) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the saved :class:`SentimentLSTM` (optionally with other dropout/backend/freezing settings)."""
    from .models import ModelConfig, SentimentLSTM

    payload = load_checkpoint(path, vocab_tokens)
    try:
        config = ModelConfig.from_dict({**payload["model_config"], **config_overrides})
    except (TypeError, ValueError) as error:
        raise CheckpointMismatchError(f"{path}: its model configuration cannot be rebuilt ({error})") from error
    model = SentimentLSTM(config)
    differences = _state_differences(payload["state_dict"], model.state_dict())
    if differences:
        raise CheckpointMismatchError(
            f"{path}: the weights do not fit the model its configuration builds ({'; '.join(differences[:5])}"
            f"{f'; and {len(differences) - 5} more' if len(differences) > 5 else ''}). The checkpoint's config and "
            "weights disagree, or an override changed the architecture; only dropout, backend and freezing "
            "settings may be overridden.")
    model.load_state_dict(payload["state_dict"])
    return model, payload


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
