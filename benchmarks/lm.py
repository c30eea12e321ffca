"""The language model's training speed, output layer by output layer (issue #8), side by side in one run.

    .venv/bin/python benchmarks/lm.py                          # quick and full sizes, every output layer
    .venv/bin/python benchmarks/lm.py --sizes quick --quality-tokens 1500000   # + perplexity after N tokens each

The sizes are the course's own: ``quick`` is notebook 04's language model as its defaults build it, ``full`` as
``notebooks/params/full.yaml`` builds it (:func:`tl_core.pretrain.profile_lm_config`: sizes and dropouts), so
the benchmark follows a change of the notebook. For each model size and each output layer (adaptive softmax, sampled softmax, the full softmax, and the full
softmax over a smaller vocabulary), one training step (forward, backward, AdamW) on a batch of 64 windows of 70
tokens is timed, round-robin so that load on the machine hits every variant alike (medians of ``--repeats``).
The share of a step spent in the embedding and the LSTM layers is measured by timing the same step without the
output layer (the features' sum as the loss). ``--quality-tokens N`` also trains each output layer on the same
first N tokens of IMDB from the same start and reports the exact validation perplexity, so that speed can be
weighed against what a step learns. The token ids are IMDB's (train + unsup less its copies of test reviews, as
notebook 04 reads them: :func:`tl_core.pretrain.imdb_corpus`, its last 2,000 unlabelled reviews held out, through
the course tokenizer and a 50,000-word vocabulary built here), read by the data path rule (TL_DATA_DIR). JSON
into benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tl_core import data, lm, pretrain, text, train
from tl_core.artifacts import write_json
from tl_core.benchmark import machine_description, machine_slug, time_side_by_side

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Model sizes: the profiles whose language model is measured (notebook 04's, under that profile).
SIZES = ("quick", "full")
#: Output layers compared: name -> LMConfig overrides and the vocabulary size it predicts.
OUTPUT_LAYERS = {
    "adaptive 2k/10k": dict(output_layer="adaptive", cutoffs=(2000, 10000)),
    "adaptive 1k/8k/20k": dict(output_layer="adaptive", cutoffs=(1000, 8000, 20000)),
    "sampled 512": dict(output_layer="sampled", sampled_words=512),
    "sampled 2048": dict(output_layer="sampled", sampled_words=2048),
    "full softmax": dict(output_layer="full"),
    "full softmax, 10k words": dict(output_layer="full", vocab_size=10_000),
}
BATCH, BPTT = 64, 70


def imdb_corpus(data_dir: str | None) -> tuple[pretrain.Corpus, text.Vocab]:
    """Notebook 04's text (IMDB train + unsup, less the copies of test reviews, the last 2,000 unlabelled reviews
    held out), with a vocabulary built from the texts it trains on, as notebook 01 builds it."""
    unsup, _ = data.drop_test_texts(data.load_imdb("unsup", data_dir).texts, data.load_imdb("test", data_dir).texts)
    tokens = text.tokenize_all(data.load_imdb("train", data_dir).texts + unsup)
    vocab = text.Vocab.build(tokens)
    return pretrain.imdb_corpus(vocab, data_dir), vocab


def smaller_vocabulary(ids: list[np.ndarray], size: int) -> list[np.ndarray]:
    """The same stream with every word ranked below ``size`` replaced by <unk> (the vocabulary is frequency-sorted)."""
    return [np.where(row < size, row, text.UNK_ID) for row in ids]


def training_step(model: lm.LanguageModel, optimizer, tokens, targets, output: bool = True):
    def step():
        optimizer.zero_grad(set_to_none=True)
        if output:
            loss, _ = model(tokens, targets)
        else:  # the embedding and the LSTM layers only
            features, _ = model.features(tokens)
            loss = features.sum()
        loss.backward()
        optimizer.step()
    return step


def output_layer_configs(size: str, vocab_size: int) -> list[tuple[str, int, lm.LMConfig]]:
    """``(name, words, config)`` of each output layer: the profile's language model (read from the notebooks once)
    with that output layer, over its vocabulary of ``words``."""
    base = pretrain.profile_lm_config(size, vocab_size)
    configs = []
    for name, overrides in OUTPUT_LAYERS.items():
        overrides = dict(overrides)
        words = overrides.pop("vocab_size", vocab_size)
        configs.append((name, words, replace(base, vocab_size=words, **overrides)))
    return configs


def time_size(size: str, ids: list[np.ndarray], vocab_size: int, repeats: int, warmup: int) -> list[dict]:
    stream = lm.LMStream(ids, BATCH, BPTT, variable=False, shuffle=False, max_tokens=BATCH * (BPTT + 1) * 4)
    functions, rows = {}, []
    for name, words, config in output_layer_configs(size, vocab_size):
        torch.manual_seed(0)
        model = lm.LanguageModel(config).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        tokens, targets = next(iter(stream))
        if words < vocab_size:
            tokens, targets = (torch.where(part < words, part, text.UNK_ID) for part in (tokens, targets))
        functions[name] = training_step(model, optimizer, tokens, targets)
        if not rows or name == "adaptive 2k/10k":
            functions[f"{name} (no output layer)"] = training_step(model, optimizer, tokens, targets, output=False)
        rows.append({"size": size, "output_layer": name, "vocab_size": words, "config": config.to_dict()})
    seconds = time_side_by_side(functions, torch.device("cpu"), repeats, warmup)
    lstm_seconds = statistics.median(seconds["adaptive 2k/10k (no output layer)"])
    for row in rows:
        step = statistics.median(seconds[row["output_layer"]])
        row.update(step_ms=round(1000 * step, 1), tokens_per_second=round(BATCH * BPTT / step),
                   lstm_share=round(min(1.0, lstm_seconds / step), 3), seconds=seconds[row["output_layer"]])
    return rows


def quality(size: str, ids: list[np.ndarray], vocab_size: int, tokens: int, val_ids: list[np.ndarray]) -> dict:
    """Validation perplexity of each output layer after training on the same first ``tokens`` tokens."""
    results = {}
    for name, words, config in output_layer_configs(size, vocab_size):
        if words < vocab_size or name.startswith("full softmax"):
            continue  # not comparable (a smaller vocabulary), or too slow to train on a CPU
        torch.manual_seed(0)
        model = lm.LanguageModel(config)
        stream = lm.LMStream(ids, BATCH, BPTT, seed=0, max_tokens=tokens)
        val = lm.LMStream(val_ids, 32, BPTT, variable=False, shuffle=False)
        history = train.fit(model, stream, val, train.TrainConfig(epochs=1, lr=3e-3, schedule="linear",
                                                                  grad_clip=0.25, progress=False),
                            objective=lm.LanguageModelObjective())
        epoch = history.epochs[0]
        results[name] = {"val_perplexity": round(epoch["val_perplexity"], 1), "seconds": round(epoch["seconds"], 1),
                         "tokens_per_second": round(epoch["tokens_per_second"])}
        print(f"  {size:>5} {name:<24} perplexity {epoch['val_perplexity']:7.1f} after {tokens:,} tokens "
              f"({epoch['seconds']:.0f} s)", flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="quick,full", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quality-tokens", type=int, default=0, help="also train each output layer on N tokens")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; known: {', '.join(SIZES)}")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    corpus, vocab = imdb_corpus(args.data_dir)
    result = {"benchmark": "language model training step, by output layer", "batch": BATCH, "bptt": BPTT,
              "date": datetime.date.today().isoformat(), "machine": machine_description(torch.device("cpu")),
              "load_average_before": load, "vocab_size": len(vocab), "rows": [], "quality": {}}
    for size in sizes:
        rows = time_size(size, corpus.train, len(vocab), args.repeats, args.warmup)
        result["rows"] += rows
        for row in rows:
            print(f"{size:>5} {row['output_layer']:<24} {row['step_ms']:8.1f} ms/step {row['tokens_per_second']:8,} "
                  f"tokens/s, LSTM {100 * row['lstm_share']:4.0f} % of the step", flush=True)
        if args.quality_tokens:
            result["quality"][size] = quality(size, corpus.train, len(vocab), args.quality_tokens, corpus.val)
    result["load_average_after"] = Path("/proc/loadavg").read_text().split()[:3] if load else None
    output = args.output or RESULTS_DIR / f"lm-cpu-{result['date']}-{machine_slug(result['machine'])}.json"
    write_json(output, result)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
