"""tl_core: the package behind the transfer-learning-for-NLP notebooks in ``notebooks/``.

One concern per module (see the map in README.md). Importing ``tl_core`` is cheap: the compiled extension and
the heavier modules load the first time one of their names is used.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "lstm_cell": "ops",
    "lstm_cell_reference": "ops",
    "lstm_layer": "ops",
    "lstm_layer_reference": "ops",
    "FusedLSTM": "lstm",
    "dataset_path": "paths",
    "DatasetNotFoundError": "paths",
    "TextDataset": "data",
    "load_imdb": "data",
    "load_target": "data",
    "train_val_split": "data",
    "split_target": "data",
    "draw_labels": "data",
    "tokenize": "text",
    "Vocab": "text",
    "numericalize": "text",
    "make_loader": "text",
    "BucketBatchSampler": "text",
    "pad_collate": "text",
    "train_word2vec": "embeddings",
    "load_vectors": "embeddings",
    "embedding_matrix": "embeddings",
    "load_embedding_matrix": "embeddings",
    "predict": "analysis",
    "LanguageModel": "lm",
    "LMConfig": "lm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'tl_core' has no attribute {name!r}")
