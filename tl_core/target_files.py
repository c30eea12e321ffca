"""The published target datasets as their files hold them: the Amazon domains of Blitzer et al. (2007), GLUE's
SST-2 and the ten Amazon domains of FDU-MTL (Liu et al. 2017). ``data.load_target`` and ``data.load_unlabelled``
read them through these functions; each file's layout and quirks are described in ``../shared/data/README.md``.
Introduced in ``notebooks/01_data.ipynb`` (Amazon, SST-2) and ``notebooks/07_fine_tuning.ipynb`` (FDU-MTL).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from .dataset import DataFormatError, TextDataset
from .tables import decode

#: The ten Amazon product domains of FDU-MTL in ../shared/data/fdu-mtl/ (files DOMAIN.task.{train,test,unlabel}).
FDU_DOMAINS = ("apparel", "books", "camera_photo", "dvd", "electronics", "health_personal_care",
               "kitchen_housewares", "magazines", "music", "video")

_REVIEW = re.compile(r"<review>(.*?)</review>", re.DOTALL)
_FIELD = re.compile(r"<(\w+)>\n?(.*?)\n?</\1>", re.DOTALL)


def load_amazon(folder: Path, name: str) -> TextDataset:
    """One domain of the Multi-Domain Sentiment Dataset. The files are pseudo-XML with no root element and bare
    ``&``, so they are read with regular expressions, not an XML parser; text is kept as written (entities such
    as ``&quot;`` are left for the tokenizer's cleaning)."""
    texts, labels, ids, ratings, titles = [], [], [], [], []
    for label, file_name in ((0, "negative.review"), (1, "positive.review")):
        path = folder / file_name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the Amazon folder should hold "
                                    "<domain>/{positive,negative}.review (see README: Data)")
        content = decode(path, path.read_bytes(), "utf-8")
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


def load_sst2(folder: Path) -> TextDataset:
    """GLUE SST-2: ``train.tsv`` (phrases and sentences) and ``dev.tsv`` (sentences; the fixed test split).
    The files are not quoted CSV (a sentence may contain a quote), so each line is split at its last tab."""
    texts, labels, ids = [], [], []
    first_dev = None
    for part in ("train", "dev"):
        path = folder / f"{part}.tsv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the SST-2 folder should hold train.tsv and dev.tsv")
        lines = decode(path, path.read_bytes(), "utf-8").splitlines()
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


#: PTB tokenisation as the FDU-MTL labelled files show it, undone so that the course tokenizer sees the words of
#: raw text: clitics split off (``do n't``, ``i 'm``, ``it 's``, ``ca n't``, ``wo n't``), contractions split
#: (``gon na``, ``can not`` from ``cannot``) and quotes written as `` and ''.
_PTB_CLITIC = re.compile(r"(?<=\w) (n't|'s|'m|'re|'ve|'ll|'d)(?![\w'])", re.IGNORECASE)
_PTB_SPLIT_WORDS = re.compile(r"\b(gon|wan|got|lem|can) (na|ta|me|not)\b", re.IGNORECASE)
_PTB_JOINED = {("gon", "na"), ("wan", "na"), ("got", "ta"), ("lem", "me"), ("can", "not")}
_PTB_QUOTES = re.compile(r"``|''")


def join_ptb_clitics(text: str) -> str:
    """Undo the PTB tokenisation of FDU-MTL's labelled files where it splits words: ``do n't`` -> ``don't``,
    ``i 'm`` -> ``i'm``, ``ca n't`` -> ``can't``, ``gon na`` -> ``gonna``, ``can not`` -> ``cannot`` (PTB's split
    of it), and `` / '' -> ``"``. The spaces PTB put around punctuation stay: the course tokenizer splits
    punctuation off anyway. Introduced in notebooks/07_fine_tuning.ipynb."""
    text = _PTB_CLITIC.sub(r"\1", text)
    text = _PTB_SPLIT_WORDS.sub(lambda m: m[1] + m[2] if (m[1].lower(), m[2].lower()) in _PTB_JOINED else m[0],
                                text)
    return _PTB_QUOTES.sub('"', text)


def _decoded_lines(path: Path) -> tuple[list[tuple[int, str]], list[int]]:
    """The non-blank lines of ``path`` with their numbers, and the numbers of those that were not valid UTF-8
    (decoded with U+FFFD in place of the bad bytes: dvd's train file has one truncated character)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the FDU-MTL folder should hold DOMAIN.task.train, "
                                "DOMAIN.task.test and DOMAIN.task.unlabel for each domain (see README: Data)")
    lines, repaired = [], []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", errors="replace")
            repaired.append(number)
        if line.strip():
            lines.append((number, line.rstrip("\r")))
    return lines, repaired


def _warn_repaired(path: Path, repaired: list[int]) -> None:
    if repaired:
        warnings.warn(f"{path}: line{'s' if len(repaired) > 1 else ''} {', '.join(map(str, repaired))} not valid "
                      "UTF-8, decoded with U+FFFD in place of the bad bytes", stacklevel=3)


def load_fdu(folder: Path, domain: str) -> TextDataset:
    """One FDU-MTL domain, labelled: the train file's reviews, then the test file's (marked ``fixed_test``), with
    PTB clitics joined back (:func:`join_ptb_clitics`). ``undecodable_lines`` counts the lines decoded with
    replacement characters (a warning names them). Ids are ``train/LINE`` and ``test/LINE``."""
    texts, labels, ids, repaired_count, first_test = [], [], [], 0, 0
    for part in ("train", "test"):
        path = folder / f"{domain}.task.{part}"
        lines, repaired = _decoded_lines(path)
        _warn_repaired(path, repaired)
        repaired_count += len(repaired)
        if part == "test":
            first_test = len(texts)
        for number, line in lines:
            label, tab, text = line.partition("\t")
            if not tab or label not in ("0", "1") or not text.strip():
                raise DataFormatError(f"{path} line {number}: expected LABEL<TAB>TEXT with label 0 or 1, got "
                                      f"{line[:60]!r}")
            texts.append(join_ptb_clitics(text.strip()))
            labels.append(int(label))
            ids.append(f"{part}/{number}")
    if not first_test or first_test == len(texts):
        raise DataFormatError(f"{folder}: {domain}.task.train or {domain}.task.test holds no reviews")
    return TextDataset(name=f"fdu:{domain}", texts=texts, labels=labels, ids=ids,
                       fixed_test=np.arange(first_test, len(texts)), undecodable_lines=repaired_count)


def load_fdu_unlabelled(folder: Path, domain: str) -> list[str]:
    """The 2,000 unlabelled reviews of an FDU-MTL domain (``DOMAIN.task.unlabel``, raw text, one per line)."""
    path = folder / f"{domain}.task.unlabel"
    lines, repaired = _decoded_lines(path)
    _warn_repaired(path, repaired)
    if not lines:
        raise DataFormatError(f"{path} holds no text")
    return [line.strip() for _, line in lines]
