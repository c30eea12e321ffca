"""Where the datasets are: the course's one data path rule. Introduced in ``notebooks/00_setup.ipynb``.

1. A folder passed explicitly (``data_dir=...``) is used as it is.
2. Otherwise, if the environment variable ``TL_DATA_DIR`` is set, datasets are read from that folder, and
   nothing is ever downloaded or written there (it may be a shared, read-only copy).
3. Otherwise datasets live in a per-user cache (``$TL_CACHE_DIR``, else ``$XDG_CACHE_HOME/tl-course``, else
   ``~/.cache/tl-course``); the first use downloads the canonical archive there, shows a progress bar, verifies
   its checksum, and only then moves it into place.

Every folder uses the same layout (the layout of ``../shared/data`` on the course machines)::

    aclImdb_v1.tar.gz            IMDB, read straight from the archive (or an extracted aclImdb/ folder)
    multi_domain_sentiment/sorted_data_acl/{books,dvd,electronics,kitchen_&_housewares}/{positive,negative}.review
    SST-2/{train,dev,test}.tsv
    fdu-mtl/DOMAIN.task.{train,test,unlabel}   ten FDU-MTL domains (apparel, books, ..., video)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR_ENV = "TL_DATA_DIR"
CACHE_DIR_ENV = "TL_CACHE_DIR"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is neither where the data path rule looks nor downloadable; the message says how to fix it."""


class ChecksumError(OSError):
    """A downloaded (or cached) file does not match its published checksum."""


@dataclass(frozen=True)
class DatasetSource:
    """One dataset: where it sits inside a data folder, and where its canonical archive is published."""

    name: str  # key used throughout tl_core: "imdb", "amazon", "sst2", "fdu"
    title: str  # human name, with the paper to cite
    layouts: tuple[str, ...]  # paths inside a data folder, any one of which counts as the dataset being present
    url: str  # canonical archive
    archive: str  # file name of the downloaded archive
    checksum: str | None  # "sha256:<hex>" or "md5:<hex>" of the archive; None when none is published
    unpack_into: str | None  # None: keep the archive as it is; else the folder to unpack it into
    files_sha256: dict[str, str] = field(default_factory=dict)  # files checked after unpacking
    archive_folder: str | None = None  # the folder inside the archive that holds the dataset; None: all of it


_MAN_COMMIT = "b57b4c14340db1ca7bffb5d9737b7c2601dc8df2"

DATASETS: dict[str, DatasetSource] = {
    source.name: source
    for source in (
        DatasetSource(
            name="imdb",
            title="Large Movie Review Dataset v1.0 (Maas et al., ACL 2011)",
            layouts=("aclImdb_v1.tar.gz", "aclImdb"),
            url="https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
            archive="aclImdb_v1.tar.gz",
            checksum="sha256:c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
            unpack_into=None,
        ),
        DatasetSource(
            name="amazon",
            title="Multi-Domain Sentiment Dataset (Blitzer, Dredze & Pereira, ACL 2007)",
            layouts=("multi_domain_sentiment/sorted_data_acl",),
            url="https://www.cs.jhu.edu/~mdredze/datasets/sentiment/domain_sentiment_data.tar.gz",
            archive="domain_sentiment_data.tar.gz",
            # No checksum of the archive is published; the eight labelled files inside are checked instead.
            checksum=None,
            unpack_into="multi_domain_sentiment",
            files_sha256={
                "sorted_data_acl/books/positive.review":
                    "72c39d63dfd7edf77895de7c796f67e095f847f4b56bca0704aba3bbf57f23b9",
                "sorted_data_acl/books/negative.review":
                    "562c58de7f739c9af2d62377ea2253ff73e89f69c84a332088f341cdb0e09660",
                "sorted_data_acl/dvd/positive.review":
                    "fcf5207f79aa8af4910b5793c15fe90f25eb39501f9f4bdbd8f60a817224e28d",
                "sorted_data_acl/dvd/negative.review":
                    "de1b539d29dc7edfbabf0ca4b1bce4e296d486533f3730012e4b49e36e762fa3",
                "sorted_data_acl/electronics/positive.review":
                    "98daefad1056ec8d98fe910bdb50ae282695b9c2b89c2bc1513b9d2203b38a11",
                "sorted_data_acl/electronics/negative.review":
                    "571287120d63e289753231804f33169b2ec4348ca6d24fa0d781a3a08e6376ff",
                "sorted_data_acl/kitchen_&_housewares/positive.review":
                    "90ebec2b5a6ac040e16836c32b8efbd92ce98804b916c6367f7ade3b8d536798",
                "sorted_data_acl/kitchen_&_housewares/negative.review":
                    "0ad1fa1f4539b47933fcef01be674b1246d1dc01403197c1439004cbaf4b543e",
            },
        ),
        DatasetSource(
            name="sst2",
            title="SST-2 from GLUE (Socher et al., EMNLP 2013; Wang et al., ICLR 2019)",
            layouts=("SST-2",),
            url="https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
            archive="SST-2.zip",
            checksum="md5:9f81648d4199384278b86e315dac217c",
            unpack_into=".",
        ),
        DatasetSource(
            name="fdu",
            title="FDU-MTL, ten Amazon product domains (Liu, Qiu & Huang, ACL 2017)",
            layouts=("fdu-mtl",),
            # The copy in Chen & Cardie's MAN repository (MIT licence), at the commit ../shared/data/ holds.
            url=f"https://github.com/ccsasuke/man/archive/{_MAN_COMMIT}.tar.gz",
            archive=f"man-{_MAN_COMMIT}.tar.gz",
            checksum=None,  # GitHub's archives are not byte-stable; the thirty files inside are checked instead
            unpack_into="fdu-mtl",
            archive_folder=f"man-{_MAN_COMMIT}/data/fdu-mtl",
            files_sha256={
                "apparel.task.test":
                    "8e591ec14fa0e3d26837b9a40c99d3a93b49f47e7a3fbe4d0afe1b4e1dd45439",
                "apparel.task.train":
                    "589702d71eded8ca23907acf6e434f203c8c6feb09737106f77f03707641ffc3",
                "apparel.task.unlabel":
                    "7dc0cf126e07552b41d2574627a3a6d0d9c3f958a368fe5e41d8cd353b0f4a3f",
                "books.task.test":
                    "b451ac03e48b599bf35dd1a450158389e1ac9018950e95c631053ac14a5b10ad",
                "books.task.train":
                    "40c4c5971165b9e0a509a60472c3bf06c8e1430d4944833141eb3c34d986b65e",
                "books.task.unlabel":
                    "5121a335a736523b5bd0dc47e05da2b085bf6f42aec2ca20ba7142d620241563",
                "camera_photo.task.test":
                    "3fdea0837d6c41f04720dce8d2e690bbdeb5019ecac749f8f38472ac1dcfa439",
                "camera_photo.task.train":
                    "425bf93c303b2f38d2f53649508ea9e55d0114679ecb00fda5c2c15ebbe9e708",
                "camera_photo.task.unlabel":
                    "d94c682441e8b8a57ff992e244ef0137e07528cd9f3631874f89e2d40aefca04",
                "dvd.task.test":
                    "762e6e030892375eda4f211be58624a3bb6a07c966901c79b803837d21fca4b5",
                "dvd.task.train":
                    "47334240d9cef76ac5f15a10f9082c3d2c6e7f9a9bb0478a3800ede2a0300771",
                "dvd.task.unlabel":
                    "5673c05efcefbf5d38a1ca7e1110cbf58a95e1b02a7a0c729c46f2ba21f223bf",
                "electronics.task.test":
                    "a4d2e7d2a5b8b501a6611e45e1b241aa0d601388b79265cfc94c203cb52f8b8c",
                "electronics.task.train":
                    "bb2f28c4a20e3d075dd71ff049970bd445f4d47bcc8404a68eb03850413a8da7",
                "electronics.task.unlabel":
                    "da24efbec0053b8b8383e530dab3e4a358e75ae2e65d09624c6843bad30f69a8",
                "health_personal_care.task.test":
                    "07f289177da7ebe71f1ac2ee3d5a25f190913e2a11116f0fb55862e01b60a331",
                "health_personal_care.task.train":
                    "384f1ec3d76a2f755844cac4bd7725b86bc79910dae60fc33f133e380f827b4a",
                "health_personal_care.task.unlabel":
                    "70bd1a5b004f2d0edc6bcf0ec6ff5c464f232a351bdcf4b88d4a655d97110355",
                "kitchen_housewares.task.test":
                    "86bcc015f7cfa773880951830ac6161dc2b8717e8a69773ca11a5bd6529b2020",
                "kitchen_housewares.task.train":
                    "df5c9e8473b084a6b252dfbb5e074adcaacb9638a882fee3f20d62d747f45d6f",
                "kitchen_housewares.task.unlabel":
                    "6255b3597385952d45920ce4451291a246ecd997ef75d964ff56fff9e31ad9e7",
                "magazines.task.test":
                    "620ecd0ccd7b7f73483b8cdcef5ca07dff92e2d57c9cf4b6e9f7d669a681f6c3",
                "magazines.task.train":
                    "d4805a9f094c1c7befa64bc42ea846261b1290a2fd120c46f45c9e89faf782ae",
                "magazines.task.unlabel":
                    "87de41f73d65b525d2918833a944427196cd4a0346d9d083086b4814333fd9bd",
                "music.task.test":
                    "54a157c56930b9e587b6b955fe4b2e3258d2f70d0d58ccbbf40a4bfd846ee204",
                "music.task.train":
                    "f0b41243475c16391a02e91d87710ed87d68927d4d77f526a3d2369a98ac572e",
                "music.task.unlabel":
                    "3f2ee8a5becb232368d2bc599ab131778558e05009f8f6957ce2a10106a6ea9a",
                "video.task.test":
                    "8de7a49ee3001409c9049b1f52949d78c7875cb92e031b43f5cef681dfd341e4",
                "video.task.train":
                    "2867b3e5fffc44132aa61ff49dd608eeacc503b2c9c2133680f0cb4a7a258f3e",
                "video.task.unlabel":
                    "0178424fe97c0203c0f3cabcb31e1370bf656895b76a189ecf1ecfd151abe3f2",
            },
        ),
    )
}


def cache_dir() -> Path:
    """The per-user folder that downloaded datasets are kept in."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tl-course"


def data_dir(explicit: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The folder datasets are read from, and which part of the rule chose it ("argument", the env var, "cache")."""
    if explicit is not None:
        return Path(explicit).expanduser(), "argument"
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser(), DATA_DIR_ENV
    return cache_dir(), "cache"


def find_dataset(name: str, data_dir_: str | os.PathLike | None = None) -> Path | None:
    """Where dataset ``name`` is under the rule's folder, or None; never downloads."""
    source = _source(name)
    root, _ = data_dir(data_dir_)
    for layout in source.layouts:
        if (root / layout).exists():
            return root / layout
    return None


def dataset_path(name: str, data_dir_: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The path of dataset ``name`` (``"imdb"``, ``"amazon"``, ``"sst2"`` or ``"fdu"``) by the data path rule.

    Downloads into the cache on first use when neither an explicit folder nor ``TL_DATA_DIR`` is given (and
    ``download`` is true). Raises :class:`DatasetNotFoundError` that says what was looked for and how to fix it.
    """
    source = _source(name)
    found = find_dataset(name, data_dir_)
    if found is not None:
        return found
    root, chosen_by = data_dir(data_dir_)
    looked_for = ", ".join(str(root / layout) for layout in source.layouts)
    if chosen_by != "cache" or not download:
        where = {"argument": "the folder passed as data_dir", DATA_DIR_ENV: f"{DATA_DIR_ENV}={root}",
                 "cache": "the download cache (downloads are turned off here)"}[chosen_by]
        raise DatasetNotFoundError(
            f"{source.title} not found. Looked for {looked_for} ({where}). Fix: point {DATA_DIR_ENV} at a folder "
            f"that holds {' or '.join(source.layouts)}, or unset {DATA_DIR_ENV} to download it into the cache "
            f"{cache_dir()} from {source.url}.")
    try:
        return _download_into_cache(source, root)
    except (urllib.error.URLError, OSError, ChecksumError) as error:
        raise DatasetNotFoundError(
            f"{source.title} not found and could not be downloaded. Looked for {looked_for}; downloading "
            f"{source.url} failed: {error}. Fix: set {DATA_DIR_ENV} to a folder that holds "
            f"{' or '.join(source.layouts)}, or download {source.url} yourself into {root}.") from error


def file_checksum(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: str | os.PathLike, checksum: str) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has ``checksum`` ("sha256:<hex>" or "md5:<hex>")."""
    algorithm, expected = checksum.split(":", 1)
    actual = file_checksum(path, algorithm)
    if actual != expected.lower():
        raise ChecksumError(f"{path} has {algorithm} {actual}, expected {expected}: the file is incomplete or "
                            "not the published one")


def download(url: str, destination: str | os.PathLike, checksum: str | None = None, *,
             progress: bool = True) -> Path:
    """Download ``url`` to ``destination`` with a progress bar; verify ``checksum``; move into place atomically.

    Nothing is left at ``destination`` if the download is interrupted or the checksum does not match.
    """
    from tqdm.auto import tqdm

    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=destination.parent, prefix=destination.name + ".", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {destination.name}",
                      disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
        if checksum is not None:
            verify_checksum(partial, checksum)
        os.replace(partial, destination)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return destination


def _source(name: str) -> DatasetSource:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def _download_into_cache(source: DatasetSource, root: Path) -> Path:
    archive = root / source.archive
    if not archive.exists():
        download(source.url, archive, source.checksum)
    if source.unpack_into is not None:
        _unpack(source, archive, root)
    found = find_dataset(source.name, root)
    if found is None:
        raise ChecksumError(f"{archive} does not hold {' or '.join(source.layouts)}")
    return found


def _unpack(source: DatasetSource, archive: Path, root: Path) -> None:
    """Unpack into a temporary folder, check the known files, then move the result into place."""
    target = root / source.unpack_into
    with tempfile.TemporaryDirectory(dir=root, prefix=".unpack-") as scratch:
        if archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(scratch)
        else:
            with tarfile.open(archive) as bundle:
                bundle.extractall(scratch, filter="data")
        content = Path(scratch) / (source.archive_folder or ".")
        if not content.is_dir():
            raise ChecksumError(f"{archive} has no folder {source.archive_folder}: not the published archive")
        for relative, expected in source.files_sha256.items():
            verify_checksum(content / relative, f"sha256:{expected}")
        target.mkdir(parents=True, exist_ok=True)
        for entry in content.iterdir():
            if not (target / entry.name).exists():
                shutil.move(str(entry), target / entry.name)
