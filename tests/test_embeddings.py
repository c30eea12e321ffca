"""Word2Vec training and the embedding matrix (tl_core/embeddings.py)."""

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest
from gensim.models import KeyedVectors

from tl_core import embeddings
from tl_core.artifacts import MissingArtifactError
from tl_core.embeddings import EmbeddingMatrix, embedding_matrix
from tl_core.text import EOS_ID, PAD_ID, UNK_ID, Vocab

from conftest import REPO
from test_data import REVIEWS, write_imdb_archive


def topic_corpus(sentences: int = 1500, seed: int = 0) -> list[list[str]]:
    """Two topics that never share a sentence: Word2Vec must put each topic's words together."""
    rng = np.random.default_rng(seed)
    topics = [[f"food{i}" for i in range(8)], [f"tech{i}" for i in range(8)]]
    return [list(rng.choice(topics[index % 2], size=10)) for index in range(sentences)]


@pytest.fixture(scope="module")
def topic_vectors():
    return embeddings.train_word2vec(topic_corpus(), vector_size=16, window=3, min_count=1, epochs=5,
                                     workers=1, progress=False)


def test_word2vec_learns_which_words_go_together(topic_vectors):
    vectors = topic_vectors.vectors
    assert len(vectors) == 16 and vectors.vector_size == 16
    neighbours = [word for word, _ in vectors.most_similar("food0", topn=7)]
    assert all(word.startswith("food") for word in neighbours)
    assert vectors.similarity("food0", "food1") > vectors.similarity("food0", "tech1") + 0.3
    assert topic_vectors.effective_words > 0 and topic_vectors.seconds > 0
    assert topic_vectors.settings["workers"] == 1 and topic_vectors.settings["architecture"] == "cbow"


def test_word2vec_with_one_worker_is_the_same_in_every_process():
    """Seeded, one thread, a deterministic hashfxn: the same vectors even under another PYTHONHASHSEED."""
    script = ("import numpy as np\nfrom tl_core.embeddings import train_word2vec\n"
              + inspect.getsource(topic_corpus)
              + "run = train_word2vec(topic_corpus(300), vector_size=8, min_count=1, epochs=2, workers=1, "
                "progress=False)\nprint(run.vectors['food3'].tobytes().hex())")
    outputs = set()
    for hash_seed in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                                env={**os.environ, "PYTHONHASHSEED": hash_seed}, check=True)
        outputs.add(result.stdout.strip())
    assert len(outputs) == 1
    again = embeddings.train_word2vec(topic_corpus(300), vector_size=8, min_count=1, epochs=2, workers=1,
                                      progress=False)
    assert again.vectors["food3"].tobytes().hex() in outputs


def test_word2vec_bad_arguments():
    with pytest.raises(ValueError, match="architecture must be 'cbow' or 'skipgram'"):
        embeddings.train_word2vec([["a"]], architecture="glove")
    with pytest.raises(TypeError, match="tokenize them first"):
        embeddings.train_word2vec(["a whole review"])
    with pytest.raises(ValueError, match="vector_size must be an int >= 1"):
        embeddings.train_word2vec([["a"]], vector_size=0)


def test_word2vec_corpus_is_train_and_unsup_never_test(tmp_path):
    # an unlabelled review that is a test review ("Loved it.") in other case and spacing: left out with the test
    write_imdb_archive(tmp_path, {**REVIEWS, "train/unsup/2_0.txt": "  LOVED   it ."})
    corpus = embeddings.imdb_word2vec_corpus(tmp_path)
    words = {token for tokens in corpus for token in tokens}
    assert len(corpus) == 4 + 2  # train + unsup of the small archive, without the copy of a test review
    assert {"masterpiece", "unlabelled", "awful"} <= words
    assert not {"boring", "loved"} & words  # only in test reviews


def known_vectors() -> KeyedVectors:
    vectors = KeyedVectors(vector_size=3)
    vectors.add_vectors(["good", "bad", "film", "unused"],
                        np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [5, 5, 5]], dtype=np.float32))
    return vectors


VOCAB = Vocab.build([["good", "film", "film", "good", "rare", "film", "plot"], ["bad"]], min_freq=1, max_size=None)


def test_embedding_matrix_is_aligned_to_the_vocab():
    matrix = embedding_matrix(known_vectors(), VOCAB, seed=0)
    assert VOCAB.itos == ["<pad>", "<unk>", "<eos>", "film", "good", "bad", "plot", "rare"]
    assert matrix.weights.shape == (8, 3) and matrix.weights.dtype == np.float32 and matrix.dim == 3
    np.testing.assert_array_equal(matrix.weights[VOCAB["good"]], [1, 0, 0])
    np.testing.assert_array_equal(matrix.weights[VOCAB["bad"]], [0, 1, 0])
    np.testing.assert_array_equal(matrix.weights[VOCAB["film"]], [0, 0, 1])
    np.testing.assert_array_equal(matrix.weights[PAD_ID], [0, 0, 0])
    assert matrix.has_vector.tolist() == [False, False, False, True, True, True, False, False]
    for row in (UNK_ID, EOS_ID, VOCAB["plot"], VOCAB["rare"]):  # no vector: small, random, not zero
        assert 0 < np.abs(matrix.weights[row]).max() < 10
    assert matrix.vocab_fingerprint == VOCAB.fingerprint()


def test_embedding_matrix_is_seeded():
    first, again = embedding_matrix(known_vectors(), VOCAB, seed=0), embedding_matrix(known_vectors(), VOCAB, seed=0)
    other = embedding_matrix(known_vectors(), VOCAB, seed=1)
    np.testing.assert_array_equal(first.weights, again.weights)
    assert not np.array_equal(first.weights[UNK_ID], other.weights[UNK_ID])
    np.testing.assert_array_equal(first.weights[first.has_vector], other.weights[other.has_vector])


def test_coverage_of_vocab_and_tokens():
    matrix = embedding_matrix(known_vectors(), VOCAB)
    assert matrix.vocab_coverage() == pytest.approx(3 / 5)  # film, good, bad of film, good, bad, plot, rare
    assert matrix.token_coverage(VOCAB) == pytest.approx(6 / 8)  # the vocab's own corpus: 6 of its 8 tokens
    # target tokens: "toaster" is not in the vocab (<unk>), "plot" has no vector
    assert matrix.token_coverage(VOCAB, [["good", "toaster"], ["plot", "bad"]]) == pytest.approx(2 / 4)


def test_vectors_round_trip_atomically(tmp_path, topic_vectors):
    path = embeddings.save_vectors(topic_vectors.vectors, tmp_path / embeddings.VECTORS_FILE)
    assert [p.name for p in tmp_path.iterdir()] == [embeddings.VECTORS_FILE]  # one file, no temporary
    loaded = embeddings.load_vectors(path)
    np.testing.assert_array_equal(loaded["tech2"], topic_vectors.vectors["tech2"])
    with pytest.raises(MissingArtifactError, match="02_embeddings.ipynb"):
        embeddings.load_vectors(tmp_path / "missing.kv")


def test_embedding_matrix_round_trip_and_vocab_check(tmp_path):
    matrix = embedding_matrix(known_vectors(), VOCAB)
    matrix.save(tmp_path / embeddings.EMBEDDINGS_FILE)
    assert [p.name for p in tmp_path.iterdir()] == [embeddings.EMBEDDINGS_FILE]
    loaded = embeddings.load_embedding_matrix(tmp_path, VOCAB)
    np.testing.assert_array_equal(loaded.weights, matrix.weights)
    np.testing.assert_array_equal(loaded.has_vector, matrix.has_vector)
    other_vocab = Vocab.build([["good", "film"]], min_freq=1)
    with pytest.raises(ValueError, match="built for another vocabulary.*Rerun notebooks/02_embeddings.ipynb"):
        EmbeddingMatrix.load(tmp_path / embeddings.EMBEDDINGS_FILE, other_vocab)
    with pytest.raises(MissingArtifactError, match="02_embeddings.ipynb"):
        embeddings.load_embedding_matrix(tmp_path / "elsewhere")
