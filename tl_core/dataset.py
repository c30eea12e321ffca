"""One dataset in memory: :class:`TextDataset`, what every loader of ``tl_core.data`` returns, and the error its
loaders raise for a file that is not what they expect. Introduced in ``notebooks/01_data.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LABEL_NAMES = {0: "negative", 1: "positive"}


class DataFormatError(ValueError):
    """A data file is not what its loader expects; the message names the file, the problem and the fix."""


@dataclass
class TextDataset:
    """Texts with their labels and what else the source says about them. Introduced in 01_data.

    ``labels`` is an int64 array (1 = positive, 0 = negative) or None for unlabelled texts (IMDB ``unsup``);
    ``ratings`` the stars (IMDB 1-10, Amazon 1-5) or None; ``titles`` the review titles (Amazon) or None;
    ``fixed_test`` the indices of a published labelled test set that ``data.split_target`` uses instead of a
    random one (SST-2: the GLUE dev set; FDU-MTL: each domain's test file).
    """

    name: str  # "imdb:train", "amazon:kitchen", "sst2", or the file name of a user's target
    texts: list[str]
    labels: np.ndarray | None
    ids: list[str]  # unique within the dataset, e.g. "train/pos/123" (IMDB split/folder/file id)
    ratings: np.ndarray | None = None
    titles: list[str] | None = None
    fixed_test: np.ndarray | None = field(default=None, repr=False)
    # What the loader had to repair, so that a caller can report it (FDU-MTL, notebooks/07):
    undecodable_lines: int = 0  # lines of the files that were not valid UTF-8, decoded with U+FFFD in place

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
