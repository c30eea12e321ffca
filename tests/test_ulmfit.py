"""ULMFiT in tl_core/transfer/: the language model fine-tuned on the target's text (stage 2), the text it reads
(never a test review), and the ulmfit / ulmfit_imdb classifiers started from a language model (stage 3)."""

import hashlib

import numpy as np
import pytest
import torch

from tl_core import data, lm, text, train, transfer
from tl_core.models import SentimentLSTM
from test_train import VOCAB
from test_transfer import source, tiny_task  # noqa: F401 (fixtures: the tiny source model and target)

LM_VOCAB = text.Vocab(VOCAB)  # the tiny task's vocabulary (the source model's): <pad> <unk> <eos> w1..w39


def tiny_language_model(seed=0, **overrides) -> lm.LanguageModel:
    """A two-layer language model over the tiny vocabulary, hidden 8, without dropout, exact softmax."""
    values = dict(vocab_size=len(VOCAB), embedding_dim=8, hidden_size=8, num_layers=2, embedding_dropout=0.0,
                  input_dropout=0.0, hidden_dropout=0.0, weight_drop=0.0, output_dropout=0.0, output_layer="full")
    values.update(overrides)
    torch.manual_seed(seed)
    return lm.LanguageModel(lm.LMConfig(**values))


def payload_of(model) -> dict:
    return transfer.language_model_payload(model, LM_VOCAB.itos)


def repeated_texts(count=40):
    """Texts that repeat one fixed phrase: a language model can learn to predict them almost surely."""
    phrase = " ".join(f"w{i}" for i in range(1, 13))
    return [" ".join([phrase] * 3)] * count


def copied(payload) -> dict:
    return {"model_config": dict(payload["model_config"]),
            "state_dict": {name: value.clone() for name, value in payload["state_dict"].items()}}


def assert_same_payload(payload, before):
    assert payload["model_config"] == before["model_config"]
    assert payload["state_dict"].keys() == before["state_dict"].keys()
    for name, value in before["state_dict"].items():
        assert torch.equal(payload["state_dict"][name], value), name


def held_out_loss(model, texts) -> float:
    ids = lm.encode_texts(texts, LM_VOCAB)
    return lm.evaluate_perplexity(model, lm.LMStream(ids, 2, 10, variable=False, shuffle=False), "cpu")["loss"]


# ---- stage 2: the language model fine-tuned on the target's text --------------------------------------------

def test_fine_tuning_learns_the_target_text_and_leaves_the_source_untouched(tmp_path):
    source_model = tiny_language_model()
    path = lm.save_language_model(tmp_path / "lm.pt", source_model, LM_VOCAB.itos)
    file_digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _, payload = lm.load_language_model(path, LM_VOCAB.itos)
    before = copied(payload)
    texts = repeated_texts()

    tuned, history = transfer.fine_tune_language_model(payload, texts, LM_VOCAB, epochs=3, lr=3e-2, batch_size=4,
                                                       bptt=10, progress=False, device="cpu")
    assert isinstance(tuned, lm.LanguageModel) and history.metric == "perplexity" and len(history.epochs) == 3
    assert held_out_loss(tuned, texts[:2]) < held_out_loss(source_model, texts[:2]) - 1.0
    assert history.epochs[-1]["val_loss"] < history.epochs[0]["val_loss"]
    # the starting model's held-out perplexity is measured before the first step: training lowered it
    assert history.start["val_perplexity"] == pytest.approx(np.exp(history.start["val_loss"]))
    assert history.epochs[history.best_epoch - 1]["val_loss"] < history.start["val_loss"] - 1.0
    # the best epoch is kept: the one with the lowest validation perplexity
    assert history.best_epoch == 1 + int(np.argmin([epoch["val_perplexity"] for epoch in history.epochs]))
    changed = {name for name, value in tuned.state_dict().items() if not torch.equal(value, before["state_dict"][name])}
    assert {"embedding.weight", "lstm.weight_hh_l0", "lstm.weight_hh_l1", "output_bias"} <= changed
    # the IMDB language model itself is never modified: payload and file are as they were
    assert_same_payload(payload, before)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == file_digest

    from_path, _ = transfer.fine_tune_language_model(path, texts, LM_VOCAB, epochs=1, lr=1e-2, batch_size=4,
                                                     bptt=10, progress=False, device="cpu")
    assert not torch.equal(from_path.embedding.weight, before["state_dict"]["embedding.weight"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == file_digest


def test_fine_tuning_uses_discriminative_rates_and_stlr(monkeypatch):
    seen = {}
    real_fit = train.fit

    def recording_fit(model, train_loader, val_loader, config, **kwargs):
        seen["groups"] = [(group["name"], group["lr"], list(group["params"])) for group in kwargs["param_groups"]]
        seen["config"], seen["objective"], seen["model"] = config, kwargs["objective"], model
        return real_fit(model, train_loader, val_loader, config, **kwargs)

    monkeypatch.setattr(transfer.target_lm, "fit", recording_fit)  # where fine_tune_language_model finds it
    payload = payload_of(tiny_language_model())
    _, history = transfer.fine_tune_language_model(payload, repeated_texts(), LM_VOCAB, epochs=2, lr=4e-3,
                                                   lr_decay=2.6, batch_size=4, bptt=10, progress=False, device="cpu")
    names = [name for name, _, _ in seen["groups"]]
    assert names == ["embedding", "lstm layer 0", "lstm layer 1", "output"]
    assert [lr for _, lr, _ in seen["groups"]] == pytest.approx([4e-3 / 2.6 ** 3, 4e-3 / 2.6 ** 2, 4e-3 / 2.6, 4e-3])
    grouped = [id(p) for _, _, params in seen["groups"] for p in params]
    assert sorted(grouped) == sorted(id(p) for p in seen["model"].parameters()), "every weight in exactly one group"
    assert seen["config"].schedule == "stlr" and isinstance(seen["objective"], lm.LanguageModelObjective)
    rates = np.array(history.step_lrs)  # the output layer's rate at each step: slanted triangular
    assert rates[0] == pytest.approx(4e-3 / 32) and rates.max() == pytest.approx(4e-3)
    assert rates.argmax() < len(rates) // 2 and rates[-1] < rates.max() / 4


def test_fine_tuning_bad_input_is_a_clear_error():
    payload = payload_of(tiny_language_model())
    with pytest.raises(ValueError, match="at least two non-empty texts"):
        transfer.fine_tune_language_model(payload, ["w1 w2"], LM_VOCAB, progress=False)
    with pytest.raises(ValueError, match="texts must be a list of strings"):
        transfer.fine_tune_language_model(payload, "w1 w2 w3", LM_VOCAB, progress=False)
    with pytest.raises(ValueError, match="lr_decay must be >= 1"):
        transfer.fine_tune_language_model(payload, repeated_texts(), LM_VOCAB, lr_decay=0.5, progress=False)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        transfer.fine_tune_language_model(payload, repeated_texts(), LM_VOCAB, val_fraction=1.0, progress=False)
    other = text.Vocab([*VOCAB, "extra"])
    with pytest.raises(ValueError, match="vocabulary of 42 words but the task's .* has 43"):
        transfer.fine_tune_language_model(payload, repeated_texts(), other, progress=False)
    with pytest.raises(ValueError, match="checkpoint's path or payload"):
        transfer.fine_tune_language_model({"state_dict": {}}, repeated_texts(), LM_VOCAB, progress=False)


# ---- the text stage 2 reads: never a test review --------------------------------------------------------------

def test_target_lm_texts_drop_a_planted_test_review(tiny_task, tmp_path):  # noqa: F811
    test_review = tiny_task.split.test.texts[0]
    planted = "   ".join(test_review.upper().split())  # the same review, other case and spacing
    assert planted != test_review and data.same_text_key(planted) == data.same_text_key(test_review)
    path = tmp_path / "unlabelled.txt"
    path.write_text(f"w1 w2 w3 a new review\n{planted}\nw4 w5 w6 another one\n", encoding="utf-8")

    texts, report = transfer.target_lm_texts(tiny_task, unlabelled=str(path))
    assert report["unlabelled_dropped_as_test"] == 1 and report["unlabelled_texts"] == 2
    assert report["pool_texts"] == len(tiny_task.split.pool) and report["pool_dropped_as_test"] == 0
    assert texts == ["w1 w2 w3 a new review", "w4 w5 w6 another one", *tiny_task.split.pool.texts]
    test_keys = {data.same_text_key(t) for t in tiny_task.split.test.texts}
    assert not any(data.same_text_key(t) in test_keys for t in texts), "no test text reaches training"


def test_target_lm_texts_without_unlabelled_text_is_the_pool_and_says_so(tiny_task):  # noqa: F811
    texts, report = transfer.target_lm_texts(tiny_task)
    assert texts == list(tiny_task.split.pool.texts)
    assert report["unlabelled_spec"] is None and report["unlabelled_texts"] == 0
    assert "has no unlabelled text" in report["note"]


def test_target_lm_texts_of_a_real_target_drop_its_test_reviews(shared_data_dir):
    """FDU-MTL's kitchen unlabelled file holds 13 copies of its test reviews (the data README counts them)."""
    vocab = text.Vocab([*text.SPECIALS, "the", "a"])
    for spec in ("fdu:kitchen_housewares", "amazon:kitchen"):
        task = transfer.prepare_target(spec, vocab, max_len=16, data_dir=shared_data_dir)
        texts, report = transfer.target_lm_texts(task, data_dir=shared_data_dir)
        assert report["unlabelled_spec"] == spec and report["unlabelled_dropped_as_test"] == 13, spec
        assert report["unlabelled_texts"] == 2000 - 13
        assert len(texts) == report["unlabelled_texts"] + report["pool_texts"]
        test_keys = {data.same_text_key(t) for t in task.split.test.texts}
        assert not any(data.same_text_key(t) in test_keys for t in texts), spec


def test_target_lm_texts_bad_input(tiny_task, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="takes a TargetTask"):
        transfer.target_lm_texts("amazon:books")
    with pytest.raises(ValueError, match="unlabelled must be an unlabelled-text spec"):
        transfer.target_lm_texts(tiny_task, unlabelled=3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        transfer.target_lm_texts(tiny_task, unlabelled=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="sst2 has no unlabelled text"):
        transfer.target_lm_texts(tiny_task, unlabelled="sst2")


# ---- stage 3: the classifiers from a language model ---------------------------------------------------------

def assert_from_language_model(model, language_model):
    assert isinstance(model, SentimentLSTM) and model.config.pooling == "concat" and not model.config.bidirectional
    assert torch.equal(model.embedding.weight[1:], language_model.embedding.weight[1:])
    assert not model.embedding.weight[text.PAD_ID].any()
    for name, value in language_model.lstm.state_dict().items():
        assert torch.equal(model.lstm.state_dict()[name], value), name


def test_ulmfit_strategies_build_from_their_language_model(source):  # noqa: F811
    imdb_lm, target_lm = tiny_language_model(seed=1), tiny_language_model(seed=2)
    models = {"language_model": payload_of(imdb_lm), "target_language_model": payload_of(target_lm)}
    built = {name: transfer.build_model(transfer.get_strategy(name), source, None, seed=3, language_models=models)
             for name in ("ulmfit_imdb", "ulmfit")}
    assert_from_language_model(built["ulmfit_imdb"], imdb_lm)
    assert_from_language_model(built["ulmfit"], target_lm)
    # a fresh head (concat pooling: last, max and mean of one direction), drawn from the seed
    assert built["ulmfit"].head.weight.shape == (1, 3 * 8)
    assert torch.equal(built["ulmfit"].head.weight, built["ulmfit_imdb"].head.weight)
    again = transfer.build_model(transfer.get_strategy("ulmfit"), source, None, seed=3, language_models=models)
    other_seed = transfer.build_model(transfer.get_strategy("ulmfit"), source, None, seed=4, language_models=models)
    assert torch.equal(again.head.weight, built["ulmfit"].head.weight)
    assert not torch.equal(other_seed.head.weight, built["ulmfit"].head.weight)
    # regularised as the source model is (its dropout), sized as the language model is
    assert built["ulmfit"].config.output_dropout == source["model_config"]["output_dropout"]
    assert built["ulmfit"].config.hidden_size == 8 and built["ulmfit"].config.num_layers == 2
    # gradual unfreezing over the classifier's groups: the head first
    # at 5x the run's rate (lr_scale): the fresh head over a language model
    groups, hook = transfer.training_plan(built["ulmfit"], transfer.get_strategy("ulmfit"), lr=2e-3)
    assert [g["name"] for g in groups] == ["embedding", "lstm layer 0", "lstm layer 1", "head"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-2 / 2.6 ** 3, 1e-2 / 2.6 ** 2, 1e-2 / 2.6, 1e-2])
    assert transfer.set_trainable(built["ulmfit"], 1) == ["head"]


def test_ulmfit_classifier_reads_reviews_in_pieces_as_the_source_model_does(source):  # noqa: F811
    models = {"target_language_model": payload_of(tiny_language_model(seed=2))}
    ulmfit = transfer.get_strategy("ulmfit")
    assert transfer.build_model(ulmfit, source, None, seed=0, language_models=models).config.bptt == 0
    in_pieces = {**source, "model_config": {**source["model_config"], "bidirectional": False, "bptt": 5}}
    assert transfer.build_model(ulmfit, in_pieces, None, seed=0, language_models=models).config.bptt == 5
    assert transfer.build_model(ulmfit, in_pieces, None, seed=0, language_models=models, bptt=0).config.bptt == 0


def test_a_missing_or_mismatched_language_model_is_a_clear_error(source, tiny_task):  # noqa: F811
    ulmfit = transfer.get_strategy("ulmfit")
    with pytest.raises(ValueError, match=r"start from the target language model, which was not given.*"
                                         r"language_models=\{'target_language_model': payload\}"):
        transfer.build_model(ulmfit, source, None, seed=0)
    with pytest.raises(ValueError, match="start from the language model, which was not given"):
        transfer.build_model(transfer.get_strategy("ulmfit_imdb"), source, None, seed=0,
                             language_models={"target_language_model": payload_of(tiny_language_model())})
    bigger = payload_of(tiny_language_model(vocab_size=50))
    with pytest.raises(ValueError, match="vocabulary of 50 words but the task's .* has 42"):
        transfer.build_model(ulmfit, source, None, seed=0, language_models={"target_language_model": bigger})
    config = train.TrainConfig(epochs=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"strategies \['ulmfit'\] start from the target language model"):
        transfer.run_grid(tiny_task, source, None, ["scratch", "ulmfit"], [20], [1], config, batch_size=8,
                          val_fraction=0.25, progress=False)
    renamed = payload_of(tiny_language_model())
    renamed["vocab"] = [*VOCAB[:-1], "other"]
    with pytest.raises(ValueError, match="another vocabulary than the task's"):
        transfer.run_grid(tiny_task, source, None, ["ulmfit_imdb"], [20], [1], config, batch_size=8,
                          val_fraction=0.25, progress=False, language_models={"language_model": renamed})
    with pytest.raises(ValueError, match="unknown strategy 'ulmfit2'; one of: .*ulmfit_imdb, ulmfit"):
        transfer.get_strategy("ulmfit2")


def test_run_grid_finetune_and_ulmfit_end_to_end(tiny_task, source):  # noqa: F811
    imdb_lm = tiny_language_model()
    imdb_payload = payload_of(imdb_lm)
    before = copied(imdb_payload)
    texts, report = transfer.target_lm_texts(tiny_task)
    assert report["pool_texts"] == len(tiny_task.split.pool)
    tuned, _ = transfer.fine_tune_language_model(imdb_payload, texts, LM_VOCAB, epochs=1, lr=1e-2, batch_size=8,
                                                 bptt=10, progress=False, device="cpu")
    assert_same_payload(imdb_payload, before)
    tuned_payload = payload_of(tuned)
    assert not torch.equal(tuned_payload["state_dict"]["embedding.weight"], before["state_dict"]["embedding.weight"])
    config = train.TrainConfig(epochs=2, lr=1e-2, patience=0, device="cpu")
    records, models = transfer.run_grid(tiny_task, source, None, ["finetune", "ulmfit"], [20], [1], config,
                                        batch_size=8, val_fraction=0.25, keep_models=True, progress=False,
                                        language_models={"language_model": imdb_payload,
                                                         "target_language_model": tuned_payload})
    assert [r["strategy"] for r in records] == ["finetune", "ulmfit"]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["epochs_trained"] == 2 for r in records)
    model = models[("ulmfit", 20, 1)]
    assert isinstance(model, SentimentLSTM) and model.config.pooling == "concat"
    assert records[1]["accuracy"] == train.evaluate(model, tiny_task.test_loader())["accuracy"]
    # gradual unfreezing over two epochs: the head, then the top LSTM layer; the embedding and the lower layer
    # are still the fine-tuned language model's
    state = model.state_dict()
    assert torch.equal(state["embedding.weight"][1:], tuned_payload["state_dict"]["embedding.weight"][1:])
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        assert torch.equal(state[f"lstm.{name}"], tuned_payload["state_dict"][f"lstm.{name}"]), name
    assert not torch.equal(state["embedding.weight"][1:], before["state_dict"]["embedding.weight"][1:])
    assert_same_payload(imdb_payload, before)
