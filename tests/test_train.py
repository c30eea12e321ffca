"""The training loop (tl_core/train.py): it learns, it is deterministic, schedules, metrics, checkpoints."""

import copy

import numpy as np
import pytest
import torch

from tl_core import train
from tl_core.models import ModelConfig, SentimentLSTM

VOCAB = ["<pad>", "<unk>", "<eos>"] + [f"w{i}" for i in range(1, 40)]  # the specials, then w1..w39 (ids 3..41)
GOOD, BAD = 5, 6  # the tokens that decide the synthetic label


def synthetic_reviews(count, seed):
    """Random reviews of 4-30 tokens; positive ones contain GOOD, negative ones BAD, once, anywhere."""
    generator = np.random.default_rng(seed)
    reviews, labels = [], []
    for index in range(count):
        length = int(generator.integers(4, 31))
        review = generator.integers(7, len(VOCAB), size=length)
        label = index % 2
        review[generator.integers(0, length)] = GOOD if label else BAD
        reviews.append(review.tolist())
        labels.append(label)
    return reviews, labels


def loader(reviews, labels, batch_size=32, shuffle_seed=None):
    order = np.arange(len(reviews))
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(order)
    batches = []
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        longest = max(len(reviews[i]) for i in chosen)
        tokens = torch.zeros(len(chosen), longest, dtype=torch.int64)
        for row, i in enumerate(chosen):
            tokens[row, :len(reviews[i])] = torch.tensor(reviews[i])
        batches.append((tokens, torch.tensor([len(reviews[i]) for i in chosen]),
                        torch.tensor([labels[i] for i in chosen], dtype=torch.float32)))
    return batches


def train_once(seed=0, epochs=3, backend="fused"):
    train.seed_everything(seed)
    model = SentimentLSTM(ModelConfig(vocab_size=len(VOCAB), embedding_dim=16, hidden_size=16,
                                      embedding_dropout=0.1, output_dropout=0.1, lstm_backend=backend))
    train_data, val_data = synthetic_reviews(512, 1), synthetic_reviews(128, 2)
    config = train.TrainConfig(epochs=epochs, lr=1e-2, seed=seed, progress=False, patience=0, device="cpu")
    history = train.fit(model, loader(*train_data, shuffle_seed=seed), loader(*val_data), config)
    return model, history, val_data


def test_fit_learns_a_separable_task():
    model, history, val_data = train_once()
    metrics = train.evaluate(model, loader(*val_data))
    assert metrics["accuracy"] > 0.95, history.epochs
    assert history.best_epoch is not None and len(history.epochs) == 3
    assert history.step_losses[-1] < history.step_losses[0]


def test_same_seed_same_numbers():
    _, first, _ = train_once(seed=3, epochs=1)
    _, second, _ = train_once(seed=3, epochs=1)
    assert first.step_losses == second.step_losses
    _, other, _ = train_once(seed=4, epochs=1)
    assert other.step_losses != first.step_losses


def test_best_epoch_is_kept_and_early_stopping():
    train.seed_everything(0)
    model = SentimentLSTM(ModelConfig(vocab_size=len(VOCAB), embedding_dim=8, hidden_size=8, lstm_backend="torch"))
    data = loader(*synthetic_reviews(64, 1))
    saved = []
    config = train.TrainConfig(epochs=6, lr=0.0, patience=1, progress=False, device="cpu")  # lr 0: no gain
    history = train.fit(model, data, data, config, checkpoint=lambda m, info: saved.append(info["epoch"]))
    assert history.stopped_early and len(history.epochs) == 2 and history.best_epoch == 1 and saved == [1]


def test_the_best_epochs_weights_are_restored():
    """Validation on the training reviews with their labels flipped: the more the model learns, the worse it
    scores, so epoch 1 is the best, the weights move on in epochs 2 and 3, and fit hands back epoch 1's."""
    train.seed_everything(0)
    model = SentimentLSTM(ModelConfig(vocab_size=len(VOCAB), embedding_dim=8, hidden_size=8, lstm_backend="torch"))
    reviews, labels = synthetic_reviews(64, 1)
    flipped = loader(reviews, [1 - label for label in labels])
    best, starts = {}, {}
    config = train.TrainConfig(epochs=6, lr=2e-2, patience=2, progress=False, device="cpu")
    history = train.fit(model, loader(reviews, labels), flipped, config,
                        checkpoint=lambda m, info: best.update({info["epoch"]: copy.deepcopy(m.state_dict())}),
                        on_epoch_start=lambda epoch, m: starts.update({epoch: copy.deepcopy(m.state_dict())}))
    assert history.best_epoch == 1 and list(best) == [1] and history.stopped_early and len(history.epochs) == 3
    assert history.epochs[-1]["val_accuracy"] < history.epochs[0]["val_accuracy"]
    assert not torch.equal(starts[3]["head.weight"], best[1]["head.weight"]), "training went on after epoch 1"
    for name, value in model.state_dict().items():
        assert torch.equal(value, best[1][name]), name


class DivergeAt(train.ClassifierObjective):
    """The classifier's objective; from its `step`-th batch on, the loss is nan ("loss") or stays finite while its
    gradient is infinite ("gradient": sqrt at 0 of a term worth 0 with the head's bias in it)."""

    def __init__(self, step, where):
        super().__init__()
        self.step, self.where, self.calls = step, where, 0

    def batch_loss(self, model, batch, device):
        loss, examples, tokens = super().batch_loss(model, batch, device)
        self.calls += 1
        if self.calls >= self.step:
            if self.where == "loss":
                loss = loss * float("nan")
            else:
                bias = model.head.bias
                loss = loss + torch.sqrt((bias - bias.detach()).sum())
        return loss, examples, tokens


@pytest.mark.parametrize("where, message", [("loss", "the training loss is nan"),
                                            ("gradient", "the gradient norm is (inf|nan)")])
def test_a_diverged_step_is_a_clear_error_and_is_not_taken(where, message):
    train.seed_everything(0)
    model = SentimentLSTM(ModelConfig(vocab_size=len(VOCAB), embedding_dim=8, hidden_size=8, lstm_backend="torch"))
    data = loader(*synthetic_reviews(128, 1))  # 4 batches an epoch
    epochs = []
    config = train.TrainConfig(epochs=3, lr=1e-2, progress=False, device="cpu")
    with pytest.raises(FloatingPointError, match=message + r" at epoch 2, step 6: training diverged.*Lower the "
                                                           r"learning rate"):
        train.fit(model, data, data, config, objective=DivergeAt(6, where),
                  on_epoch_start=lambda epoch, m: epochs.append(epoch))
    assert epochs == [1, 2]
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad step did not move the weights


DIVERGING_RANK = """
import torch, torch.distributed as dist
from torch import nn
from tl_core import train

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = nn.parallel.DistributedDataParallel(nn.Linear(4, 1))
batches = [(torch.randn(8, 4), torch.randn(8)) for _ in range(4)]


class Objective(train.ClassifierObjective):
    calls = 0

    def batch_loss(self, model, batch, device):
        Objective.calls += 1
        loss = nn.functional.mse_loss(model(batch[0]).squeeze(-1), batch[1])
        if rank == 1 and Objective.calls == 3:
            loss = loss * float("nan")  # only this process sees a nan
        return loss, len(batch[1]), 0

    def validate(self, model, loader, device):
        return {"loss": 0.0, "accuracy": 0.0, "f1": 0.0}


try:
    train.fit(model, batches, batches, train.TrainConfig(epochs=2, lr=1e-2, progress=False, device="cpu"),
              objective=Objective())
except FloatingPointError as error:
    print(f"rank {rank} stopped: {error}", flush=True)
"""


@pytest.mark.slow
def test_a_nan_on_one_process_stops_every_process(tmp_path):
    """Under torchrun, a nan loss on one process stops all of them at the same step, each with the error: none is
    left waiting in the gradients' all-reduce for a process that has already stopped."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    script = tmp_path / "diverge.py"
    script.write_text(DIVERGING_RANK, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(train.__file__).parents[1])}
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rank 1 stopped: training: the training loss is nan at epoch 1, step 3" in result.stdout
    assert ("rank 0 stopped: training: the training loss is not finite on another process at epoch 1, step 3"
            in result.stdout)


def test_binary_metrics():
    metrics = train.binary_metrics(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1]))
    assert metrics["confusion"] == [[1, 1], [1, 2]]
    assert metrics["accuracy"] == pytest.approx(3 / 5) and metrics["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_stlr_schedule_shape():
    total = 100
    values = [train.lr_multiplier("stlr", step, total, 0.1, 32) for step in range(total)]
    peak = int(np.argmax(values))
    assert peak == 10 and values[peak] == pytest.approx(1.0)
    assert values[0] == pytest.approx(1 / 32)
    assert all(a < b for a, b in zip(values[:peak], values[1:peak + 1]))  # rises
    assert all(a > b for a, b in zip(values[peak:], values[peak + 1:]))  # then falls
    assert values[-1] == pytest.approx(1 / 32, abs=0.02)
    for total in (16, 37, 64):  # total * cut_fraction not whole: still within [1/ratio, 1], falling to the end
        values = [train.lr_multiplier("stlr", step, total, 0.1, 32) for step in range(total)]
        assert min(values) >= 1 / 32 and max(values) == pytest.approx(1.0)
        peak = int(np.argmax(values))
        assert all(a > b for a, b in zip(values[peak:], values[peak + 1:]))
        assert values[-1] <= 1 / 32 + 1 / (total - max(1, int(0.1 * total)))  # one decay step above the floor
    assert train.lr_multiplier("linear", 50, 100) == pytest.approx(0.5)
    assert train.lr_multiplier("constant", 50, 100) == 1.0


def test_discriminative_groups_and_epoch_hook():
    train.seed_everything(0)
    model = SentimentLSTM(ModelConfig(vocab_size=len(VOCAB), embedding_dim=8, hidden_size=8, lstm_backend="torch"))
    groups = [{"params": params, "lr": 1e-2 / 2.6 ** (len(model.layer_groups()) - 1 - depth)}
              for depth, (_, params) in enumerate(model.layer_groups())]
    for parameter in model.embedding.parameters():
        parameter.requires_grad_(False)
    embedding_before = model.embedding.weight.detach().clone()
    seen, moved = [], {}

    def unfreeze(epoch, m):
        seen.append(epoch)
        moved[epoch] = not torch.equal(m.embedding.weight, embedding_before)
        if epoch == 2:
            m.embedding.weight.requires_grad_(True)

    data = loader(*synthetic_reviews(64, 1))
    history = train.fit(model, data, data, train.TrainConfig(epochs=3, patience=0, progress=False, device="cpu"),
                        param_groups=groups, on_epoch_start=unfreeze)
    assert seen == [1, 2, 3]
    assert moved == {1: False, 2: False, 3: True}, "frozen in epoch 1, trained once unfrozen in epoch 2"
    # each group kept its own rate through the schedule: the last step's rates still fall by 2.6 per group
    rates = [group["lr"] for group in groups]
    assert rates[-1] == history.step_lrs[-1] > 0
    assert all(upper / lower == pytest.approx(2.6) for lower, upper in zip(rates, rates[1:]))


def test_checkpoint_round_trip_and_mismatches(tmp_path):
    model, _, val_data = train_once(epochs=1)
    path = train.save_checkpoint(tmp_path / "source.pt", model, VOCAB, {"note": "test"})
    restored, payload = train.model_from_checkpoint(path, VOCAB)
    batch = loader(*val_data)[0]
    torch.testing.assert_close(restored.eval()(*batch[:2]), model.eval()(*batch[:2]))
    assert payload["extra"] == {"note": "test"}
    with pytest.raises(train.CheckpointMismatchError, match=r"different vocabulary \(42 tokens\).*41 tokens"):
        train.load_checkpoint(path, VOCAB[:-1])
    with pytest.raises(train.CheckpointMismatchError, match=r"hidden_size: checkpoint 16 vs expected 32"):
        train.load_checkpoint(path, VOCAB, expected_config={"hidden_size": 32})
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(train.CheckpointMismatchError, match="not a readable checkpoint"):
        train.load_checkpoint(tmp_path / "junk.pt")


def test_checkpoint_with_the_format_tag_but_missing_keys(tmp_path):
    model, _, _ = train_once(epochs=1)
    payload = torch.load(train.save_checkpoint(tmp_path / "whole.pt", model, VOCAB), weights_only=True)
    del payload["state_dict"]
    torch.save(payload, tmp_path / "partial.pt")
    with pytest.raises(train.CheckpointMismatchError, match=r"partial.pt says it is a .* but lacks state_dict"):
        train.load_checkpoint(tmp_path / "partial.pt")


def test_config_and_weights_that_disagree_are_a_checkpoint_mismatch(tmp_path):
    model, _, _ = train_once(epochs=1)
    payload = torch.load(train.save_checkpoint(tmp_path / "whole.pt", model, VOCAB), weights_only=True)
    payload["model_config"]["hidden_size"] *= 2  # the config says 32 units, the weights hold 16
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(train.CheckpointMismatchError,
                       match=r"edited.pt: the weights do not fit .*lstm.weight_hh_l0: checkpoint \(64, 16\) vs model "
                             r"\(128, 32\)"):
        train.model_from_checkpoint(tmp_path / "edited.pt", VOCAB)
    with pytest.raises(train.CheckpointMismatchError, match=r"whole.pt: the weights do not fit .*"
                                                            r"_l1 missing from the checkpoint"):
        train.model_from_checkpoint(tmp_path / "whole.pt", VOCAB, num_layers=2)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model, _, _ = train_once(epochs=1)
    path = train.save_checkpoint(tmp_path / "source.pt", model, VOCAB)
    good = path.read_bytes()

    def failing_save(obj, target):
        with open(target, "wb") as stream:
            stream.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        train.save_checkpoint(path, model, VOCAB)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["source.pt"]
