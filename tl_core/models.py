"""The sentiment classifier: embedding -> dropout -> LSTM -> pooling over valid steps -> dropout -> one logit.

Introduced in ``notebooks/05_source_lstm.ipynb`` (trained on IMDB) and reused in ``06_transfer`` and
``07_fine_tuning`` (moved to a new domain). The LSTM is :class:`tl_core.FusedLSTM` (the fused C++/CUDA core) by
default; ``lstm_backend="torch"`` swaps in ``torch.nn.LSTM`` on packed sequences (the same computation, PyTorch's
own kernels) for comparisons, and ``"torch_padded"`` runs ``torch.nn.LSTM`` over the padded batch as it is (oneDNN
or cuDNN, fast, but the recurrence also reads the padding, so final states of shorter reviews differ).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

POOLINGS = ("last", "concat")
LSTM_BACKENDS = ("fused", "torch", "torch_padded")


class SavedConfig:
    """What a configuration dataclass saved in checkpoints needs: a plain dict (tuples as lists, for JSON and
    ``weights_only`` loading) and back, unknown fields named."""

    #: how error messages name the configuration
    described_as = "config"

    def to_dict(self) -> dict[str, Any]:
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.described_as} fields {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class ModelConfig(SavedConfig):
    """Everything that defines the classifier's architecture (saved in every checkpoint)."""

    described_as = "model config"

    vocab_size: int  # rows of the embedding table: the size of the Vocab the model reads
    embedding_dim: int = 100  # width of a word vector (Word2Vec's vector_size)
    hidden_size: int = 128  # LSTM units per direction
    num_layers: int = 1  # stacked LSTM layers
    bidirectional: bool = True  # also read each review right to left
    embedding_dropout: float = 0.3  # dropout on the word vectors, before the LSTM
    lstm_dropout: float = 0.0  # dropout between stacked LSTM layers (as torch.nn.LSTM's dropout)
    output_dropout: float = 0.3  # dropout on the pooled features, before the head
    weight_drop: float = 0.0  # DropConnect on the LSTM's hidden-to-hidden weights while training (AWD-LSTM, ULMFiT)
    pooling: str = "concat"  # "last": final states; "concat": last + max + mean over valid steps (ULMFiT)
    freeze_embeddings: bool = False  # keep the word vectors fixed during training
    lstm_backend: str = "fused"  # "fused": FusedLSTM; "torch": nn.LSTM, packed; "torch_padded": nn.LSTM, padded
    padding_idx: int = 0  # token id of <pad>
    bptt: int = 0  # back-propagate through pieces of this many steps of a review (ULMFiT's BPT3C); 0: the whole review

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.lstm_backend not in LSTM_BACKENDS:
            raise ValueError(f"lstm_backend must be one of {LSTM_BACKENDS}, got {self.lstm_backend!r}")
        for name in ("vocab_size", "embedding_dim", "hidden_size", "num_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("embedding_dropout", "lstm_dropout", "output_dropout", "weight_drop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not isinstance(self.bptt, int) or isinstance(self.bptt, bool) or self.bptt < 0:
            raise ValueError(f"bptt must be a non-negative integer (0: back-propagate through the whole review), "
                             f"got {self.bptt!r}")
        if self.bptt and self.bidirectional:
            raise ValueError("bptt (reading a review in pieces) needs bidirectional=False: the reverse direction "
                             "starts at the review's end, so its state cannot be carried from piece to piece")

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def feature_size(self) -> int:
        """Width of the pooled features the head reads."""
        per_summary = self.directions * self.hidden_size
        return per_summary * (3 if self.pooling == "concat" else 1)


class PackedTorchLSTM(nn.LSTM):
    """``torch.nn.LSTM`` with FusedLSTM's ``forward(input, hx=None, lengths=None)``: packs by lengths so that the
    recurrence stops at each sequence's end (the same computation as FusedLSTM with lengths)."""

    def forward(self, input: Tensor, hx=None, lengths: Tensor | None = None):  # noqa: A002 (nn.LSTM's name)
        if lengths is None:
            return super().forward(input, hx)
        packed = nn.utils.rnn.pack_padded_sequence(input, lengths.cpu(), batch_first=self.batch_first,
                                                   enforce_sorted=False)
        output, state = super().forward(packed, hx)
        output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=self.batch_first,
                                                     total_length=input.shape[1 if self.batch_first else 0])
        return output, state


class PaddedTorchLSTM(nn.LSTM):
    """``torch.nn.LSTM`` over the whole padded batch, ignoring ``lengths``: what most code does, and the fastest
    path of ``nn.LSTM`` on a CPU (oneDNN), but every sequence runs to the batch's longest, so the final state (and
    the reverse direction) of a shorter sequence has read padding."""

    def forward(self, input: Tensor, hx=None, lengths: Tensor | None = None):  # noqa: A002, ARG002
        return super().forward(input, hx)


def make_lstm(config: ModelConfig) -> nn.Module:
    """The LSTM of the chosen backend; both have torch.nn.LSTM's parameter names, so weights move between them."""
    arguments = dict(input_size=config.embedding_dim, hidden_size=config.hidden_size, num_layers=config.num_layers,
                     batch_first=True, dropout=config.lstm_dropout if config.num_layers > 1 else 0.0,
                     bidirectional=config.bidirectional)
    if config.lstm_backend == "torch":
        return PackedTorchLSTM(**arguments)
    if config.lstm_backend == "torch_padded":
        return PaddedTorchLSTM(**arguments)
    from .lstm import FusedLSTM

    return FusedLSTM(**arguments)


def word_embedding(config, embeddings: Tensor | None = None, **kwargs) -> nn.Embedding:
    """The embedding table of a model with ``config.vocab_size`` words of ``config.embedding_dim`` dimensions,
    started from ``embeddings`` (e.g. the Word2Vec matrix) when given."""
    table = nn.Embedding(config.vocab_size, config.embedding_dim, **kwargs)
    if embeddings is not None:
        if tuple(embeddings.shape) != (config.vocab_size, config.embedding_dim):
            raise ValueError(f"embeddings have shape {tuple(embeddings.shape)}, but the config asks for "
                             f"(vocab_size, embedding_dim) = ({config.vocab_size}, {config.embedding_dim})")
        with torch.no_grad():
            table.weight.copy_(embeddings)
    return table


def pool_packed(output: nn.utils.rnn.PackedSequence, batch: int) -> tuple[Tensor, Tensor]:
    """Max and sum over each sequence's steps of a packed LSTM output of ``batch`` sequences: (B, features) each,
    in the caller's order. The packed rows are time-major and sorted by length; each is added to (and
    compared with) the row of the sequence it belongs to, so no padded (B, T, features) tensor is ever made."""
    rows, batch_sizes = output.data, output.batch_sizes
    order = output.sorted_indices if output.sorted_indices is not None else torch.arange(batch)
    active = torch.arange(batch)[None, :] < batch_sizes[:, None]  # (steps, batch): which sorted rows run at a step
    owner = order.cpu().expand(len(batch_sizes), batch)[active].to(rows.device)  # the sequence of each packed row
    total = rows.new_zeros(batch, rows.shape[1]).index_add_(0, owner, rows)
    maximum = rows.new_full((batch, rows.shape[1]), float("-inf")).scatter_reduce(
        0, owner[:, None].expand_as(rows), rows, "amax")
    return maximum, total


class SentimentLSTM(nn.Module):
    """A review in, one logit out (positive > 0). Introduced in ``notebooks/05_source_lstm.ipynb``."""

    def __init__(self, config: ModelConfig, embeddings: Tensor | None = None):
        super().__init__()
        self.config = config
        self.embedding = word_embedding(config, embeddings, padding_idx=config.padding_idx)
        self.embedding.weight.requires_grad_(not config.freeze_embeddings)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.lstm = make_lstm(config)
        self.output_dropout = nn.Dropout(config.output_dropout)
        self.head = nn.Linear(config.feature_size, 1)

    def encode(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Pooled features (B, feature_size) of a padded batch: tokens (B, T) int64, lengths (B,).

        With ``config.bptt`` set, a review longer than that is read in pieces of ``bptt`` steps, as ULMFiT's
        classifier does (BPT3C): each piece starts from the state the previous one ended in, detached, so the
        gradient runs back through at most ``bptt`` steps of the recurrence, while the pooling still sees every
        step. A long review's gradient through hundreds of steps of a language model's recurrence can grow without
        bound (the full profile's two-layer LM: norm inf on reviews of ~340 tokens); the forward pass is unchanged.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, time), got shape {tuple(tokens.shape)}")
        if lengths.shape != tokens.shape[:1]:
            raise ValueError(f"lengths must be (batch,) = ({tokens.shape[0]},), got shape {tuple(lengths.shape)}")
        from .lstm import check_lengths

        lengths_cpu = check_lengths(lengths.to("cpu", torch.int64), tokens.shape[0], tokens.shape[1])
        words = self.embedding_dropout(self.embedding(tokens))
        lstm = self._recurrence()
        bptt = self.config.bptt
        if not bptt or int(lengths_cpu.max()) <= bptt:
            last, maximum, total = self._read(lstm, words, lengths_cpu, None)[:3]
        else:
            last, maximum, total = self._read_in_pieces(lstm, words, lengths_cpu, bptt)
        if self.config.pooling == "last":
            return last
        return torch.cat([last, maximum, total / lengths_cpu.to(total)[:, None]], dim=1)

    def _recurrence(self):
        """The LSTM this batch runs through: ``self.lstm`` itself, or, while training with ``config.weight_drop``,
        the same LSTM with one DropConnect mask on each hidden-to-hidden matrix for the whole batch (every piece of
        a review read in pieces sees the same mask, as every window of AWD-LSTM's batch does). The parameters
        themselves stay untouched; their gradient flows through the mask."""
        if not (self.training and self.config.weight_drop):
            return self.lstm
        dropped = {name: F.dropout(weight, self.config.weight_drop)
                   for name, weight in self.lstm.named_parameters() if name.startswith("weight_hh")}
        return lambda *args: torch.func.functional_call(self.lstm, dropped, args)

    def _read(self, lstm, words: Tensor, lengths_cpu: Tensor, state):
        """``lstm`` (:meth:`_recurrence`) over ``words`` (B, T, E) from ``state`` (None: zeros): the last layer's
        final state (B, D*H), the max and the sum of the outputs over each review's valid steps (None with
        ``pooling="last"``), and the final ``(h_n, c_n)``."""
        if self.config.lstm_backend == "torch_padded":
            output, (h_n, c_n) = lstm(words, state)  # runs on through the padding: pooled over the valid steps
        else:
            # Packed: the LSTM computes the valid steps only, and the pooling reads them where they lie, one row
            # per token, without a padded (B, T, H) copy of the output (measured with FusedLSTM, 64 reviews of 100 to
            # 800 tokens, 256 units: forward + backward 0.71 -> 0.59 s).
            packed = nn.utils.rnn.pack_padded_sequence(words, lengths_cpu, batch_first=True, enforce_sorted=False)
            output, (h_n, c_n) = lstm(packed, state)
        # h_n holds each direction's state at the sequence's own last valid step (the reverse one at its start).
        batch = words.shape[0]
        last = h_n.view(self.config.num_layers, self.config.directions, batch, self.config.hidden_size)[-1]
        last = last.transpose(0, 1).reshape(batch, -1)
        if self.config.pooling == "last":
            return last, None, None, (h_n, c_n)
        if isinstance(output, nn.utils.rnn.PackedSequence):
            maximum, total = pool_packed(output, batch)
        else:
            steps = torch.arange(words.shape[1], device=words.device)
            valid = (steps[None, :] < lengths_cpu.to(words.device)[:, None]).unsqueeze(-1)  # (B, T, 1)
            maximum = output.masked_fill(~valid, float("-inf")).amax(dim=1)
            total = output.masked_fill(~valid, 0.0).sum(dim=1)
        return last, maximum, total, (h_n, c_n)

    def _read_in_pieces(self, lstm, words: Tensor, lengths_cpu: Tensor, bptt: int):
        """:meth:`_read` piece by piece (BPT3C, see :meth:`encode`); the summaries combined over the pieces."""
        last = maximum = total = state = None
        for start in range(0, int(lengths_cpu.max()), bptt):
            alive = torch.nonzero(lengths_cpu > start).squeeze(1)  # the reviews that reach this piece
            piece_lengths = (lengths_cpu[alive] - start).clamp(max=bptt)
            index = alive.to(words.device)
            piece = words[:, start:start + int(piece_lengths.max())].index_select(0, index)
            carried = None if state is None else tuple(s.index_select(1, index) for s in state)
            piece_last, piece_max, piece_total, piece_state = self._read(lstm, piece, piece_lengths, carried)
            if state is None:  # the first piece: every review is in it
                last, maximum, total = piece_last, piece_max, piece_total
                state = tuple(s.detach() for s in piece_state)
                continue
            last = last.index_copy(0, index, piece_last)
            state = tuple(s.index_copy(1, index, p.detach()) for s, p in zip(state, piece_state))
            if piece_max is not None:
                maximum = maximum.index_copy(0, index, torch.maximum(maximum.index_select(0, index), piece_max))
                total = total.index_add(0, index, piece_total)
        return last, maximum, total

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Logits (B,): the classifier's confidence that each review is positive, before the sigmoid."""
        return self.head(self.output_dropout(self.encode(tokens, lengths))).squeeze(-1)

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Parameter groups from the input up (ULMFiT's unit of unfreezing and of learning rates):
        embedding, each LSTM layer (both directions), the head."""
        groups = [("embedding", [self.embedding.weight])]
        for layer in range(self.config.num_layers):
            names = [n for n, _ in self.lstm.named_parameters() if n.split("_l")[-1].split("_")[0] == str(layer)]
            groups.append((f"lstm layer {layer}", [dict(self.lstm.named_parameters())[n] for n in names]))
        groups.append(("head", list(self.head.parameters())))
        return groups


class NgramClassifier(nn.Module):
    """A linear classifier over the words and word pairs of a review: one learned weight per word of the
    vocabulary and one per (hashed) bigram, summed over the review, plus a bias. The classical baseline of
    sentiment analysis (Blitzer et al. 2007, Wang & Manning 2012 use such bag-of-n-gram models); it reads the
    same padded batches ``(tokens, lengths)`` as :class:`SentimentLSTM` and trains with the same loop.

    Each token's score is its word's weight plus the weight of the pair it starts, so that the logit is the sum of
    the per-token scores plus the bias. The scores are looked up from two ``nn.Embedding`` tables of width 1, so
    :func:`tl_core.analysis.word_saliency` reads them like any word vectors (for this model the saliency of a token
    is exactly its score). Introduced in ``notebooks/07_fine_tuning.ipynb`` (the ``ngrams`` and ``hybrid``
    strategies).
    """

    #: bigram (a, b) of token ids goes to bucket 1 + (a * HASH_MULTIPLIER + b) % buckets; bucket 0 is "no pair"
    HASH_MULTIPLIER = 1_000_003

    def __init__(self, vocab_size: int, buckets: int = 2**18, padding_idx: int = 0):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("buckets", buckets)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.vocab_size, self.buckets, self.padding_idx = vocab_size, buckets, padding_idx
        self.unigrams = nn.Embedding(vocab_size, 1, padding_idx=padding_idx)
        self.bigrams = nn.Embedding(buckets + 1, 1, padding_idx=0)  # row 0: the last token starts no pair
        self.bias = nn.Parameter(torch.zeros(1))
        nn.init.zeros_(self.unigrams.weight)  # logistic regression's start: every review at p = 0.5
        nn.init.zeros_(self.bigrams.weight)

    def bigram_ids(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(B, T) bucket of the pair each token starts (token t, token t+1); 0 where there is none."""
        following = torch.cat([tokens[:, 1:], torch.zeros_like(tokens[:, :1])], dim=1)
        steps = torch.arange(tokens.shape[1], device=tokens.device)
        has_next = steps[None, :] + 1 < lengths.to(tokens.device)[:, None]
        buckets = 1 + (tokens * self.HASH_MULTIPLIER + following) % self.buckets
        return torch.where(has_next, buckets, torch.zeros_like(buckets))

    def token_scores(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(B, T) each valid token's share of the logit (0 on padding)."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, time), got shape {tuple(tokens.shape)}")
        if lengths.shape != tokens.shape[:1]:
            raise ValueError(f"lengths must be (batch,) = ({tokens.shape[0]},), got shape {tuple(lengths.shape)}")
        steps = torch.arange(tokens.shape[1], device=tokens.device)
        valid = steps[None, :] < lengths.to(tokens.device)[:, None]
        scores = self.unigrams(tokens).squeeze(-1) + self.bigrams(self.bigram_ids(tokens, lengths)).squeeze(-1)
        return scores * valid

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Logits (B,), as :meth:`SentimentLSTM.forward`."""
        return self.token_scores(tokens, lengths).sum(dim=1) + self.bias

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Two groups, as :meth:`SentimentLSTM.layer_groups` names them: the n-gram weights, then the bias."""
        return [("ngrams", [self.unigrams.weight, self.bigrams.weight]), ("head", [self.bias])]


class EnsembleClassifier(nn.Module):
    """Several trained classifiers as one: the mean of their probabilities, returned as a logit so that it reads
    like any classifier here (``evaluate``, ``predict``, ``analysis.word_saliency``). Its members keep their own
    weights and vocabulary-sized embeddings; nothing of it trains. Introduced in ``notebooks/07_fine_tuning``
    (the ``ensemble`` strategy).

    ``temperatures`` (one positive number per member, default all 1): each member's logit is divided by its own
    before the sigmoid (temperature scaling, Guo et al. 2017), so that a member that is surer than it is right
    (a fine-tuned LSTM) does not outvote a more modest one just by being loud. The ``calibrated``
    strategy fits them on the draw's validation split (``transfer.fit_temperature``)."""

    #: probabilities are clipped this far from 0 and 1 before the logit, so that it stays finite
    EPS = 1e-6

    def __init__(self, members: list[nn.Module], temperatures: list[float] | None = None):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member model")
        self.members = nn.ModuleList(members)
        temperatures = [1.0] * len(members) if temperatures is None else [float(t) for t in temperatures]
        if len(temperatures) != len(members):
            raise ValueError(f"one temperature per member: {len(members)} members, {len(temperatures)} temperatures")
        if not all(math.isfinite(t) and t > 0 for t in temperatures):
            raise ValueError(f"temperatures must be positive and finite, got {temperatures}")
        self.register_buffer("temperatures", torch.tensor(temperatures, dtype=torch.float32))

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        probabilities = torch.stack([torch.sigmoid(member(tokens, lengths) / temperature)
                                     for member, temperature in zip(self.members, self.temperatures)])
        return torch.logit(probabilities.mean(dim=0), eps=self.EPS)
