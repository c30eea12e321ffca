"""The data path rule (tl_core/paths.py): TL_DATA_DIR, the cache, downloads with checksums, clear errors."""

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tl_core import paths
from tl_core.paths import DatasetNotFoundError


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No TL_DATA_DIR, and a cache of the test's own."""
    monkeypatch.delenv(paths.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(paths.CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path


def make_tar_gz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def fake_source(monkeypatch, name, **changes):
    source = paths.DATASETS[name]
    monkeypatch.setitem(paths.DATASETS, name, paths.DatasetSource(**{**source.__dict__, **changes}))


def test_tl_data_dir_is_used(monkeypatch, tmp_path):
    (tmp_path / "SST-2").mkdir()
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path))
    assert paths.data_dir() == (tmp_path, paths.DATA_DIR_ENV)
    assert paths.dataset_path("sst2") == tmp_path / "SST-2"


def test_real_datasets_are_found(shared_data_dir):
    assert paths.dataset_path("imdb", shared_data_dir).name == "aclImdb_v1.tar.gz"
    assert paths.dataset_path("amazon", shared_data_dir).is_dir()
    assert (paths.dataset_path("sst2", shared_data_dir) / "train.tsv").exists()


def test_extracted_imdb_folder_counts_too(tmp_path):
    (tmp_path / "aclImdb").mkdir()
    assert paths.dataset_path("imdb", tmp_path) == tmp_path / "aclImdb"


def test_empty_tl_data_dir_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as error:
        paths.dataset_path("imdb")
    message = str(error.value)
    assert str(tmp_path / "aclImdb_v1.tar.gz") in message  # what was looked for
    assert "TL_DATA_DIR" in message and "unset" in message  # how to fix it
    assert not any(tmp_path.iterdir()), "nothing may be downloaded or written into TL_DATA_DIR"


def test_explicit_folder_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    (tmp_path / "SST-2").mkdir()
    assert paths.dataset_path("sst2", tmp_path) == tmp_path / "SST-2"


def test_unset_means_the_cache(isolated):
    root, chosen_by = paths.data_dir()
    assert chosen_by == "cache" and root == isolated / "cache"


def test_download_verifies_and_caches(isolated, monkeypatch):
    archive = make_tar_gz(isolated / "upstream.tar.gz", {"aclImdb/README": b"hello"})
    checksum = "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
    fake_source(monkeypatch, "imdb", url=archive.as_uri(), checksum=checksum)
    path = paths.dataset_path("imdb")
    assert path == isolated / "cache" / "aclImdb_v1.tar.gz"
    assert path.read_bytes() == archive.read_bytes()
    archive.unlink()  # the second use reads the cache, no download
    assert paths.dataset_path("imdb") == path


def test_download_with_a_wrong_checksum_leaves_nothing(isolated, monkeypatch):
    archive = make_tar_gz(isolated / "upstream.tar.gz", {"aclImdb/README": b"hello"})
    fake_source(monkeypatch, "imdb", url=archive.as_uri(), checksum="sha256:" + "0" * 64)
    with pytest.raises(DatasetNotFoundError, match="sha256"):
        paths.dataset_path("imdb")
    cache = isolated / "cache"
    assert not cache.exists() or not any(cache.iterdir()), "no partial or unverified file may stay"


def test_no_network_is_a_clear_error(isolated, monkeypatch):
    fake_source(monkeypatch, "imdb", url=(isolated / "nowhere.tar.gz").as_uri())
    with pytest.raises(DatasetNotFoundError) as error:
        paths.dataset_path("imdb")
    message = str(error.value)
    assert "could not be downloaded" in message and "TL_DATA_DIR" in message
    assert str(isolated / "cache" / "aclImdb_v1.tar.gz") in message


def test_unpacked_download_checks_the_known_files(isolated, monkeypatch):
    content = b"<review>\n<review_text>\ngood\n</review_text>\n</review>\n"
    files = {"sorted_data_acl/books/positive.review": content}
    archive = make_tar_gz(isolated / "upstream.tar.gz", files)
    fake_source(monkeypatch, "amazon", url=archive.as_uri(),
                files_sha256={"sorted_data_acl/books/positive.review": hashlib.sha256(content).hexdigest()})
    path = paths.dataset_path("amazon")
    assert (path / "books" / "positive.review").read_bytes() == content

    fake_source(monkeypatch, "amazon", files_sha256={"sorted_data_acl/books/positive.review": "0" * 64})
    monkeypatch.setenv(paths.CACHE_DIR_ENV, str(isolated / "cache2"))
    (isolated / "cache2").mkdir()
    (isolated / "cache2" / "domain_sentiment_data.tar.gz").write_bytes(archive.read_bytes())
    with pytest.raises(DatasetNotFoundError, match="sha256"):
        paths.dataset_path("amazon")
    assert not (isolated / "cache2" / "multi_domain_sentiment").exists()


def test_unknown_dataset():
    with pytest.raises(ValueError, match="known datasets: imdb, amazon, sst2, fdu"):
        paths.dataset_path("mnist")


def test_fdu_mtl_is_taken_from_its_folder_inside_the_repository_archive(isolated, monkeypatch):
    """FDU-MTL is published inside a code repository: only data/fdu-mtl/ of its archive becomes fdu-mtl/."""
    content = b"1\tgood\n"
    folder = "man-abc/data/fdu-mtl"
    archive = make_tar_gz(isolated / "upstream.tar.gz", {f"{folder}/books.task.train": content,
                                                         "man-abc/train.py": b"print('code')"})
    fake_source(monkeypatch, "fdu", url=archive.as_uri(), archive_folder=folder,
                files_sha256={"books.task.train": hashlib.sha256(content).hexdigest()})
    path = paths.dataset_path("fdu")
    assert path == isolated / "cache" / "fdu-mtl" and sorted(p.name for p in path.iterdir()) == ["books.task.train"]
    assert (path / "books.task.train").read_bytes() == content


def test_the_fdu_checksums_match_the_shared_copy(shared_data_dir):
    for relative, expected in paths.DATASETS["fdu"].files_sha256.items():
        paths.verify_checksum(shared_data_dir / "fdu-mtl" / relative, f"sha256:{expected}")
    assert len(paths.DATASETS["fdu"].files_sha256) == 30
