"""Transfer strategies (tl_core/transfer.py): each freezes, initialises and schedules exactly what it says."""

import numpy as np
import pytest
import torch

from tl_core import train, transfer
from tl_core.models import ModelConfig, SentimentLSTM
from test_train import VOCAB, loader, synthetic_reviews


@pytest.fixture(scope="module")
def source():
    """A small two-layer source model trained briefly on the synthetic task, as a checkpoint payload."""
    train.seed_everything(0)
    model = SentimentLSTM(ModelConfig(vocab_size=len(VOCAB), embedding_dim=8, hidden_size=8, num_layers=2))
    data = loader(*synthetic_reviews(128, 1))
    train.fit(model, data, data, train.TrainConfig(epochs=1, progress=False, device="cpu", patience=0))
    return {"model_config": model.config.to_dict(),
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}


@pytest.fixture(scope="module")
def word2vec():
    return np.random.default_rng(0).normal(size=(len(VOCAB), 8)).astype(np.float32)


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def moved(before, model):
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())}


def group_of(name):
    if name.startswith("embedding"):
        return "embedding"
    if name.startswith("head"):
        return "head"
    return f"lstm layer {name.split('_l')[-1].split('_')[0]}"


@pytest.mark.parametrize("name", list(transfer.STRATEGIES))
def test_initialisation(name, source, word2vec):
    strategy = transfer.get_strategy(name)
    model = transfer.build_model(strategy, source, word2vec, seed=3)
    state = model.state_dict()
    from_source = {k for k, v in source["state_dict"].items() if torch.equal(state[k], v)}
    if name == "scratch":
        assert not from_source, "nothing comes from the source"
        assert not torch.equal(state["embedding.weight"], torch.from_numpy(word2vec))
    elif name == "embeddings":
        assert torch.equal(state["embedding.weight"], torch.from_numpy(word2vec))
        assert not any(k.startswith("lstm") for k in from_source)
    elif name == "frozen":
        assert {k for k in source["state_dict"] if not k.startswith("head")} <= from_source
        assert not {"head.weight", "head.bias"} & from_source, "feature extraction trains a new head"
    else:  # finetune, gradual: every source weight, head included
        assert from_source == set(source["state_dict"])
    again = transfer.build_model(strategy, source, word2vec, seed=3)
    for key, value in again.state_dict().items():
        assert torch.equal(value, state[key]), "the same seed builds the same model"


@pytest.mark.parametrize("name,trained_by_epoch", [
    ("scratch", {1: {"embedding", "lstm layer 0", "lstm layer 1", "head"}}),
    ("finetune", {1: {"embedding", "lstm layer 0", "lstm layer 1", "head"}}),
    ("frozen", {1: {"head"}, 2: {"head"}, 3: {"head"}}),
    ("gradual", {1: {"head"}, 2: {"head", "lstm layer 1"}, 3: {"head", "lstm layer 1", "lstm layer 0"},
                 4: {"head", "lstm layer 1", "lstm layer 0", "embedding"}}),
])
def test_what_trains_in_each_epoch(name, trained_by_epoch, source, word2vec):
    """Checked twice: on requires_grad, and on the weights that must not move."""
    strategy = transfer.get_strategy(name)
    model = transfer.build_model(strategy, source, word2vec, seed=0)
    groups, hook = transfer.training_plan(model, strategy, lr=1e-2)
    data = loader(*synthetic_reviews(64, 5))
    for epoch, expected in trained_by_epoch.items():
        hook(epoch, model)
        trainable = {group_of(n) for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == expected, f"epoch {epoch}"
        before = snapshot(model)
        train.fit(model, data, data, train.TrainConfig(epochs=1, patience=0, progress=False, device="cpu"),
                  param_groups=[{"params": g["params"], "lr": g["lr"]} for g in groups],
                  on_epoch_start=lambda e, m, epoch=epoch: hook(epoch, m))
        assert {group_of(n) for n in moved(before, model)} == expected, f"epoch {epoch}"


def test_discriminative_learning_rates(source, word2vec):
    model = transfer.build_model(transfer.get_strategy("gradual"), source, word2vec, seed=0)
    groups = transfer.discriminative_groups(model, lr=1e-2, lr_decay=2.6)
    assert [g["name"] for g in groups] == ["embedding", "lstm layer 0", "lstm layer 1", "head"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-2 / 2.6 ** 3, 1e-2 / 2.6 ** 2, 1e-2 / 2.6, 1e-2])
    flat = transfer.discriminative_groups(model, lr=1e-2, lr_decay=1.0)
    assert all(g["lr"] == 1e-2 for g in flat)


def test_gradual_uses_stlr_and_others_their_schedule(source, word2vec):
    data = loader(*synthetic_reviews(64, 5))
    config = train.TrainConfig(epochs=2, lr=1e-2, patience=0, progress=False, device="cpu")
    _, history = transfer.train_strategy(transfer.get_strategy("gradual"), source, word2vec, data, data, config)
    rates = np.array(history.step_lrs)
    assert rates.argmax() == max(1, int(0.1 * len(rates))) and rates.max() == pytest.approx(1e-2)
    assert rates[0] == pytest.approx(1e-2 / 32)
    _, history = transfer.train_strategy(transfer.get_strategy("finetune"), source, word2vec, data, data, config)
    assert set(history.step_lrs) == {1e-2}


def test_run_strategy_record(source, word2vec):
    data = loader(*synthetic_reviews(64, 5))
    config = train.TrainConfig(epochs=1, patience=0, progress=False, device="cpu", seed=2)
    record = transfer.run_strategy(transfer.get_strategy("frozen"), source, word2vec, data, data, data, config,
                                   n_labels=64)
    assert {"strategy": "frozen", "n_labels": 64, "seed": 2}.items() <= record.items()
    assert 0.0 <= record["accuracy"] <= 1.0


def test_unknown_strategy_and_missing_embeddings(source):
    with pytest.raises(ValueError, match="unknown strategy 'lora'; one of: scratch, embeddings, frozen"):
        transfer.get_strategy("lora")
    with pytest.raises(ValueError, match="needs the Word2Vec embedding matrix"):
        transfer.build_model(transfer.get_strategy("embeddings"), source, None, seed=0)
