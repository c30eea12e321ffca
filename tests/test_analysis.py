"""Looking inside a classifier (tl_core/analysis.py): predictions in dataset order, gradient × input saliency."""

import numpy as np
import pytest
import torch

from tl_core import analysis, train
from tl_core.models import ModelConfig, SentimentLSTM
from tl_core.text import Encoded
from test_train import BAD, GOOD, VOCAB, synthetic_reviews, train_once


def small_model(backend="torch", seed=0):
    train.seed_everything(seed)
    return SentimentLSTM(ModelConfig(vocab_size=len(VOCAB), embedding_dim=6, hidden_size=5, lstm_backend=backend,
                                     embedding_dropout=0.5, output_dropout=0.5))


def test_saliency_is_the_derivative_along_each_word_vector():
    """s_t = d logit / d alpha at alpha = 1 when only token t's vector is scaled by alpha: a central finite
    difference in float64 must agree (token ids appear once each, so scaling a table row scales one word)."""
    model = small_model().double()
    review = [7, 12, GOOD, 20, 33, 9]
    logit, saliency = analysis.word_saliency(model, review)
    assert saliency.shape == (len(review),)
    model.eval()
    tokens, lengths = torch.tensor([review]), torch.tensor([len(review)])
    with torch.no_grad():
        assert logit == pytest.approx(float(model(tokens, lengths)))
    epsilon = 1e-5
    for position, token in enumerate(review):
        values = []
        for sign in (1, -1):
            scaled = small_model().double()
            with torch.no_grad():
                scaled.embedding.weight[token] *= 1 + sign * epsilon
            scaled.eval()
            with torch.no_grad():
                values.append(float(scaled(tokens, lengths)))
        assert saliency[position] == pytest.approx((values[0] - values[1]) / (2 * epsilon), rel=1e-5, abs=1e-9)
    assert all(p.grad is None for p in model.parameters()), "saliency leaves the parameters' gradients alone"


def test_saliency_restores_mode_and_works_with_a_frozen_table_and_the_fused_lstm():
    fused = small_model("fused")
    reference = small_model("torch")
    fused.embedding.weight.requires_grad_(False)
    fused.train()
    review = [8, 9, BAD, 30]
    logit_fused, fused_saliency = analysis.word_saliency(fused, review)
    logit_torch, torch_saliency = analysis.word_saliency(reference, review)
    assert fused.training, "the model's mode is restored"
    assert logit_fused == pytest.approx(logit_torch, abs=1e-5)
    np.testing.assert_allclose(fused_saliency, torch_saliency, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="at least one token"):
        analysis.word_saliency(fused, [])


def test_saliency_of_an_ensemble_is_the_derivative_along_every_members_word_vector():
    """An ensemble reads one table per member: s_t is d logit / d alpha when token t's vector is scaled by alpha in
    every table at once (central difference, float64); a module without any embedding table is refused."""
    from tl_core.models import EnsembleClassifier

    def ensemble(scale_token=None, factor=1.0):
        members = [small_model(seed=seed).double() for seed in (1, 2)]
        if scale_token is not None:
            with torch.no_grad():
                for member in members:
                    member.embedding.weight[scale_token] *= factor
        return EnsembleClassifier(members).eval()

    review = [4, GOOD, 17, 26]
    logit, saliency = analysis.word_saliency(ensemble(), review)
    tokens, lengths = torch.tensor([review]), torch.tensor([len(review)])
    epsilon = 1e-5
    for position, token in enumerate(review):
        with torch.no_grad():
            up, down = (float(ensemble(token, 1 + sign * epsilon)(tokens, lengths)) for sign in (1, -1))
        assert saliency[position] == pytest.approx((up - down) / (2 * epsilon), rel=1e-5, abs=1e-9)
    with torch.no_grad():
        assert logit == pytest.approx(float(ensemble()(tokens, lengths)))
    with pytest.raises(TypeError, match="reads word vectors from an nn.Embedding"):
        analysis.word_saliency(torch.nn.Linear(3, 1), review)


def test_saliency_finds_the_word_that_decides():
    """On the synthetic task (one GOOD or BAD token decides), the deciding word always pushes the right way and
    is the strongest push that way in most reviews (chance would be about one review in 17)."""
    model, history, _ = train_once(epochs=3)
    assert history.epochs[-1]["val_accuracy"] > 0.95
    reviews, labels = synthetic_reviews(40, 9)
    strongest = 0
    for review, label in zip(reviews, labels):
        _, saliency = analysis.word_saliency(model, review)
        decisive = review.index(GOOD if label else BAD)
        assert np.sign(saliency[decisive]) == (1 if label else -1)
        strongest += int(np.argmax(saliency if label else -saliency)) == decisive
    assert strongest >= 30


def test_predictions_come_back_in_dataset_order():
    model = small_model("torch")
    reviews, _ = synthetic_reviews(37, 4)
    encoded = Encoded([np.asarray(r, dtype=np.int64) for r in reviews], np.array([len(r) for r in reviews]))
    probabilities = analysis.predict_probabilities(model, encoded, batch_size=8)
    model.eval()
    with torch.no_grad():
        one_by_one = [float(torch.sigmoid(model(torch.tensor([r]), torch.tensor([len(r)])))) for r in reviews]
    np.testing.assert_allclose(probabilities, one_by_one, rtol=1e-5, atol=1e-6)


def test_predict_classifies_raw_sentences_in_their_order():
    from tl_core import text

    model, _, _ = train_once(seed=0)
    vocab = text.Vocab(VOCAB)
    good, bad = VOCAB[GOOD], VOCAB[BAD]
    sentences = [f"w10 {good} w20 w11", f"W10 {bad}, w20!", f"{bad} w30 zebra"]
    results = analysis.predict(model, vocab, sentences)
    assert [sentence for sentence, _ in results] == sentences
    assert results[0][1] > 0.9 and results[1][1] < 0.1 and results[2][1] < 0.1
    assert analysis.predict(model, vocab, sentences[0]) == results[:1]
    assert analysis.predict(model, vocab, []) == []
    with pytest.raises(TypeError, match="list of texts"):
        analysis.predict(model, vocab, [3])
