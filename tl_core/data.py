"""The datasets: IMDB (the source task), the target tasks (Amazon domains, SST-2, a user's own file), and splits.

Introduced in ``notebooks/01_data.ipynb``. Locations come from the data path rule (``tl_core.paths``); the layouts
and quirks of each file are described in ``../shared/data/README.md`` on the course machines.

- :func:`load_imdb` — ``train`` / ``test`` / ``unsup`` of the Large Movie Review Dataset (Maas et al. 2011), read
  from ``aclImdb_v1.tar.gz`` in one streaming pass (the three splits of a pass are kept for the rest of the
  process, so asking for a second split costs nothing) or from an extracted ``aclImdb/`` folder.
- :func:`load_target` — ``amazon:books|dvd|electronics|kitchen`` (Blitzer et al. 2007), ``sst2`` (GLUE),
  ``fdu:DOMAIN`` (ten FDU-MTL domains, Liu et al. 2017), or the path of a ``.csv`` / ``.tsv`` / ``.jsonl`` file
  with a ``text`` and a ``label`` column; :func:`load_unlabelled` — unlabelled text of a target domain.
- :func:`same_text_key` — the one rule for "the same text": :func:`overlap_report` and :func:`drop_test_texts`
  (no test review reaches training through unlabelled text) use it.
- :func:`train_val_split` (stratified, seeded); for targets :func:`split_target` (a fixed stratified test split
  and a labelled pool) and :func:`draw_labels` (``n_labels`` examples of the pool, stratified, per seed).
"""

from __future__ import annotations

import gzip
import os
import re
import tarfile
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from .dataset import LABEL_NAMES, DataFormatError, TextDataset  # noqa: F401 (data.TextDataset, as notebooks use it)
from .paths import dataset_path
from .tables import TARGET_FILE_SUFFIXES, UNLABELLED_FILE_SUFFIXES, load_table_target, read_texts
from .target_files import FDU_DOMAINS, load_amazon, load_fdu, load_fdu_unlabelled, load_sst2
from .text import clean_text, gc_paused

IMDB_SPLITS = ("train", "test", "unsup")
#: The published sizes of the IMDB splits (the tests check them on the real data).
IMDB_COUNTS = {"train": 25_000, "test": 25_000, "unsup": 50_000}
#: Spec suffix of ``amazon:<domain>`` -> folder in ``sorted_data_acl/``.
AMAZON_DOMAINS = {"books": "books", "dvd": "dvd", "electronics": "electronics", "kitchen": "kitchen_&_housewares"}
#: Spec suffix of ``amazon:<domain>`` -> the FDU-MTL domain of the same product type (its unlabelled text).
AMAZON_TO_FDU = {"books": "books", "dvd": "dvd", "electronics": "electronics", "kitchen": "kitchen_housewares"}
#: Share of a target held out as its fixed test split: 400 of an Amazon domain's 2,000 reviews, the 1,600/400
#: protocol of Blitzer et al. (2007), which leaves a pool of 1,600 for the label-efficiency curve (less the few
#: reviews that repeat a test review: split_target leaves them out of the pool).
TARGET_TEST_FRACTION = 0.2
#: The test split of a target does not change with the training seed: it is always drawn with this one.
TEST_SPLIT_SEED = 0

_IMDB_MEMBER = re.compile(r"(?:\./)?aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt")


class CorruptArchiveError(DataFormatError):
    """An archive is truncated or damaged."""


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


# ------------------------------------------------------------------------------------- the same text


def same_text_key(text: str) -> str:
    """The course's one rule for "the same text": two texts are the same when their keys are equal. The key keeps
    only letters and digits, case-folded, after the tokenizer's cleaning (HTML entities, ``<br />``) and Unicode
    NFKC normalisation, so case, spacing, punctuation and its spacing, and PTB tokenisation (FDU-MTL's ``do n't``
    against a raw ``Don't``) do not matter. A text without letters or digits keys on itself, spaces collapsed.
    Used by :func:`overlap_report`, :func:`drop_test_texts` and transfer's related data. Introduced in 01_data."""
    cleaned = unicodedata.normalize("NFKC", clean_text(text)).casefold()
    return _NOT_LETTER_OR_DIGIT.sub("", cleaned) or " ".join(cleaned.split())


_NOT_LETTER_OR_DIGIT = re.compile(r"[\W_]+")


@dataclass
class OverlapReport:
    """Duplicates within and between two datasets, by :func:`same_text_key`. Introduced in 01_data."""

    first: str
    second: str
    extra_copies_first: int  # texts of `first` that repeat an earlier text of `first`
    extra_copies_second: int
    shared_texts: int  # distinct texts found in both
    second_in_first: int  # examples of `second` whose text also occurs in `first` (what a leak would touch)
    conflicting_labels: int  # shared texts whose labels differ between the two (0 in IMDB)
    examples: list[str]  # a few shared texts (as `second` writes them), shortest first


def overlap_report(first: TextDataset, second: TextDataset, examples: int = 3) -> OverlapReport:
    """Report (not remove) duplicate texts, the same by :func:`same_text_key`: within each dataset and shared by
    both. Introduced in notebooks/01_data.ipynb."""
    labels_first: dict[str, set[int]] = {}
    for index, text in enumerate(first.texts):
        labels_first.setdefault(same_text_key(text), set()).add(
            int(first.labels[index]) if first.labels is not None else -1)
    second_keys = [same_text_key(text) for text in second.texts]
    second_counts = Counter(second_keys)
    shared = [key for key in second_counts if key in labels_first]
    written = {key: text for key, text in zip(second_keys, second.texts) if key in labels_first}
    conflicting = 0
    if first.labels is not None and second.labels is not None:
        labels_second: dict[str, set[int]] = {}
        for key, label in zip(second_keys, second.labels.tolist()):
            if key in labels_first:
                labels_second.setdefault(key, set()).add(int(label))
        conflicting = sum(1 for key, labels in labels_second.items() if len(labels | labels_first[key]) > 1)
    return OverlapReport(
        first=first.name, second=second.name,
        extra_copies_first=len(first.texts) - len(labels_first),
        extra_copies_second=len(second.texts) - len(second_counts),
        shared_texts=len(shared),
        second_in_first=sum(second_counts[key] for key in shared),
        conflicting_labels=conflicting,
        examples=sorted((written[key] for key in shared), key=len)[:examples],
    )


def copies_of_test(texts: list[str], test_texts: list[str]) -> np.ndarray:
    """Which of ``texts`` are the same (:func:`same_text_key`) as one of ``test_texts``: a boolean mask, for
    leaving them out of anything that trains (IMDB's unlabelled reviews hold 270 copies of test reviews).
    Introduced in notebooks/01_data.ipynb."""
    test_keys = {same_text_key(text) for text in test_texts}
    return np.array([same_text_key(text) in test_keys for text in texts], dtype=bool)


def drop_test_texts(texts: list[str], test_texts: list[str]) -> tuple[list[str], int]:
    """``texts`` without every one that is the same (:func:`same_text_key`) as one of ``test_texts``, and how many
    were dropped. Unlabelled text must pass through it before it trains anything evaluated on that test split:
    FDU-MTL's unlabelled files hold copies of test reviews (kitchen 13, magazines 144). Introduced in
    notebooks/07_fine_tuning.ipynb."""
    copies = copies_of_test(texts, test_texts)
    return [text for text, copy in zip(texts, copies) if not copy], int(copies.sum())


# ------------------------------------------------------------------------------------------------ targets


def load_target(spec: str, data_dir: str | os.PathLike | None = None, *, encoding: str = "utf-8") -> TextDataset:
    """A target task, labelled:

    - ``"amazon:books" | "amazon:dvd" | "amazon:electronics" | "amazon:kitchen"`` (Blitzer et al. 2007: 1,000
      negative + 1,000 positive reviews, with titles and stars);
    - ``"sst2"`` (GLUE SST-2: train.tsv and dev.tsv, dev marked as ``fixed_test``);
    - ``"fdu:DOMAIN"``, one of the ten FDU-MTL domains (Liu et al. 2017; ``FDU_DOMAINS``): the train file is the
      pool and the test file the ``fixed_test`` split; PTB clitics are joined back (``do n't`` -> ``don't``);
      train reviews that are the same text as a test review stay in the dataset, and :func:`split_target` leaves
      them out of the pool (magazines: 186 train reviews repeat 163 of its 400 test reviews); a
      line that is not valid UTF-8 is decoded with replacement characters (``undecodable_lines``, and a warning);
    - or the path of a ``.csv``, ``.tsv`` or ``.jsonl`` file with a ``text`` column and a ``label`` column (0/1,
      negative/positive or neg/pos); see ``tl_core.tables`` for how each format is read (CSV quoting honoured
      strictly, TSV read without quoting).

    ``encoding`` applies to a user's file (the datasets are UTF-8). Introduced in notebooks/01_data.ipynb.
    """
    text_spec = check_target_spec(spec)
    kind, _, name = text_spec.partition(":")
    if kind == "amazon":
        return load_amazon(dataset_path("amazon", data_dir) / AMAZON_DOMAINS[name], text_spec)
    if kind == "fdu":
        return load_fdu(dataset_path("fdu", data_dir), name)
    if text_spec == "sst2":
        return load_sst2(dataset_path("sst2", data_dir))
    return load_table_target(Path(text_spec), encoding)


def load_unlabelled(spec: str, data_dir: str | os.PathLike | None = None, *, encoding: str = "utf-8") -> list[str]:
    """Unlabelled text of a target domain, as a list of texts:

    - ``"fdu:DOMAIN"``: the domain's 2,000 unlabelled reviews (``DOMAIN.task.unlabel``, raw text);
    - ``"amazon:books|dvd|electronics|kitchen"``: the unlabelled reviews of the same product type in FDU-MTL
      (books, dvd, electronics, kitchen_housewares), drawn from Blitzer's unlabelled files;
    - or the path of a ``.txt`` file (one text per line) or a ``.csv`` / ``.tsv`` / ``.jsonl`` file with a
      ``text`` column.

    Some of these texts are copies of the target's test reviews: pass them through :func:`drop_test_texts` before
    they train anything. Introduced in notebooks/07_fine_tuning.ipynb.
    """
    text_spec = check_unlabelled_spec(spec)
    kind, _, name = text_spec.partition(":")
    if kind in ("fdu", "amazon"):
        return load_fdu_unlabelled(dataset_path("fdu", data_dir), AMAZON_TO_FDU.get(name, name))
    return read_texts(text_spec, encoding)


def check_unlabelled_spec(spec: str | os.PathLike) -> str:
    """Check an unlabelled-text spec without reading it (as :func:`check_target_spec`): ``fdu:DOMAIN``, an Amazon
    domain that FDU-MTL has unlabelled text for, or an existing ``.txt`` / ``.csv`` / ``.tsv`` / ``.jsonl`` file
    (made absolute). Introduced in notebooks/07_fine_tuning.ipynb."""
    text_spec = _spec_text(spec, "an unlabelled-text spec")
    if text_spec.startswith(("amazon:", "fdu:")) or text_spec == "sst2":
        canonical = check_target_spec(text_spec)
        if canonical == "sst2":
            raise ValueError("sst2 has no unlabelled text; give a .txt, .csv, .tsv or .jsonl file of your own")
        return canonical
    return _users_file(text_spec, UNLABELLED_FILE_SUFFIXES, "unlabelled text file", (
        f"unknown unlabelled text {text_spec!r}: expected fdu:DOMAIN, amazon:DOMAIN or the path of a "
        f"{', '.join(UNLABELLED_FILE_SUFFIXES)} file (.txt: one text per line; the others: a 'text' column)"))


def check_target_spec(spec: str | os.PathLike) -> str:
    """Check a target spec without reading any data, and return it normalised: ``amazon:<domain>`` with the
    short domain name, ``fdu:<domain>``, ``sst2``, or a file path made absolute (relative paths are read from the
    current folder). Raises ValueError (unknown spec) or FileNotFoundError (no such file). The runner checks
    ``target`` with it before anything runs. Introduced in notebooks/01_data.ipynb."""
    text_spec = _spec_text(spec, "target spec")
    if text_spec.startswith("amazon:"):
        domain = text_spec.split(":", 1)[1]
        short = {folder: name for name, folder in AMAZON_DOMAINS.items()}.get(domain, domain)
        if short not in AMAZON_DOMAINS:
            raise ValueError(f"unknown Amazon domain {domain!r} in {text_spec!r}; domains: "
                             f"{', '.join('amazon:' + name for name in AMAZON_DOMAINS)}")
        return f"amazon:{short}"
    if text_spec.startswith("fdu:"):
        domain = text_spec.split(":", 1)[1]
        if domain not in FDU_DOMAINS:
            raise ValueError(f"unknown FDU-MTL domain {domain!r} in {text_spec!r}; domains: "
                             f"{', '.join('fdu:' + name for name in FDU_DOMAINS)}")
        return text_spec
    if text_spec == "sst2":
        return text_spec
    return _users_file(text_spec, TARGET_FILE_SUFFIXES, "target file", (
        f"unknown target {text_spec!r}: expected one of {', '.join('amazon:' + name for name in AMAZON_DOMAINS)}, "
        f"fdu:DOMAIN (DOMAIN one of {', '.join(FDU_DOMAINS)}), sst2, or the path of a "
        f"{', '.join(TARGET_FILE_SUFFIXES)} file with 'text' and 'label' columns"),
        "; give the path of a file with 'text' and 'label' columns")


def _spec_text(spec, what: str) -> str:
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"{what} must be a str or path, got {type(spec).__name__}")
    return os.fspath(spec)


def _users_file(text_spec: str, suffixes: tuple[str, ...], kind: str, unknown: str, needs: str = "") -> str:
    """A user's file made absolute (relative paths are read from the current folder); ValueError (``unknown``) for
    another suffix, FileNotFoundError for a file that is not there."""
    path = Path(text_spec).expanduser()
    if path.suffix.lower() not in suffixes:
        raise ValueError(unknown)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} {path} does not exist (resolved from {text_spec!r} in {Path.cwd()}){needs}")
    return str(path.resolve())


def same_dataset(spec: str, other: str) -> bool:
    """Whether two canonical target specs name the same reviews: equal, or an Amazon domain and its FDU-MTL
    counterpart (FDU-MTL's books, dvd, electronics and kitchen come from Blitzer's files)."""
    return spec == other or {spec, other} in ({f"amazon:{a}", f"fdu:{f}"} for a, f in AMAZON_TO_FDU.items())


def check_related_specs(target_spec: str, specs) -> list[str]:
    """``specs`` as canonical dataset specs, refused (ValueError) if empty or if they hold the target itself or its
    counterpart (:func:`same_dataset`): the intermediate stage must never train on the target's labels. Used by
    ``transfer.related_data`` and, through ``tl_core.parameters``, by the runner before anything runs.
    Introduced in notebooks/06_fine_tuning.ipynb."""
    specs = [check_target_spec(spec) for spec in specs]
    if not specs:
        raise ValueError("no related datasets given for the intermediate stage")
    target = check_target_spec(target_spec)
    if any(same_dataset(spec, target) for spec in specs):
        raise ValueError(f"the target {target_spec!r} cannot be its own related data: the intermediate stage must "
                         "not train on the target's labels; name other datasets, or leave them unset (the Amazon "
                         "domains other than the target's)")
    return specs


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
    dropped_as_test: int = 0  # examples left out of the pool because a test example has the same text


def split_target(dataset: TextDataset, test_fraction: float = TARGET_TEST_FRACTION,
                 seed: int = TEST_SPLIT_SEED) -> TargetSplit:
    """The fixed, stratified test split of a target and the pool of the rest. A dataset with a published test set
    (``fixed_test``, SST-2's dev set) uses it; otherwise ``test_fraction`` of each class is held out, always the
    same for the same data (the seed does not follow the training seed). An example whose text is the same as a
    test example's (:func:`same_text_key`) is left out of the pool, so it can never be drawn for training
    (``dropped_as_test`` counts them: Amazon kitchen has 7, books 18). Introduced in notebooks/01_data.ipynb.
    """
    dataset._need_labels("split_target")
    if dataset.fixed_test is not None:
        test = np.asarray(dataset.fixed_test, dtype=np.int64)
    else:
        _check_fraction("test_fraction", test_fraction)
        test = _stratified_pick(dataset.labels, test_fraction, np.random.default_rng(seed))
    rest = np.setdiff1d(np.arange(len(dataset)), test)
    pool = rest[~copies_of_test([dataset.texts[i] for i in rest], [dataset.texts[i] for i in test])]
    return TargetSplit(test=dataset.subset(test, f"{dataset.name}/test"),
                       pool=dataset.subset(pool, f"{dataset.name}/pool"), dropped_as_test=len(rest) - len(pool))


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
