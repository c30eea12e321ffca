"""The sentiment classifier (tl_core/models.py): shapes, pooling over valid steps only, backends, layer groups."""

import pytest
import torch

from tl_core.models import ModelConfig, SentimentLSTM

BACKENDS = ["torch", "fused"]


def make_model(backend, pooling="concat", **overrides):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=30, embedding_dim=8, hidden_size=6, lstm_backend=backend, pooling=pooling,
                         **overrides)
    return SentimentLSTM(config).eval()


def padded(reviews, length):
    tokens = torch.zeros(len(reviews), length, dtype=torch.int64)
    for row, review in enumerate(reviews):
        tokens[row, :len(review)] = torch.tensor(review)
    return tokens, torch.tensor([len(r) for r in reviews])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pooling", ["last", "concat"])
@pytest.mark.parametrize("layers,bidirectional", [(1, True), (2, False), (2, True)])
def test_shapes(backend, pooling, layers, bidirectional):
    model = make_model(backend, pooling, num_layers=layers, bidirectional=bidirectional)
    tokens, lengths = padded([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]], 7)
    assert model.encode(tokens, lengths).shape == (3, model.config.feature_size)
    assert model(tokens, lengths).shape == (3,)
    assert model.config.feature_size == (2 if bidirectional else 1) * 6 * (3 if pooling == "concat" else 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pooling", ["last", "concat"])
def test_padding_does_not_change_a_reviews_logit(backend, pooling):
    """A review's logit depends on its own tokens only: not on how much padding or which neighbours it has."""
    model = make_model(backend, pooling, num_layers=2)
    review = [3, 14, 15, 9, 2, 6]
    alone = model(*padded([review], 6))
    padded_more = model(*padded([review], 40))
    with_neighbours = model(*padded([[1] * 25, review, [7, 7]], 25))[1]
    torch.testing.assert_close(padded_more, alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(with_neighbours, alone[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_packed_pooling_equals_masked_pooling_of_the_padded_output(backend, layers, bidirectional):
    """encode pools the packed output row by row; the same features (and gradients) as the textbook version: the
    LSTM's padded output, padding masked out, max and mean over time (as in the 05 assignment)."""
    model = make_model(backend, num_layers=layers, bidirectional=bidirectional).train()
    model.embedding_dropout.p = 0.0
    tokens, lengths = padded([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11]], 7)  # unsorted, one padded past all
    pooled = model.encode(tokens, lengths)
    output, (h_n, _) = model.lstm(model.embedding(tokens), lengths=lengths)
    valid = (torch.arange(7)[None, :] < lengths[:, None]).unsqueeze(-1)
    last = h_n.view(layers, 2 if bidirectional else 1, 4, 6)[-1].transpose(0, 1).reshape(4, -1)
    reference = torch.cat([last, output.masked_fill(~valid, float("-inf")).amax(dim=1),
                           output.masked_fill(~valid, 0.0).sum(dim=1) / lengths[:, None]], dim=1)
    torch.testing.assert_close(pooled, reference, atol=1e-6, rtol=1e-5)
    weights = torch.randn_like(reference)
    parameters = [model.embedding.weight, *model.lstm.parameters()]
    for got, expected in zip(torch.autograd.grad((pooled * weights).sum(), parameters),
                             torch.autograd.grad((reference * weights).sum(), parameters)):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pooling", ["last", "concat"])
def test_reading_in_pieces_gives_the_same_features(backend, pooling):
    """With bptt, a review is read in pieces, each starting from the state the last one ended in: the forward pass
    (and so the features) are those of reading it whole, for reviews that end in the first, a middle, or the last
    piece, or exactly on a piece's edge."""
    whole = make_model(backend, pooling, num_layers=2, bidirectional=False)
    pieces = make_model(backend, pooling, num_layers=2, bidirectional=False, bptt=4)
    pieces.load_state_dict(whole.state_dict())
    tokens, lengths = padded([[1, 2, 3], list(range(1, 13)), [4, 5, 6, 7, 8, 9, 10], [11], [9, 8, 7, 6]], 13)
    torch.testing.assert_close(pieces.encode(tokens, lengths), whole.encode(tokens, lengths), atol=1e-6, rtol=1e-5)


def test_the_padded_backend_reads_in_pieces_too():
    """nn.LSTM over the padded batch (section 6 of notebook 05 compares it) takes the carried state as well: on
    reviews without padding, pieces and whole agree."""
    whole = make_model("torch_padded", num_layers=2, bidirectional=False)
    pieces = make_model("torch_padded", num_layers=2, bidirectional=False, bptt=5)
    pieces.load_state_dict(whole.state_dict())
    tokens = torch.randint(1, 30, (3, 12), generator=torch.Generator().manual_seed(0))
    lengths = torch.full((3,), 12)
    torch.testing.assert_close(pieces.encode(tokens, lengths), whole.encode(tokens, lengths), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reading_in_pieces_stops_the_gradient_at_the_pieces_edge(backend):
    """BPT3C: the final state's gradient reaches the words of the last piece only, while reading the review whole
    it reaches every word; the concat pooling still sends gradient to every word (its max and mean see them all)."""
    review = list(range(1, 11))  # ten distinct words: pieces of 4 are words 1-4, 5-8 and 9-10
    grads = {}
    for bptt, pooling in ((0, "last"), (4, "last"), (4, "concat")):
        model = make_model(backend, pooling, bidirectional=False, bptt=bptt)
        model.encode(*padded([review, [3, 2]], 10)).sum().backward()
        grads[bptt, pooling] = model.embedding.weight.grad.abs().sum(dim=1)
    assert bool((grads[0, "last"][1:11] > 0).all())
    assert bool((grads[4, "last"][5:9] == 0).all()) and bool((grads[4, "last"][9:11] > 0).all())
    assert bool((grads[4, "concat"][1:11] > 0).all())


@pytest.mark.parametrize("backend", BACKENDS + ["torch_padded"])
def test_weight_drop_is_one_dropconnect_mask_per_batch(backend):
    """While training, weight_drop runs the batch through the LSTM with one dropped copy of each hidden-to-hidden
    matrix: the same logits as a model holding those dropped weights, for every piece of a review read in pieces;
    the dropped entries get no gradient; the parameters stay untouched, and evaluation uses them whole."""
    settings = dict(num_layers=2, bidirectional=False, bptt=4, embedding_dropout=0.0, output_dropout=0.0)
    model = make_model(backend, weight_drop=0.5, **settings)
    reference = make_model(backend, **settings)
    reference.load_state_dict(model.state_dict())
    before = {name: weight.clone() for name, weight in model.state_dict().items()}
    batch = padded([list(range(1, 11)), [3, 2, 5], [7, 8, 9, 4, 4, 4]], 10)
    torch.testing.assert_close(model(*batch), reference(*batch))  # eval: no mask

    model.train()
    torch.manual_seed(5)
    logits = model(*batch)
    torch.manual_seed(5)  # the same draws again: the masks the model used
    masks = {name: torch.nn.functional.dropout(torch.ones_like(weight), 0.5)
             for name, weight in model.lstm.named_parameters() if name.startswith("weight_hh")}
    assert len(masks) == 2 and all(bool((mask == 0).any()) for mask in masks.values())
    with torch.no_grad():
        for name, mask in masks.items():
            getattr(reference.lstm, name).mul_(mask)
    torch.testing.assert_close(logits, reference(*batch), atol=1e-6, rtol=1e-5)
    logits.sum().backward()
    for name, mask in masks.items():
        gradient = getattr(model.lstm, name).grad
        assert bool((gradient[mask == 0] == 0).all()) and bool((gradient[mask > 0] != 0).any())
    assert all(torch.equal(weight, before[name]) for name, weight in model.state_dict().items())


def test_bptt_is_checked():
    with pytest.raises(ValueError, match="bptt must be a non-negative integer"):
        ModelConfig(vocab_size=30, bidirectional=False, bptt=-1)
    with pytest.raises(ValueError, match="bptt .* needs bidirectional=False"):
        ModelConfig(vocab_size=30, bidirectional=True, bptt=70)


@pytest.mark.parametrize("backend", BACKENDS + ["torch_padded"])
def test_lengths_outside_the_padded_batch_are_refused(backend):
    model = make_model(backend)
    tokens = torch.ones(2, 5, dtype=torch.int64)
    for lengths in ([5, 6], [0, 3]):
        with pytest.raises(ValueError, match=r"lengths must lie in \[1, 5\] \(the input's sequence length\)"):
            model(tokens, torch.tensor(lengths))


def test_backends_compute_the_same_function():
    fused = make_model("fused", num_layers=2)
    reference = make_model("torch", num_layers=2)
    reference.load_state_dict(fused.state_dict())
    tokens, lengths = padded([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]], 9)
    torch.testing.assert_close(fused(tokens, lengths), reference(tokens, lengths), atol=1e-5, rtol=1e-5)


def test_padded_backend_matches_only_where_padding_cannot_leak():
    """nn.LSTM over the padded batch: exact when every review fills the batch, different for a shorter one."""
    fused = make_model("fused", pooling="last")
    padded_lstm = make_model("torch_padded", pooling="last")
    padded_lstm.load_state_dict(fused.state_dict())
    full = padded([[1, 2, 3, 4], [5, 6, 7, 8]], 4)
    torch.testing.assert_close(padded_lstm(*full), fused(*full), atol=1e-5, rtol=1e-5)
    ragged = padded([[1, 2, 3, 4], [5, 6]], 4)
    assert torch.allclose(padded_lstm(*ragged)[0], fused(*ragged)[0], atol=1e-5)
    assert not torch.allclose(padded_lstm(*ragged)[1], fused(*ragged)[1], atol=1e-4)  # read two padding steps


def test_pretrained_and_frozen_embeddings():
    vectors = torch.randn(30, 8)
    model = SentimentLSTM(ModelConfig(vocab_size=30, embedding_dim=8, hidden_size=4, freeze_embeddings=True,
                                      lstm_backend="torch"), embeddings=vectors)
    assert torch.equal(model.embedding.weight, vectors) and not model.embedding.weight.requires_grad
    with pytest.raises(ValueError, match=r"embeddings have shape \(30, 5\)"):
        SentimentLSTM(ModelConfig(vocab_size=30, embedding_dim=8, hidden_size=4), embeddings=torch.randn(30, 5))


def test_layer_groups_cover_every_parameter_once():
    model = make_model("fused", num_layers=2)
    groups = model.layer_groups()
    assert [name for name, _ in groups] == ["embedding", "lstm layer 0", "lstm layer 1", "head"]
    grouped = [id(p) for _, params in groups for p in params]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert len(groups[1][1]) == 8  # weight_ih, weight_hh, bias_ih, bias_hh, each forward and reverse


@pytest.mark.parametrize("field,value,message", [
    ("pooling", "mean", "pooling must be one of"),
    ("lstm_backend", "cudnn", "lstm_backend must be one of"),
    ("hidden_size", 0, "hidden_size must be a positive integer"),
    ("output_dropout", 1.0, r"output_dropout must be in \[0, 1\)"),
    ("weight_drop", -0.1, r"weight_drop must be in \[0, 1\)"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(vocab_size=10, **{field: value})


def test_bad_batch_shapes():
    model = make_model("torch")
    with pytest.raises(ValueError, match="tokens must be"):
        model(torch.zeros(3, dtype=torch.int64), torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match=r"lengths must be \(batch,\) = \(2,\)"):
        model(torch.zeros(2, 4, dtype=torch.int64), torch.tensor([1, 1, 1]))
