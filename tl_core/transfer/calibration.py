"""Calibration for the ``calibrated`` ensemble: temperature scaling (:func:`fit_temperature`), one temperature per
member model fitted on the draw's validation split, chosen from :data:`TEMPERATURES`.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from ..train import predict_logits


#: the temperatures fit_temperature chooses from: 121 points, log-spaced from 0.1 (sharpen tenfold) to 100
TEMPERATURES = np.logspace(-1, 2, 121)


def fit_temperature(model: nn.Module, loader, temperatures=TEMPERATURES) -> float:
    """Temperature scaling (Guo et al. 2017): the ``T`` of ``temperatures`` under which ``sigmoid(logit / T)`` has
    the lowest cross-entropy on ``loader`` (the draw's validation split, never the test split). One number per
    model, so it moves every probability towards 0.5 (``T > 1``: a model surer than it is right) or away from it
    (``T < 1``: a timid one) and never changes which side of 0.5 a prediction falls on. With no examples to fit
    on it is 1 (the model as it is). Used by the ``calibrated`` strategy before it averages its members."""
    logits, labels = predict_logits(model, loader)
    if len(labels) == 0:
        return 1.0
    scaled = logits[None, :].astype(np.float64) / np.asarray(temperatures, dtype=np.float64)[:, None]
    losses = np.mean(np.logaddexp(0.0, scaled) - labels[None, :] * scaled, axis=1)  # -log p(label), stably
    return float(temperatures[int(np.argmin(losses))])
