"""Pretraining the language model, on one process or on many: the same code under ``torchrun``.

    python -m tl_core.pretrain --run-dir runs/quick                       # IMDB train + unsup, one process
    torchrun --nproc_per_node 4 -m tl_core.pretrain --run-dir runs/big    # four processes, gradients averaged
    python -m tl_core.pretrain --run-dir runs/wiki --corpus wikitext-103/ --epochs 3 --hidden-size 512

Under ``torchrun`` every process builds the same model (``DistributedDataParallel`` copies rank 0's weights to
the others), reads its own rows of the parallel streams (:class:`tl_core.lm.LMStream` with ``rank`` and
``world_size``) and averages its gradients with the others' after each backward pass (gloo on CPUs, NCCL on
GPUs), so one step on N processes is one step on the whole global batch. Only rank 0 shows progress and writes
the checkpoint. Introduced in ``notebooks/04_language_model.ipynb``, which calls :func:`pretrain` directly.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import data, lm, text, train

#: Unlabelled IMDB reviews held out as the language model's validation text (never trained on).
DEFAULT_VAL_REVIEWS = 2000


@dataclass
class Corpus:
    """Token ids of the texts a language model trains on and of the held-out texts it is validated on."""

    train: list[np.ndarray]
    val: list[np.ndarray]
    description: str  # where the texts came from, for the record
    dropped_as_test: int = 0  # texts left out because a test split holds them

    @property
    def train_tokens(self) -> int:
        return int(sum(len(row) + 1 for row in self.train))  # each text ends with <eos>


def imdb_corpus(vocab: text.Vocab, data_dir=None, val_reviews: int = DEFAULT_VAL_REVIEWS, *,
                max_reviews: int | None = None, seed: int = 0, progress: bool = False) -> Corpus:
    """IMDB's text for the language model: the 25,000 train reviews and the 50,000 unlabelled ones, without
    their labels, less the unlabelled reviews that also occur in IMDB's test split (the data README counts 620
    unsup texts that occur in train or test); the last ``val_reviews`` unlabelled reviews are held out for
    validation. The test split's text never reaches training (:func:`tl_core.data.drop_test_texts`).
    ``max_reviews``: train on a seeded sample of that many reviews only (a smoke test)."""
    unsup, dropped = data.drop_test_texts(data.load_imdb("unsup", data_dir).texts, data.load_imdb("test", data_dir).texts)
    if not 0 < val_reviews < len(unsup):
        raise ValueError(f"val_reviews must be between 1 and {len(unsup) - 1}, got {val_reviews}")
    train_texts = data.load_imdb("train", data_dir).texts + unsup[:-val_reviews]
    if max_reviews is not None and max_reviews < len(train_texts):
        sample = np.random.default_rng(seed).choice(len(train_texts), max_reviews, replace=False)
        train_texts = [train_texts[i] for i in sorted(sample)]
    return Corpus(lm.encode_texts(train_texts, vocab, progress=progress),
                  lm.encode_texts(unsup[-val_reviews:], vocab, progress=progress),
                  f"IMDB train + unsup ({len(train_texts):,} reviews; {val_reviews:,} unsup held out)", dropped)


def file_corpus(path: str | Path, vocab: text.Vocab, val_fraction: float = 0.02, seed: int = 0) -> Corpus:
    """A corpus of the user's own (:func:`tl_core.lm.read_corpus`: a folder of .txt files or one text per line),
    a seeded ``val_fraction`` of its texts held out for validation."""
    texts = lm.read_corpus(path)
    if len(texts) < 2:
        raise ValueError(f"corpus {path} has {len(texts)} text: at least two are needed (one held out to validate)")
    order = np.random.default_rng(seed).permutation(len(texts))
    held_out = max(1, int(round(val_fraction * len(texts))))
    val = [texts[i] for i in order[:held_out]]
    train_texts = [texts[i] for i in order[held_out:]]
    return Corpus(lm.encode_texts(train_texts, vocab), lm.encode_texts(val, vocab),
                  f"{path} ({len(train_texts):,} texts; {held_out:,} held out)")


def profile_lm_config(profile: str, vocab_size: int, notebooks_dir: str | os.PathLike | None = None
                      ) -> lm.LMConfig:
    """The language model that notebook 04 builds under ``profile`` (``"quick"``: its defaults; ``"full"``,
    ``"gpu"``: ``notebooks/params/<profile>.yaml``), for a vocabulary of ``vocab_size`` words: its sizes, its
    regularisation and its output layer, the embedding as wide as notebook 02's Word2Vec vectors. For code that
    must measure the course's own model (``benchmarks/lm.py``); the notebook writes the same config out."""
    from .course import notebook_values

    values = notebook_values("04", profile, notebooks_dir)
    embedding_dim = notebook_values("02", profile, notebooks_dir)["w2v_vector_size"]
    return lm.LMConfig(vocab_size=vocab_size, embedding_dim=embedding_dim, hidden_size=values["lm_hidden_size"],
                       num_layers=values["lm_num_layers"],
                       embedding_dropout=values["lm_embedding_dropout"], input_dropout=values["lm_input_dropout"],
                       hidden_dropout=values["lm_hidden_dropout"], weight_drop=values["lm_weight_drop"],
                       output_dropout=values["lm_output_dropout"], output_layer=values["lm_output_layer"],
                       cutoffs=tuple(values["lm_cutoffs"]), sampled_words=values["lm_sampled_words"])


# ----------------------------------------------------------------------------------------------------------------
# One process or many
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Distributed:
    """Where this process stands: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the process group that ``torchrun`` describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR…),
    with NCCL on GPUs and gloo on CPUs; a plain ``python`` run is one process of one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = None
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device is not None else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


def pretrain(corpus: Corpus, vocab: text.Vocab, lm_config: lm.LMConfig, train_config: train.TrainConfig, *,
             batch_size: int = 64, bptt: int = 70, max_tokens: int | None = None, val_batch_size: int = 64,
             embeddings: torch.Tensor | None = None, distributed: Distributed | None = None
             ) -> tuple[lm.LanguageModel, train.History]:
    """Train a language model on ``corpus`` through the one training loop; the model of the best validation
    epoch comes back. ``batch_size`` is the global batch (split among the processes); ``max_tokens`` cuts each
    epoch's stream to that many tokens (the quick profile reads a part of the corpus). ``embeddings`` (V, E)
    start the word vectors (Word2Vec's). With several processes the gradients are averaged; every process ends
    with the same weights."""
    distributed = distributed or Distributed()
    if train_config.device is None and distributed.device is not None:
        train_config = replace(train_config, device=str(distributed.device))
    train.seed_everything(train_config.seed)  # the same initial weights in every process
    model = lm.LanguageModel(lm_config, embeddings=embeddings)
    stream = lm.LMStream(corpus.train, batch_size, bptt, seed=train_config.seed, rank=distributed.rank,
                         world_size=distributed.world_size, max_tokens=max_tokens)
    val_tokens = sum(len(row) + 1 for row in corpus.val)
    # A small held-out text gets fewer streams, so that each is at least one window long.
    val_stream = lm.LMStream(corpus.val, max(1, min(val_batch_size, val_tokens // (bptt + 1))), bptt,
                             variable=False, shuffle=False)
    trained: torch.nn.Module = model
    if distributed.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        device = torch.device(train_config.device) if train_config.device else torch.device("cpu")
        model.to(device)
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    config = replace(train_config, progress=train_config.progress and distributed.is_main)
    history = train.fit(trained, stream, val_stream, config, objective=lm.LanguageModelObjective(),
                        title="language model")
    return model, history


def record(model: lm.LanguageModel, history: train.History, corpus: Corpus, *, batch_size: int, bptt: int,
           world_size: int = 1) -> dict[str, Any]:
    """What ``metrics.json["language_model"]`` keeps of a pretraining run."""
    best = history.epochs[(history.best_epoch or 1) - 1]
    tokens = int(sum(epoch["tokens"] for epoch in history.epochs))  # read by this process
    return {"val_perplexity": round(best["val_perplexity"], 2), "val_loss": round(best["val_loss"], 4),
            "train_tokens": tokens * world_size, "train_seconds": round(history.seconds, 1),
            "tokens_per_second": round(tokens * world_size / max(history.seconds, 1e-9)),
            "epochs": len(history.epochs), "best_epoch": history.best_epoch, "processes": world_size,
            "batch_size": batch_size, "bptt": bptt, "corpus": corpus.description,
            "unlabelled_dropped_as_test": corpus.dropped_as_test, "config": model.config.to_dict()}


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------

_TRAIN_FIELDS = ("epochs", "lr", "weight_decay", "grad_clip", "schedule", "patience", "seed", "progress")


def _add_dataclass_options(parser: argparse.ArgumentParser, cls, names: Sequence[str], defaults) -> None:
    for item in fields(cls):
        if item.name not in names:
            continue
        default = getattr(defaults, item.name)
        kind = type(default) if not isinstance(default, tuple) else None
        option = "--" + item.name.replace("_", "-")
        if isinstance(default, tuple):
            parser.add_argument(option, type=int, nargs="+", default=list(default), help=f"(default {default})")
        elif kind is bool:
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(option, type=kind, default=default, help=f"(default {default})")


def main(argv: Sequence[str] | None = None) -> int:
    lm_defaults = lm.LMConfig(vocab_size=text.DEFAULT_MAX_SIZE)
    train_defaults = train.TrainConfig(lr=3e-3, schedule="linear", grad_clip=0.25)
    parser = argparse.ArgumentParser(prog="python -m tl_core.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path,
                        help="run directory holding vocab.json (notebook 01) and, unless --no-word2vec, the "
                             "embedding matrix (02); the checkpoint is written there")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="a folder of .txt files or a file with one text per line (default: IMDB train + unsup)")
    parser.add_argument("--data-dir", default=None, help="data folder for IMDB (default: the data path rule)")
    parser.add_argument("--word2vec", action=argparse.BooleanOptionalAction, default=True,
                        help="start the word vectors from the run's Word2Vec matrix")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch: parallel streams in all")
    parser.add_argument("--bptt", type=int, default=70, help="mean window length")
    parser.add_argument("--max-tokens", type=int, default=None, help="read at most this many tokens per epoch")
    parser.add_argument("--output", default=lm.LM_CHECKPOINT, help="checkpoint file name inside --run-dir")
    _add_dataclass_options(parser, lm.LMConfig, [f.name for f in fields(lm.LMConfig) if f.name != "vocab_size"],
                           lm_defaults)
    _add_dataclass_options(parser, train.TrainConfig, _TRAIN_FIELDS, train_defaults)
    args = parser.parse_args(argv)

    distributed = init_distributed()
    vocab = text.Vocab.load(args.run_dir / text.VOCAB_FILE)
    lm_values = {f.name: getattr(args, f.name) for f in fields(lm.LMConfig) if f.name != "vocab_size"}
    lm_config = lm.LMConfig(vocab_size=len(vocab), **lm_values)
    train_config = replace(train_defaults, **{name: getattr(args, name) for name in _TRAIN_FIELDS})
    embeddings = None
    if args.word2vec:
        from .embeddings import load_embedding_matrix

        matrix = load_embedding_matrix(args.run_dir, vocab)
        if matrix.dim != lm_config.embedding_dim:
            parser.error(f"the run's Word2Vec vectors have {matrix.dim} dimensions but --embedding-dim is "
                         f"{lm_config.embedding_dim}; match them or pass --no-word2vec")
        embeddings = torch.from_numpy(matrix.weights)
    corpus = (file_corpus(args.corpus, vocab) if args.corpus is not None
              else imdb_corpus(vocab, args.data_dir, progress=distributed.is_main))
    started = time.perf_counter()
    model, history = pretrain(corpus, vocab, lm_config, train_config, batch_size=args.batch_size, bptt=args.bptt,
                              max_tokens=args.max_tokens, embeddings=embeddings, distributed=distributed)
    if distributed.is_main:
        summary = record(model, history, corpus, batch_size=args.batch_size, bptt=args.bptt,
                         world_size=distributed.world_size)
        path = lm.save_language_model(args.run_dir / args.output, model, vocab.itos, summary)
        print(f"saved {path} (validation perplexity {summary['val_perplexity']}, "
              f"{time.perf_counter() - started:.0f} s, {distributed.world_size} process(es))")
    if distributed.world_size > 1:
        import torch.distributed as dist

        # every process waits here until the main one has saved: torn down while another still runs, gloo's threads
        # can abort the process at exit ("terminate called without an active exception", seen once in CI)
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
