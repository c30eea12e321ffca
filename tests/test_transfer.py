"""Transfer strategies (tl_core/transfer/): each freezes, initialises and schedules exactly what it says."""

import dataclasses

import numpy as np
import pytest
import torch

from tl_core import data, train, transfer
from tl_core.models import ModelConfig, SentimentLSTM
from test_train import BAD, GOOD, VOCAB, loader, synthetic_reviews


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
def intermediate(source):
    """A stand-in for train_intermediate's result: the source weights, each moved a little."""
    generator = torch.Generator().manual_seed(5)
    moved_weights = {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in source["state_dict"].items()}
    return transfer.Intermediate(state_dict=moved_weights, specs=["amazon:books"], examples=0, dropped=0,
                                 val_accuracy=0.0, zero_shot_accuracy=0.0, history=train.History())


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


@pytest.mark.parametrize("name", [name for name, s in transfer.STRATEGIES.items() if not s.members])
def test_initialisation(name, source, word2vec, intermediate):
    strategy = transfer.get_strategy(name)
    model = transfer.build_model(strategy, source, word2vec, seed=3, intermediate=intermediate)
    state = model.state_dict()
    from_source = {k for k, v in source["state_dict"].items() if k in state and torch.equal(state[k], v)}
    if name == "scratch":
        assert not from_source, "nothing comes from the source"
        assert not torch.equal(state["embedding.weight"], torch.from_numpy(word2vec))
    elif name == "embeddings":
        assert torch.equal(state["embedding.weight"], torch.from_numpy(word2vec))
        assert not any(k.startswith("lstm") for k in from_source)
    elif name == "frozen":
        assert {k for k in source["state_dict"] if not k.startswith("head")} <= from_source
        assert not {"head.weight", "head.bias"} & from_source, "feature extraction trains a new head"
    elif name == "ngrams":  # another model: a linear one over word and word-pair ids, every weight zero
        from tl_core.models import NgramClassifier

        assert isinstance(model, NgramClassifier) and model.vocab_size == source["model_config"]["vocab_size"]
        assert all(not value.any() for value in state.values()), "logistic regression starts at zero"
    elif name == "intermediate":  # every weight of the intermediate model, none left as the source had it
        assert not from_source
        assert all(torch.equal(state[k], v) for k, v in intermediate.state_dict.items())
    else:  # finetune, gradual: every source weight, head included
        assert from_source == set(source["state_dict"])
    again = transfer.build_model(strategy, source, word2vec, seed=3, intermediate=intermediate)
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
    slow_body = transfer.discriminative_groups(model, lr=2e-3, lr_decay=2.0, body_lr=2e-4)
    assert [g["lr"] for g in slow_body] == pytest.approx([5e-5, 1e-4, 2e-4, 2e-3])
    assert sum(len(g["params"]) for g in slow_body) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="positive"):
        transfer.discriminative_groups(model, lr=2e-3, lr_decay=2.0, body_lr=0.0)


def test_gradual_uses_stlr_and_others_their_schedule(source, word2vec):
    data = loader(*synthetic_reviews(64, 5))
    config = train.TrainConfig(epochs=2, lr=1e-2, patience=0, progress=False, device="cpu")
    _, history = transfer.train_strategy(transfer.get_strategy("gradual"), source, word2vec, data, data, config)
    rates = np.array(history.step_lrs)
    assert rates.argmax() == max(1, int(0.1 * len(rates))) and rates.max() == pytest.approx(1e-2)
    assert rates[0] == pytest.approx(1e-2 / 32)
    _, history = transfer.train_strategy(transfer.get_strategy("finetune"), source, word2vec, data, data, config)
    assert set(history.step_lrs) == {1e-2}


def test_unknown_strategy_and_missing_embeddings(source):
    with pytest.raises(ValueError, match="unknown strategy 'lora'; one of: scratch, ngrams, embeddings, frozen"):
        transfer.get_strategy("lora")
    with pytest.raises(ValueError, match="needs the Word2Vec embedding matrix"):
        transfer.build_model(transfer.get_strategy("embeddings"), source, None, seed=0)


# ------------------------------------------------------------------------------------------------ the protocol

def write_target_csv(path, count=120, seed=7):
    """A tiny target in the synthetic task's words: each row's text is its token names, so the test vocabulary
    knows them (rows are distinct: the row number is part of no text, but the random words make collisions rare
    and the ids tell rows apart)."""
    import csv

    reviews, labels = synthetic_reviews(count, seed)
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["text", "label"])
        for review, label in zip(reviews, labels):
            writer.writerow([" ".join(VOCAB[i] for i in review), label])
    return path


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    from tl_core.text import Vocab

    path = write_target_csv(tmp_path_factory.mktemp("target") / "tiny.csv")
    return transfer.prepare_target(str(path), Vocab(VOCAB), max_len=64)


def test_target_task_split_and_oov(tiny_task):
    test_ids, pool_ids = set(tiny_task.split.test.ids), set(tiny_task.split.pool.ids)
    assert len(tiny_task.split.test) == 24 and len(tiny_task.split.pool) == 96  # TARGET_TEST_FRACTION of 120
    assert not test_ids & pool_ids
    assert tiny_task.oov_rate == 0.0, "every word of the synthetic target is in the vocabulary"
    assert len(tiny_task.test_encoded) == 24


def test_oov_rate_counts_unknown_running_tokens(tmp_path):
    from tl_core.text import Vocab

    path = tmp_path / "t.csv"
    path.write_text("text,label\nw1 w2 zzz qqq,1\nw3 w4 w5 w6,0\nw1 w1 w1 w1,1\nw2 w2 w2 w2,0\nw9 w9 w9 w9,1\n"
                    "w8 w8 w8 w8,0\n", encoding="utf-8")
    task = transfer.prepare_target(str(path), Vocab(VOCAB), max_len=8)
    assert task.oov_rate == pytest.approx(2 / 24)


def test_sampling_protocol(tiny_task):
    """No test example is ever in training or validation; the same seed draws the same examples; another seed
    draws others; validation is carved from the n_labels (stratified), not added to them."""
    test_ids = set(tiny_task.split.test.ids)
    test_texts = set(tiny_task.split.test.texts)
    draws = {}
    for seed in (1, 2, 3):
        train_part, val_part = transfer.draw_training_data(tiny_task, 40, seed, val_fraction=0.25)
        assert len(train_part) + len(val_part) == 40 and len(val_part) == 10
        assert not set(train_part.ids) & set(val_part.ids)
        assert not (set(train_part.ids) | set(val_part.ids)) & test_ids
        assert not (set(train_part.texts) | set(val_part.texts)) & test_texts
        assert val_part.label_counts() == {0: 5, 1: 5}
        again = transfer.draw_training_data(tiny_task, 40, seed, val_fraction=0.25)
        assert again[0].ids == train_part.ids and again[1].ids == val_part.ids
        draws[seed] = frozenset(train_part.ids)
    assert len(set(draws.values())) == 3, "different seeds draw different examples"
    with pytest.raises(ValueError, match="n_labels=97 but the pool of .* holds only 96"):
        transfer.draw_training_data(tiny_task, 97, 1, 0.2)
    for n_labels in (1, 2):  # one of each class at most: nothing left to validate on
        with pytest.raises(ValueError, match=f"n_labels={n_labels} leaves .* 0 validation examples.*at least 4"):
            transfer.draw_training_data(tiny_task, n_labels, 1, 0.25)
    train_part, val_part = transfer.draw_training_data(tiny_task, 4, 1, 0.25)
    assert train_part.label_counts() == val_part.label_counts() == {0: 1, 1: 1}


def test_run_grid_pairs_the_draws_and_records_each_run(tiny_task, source, word2vec):
    config = train.TrainConfig(epochs=2, lr=1e-2, patience=0, device="cpu")
    records, models = transfer.run_grid(tiny_task, source, word2vec, ["scratch", "frozen"], [20, 40], [1, 2],
                                        config, batch_size=8, val_fraction=0.25, keep_models=True, progress=False)
    assert [(r["n_labels"], r["seed"], r["strategy"]) for r in records] == [
        (n, s, name) for n in (20, 40) for s in (1, 2) for name in ("scratch", "frozen")]
    assert all(r["train_examples"] + r["val_examples"] == r["n_labels"] for r in records)
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["epochs_trained"] == 2 for r in records)
    assert set(models) == {(r["strategy"], r["n_labels"], r["seed"]) for r in records}
    frozen = models[("frozen", 20, 1)]
    for name, value in frozen.state_dict().items():  # frozen trains its head only
        if not name.startswith("head"):
            assert torch.equal(value, source["state_dict"][name]), name
    # a model's test accuracy is what evaluate() says on the test split: measured once, recorded as is
    measured = train.evaluate(frozen, tiny_task.test_loader())["accuracy"]
    assert measured == next(r["accuracy"] for r in records if (r["strategy"], r["n_labels"], r["seed"]) == (
        "frozen", 20, 1))


def test_summary_and_label_multiplier():
    records = [{"strategy": s, "n_labels": n, "seed": seed, "accuracy": a} for s, n, seed, a in [
        ("scratch", 100, 1, 0.55), ("scratch", 100, 2, 0.65), ("scratch", 400, 1, 0.80), ("scratch", 400, 2, 0.80),
        ("frozen", 100, 1, 0.70), ("frozen", 100, 2, 0.70), ("frozen", 400, 1, 0.82), ("frozen", 400, 2, 0.84)]]
    rows = transfer.summarize(records)
    assert [(r["strategy"], r["n_labels"]) for r in rows] == [("scratch", 100), ("scratch", 400), ("frozen", 100),
                                                               ("frozen", 400)]
    assert rows[0]["mean"] == pytest.approx(0.60) and rows[0]["std"] == pytest.approx(np.std([0.55, 0.65], ddof=1))
    # scratch: 0.60 at 100, 0.80 at 400; frozen reaches 0.70 at 100, half way in log(n): 200 labels, 2x
    result = transfer.label_multiplier(rows, at=100)
    assert result["best_strategy"] == "frozen"
    assert result["baseline_labels_needed"] == pytest.approx(200.0)
    assert result["multiplier"] == pytest.approx(2.0)
    assert transfer.labels_needed(rows, "scratch", 0.9) is None
    better = rows[:2] + [dict(rows[2], mean=0.95)]
    assert transfer.label_multiplier(better, at=100) == {
        "at": 100, "best_strategy": "frozen", "best_accuracy": 0.95, "baseline": "scratch",
        "baseline_labels_needed": None, "multiplier": None, "at_least": 4.0}
    with pytest.raises(ValueError, match="no transfer results at n_labels=50"):
        transfer.label_multiplier(rows, at=50)
    table = transfer.format_summary(rows, zero_shot_accuracy=0.7)
    assert "60.0 ± 7.1" in table and "zero-shot" in table


def test_learning_rate_plan_matches_what_the_loop_does(source, word2vec):
    """The plotted plan of notebook 07 is the loop's own: the head's rate per step equals History.step_lrs of a
    real gradual run, lower groups run at /2.6 per group, and frozen groups at 0."""
    strategy = transfer.get_strategy("gradual")
    config = train.TrainConfig(epochs=4, lr=1e-2, patience=0, progress=False, device="cpu")
    data = loader(*synthetic_reviews(64, 5), batch_size=16)
    plan = transfer.learning_rate_plan(transfer.build_model(strategy, source, word2vec, seed=0), strategy, config,
                                       steps_per_epoch=len(data))
    _, history = transfer.train_strategy(strategy, source, word2vec, data, data, config)
    np.testing.assert_allclose(plan["head"], history.step_lrs)
    steps = len(data)
    assert (plan["lstm layer 1"][:steps] == 0).all() and (plan["lstm layer 1"][steps:] > 0).all()
    assert (plan["lstm layer 0"][:2 * steps] == 0).all() and (plan["embedding"][:3 * steps] == 0).all()
    np.testing.assert_allclose(plan["lstm layer 0"][3 * steps:], plan["head"][3 * steps:] / 2.6 ** 2)
    flat = transfer.learning_rate_plan(transfer.build_model(transfer.get_strategy("frozen"), source, word2vec, 0),
                                       transfer.get_strategy("frozen"), config, steps_per_epoch=steps)
    assert (flat["head"] == 1e-2).all() and not flat["embedding"].any() and not flat["lstm layer 0"].any()


def test_paired_difference_pairs_by_seed_in_accuracy_points():
    records = [{"strategy": s, "n_labels": n, "seed": seed, "accuracy": a} for s, n, seed, a in [
        ("scratch", 100, 1, 0.60), ("scratch", 100, 2, 0.70), ("frozen", 100, 2, 0.75), ("frozen", 100, 1, 0.70),
        ("scratch", 400, 1, 0.80), ("frozen", 400, 1, 0.78)]]
    mean, std = transfer.paired_difference(records, "frozen", "scratch", 100)  # +5 (seed 2) and +10 (seed 1)
    assert mean == pytest.approx(7.5) and std == pytest.approx(np.std([5.0, 10.0], ddof=1))
    assert transfer.paired_difference(records, "frozen", "scratch", 400) == pytest.approx((-2.0, 0.0))
    with pytest.raises(ValueError, match="no results for strategy 'gradual' at n_labels=100"):
        transfer.paired_difference(records, "gradual", "scratch", 100)
    with pytest.raises(ValueError, match=r"'finetune' has no result at n_labels=100 for seeds \[1, 2\]"):
        transfer.paired_difference(records, "frozen", "finetune", 100)


def test_merge_results_replaces_the_same_run():
    old = [{"strategy": "scratch", "n_labels": 200, "seed": 1, "accuracy": 0.5},
           {"strategy": "frozen", "n_labels": 200, "seed": 1, "accuracy": 0.7}]
    new = [{"strategy": "scratch", "n_labels": 200, "seed": 1, "accuracy": 0.6},
           {"strategy": "scratch", "n_labels": 50, "seed": 1, "accuracy": 0.55}]
    assert transfer.merge_results(old, new) == [old[1], *new]


def test_run_grid_keeps_only_the_models_asked_for(tiny_task, source, word2vec):
    config = train.TrainConfig(epochs=1, patience=0, device="cpu")
    records, models = transfer.run_grid(tiny_task, source, word2vec, ["frozen"], [20], [1, 2], config,
                                        batch_size=8, val_fraction=0.25, keep_models={("frozen", 20, 2)},
                                        progress=False)
    assert len(records) == 2 and set(models) == {("frozen", 20, 2)}


@pytest.fixture
def trainings(monkeypatch):
    """Every train_strategy call of the grid and of self-training's second run, in order: (the strategy handed
    over, the number of training batches, the history)."""
    calls, real = [], transfer.grid.train_strategy

    def recorded(strategy, source, embedding_weights, train_loader, *args, **kwargs):
        model, history = real(strategy, source, embedding_weights, train_loader, *args, **kwargs)
        calls.append((strategy, len(train_loader), history))
        return model, history

    for module in (transfer.grid, transfer.selftrain):
        monkeypatch.setattr(module, "train_strategy", recorded)
    return calls


def test_run_grid_takes_strategy_variants(tiny_task, source, word2vec, trainings):
    """A Strategy object is trained as given: the grid hands the variant's recipe (the strategy without its name) to
    train_strategy, and its setting takes effect: schedule="constant" trains every step at the run's rate, where
    gradual's own STLR rises from lr / 32 (stlr_ratio) on the same draw."""
    from dataclasses import replace as variant

    gradual = transfer.get_strategy("gradual")
    constant = variant(gradual, name="gradual, constant rate", schedule="constant")
    config = train.TrainConfig(epochs=1, lr=2e-3, patience=0, device="cpu")
    records, _ = transfer.run_grid(tiny_task, source, word2vec, ["gradual", constant], [20], [1], config,
                                   batch_size=8, val_fraction=0.25, progress=False)
    assert [r["strategy"] for r in records] == ["gradual", "gradual, constant rate"]
    assert [strategy for strategy, _, _ in trainings] == [gradual.recipe, constant.recipe]
    (_, steps, stlr), (strategy, constant_steps, history) = trainings
    assert strategy.schedule == "constant" and strategy.gradual_unfreezing and strategy.lr_decay == 2.6
    assert steps == constant_steps == 2  # 15 training examples (20 less a quarter for validation), batches of 8
    assert history.step_lrs == pytest.approx([2e-3] * steps), "a constant rate: the run's lr at every step"
    assert stlr.step_lrs == pytest.approx([2e-3 / 32, 2e-3]), "gradual's own schedule on the same draw: STLR"
    assert records[1]["epochs_trained"] == len(history.epochs) == 1


# ------------------------------------------------------------------------------------------------ self-training

def test_selftrain_is_gradual_plus_pseudo_labels():
    selftrain, gradual = transfer.get_strategy("selftrain"), transfer.get_strategy("gradual")
    assert selftrain.recipe == gradual.recipe and 0 < selftrain.pseudo_label_fraction <= 1
    assert gradual.pseudo_label_fraction == 0
    with pytest.raises(ValueError, match="lr_scale must be > 0, got 0"):
        transfer.Strategy("x", "source", lr_scale=0)
    with pytest.raises(ValueError, match="pseudo_label_fraction must be in"):
        transfer.Strategy("x", "source", pseudo_label_fraction=1.5)


def test_unlabelled_texts_are_the_pool_outside_the_draw_without_labels(tiny_task):
    train_part, val_part = transfer.draw_training_data(tiny_task, 40, 1, val_fraction=0.25)
    unlabelled = transfer.unlabelled_texts(tiny_task, train_part.ids + val_part.ids, seed=1)
    assert unlabelled.labels is None, "self-training must not be able to read the labels"
    assert set(unlabelled.ids) == set(tiny_task.split.pool.ids) - set(train_part.ids) - set(val_part.ids)
    assert not set(unlabelled.ids) & set(tiny_task.split.test.ids)
    capped = transfer.unlabelled_texts(tiny_task, train_part.ids, seed=1, limit=10)
    assert len(capped) == 10 and set(capped.ids) <= set(tiny_task.split.pool.ids) - set(train_part.ids)
    assert capped.ids == transfer.unlabelled_texts(tiny_task, train_part.ids, seed=1, limit=10).ids


class Constant(torch.nn.Module):
    """A stand-in classifier whose P(positive) of a text is fixed by its first token id (for pseudo_label)."""

    def __init__(self, probability_of_token):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.logit(torch.as_tensor(probability_of_token, dtype=torch.float32)))

    def forward(self, tokens, lengths):
        return self.logits[tokens[:, 0]]


def test_pseudo_label_takes_the_surest_of_each_class(tiny_task):
    from tl_core.data import TextDataset

    vocab = tiny_task.vocab
    words = vocab.itos[3:13]  # ten words after the specials
    probability = np.full(len(vocab), 0.5, dtype=np.float32)
    # ten texts whose P(positive) is 0.05, 0.15, ..., 0.95: the surest negatives are the first, positives the last
    for index, word in enumerate(words):
        probability[vocab.stoi[word]] = 0.05 + 0.1 * index
    texts = TextDataset(name="u", texts=[f"{w} {w}" for w in words], labels=None, ids=[f"u{i}" for i in range(10)])
    model = Constant(probability)
    pseudo = transfer.pseudo_label(model, tiny_task, texts, fraction=0.4, class_shares={0: 0.5, 1: 0.5})
    assert pseudo.ids == ["u0", "u1", "u8", "u9"] and pseudo.labels.tolist() == [0, 0, 1, 1]
    skewed = transfer.pseudo_label(model, tiny_task, texts, fraction=0.6, class_shares={0: 1 / 3, 1: 2 / 3})
    assert skewed.ids == ["u0", "u1", "u6", "u7", "u8", "u9"] and skewed.labels.tolist() == [0, 0, 1, 1, 1, 1]
    # every prediction negative: no text becomes a positive example, however many positives the shares ask for
    negative = Constant(np.full(len(vocab), 0.2, dtype=np.float32))
    assert transfer.pseudo_label(negative, tiny_task, texts, 1.0, {0: 0.5, 1: 0.5}).labels.tolist() == [0] * 5
    # nothing left to label: an empty dataset, named as a full one is
    empty = transfer.pseudo_label(model, tiny_task, TextDataset(name="u", texts=[], labels=None, ids=[]), 0.4,
                                  {0: 0.5, 1: 0.5})
    assert len(empty) == 0 and empty.name == pseudo.name == "u/pseudo-labelled"
    with pytest.raises(ValueError, match="must not see labels"):
        transfer.pseudo_label(model, tiny_task, tiny_task.split.pool, 0.5, {0: 0.5, 1: 0.5})


def test_run_grid_selftrain_reuses_the_recipes_model(tiny_task, source, word2vec):
    """selftrain's first model is gradual's (same draw, seed, recipe): trained once; its second run adds the
    pseudo-labelled texts; the records say how many and how right they were (read from the pool afterwards)."""
    config = train.TrainConfig(epochs=2, lr=1e-2, patience=0, device="cpu")
    records, models = transfer.run_grid(tiny_task, source, word2vec, ["gradual", "selftrain"], [20], [1], config,
                                        batch_size=8, val_fraction=0.25, keep_models=True, progress=False)
    gradual, selftrain = records
    assert "pseudo_labels" not in gradual
    unlabelled = len(tiny_task.split.pool) - 20
    assert 0 < selftrain["pseudo_labels"] <= round(0.5 * unlabelled)
    assert models[("selftrain", 20, 1)] is not models[("gradual", 20, 1)]
    # the record's pseudo-labels are the kept gradual model's, and their accuracy is read from the pool's labels
    train_part, val_part = transfer.draw_training_data(tiny_task, 20, 1, 0.25)
    shares = {label: float(np.mean(train_part.labels == label)) for label in (0, 1)}
    pseudo = transfer.pseudo_label(models[("gradual", 20, 1)], tiny_task,
                                   transfer.unlabelled_texts(tiny_task, train_part.ids + val_part.ids, 1), 0.5, shares)
    truth = dict(zip(tiny_task.split.pool.ids, tiny_task.split.pool.labels.tolist()))
    assert len(pseudo) == selftrain["pseudo_labels"]
    assert selftrain["pseudo_label_accuracy"] == pytest.approx(
        np.mean([truth[id_] == label for id_, label in zip(pseudo.ids, pseudo.labels.tolist())]))
    alone, _ = transfer.run_grid(tiny_task, source, word2vec, ["selftrain"], [20], [1], config, batch_size=8,
                                 val_fraction=0.25, progress=False)
    assert alone[0]["accuracy"] == selftrain["accuracy"], "the reused first model is the one it would train"
    assert alone[0]["pseudo_labels"] == selftrain["pseudo_labels"]


def test_run_grid_trains_selftrains_first_model_once(tiny_task, source, word2vec, trainings):
    """gradual and selftrain on one draw: gradual's model, then selftrain's second run: two trainings, not three."""
    config = train.TrainConfig(epochs=1, lr=1e-2, patience=0, device="cpu")
    transfer.run_grid(tiny_task, source, word2vec, ["gradual", "selftrain"], [20], [1], config, batch_size=8,
                      val_fraction=0.25, progress=False)
    assert len(trainings) == 2, [strategy.name for strategy, _, _ in trainings]


# ---------------------------------------------------------------------------------------- the n-gram model

def test_ngram_classifier_sums_word_and_pair_weights():
    """The logit is the bias plus, per token, its word's weight and the weight of the pair it starts; padding
    and whatever follows a review's end change nothing."""
    from tl_core.models import NgramClassifier

    model = NgramClassifier(vocab_size=20, buckets=50)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.unigrams.weight.normal_(generator=generator)
        model.bigrams.weight[1:].normal_(generator=generator)
        model.bias.fill_(0.25)
    tokens, lengths = torch.tensor([[5, 9, 3, 7], [7, 2, 0, 0]]), torch.tensor([4, 2])

    def by_hand(review):
        total = 0.25 + sum(model.unigrams.weight[t, 0].item() for t in review)
        for a, b in zip(review, review[1:]):
            total += model.bigrams.weight[1 + (a * NgramClassifier.HASH_MULTIPLIER + b) % 50, 0].item()
        return total

    logits = model(tokens, lengths).detach()
    assert logits.tolist() == pytest.approx([by_hand([5, 9, 3, 7]), by_hand([7, 2])], abs=1e-5)
    assert model.bigram_ids(tokens, lengths)[1].tolist()[1:] == [0, 0, 0], "no pair starts at or after the end"
    cut = model(torch.tensor([[7, 2, 13, 13]]), torch.tensor([2])).detach()
    assert cut.item() == pytest.approx(logits[1].item(), abs=1e-6), "tokens past the length are not read"
    assert model(torch.tensor([[7, 9]]), torch.tensor([2])).item() != pytest.approx(by_hand([7, 2]))
    with pytest.raises(ValueError, match="tokens must be"):
        model(torch.tensor([1, 2]), torch.tensor([2]))
    with pytest.raises(ValueError, match="buckets must be a positive integer"):
        NgramClassifier(vocab_size=20, buckets=0)


def test_ngram_saliency_is_exactly_each_tokens_score():
    """Gradient x input through the two weight tables: for a linear model it is each token's share of the logit,
    so the saliencies add up to the logit minus the bias."""
    from tl_core.analysis import word_saliency
    from tl_core.models import NgramClassifier

    model = NgramClassifier(vocab_size=20, buckets=50)
    with torch.no_grad():
        model.unigrams.weight.normal_(generator=torch.Generator().manual_seed(1))
        model.bigrams.weight[1:].normal_(generator=torch.Generator().manual_seed(2))
        model.bias.fill_(-0.5)
    ids = [4, 11, 6, 6, 19]
    logit, saliency = word_saliency(model, ids)
    scores = model.token_scores(torch.tensor([ids]), torch.tensor([5]))[0].detach().numpy()
    assert saliency == pytest.approx(scores, abs=1e-6)
    assert saliency.sum() == pytest.approx(logit + 0.5, abs=1e-5)


def test_ngrams_strategy_trains_its_own_model_with_the_same_loop(source, word2vec):
    """Nothing from the source, both groups train from the first epoch, and it learns the synthetic task's
    marker words (the linear model's case: one word decides)."""
    strategy = transfer.get_strategy("ngrams")
    assert not transfer.transfers(strategy) and not transfer.transfers("scratch")
    model = transfer.build_model(strategy, source, word2vec, seed=0)
    groups, hook = transfer.training_plan(model, strategy, lr=0.1)
    assert [g["name"] for g in groups] == ["ngrams", "head"] and all(g["lr"] == 0.1 for g in groups)
    assert all(p.requires_grad for p in model.parameters())
    before = snapshot(model)
    data = loader(*synthetic_reviews(512, 5))
    config = train.TrainConfig(epochs=30, lr=0.1, patience=0, progress=False, device="cpu")
    train.fit(model, data, data, config, param_groups=groups, on_epoch_start=hook)
    assert moved(before, model) == {"unigrams.weight", "bigrams.weight", "bias"}
    assert train.evaluate(model, loader(*synthetic_reviews(128, 6)))["accuracy"] > 0.9
    weights = model.unigrams.weight[:, 0].detach()
    assert weights[GOOD] > 1.0 and weights[BAD] < -1.0, "the marker words carry the largest weights"
    with pytest.raises(ValueError, match="the n-gram model shares no weights with the source model"):
        transfer.Strategy("x", "source", model="ngrams")
    with pytest.raises(ValueError, match="the n-gram model shares no weights"):
        transfer.Strategy("x", "random", model="ngrams", train_only_head=True)
    with pytest.raises(ValueError, match="model must be one of"):
        transfer.Strategy("x", "random", model="cnn")


def test_label_multiplier_compares_transfer_strategies_only():
    """ngrams transfers nothing: even when it is the best at ``at`` labels, the multiplier is about the best
    strategy that does (a variant's unknown name counts as transfer)."""
    rows = [{"strategy": s, "n_labels": n, "mean": m, "std": 0.0, "runs": 3} for s, n, m in (
        ("scratch", 100, 0.60), ("scratch", 400, 0.80), ("ngrams", 100, 0.79), ("ngrams", 400, 0.85),
        ("finetune", 100, 0.70), ("finetune", 400, 0.82))]
    assert transfer.label_multiplier(rows, at=100)["best_strategy"] == "finetune"
    variant = rows + [{"strategy": "my-variant", "n_labels": 100, "mean": 0.75, "std": 0.0, "runs": 3}]
    assert transfer.label_multiplier(variant, at=100)["best_strategy"] == "my-variant"


def test_hybrid_averages_intermediate_and_ngrams(tiny_task, source, word2vec, intermediate):
    """hybrid = the intermediate LSTM and the n-gram model of the same draw, probabilities averaged; it transfers
    (through its LSTM member) and its word saliency reads both models' tables."""
    from tl_core.analysis import word_saliency
    from tl_core.models import NgramClassifier, SentimentLSTM

    hybrid = transfer.get_strategy("hybrid")
    assert hybrid.members == ("intermediate", "ngrams") and transfer.transfers(hybrid)
    assert transfer.from_intermediate(["ngrams", "hybrid"]) == ["hybrid"]
    config = train.TrainConfig(epochs=2, lr=1e-2, patience=0, device="cpu")
    records, models = transfer.run_grid(tiny_task, source, word2vec, ["ngrams", "hybrid", "calibrated"], [20], [1],
                                        config, batch_size=8, val_fraction=0.25, keep_models=True, progress=False,
                                        intermediate=intermediate)
    assert [r["strategy"] for r in records] == ["ngrams", "hybrid", "calibrated"]
    assert records[1]["members"] == records[2]["members"] == list(hybrid.members)
    lstm, ngrams = models[("hybrid", 20, 1)].members
    assert isinstance(lstm, SentimentLSTM) and isinstance(ngrams, NgramClassifier)
    assert ngrams is models[("ngrams", 20, 1)]
    # hybrid averages the members as they are; calibrated averages the very same models, each with the temperature
    # fitted on this draw's validation split (never the test split)
    assert models[("hybrid", 20, 1)].temperatures.tolist() == [1.0, 1.0] and "temperatures" not in records[1]
    calibrated = models[("calibrated", 20, 1)]
    assert all(a is b for a, b in zip(calibrated.members, (lstm, ngrams)))
    _, val_data = transfer.draw_training_data(tiny_task, 20, 1, 0.25)
    val_loader = tiny_task.loader(val_data, 64, shuffle=False)
    fitted = [transfer.fit_temperature(member, val_loader) for member in (lstm, ngrams)]
    assert calibrated.temperatures.tolist() == pytest.approx(fitted)
    assert records[2]["temperatures"] == pytest.approx(fitted, rel=1e-3)
    ids = tiny_task.test_encoded.ids[0][:12]
    _, both = word_saliency(models[("hybrid", 20, 1)], ids)
    _, lstm_only = word_saliency(lstm, ids)
    assert both.shape == lstm_only.shape == (len(ids),) and not np.allclose(both, lstm_only)


# ------------------------------------------------------------------------------------------------- the ensemble

def test_ensemble_is_three_trained_strategies_and_builds_nothing_itself(source, word2vec):
    ensemble = transfer.get_strategy("ensemble")
    assert ensemble.init_from == "members" and ensemble.members == ("finetune", "gradual", "intermediate")
    assert transfer.from_intermediate(["scratch", "ensemble"]) == ["ensemble"], "a member starts from the stage"
    with pytest.raises(ValueError, match="is an ensemble of .* no model of its own"):
        transfer.build_model(ensemble, source, word2vec, seed=0)
    with pytest.raises(ValueError, match="an ensemble has init_from='members' and names its members"):
        transfer.Strategy("mix", "source", members=("finetune",))
    with pytest.raises(ValueError, match="an ensemble has init_from='members' and names its members"):
        transfer.Strategy("mix", "members")
    with pytest.raises(ValueError, match="members must be distinct other strategies"):
        transfer.Strategy("mix", "members", members=("finetune", "finetune"))
    with pytest.raises(ValueError, match="unknown strategy 'lora'"):
        transfer.from_intermediate([transfer.Strategy("mix", "members", members=("finetune", "lora"))])
    with pytest.raises(ValueError, match=r"its members \['ensemble'\] are ensembles themselves"):
        transfer.from_intermediate([transfer.Strategy("mix", "members", members=("finetune", "ensemble"))])


def test_ensemble_classifier_averages_probabilities():
    from tl_core.models import EnsembleClassifier
    from test_analysis import small_model

    members = [small_model(seed=seed).eval() for seed in (1, 2, 3)]
    ensemble = EnsembleClassifier(members).eval()
    tokens, lengths = torch.tensor([[5, 9, 3, 0], [7, 2, 11, 4]]), torch.tensor([3, 4])
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(m(tokens, lengths)) for m in members]).mean(dim=0)
        assert torch.allclose(torch.sigmoid(ensemble(tokens, lengths)), expected, atol=1e-6)
        alone = EnsembleClassifier(members[:1]).eval()
        assert torch.allclose(alone(tokens, lengths), members[0](tokens, lengths), atol=1e-4)
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleClassifier([])


def test_ensemble_classifier_divides_each_members_logit_by_its_temperature():
    from tl_core.models import EnsembleClassifier
    from test_analysis import small_model

    members = [small_model(seed=seed).eval() for seed in (1, 2)]
    ensemble = EnsembleClassifier(members, temperatures=[0.5, 4.0]).eval()
    tokens, lengths = torch.tensor([[5, 9, 3, 0], [7, 2, 11, 4]]), torch.tensor([3, 4])
    with torch.no_grad():
        expected = (torch.sigmoid(members[0](tokens, lengths) / 0.5)
                    + torch.sigmoid(members[1](tokens, lengths) / 4.0)) / 2
        assert torch.allclose(torch.sigmoid(ensemble(tokens, lengths)), expected, atol=1e-6)
        plain = EnsembleClassifier(members).eval()
        assert not torch.allclose(ensemble(tokens, lengths), plain(tokens, lengths))
    for bad in ([1.0], [1.0, 0.0], [1.0, -2.0], [1.0, float("inf")], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="one temperature per member|positive and finite"):
            EnsembleClassifier(members, temperatures=bad)


class _FixedLogits(torch.nn.Module):
    """A 'model' whose logit for a review is a number written in its first token slot / 10 (for fit_temperature)."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # predict_logits reads the device of the first parameter

    def forward(self, tokens, lengths):
        return tokens[:, 0].float() / 10


def _logit_batches(logits, labels):
    tokens = torch.tensor([[round(10 * z)] for z in logits])  # the logit, 10x, in the token slot
    return [(tokens, torch.ones(len(logits), dtype=torch.int64), torch.tensor(labels, dtype=torch.float32))]


def test_fit_temperature_minimises_validation_cross_entropy():
    """An overconfident model (|logit| = 8, one in four wrong) gets T > 1; a timid one that is always right
    gets T < 1 (the sharpest the grid allows); the chosen T's loss is the lowest of the grid, brute-forced here;
    no examples: T = 1."""
    model = _FixedLogits()
    loud = _logit_batches([8.0, -8.0, 8.0, -8.0, 8.0, -8.0, 8.0, -8.0], [1, 0, 1, 0, 1, 0, 0, 1])
    timid = _logit_batches([0.3, -0.2, 0.5, -0.4], [1, 0, 1, 0])

    def loss(batches, t):
        z, y = batches[0][0][:, 0].double() / 10 / t, batches[0][2].double()
        return float(torch.nn.functional.binary_cross_entropy_with_logits(z, y))

    t_loud, t_timid = transfer.fit_temperature(model, loud), transfer.fit_temperature(model, timid)
    assert t_loud > 1 and t_timid == pytest.approx(transfer.TEMPERATURES.min())
    assert loss(loud, t_loud) == pytest.approx(min(loss(loud, t) for t in transfer.TEMPERATURES))
    assert loss(loud, t_loud) < loss(loud, 1.0) and loss(timid, t_timid) < loss(timid, 1.0)
    # 6 right and 2 wrong at |z| = 8: the best p for "right" is 3/4, so 8 / T = log 3 (to the grid's resolution)
    assert 8 / t_loud == pytest.approx(np.log(3), rel=0.03)
    assert transfer.fit_temperature(model, []) == 1.0


def test_calibrate_is_for_ensembles_only():
    calibrated = transfer.get_strategy("calibrated")
    assert calibrated.calibrate and calibrated.members == transfer.get_strategy("hybrid").members
    assert not transfer.get_strategy("hybrid").calibrate and not transfer.get_strategy("ensemble").calibrate
    with pytest.raises(ValueError, match="calibrate=True fits one temperature per ensemble member"):
        transfer.Strategy("sure", "source", calibrate=True)


def test_run_grid_ensemble_averages_its_members_on_the_same_draw(tiny_task, source, word2vec, intermediate):
    """Members listed too are trained once and shared; a member not listed is trained for the ensemble alone;
    the ensemble's accuracy is that of its members' mean probability on the test split."""
    from tl_core.analysis import predict_probabilities

    config = train.TrainConfig(epochs=2, lr=1e-2, patience=0, device="cpu")
    mix = transfer.Strategy("mix", "members", members=("finetune", "intermediate"))
    records, models = transfer.run_grid(tiny_task, source, word2vec, ["finetune", mix], [20], [1], config,
                                        batch_size=8, val_fraction=0.25, keep_models=True, progress=False,
                                        intermediate=intermediate)
    finetune, ensemble = records
    assert ensemble["strategy"] == "mix" and ensemble["members"] == ["finetune", "intermediate"]
    assert ensemble["epochs_trained"] is None and ensemble["best_epoch"] is None
    assert ensemble["seconds"] >= finetune["seconds"], "its cost holds its members' training"
    members = list(models[("mix", 20, 1)].members)
    assert members[0] is models[("finetune", 20, 1)], "the listed member is reused, not trained again"
    alone, alone_models = transfer.run_grid(tiny_task, source, word2vec, ["intermediate"], [20], [1], config,
                                            batch_size=8, val_fraction=0.25, keep_models=True, progress=False,
                                            intermediate=intermediate)
    for a, b in zip(members[1].state_dict().values(), alone_models[("intermediate", 20, 1)].state_dict().values()):
        assert torch.equal(a, b), "the unlisted member is the model its own run would train"
    mean = np.mean([predict_probabilities(m, tiny_task.test_encoded) for m in members], axis=0)
    assert ensemble["accuracy"] == pytest.approx(np.mean((mean >= 0.5) == (tiny_task.split.test.labels == 1)))


# ----------------------------------------------------------------------------------- the intermediate stage

def test_intermediate_is_gradual_from_another_start():
    intermediate, gradual = transfer.get_strategy("intermediate"), transfer.get_strategy("gradual")
    assert intermediate.init_from == "intermediate"
    assert dataclasses.replace(intermediate.recipe, init_from="source") == gradual.recipe


def test_intermediate_strategy_needs_the_intermediate_model(tiny_task, source, word2vec):
    with pytest.raises(ValueError, match=r"train it first, one stage per seed with transfer.intermediate_for\("):
        transfer.build_model(transfer.get_strategy("intermediate"), source, word2vec, seed=0)
    config = train.TrainConfig(epochs=1, patience=0, device="cpu")
    with pytest.raises(ValueError, match=r"strategies \['intermediate'\] start from the intermediate model"):
        transfer.run_grid(tiny_task, source, word2vec, ["scratch", "intermediate"], [20], [1], config, batch_size=8,
                          val_fraction=0.25, progress=False)



def moved_stage(source, seed, zero_shot):
    """A stand-in for one seed's stage: the source weights moved a little, differently per seed."""
    generator = torch.Generator().manual_seed(seed)
    state = {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in source["state_dict"].items()}
    return transfer.Intermediate(state_dict=state, specs=["amazon:books"], examples=10, dropped=0,
                                 val_accuracy=0.5, zero_shot_accuracy=zero_shot, history=train.History())


def test_each_seed_starts_from_its_own_stage(tiny_task, source, word2vec, monkeypatch):
    stages = transfer.IntermediateStages({1: moved_stage(source, 1, 0.6), 2: moved_stage(source, 2, 0.8)})
    assert stages.zero_shot_accuracy == pytest.approx(0.7) and stages.zero_shot_std == pytest.approx(0.02 ** 0.5)
    summary = stages.summary()
    assert summary["zero_shot_accuracy"] == pytest.approx(0.7) and set(summary["stages"]) == {"1", "2"}
    assert summary["stages"]["2"]["zero_shot_accuracy"] == 0.8 and summary["examples"] == 10
    started_from = []  # (seed, the stage a model was built from) for every model the grid builds
    build_model = transfer.build_model

    def recording_build_model(strategy, source_, weights, seed, *, intermediate=None, **overrides):
        started_from.append((seed, intermediate))
        return build_model(strategy, source_, weights, seed, intermediate=intermediate, **overrides)

    # the grid builds its models through train_strategy, which looks build_model up in transfer.strategies
    monkeypatch.setattr(transfer.strategies, "build_model", recording_build_model)
    config = train.TrainConfig(epochs=1, patience=0, device="cpu")
    transfer.run_grid(tiny_task, source, word2vec, ["scratch", "intermediate"], [20], [1, 2], config, batch_size=8,
                      val_fraction=0.25, progress=False, intermediate=stages)
    built_from = {(seed, id(stage)) for seed, stage in started_from if stage is not None}
    assert built_from == {(1, id(stages.by_seed[1])), (2, id(stages.by_seed[2]))}, \
        "each seed's intermediate run starts from its own stage"
    started_from.clear()
    with pytest.raises(ValueError, match=r"no intermediate stage for seed 3: stages were trained for seeds \[1, 2\]"):
        transfer.run_grid(tiny_task, source, word2vec, ["scratch", "intermediate"], [20], [1, 3], config,
                          batch_size=8, val_fraction=0.25, progress=False, intermediate=stages)
    assert started_from == [], "refused before anything trains"
    with pytest.raises(ValueError, match="at least one stage"):
        transfer.IntermediateStages({})

def test_related_specs_are_the_other_amazon_domains():
    assert transfer.related_specs("amazon:kitchen") == ["amazon:books", "amazon:dvd", "amazon:electronics"]
    assert transfer.related_specs("amazon:kitchen_&_housewares") == transfer.related_specs("amazon:kitchen")
    assert transfer.related_specs("sst2") == [f"amazon:{d}" for d in ("books", "dvd", "electronics", "kitchen")]
    # an FDU-MTL domain holds the same reviews as its Amazon counterpart: that one is no related data either
    assert transfer.related_specs("fdu:kitchen_housewares") == transfer.related_specs("amazon:kitchen")
    assert transfer.related_specs("fdu:music") == transfer.related_specs("sst2")


def test_accuracy_interval_is_wilsons():
    # 85 % of 400: worked by hand from Wilson's formula (z = 1.959964)
    low, high = transfer.accuracy_interval(0.85, 400)
    assert low == pytest.approx(0.81169, abs=1e-5) and high == pytest.approx(0.88166, abs=1e-5)
    # not symmetric about the accuracy near the edges, and never outside [0, 1]
    low, high = transfer.accuracy_interval(1.0, 50)
    assert high == 1.0 and 0.9 < low < 1.0
    assert transfer.accuracy_interval(0.0, 50)[0] == 0.0
    # four times the test examples, about half the width; a higher confidence, a wider interval
    narrow, wide = transfer.accuracy_interval(0.8, 1600), transfer.accuracy_interval(0.8, 400)
    assert (narrow[1] - narrow[0]) / (wide[1] - wide[0]) == pytest.approx(0.5, abs=0.01)
    assert transfer.accuracy_interval(0.8, 400, 0.99)[0] < wide[0]
    for bad in [dict(accuracy=0.8, n=0), dict(accuracy=1.2, n=10), dict(accuracy=0.8, n=10, confidence=1.0)]:
        with pytest.raises(ValueError):
            transfer.accuracy_interval(**bad)


def test_related_specs_are_checked_against_the_target():
    # canonical specs back; the target itself is refused under any of its names, as is an empty list
    assert transfer.check_related_specs("amazon:books", ["amazon:dvd", "amazon:kitchen_&_housewares"]) == [
        "amazon:dvd", "amazon:kitchen"]
    with pytest.raises(ValueError, match="'amazon:kitchen' cannot be its own related data"):
        transfer.check_related_specs("amazon:kitchen", ["amazon:books", "amazon:kitchen_&_housewares"])
    with pytest.raises(ValueError, match="no related datasets given"):
        transfer.check_related_specs("amazon:kitchen", [])
    with pytest.raises(ValueError, match="'fdu:books' cannot be its own related data"):
        transfer.check_related_specs("fdu:books", ["amazon:books"])
    assert transfer.check_related_specs("fdu:apparel", ["amazon:books"]) == ["amazon:books"]


def write_rows(path, rows):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return str(path)


def test_related_data_never_holds_a_target_text(tiny_task, tmp_path):
    test_text, pool_text = tiny_task.split.test.texts[0], tiny_task.split.pool.texts[0]
    # the same texts as the target's, in other case and spacing (and with the opposite label): must be left out
    rows = [(f"  {test_text.upper()} ", 1 - tiny_task.split.test.labels[0]), (pool_text.replace(" ", "   "), 1)]
    rows += [(f"other review {i} {'good' if i % 2 else 'bad'}", i % 2) for i in range(40)]
    first = write_rows(tmp_path / "first.csv", rows[:20])
    second = write_rows(tmp_path / "second.csv", rows[20:])
    related, dropped = transfer.related_data(tiny_task, [first, second])
    assert dropped == 2 and len(related) == 40
    keys = {data.same_text_key(t) for t in [*tiny_task.split.test.texts, *tiny_task.split.pool.texts]}
    assert not {data.same_text_key(t) for t in related.texts} & keys
    assert sorted(related.texts) == sorted(text for text, _ in rows[2:])
    assert all(id_.startswith((first, second)) for id_ in related.ids) and len(set(related.ids)) == 40
    capped, _ = transfer.related_data(tiny_task, [first, second], limit=10, seed=3)
    assert len(capped) == 10 and capped.label_counts() == {0: 5, 1: 5}
    assert capped.ids == transfer.related_data(tiny_task, [first, second], limit=10, seed=3)[0].ids
    with pytest.raises(ValueError, match="cannot be its own related data"):
        transfer.related_data(tiny_task, [first, tiny_task.spec])
    with pytest.raises(ValueError, match="no related datasets given"):
        transfer.related_data(tiny_task, [])
    # both classes in the file, but every negative is a target text: nothing left to contrast the positives with
    one_class = write_rows(tmp_path / "mostly.csv", [(test_text, 0), (pool_text, 0), ("fine", 1), ("nice", 1)])
    with pytest.raises(ValueError, match="not both classes"):
        transfer.related_data(tiny_task, [one_class])


def test_train_intermediate_then_the_intermediate_strategy(tiny_task, source, word2vec, tmp_path):
    """The stage moves the source weights (without touching the source payload), measures itself on related
    validation data and zero-shot on the target; the grid's intermediate runs start from it."""
    from test_train import synthetic_reviews as reviews

    texts, labels = reviews(96, 11)
    related = write_rows(tmp_path / "related.csv", [(" ".join(VOCAB[i] for i in r), y) for r, y in zip(texts, labels)])
    before = {k: v.clone() for k, v in source["state_dict"].items()}
    config = train.TrainConfig(epochs=2, lr=1e-2, patience=0, device="cpu", progress=False)
    stage = transfer.train_intermediate(tiny_task, source, config, batch_size=16, specs=[related])
    assert all(torch.equal(before[k], v) for k, v in source["state_dict"].items()), "the source payload is kept"
    assert any(not torch.equal(before[k], v) for k, v in stage.state_dict.items())
    assert stage.specs == [related] and stage.examples == 96 - stage.dropped
    kept = transfer.build_model(transfer.get_strategy("intermediate"), source, word2vec, 1, intermediate=stage)
    assert stage.zero_shot_accuracy == train.evaluate(kept, tiny_task.test_loader())["accuracy"], \
        "zero-shot: the stage's model on the target's test split"
    best = stage.history.epochs[stage.history.best_epoch - 1]
    assert stage.val_accuracy == best["val_accuracy"], "on the related validation part, at the epoch kept"
    assert len(stage.history.epochs) == 2 and set(stage.history.step_lrs) != {1e-2}, "a decaying rate"
    assert stage.summary()["examples"] == stage.examples
    records, models = transfer.run_grid(tiny_task, source, word2vec, ["intermediate"], [20], [1], config,
                                        batch_size=8, val_fraction=0.25, progress=False, intermediate=stage,
                                        keep_models=True)
    assert [(r["strategy"], r["n_labels"], r["seed"]) for r in records] == [("intermediate", 20, 1)]
    # The grid's own model: two epochs of gradual unfreezing train the head, then the top LSTM layer too; the
    # embedding and the lower LSTM layer never train, so they are still the stage's weights (not the source's).
    grid_model = models[("intermediate", 20, 1)]
    frozen = {name for name, _ in grid_model.named_parameters() if group_of(name) in ("embedding", "lstm layer 0")}
    assert frozen and {"embedding.weight"} <= frozen
    for name, parameter in grid_model.named_parameters():
        if name in frozen:
            assert torch.equal(parameter.detach(), stage.state_dict[name]), f"{name}: the stage's weights"
            assert not torch.equal(parameter.detach(), source["state_dict"][name]), f"{name}: the stage moved it"
    assert not torch.equal(grid_model.head.weight.detach(), stage.state_dict["head.weight"]), "the head trained"
    # the top LSTM layer trains in epoch 2 only: it has moved exactly when that epoch's weights were kept
    top_moved = any(not torch.equal(parameter.detach(), stage.state_dict[name])
                    for name, parameter in grid_model.named_parameters() if group_of(name) == "lstm layer 1")
    assert top_moved == (records[0]["best_epoch"] == 2), records[0]["best_epoch"]


def test_intermediate_for_trains_one_stage_per_seed(tiny_task, source, tmp_path):
    from test_train import synthetic_reviews as reviews

    texts, labels = reviews(64, 12)
    related = write_rows(tmp_path / "related.csv", [(" ".join(VOCAB[i] for i in r), y) for r, y in zip(texts, labels)])
    assert transfer.intermediate_for(["scratch", "gradual"], tiny_task, source, epochs=1, seeds=[1]) is None
    with pytest.raises(ValueError, match="needs the seeds of the grid"):
        transfer.intermediate_for(["intermediate"], tiny_task, source, epochs=1, seeds=[], specs=[related])
    stages = transfer.intermediate_for(["scratch", "intermediate"], tiny_task, source, epochs=1, seeds=[4, 5],
                                       specs=[related], limit=48)
    assert sorted(stages.by_seed) == [4, 5] and stages.specs == [related] and stages.examples == 48
    first, second = stages.for_seed(4), stages.for_seed(5)
    assert any(not torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict), \
        "seeded differently: the stages differ"
    again = transfer.intermediate_for(["intermediate"], tiny_task, source, epochs=1, seeds=[4], specs=[related],
                                      limit=48)
    assert all(torch.equal(again.for_seed(4).state_dict[k], v) for k, v in first.state_dict.items()), \
        "the same seed trains the same stage"
