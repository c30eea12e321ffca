"""Text to numbers: the course's one tokenizer, the vocabulary, and padded, length-bucketed batches.

Introduced in ``notebooks/01_data.ipynb``. Everything that turns a review into token ids imports it from here:
Word2Vec (``tl_core.embeddings``), the source model and the transfer notebooks.

Batches, as every model of the course receives them::

    token_ids  LongTensor (B, T), batch first, padded with PAD_ID (0) after each review's last token
    lengths    LongTensor (B,), the number of real tokens of each review (>= 1)
    labels     FloatTensor (B,), 1.0 positive, 0.0 negative (NaN for unlabelled texts)
"""

from __future__ import annotations

import gc
import hashlib
import html
import math
import re
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from .artifacts import VOCAB_FILE, CorruptArtifactError, read_json, require, write_json  # noqa: F401 (text.VOCAB_FILE)

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
PAD_ID, UNK_ID, EOS_ID = 0, 1, 2
#: The tokens every vocabulary starts with: padding, the unknown word, and the end of a text (the language model
#: of notebooks/04_language_model.ipynb reads reviews as one stream, each ending with <eos>).
SPECIALS = (PAD, UNK, EOS)

VOCAB_FORMAT = "tl_core.text.Vocab/1"

#: Vocabulary defaults (notebooks/01_data.ipynb measures them; README "Data and embeddings" says why):
#: built from IMDB train + unsup (never test), words seen at least 5 times (Word2Vec's min_count too, so every
#: word of the vocabulary gets a trained vector), at most 50,000 entries including <pad> and <unk>.
DEFAULT_MIN_FREQ = 5
DEFAULT_MAX_SIZE = 50_000

# IMDB marks paragraphs with <br /> (29,200 of the 50,000 labelled reviews); some Amazon reviews carry HTML
# entities (&quot;, &#45;). Curly apostrophes become straight ones so that "don’t" and "don't" are one word.
_LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
#: A token is a run of letters/digits, possibly joined by apostrophes (don't, rock'n'roll), or one punctuation
#: mark or symbol (! ? . , - / emoji). Measured faster than finer patterns at the same token counts (01_data).
TOKEN_PATTERN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def clean_text(text: str) -> str:
    """The cleaning half of :func:`tokenize`: HTML entities unescaped, ``<br />`` tags turned into spaces, curly
    apostrophes made straight. Case is kept, so the result is still good to read. Introduced in 01_data."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__} ({text!r:.60})")
    if "&" in text:  # tests first: most reviews need none of this, and the tests are far cheaper than the work
        text = html.unescape(text)
    if "<" in text:
        text = _LINE_BREAK.sub(" ", text)
    if "\u2019" in text or "\u2018" in text or "\u02bc" in text:
        text = text.translate(_APOSTROPHES)
    return text


def tokenize(text: str) -> list[str]:
    """The course's one tokenizer: clean (:func:`clean_text`), lowercase, split into words and punctuation.

    >>> tokenize("I didn&#39;t like it.<br /><br />7/10 -- “meh”…")
    ['i', "didn't", 'like', 'it', '.', '7', '/', '10', '-', '-', '“', 'meh', '”', '…']

    Words keep inner apostrophes (``don't``, ``it's``); an apostrophe that opens or closes a quote is a token of
    its own. Each punctuation mark is one token, so ``!!!`` is three ``!`` (how loud a review is stays visible).
    Letters of any script count (``café``, ``naïve``). Introduced in notebooks/01_data.ipynb.
    """
    return TOKEN_PATTERN.findall(clean_text(text).lower())


def tokenize_all(texts: Iterable[str], *, progress: bool = False, desc: str = "tokenizing") -> list[list[str]]:
    """:func:`tokenize` over many texts, optionally with a text progress bar. Introduced in 01_data."""
    if progress:
        from tqdm.std import tqdm

        texts = tqdm(texts, desc=desc, unit=" texts", file=sys.stdout, mininterval=1.0,
                     total=len(texts) if hasattr(texts, "__len__") else None)
    with gc_paused():
        return [tokenize(text) for text in texts]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building many containers that hold no cycles (token lists).

    Left on, it rescans the growing pile of lists again and again: about 15 % of the time of tokenizing IMDB
    (benchmarks/data.py). Reference counting still frees everything as usual."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def tokens_fingerprint(tokens: Sequence[str]) -> str:
    """A short hash of a vocabulary's token list (``Vocab.fingerprint``; checkpoints record it too)."""
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()[:16]


class Vocab:
    """Token <-> id, with ``<pad>`` = 0, ``<unk>`` = 1 and ``<eos>`` = 2; the other tokens by falling corpus frequency (ties
    alphabetically, so a corpus always gives the same vocabulary). Introduced in notebooks/01_data.ipynb.

    ``counts[i]`` is how often token ``i`` occurred in the corpus the vocabulary was built from (0 for the
    specials) and ``corpus_tokens`` is the size of that corpus, so coverage can be computed without it.
    """

    def __init__(self, tokens: Sequence[str], counts: Sequence[int] | None = None, *, corpus_tokens: int = 0,
                 min_freq: int | None = None, max_size: int | None = None):
        tokens = list(tokens)
        if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a Vocab's first tokens must be {', '.join(map(repr, SPECIALS))} (ids 0 to "
                             f"{len(SPECIALS) - 1}); got {tokens[:len(SPECIALS)]!r}")
        self.itos: list[str] = tokens
        self.stoi: dict[str, int] = {token: index for index, token in enumerate(tokens)}
        if len(self.stoi) != len(tokens):
            repeated = [token for token, n in Counter(tokens).items() if n > 1][:5]
            raise ValueError(f"a Vocab's tokens must be distinct; repeated: {repeated!r}")
        self.counts: list[int] = list(counts) if counts is not None else [0] * len(tokens)
        if len(self.counts) != len(tokens):
            raise ValueError(f"counts has {len(self.counts)} entries for {len(tokens)} tokens")
        self.corpus_tokens = int(corpus_tokens)
        self.min_freq = min_freq
        self.max_size = max_size

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_freq: int = DEFAULT_MIN_FREQ,
              max_size: int | None = DEFAULT_MAX_SIZE) -> "Vocab":
        """Count the tokens of a corpus (one token list per text) and keep those seen at least ``min_freq``
        times, the most frequent first, at most ``max_size`` entries in all (the specials included)."""
        if not isinstance(min_freq, int) or isinstance(min_freq, bool) or min_freq < 1:
            raise ValueError(f"min_freq must be an int >= 1, got {min_freq!r}")
        if max_size is not None and (not isinstance(max_size, int) or isinstance(max_size, bool)
                                     or max_size < len(SPECIALS)):
            raise ValueError(f"max_size must be None or an int >= {len(SPECIALS)} (it counts the specials "
                             f"{', '.join(SPECIALS)}), got {max_size!r}")
        counter: Counter[str] = Counter()
        for tokens in token_lists:
            if isinstance(tokens, str):
                raise TypeError("Vocab.build takes token lists (one per text), got a str: tokenize it first")
            counter.update(tokens)
        corpus_tokens = sum(counter.values())
        for special in SPECIALS:
            counter.pop(special, None)
        kept = sorted((item for item in counter.items() if item[1] >= min_freq), key=lambda kv: (-kv[1], kv[0]))
        if max_size is not None:
            kept = kept[:max_size - len(SPECIALS)]
        return cls([*SPECIALS, *(token for token, _ in kept)], [0] * len(SPECIALS) + [count for _, count in kept],
                   corpus_tokens=corpus_tokens, min_freq=min_freq, max_size=max_size)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __getitem__(self, token: str) -> int:
        """The id of ``token``; :data:`UNK_ID` for a token the vocabulary does not know."""
        return self.stoi.get(token, UNK_ID)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab({len(self):,} tokens, min_freq={self.min_freq}, max_size={self.max_size})"

    def encode(self, tokens: Sequence[str]) -> list[int]:
        if isinstance(tokens, str):
            raise TypeError("Vocab.encode takes a token list, got a str: use tokenize(text) first")
        get = self.stoi.get
        return [get(token, UNK_ID) for token in tokens]

    def decode(self, ids: Iterable[int], *, skip_pad: bool = True) -> list[str]:
        """Tokens of ``ids`` (a list, array or tensor); ``<pad>`` left out unless ``skip_pad`` is false."""
        tokens = []
        for index in (ids.tolist() if hasattr(ids, "tolist") else ids):
            if not 0 <= index < len(self.itos):
                raise IndexError(f"token id {index} is outside this vocabulary (0..{len(self.itos) - 1})")
            if index != PAD_ID or not skip_pad:
                tokens.append(self.itos[index])
        return tokens

    def coverage(self, token_lists: Iterable[Sequence[str]]) -> float:
        """Share of the tokens of ``token_lists`` that the vocabulary knows (that do not become ``<unk>``)."""
        known = total = 0
        stoi = self.stoi
        for tokens in token_lists:
            total += len(tokens)
            known += sum(1 for token in tokens if token in stoi)
        return known / total if total else float("nan")

    def fingerprint(self) -> str:
        """A short hash of the token list: artifacts built for one vocabulary record it and check it on load."""
        return tokens_fingerprint(self.itos)

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON, atomically (a reader never sees half a file)."""
        return write_json(path, {"format": VOCAB_FORMAT, "min_freq": self.min_freq, "max_size": self.max_size,
                                 "corpus_tokens": self.corpus_tokens, "fingerprint": self.fingerprint(),
                                 "tokens": self.itos, "counts": self.counts})

    @classmethod
    def load(cls, path: str | Path, produced_by: str = "01_data.ipynb") -> "Vocab":
        """Read a vocabulary saved by :meth:`save`; a missing file says which notebook writes it."""
        data = read_json(require(path, produced_by=produced_by))
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT:
            raise CorruptArtifactError(f"{path} is not a vocabulary saved by tl_core.text.Vocab.save "
                                       f"(expected format {VOCAB_FORMAT!r})")
        missing = [key for key in ("tokens", "counts", "corpus_tokens", "min_freq", "max_size") if key not in data]
        if missing:
            raise CorruptArtifactError(f"{path} lacks {', '.join(missing)}: not a whole vocabulary. Fix: run "
                                       f"{produced_by} again with the same run_dir.")
        return cls(data["tokens"], data["counts"], corpus_tokens=data["corpus_tokens"],
                   min_freq=data["min_freq"], max_size=data["max_size"])


class Encoded(NamedTuple):
    """Texts as token ids: one int64 array per text (already truncated) and their lengths."""

    ids: list[np.ndarray]
    lengths: np.ndarray

    def __len__(self) -> int:  # the number of texts (not of fields)
        return len(self.ids)

    def take(self, indices: Sequence[int] | np.ndarray) -> "Encoded":
        """The texts at ``indices``, in that order (a sample, a subset)."""
        indices = np.asarray(indices, dtype=np.int64)
        return Encoded([self.ids[i] for i in indices], self.lengths[indices])


def numericalize(texts: Iterable[str | Sequence[str]], vocab: Vocab, max_len: int | None, *,
                 keep: str = "first") -> Encoded:
    """Token ids of each text (a str is tokenized first; a token list is used as it is), truncated to
    ``max_len`` tokens (``keep="first"``: the opening of a review, ``"last"``: its end; None: no limit).

    A text without tokens becomes one ``<unk>`` so that every length is at least 1 (packed LSTMs need that).
    Introduced in notebooks/01_data.ipynb.
    """
    if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1):
        raise ValueError(f"max_len must be None or an int >= 1, got {max_len!r}")
    if keep not in ("first", "last"):
        raise ValueError(f"keep must be 'first' or 'last', got {keep!r}")
    stoi = vocab.stoi
    ids = []
    for number, text in enumerate(texts):
        if isinstance(text, str):
            tokens = tokenize(text)
        elif isinstance(text, (list, tuple)):
            tokens = text
        else:
            raise TypeError(f"numericalize takes texts (str) or token lists; item {number} is "
                            f"{type(text).__name__} ({text!r:.60})")
        if max_len is not None and len(tokens) > max_len:
            tokens = tokens[:max_len] if keep == "first" else tokens[-max_len:]
        ids.append(np.fromiter((stoi.get(token, UNK_ID) for token in tokens), dtype=np.int64, count=len(tokens))
                   if tokens else np.array([UNK_ID], dtype=np.int64))
    return Encoded(ids, np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids)))


class EncodedDataset:
    """A map-style dataset for ``torch.utils.data.DataLoader``: item ``i`` is (token ids, label).

    ``labels`` may be None (unlabelled texts): the label is then NaN. Introduced in 01_data.
    """

    def __init__(self, encoded: Encoded, labels: Sequence[int] | np.ndarray | None = None):
        self.encoded = encoded
        if labels is not None:
            labels = np.asarray(labels, dtype=np.float32)
            if labels.shape != (len(encoded),):
                raise ValueError(f"labels has shape {labels.shape}, expected ({len(encoded)},): one per text")
            bad = np.flatnonzero((labels != 0) & (labels != 1))
            if len(bad):  # BCE would train on a 2 or a -1 without a word; NaN marks unlabelled: pass labels=None
                shown = ", ".join(f"{labels[i]:g} (text {i})" for i in bad[:5])
                raise ValueError(f"labels must be 0 or 1 (or labels=None for unlabelled texts); got {shown}"
                                 f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}")
        self.labels = labels

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> tuple[np.ndarray, float]:
        return self.encoded.ids[index], (float(self.labels[index]) if self.labels is not None else math.nan)


def pad_collate(batch: Sequence[tuple[np.ndarray, float]]):
    """DataLoader ``collate_fn``: pad a batch of (ids, label) to its longest text. Returns ``token_ids``
    LongTensor (B, T) padded with PAD_ID at the end, ``lengths`` LongTensor (B,), ``labels`` FloatTensor (B,)."""
    import torch

    lengths = torch.tensor([len(ids) for ids, _ in batch], dtype=torch.long)
    token_ids = torch.full((len(batch), int(lengths.max()) if len(batch) else 0), PAD_ID, dtype=torch.long)
    for row, (ids, _) in enumerate(batch):
        token_ids[row, :len(ids)] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    labels = torch.tensor([label for _, label in batch], dtype=torch.float32)
    return token_ids, lengths, labels


class BucketBatchSampler:
    """Batches of indices of texts of similar length, so that a padded batch wastes little padding.

    With ``shuffle`` (training): each pass draws a random order, cuts it into chunks of ``batch_size *
    chunk_batches`` texts, sorts each chunk by length, cuts the chunk into batches and shuffles the batches. Each
    batch is random and every epoch different (pass ``k`` is seeded by ``(seed, k)``, so runs repeat), yet its
    texts have nearly equal lengths. Without ``shuffle`` (evaluation): all texts sorted by length, always the same
    batches; ``list(sampler)`` says which texts each batch holds. Use it as a DataLoader's ``batch_sampler``.
    Introduced in notebooks/01_data.ipynb.
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray, batch_size: int, *, shuffle: bool = True,
                 chunk_batches: int = 50, drop_last: bool = False, seed: int = 0):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(chunk_batches, int) or chunk_batches < 1:
            raise ValueError(f"chunk_batches must be an int >= 1, got {chunk_batches!r}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1:
            raise ValueError(f"lengths must be one number per text, got shape {self.lengths.shape}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.chunk_batches = chunk_batches
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass the ``epoch``-th (passes otherwise count up by themselves)."""
        self.epoch = epoch

    def __len__(self) -> int:
        count = len(self.lengths)
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        else:
            rng = np.random.default_rng([self.seed, self.epoch])
            self.epoch += 1
            order = rng.permutation(len(self.lengths))
            chunk = self.batch_size * self.chunk_batches
            batches = []
            for start in range(0, len(order), chunk):
                members = order[start:start + chunk]
                members = members[np.argsort(self.lengths[members], kind="stable")]
                batches.extend(members[first:first + self.batch_size]
                               for first in range(0, len(members), self.batch_size))
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for batch in batches:
            if self.drop_last and len(batch) < self.batch_size:
                continue
            yield batch.tolist()


def padding_share(batches: Iterable[Sequence[int]], lengths: Sequence[int] | np.ndarray) -> float:
    """Share of the positions of padded batches that are padding (0: none wasted)."""
    lengths = np.asarray(lengths)
    padded = real = 0
    for batch in batches:
        batch_lengths = lengths[np.asarray(batch)]
        padded += int(batch_lengths.max()) * len(batch_lengths)
        real += int(batch_lengths.sum())
    return 1.0 - real / padded if padded else 0.0


def make_loader(encoded: Encoded, labels: Sequence[int] | np.ndarray | None, batch_size: int, *,
                shuffle: bool, seed: int = 0, chunk_batches: int = 50, drop_last: bool = False):
    """A DataLoader of length-bucketed, padded batches ``(token_ids, lengths, labels)`` (see the module doc).
    Introduced in notebooks/01_data.ipynb."""
    from torch.utils.data import DataLoader

    sampler = BucketBatchSampler(encoded.lengths, batch_size, shuffle=shuffle, chunk_batches=chunk_batches,
                                 drop_last=drop_last, seed=seed)
    return DataLoader(EncodedDataset(encoded, labels), batch_sampler=sampler, collate_fn=pad_collate)
