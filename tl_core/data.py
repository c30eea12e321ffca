"""The datasets: IMDB (the source task), the target tasks (Amazon domains, SST-2, a user's own file), and splits.

Introduced in ``notebooks/01_data.ipynb``. Locations come from the data path rule (``tl_core.paths``); the layouts
and quirks of each file are described in ``../shared/data/README.md`` on the course machines.

- :func:`load_imdb` — ``train`` / ``test`` / ``unsup`` of the Large Movie Review Dataset (Maas et al. 2011), read
  from ``aclImdb_v1.tar.gz`` in one streaming pass (the three splits of a pass are kept for the rest of the
  process, so asking for a second split costs nothing) or from an extracted ``aclImdb/`` folder.
- :func:`load_target` — ``amazon:books|dvd|electronics|kitchen`` (Blitzer et al. 2007), ``sst2`` (GLUE), or the
  path of a ``.csv`` / ``.tsv`` / ``.jsonl`` file with a ``text`` and a ``label`` column.
- :func:`train_val_split` (stratified, seeded); for targets :func:`split_target` (a fixed stratified test split
  and a labelled pool) and :func:`draw_labels` (``n_labels`` examples of the pool, stratified, per seed).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from .paths import dataset_path
from .text import gc_paused

IMDB_SPLITS = ("train", "test", "unsup")
#: The published sizes of the IMDB splits (the tests check them on the real data).
IMDB_COUNTS = {"train": 25_000, "test": 25_000, "unsup": 50_000}
#: Spec suffix of ``amazon:<domain>`` -> folder in ``sorted_data_acl/``.
AMAZON_DOMAINS = {"books": "books", "dvd": "dvd", "electronics": "electronics", "kitchen": "kitchen_&_housewares"}
TARGET_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl")
#: Share of a target held out as its fixed test split: 400 of an Amazon domain's 2,000 reviews, the 1,600/400
#: protocol of Blitzer et al. (2007), which leaves a pool of 1,600 for the label-efficiency curve.
TARGET_TEST_FRACTION = 0.2
#: The test split of a target does not change with the training seed: it is always drawn with this one.
TEST_SPLIT_SEED = 0

LABEL_NAMES = {0: "negative", 1: "positive"}
_LABEL_WORDS = {"0": 0, "1": 1, "neg": 0, "pos": 1, "negative": 0, "positive": 1}
_IMDB_MEMBER = re.compile(r"(?:\./)?aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt")


class DataFormatError(ValueError):
    """A data file is not what its loader expects; the message names the file, the problem and the fix."""


class CorruptArchiveError(DataFormatError):
    """An archive is truncated or damaged."""


@dataclass
class TextDataset:
    """Texts with their labels and what else the source says about them. Introduced in 01_data.

    ``labels`` is an int64 array (1 = positive, 0 = negative) or None for unlabelled texts (IMDB ``unsup``);
    ``ratings`` the stars (IMDB 1-10, Amazon 1-5) or None; ``titles`` the review titles (Amazon) or None;
    ``fixed_test`` the indices of a published labelled test set that :func:`split_target` uses instead of a
    random one (SST-2: the GLUE dev set).
    """

    name: str  # "imdb:train", "amazon:kitchen", "sst2", or the file name of a user's target
    texts: list[str]
    labels: np.ndarray | None
    ids: list[str]  # unique within the dataset, e.g. "train/pos/123" (IMDB split/folder/file id)
    ratings: np.ndarray | None = None
    titles: list[str] | None = None
    fixed_test: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        count = len(self.texts)
        if len(self.ids) != count:
            raise ValueError(f"{self.name}: {len(self.ids)} ids for {count} texts")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if self.labels.shape != (count,):
                raise ValueError(f"{self.name}: labels of shape {self.labels.shape} for {count} texts")
            if count and not np.isin(self.labels, (0, 1)).all():
                raise ValueError(f"{self.name}: labels must be 0 or 1, got {sorted(set(self.labels.tolist()))}")
        if self.ratings is not None:
            self.ratings = np.asarray(self.ratings, dtype=np.int64)
            if self.ratings.shape != (count,):
                raise ValueError(f"{self.name}: ratings of shape {self.ratings.shape} for {count} texts")
        if self.titles is not None and len(self.titles) != count:
            raise ValueError(f"{self.name}: {len(self.titles)} titles for {count} texts")

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        balance = f", labels {self.label_counts()}" if self.labels is not None else ", unlabelled"
        return f"TextDataset({self.name!r}, {len(self):,} texts{balance})"

    @property
    def is_labelled(self) -> bool:
        return self.labels is not None

    def label_counts(self) -> dict[int, int]:
        """How many negative (0) and positive (1) texts."""
        self._need_labels("label_counts")
        return {label: int((self.labels == label).sum()) for label in (0, 1)}

    def subset(self, indices, name: str | None = None) -> "TextDataset":
        """The texts at ``indices`` (in that order), with everything that belongs to them."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        pick = indices.tolist()
        return TextDataset(
            name=name or self.name,
            texts=[self.texts[i] for i in pick],
            labels=self.labels[indices] if self.labels is not None else None,
            ids=[self.ids[i] for i in pick],
            ratings=self.ratings[indices] if self.ratings is not None else None,
            titles=[self.titles[i] for i in pick] if self.titles is not None else None,
        )

    def _need_labels(self, what: str) -> None:
        if self.labels is None:
            raise ValueError(f"{what} needs labels, but {self.name} is unlabelled")


# --------------------------------------------------------------------------------------------------- IMDB


def load_imdb(split: str, data_dir: str | os.PathLike | None = None) -> TextDataset:
    """One split of IMDB: ``"train"`` (25,000), ``"test"`` (25,000) or ``"unsup"`` (50,000, unlabelled).

    Read from ``aclImdb_v1.tar.gz`` (one streaming pass that keeps all three splits for the rest of the process)
    or from an extracted ``aclImdb/`` folder, wherever the data path rule finds it. Labelled splits list the
    negative reviews, then the positive ones, each by file id; ``ratings`` are the stars in the file names
    (1-4 negative, 7-10 positive); unsup has no labels and no ratings. Introduced in notebooks/01_data.ipynb.
    """
    if split not in IMDB_SPLITS:
        raise ValueError(f"split must be one of {', '.join(IMDB_SPLITS)}; got {split!r}")
    location = dataset_path("imdb", data_dir)
    status = location.stat()
    splits = _read_imdb(str(location.resolve()), status.st_mtime_ns, status.st_size)
    dataset = splits[split]
    # Copies of the lists, so that a caller who edits them does not edit the cached pass.
    return replace(dataset, texts=list(dataset.texts), ids=list(dataset.ids),
                   labels=None if dataset.labels is None else dataset.labels.copy(),
                   ratings=None if dataset.ratings is None else dataset.ratings.copy())


@lru_cache(maxsize=1)
def _read_imdb(location: str, mtime_ns: int, size: int) -> dict[str, TextDataset]:
    """All three splits from the archive or folder at ``location`` (mtime and size key the cache)."""
    path = Path(location)
    with gc_paused():  # 100,000 small tuples and strings, no cycles: the collector would only rescan them
        reviews = _imdb_reviews_from_folder(path) if path.is_dir() else _imdb_reviews_from_archive(path)
        return _imdb_datasets(reviews, path)


def _imdb_reviews_from_archive(path: Path) -> list[tuple[str, str, int, int, str]]:
    # Opened outside the try: a file we may not read is a permission problem, not a damaged archive.
    with open(path, "rb") as stream:
        try:
            return _scan_imdb_archive(stream)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            raise CorruptArchiveError(
                f"{path} is truncated or corrupt ({type(error).__name__}: {error}). Fix: delete it and let tl_core "
                f"download it again (unset TL_DATA_DIR), or point TL_DATA_DIR at a good copy; `sha256sum "
                f"{path.name}` should match the published checksum.") from error


def _scan_imdb_archive(stream) -> list[tuple[str, str, int, int, str]]:
    reviews = []
    # gzip, not tarfile's "r|gz": only gzip checks the CRC of what it unpacked. tarfile also ends quietly at a
    # damaged header, so the stream is read to its end afterwards, where gzip checks CRC and length.
    with gzip.GzipFile(fileobj=stream) as unpacked, tarfile.open(fileobj=unpacked, mode="r|") as archive:
        for member in archive:  # streaming: one pass, no seeks, nothing written to disk
            match = _IMDB_MEMBER.fullmatch(member.name)
            if match is None or not member.isfile():
                continue
            split, folder, file_id, rating = match.groups()
            if folder == "unsup" and split != "train":
                continue
            data = archive.extractfile(member).read()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataFormatError(f"{member.name} in the IMDB archive is not valid UTF-8 ({error}); the "
                                      "archive is damaged or not the IMDB release") from error
            reviews.append((split if folder != "unsup" else "unsup", folder, int(file_id), int(rating), text))
        while unpacked.read(1 << 20):
            pass
    return reviews


def _imdb_reviews_from_folder(path: Path) -> list[tuple[str, str, int, int, str]]:
    reviews = []
    for split, folders in (("train", ("neg", "pos", "unsup")), ("test", ("neg", "pos"))):
        for folder in folders:
            directory = path / split / folder
            if not directory.is_dir():
                continue  # a missing split is reported by _imdb_datasets, with every split's state
            with os.scandir(directory) as entries:
                for entry in entries:
                    match = _IMDB_MEMBER.fullmatch(f"aclImdb/{split}/{folder}/{entry.name}")
                    if match is None:
                        continue
                    try:
                        with open(entry.path, encoding="utf-8") as stream:
                            text = stream.read()
                    except UnicodeDecodeError as error:
                        raise DataFormatError(f"{entry.path} is not valid UTF-8 ({error})") from error
                    reviews.append((split if folder != "unsup" else "unsup", folder, int(match[3]),
                                    int(match[4]), text))
    return reviews


def _imdb_datasets(reviews: list[tuple[str, str, int, int, str]], path: Path) -> dict[str, TextDataset]:
    """Order, check and package the reviews of one pass: negatives then positives, by file id."""
    grouped: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    for split, folder, file_id, rating, text in reviews:
        grouped.setdefault((split, folder), []).append((file_id, rating, text))
    expected = {"train": ("neg", "pos"), "test": ("neg", "pos"), "unsup": ("unsup",)}
    missing = [f"{split}/{folder}" for split, folders in expected.items() for folder in folders
               if not grouped.get((split, folder))]
    if missing:
        found = ", ".join(f"{s}/{f}: {len(v)}" for (s, f), v in sorted(grouped.items())) or "no reviews at all"
        raise DataFormatError(f"{path} does not hold the IMDB layout aclImdb/{{train,test}}/{{pos,neg}}/ID_RATING.txt"
                              f" and aclImdb/train/unsup/ID_0.txt: nothing for {', '.join(missing)} (found {found})")
    datasets = {}
    for split, folders in expected.items():
        texts, labels, ids, ratings = [], [], [], []
        for folder in folders:
            entries = sorted(grouped[(split, folder)])
            file_ids = [file_id for file_id, _, _ in entries]
            if file_ids != list(range(len(file_ids))):
                gaps = sorted(set(range(max(file_ids) + 1)) - set(file_ids))[:5]
                raise DataFormatError(
                    f"{path}: {split}/{folder} has {len(file_ids)} reviews but ids up to {max(file_ids)}; missing "
                    f"ids {gaps}{' ...' if len(gaps) == 5 else ''}: an incomplete copy. Fix: use the whole archive.")
            shown_split = "train" if split == "unsup" else split
            for file_id, rating, text in entries:
                texts.append(text)
                ids.append(f"{shown_split}/{folder}/{file_id}")
                ratings.append(rating)
                labels.append(1 if folder == "pos" else 0)
        unsup = split == "unsup"
        datasets[split] = TextDataset(name=f"imdb:{split}", texts=texts, labels=None if unsup else labels,
                                      ids=ids, ratings=None if unsup else ratings)
    return datasets


@dataclass
class OverlapReport:
    """Exact duplicates within and between two datasets (whole texts compared). Introduced in 01_data."""

    first: str
    second: str
    extra_copies_first: int  # texts of `first` that repeat an earlier text of `first`
    extra_copies_second: int
    shared_texts: int  # distinct texts found in both
    second_in_first: int  # examples of `second` whose text also occurs in `first` (what a leak would touch)
    conflicting_labels: int  # shared texts whose labels differ between the two (0 in IMDB)
    examples: list[str]  # a few shared texts, shortest first


def same_text_key(text: str) -> str:
    """What two texts share when they are "the same text": their letters and digits, lower-cased, in order."""
    return "".join(character for character in text.lower() if character.isalnum())


def overlap_report(first: TextDataset, second: TextDataset, examples: int = 3) -> OverlapReport:
    """Report (not remove) exact duplicate texts: within each dataset and shared by both."""
    seen_first: dict[str, set[int]] = {}
    for index, text in enumerate(first.texts):
        seen_first.setdefault(text, set()).add(int(first.labels[index]) if first.labels is not None else -1)
    second_counts = Counter(second.texts)
    shared = [text for text in second_counts if text in seen_first]
    conflicting = 0
    if first.labels is not None and second.labels is not None:
        second_labels: dict[str, set[int]] = {}
        for index, text in enumerate(second.texts):
            if text in seen_first:
                second_labels.setdefault(text, set()).add(int(second.labels[index]))
        conflicting = sum(1 for text, labels in second_labels.items() if len(labels | seen_first[text]) > 1)
    return OverlapReport(
        first=first.name, second=second.name,
        extra_copies_first=len(first.texts) - len(seen_first),
        extra_copies_second=len(second.texts) - len(second_counts),
        shared_texts=len(shared),
        second_in_first=sum(second_counts[text] for text in shared),
        conflicting_labels=conflicting,
        examples=sorted(shared, key=len)[:examples],
    )


# ------------------------------------------------------------------------------------------------ targets


def load_target(spec: str, data_dir: str | os.PathLike | None = None, *, encoding: str = "utf-8") -> TextDataset:
    """A target task, labelled: ``"amazon:books" | "amazon:dvd" | "amazon:electronics" | "amazon:kitchen"``
    (Blitzer et al. 2007: 1,000 negative + 1,000 positive reviews, with titles and stars), ``"sst2"`` (GLUE
    SST-2: train.tsv and dev.tsv, dev marked as ``fixed_test``), or the path of a ``.csv``, ``.tsv`` or ``.jsonl``
    file with a ``text`` column and a ``label`` column (0/1, negative/positive or neg/pos).

    ``encoding`` applies to a user's file (the datasets are UTF-8). Introduced in notebooks/01_data.ipynb.
    """
    text_spec = check_target_spec(spec)
    if text_spec.startswith("amazon:"):
        domain = text_spec.split(":", 1)[1]
        return _load_amazon(dataset_path("amazon", data_dir) / AMAZON_DOMAINS[domain], text_spec)
    if text_spec == "sst2":
        return _load_sst2(dataset_path("sst2", data_dir))
    return _load_table_target(Path(text_spec), encoding)


def check_target_spec(spec: str | os.PathLike) -> str:
    """Check a target spec without reading any data, and return it normalised: ``amazon:<domain>`` with the
    short domain name, ``sst2``, or a file path made absolute (relative paths are read from the current folder).
    Raises ValueError (unknown spec) or FileNotFoundError (no such file). The runner checks ``target`` with it
    before anything runs. Introduced in notebooks/01_data.ipynb."""
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"target spec must be a str or path, got {type(spec).__name__}")
    text_spec = os.fspath(spec)
    if text_spec.startswith("amazon:"):
        domain = text_spec.split(":", 1)[1]
        short = {folder: name for name, folder in AMAZON_DOMAINS.items()}.get(domain, domain)
        if short not in AMAZON_DOMAINS:
            raise ValueError(f"unknown Amazon domain {domain!r} in {text_spec!r}; domains: "
                             f"{', '.join('amazon:' + name for name in AMAZON_DOMAINS)}")
        return f"amazon:{short}"
    if text_spec == "sst2":
        return text_spec
    path = Path(text_spec).expanduser()
    if path.suffix.lower() not in TARGET_FILE_SUFFIXES:
        raise ValueError(f"unknown target {text_spec!r}: expected one of "
                         f"{', '.join('amazon:' + name for name in AMAZON_DOMAINS)}, sst2, or the path of a "
                         f"{', '.join(TARGET_FILE_SUFFIXES)} file with 'text' and 'label' columns")
    if not path.is_file():
        raise FileNotFoundError(f"target file {path} does not exist (resolved from {text_spec!r} in "
                                f"{Path.cwd()}); give the path of a {path.suffix} file with 'text' and 'label' columns")
    return str(path.resolve())


def _decode(path: Path, data: bytes, encoding: str) -> str:
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataFormatError(
            f"{path} cannot be decoded as {encoding}: byte {data[error.start:error.start + 1]!r} at offset "
            f"{error.start} (line {line}) is not valid {encoding}. Fix: save the file as UTF-8, or pass the "
            f"encoding it was written in, e.g. load_target(..., encoding='latin-1').") from error
    except LookupError as error:
        raise ValueError(f"unknown encoding {encoding!r}") from error


_REVIEW = re.compile(r"<review>(.*?)</review>", re.DOTALL)
_FIELD = re.compile(r"<(\w+)>\n?(.*?)\n?</\1>", re.DOTALL)


def _load_amazon(folder: Path, name: str) -> TextDataset:
    """One domain of the Multi-Domain Sentiment Dataset. The files are pseudo-XML with no root element and bare
    ``&``, so they are read with regular expressions, not an XML parser; text is kept as written (entities such
    as ``&quot;`` are left for the tokenizer's cleaning)."""
    texts, labels, ids, ratings, titles = [], [], [], [], []
    for label, file_name in ((0, "negative.review"), (1, "positive.review")):
        path = folder / file_name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the Amazon folder should hold "
                                    "<domain>/{positive,negative}.review (see README: Data)")
        content = _decode(path, path.read_bytes(), "utf-8")
        blocks = _REVIEW.findall(content)
        if not blocks:
            raise DataFormatError(f"{path} holds no <review>...</review> blocks")
        for number, block in enumerate(blocks):
            fields = dict(_FIELD.findall(block))
            if "review_text" not in fields:
                raise DataFormatError(f"{path}: review {number} has no <review_text> (fields: {sorted(fields)})")
            texts.append(fields["review_text"].strip())
            titles.append(fields.get("title", "").strip())
            try:
                ratings.append(int(float(fields.get("rating", "nan"))))
            except ValueError as error:
                raise DataFormatError(f"{path}: review {number} has rating {fields.get('rating')!r}") from error
            labels.append(label)
            ids.append(f"{file_name.split('.')[0]}/{number}")
    return TextDataset(name=name, texts=texts, labels=labels, ids=ids, ratings=ratings, titles=titles)


def _load_sst2(folder: Path) -> TextDataset:
    """GLUE SST-2: ``train.tsv`` (phrases and sentences) and ``dev.tsv`` (sentences; the fixed test split).
    The files are not quoted CSV (a sentence may contain a quote), so each line is split at its last tab."""
    texts, labels, ids = [], [], []
    first_dev = None
    for part in ("train", "dev"):
        path = folder / f"{part}.tsv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the SST-2 folder should hold train.tsv and dev.tsv")
        lines = _decode(path, path.read_bytes(), "utf-8").splitlines()
        if not lines or lines[0].split("\t") != ["sentence", "label"]:
            raise DataFormatError(f"{path}: expected the header 'sentence<TAB>label', got {lines[:1]!r}")
        if part == "dev":
            first_dev = len(texts)
        for number, line in enumerate(lines[1:], start=2):
            sentence, _, label = line.rpartition("\t")
            if label not in ("0", "1"):
                raise DataFormatError(f"{path} line {number}: label {label!r} is not 0 or 1")
            texts.append(sentence.strip())
            labels.append(int(label))
            ids.append(f"{part}/{number - 2}")
    return TextDataset(name="sst2", texts=texts, labels=labels, ids=ids,
                       fixed_test=np.arange(first_dev, len(texts)))


def _binary_label(value) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str):
        return _LABEL_WORDS.get(value.strip().lower())
    return None


def _load_table_target(path: Path, encoding: str) -> TextDataset:
    """A user's own target: CSV, TSV (both with a header row) or JSON Lines (one object per line)."""
    content = _decode(path, path.read_bytes(), encoding)
    if not content.strip():
        raise DataFormatError(f"{path} is empty; a target file needs a 'text' and a 'label' column and at least "
                              "one row of each class")
    if path.suffix.lower() == ".jsonl":
        rows, columns = _jsonl_rows(path, content)
    else:
        reader = csv.DictReader(io.StringIO(content, newline=""),
                                delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        columns = list(reader.fieldnames or [])
        rows = ((reader.line_num, row) for row in reader)  # the line a row ends on (quoted text may span lines)
    for column in ("text", "label"):
        if column not in columns:
            raise DataFormatError(f"{path} has no column {column!r}; columns found: {columns}. A target file "
                                  "needs a 'text' column and a 'label' column (rename yours).")
    texts, labels, ids, bad_labels = [], [], [], []
    for number, row in rows:
        text, raw_label = row.get("text"), row.get("label")
        if not isinstance(text, str) or not text.strip():
            raise DataFormatError(f"{path} line {number}: the text is missing or empty ({text!r})")
        label = _binary_label(raw_label)
        if label is None:
            bad_labels.append((number, raw_label))
            continue
        ids.append(str(len(texts)))  # the row's position among the data rows
        texts.append(text)
        labels.append(label)
    if bad_labels:
        shown = ", ".join(f"{value!r} (line {number})" for number, value in bad_labels[:5])
        raise DataFormatError(f"{path}: labels must be binary, 0/1, negative/positive or neg/pos; got {shown}"
                              f"{f' and {len(bad_labels) - 5} more' if len(bad_labels) > 5 else ''}")
    if not texts:
        raise DataFormatError(f"{path} has a header ({columns}) but no rows")
    present = set(labels)
    if len(present) < 2:
        raise DataFormatError(f"{path}: every row has label {LABEL_NAMES[present.pop()]}; a binary target needs "
                              "examples of both classes")
    return TextDataset(name=path.name, texts=texts, labels=labels, ids=ids)


def _jsonl_rows(path: Path, content: str) -> tuple[list[tuple[int, dict]], list[str]]:
    rows, columns = [], []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{path} line {number} is not valid JSON ({error.msg}): {line[:80]!r}") from error
        if not isinstance(row, dict):
            raise DataFormatError(f"{path} line {number}: expected a JSON object with 'text' and 'label', "
                                  f"got {type(row).__name__}")
        for key in row:
            if key not in columns:
                columns.append(key)
        if not ("text" in row and "label" in row):
            missing = [key for key in ("text", "label") if key not in row]
            raise DataFormatError(f"{path} line {number} has no {' or '.join(map(repr, missing))} key; keys found: "
                                  f"{list(row)}. Every line needs 'text' and 'label'.")
        rows.append((number, row))
    return rows, columns


# ------------------------------------------------------------------------------------------------- splits


def _check_fraction(name: str, fraction: float) -> None:
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction < 1:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {fraction!r}")


def _stratified_pick(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A random ``fraction`` of each class (rounded, but at least one and not all of a class of two or more)."""
    picked = []
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        count = int(round(len(members) * fraction))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        picked.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(picked))


def train_val_split(dataset: TextDataset, val_fraction: float = 0.1, seed: int = 0
                    ) -> tuple[TextDataset, TextDataset]:
    """Split a labelled dataset into train and validation, stratified by label (each keeps the class balance)
    and seeded (the same seed gives the same split). Both keep the original order. Introduced in 01_data."""
    _check_fraction("val_fraction", val_fraction)
    dataset._need_labels("train_val_split")
    val = _stratified_pick(dataset.labels, val_fraction, np.random.default_rng(seed))
    train = np.setdiff1d(np.arange(len(dataset)), val)
    return dataset.subset(train, f"{dataset.name}/train"), dataset.subset(val, f"{dataset.name}/val")


@dataclass
class TargetSplit:
    """A target task split once: ``test`` (never trained on, never used for choices) and the labelled ``pool``
    that training examples are drawn from (:func:`draw_labels`)."""

    test: TextDataset
    pool: TextDataset


def split_target(dataset: TextDataset, test_fraction: float = TARGET_TEST_FRACTION,
                 seed: int = TEST_SPLIT_SEED) -> TargetSplit:
    """The fixed, stratified test split of a target and the pool of the rest. A dataset with a published test set
    (``fixed_test``, SST-2's dev set) uses it; otherwise ``test_fraction`` of each class is held out, always the
    same for the same data (the seed does not follow the training seed). Introduced in notebooks/01_data.ipynb.
    """
    dataset._need_labels("split_target")
    if dataset.fixed_test is not None:
        test = np.asarray(dataset.fixed_test, dtype=np.int64)
    else:
        _check_fraction("test_fraction", test_fraction)
        test = _stratified_pick(dataset.labels, test_fraction, np.random.default_rng(seed))
    pool = np.setdiff1d(np.arange(len(dataset)), test)
    return TargetSplit(test=dataset.subset(test, f"{dataset.name}/test"),
                       pool=dataset.subset(pool, f"{dataset.name}/pool"))


def label_allocation(counts: dict[int, int], n_labels: int) -> dict[int, int]:
    """How many of ``n_labels`` examples to take from each class: proportional to ``counts``, largest remainder
    rounding (so the numbers sum to ``n_labels``), and never more than a class has."""
    total = sum(counts.values())
    quotas = {label: n_labels * count / total for label, count in counts.items()}
    allocation = {label: int(quota) for label, quota in quotas.items()}
    for label in sorted(quotas, key=lambda lab: (-(quotas[lab] - allocation[lab]), lab)):
        if sum(allocation.values()) == n_labels:
            break
        allocation[label] += 1
    return allocation


def draw_labels(pool: TextDataset, n_labels: int, seed: int) -> TextDataset:
    """``n_labels`` examples of a target's pool, stratified (the pool's class balance) and seeded: the same seed
    gives the same subset, and for one seed a smaller draw is contained in a larger one (each class is taken in
    one seeded order), so a label-efficiency curve adds examples instead of swapping them. The pool never holds
    a test example (:func:`split_target`). Introduced in notebooks/01_data.ipynb."""
    pool._need_labels("draw_labels")
    if not isinstance(n_labels, int) or isinstance(n_labels, bool) or not 1 <= n_labels <= len(pool):
        raise ValueError(f"n_labels must be an int from 1 to the pool size {len(pool)} ({pool.name}); "
                         f"got {n_labels!r}")
    allocation = label_allocation(pool.label_counts(), n_labels)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(pool.labels == label))[:allocation[label]] for label in (0, 1)]
    name = f"{pool.name.removesuffix('/pool')}/n{n_labels}-seed{seed}"
    return pool.subset(np.sort(np.concatenate(chosen)), name)
