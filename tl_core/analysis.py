"""Looking inside a trained classifier: predictions in a dataset's own order or for your own sentences, and word
saliency.

Introduced in ``notebooks/07_fine_tuning.ipynb`` (error analysis: which target reviews transfer fixed or broke;
which words a prediction rests on).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .text import Encoded, Vocab, make_loader, numericalize
from .train import predict as predict_loader

#: Tokens a text is cut to when a learner classifies their own sentences (as the source model's max_len).
PREDICT_MAX_LEN = 800


def predict_probabilities(model: nn.Module, encoded: Encoded, batch_size: int = 256) -> np.ndarray:
    """P(positive) of every text of ``encoded``, in ``encoded``'s order (the loaders batch by length, so their
    order is not the dataset's). Introduced in ``notebooks/07_fine_tuning.ipynb``."""
    loader = make_loader(encoded, None, batch_size, shuffle=False)
    loader_order = [index for batch in loader.batch_sampler for index in batch]
    probabilities = np.empty(len(encoded), dtype=np.float64)
    probabilities[loader_order] = predict_loader(model, loader)[0]
    return probabilities


def predict(model: nn.Module, vocab: Vocab, texts: str | Sequence[str], max_len: int = PREDICT_MAX_LEN
            ) -> list[tuple[str, float]]:
    """Classify your own sentences in one call: each text with the model's P(positive), in the order given.

        predict(model, vocab, ["the blender is loud but works", "a waste of money"])

    The texts go through the course tokenizer and ``vocab`` (the one the model was trained with); words it does
    not know become ``<unk>``. Introduced in ``notebooks/05_source_lstm.ipynb``, used again in 07."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("predict takes a text or a list of texts (str)")
    if not texts:
        return []
    probabilities = predict_probabilities(model, numericalize(texts, vocab, max_len))
    return [(t, float(p)) for t, p in zip(texts, probabilities)]


def word_saliency(model: nn.Module, token_ids: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[float, np.ndarray]:
    """Gradient × input saliency of each token of one review: ``s_t = ∂logit/∂e_t · e_t``, where ``e_t`` is the
    word vector of token ``t`` (Simonyan et al. 2014; Denil et al. 2014 for text). Positive: the word pushes the
    prediction towards *positive*, negative: towards *negative*. The sum over tokens is the derivative of the
    logit along the review's own word vectors (scaling them all by 1+ε changes the logit by ε·Σ s_t), a first-order
    picture, not an exact decomposition. A model that reads several embedding tables (an ensemble of classifiers)
    gets the sum of every table's ``s_t``: the same derivative, taken along all of the word's vectors at once.

    Returns (logit, saliency per token). The model is put in eval mode (no dropout). Introduced in
    ``notebooks/07_fine_tuning.ipynb``.
    """
    ids = torch.as_tensor(np.asarray(token_ids), dtype=torch.int64).reshape(1, -1)
    if ids.shape[1] == 0:
        raise ValueError("word_saliency needs at least one token")
    tables = [module for module in model.modules() if isinstance(module, nn.Embedding)]
    if not tables:
        raise TypeError(f"word_saliency needs a model that reads word vectors from an nn.Embedding, got "
                        f"{type(model).__name__}")
    captured: list[torch.Tensor] = []  # the review's word vectors from each table the model reads

    def vectors_as_leaf(_module, _inputs, output):
        # a leaf of the review's own word vectors: its gradient is what we want, whether or not the embedding
        # table itself trains (frozen strategies), and no parameter's .grad is touched
        captured.append(output.detach().requires_grad_(True))
        return captured[-1]

    was_training = model.training
    model.eval()
    handles = [table.register_forward_hook(vectors_as_leaf) for table in tables]
    try:
        with torch.enable_grad():
            logit = model(ids.to(tables[0].weight.device), torch.tensor([ids.shape[1]]))
            gradients = torch.autograd.grad(logit.sum(), captured)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    # each table's first-order share, summed: scaling the word's vector by 1+ε in every table moves the logit ~ε·s
    saliency = sum((gradient * vectors).sum(dim=-1)[0] for gradient, vectors in zip(gradients, captured))
    saliency = saliency.detach().double().cpu().numpy()
    return float(logit.detach().sum()), saliency
