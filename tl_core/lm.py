"""The language model: next-word prediction on the fused LSTM, with AWD-LSTM's regularisation.

A language model needs no labels: every word of a text is the target of the words before it. Trained on
unlabelled reviews it learns the language of the domain (Dai & Le 2015; Howard & Ruder 2018, ULMFiT), and its
embedding and LSTM become the starting point of the classifier (:func:`classifier_from_language_model`).
Introduced in ``notebooks/04_language_model.ipynb``.

    model = LanguageModel(LMConfig(vocab_size=len(vocab)), embeddings=torch.from_numpy(matrix.weights))
    train_stream = LMStream(ids, batch_size=64, bptt=70)           # many texts as one stream, BPTT windows
    history = train.fit(model, train_stream, val_stream, config, objective=LanguageModelObjective())
    next_words(model, vocab, "this movie was")                     # [('a', 0.08), ('not', 0.05), ...]

The parts, each a field of :class:`LMConfig`:

- the embedding, tied to the output layer (one matrix reads words in and scores them out; Press & Wolf 2017);
- a stack of LSTM layers (one :class:`tl_core.FusedLSTM` holds their weights, under ``nn.LSTM``'s names, so that
  a classifier can load them), run layer by layer here because the regularisation acts between layers;
- AWD-LSTM's regularisation (Merity et al. 2018): dropout of whole words, locked (variational) dropout that uses
  one mask for every step of a sequence, and DropConnect on each layer's hidden-to-hidden weights, one mask per
  forward (the fused layer op takes its weights as arguments, so the dropped matrix is simply passed in);
- an output layer that does not pay for the whole vocabulary on every token (:data:`OUTPUT_LAYERS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops, text, train
from .artifacts import LM_CHECKPOINT  # noqa: F401 (lm.LM_CHECKPOINT, as notebooks use it)
from .lstm import FusedLSTM
from .models import SavedConfig, word_embedding

#: Output layers: "adaptive" (Grave et al. 2017: a head of the frequent words plus one entry per tail cluster,
#: the rare words scored only for the tokens that need them; exact), "sampled" (Jean et al. 2015: the true word
#: against a few hundred sampled words while training, the exact softmax for evaluation), "full" (every word for
#: every token: exact and slow).
OUTPUT_LAYERS = ("adaptive", "sampled", "full")

CHECKPOINT_KIND = "language_model"


@dataclass
class LMConfig(SavedConfig):
    """Everything that defines the language model's architecture and regularisation (saved in its checkpoint)."""

    described_as = "language-model config"

    vocab_size: int  # words it reads and predicts: the size of the course Vocab
    embedding_dim: int = 100  # width of a word vector; the output layer scores words in this space (tied weights)
    hidden_size: int = 256  # LSTM units per layer
    num_layers: int = 1  # stacked LSTM layers
    embedding_dropout: float = 0.05  # drop whole words: a dropped word's vector is zero wherever it occurs
    input_dropout: float = 0.25  # locked dropout on the word vectors (one mask for every step of a sequence)
    hidden_dropout: float = 0.15  # locked dropout between LSTM layers
    weight_drop: float = 0.2  # DropConnect on each layer's hidden-to-hidden weights, one mask per forward
    output_dropout: float = 0.25  # locked dropout on the last layer's output, before the output layer
    output_layer: str = "adaptive"  # one of OUTPUT_LAYERS
    cutoffs: tuple[int, ...] = (2000, 10000)  # adaptive: where the head and each tail cluster end (frequency ranks)
    sampled_words: int = 512  # sampled: words drawn per batch to stand for the rest of the vocabulary

    def __post_init__(self):
        self.cutoffs = tuple(int(c) for c in self.cutoffs)
        for name in ("vocab_size", "embedding_dim", "hidden_size", "num_layers", "sampled_words"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("embedding_dropout", "input_dropout", "hidden_dropout", "weight_drop", "output_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.output_layer not in OUTPUT_LAYERS:
            raise ValueError(f"output_layer must be one of {OUTPUT_LAYERS}, got {self.output_layer!r}")
        if self.output_layer == "adaptive" and (
                list(self.cutoffs) != sorted(set(self.cutoffs)) or not self.cutoffs
                or self.cutoffs[0] <= len(text.SPECIALS) or self.cutoffs[-1] >= self.vocab_size):
            raise ValueError(f"cutoffs must increase strictly, from above {len(text.SPECIALS)} to below vocab_size "
                             f"= {self.vocab_size}; got {self.cutoffs}")



# ----------------------------------------------------------------------------------------------------------------
# Regularisation
# ----------------------------------------------------------------------------------------------------------------

def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout with one mask per sequence, the same at every time step (Gal & Ghahramani 2016): x is (T, B, F)."""
    if not training or p == 0:
        return x
    mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(1 - p) / (1 - p)
    return x * mask


def word_dropout(vectors: Tensor, ids: Tensor, vocab_size: int, p: float, training: bool) -> Tensor:
    """Drop whole words (AWD-LSTM's embedding dropout): each vocabulary word is dropped with probability ``p`` for
    the whole batch, so the model cannot lean on any one word being there."""
    if not training or p == 0:
        return vectors
    keep = vectors.new_empty(vocab_size).bernoulli_(1 - p) / (1 - p)
    return vectors * keep[ids].unsqueeze(-1)


# ----------------------------------------------------------------------------------------------------------------
# Output layers: each scores the features against the tied word vectors (``weight``, V x E) plus a bias
# ----------------------------------------------------------------------------------------------------------------

class FullSoftmax(nn.Module):
    """Every word for every token: exact. The reference the other two are checked against."""

    #: tokens per chunk when the whole (tokens, V) matrix would be too large
    CHUNK = 2048

    def __init__(self, config: LMConfig):
        super().__init__()
        self.vocab_size = config.vocab_size

    def log_probs(self, features: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """(N, V) log-probabilities of every word."""
        return F.log_softmax(F.linear(features, weight, bias), dim=-1)

    def nll(self, features: Tensor, targets: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """(N,) negative log-likelihood of each target, in chunks so that no (N, V) matrix has to exist at once."""
        return torch.cat([F.cross_entropy(F.linear(features[i:i + self.CHUNK], weight, bias),
                                          targets[i:i + self.CHUNK], reduction="none")
                          for i in range(0, len(targets), self.CHUNK)]) if len(targets) else features.new_zeros(0)

    def training_loss(self, features, targets, weight, bias) -> Tensor:
        return self.nll(features, targets, weight, bias).mean()


class AdaptiveSoftmax(FullSoftmax):
    """Adaptive softmax (Grave et al. 2017) with the word vectors tied to the embedding.

    The vocabulary is sorted by frequency (the course Vocab is). The head scores the ``cutoffs[0]`` most frequent
    words plus one entry per tail cluster; a word of cluster k has probability p(cluster k | h) * p(word | h,
    cluster k), where the second factor is a softmax over that cluster's words only. Most tokens are frequent
    words, so most tokens never pay for the tail: the cost per token falls from V dot products to about
    ``cutoffs[0]`` plus a share of the rest. The distribution is exact (it sums to one over the vocabulary)."""

    def __init__(self, config: LMConfig):
        super().__init__(config)
        self.cutoffs = [*config.cutoffs, config.vocab_size]
        self.clusters = len(self.cutoffs) - 1
        self.cluster_weight = nn.Parameter(torch.zeros(self.clusters, config.embedding_dim))
        self.cluster_bias = nn.Parameter(torch.zeros(self.clusters))

    def _head_log_probs(self, features, weight, bias) -> Tensor:
        head = self.cutoffs[0]
        logits = F.linear(features, torch.cat([weight[:head], self.cluster_weight]),
                          torch.cat([bias[:head], self.cluster_bias]))
        return F.log_softmax(logits, dim=-1)

    def log_probs(self, features, weight, bias) -> Tensor:
        head_lp = self._head_log_probs(features, weight, bias)
        head = self.cutoffs[0]
        parts = [head_lp[:, :head]]
        for k in range(self.clusters):
            low, high = self.cutoffs[k], self.cutoffs[k + 1]
            tail_lp = F.log_softmax(F.linear(features, weight[low:high], bias[low:high]), dim=-1)
            parts.append(tail_lp + head_lp[:, head + k:head + k + 1])
        return torch.cat(parts, dim=1)

    def nll(self, features, targets, weight, bias) -> Tensor:
        head_lp = self._head_log_probs(features, weight, bias)
        head = self.cutoffs[0]
        # In the head, a tail word is represented by its cluster's entry.
        head_targets = targets.clone()
        for k in range(self.clusters):
            in_cluster = (targets >= self.cutoffs[k]) & (targets < self.cutoffs[k + 1])
            head_targets[in_cluster] = head + k
        nll = -head_lp.gather(1, head_targets.unsqueeze(1)).squeeze(1)
        for k in range(self.clusters):
            low, high = self.cutoffs[k], self.cutoffs[k + 1]
            rows = ((targets >= low) & (targets < high)).nonzero().squeeze(1)
            # Computed even when no token of this batch is in the cluster, so that every parameter takes part in
            # every step (DistributedDataParallel expects that); an empty product costs nothing.
            tail_lp = F.log_softmax(F.linear(features.index_select(0, rows), weight[low:high], bias[low:high]), dim=-1)
            picked = tail_lp.gather(1, (targets.index_select(0, rows) - low).unsqueeze(1)).squeeze(1)
            nll = nll.index_add(0, rows, -picked)
        return nll


class SampledSoftmax(FullSoftmax):
    """Sampled softmax (Jean et al. 2015) while training, the exact softmax for evaluation.

    Each training batch draws ``sampled_words`` words from a log-uniform (Zipfian) proposal over the frequency
    ranks of the vocabulary and scores every token's true word against them only. Each sampled word's logit is
    lowered by the log of how often it is expected to be drawn, so that the sum over the samples estimates the
    sum over the whole vocabulary (importance sampling): the loss is an estimate of the full softmax's, which it
    approaches as the samples grow. Evaluation (``nll``) is exact."""

    def __init__(self, config: LMConfig):
        super().__init__(config)
        self.samples = config.sampled_words
        ranks = torch.arange(config.vocab_size, dtype=torch.float64)
        proposal = (torch.log(ranks + 2) - torch.log(ranks + 1)) / math.log(config.vocab_size + 1)
        self.register_buffer("log_proposal", torch.log(proposal / proposal.sum()).float(), persistent=False)

    def training_loss(self, features, targets, weight, bias) -> Tensor:
        sampled = torch.multinomial(self.log_proposal.exp(), self.samples, replacement=True)
        log_expected = self.log_proposal + math.log(self.samples)  # log of how often each word is drawn
        # index_select, not weight[targets]: its gradient adds rows in a fixed order, where indexing's backward on
        # several CPU threads adds them in whatever order the threads run (the last bits would differ per run).
        true_logits = (features * weight.index_select(0, targets)).sum(-1) + bias.index_select(0, targets)
        sampled_logits = F.linear(features, weight.index_select(0, sampled),
                                  bias.index_select(0, sampled) - log_expected[sampled])
        # A sampled word that is the token's own target is not a negative for it.
        sampled_logits = sampled_logits.masked_fill(sampled.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
        logits = torch.cat([true_logits.unsqueeze(1), sampled_logits], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(targets))


def make_output_layer(config: LMConfig) -> FullSoftmax:
    return {"adaptive": AdaptiveSoftmax, "sampled": SampledSoftmax, "full": FullSoftmax}[config.output_layer](config)


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------

State = list[tuple[Tensor, Tensor]]  # (h, c) of each layer, each (B, hidden_size)


class LanguageModel(nn.Module):
    """Embedding -> LSTM layers -> (projection) -> output layer tied to the embedding. Introduced in
    ``notebooks/04_language_model.ipynb``.

    ``forward(tokens, targets, state)`` returns the mean next-word loss and the state after the window: the
    training objective (an estimate for the sampled softmax while training; exact in ``eval()`` mode).
    ``log_probs`` gives the whole distribution over the vocabulary, for evaluation and generation.
    """

    def __init__(self, config: LMConfig, embeddings: Tensor | None = None):
        super().__init__()
        self.config = config
        self.embedding = word_embedding(config, embeddings)
        # The weights of every layer, under nn.LSTM's names: a classifier with the same sizes loads them as they are.
        self.lstm = FusedLSTM(config.embedding_dim, config.hidden_size, num_layers=config.num_layers)
        # Tied weights score words in the embedding's space: the last layer's output is projected into it.
        self.projection = (nn.Linear(config.hidden_size, config.embedding_dim, bias=False)
                           if config.hidden_size != config.embedding_dim else None)
        self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.output = make_output_layer(config)

    def initial_state(self, batch: int) -> State:
        weight = self.embedding.weight
        zeros = weight.new_zeros(batch, self.config.hidden_size)
        return [(zeros, zeros) for _ in range(self.config.num_layers)]

    def features(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Time-major features (T * B, embedding_dim) of a batch of windows ``tokens`` (B, T), and the new state."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, time), got shape {tuple(tokens.shape)}")
        batch, steps = tokens.shape
        config, training = self.config, self.training
        state = state if state is not None else self.initial_state(batch)
        if len(state) != config.num_layers or state[0][0].shape != (batch, config.hidden_size):
            raise ValueError(f"state must hold (h, c) of shape ({batch}, {config.hidden_size}) for each of the "
                             f"{config.num_layers} layers; start with None or model.initial_state(batch)")
        ids = tokens.t()  # time-major: the layout of the fused layer op, no copy between layers
        x = word_dropout(self.embedding(ids), ids, config.vocab_size, config.embedding_dropout, training)
        x = locked_dropout(x, config.input_dropout, training)
        batch_sizes = torch.full((steps,), batch, dtype=torch.int64)
        new_state = []
        for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.lstm.all_weights):
            if training and config.weight_drop:
                w_hh = F.dropout(w_hh, config.weight_drop)  # DropConnect: the parameter itself stays untouched
            h0, c0 = state[layer]
            output, h, c = ops.lstm_layer(x.reshape(steps * batch, -1), batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh)
            new_state.append((h, c))
            x = output.view(steps, batch, -1)
            if layer < config.num_layers - 1:
                x = locked_dropout(x, config.hidden_dropout, training)
        x = locked_dropout(x, config.output_dropout, training)
        if self.projection is not None:
            x = self.projection(x)
        return x.reshape(steps * batch, -1), new_state

    def forward(self, tokens: Tensor, targets: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Mean next-word loss over the window (targets (B, T): each token's next word) and the new state."""
        features, state = self.features(tokens, state)
        flat_targets = targets.t().reshape(-1)
        weight = self.embedding.weight
        if self.training:
            loss = self.output.training_loss(features, flat_targets, weight, self.output_bias)
        else:
            loss = self.output.nll(features, flat_targets, weight, self.output_bias).mean()
        return loss, state

    def nll(self, tokens: Tensor, targets: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Exact negative log-likelihood of every target, (B, T), and the new state (for evaluation)."""
        features, state = self.features(tokens, state)
        flat = self.output.nll(features, targets.t().reshape(-1), self.embedding.weight, self.output_bias)
        return flat.view(tokens.shape[1], tokens.shape[0]).t(), state

    def log_probs(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Log-probabilities of the next word after every position, (B, T, V), and the new state."""
        features, state = self.features(tokens, state)
        flat = self.output.log_probs(features, self.embedding.weight, self.output_bias)
        return flat.view(tokens.shape[1], tokens.shape[0], -1).transpose(0, 1), state

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Parameter groups from the input up, as :meth:`tl_core.models.SentimentLSTM.layer_groups` (ULMFiT's
        discriminative learning rates when the language model is fine-tuned on a target's text)."""
        groups = [("embedding", [self.embedding.weight])]
        for layer, weights in enumerate(self.lstm.all_weights):
            groups.append((f"lstm layer {layer}", list(weights)))
        top = [self.output_bias, *self.output.parameters()]
        if self.projection is not None:
            top.insert(0, self.projection.weight)
        groups.append(("output", top))
        return groups


def detach_state(state: State) -> State:
    """The state without its history: the next window starts from these values, but backpropagation stops here
    (truncated backpropagation through time)."""
    return [(h.detach(), c.detach()) for h, c in state]


# ----------------------------------------------------------------------------------------------------------------
# Batching: many texts as one stream, cut into parallel streams, read in BPTT windows
# ----------------------------------------------------------------------------------------------------------------

class LMStream:
    """Texts as one token stream (each ending with ``<eos>``), cut into ``batch_size`` parallel streams and read
    in windows of about ``bptt`` tokens: batch ``i`` continues batch ``i - 1`` row by row, so the hidden state is
    carried from one window to the next. Introduced in ``notebooks/04_language_model.ipynb``.

    ``variable=True`` draws each window's length as AWD-LSTM does (around ``bptt``, sometimes around half of it),
    so that the windows do not always start at the same places; ``shuffle=True`` reorders the texts every epoch
    (``set_epoch``). With ``world_size`` > 1 each process reads its own rows (``rank``): the global batch is
    ``batch_size`` rows, the same windows in every process. Each item is ``(tokens, targets)``, two LongTensors
    (rows, window) where ``targets`` is ``tokens`` moved one token on.
    """

    def __init__(self, ids: Sequence[np.ndarray], batch_size: int, bptt: int = 70, *, variable: bool = True,
                 shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 max_tokens: int | None = None):
        self.ids = [np.asarray(row, dtype=np.int64) for row in ids]
        for name, value in (("batch_size", batch_size), ("bptt", bptt), ("world_size", world_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must divide evenly among {world_size} processes")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        total = sum(len(row) + 1 for row in self.ids)
        if max_tokens is not None:
            total = min(total, max_tokens)
        if total < 2 * batch_size:
            raise ValueError(f"the corpus has {total:,} tokens: too few for {batch_size} streams of at least two "
                             "tokens; give it more text or a smaller batch_size")
        self.batch_size, self.bptt, self.variable, self.shuffle = batch_size, bptt, variable, shuffle
        self.seed, self.rank, self.world_size, self.max_tokens = seed, rank, world_size, max_tokens
        self.set_epoch(1)

    @property
    def tokens_per_epoch(self) -> int:
        """Tokens read per epoch by all processes together (the targets of every window)."""
        return self.batch_size * int(sum(self.window_lengths))

    def set_epoch(self, epoch: int) -> None:
        """The stream and the window lengths of ``epoch``: the same ``seed`` and epoch give the same batches."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.ids)) if self.shuffle else range(len(self.ids))
        eos = np.array([text.EOS_ID], dtype=np.int64)
        stream = np.concatenate([part for i in order for part in (self.ids[i], eos)])
        if self.max_tokens is not None:
            stream = stream[:self.max_tokens]
        columns = len(stream) // self.batch_size
        rows = self.batch_size // self.world_size
        self.data = torch.from_numpy(stream[:columns * self.batch_size].reshape(self.batch_size, columns)
                                     [self.rank * rows:(self.rank + 1) * rows].copy())
        lengths, position = [], 0
        while position < columns - 1:
            length = self.bptt
            if self.variable:
                base = self.bptt if rng.random() < 0.95 else self.bptt / 2
                length = max(5, int(round(rng.normal(base, 5))))
            length = min(length, columns - 1 - position)
            lengths.append(length)
            position += length
        self.window_lengths = lengths

    def __len__(self) -> int:
        return len(self.window_lengths)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        position = 0
        for length in self.window_lengths:
            yield self.data[:, position:position + length], self.data[:, position + 1:position + 1 + length]
            position += length


def encode_texts(texts: Iterable[str], vocab: text.Vocab, *, progress: bool = False) -> list[np.ndarray]:
    """Token ids of each text (no length limit), for :class:`LMStream`."""
    return text.numericalize(text.tokenize_all(texts, progress=progress), vocab, max_len=None).ids


def read_corpus(path: str | Path) -> list[str]:
    """Texts for a language model from a folder of ``.txt`` files (one text each, found recursively) or from one
    text file with one text per line: a corpus of the user's own (WikiText-103, their domain's text) read through
    the course tokenizer. Clear errors for a missing path, no texts, and a file that is not UTF-8 text."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus {path} does not exist: give a folder of .txt files or a text file with "
                                "one text per line")
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise ValueError(f"corpus folder {path} holds no .txt files")

    def read(file: Path) -> str:
        raw = file.read_bytes()
        if b"\x00" in raw[:65536]:
            raise ValueError(f"corpus file {file} is not text (it holds NUL bytes: a binary file?)")
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ValueError(f"corpus file {file} is not UTF-8 text (byte {error.start}: {error.reason}); convert "
                             "it to UTF-8 first") from error

    if path.is_dir():
        texts = [read(file).strip() for file in files]
    else:
        texts = [line.strip() for line in read(path).splitlines()]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"corpus {path} holds no text (only empty files or blank lines)")
    return texts


# ----------------------------------------------------------------------------------------------------------------
# Training and evaluation through the one loop
# ----------------------------------------------------------------------------------------------------------------

def _unwrap(model: nn.Module) -> "LanguageModel":
    return model.module if hasattr(model, "module") else model  # DistributedDataParallel keeps it as .module


@torch.no_grad()
def evaluate_perplexity(model: nn.Module, stream: Iterable, device: str | torch.device | None = None
                        ) -> dict[str, float]:
    """Exact mean negative log-likelihood per token and perplexity (its exponential) over ``stream``, the state
    carried through it as in training. Perplexity is "as surprised as a uniform choice among that many words"."""
    model = _unwrap(model)
    device = torch.device(device) if device is not None else model.embedding.weight.device
    model.eval()
    total, count, state = 0.0, 0, None
    for tokens, targets in stream:
        nll, state = model.nll(tokens.to(device), targets.to(device), state)
        total += float(nll.sum())
        count += nll.numel()
    loss = total / count if count else float("nan")
    return {"loss": loss, "perplexity": math.exp(loss) if count else float("nan"), "tokens": count}


class LanguageModelObjective(train.Objective):
    """The language model's objective for :func:`tl_core.train.fit`: next-word cross-entropy, the hidden state
    carried (detached) from each window to the next and reset every epoch; the best epoch is the one with the
    lowest validation perplexity."""

    metric = "perplexity"
    higher_is_better = False

    def __init__(self):
        self.state: State | None = None

    def start_epoch(self, model):
        self.state = None

    def batch_loss(self, model, batch, device):
        tokens, targets = (part.to(device, non_blocking=True) for part in batch)
        loss, state = model(tokens, targets, self.state)
        self.state = detach_state(state)
        return loss, targets.numel(), targets.numel()

    def validate(self, model, loader, device):
        result = evaluate_perplexity(model, loader, device)
        return {"loss": result["loss"], "perplexity": result["perplexity"]}

    def progress(self, mean_loss):
        return {"loss": f"{mean_loss:.3f}", "ppl": f"{math.exp(min(mean_loss, 50)):,.0f}"}

    def describe(self, validation):
        return f"validation loss {validation['loss']:.3f}, perplexity {validation['perplexity']:,.1f}"


# ----------------------------------------------------------------------------------------------------------------
# What it learned: next words and generated text
# ----------------------------------------------------------------------------------------------------------------

def _prompt_ids(vocab: text.Vocab, prompt: str) -> list[int]:
    tokens = text.tokenize(prompt)
    ids = vocab.encode(tokens)
    if not tokens or all(i == text.UNK_ID for i in ids):
        raise ValueError(f"none of the words of the prompt {prompt!r} is in the vocabulary: give at least one "
                         f"known word (the vocabulary has {len(vocab):,} words, e.g. 'the', 'movie')")
    return [text.EOS_ID, *ids]  # a review starts after an end of review, as in the training stream


#: Tokens never proposed as a next word: padding, the unknown word.
_NEVER = (text.PAD_ID, text.UNK_ID)


@torch.no_grad()
def next_words(model: LanguageModel, vocab: text.Vocab, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely next words after ``prompt`` with their probabilities. Introduced in 04."""
    model = _unwrap(model)
    model.eval()
    ids = torch.tensor([_prompt_ids(vocab, prompt)], device=model.embedding.weight.device)
    log_probs, _ = model.log_probs(ids)
    last = log_probs[0, -1].clone()
    last[list(_NEVER)] = -math.inf
    values, indices = last.topk(k)
    return [(vocab.itos[i], float(math.exp(v))) for v, i in zip(values.tolist(), indices.tolist())]


@torch.no_grad()
def generate(model: LanguageModel, vocab: text.Vocab, prompt: str, n_words: int = 30, temperature: float = 1.0,
             seed: int = 0) -> str:
    """``prompt`` continued by up to ``n_words`` words drawn from the model (stopping at the end of a review).
    ``temperature`` < 1 makes it surer and duller, > 1 bolder and less coherent. The same seed gives the same
    text. Introduced in 04."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    model = _unwrap(model)
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    device = model.embedding.weight.device
    ids = torch.tensor([_prompt_ids(vocab, prompt)], device=device)
    words = []
    state = None
    for _ in range(n_words):
        log_probs, state = model.log_probs(ids, state)
        scores = log_probs[0, -1].float().cpu() / temperature
        scores[list(_NEVER)] = -math.inf
        choice = int(torch.multinomial(torch.softmax(scores, dim=0), 1, generator=generator))
        if choice == text.EOS_ID:
            break
        words.append(vocab.itos[choice])
        ids = torch.tensor([[choice]], device=device)
    return " ".join([prompt.strip(), *words])


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints, and the classifier that starts from the language model
# ----------------------------------------------------------------------------------------------------------------

def save_language_model(path: str | Path, model: LanguageModel, vocab_tokens: list[str],
                        extra: dict[str, Any] | None = None) -> Path:
    """The language model's checkpoint: the course's checkpoint format (atomic, read with ``weights_only``,
    vocabulary-checked), marked as a language model."""
    return train.save_checkpoint(path, _unwrap(model), vocab_tokens, extra, kind=CHECKPOINT_KIND)


def load_language_model(path: str | Path, vocab_tokens: list[str] | None = None) -> tuple[LanguageModel, dict]:
    """Rebuild a saved language model; a checkpoint of another vocabulary is a CheckpointMismatchError."""
    payload = train.load_checkpoint(path, vocab_tokens, kind=CHECKPOINT_KIND)
    model = LanguageModel(LMConfig.from_dict(payload["model_config"]))
    train.load_state(model, payload, path)
    return model, payload


def classifier_from_language_model(source: str | Path | dict[str, Any], vocab_tokens: list[str] | None = None,
                                   **config_overrides):
    """A :class:`tl_core.models.SentimentLSTM` that starts from a language model: its embedding and LSTM layers
    (ULMFiT's stage 3), one direction with the language model's sizes, and a new head with concat pooling.
    ``source`` is the checkpoint's path or its payload. Introduced in ``notebooks/05_source_lstm.ipynb``."""
    from .models import ModelConfig, SentimentLSTM

    payload = source if isinstance(source, dict) else train.load_checkpoint(source, vocab_tokens,
                                                                           kind=CHECKPOINT_KIND)
    lm_config = LMConfig.from_dict(payload["model_config"])
    values = {"vocab_size": lm_config.vocab_size, "embedding_dim": lm_config.embedding_dim,
              "hidden_size": lm_config.hidden_size, "num_layers": lm_config.num_layers, "bidirectional": False,
              "pooling": "concat", **config_overrides}
    config = ModelConfig.from_dict(values)
    fixed = {"vocab_size", "embedding_dim", "hidden_size", "num_layers"}
    if config.bidirectional or any(getattr(config, name) != getattr(lm_config, name) for name in fixed):
        raise ValueError("a classifier from a language model keeps its sizes and reads left to right: "
                         f"{sorted(fixed)} must be the language model's and bidirectional False")
    model = SentimentLSTM(config)
    state = payload["state_dict"]
    with torch.no_grad():
        model.embedding.weight.copy_(state["embedding.weight"])
        model.embedding.weight[config.padding_idx] = 0.0  # <pad> is never read; the classifier keeps it at zero
        model.lstm.load_state_dict({name[len("lstm."):]: value for name, value in state.items()
                                    if name.startswith("lstm.")})
    return model
