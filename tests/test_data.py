"""The datasets (tl_core/data.py): IMDB from an archive or a folder, the target loaders, splits and draws.

Real-data tests use TL_DATA_DIR (the `shared_data_dir` fixture); the rest build small datasets in tmp_path.
"""

import io
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tl_core import data
from tl_core.data import CorruptArchiveError, DataFormatError, TextDataset
from tl_core.paths import DatasetNotFoundError

# ------------------------------------------------------------------------------------------ real data


def test_imdb_counts_labels_and_ratings(shared_data_dir):
    counts = {}
    for split in data.IMDB_SPLITS:
        dataset = data.load_imdb(split, shared_data_dir)
        counts[split] = len(dataset)
        assert len(set(dataset.ids)) == len(dataset)
        if split == "unsup":
            assert dataset.labels is None and dataset.ratings is None
            continue
        assert dataset.label_counts() == {0: 12_500, 1: 12_500}
        negative, positive = dataset.ratings[dataset.labels == 0], dataset.ratings[dataset.labels == 1]
        assert set(negative.tolist()) == {1, 2, 3, 4} and set(positive.tolist()) == {7, 8, 9, 10}
    assert counts == data.IMDB_COUNTS == {"train": 25_000, "test": 25_000, "unsup": 50_000}
    train = data.load_imdb("train", shared_data_dir)
    assert Counter(train.ratings[train.labels == 0].tolist()) == {1: 5_100, 2: 2_284, 3: 2_420, 4: 2_696}


@pytest.mark.slow
def test_imdb_duplicates_and_the_train_test_overlap(shared_data_dir):
    """overlap_report counts by the same-text rule. Cross-checked without data.same_text_key: the byte-exact counts,
    recounted here, are the data README's (96 extra copies in train, 199 in test, 123 texts in both) and a lower
    bound; the rest are texts that differ only in case, spacing, punctuation or <br /> tags, found by a key of
    this test's own (letters and digits, case-folded, after removing <br />) and counted the same way."""
    train, test = data.load_imdb("train", shared_data_dir), data.load_imdb("test", shared_data_dir)
    report = data.overlap_report(train, test)
    exact_train, exact_test = Counter(train.texts), Counter(test.texts)
    exact = (len(train) - len(exact_train), len(test) - len(exact_test), len(exact_train.keys() & exact_test.keys()))
    assert exact == (96, 199, 123), "the data README's byte-exact counts"

    def loose_key(review: str) -> str:
        return re.sub(r"[\W_]+", "", re.sub(r"<br\s*/?>", " ", review).casefold())

    loose_train, loose_test = Counter(map(loose_key, train.texts)), Counter(map(loose_key, test.texts))
    loose = (len(train) - len(loose_train), len(test) - len(loose_test), len(loose_train.keys() & loose_test.keys()))
    counted = (report.extra_copies_first, report.extra_copies_second, report.shared_texts)
    assert counted == loose == (99, 203, 123)
    assert all(by_rule >= by_bytes for by_rule, by_bytes in zip(counted, exact))
    # The 3 and 4 more copies are distinct byte strings that share a key: e.g. a trailing <br /><br />.
    for dataset, more in ((train, 3), (test, 4)):
        distinct = Counter(loose_key(review) for review in set(dataset.texts))
        assert sum(n - 1 for n in distinct.values()) == more
    assert report.conflicting_labels == 0
    train_keys = {data.same_text_key(text) for text in train.texts}
    assert all(text in test.texts and data.same_text_key(text) in train_keys for text in report.examples)


def test_load_imdb_returns_copies(shared_data_dir):
    first = data.load_imdb("test", shared_data_dir)
    first.texts[0] = "edited"
    assert data.load_imdb("test", shared_data_dir).texts[0] != "edited"


@pytest.mark.parametrize("domain", ["books", "dvd", "electronics", "kitchen"])
def test_amazon_domains(shared_data_dir, domain):
    dataset = data.load_target(f"amazon:{domain}", shared_data_dir)
    assert dataset.name == f"amazon:{domain}"
    assert dataset.label_counts() == {0: 1_000, 1: 1_000}
    assert set(dataset.ratings[dataset.labels == 0].tolist()) == {1, 2}
    assert set(dataset.ratings[dataset.labels == 1].tolist()) == {4, 5}
    assert all(text.strip() for text in dataset.texts) and len(dataset.titles) == 2_000


def test_amazon_counts_match_the_readme(shared_data_dir):
    kitchen = data.load_target("amazon:kitchen", shared_data_dir)
    assert Counter(kitchen.ratings[kitchen.labels == 1].tolist()) == {4: 246, 5: 754}
    # bare '&' is kept: the kitchen files have thousands (mostly in product names), some in the review texts
    assert sum("&" in text for text in kitchen.texts) > 10
    assert not any("<review_text>" in text or "</" in text for text in kitchen.texts)


def test_sst2(shared_data_dir):
    sst2 = data.load_target("sst2", shared_data_dir)
    assert len(sst2) == 67_349 + 872 and len(sst2.fixed_test) == 872
    split = data.split_target(sst2)
    assert split.test.label_counts() == {0: 428, 1: 444}
    # no dev sentence is in train as it is written (the data README), but five train phrases are the same text as a
    # dev sentence once punctuation is ignored ("bad" twice against "bad .", "cool" and "cool ." against "cool ?"):
    # they leave the pool, 2 negative and 3 positive
    assert split.dropped_as_test == 5 and len(split.pool) == 67_349 - 5
    assert split.pool.label_counts() == {0: 29_780 - 2, 1: 37_569 - 3}
    assert not any(text.endswith(" ") for text in sst2.texts[:100])


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="TL_DATA_DIR"):
        data.load_target("amazon:books", tmp_path)


# --------------------------------------------------------------------- synthetic IMDB, both layouts

REVIEWS = {  # path inside aclImdb/ -> text
    "train/neg/0_1.txt": "Awful.<br /><br />Truly awful.",
    "train/neg/1_4.txt": "Not good, not terrible.",
    "train/pos/1_10.txt": "A masterpiece!",
    "train/pos/0_7.txt": "Pretty good – with a café scene.",
    "train/unsup/0_0.txt": "Unlabelled review.",
    "train/unsup/1_0.txt": "Another one.",
    "test/neg/0_2.txt": "Boring.",
    "test/pos/0_9.txt": "Loved it.",
}
EXTRAS = {"README": "not a review", "imdb.vocab": "a\nb\n", "train/urls_pos.txt": "http://x\n",
          "imdbEr.txt": "0.1\n"}


def write_imdb_folder(root: Path, reviews=REVIEWS) -> Path:
    for relative, text in {**reviews, **EXTRAS}.items():
        path = root / "aclImdb" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return root


def write_imdb_archive(root: Path, reviews=REVIEWS, padding: int = 0) -> Path:
    """The layout of aclImdb_v1.tar.gz; `padding` adds incompressible unsup reviews to make the archive long."""
    root.mkdir(parents=True, exist_ok=True)
    members = {**reviews, **EXTRAS}
    rng = np.random.default_rng(0)
    for index in range(padding):
        members[f"train/unsup/{index + 2}_0.txt"] = rng.integers(97, 123, 4000).astype(np.uint8).tobytes()
    with tarfile.open(root / "aclImdb_v1.tar.gz", "w:gz") as archive:
        for relative, text in members.items():
            payload = text.encode("utf-8") if isinstance(text, str) else text
            info = tarfile.TarInfo(f"aclImdb/{relative}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return root


@pytest.mark.parametrize("layout", ["archive", "folder"])
def test_imdb_layouts_read_the_same(tmp_path, layout):
    root = write_imdb_archive(tmp_path) if layout == "archive" else write_imdb_folder(tmp_path)
    train = data.load_imdb("train", root)
    assert train.name == "imdb:train"
    assert train.ids == ["train/neg/0", "train/neg/1", "train/pos/0", "train/pos/1"]  # negatives first, by id
    assert train.texts == [REVIEWS["train/neg/0_1.txt"], REVIEWS["train/neg/1_4.txt"],
                           REVIEWS["train/pos/0_7.txt"], REVIEWS["train/pos/1_10.txt"]]
    assert train.labels.tolist() == [0, 0, 1, 1] and train.ratings.tolist() == [1, 4, 7, 10]
    test = data.load_imdb("test", root)
    assert test.texts == ["Boring.", "Loved it."] and test.ratings.tolist() == [2, 9]
    unsup = data.load_imdb("unsup", root)
    assert unsup.texts == ["Unlabelled review.", "Another one."] and unsup.labels is None
    assert unsup.ids == ["train/unsup/0", "train/unsup/1"]


def test_extracted_folder_is_used_when_there_is_no_archive(tmp_path):
    write_imdb_folder(tmp_path)
    assert len(data.load_imdb("train", tmp_path)) == 4


def test_bad_split_name():
    with pytest.raises(ValueError, match="split must be one of train, test, unsup; got 'dev'"):
        data.load_imdb("dev")


def test_truncated_archive_is_a_clear_error(tmp_path):
    archive = write_imdb_archive(tmp_path, padding=40) / "aclImdb_v1.tar.gz"
    content = archive.read_bytes()
    archive.write_bytes(content[:len(content) // 2])
    with pytest.raises(CorruptArchiveError, match="truncated or corrupt") as error:
        data.load_imdb("train", tmp_path)
    assert str(archive) in str(error.value) and "TL_DATA_DIR" in str(error.value)


def test_corrupt_archive_is_a_clear_error(tmp_path):
    archive = write_imdb_archive(tmp_path, padding=40) / "aclImdb_v1.tar.gz"
    content = bytearray(archive.read_bytes())
    middle = len(content) // 2
    content[middle:middle + 64] = bytes(64)  # zeros over the deflate stream
    archive.write_bytes(bytes(content))
    with pytest.raises(CorruptArchiveError, match="truncated or corrupt"):
        data.load_imdb("unsup", tmp_path)


def test_not_a_gzip_file_is_a_clear_error(tmp_path):
    (tmp_path / "aclImdb_v1.tar.gz").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(CorruptArchiveError, match="truncated or corrupt"):
        data.load_imdb("train", tmp_path)


def test_incomplete_layout_is_a_clear_error(tmp_path):
    reviews = {key: value for key, value in REVIEWS.items() if not key.startswith("test/")}
    write_imdb_folder(tmp_path, reviews)
    with pytest.raises(DataFormatError, match="nothing for test/neg, test/pos"):
        data.load_imdb("train", tmp_path)


def test_missing_review_files_are_a_clear_error(tmp_path):
    reviews = dict(REVIEWS)
    reviews["train/pos/3_8.txt"] = "ids 2 is missing"
    write_imdb_archive(tmp_path, reviews)
    with pytest.raises(DataFormatError, match=r"train/pos has 3 reviews but ids up to 3; missing ids \[2\]"):
        data.load_imdb("train", tmp_path)


def test_undecodable_review_is_a_clear_error(tmp_path):
    reviews = dict(REVIEWS)
    reviews["test/pos/0_9.txt"] = "caf\xe9".encode("latin-1")
    write_imdb_archive(tmp_path, reviews)
    with pytest.raises(DataFormatError, match="test/pos/0_9.txt in the IMDB archive is not valid UTF-8"):
        data.load_imdb("test", tmp_path)


# ------------------------------------------------------------------------------ Amazon, synthetic

AMAZON_REVIEW = """<review>
<unique_id>
B0001:title:someone
</unique_id>
<product_name>
Pots & Pans: Kitchen & Housewares
</product_name>
<helpful>

</helpful>
<rating>
{rating}
</rating>
<title>
{title}
</title>
<review_text>
{text}
</review_text>
</review>
"""


def write_amazon(root: Path, domain: str, positive: list[str], negative: list[str]) -> Path:
    folder = root / "multi_domain_sentiment" / "sorted_data_acl" / domain
    folder.mkdir(parents=True)
    for name, texts, rating in (("positive", positive, "5.0"), ("negative", negative, "1.0")):
        (folder / f"{name}.review").write_text(
            "".join(AMAZON_REVIEW.format(rating=rating, title=f"title {i}", text=text) for i, text in enumerate(texts)),
            encoding="utf-8")
    return root


def test_amazon_parsing_keeps_bare_ampersands_titles_and_ratings(tmp_path):
    write_amazon(tmp_path, "kitchen_&_housewares", ["Salt & pepper <3 it", "Great &quot;pan&quot;"],
                 ["Broke after R&D\n\nsecond paragraph"])
    kitchen = data.load_target("amazon:kitchen", tmp_path)
    assert kitchen.texts == ["Broke after R&D\n\nsecond paragraph", "Salt & pepper <3 it", "Great &quot;pan&quot;"]
    assert kitchen.labels.tolist() == [0, 1, 1] and kitchen.ratings.tolist() == [1, 5, 5]
    assert kitchen.titles == ["title 0", "title 0", "title 1"]
    assert kitchen.ids == ["negative/0", "positive/0", "positive/1"]


def test_amazon_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown Amazon domain 'toys'.*amazon:kitchen"):
        data.load_target("amazon:toys", tmp_path)
    write_amazon(tmp_path, "books", ["fine"], ["bad"])
    (tmp_path / "multi_domain_sentiment/sorted_data_acl/books/negative.review").write_text("no reviews here")
    with pytest.raises(DataFormatError, match="no <review>"):
        data.load_target("amazon:books", tmp_path)


# ------------------------------------------------------------------------ a user's own target file


def write(path: Path, content: str | bytes) -> str:
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return str(path)


def test_csv_target_with_quotes_and_word_labels(tmp_path):
    spec = write(tmp_path / "mine.csv", '\ufeffid,text,label\n1,"Good, really ""good""\nsecond line",Positive\n'
                                        "2,Bad.,neg\n3,Fine,1\n")
    dataset = data.load_target(spec)
    assert dataset.name == "mine.csv"
    assert dataset.texts == ['Good, really "good"\nsecond line', "Bad.", "Fine"]
    assert dataset.labels.tolist() == [1, 0, 1] and dataset.ids == ["0", "1", "2"]


def test_tsv_and_jsonl_targets(tmp_path):
    tsv = data.load_target(write(tmp_path / "t.tsv", "label\ttext\n0\tmeh\n1\tyay, great\n"))
    assert tsv.texts == ["meh", "yay, great"] and tsv.labels.tolist() == [0, 1]
    jsonl = data.load_target(write(tmp_path / "t.jsonl", '{"text": "ok", "label": 1}\n\n'
                                                         '{"text": "no", "label": "negative", "extra": 3}\n'))
    assert jsonl.texts == ["ok", "no"] and jsonl.labels.tolist() == [1, 0]


@pytest.mark.parametrize("name, content, message", [
    ("cols.csv", "review,sentiment\nx,1\n", r"no column 'text'; columns found: \['review', 'sentiment'\]"),
    ("cols.jsonl", '{"text": "x", "stars": 5}\n', r"no 'label' key; keys found: \['text', 'stars'\]"),
    ("labels.csv", "text,label\na,1\nb,neutral\nc,2\n",
     r"labels must be binary, 0/1, negative/positive or neg/pos; got 'neutral' \(line 3\), '2' \(line 4\)"),
    ("labels.jsonl", '{"text": "a", "label": 0.5}\n{"text": "b", "label": 1}\n', r"got 0.5 \(line 1\)"),
    ("one_class.tsv", "text\tlabel\na\tpos\nb\tpositive\n", "every row has label positive"),
    ("empty.csv", "", "is empty"),
    ("blank.jsonl", "\n  \n", "is empty"),
    ("header_only.csv", "text,label\n", "has a header .* but no rows"),
    ("empty_text.csv", "text,label\n,1\n", "line 2: the text is missing or empty"),
    ("short_row.csv", "text,label\nonly text\n", r"line 2 has 1 fields but the header has 2"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": oops}\n', "line 2 is not valid JSON"),
    ("list.jsonl", '["a", 1]\n', "line 1: expected a JSON object"),
])
def test_bad_target_files_give_clear_errors(tmp_path, name, content, message):
    with pytest.raises(DataFormatError, match=message):
        data.load_target(write(tmp_path / name, content))


def test_undecodable_target_names_the_encoding_and_the_fix(tmp_path):
    spec = write(tmp_path / "latin.csv", "text,label\nna\xefve,1\nbad,0\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"cannot be decoded as utf-8: byte b'\\xef' at offset 13 \(line 2\)"
                                              r".*encoding='latin-1'"):
        data.load_target(spec)
    assert data.load_target(spec, encoding="latin-1").texts == ["na\xefve", "bad"]


def test_missing_file_and_unknown_spec(tmp_path):
    with pytest.raises(FileNotFoundError, match="target file .*nothere.csv does not exist"):
        data.load_target(str(tmp_path / "nothere.csv"))
    with pytest.raises(ValueError, match=r"unknown target 'reviews.xlsx'.*\.csv, \.tsv, \.jsonl"):
        data.load_target("reviews.xlsx")
    with pytest.raises(ValueError, match="unknown target 'imdb'"):
        data.load_target("imdb")


# ----------------------------------------------------------------------------------------- splits


def balanced(count: int, positive_share: float = 0.5, name: str = "toy") -> TextDataset:
    labels = (np.arange(count) < round(count * positive_share)).astype(int)
    return TextDataset(name=name, texts=[f"text {i}" for i in range(count)], labels=labels,
                       ids=[str(i) for i in range(count)])


def test_train_val_split_is_stratified_seeded_and_disjoint():
    dataset = balanced(1000, positive_share=0.3)
    train, val = data.train_val_split(dataset, val_fraction=0.1, seed=7)
    assert (len(train), len(val)) == (900, 100)
    assert val.label_counts() == {0: 70, 1: 30} and train.label_counts() == {0: 630, 1: 270}
    assert not set(train.ids) & set(val.ids)
    assert data.train_val_split(dataset, 0.1, seed=7)[1].ids == val.ids
    assert data.train_val_split(dataset, 0.1, seed=8)[1].ids != val.ids
    assert val.name == "toy/val"


def test_train_val_split_bad_input():
    with pytest.raises(ValueError, match="val_fraction must be a number strictly between 0 and 1, got 1.5"):
        data.train_val_split(balanced(10), 1.5)
    unlabelled = TextDataset("u", ["a", "b"], None, ["0", "1"])
    with pytest.raises(ValueError, match="needs labels, but u is unlabelled"):
        data.train_val_split(unlabelled, 0.5)


def test_target_split_is_fixed_stratified_and_never_overlaps_the_pool():
    dataset = balanced(2000, name="amazon:kitchen")
    split = data.split_target(dataset)
    assert split.test.label_counts() == {0: 200, 1: 200} and len(split.pool) == 1600  # Blitzer's 1,600 / 400
    assert not set(split.test.ids) & set(split.pool.ids)
    assert data.split_target(dataset).test.ids == split.test.ids  # the same every time
    assert split.test.name == "amazon:kitchen/test"


def test_target_split_uses_a_published_test_set():
    dataset = balanced(10)
    dataset.fixed_test = np.array([0, 9])
    split = data.split_target(dataset)
    assert split.test.ids == ["0", "9"] and len(split.pool) == 8 and split.dropped_as_test == 0


@pytest.mark.parametrize("published", [False, True])
def test_the_pool_never_holds_a_test_text(published):
    """A review repeated on both sides of the split (in other case, spacing and punctuation) stays a test review
    only: it can never be drawn for training. Amazon's domains hold a few such repeats (kitchen 7, books 18)."""
    dataset = balanced(2000, name="amazon:kitchen")
    if published:
        dataset.fixed_test = np.arange(0, 2000, 5)
    test = data.split_target(dataset).test
    copies = [index for index in range(len(dataset)) if dataset.ids[index] not in set(test.ids)][:3]
    for copy, source in zip(copies, test.texts):
        dataset.texts[copy] = "  " + source.upper().replace(" ", "   ") + " !"
    split = data.split_target(dataset)
    assert split.test.ids == test.ids and split.dropped_as_test == 3 and len(split.pool) == 1600 - 3
    assert not {data.same_text_key(t) for t in split.pool.texts} & {data.same_text_key(t) for t in split.test.texts}
    assert not {dataset.ids[index] for index in copies} & set(split.pool.ids)
    assert data.copies_of_test(["Loved it!", "loved it", "hated it"], ["LOVED  it."]).tolist() == [True, True, False]


def test_draws_are_stratified_seeded_nested_and_never_test():
    split = data.split_target(balanced(2000, positive_share=0.7))
    pool = split.pool
    draw = data.draw_labels(pool, 100, seed=1)
    assert len(draw) == 100 and draw.label_counts() == {0: 30, 1: 70}
    assert data.draw_labels(pool, 100, seed=1).ids == draw.ids
    assert data.draw_labels(pool, 100, seed=2).ids != draw.ids
    assert set(draw.ids) <= set(data.draw_labels(pool, 400, seed=1).ids)  # nested for one seed
    for seed in range(3):
        for n_labels in (1, 50, 1600):
            assert not set(data.draw_labels(pool, n_labels, seed).ids) & set(split.test.ids)
    assert sorted(data.draw_labels(pool, len(pool), seed=0).ids) == sorted(pool.ids)
    assert data.draw_labels(pool, 7, seed=0).name.endswith("/n7-seed0")


def test_draw_bad_n_labels():
    pool = data.split_target(balanced(100)).pool
    for bad in (0, 81, 2.5, True):
        with pytest.raises(ValueError, match="n_labels must be an int from 1 to the pool size 80"):
            data.draw_labels(pool, bad, seed=0)


def test_label_allocation_sums_and_follows_the_balance():
    assert data.label_allocation({0: 300, 1: 700}, 10) == {0: 3, 1: 7}
    assert data.label_allocation({0: 1, 1: 2}, 2) == {0: 1, 1: 1}
    for n in range(1, 60):
        allocation = data.label_allocation({0: 17, 1: 42}, n)
        assert sum(allocation.values()) == n and allocation[0] <= 17 and allocation[1] <= 42


def test_text_dataset_checks_itself():
    with pytest.raises(ValueError, match="2 ids for 1 texts"):
        TextDataset("x", ["a"], [1], ["0", "1"])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        TextDataset("x", ["a"], [2], ["0"])
    subset = balanced(4).subset([3, 0])
    assert subset.texts == ["text 3", "text 0"] and subset.labels.tolist() == [0, 1]


def test_json_lines_numbers_and_booleans(tmp_path):
    rows = [{"text": "a", "label": True}, {"text": "b", "label": 0}, {"text": "c", "label": 1.0}]
    spec = write(tmp_path / "b.jsonl", "\n".join(json.dumps(row) for row in rows))
    assert data.load_target(spec).labels.tolist() == [1, 0, 1]


# ------------------------------------------------------------------- user files: quoting, fields, encodings


def test_tsv_is_read_without_quoting(tmp_path):
    """An unclosed quote in TSV text must not swallow the next line (issue 24: 3 rows, the first labelled 0)."""
    spec = write(tmp_path / "q.tsv", 'text\tlabel\n"Loved it, 10/10\t1\nthe worst film" of the year\t0\nok\t1\n'
                                     'bad\t0\n')
    dataset = data.load_target(spec)
    assert dataset.texts == ['"Loved it, 10/10', 'the worst film" of the year', "ok", "bad"]
    assert dataset.labels.tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize("name, content, message", [
    ("open_quote.csv", 'text,label\n"Loved it, 10/10,1\nthe worst film" of the year,0\nok,1\nbad,0\n',
     r"open_quote.csv line 2: not a well-formed CSV row"),
    ("never_closed.csv", 'text,label\nok,1\n"never closed,0\n', r"never_closed.csv line 3: not a well-formed CSV row"),
    ("extra.csv", "text,label\ngood,1\nbad, really bad,0\n",
     r"extra.csv line 3 has 3 fields but the header has 2.*quoted"),
    ("extra.tsv", "text\tlabel\ngood\t1\nbad\t0\t0\n", r"extra.tsv line 3 has 3 fields but the header has 2.*use CSV"),
    ("short.tsv", "text\tlabel\ngood\t1\nbad\n", r"short.tsv line 3 has 1 fields"),
    ("twice.csv", "text,label,text\na,1,b\n", r"twice.csv line 1: the header names 'text' more than once"),
    ("twice.tsv", "label\ttext\tlabel\n1\ta\t0\n", r"the header names 'label' more than once"),
    ("twice.jsonl", '{"text": "a", "label": 1, "label": 0}\n', r"twice.jsonl line 1: the key 'label' is given twice"),
])
def test_malformed_rows_and_repeated_columns_are_errors(tmp_path, name, content, message):
    with pytest.raises(DataFormatError, match=message):
        data.load_target(write(tmp_path / name, content))


def test_quoted_csv_fields_may_span_lines(tmp_path):
    spec = write(tmp_path / "ok.csv", 'text,label\n"two\nlines, and ""quotes""",1\nplain,0\n')
    assert data.load_target(spec).texts == ['two\nlines, and "quotes"', "plain"]


@pytest.mark.parametrize("encoding, named", [("utf-16", "utf-16"), ("utf-16-be", "utf-16"), ("utf-32", "utf-32")])
def test_a_byte_order_mark_names_its_encoding(tmp_path, encoding, named):
    content = "text,label\ngood,1\nbad,0\n"
    mark = {"utf-16-be": b"\xfe\xff"}.get(encoding, b"")
    spec = write(tmp_path / "wide.csv", mark + content.encode(encoding))
    with pytest.raises(DataFormatError, match=rf"{named.upper()} byte-order mark.*encoding='{named}'") as error:
        data.load_target(spec)
    assert "latin-1" not in str(error.value)
    assert data.load_target(spec, encoding=named).texts == ["good", "bad"]


# ---------------------------------------------------------------------------------------- the same text


@pytest.mark.parametrize("first, second", [
    ("I don't like it, it's LOUD.", "i do n't like it , it 's loud ."),  # raw against PTB-tokenised
    ("Great   pan!\nWorks well", "great pan ! works well"),
    ("AT&amp;T said &quot;no&quot;<br />ok", 'AT&T said "no" ok'),
    ("Caf\u00e9 na\u00efve", "CAF\u00c9 NA\u00cfVE"),
])
def test_the_same_text_rule_ignores_case_spacing_punctuation_and_tokenisation(first, second):
    assert data.same_text_key(first) == data.same_text_key(second)


@pytest.mark.parametrize("first, second", [
    ("good pan", "good pans"), ("10/10", "1/010 no"), ("!!!", "???"), ("I loved it", "I hated it")])
def test_the_same_text_rule_keeps_words_apart(first, second):
    assert data.same_text_key(first) != data.same_text_key(second)


def test_overlap_report_counts_by_the_same_text_rule():
    first = TextDataset("a", ["Good pan.", "good  pan", "bad lid"], [1, 1, 0], ["0", "1", "2"])
    second = TextDataset("b", ["GOOD PAN", "Bad lid!", "new"], [1, 1, 0], ["0", "1", "2"])
    report = data.overlap_report(first, second)
    assert (report.extra_copies_first, report.shared_texts, report.second_in_first) == (1, 2, 2)
    assert report.conflicting_labels == 1 and report.examples == ["GOOD PAN", "Bad lid!"]


def test_a_planted_test_review_is_dropped_from_unlabelled_text(tmp_path):
    """The planted copy differs in case and spacing (and is raw where the test file is PTB-tokenised)."""
    test_texts = ["the blender is loud , but it 's worth it .", "i do n't recommend this kettle ."]
    unlabelled = tmp_path / "more.txt"
    unlabelled.write_text("A nice knife set\nThe Blender is   LOUD, but it's worth it.\nsturdy pot\n")
    kept, dropped = data.drop_test_texts(data.load_unlabelled(str(unlabelled)), test_texts)
    assert kept == ["A nice knife set", "sturdy pot"] and dropped == 1


# ------------------------------------------------------------------------------------------- FDU-MTL


@pytest.mark.parametrize("tokenised, joined", [
    ("i do n't know", "i don't know"),
    ("i 'm sure it 's fine", "i'm sure it's fine"),
    ("we ca n't and wo n't", "we can't and won't"),
    ("they 're , we 've , you 'll , he 'd", "they're , we've , you'll , he'd"),
    ("i 'm gon na buy it , i can not wait", "i'm gonna buy it , i cannot wait"),
    ("he said `` wow '' twice", 'he said " wow " twice'),
    ("the ' best ' pan and the '80s", "the ' best ' pan and the '80s"),  # quotes and years stay
])
def test_ptb_clitics_are_joined_back(tokenised, joined):
    from tl_core.target_files import join_ptb_clitics

    assert join_ptb_clitics(tokenised) == joined


def test_joined_text_tokenizes_as_the_raw_text():
    from tl_core.target_files import join_ptb_clitics
    from tl_core.text import tokenize

    raw = "I don't think it's great: I'm sure we can't and won't, \"they're gonna\" say it cannot work!"
    ptb = ("i do n't think it 's great : i 'm sure we ca n't and wo n't , `` they 're gon na '' say it can not "
           "work !")
    assert tokenize(ptb) != tokenize(raw)
    assert tokenize(join_ptb_clitics(ptb)) == tokenize(raw)


def write_fdu(root: Path, domain: str, train: list[str] | bytes, test: list[str], unlabelled: list[str]) -> Path:
    folder = root / "fdu-mtl"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{domain}.task.train").write_bytes(train if isinstance(train, bytes)
                                                  else ("\n".join(train) + "\n").encode("utf-8"))
    (folder / f"{domain}.task.test").write_text("\n".join(test) + "\n", encoding="utf-8")
    (folder / f"{domain}.task.unlabel").write_text("\n".join(unlabelled) + "\n", encoding="utf-8")
    return root


def test_fdu_target_pool_and_fixed_test(tmp_path):
    write_fdu(tmp_path, "music", ["1\ti do n't skip a track", "0\tnoise", "1\tGREAT  album !", "0\tdull"],
              ["1\tgreat album !", "0\ta flat , tired record"], ["whatever"])
    dataset = data.load_target("fdu:music", tmp_path)
    split = data.split_target(dataset)
    assert dataset.name == "fdu:music"
    assert split.test.texts == ["great album !", "a flat , tired record"] and split.test.labels.tolist() == [1, 0]
    assert split.pool.texts == ["i don't skip a track", "noise", "dull"]  # the test review's copy is left out
    assert split.pool.ids == ["train/1", "train/2", "train/4"] and split.dropped_as_test == 1


def test_fdu_line_that_is_not_utf8_is_decoded_with_replacement(tmp_path):
    train = "1\tgood\n0\ta clich".encode() + b"\xef\xbf" + " of a film\n1\tfine\n0\tbad\n".encode()
    write_fdu(tmp_path, "dvd", train, ["1\tnice", "0\tawful"], ["x"])
    with pytest.warns(UserWarning, match=r"dvd.task.train: line 2 not valid UTF-8"):
        dataset = data.load_target("fdu:dvd", tmp_path)
    assert dataset.undecodable_lines == 1 and dataset.texts[1] == "a clich\ufffd of a film"
    assert len(dataset) == 6


def test_fdu_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown FDU-MTL domain 'kitchen'.*fdu:kitchen_housewares"):
        data.load_target("fdu:kitchen", tmp_path)
    write_fdu(tmp_path, "books", ["1\tgood", "2\tbad"], ["1\tok"], ["x"])
    with pytest.raises(DataFormatError, match=r"books.task.train line 2: expected LABEL<TAB>TEXT"):
        data.load_target("fdu:books", tmp_path)
    with pytest.raises(DatasetNotFoundError):
        data.load_target("fdu:music", tmp_path / "nowhere")


# ------------------------------------------------------------------------------------ unlabelled text


def test_unlabelled_text_of_fdu_and_amazon_domains(tmp_path):
    write_fdu(tmp_path, "kitchen_housewares", ["1\tgood", "0\tbad"], ["1\tok", "0\tno"],
              ["I have an old beagle", "", "  A second review  "])
    assert data.load_unlabelled("fdu:kitchen_housewares", tmp_path) == ["I have an old beagle", "A second review"]
    assert data.load_unlabelled("amazon:kitchen", tmp_path) == ["I have an old beagle", "A second review"]
    assert data.load_unlabelled("amazon:kitchen_&_housewares", tmp_path) == ["I have an old beagle",
                                                                              "A second review"]


@pytest.mark.parametrize("name, content", [
    ("u.txt", "first text\n\nsecond, text\n"),
    ("u.csv", 'id,text\n1,first text\n2,"second, text"\n'),
    ("u.tsv", "text\tlabel\nfirst text\t1\nsecond, text\t0\n"),
    ("u.jsonl", '{"text": "first text"}\n{"text": "second, text", "stars": 3}\n'),
])
def test_unlabelled_text_of_a_users_file(tmp_path, name, content):
    assert data.load_unlabelled(write(tmp_path / name, content)) == ["first text", "second, text"]


@pytest.mark.parametrize("name, content, error, message", [
    ("none.txt", None, FileNotFoundError, r"unlabelled text file .*none.txt does not exist"),
    ("cols.csv", "review,label\nx,1\n", DataFormatError, r"no column 'text'; columns found: \['review', 'label'\]"),
    ("blank.txt", "\n \n", DataFormatError, r"blank.txt holds no text"),
    ("empty.csv", "", DataFormatError, r"empty.csv holds no text"),
    ("header.tsv", "text\tlabel\n", DataFormatError, r"header.tsv holds no text"),
    ("words.docx", "x", ValueError, r"unknown unlabelled text .*words.docx"),
])
def test_unlabelled_text_errors(tmp_path, name, content, error, message):
    spec = write(tmp_path / name, content) if content is not None else str(tmp_path / name)
    with pytest.raises(error, match=message):
        data.load_unlabelled(spec)


def test_sst2_has_no_unlabelled_text():
    with pytest.raises(ValueError, match="sst2 has no unlabelled text"):
        data.load_unlabelled("sst2")


FDU_README = {  # ../shared/data/README.md, section 4: test reviews with a copy in the train / unlabelled file,
    # counted there by the first 80 letters and digits of each text
    "apparel": (6, 12), "books": (7, 7), "camera_photo": (66, 65), "dvd": (14, 9), "electronics": (11, 52),
    "health_personal_care": (30, 25), "kitchen_housewares": (9, 13), "magazines": (163, 135), "music": (9, 5),
    "video": (66, 36)}


@pytest.mark.parametrize("domain", sorted(FDU_README))
def test_fdu_domains_on_the_real_data(shared_data_dir, domain):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dvd's one undecodable line: checked below
        dataset = data.load_target(f"fdu:{domain}", shared_data_dir)
    split = data.split_target(dataset)
    assert len(split.test) == 400 and 183 <= split.test.labels.sum() <= 217
    assert len(split.pool) + split.dropped_as_test == {"camera_photo": 1597, "electronics": 1598,
                                                         "magazines": 1570}.get(domain, 1600)
    assert dataset.undecodable_lines == (1 if domain == "dvd" else 0)
    test_keys = {data.same_text_key(text) for text in split.test.texts}
    assert not any(data.same_text_key(text) in test_keys for text in split.pool.texts)
    assert not any(re.search(r"\w (n't|'s|'m|'re|'ve|'ll|'d)(?![\w'])", text) for text in dataset.texts)
    unlabelled = data.load_unlabelled(f"fdu:{domain}", shared_data_dir)
    kept, dropped = data.drop_test_texts(unlabelled, split.test.texts)
    assert len(unlabelled) == 2000 and len(kept) == 2000 - dropped
    # The README counts distinct test texts with a copy in the unlabelled file by their first 80 letters and digits,
    # a coarser rule than the whole text: it may find a couple more (an edited repost), never fewer; each copy found
    # here is dropped.
    unlabelled_keys = {data.same_text_key(text) for text in unlabelled}
    copied_tests = {key for key in map(data.same_text_key, split.test.texts) if key in unlabelled_keys}
    assert 0 <= FDU_README[domain][1] - len(copied_tests) <= 2 and dropped >= len(copied_tests)
