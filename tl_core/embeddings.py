"""Word2Vec trained on IMDB, and the embedding matrix that initialises the models' embedding layer.

Introduced in ``notebooks/02_embeddings.ipynb``. The corpus is IMDB **train + unsup** (:data:`WORD2VEC_SPLITS`),
never test: vectors learned from test reviews would leak them into every model built on top.

Reproducibility: the vectors are seeded (``seed``) and gensim is given a deterministic string hash
(:func:`stable_hash`) instead of Python's ``hash``, which changes from process to process unless PYTHONHASHSEED
is fixed. With one worker thread the result is then the same in every run; with more, the threads update the
shared vectors in whatever order the scheduler gives them (Hogwild), so the vectors differ slightly run to run
even with the seed, while what they say (neighbours, coverage) stays the same in substance.
"""

from __future__ import annotations

import os
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .artifacts import EMBEDDINGS_FILE, VECTORS_FILE, atomic_path, require
from .text import PAD_ID, SPECIALS, Vocab, tokenize_all

PRODUCED_BY = "02_embeddings.ipynb"

WORD2VEC_SPLITS = ("train", "unsup")  # IMDB splits Word2Vec learns from: never "test"
DEFAULT_VECTOR_SIZE = 100


def stable_hash(text: str) -> int:
    """A string hash that is the same in every process (gensim's ``hashfxn``; Python's ``hash`` is salted)."""
    return zlib.crc32(text.encode("utf-8"))


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask where there is one, e.g. in containers and CI)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def imdb_word2vec_corpus(data_dir: str | os.PathLike | None = None, *, limit: int | None = None,
                         progress: bool = False) -> list[list[str]]:
    """Tokenized IMDB train + unsup reviews, the corpus Word2Vec learns from: the unlabelled reviews that are the
    same text as a test review (:func:`tl_core.data.drop_test_texts`; 270 of the 50,000) are left out, as from the
    language model's corpus, so no test text trains the vectors. ``limit`` takes the first ``limit`` reviews of
    each split (train is ordered negatives first, so a limit below 25,000 is lopsided; use it for tests and
    exercises only). Introduced in notebooks/02_embeddings.ipynb."""
    from .data import drop_test_texts, load_imdb

    texts = []
    for split in WORD2VEC_SPLITS:
        split_texts = load_imdb(split, data_dir).texts
        if split == "unsup":
            split_texts, _ = drop_test_texts(split_texts, load_imdb("test", data_dir).texts)
        texts.extend(split_texts[:limit] if limit is not None else split_texts)
    return tokenize_all(texts, progress=progress, desc="tokenizing train+unsup")


class _CountingCorpus:
    """Yields the sentences again on every pass and moves a progress bar (gensim reads it from a thread)."""

    def __init__(self, sentences: Sequence[Sequence[str]], bar):
        self.sentences = sentences
        self.bar = bar

    def __iter__(self):
        step = 1000
        for start in range(0, len(self.sentences), step):
            chunk = self.sentences[start:start + step]
            yield from chunk
            self.bar.update(len(chunk))


@dataclass
class Word2VecRun:
    """What :func:`train_word2vec` made, and how fast."""

    vectors: "gensim.models.KeyedVectors"  # noqa: F821 (gensim is imported lazily)
    seconds: float  # training only (the vocabulary pass excluded)
    raw_words: int  # corpus words over all epochs
    effective_words: int  # words actually trained on (rare words dropped, frequent ones downsampled)
    settings: dict

    @property
    def effective_words_per_second(self) -> float:
        return self.effective_words / self.seconds if self.seconds else float("nan")


def train_word2vec(sentences: Sequence[Sequence[str]], *, vector_size: int = DEFAULT_VECTOR_SIZE,
                   window: int = 5, min_count: int = 5, epochs: int = 5, architecture: str = "cbow",
                   negative: int = 5, sample: float = 1e-3, workers: int | None = None, seed: int = 0,
                   progress: bool = True) -> Word2VecRun:
    """Train Word2Vec (gensim) on token lists; ``workers=None`` uses every available core.

    ``architecture`` is ``"cbow"`` (predict a word from its window: fast, the default) or ``"skipgram"``
    (predict the window from the word: slower, better for rare words). A text progress bar counts sentences
    over the vocabulary pass and all epochs. Introduced in notebooks/02_embeddings.ipynb.
    """
    from gensim.models import Word2Vec
    from tqdm.std import tqdm

    if architecture not in ("cbow", "skipgram"):
        raise ValueError(f"architecture must be 'cbow' or 'skipgram', got {architecture!r}")
    for name, value, least in (("vector_size", vector_size, 1), ("window", window, 1), ("min_count", min_count, 1),
                               ("epochs", epochs, 1), ("negative", negative, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    if isinstance(sentences, (str, bytes)) or not hasattr(sentences, "__len__"):
        raise TypeError("sentences must be a list of token lists (a list, so that it can be read once per epoch)")
    if sentences and isinstance(sentences[0], str):
        raise TypeError("sentences must be token lists, not strings: tokenize them first (tl_core.text)")
    workers = workers or available_cores()
    settings = dict(vector_size=vector_size, window=window, min_count=min_count, epochs=epochs,
                    architecture=architecture, negative=negative, sample=sample, workers=workers, seed=seed)
    model = Word2Vec(vector_size=vector_size, window=window, min_count=min_count, sg=int(architecture == "skipgram"),
                     negative=negative, sample=sample, workers=workers, seed=seed, hashfxn=stable_hash)
    with tqdm(total=len(sentences) * (epochs + 1), desc="word2vec: vocabulary, then epochs", unit=" reviews",
              file=sys.stdout, mininterval=2.0, disable=not progress) as bar:
        corpus = _CountingCorpus(sentences, bar)
        model.build_vocab(corpus)
        started = time.perf_counter()
        effective, raw = model.train(corpus, total_examples=model.corpus_count, epochs=epochs)
        seconds = time.perf_counter() - started
    return Word2VecRun(model.wv, seconds, int(raw), int(effective), settings)


def save_vectors(vectors, path: str | Path) -> Path:
    """Save gensim KeyedVectors as one file, atomically (written to a temporary name, then renamed)."""
    path = Path(path)
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        vectors.save(stream)  # to an open file gensim writes one pickle: no side files to keep in step
    return path


def load_vectors(path: str | Path):
    """KeyedVectors saved by :func:`save_vectors`; a missing file says to run 02_embeddings first."""
    from gensim.models import KeyedVectors

    return KeyedVectors.load(str(require(path, produced_by=PRODUCED_BY)))


@dataclass
class EmbeddingMatrix:
    """Word vectors in the order of a vocabulary: row ``i`` is the vector of ``vocab.itos[i]``.

    ``<pad>`` (row 0) is zeros; a token without a Word2Vec vector (``<unk>`` and out-of-vocabulary words) gets a
    small random row, seeded. ``has_vector[i]`` says which rows come from Word2Vec. Introduced in 02_embeddings.
    """

    weights: np.ndarray  # float32 (len(vocab), dim)
    has_vector: np.ndarray  # bool (len(vocab),)
    vocab_fingerprint: str  # Vocab.fingerprint() of the vocabulary it is aligned to

    @property
    def dim(self) -> int:
        return self.weights.shape[1]

    def vocab_coverage(self) -> float:
        """Share of the vocabulary's words (the specials left out) that have a Word2Vec vector."""
        words = self.has_vector[len(SPECIALS):]
        return float(words.mean()) if len(words) else float("nan")

    def token_coverage(self, vocab: Vocab, token_lists: Iterable[Sequence[str]] | None = None) -> float:
        """Share of running tokens that get a Word2Vec vector: of ``token_lists``, or (None) of the corpus the
        vocabulary was built from. A token outside the vocabulary becomes ``<unk>`` and counts as not covered."""
        self._check_vocab(vocab)
        if token_lists is None:
            counts = np.asarray(vocab.counts, dtype=np.float64)
            return float(counts[self.has_vector].sum() / vocab.corpus_tokens) if vocab.corpus_tokens else float("nan")
        covered = total = 0
        stoi, has_vector = vocab.stoi, self.has_vector
        for tokens in token_lists:
            total += len(tokens)
            covered += sum(1 for token in tokens if token in stoi and has_vector[stoi[token]])
        return covered / total if total else float("nan")

    def save(self, path: str | Path) -> Path:
        """Write weights, has_vector and the vocabulary fingerprint into one ``.npz``, atomically."""
        path = Path(path)
        with atomic_path(path) as temporary, open(temporary, "wb") as stream:  # a handle: numpy adds no suffix
            np.savez(stream, weights=self.weights, has_vector=self.has_vector,
                     vocab_fingerprint=np.array(self.vocab_fingerprint))
        return path

    @classmethod
    def load(cls, path: str | Path, vocab: Vocab | None = None) -> "EmbeddingMatrix":
        """Read a saved matrix; with ``vocab``, check that it was built for that vocabulary."""
        with np.load(require(path, produced_by=PRODUCED_BY), allow_pickle=False) as saved:
            matrix = cls(saved["weights"], saved["has_vector"], str(saved["vocab_fingerprint"]))
        if vocab is not None:
            matrix._check_vocab(vocab, source=path)
        return matrix

    def _check_vocab(self, vocab: Vocab, source: str | Path | None = None) -> None:
        if vocab.fingerprint() != self.vocab_fingerprint or len(vocab) != len(self.weights):
            where = f" ({source})" if source else ""
            raise ValueError(
                f"the embedding matrix{where} was built for another vocabulary ({len(self.weights):,} rows, "
                f"fingerprint {self.vocab_fingerprint}) than this one ({len(vocab):,} tokens, fingerprint "
                f"{vocab.fingerprint()}). Rerun notebooks/{PRODUCED_BY} with the same run_dir after 01_data.")


def embedding_matrix(vectors, vocab: Vocab, *, seed: int = 0) -> EmbeddingMatrix:
    """The embedding matrix of ``vocab`` from Word2Vec ``vectors`` (gensim KeyedVectors).

    Rows without a vector are drawn from N(0, s²), where s is the standard deviation of the Word2Vec vectors, so
    that unknown words look like words to the model (Kim 2014 draws them to match the pretrained variance too);
    ``<pad>`` stays zero. Seeded: the same inputs give the same matrix. Introduced in 02_embeddings.
    """
    key_to_index = vectors.key_to_index
    rows = np.array([key_to_index.get(token, -1) for token in vocab.itos], dtype=np.int64)
    has_vector = rows >= 0
    has_vector[list(range(len(SPECIALS)))] = False  # a corpus token spelt "<unk>" is not the unknown word
    source = np.asarray(vectors.vectors, dtype=np.float32)
    scale = float(source.std()) if source.size else 0.1
    weights = np.random.default_rng(seed).normal(0.0, scale, size=(len(vocab), vectors.vector_size))
    weights = weights.astype(np.float32)
    weights[has_vector] = source[rows[has_vector]]
    weights[PAD_ID] = 0.0
    return EmbeddingMatrix(weights, has_vector, vocab.fingerprint())


def load_embedding_matrix(run_dir: str | Path, vocab: Vocab | None = None) -> EmbeddingMatrix:
    """The matrix notebook 02 saved into ``run_dir`` (checked against ``vocab`` when given)."""
    return EmbeddingMatrix.load(Path(run_dir) / EMBEDDINGS_FILE, vocab)
