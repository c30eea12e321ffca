"""The tokenizer, the vocabulary, numericalization and length-bucketed batches (tl_core/text.py)."""

import json
import math

import numpy as np
import pytest
import torch

from tl_core import text
from tl_core.artifacts import MissingArtifactError
from tl_core.text import PAD_ID, UNK_ID, BucketBatchSampler, Vocab, numericalize, tokenize


@pytest.mark.parametrize("raw, tokens", [
    ("Great movie!<br /><br />Really.", ["great", "movie", "!", "really", "."]),
    ("line<br>break<BR/>and<br  />more", ["line", "break", "and", "more"]),
    ("I don't think it's 'good'", ["i", "don't", "think", "it's", "'", "good", "'"]),
    ("rock'n'roll", ["rock'n'roll"]),
    ("Don\u2019t \u2018quote\u2019 me", ["don't", "'", "quote", "'", "me"]),
    ("AT&amp;T said &quot;no&quot; &#45; twice", ["at", "&", "t", "said", '"', "no", '"', "-", "twice"]),
    ("bare & ampersand, R&D", ["bare", "&", "ampersand", ",", "r", "&", "d"]),
    ("escaped &lt;br /&gt; break", ["escaped", "break"]),
    ("7/10, 3.5 stars... !!!", ["7", "/", "10", ",", "3", ".", "5", "stars", ".", ".", ".", "!", "!", "!"]),
    ("Café NAÏVE Ünïcödé", ["café", "naïve", "ünïcödé"]),
    ("well-made e-mail", ["well", "-", "made", "e", "-", "mail"]),
    ("tabs\tand\nnewlines  \r\n spaces", ["tabs", "and", "newlines", "spaces"]),
    ("emoji 😀👍", ["emoji", "😀", "👍"]),
    ("“curly” quotes…", ["“", "curly", "”", "quotes", "…"]),
    ("", []),
    ("   \n ", []),
])
def test_tokenize_tricky_strings(raw, tokens):
    assert tokenize(raw) == tokens


def test_tokenize_rejects_non_strings():
    with pytest.raises(TypeError, match="text must be a str, got float"):
        tokenize(float("nan"))  # what pandas gives for an empty cell


def test_clean_text_keeps_case_and_removes_markup():
    assert text.clean_text("Good<br />BAD &amp; ugly") == "Good BAD & ugly"


def test_tokenize_all_tokenizes_each_text_with_an_optional_progress_bar(capsys):
    """One token list per text, in order (written out here, not computed with tokenize); progress=True prints a
    bar on stdout that counts the texts, under its desc, also for a generator (no length: a count without total);
    without it nothing is printed. The garbage collector is on again afterwards."""
    import gc

    texts = ["One two.", "Three<br />four!"]
    expected = [["one", "two", "."], ["three", "four", "!"]]
    assert text.tokenize_all(texts) == expected
    assert capsys.readouterr().out == ""
    assert text.tokenize_all(texts, progress=True) == expected
    bar = capsys.readouterr().out
    assert "tokenizing: 100%" in bar and "2/2" in bar and " texts/s" in bar
    assert text.tokenize_all((t for t in ["Don't stop", "AT&amp;T"]), progress=True, desc="reviews") == [
        ["don't", "stop"], ["at", "&", "t"]]
    bar = capsys.readouterr().out
    assert "reviews: 2 texts" in bar and "%" not in bar and "tokenizing" not in bar
    assert text.tokenize_all([]) == [] and gc.isenabled()


CORPUS = [["the", "film", "was", "good"], ["the", "film", "was", "bad"], ["the", "end"], ["a", "good", "end"]]


def test_vocab_build_orders_by_frequency_then_alphabetically():
    vocab = Vocab.build(CORPUS, min_freq=1, max_size=None)
    assert vocab.itos[:3] == ["<pad>", "<unk>", "<eos>"]
    # the:3; end, film, good, was: 2 (alphabetical); a, bad: 1
    assert vocab.itos[3:] == ["the", "end", "film", "good", "was", "a", "bad"]
    assert vocab.counts[:5] == [0, 0, 0, 3, 2]
    assert vocab.corpus_tokens == 13


def test_vocab_min_freq_and_max_size():
    assert Vocab.build(CORPUS, min_freq=2, max_size=None).itos[3:] == ["the", "end", "film", "good", "was"]
    limited = Vocab.build(CORPUS, min_freq=1, max_size=5)
    assert len(limited) == 5 and limited.itos == ["<pad>", "<unk>", "<eos>", "the", "end"]


def test_vocab_encode_decode_and_unknown_words():
    vocab = Vocab.build(CORPUS, min_freq=2, max_size=None)
    ids = vocab.encode(["the", "film", "was", "terrible"])
    assert ids == [3, 5, 7, UNK_ID]
    assert vocab.decode(ids) == ["the", "film", "was", "<unk>"]
    assert vocab.decode([3, PAD_ID, PAD_ID]) == ["the"]
    assert vocab.decode(torch.tensor([3, 0]), skip_pad=False) == ["the", "<pad>"]
    assert vocab["terrible"] == UNK_ID and "terrible" not in vocab and "film" in vocab
    with pytest.raises(IndexError, match="outside this vocabulary"):
        vocab.decode([len(vocab)])
    with pytest.raises(TypeError, match="tokenize"):
        vocab.encode("the film")


def test_vocab_ignores_special_strings_in_the_corpus():
    vocab = Vocab.build([["<unk>", "<pad>", "<eos>", "word"]], min_freq=1)
    assert vocab.itos == ["<pad>", "<unk>", "<eos>", "word"]


def test_vocab_bad_arguments():
    with pytest.raises(ValueError, match="min_freq must be an int >= 1"):
        Vocab.build(CORPUS, min_freq=0)
    with pytest.raises(ValueError, match="max_size must be None or an int >= 3"):
        Vocab.build(CORPUS, max_size=2)
    with pytest.raises(TypeError, match="token lists"):
        Vocab.build(["a text, not tokens"])
    with pytest.raises(ValueError, match="first tokens must be"):
        Vocab(["a", "b"])


def test_vocab_round_trip(tmp_path):
    vocab = Vocab.build(CORPUS, min_freq=1, max_size=7)
    path = vocab.save(tmp_path / text.VOCAB_FILE)
    loaded = Vocab.load(path)
    assert loaded == vocab
    assert loaded.itos == vocab.itos and loaded.counts == vocab.counts
    assert (loaded.min_freq, loaded.max_size, loaded.corpus_tokens) == (1, 7, 13)
    assert loaded.fingerprint() == vocab.fingerprint()
    assert [p.name for p in tmp_path.iterdir()] == [text.VOCAB_FILE]  # no temporary left behind


def test_vocab_load_errors(tmp_path):
    with pytest.raises(MissingArtifactError, match="01_data.ipynb"):
        Vocab.load(tmp_path / "vocab.json")
    (tmp_path / "other.json").write_text(json.dumps({"tokens": ["a"]}))
    with pytest.raises(ValueError, match="not a vocabulary"):
        Vocab.load(tmp_path / "other.json")


def test_truncated_vocabulary_file_names_the_file(tmp_path):
    path = Vocab.build(CORPUS, min_freq=1).save(tmp_path / text.VOCAB_FILE)
    path.write_bytes(path.read_bytes()[:40])  # as a full disk or a killed copy leaves it
    with pytest.raises(ValueError, match=r"vocab.json is not valid JSON"):
        Vocab.load(path)
    whole = json.loads(Vocab.build(CORPUS, min_freq=1).save(tmp_path / "v2.json").read_text())
    del whole["counts"]
    (tmp_path / "v2.json").write_text(json.dumps(whole))
    with pytest.raises(ValueError, match=r"v2.json lacks counts"):
        Vocab.load(tmp_path / "v2.json")


def test_vocab_coverage_and_fingerprint():
    vocab = Vocab.build(CORPUS, min_freq=2, max_size=None)
    assert vocab.coverage([["the", "film", "is", "bad"]]) == 0.5
    assert vocab.fingerprint() != Vocab.build(CORPUS, min_freq=1).fingerprint()


def test_numericalize_truncates_and_reports_lengths():
    vocab = Vocab.build(CORPUS, min_freq=1, max_size=None)
    encoded = numericalize(["The film was good.", "the end", ""], vocab, max_len=3)
    assert [row.tolist() for row in encoded.ids] == [[3, 5, 7], [3, 4], [UNK_ID]]
    assert encoded.lengths.tolist() == [3, 2, 1]
    assert len(encoded) == 3
    picked = encoded.take([2, 0])  # a sample keeps each text with its own length, in the order asked
    assert [row.tolist() for row in picked.ids] == [[UNK_ID], [3, 5, 7]] and picked.lengths.tolist() == [1, 3]
    last = numericalize([["the", "film", "was", "good"]], vocab, max_len=2, keep="last")
    assert vocab.decode(last.ids[0]) == ["was", "good"]
    assert numericalize([["the"] * 10], vocab, max_len=None).lengths.tolist() == [10]
    with pytest.raises(ValueError, match="max_len must be None or an int >= 1"):
        numericalize(["x"], vocab, max_len=0)
    with pytest.raises(ValueError, match="keep must be"):
        numericalize(["x"], vocab, max_len=2, keep="middle")
    with pytest.raises(TypeError, match="item 1 is NoneType"):
        numericalize(["fine", None], vocab, max_len=2)


def test_pad_collate_shapes_and_dtypes():
    batch = [(np.array([5, 6, 7]), 1.0), (np.array([8]), 0.0)]
    token_ids, lengths, labels = text.pad_collate(batch)
    assert token_ids.dtype == torch.long and lengths.dtype == torch.long and labels.dtype == torch.float32
    assert token_ids.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]
    assert lengths.tolist() == [3, 1] and labels.tolist() == [1.0, 0.0]


def test_bucket_sampler_covers_every_index_once_and_wastes_little_padding():
    lengths = np.random.default_rng(0).integers(1, 500, size=1000)
    sampler = BucketBatchSampler(lengths, batch_size=32, chunk_batches=10, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == math.ceil(1000 / 32)
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    random_batches = [list(range(start, min(start + 32, 1000))) for start in range(0, 1000, 32)]
    bucketed, unsorted = text.padding_share(batches, lengths), text.padding_share(random_batches, lengths)
    assert bucketed < 0.15 and unsorted > 0.4  # chunks of 320 sorted by length: ~1/10 of the waste


def test_bucket_sampler_is_seeded_and_reshuffles_each_epoch():
    lengths = np.arange(200) % 37 + 1
    first, second = BucketBatchSampler(lengths, 16, seed=3), BucketBatchSampler(lengths, 16, seed=3)
    epoch0 = list(first)
    assert epoch0 == list(second)  # same seed, same batches
    assert list(first) != epoch0  # the next pass is another order
    first.set_epoch(0)
    assert list(first) == epoch0  # and can be replayed
    assert list(BucketBatchSampler(lengths, 16, seed=4)) != epoch0


def test_bucket_sampler_without_shuffle_and_drop_last():
    lengths = np.array([5, 1, 4, 2, 3])
    assert list(BucketBatchSampler(lengths, 2, shuffle=False)) == [[1, 3], [4, 2], [0]]
    dropped = list(BucketBatchSampler(lengths, 2, drop_last=True))
    assert len(dropped) == 2 and all(len(batch) == 2 for batch in dropped)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        BucketBatchSampler(lengths, 0)


def test_make_loader_yields_padded_batches():
    vocab = Vocab.build(CORPUS, min_freq=1, max_size=None)
    texts = ["the film was good", "the end", "a good end", "bad"]
    loader = text.make_loader(numericalize(texts, vocab, max_len=3), [1, 0, 1, 0], batch_size=2, shuffle=False)
    seen = []
    for token_ids, lengths, labels in loader:
        assert token_ids.shape == (2, int(lengths.max()))
        for row, length in zip(token_ids, lengths):
            assert (row[:length] != PAD_ID).all() and (row[length:] == PAD_ID).all()
        seen.extend(zip(lengths.tolist(), labels.tolist()))
    assert sorted(seen) == [(1, 0.0), (2, 0.0), (3, 1.0), (3, 1.0)]
    unlabelled = text.make_loader(numericalize(texts, vocab, max_len=3), None, batch_size=4, shuffle=False)
    assert torch.isnan(next(iter(unlabelled))[2]).all()


@pytest.mark.parametrize("labels, shown", [([1, 0, 2, 0], r"2 \(text 2\)"), ([-1, 0, 1, 0], r"-1 \(text 0\)"),
                                           ([0.5, 0, 1, 0], r"0.5 \(text 0\)")])
def test_make_loader_refuses_labels_that_are_not_binary(labels, shown):
    vocab = Vocab.build(CORPUS, min_freq=1, max_size=None)
    encoded = numericalize(["good", "bad", "fine", "meh"], vocab, max_len=3)
    with pytest.raises(ValueError, match="labels must be 0 or 1.*got " + shown):
        text.make_loader(encoded, labels, batch_size=2, shuffle=False)


def test_the_docstring_example_is_true():
    """The module's docstring example runs (at least one example is found) and gives what it says."""
    import doctest

    result = doctest.testmod(text)
    assert result.attempted >= 1 and result.failed == 0
