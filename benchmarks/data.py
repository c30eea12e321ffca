"""Data and embeddings speed, side by side in one run: JSON into benchmarks/results/.

    TL_DATA_DIR=../shared/data .venv/bin/python benchmarks/data.py            # load, tokenize, Word2Vec
    .venv/bin/python benchmarks/data.py --repeats 5 --skip-word2vec           # only the fast parts
    .venv/bin/python benchmarks/data.py --word2vec-modes iterable,corpus_file  # gensim's two input paths

Measures, each repeated (min and median reported, since other processes share the cores):
- loading all 100,000 IMDB reviews from the archive (``tl_core.data.load_imdb`` with its cache cleared);
- tokenizing them (``tl_core.text.tokenize_all``) and the token counts;
- Word2Vec CBOW on train + unsup (5 epochs, 2 workers by default), as ``tl_core.embeddings.train_word2vec``
  runs it (``iterable``), and optionally through gensim's ``corpus_file`` path for comparison.
Targets (issue #4): load <= 5 s, tokenize <= 8 s, Word2Vec <= 70 s on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tl_core import data, embeddings, text  # noqa: E402
from tl_core.artifacts import write_json  # noqa: E402

TARGETS_SECONDS = {"load_imdb_all": 5.0, "tokenize_imdb_all": 8.0, "word2vec_train_unsup": 70.0}


def summary(seconds: list[float]) -> dict:
    return {"min_s": round(min(seconds), 3), "median_s": round(statistics.median(seconds), 3),
            "runs_s": [round(s, 3) for s in seconds]}


def load_all(data_dir) -> tuple[dict[str, data.TextDataset], float]:
    data._read_imdb.cache_clear()  # a cold read every time: the archive is parsed again
    started = time.perf_counter()
    splits = {split: data.load_imdb(split, data_dir) for split in data.IMDB_SPLITS}
    return splits, time.perf_counter() - started


def word2vec_corpus_file(sentences, epochs: int, workers: int) -> tuple[float, int]:
    """gensim's corpus_file path (C++ reader, no GIL): the same corpus written as one review per line."""
    from gensim.models import Word2Vec

    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "corpus.txt"
        with open(corpus, "w", encoding="utf-8") as stream:
            for tokens in sentences:
                stream.write(" ".join(tokens) + "\n")
        model = Word2Vec(vector_size=embeddings.DEFAULT_VECTOR_SIZE, window=5, min_count=5, workers=workers,
                         seed=0, hashfxn=embeddings.stable_hash)
        model.build_vocab(corpus_file=str(corpus))
        started = time.perf_counter()
        effective, _ = model.train(corpus_file=str(corpus), total_words=model.corpus_total_words,
                                   total_examples=model.corpus_count, epochs=epochs)
        return time.perf_counter() - started, int(effective)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="data folder (default: the data path rule)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of loading and tokenizing")
    parser.add_argument("--word2vec-repeats", type=int, default=1)
    parser.add_argument("--word2vec-modes", default="iterable", help="comma list of iterable, corpus_file")
    parser.add_argument("--workers", type=int, default=2, help="Word2Vec worker threads")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--skip-word2vec", action="store_true")
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/data-<date>.json)")
    args = parser.parse_args(argv)

    result = {"benchmark": "data", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": "python benchmarks/data.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": {"cpu_cores_available": embeddings.available_cores(), "python": platform.python_version(),
                          "load_average_at_start": list(os.getloadavg())},
              "targets_s": TARGETS_SECONDS}

    load_seconds, tokenize_seconds = [], []
    for repeat in range(args.repeats):
        splits, seconds = load_all(args.data_dir)
        load_seconds.append(seconds)
        texts = [review for split in data.IMDB_SPLITS for review in splits[split].texts]
        started = time.perf_counter()
        tokens = text.tokenize_all(texts)
        tokenize_seconds.append(time.perf_counter() - started)
        print(f"[{repeat + 1}/{args.repeats}] load {load_seconds[-1]:.2f} s, tokenize {tokenize_seconds[-1]:.2f} s",
              flush=True)
    counts = {split: len(splits[split]) for split in data.IMDB_SPLITS}
    token_counts = {}
    start = 0
    for split in data.IMDB_SPLITS:
        token_counts[split] = sum(len(row) for row in tokens[start:start + counts[split]])
        start += counts[split]
    result["load_imdb_all"] = {**summary(load_seconds), "reviews": counts}
    result["tokenize_imdb_all"] = {**summary(tokenize_seconds), "tokens": token_counts,
                                   "tokens_total": sum(token_counts.values()),
                                   "tokens_train_unsup": token_counts["train"] + token_counts["unsup"]}

    if not args.skip_word2vec:
        sentences = tokens[:counts["train"]] + tokens[counts["train"] + counts["test"]:]  # train + unsup
        del tokens
        runs = {}
        for mode in args.word2vec_modes.split(","):
            seconds, effective = [], 0
            for repeat in range(args.word2vec_repeats):
                if mode == "iterable":
                    run = embeddings.train_word2vec(sentences, epochs=args.epochs, workers=args.workers,
                                                    progress=False)
                    seconds.append(run.seconds)
                    effective = run.effective_words
                elif mode == "corpus_file":
                    elapsed, effective = word2vec_corpus_file(sentences, args.epochs, args.workers)
                    seconds.append(elapsed)
                else:
                    parser.error(f"unknown Word2Vec mode {mode!r}")
                print(f"word2vec {mode} [{repeat + 1}/{args.word2vec_repeats}] {seconds[-1]:.1f} s", flush=True)
            runs[mode] = {**summary(seconds), "effective_words": effective,
                          "effective_words_per_s": round(effective / min(seconds))}
        result["word2vec_train_unsup"] = {"epochs": args.epochs, "workers": args.workers, "architecture": "cbow",
                                          "reviews": len(sentences), **runs.get("iterable", {}),
                                          "modes": runs}
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["met"] = {name: result[name].get("min_s", float("inf")) <= limit
                     for name, limit in TARGETS_SECONDS.items() if name in result and "min_s" in result[name]}

    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"data-{datetime.date.today()}.json"
    write_json(out, result)
    print(f"wrote {out}")
    for name in TARGETS_SECONDS:
        if name in result and "min_s" in result[name]:
            print(f"  {name}: min {result[name]['min_s']} s, median {result[name]['median_s']} s "
                  f"(target <= {TARGETS_SECONDS[name]} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
