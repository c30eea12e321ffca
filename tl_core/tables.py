"""A user's own text files: a labelled target (CSV, TSV, JSON Lines) or unlabelled text (also plain ``.txt``).

Introduced in ``notebooks/01_data.ipynb`` (``data.load_target("mine.csv")``); ``data.load_unlabelled`` reads the
unlabelled kind. How each format is read, and why:

- **CSV** (``.csv``, comma-separated, header row): quoting is honoured as the csv module writes it (a field with a
  comma, a quote or a line break is quoted, a quote inside doubled), *strictly*: a quote that is never closed or a
  quoted field followed by more text is an error naming the line the row starts on, never a row silently merged
  with the next.
- **TSV** (``.tsv``, tab-separated, header row): read **without quoting**, as GLUE's SST-2 files are: one line is
  one row, its fields split at tabs, quotes kept as written. A text may hold quotes but no tab and no line break;
  write CSV if yours do.
- **JSON Lines** (``.jsonl``): one object per line; a key given twice in one object is an error.
- **Plain text** (``.txt``, unlabelled text only): one text per line, blank lines skipped.

In CSV and TSV, a row with more or fewer fields than the header, and a header naming a column twice, are errors.
Files are UTF-8 unless ``encoding`` says otherwise (a UTF-8 byte-order mark is allowed; a UTF-16 or UTF-32 one is
named in the error).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from .dataset import LABEL_NAMES, DataFormatError, TextDataset

TARGET_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl")
UNLABELLED_FILE_SUFFIXES = (".txt", *TARGET_FILE_SUFFIXES)
_LABEL_WORDS = {"0": 0, "1": 1, "neg": 0, "pos": 1, "negative": 0, "positive": 1}
# Longest first: UTF-32 LE's mark begins with UTF-16 LE's.
_BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                     (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode(path: Path, data: bytes, encoding: str = "utf-8") -> str:
    """``data`` (the bytes of ``path``) as text; an error names the byte, its line and the encoding to try."""
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec)
    except UnicodeDecodeError as error:
        marked = next((name for mark, name in _BYTE_ORDER_MARKS if data.startswith(mark)), None)
        if marked and not codecs.lookup(codec).name.startswith(marked):
            raise DataFormatError(
                f"{path} cannot be decoded as {encoding}: it starts with a {marked.upper()} byte-order mark, so it "
                f"is {marked.upper()} text. Fix: pass encoding='{marked}', or save the file as UTF-8.") from error
        line = data.count(b"\n", 0, error.start) + 1
        raise DataFormatError(
            f"{path} cannot be decoded as {encoding}: byte {data[error.start:error.start + 1]!r} at offset "
            f"{error.start} (line {line}) is not valid {encoding}. Fix: save the file as UTF-8, or pass the "
            f"encoding it was written in, e.g. load_target(..., encoding='latin-1').") from error
    except LookupError as error:
        raise ValueError(f"unknown encoding {encoding!r}") from error


def read_rows(path: Path, content: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """The columns and the rows of a CSV, TSV or JSON Lines file (each row with the line it starts on)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_rows(path, content)
    if suffix == ".tsv":
        numbered = ((number, line.removesuffix("\r").split("\t"))
                    for number, line in enumerate(content.split("\n"), start=1) if line.strip())
    else:
        numbered = _csv_records(path, content)
    header_line, columns = next(numbered, (0, []))
    repeated = sorted({column for column in columns if columns.count(column) > 1})
    if repeated:
        raise DataFormatError(f"{path} line {header_line}: the header names {', '.join(map(repr, repeated))} more "
                              f"than once ({columns}); every column needs its own name")
    rows = []
    for number, fields in numbered:
        if len(fields) != len(columns):
            hint = ("a text with a tab or a line break cannot be written in TSV (it is read without quoting): "
                    "use CSV" if suffix == ".tsv" else "a text with a comma must be quoted (\"...\")")
            raise DataFormatError(f"{path} line {number} has {len(fields)} fields but the header has "
                                  f"{len(columns)} ({columns}); {hint}")
        rows.append((number, dict(zip(columns, fields))))
    return columns, rows


def _csv_records(path: Path, content: str):
    """(line the record starts on, its fields) of each non-blank CSV record; quoting errors name that line."""
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise DataFormatError(
                f"{path} line {start}: not a well-formed CSV row ({error}; noticed on line {reader.line_num}). In "
                "CSV a field that starts with a quote runs to the next lone quote, across lines; a quote inside a "
                "text must be doubled (\"\") and the whole field quoted.") from error
        if any(field.strip() for field in fields):
            yield start, fields


def _jsonl_rows(path: Path, content: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    rows, columns = [], []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=lambda pairs: _object_without_repeats(path, number, pairs))
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{path} line {number} is not valid JSON ({error.msg}): {line[:80]!r}") from error
        if not isinstance(row, dict):
            raise DataFormatError(f"{path} line {number}: expected a JSON object with 'text' and 'label', "
                                  f"got {type(row).__name__}")
        columns += [key for key in row if key not in columns]
        rows.append((number, row))
    return columns, rows


def _object_without_repeats(path: Path, number: int, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:  # json keeps the last value silently
        raise DataFormatError(f"{path} line {number}: the key {', '.join(map(repr, repeated))} is given twice")
    return dict(pairs)


def binary_label(value) -> int | None:
    """0 or 1 from 0/1, False/True, "negative"/"positive", "neg"/"pos" (any case); None for anything else."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str):
        return _LABEL_WORDS.get(value.strip().lower())
    return None


def _need_columns(path: Path, columns: list[str], needed: tuple[str, ...]) -> None:
    for column in needed:
        if column not in columns:
            raise DataFormatError(f"{path} has no column {column!r}; columns found: {columns}. The file needs "
                                  f"{' and '.join(repr(name) + ' column' for name in needed)} (rename yours).")


def _text_of(path: Path, number: int, row: dict[str, Any]) -> str:
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataFormatError(f"{path} line {number}: the text is missing or empty ({text!r})")
    return text


def load_table_target(path: Path, encoding: str = "utf-8") -> TextDataset:
    """A user's labelled target: CSV, TSV (both with a header row) or JSON Lines, with a ``text`` and a ``label``
    column (0/1, negative/positive or neg/pos). Read by ``data.load_target``; introduced in 01_data."""
    content = decode(path, path.read_bytes(), encoding)
    if not content.strip():
        raise DataFormatError(f"{path} is empty; a target file needs a 'text' and a 'label' column and at least "
                              "one row of each class")
    columns, rows = read_rows(path, content)
    if path.suffix.lower() == ".jsonl":
        for number, row in rows:
            missing = [key for key in ("text", "label") if key not in row]
            if missing:
                raise DataFormatError(f"{path} line {number} has no {' or '.join(map(repr, missing))} key; keys "
                                      f"found: {list(row)}. Every line needs 'text' and 'label'.")
    _need_columns(path, columns, ("text", "label"))
    texts, labels, bad_labels = [], [], []
    for number, row in rows:
        text = _text_of(path, number, row)
        label = binary_label(row.get("label"))
        if label is None:
            bad_labels.append((number, row.get("label")))
            continue
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
    # An id is the row's position among the data rows.
    return TextDataset(name=path.name, texts=texts, labels=labels, ids=[str(i) for i in range(len(texts))])


def read_texts(path: str | os.PathLike, encoding: str = "utf-8") -> list[str]:
    """The texts of a user's unlabelled file: a ``.txt`` (one text per line) or a CSV, TSV or JSON Lines file with
    a ``text`` column (other columns, a label too, are ignored). Read by ``data.load_unlabelled``."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in UNLABELLED_FILE_SUFFIXES:
        raise ValueError(f"unlabelled text must be a {', '.join(UNLABELLED_FILE_SUFFIXES)} file; got {str(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"unlabelled text file {path} does not exist (resolved in {Path.cwd()})")
    content = decode(path, path.read_bytes(), encoding)
    if path.suffix.lower() == ".txt":
        texts = [line.strip() for line in content.splitlines() if line.strip()]
    else:
        columns, rows = read_rows(path, content) if content.strip() else ([], [])
        if columns:
            _need_columns(path, columns, ("text",))
        texts = [_text_of(path, number, row) for number, row in rows]
    if not texts:
        raise DataFormatError(f"{path} holds no text: a {path.suffix} file of unlabelled text needs "
                              f"{'one text per line' if path.suffix.lower() == '.txt' else 'a text column and rows'}")
    return texts
