"""The language model (tl_core/lm.py): batching, regularisation, output layers, learning, generation, checkpoints."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tl_core import lm, ops, text, train
from tl_core.models import SentimentLSTM

V = 40


def quiet_config(**overrides) -> lm.LMConfig:
    """A small model without dropout (deterministic in train mode, apart from the sampled softmax)."""
    values = dict(vocab_size=V, embedding_dim=8, hidden_size=12, num_layers=2, embedding_dropout=0.0,
                  input_dropout=0.0, hidden_dropout=0.0, weight_drop=0.0, output_dropout=0.0, cutoffs=(10, 25))
    values.update(overrides)
    return lm.LMConfig(**values)


def tiny_vocab() -> text.Vocab:
    words = ["the", "movie", "was", "great", "bad", "plot", "is", "good", "a", "film"]
    words += [f"w{i}" for i in range(V - len(text.SPECIALS) - len(words))]
    return text.Vocab([*text.SPECIALS, *words])


# ---- batching -------------------------------------------------------------------------------------------------

def test_stream_reads_every_token_once_in_contiguous_windows():
    texts = [np.arange(3, 3 + n) for n in (5, 9, 4, 7, 11)]
    stream = lm.LMStream(texts, batch_size=3, bptt=4, variable=False, shuffle=False)
    windows = list(stream)
    tokens = torch.cat([x for x, _ in windows], dim=1)
    targets = torch.cat([y for _, y in windows], dim=1)
    # The stream is the texts in order, each followed by <eos>, cut into 3 rows.
    flat = np.concatenate([part for row in texts for part in (row, [text.EOS_ID])])
    columns = len(flat) // 3
    rows = torch.from_numpy(flat[:3 * columns].reshape(3, columns))
    assert torch.equal(tokens, rows[:, :-1]) and torch.equal(targets, rows[:, 1:])
    assert all(x.shape[1] == 4 for x, _ in windows[:-1])  # fixed windows, the last one what is left
    assert stream.tokens_per_epoch == targets.numel()


def test_variable_windows_are_seeded_and_cover_the_stream():
    texts = [np.full(200, 5)] * 20
    first = lm.LMStream(texts, batch_size=4, bptt=20, seed=3)
    again = lm.LMStream(texts, batch_size=4, bptt=20, seed=3)
    assert first.window_lengths == again.window_lengths
    assert len(set(first.window_lengths)) > 3 and min(first.window_lengths) >= 1
    assert sum(first.window_lengths) == first.data.shape[1] - 1
    first.set_epoch(2)
    assert first.window_lengths != again.window_lengths  # a new cut every epoch


def test_shuffle_reorders_texts_by_epoch():
    texts = [np.full(3, 10 + i) for i in range(30)]
    stream = lm.LMStream(texts, batch_size=2, bptt=5, variable=False, seed=0)
    epoch_one = stream.data.clone()
    stream.set_epoch(2)
    assert not torch.equal(epoch_one, stream.data)
    assert sorted(epoch_one.flatten().tolist()) == sorted(stream.data.flatten().tolist())


def test_shards_of_several_processes_are_the_rows_of_the_global_batch():
    texts = [np.arange(3, 30)] * 6
    whole = lm.LMStream(texts, batch_size=4, bptt=6, seed=1)
    shards = [lm.LMStream(texts, batch_size=4, bptt=6, seed=1, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(torch.cat([s.data for s in shards]), whole.data)
    assert shards[0].window_lengths == shards[1].window_lengths == whole.window_lengths
    with pytest.raises(ValueError, match="divide evenly"):
        lm.LMStream(texts, batch_size=3, bptt=6, world_size=2)


def test_stream_bad_input():
    with pytest.raises(ValueError, match="too few"):
        lm.LMStream([np.array([5])], batch_size=4)
    with pytest.raises(ValueError, match="too few"):
        lm.LMStream([], batch_size=1)
    with pytest.raises(ValueError, match="bptt must be a positive integer"):
        lm.LMStream([np.arange(100)], batch_size=2, bptt=0)


def test_objective_carries_the_state_detached_and_resets_it_each_epoch():
    model = lm.LanguageModel(quiet_config())
    objective = lm.LanguageModelObjective()
    batch = (torch.randint(3, V, (2, 5)), torch.randint(3, V, (2, 5)))
    objective.start_epoch(model)
    loss, _, tokens = objective.batch_loss(model, batch, torch.device("cpu"))
    assert tokens == 10 and objective.state is not None
    assert all(h.grad_fn is None and c.grad_fn is None for h, c in objective.state)
    carried = [(h.clone(), c.clone()) for h, c in objective.state]
    # The next window starts from the carried state: same result as passing it explicitly.
    expected, _ = model(*batch, carried)
    again, _, _ = objective.batch_loss(model, batch, torch.device("cpu"))
    assert torch.allclose(again, expected)
    objective.start_epoch(model)
    assert objective.state is None


# ---- regularisation ------------------------------------------------------------------------------------------

def test_weight_drop_changes_the_hidden_weights_used_in_training_only(monkeypatch):
    model = lm.LanguageModel(quiet_config(weight_drop=0.5, num_layers=1))
    before = model.lstm.weight_hh_l0.detach().clone()
    seen = []
    real_layer = ops.lstm_layer

    def recording_layer(input, batch_sizes, h0, c0, w_ih, w_hh, *rest, **kwargs):
        seen.append(w_hh.detach().clone())
        return real_layer(input, batch_sizes, h0, c0, w_ih, w_hh, *rest, **kwargs)

    monkeypatch.setattr(lm.ops, "lstm_layer", recording_layer)
    tokens = torch.randint(3, V, (2, 6))
    model.train()
    model(tokens, tokens)
    model(tokens, tokens)
    dropped, dropped_again = seen
    assert (dropped == 0).float().mean() > 0.3  # about half the connections dropped
    kept = dropped != 0
    assert torch.allclose(dropped[kept], 2 * before[kept])  # the rest scaled by 1 / (1 - p)
    assert not torch.equal(dropped, dropped_again)  # a new mask each forward
    assert torch.equal(model.lstm.weight_hh_l0, before)  # the parameter itself untouched
    model.eval()
    model(tokens, tokens)
    assert torch.equal(seen[-1], before)


def test_locked_dropout_uses_one_mask_for_every_step():
    x = torch.ones(7, 3, 50)
    dropped = lm.locked_dropout(x, 0.5, training=True)
    assert torch.equal(dropped, dropped[:1].expand_as(dropped))  # the same at every step
    assert set(dropped.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(lm.locked_dropout(x, 0.5, training=False), x)


def test_word_dropout_drops_a_word_everywhere_it_occurs():
    torch.manual_seed(0)
    ids = torch.arange(3, V).repeat(4, 2)  # every word of the vocabulary but the specials, 8 times
    vectors = torch.ones(*ids.shape, 2)
    dropped = lm.word_dropout(vectors, ids, V, 0.5, training=True)
    kept_words = []
    for word in range(3, V):
        values = dropped[ids == word]
        assert torch.equal(values, values[:1].expand_as(values)), "a word is dropped everywhere or nowhere"
        assert values[0, 0].item() in (0.0, 2.0), "a kept word is scaled by 1 / (1 - p)"
        kept_words.append(values[0, 0].item() == 2.0)
    assert 0 < sum(kept_words) < len(kept_words), "some words dropped, some kept"
    assert torch.equal(lm.word_dropout(vectors, ids, V, 0.5, training=False), vectors)


# ---- the output layers ---------------------------------------------------------------------------------------

def test_tied_weights_are_one_tensor():
    model = lm.LanguageModel(quiet_config())
    shaped_like_vocab = [name for name, p in model.named_parameters() if p.shape == model.embedding.weight.shape]
    assert shaped_like_vocab == ["embedding.weight"]
    # A word that is only a target (never read) gets a gradient in its embedding row: the output layer is the
    # embedding.
    tokens = torch.full((2, 4), 5)
    targets = torch.full((2, 4), 30)
    loss, _ = model(tokens, targets)
    loss.backward()
    assert model.embedding.weight.grad[30].abs().sum() > 0


@pytest.mark.parametrize("output_layer", ["adaptive", "full", "sampled"])
def test_log_probs_are_a_distribution_and_nll_reads_them(output_layer):
    torch.manual_seed(0)
    model = lm.LanguageModel(quiet_config(output_layer=output_layer)).eval()
    tokens, targets = torch.randint(3, V, (3, 5)), torch.randint(3, V, (3, 5))
    log_probs, _ = model.log_probs(tokens)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, 5), atol=1e-5)
    nll, _ = model.nll(tokens, targets)
    assert torch.allclose(nll, -log_probs.gather(2, targets.unsqueeze(-1)).squeeze(-1), atol=1e-5)
    loss, _ = model(tokens, targets)
    assert torch.allclose(loss, nll.mean(), atol=1e-6)


def test_adaptive_softmax_training_loss_is_exact():
    torch.manual_seed(0)
    model = lm.LanguageModel(quiet_config(output_layer="adaptive"))
    tokens, targets = torch.randint(3, V, (3, 5)), torch.randint(3, V, (3, 5))
    model.train()
    training_loss, _ = model(tokens, targets)
    model.eval()
    exact, _ = model.nll(tokens, targets)
    assert torch.allclose(training_loss, exact.mean(), atol=1e-6)


def test_adaptive_softmax_equals_its_two_level_definition():
    """p(word) = p(cluster | h) * p(word | h, cluster) with the head over frequent words + clusters."""
    torch.manual_seed(0)
    config = quiet_config(output_layer="adaptive", cutoffs=(10, 25))
    layer = lm.AdaptiveSoftmax(config)
    with torch.no_grad():
        layer.cluster_weight.normal_()
        layer.cluster_bias.normal_()
    features, weight, bias = torch.randn(4, 8), torch.randn(V, 8), torch.randn(V)
    head = torch.log_softmax(torch.cat([features @ weight[:10].T + bias[:10],
                                        features @ layer.cluster_weight.T + layer.cluster_bias], 1), 1)
    word = 30  # in the second tail cluster (25..39)
    tail = torch.log_softmax(features @ weight[25:].T + bias[25:], 1)
    expected = head[:, 11] + tail[:, word - 25]
    assert torch.allclose(layer.log_probs(features, weight, bias)[:, word], expected, atol=1e-6)


def test_sampled_softmax_estimates_the_full_softmax_loss():
    """With many samples the sampled loss (logits corrected by log expected count) approaches the exact one. The
    bias falls with the frequency rank, as a trained model's does, so that a correction which ignored the
    proposal (uniform) would be off by far more than the tolerance."""
    torch.manual_seed(0)
    config = quiet_config(output_layer="sampled", sampled_words=20_000)
    layer = lm.SampledSoftmax(config)
    features, weight = torch.randn(64, 8), 0.5 * torch.randn(V, 8)
    bias = -torch.log(torch.arange(V, dtype=torch.float32) + 1)
    targets = torch.randint(3, V, (64,))
    exact = F.cross_entropy(features @ weight.T + bias, targets)
    estimate = torch.stack([layer.training_loss(features, targets, weight, bias) for _ in range(5)]).mean()
    assert abs(float(estimate - exact)) < 0.01 * float(exact)
    assert torch.allclose(layer.nll(features, targets, weight, bias).mean(), exact, atol=1e-5)


def test_sampled_softmax_never_counts_the_target_as_a_negative(monkeypatch):
    """Every sample is the target word itself: masked out, only the target's own logit is left, so the loss is 0
    (unmasked, the 16 copies of the target would count against it)."""
    config = quiet_config(output_layer="sampled", sampled_words=16)
    layer = lm.SampledSoftmax(config)
    target = 7
    monkeypatch.setattr(torch, "multinomial", lambda weights, count, replacement: torch.full((count,), target))
    loss = layer.training_loss(torch.randn(3, 8), torch.full((3,), target), torch.randn(V, 8), torch.zeros(V))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_sampled_softmax_gradients_are_the_same_bits_on_two_threads(cpu_threads):
    """The sampled loss's gradient adds many tokens' contributions into the same rows of the tied weight (a
    language model's targets repeat): on 2 threads the sum must come out in the same order every time, so that a
    seeded pretraining is repeatable (indexing's backward, weight[targets], adds them in the threads' order)."""
    layer = lm.SampledSoftmax(quiet_config(output_layer="sampled", sampled_words=64))
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(8192, 32, generator=generator)
    targets = torch.randint(3, 12, (8192,), generator=generator)  # 9 words: each row receives ~900 additions
    base_weight, bias = torch.randn(V, 32, generator=generator), torch.zeros(V)
    cpu_threads(2)
    gradients = []
    for _ in range(6):
        torch.manual_seed(1)  # the same samples each time
        weight = base_weight.clone().requires_grad_()
        layer.training_loss(features, targets, weight, bias).backward()
        gradients.append(weight.grad)
    assert all(torch.equal(gradient, gradients[0]) for gradient in gradients[1:])


def test_a_tiny_model_learns_a_repeating_sequence():
    torch.manual_seed(0)
    cycle = np.array([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
    texts = [np.tile(cycle, 20)] * 8
    stream = lm.LMStream(texts, batch_size=4, bptt=12, seed=0)
    val = lm.LMStream(texts[:2], batch_size=2, bptt=12, variable=False, shuffle=False)
    model = lm.LanguageModel(quiet_config(num_layers=1, hidden_size=24))
    history = train.fit(model, stream, val, train.TrainConfig(epochs=4, lr=1e-2, progress=False, patience=0),
                        objective=lm.LanguageModelObjective())
    assert history.metric == "perplexity"
    assert history.epochs[-1]["val_perplexity"] < 1.1  # each next token all but certain
    assert np.mean(history.step_losses[-10:]) < 0.1 < history.step_losses[0]


# ---- what it learned -------------------------------------------------------------------------------------------

def trained_on_a_cycle() -> tuple[lm.LanguageModel, text.Vocab]:
    vocab = tiny_vocab()
    sentence = np.array(vocab.encode("the movie was great".split()))
    texts = [sentence] * 300
    torch.manual_seed(0)
    model = lm.LanguageModel(quiet_config(num_layers=1, hidden_size=24))
    stream = lm.LMStream(texts, batch_size=4, bptt=10, seed=0)
    train.fit(model, stream, stream, train.TrainConfig(epochs=3, lr=1e-2, progress=False, patience=0),
              objective=lm.LanguageModelObjective())
    return model, vocab


def test_next_words_and_generation_follow_what_it_learned():
    model, vocab = trained_on_a_cycle()
    words = lm.next_words(model, vocab, "the movie", k=3)
    assert words[0][0] == "was" and words[0][1] > 0.9
    assert [p for _, p in words] == sorted((p for _, p in words), reverse=True)
    assert lm.generate(model, vocab, "the movie", n_words=5, temperature=0.5) == "the movie was great"  # then <eos>


def test_generate_is_deterministic_under_a_seed():
    torch.manual_seed(0)
    vocab = tiny_vocab()
    model = lm.LanguageModel(quiet_config())  # untrained: every word possible
    first = lm.generate(model, vocab, "the plot", n_words=12, seed=7)
    assert first == lm.generate(model, vocab, "the plot", n_words=12, seed=7)
    assert first != lm.generate(model, vocab, "the plot", n_words=12, seed=8)
    assert "<pad>" not in first and "<unk>" not in first


def test_prompts_and_temperatures_that_cannot_work_are_clear_errors():
    vocab = tiny_vocab()
    model = lm.LanguageModel(quiet_config())
    with pytest.raises(ValueError, match="none of the words of the prompt"):
        lm.next_words(model, vocab, "zyxw qqq")
    with pytest.raises(ValueError, match="none of the words"):
        lm.generate(model, vocab, "   ")
    with pytest.raises(ValueError, match="temperature must be positive"):
        lm.generate(model, vocab, "the", temperature=0)


# ---- checkpoints and the classifier from the language model ----------------------------------------------------

def test_checkpoint_round_trip_and_mismatches(tmp_path):
    vocab = tiny_vocab()
    model = lm.LanguageModel(quiet_config(output_layer="adaptive"))
    path = lm.save_language_model(tmp_path / lm.LM_CHECKPOINT, model, vocab.itos, {"val_perplexity": 12.0})
    loaded, payload = lm.load_language_model(path, vocab.itos)
    assert payload["extra"]["val_perplexity"] == 12.0 and loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    other = text.Vocab([*text.SPECIALS, *reversed(vocab.itos[len(text.SPECIALS):])])
    with pytest.raises(train.CheckpointMismatchError, match="different vocabulary"):
        lm.load_language_model(path, other.itos)
    with pytest.raises(train.CheckpointMismatchError, match="holds a language model, not a classifier"):
        train.model_from_checkpoint(path, vocab.itos)


def test_a_classifier_from_the_language_model_carries_its_weights():
    torch.manual_seed(0)
    vocab = tiny_vocab()
    language_model = lm.LanguageModel(quiet_config())
    payload = {"model_config": language_model.config.to_dict(), "state_dict": language_model.state_dict()}
    classifier = lm.classifier_from_language_model(payload, embedding_dropout=0.0, output_dropout=0.0)
    assert isinstance(classifier, SentimentLSTM) and classifier.config.pooling == "concat"
    assert not classifier.config.bidirectional and classifier.config.num_layers == 2
    assert torch.equal(classifier.embedding.weight[1:], language_model.embedding.weight[1:])
    assert not classifier.embedding.weight[text.PAD_ID].any()
    for name, value in language_model.lstm.state_dict().items():
        assert torch.equal(classifier.lstm.state_dict()[name], value), name
    # Same weights, same recurrence: the classifier's LSTM states are the language model's.
    tokens = torch.randint(3, V, (2, 6))
    language_model.eval()
    classifier.eval()
    with torch.no_grad():
        features, state = language_model.features(tokens)
        output, _ = classifier.lstm(classifier.embedding(tokens), lengths=torch.tensor([6, 6]))
    assert torch.allclose(output[:, -1], state[-1][0], atol=1e-6)
    with pytest.raises(ValueError, match="keeps its sizes"):
        lm.classifier_from_language_model(payload, hidden_size=99)


# ---- configuration and corpora -------------------------------------------------------------------------------

def test_config_checks():
    with pytest.raises(ValueError, match="output_layer must be one of"):
        lm.LMConfig(vocab_size=100, cutoffs=(20,), output_layer="hierarchical")
    with pytest.raises(ValueError, match="cutoffs must increase"):
        lm.LMConfig(vocab_size=100, cutoffs=(50, 20))
    with pytest.raises(ValueError, match="cutoffs must increase"):
        lm.LMConfig(vocab_size=100, cutoffs=(20, 100))
    with pytest.raises(ValueError, match="cutoffs must increase"):
        lm.LMConfig(vocab_size=100)  # the default cutoffs are for the course's 50,000 words
    assert lm.LMConfig(vocab_size=100, output_layer="sampled").cutoffs == (2000, 10000)  # unused: not checked
    with pytest.raises(ValueError, match="weight_drop must be in"):
        lm.LMConfig(vocab_size=100, cutoffs=(20,), weight_drop=1.0)
    config = lm.LMConfig(vocab_size=50_000, num_layers=3)
    assert lm.LMConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown language-model config fields"):
        lm.LMConfig.from_dict({"vocab_size": 100, "dropout": 0.1})


def test_read_corpus_from_a_folder_or_a_file_and_its_errors(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("First text.\nstill the first.", encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("Second text.", encoding="utf-8")
    (folder / "notes.md").write_text("not read", encoding="utf-8")
    assert lm.read_corpus(folder) == ["First text.\nstill the first.", "Second text."]
    lines = tmp_path / "lines.txt"
    lines.write_text("one review\n\n  another review  \n", encoding="utf-8")
    assert lm.read_corpus(lines) == ["one review", "another review"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lm.read_corpus(tmp_path / "missing")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no text"):
        lm.read_corpus(empty)
    binary = tmp_path / "model.txt"
    binary.write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(ValueError, match="is not text"):
        lm.read_corpus(binary)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        lm.read_corpus(latin)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="no .txt files"):
        lm.read_corpus(tmp_path / "nothing")


def test_perplexity_is_the_exponential_of_the_mean_nll():
    """A model that gives every word probability 1/V (full softmax, tied word vectors and output bias zero: every
    logit 0, whatever the LSTM computes) has mean loss log V and perplexity V, over every target of the stream."""
    torch.manual_seed(0)
    model = lm.LanguageModel(quiet_config(output_layer="full"))
    with torch.no_grad():
        model.embedding.weight.zero_()
        model.output_bias.zero_()
    texts = [np.arange(3, 35)] * 3
    stream = lm.LMStream(texts, batch_size=2, bptt=7, variable=False, shuffle=False)
    result = lm.evaluate_perplexity(model, stream)
    # 3 texts of 32 tokens and <eos>: 99 tokens, 2 rows of 49; each row's last token is no window's input
    assert result["tokens"] == 2 * (99 // 2 - 1) == stream.tokens_per_epoch
    assert result["loss"] == pytest.approx(math.log(V)) and result["perplexity"] == pytest.approx(V)


def test_perplexity_carries_the_state_through_the_stream():
    """The state is carried from window to window: a model with real weights, in eval mode, gives the same loss
    for a stream read in 7-token windows as for the same stream read in one window; starting every window afresh
    would not."""
    torch.manual_seed(0)
    model = lm.LanguageModel(quiet_config(output_layer="full", embedding_dropout=0.3, input_dropout=0.3))
    with torch.no_grad():
        model.output_bias.copy_(torch.randn(V))
    model.train()  # evaluate_perplexity must switch the dropout off itself
    texts = [np.random.default_rng(i).integers(3, V, 40) for i in range(3)]
    windows = lm.LMStream(texts, batch_size=2, bptt=7, variable=False, shuffle=False)
    whole = lm.LMStream(texts, batch_size=2, bptt=1000, variable=False, shuffle=False)
    assert len(windows) == 9 and len(whole) == 1
    read_in_windows, read_whole = lm.evaluate_perplexity(model, windows), lm.evaluate_perplexity(model, whole)
    assert read_in_windows["tokens"] == read_whole["tokens"] == 2 * (123 // 2 - 1)  # 3 x (40 + <eos>), 2 rows
    assert read_in_windows["loss"] == pytest.approx(read_whole["loss"], rel=1e-5)
    assert read_in_windows["perplexity"] == pytest.approx(math.exp(read_whole["loss"]), rel=1e-5)
    model.eval()  # as evaluate_perplexity reads it: only the carried state differs
    with torch.no_grad():
        afresh = torch.cat([model.nll(tokens, targets)[0].flatten() for tokens, targets in windows]).mean()
    assert abs(float(afresh) - read_whole["loss"]) > 1e-3, "the state matters for this model"
