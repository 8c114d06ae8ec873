"""Predictions of a trained network: raw logits and class probabilities."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from evohpo._validation import check_int
from evohpo.training.arrays import check_features
from evohpo.training.nn import model_device, resolve_device

__all__ = ["predict_logits", "predict_proba"]


def predict_logits(
    model: nn.Module,
    X: Any,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Raw outputs of ``model`` for the rows of ``X``, as a float32 array.

    The model runs in eval mode (its previous mode is restored) under
    :func:`torch.inference_mode`, ``batch_size`` rows at a time. ``device``
    defaults to the model's own device; when another is given, a copy of the model
    runs there and ``model`` itself is not moved.
    """
    owner = "predict_logits"
    batch_size = check_int(batch_size, "batch_size", owner, low=1)
    x = check_features(X, "X", owner, n_features=_input_width(model))
    here = model_device(model)
    target = here if device is None else resolve_device(device)
    runner = model if target == here else _copy_to(model, target)
    was_training = model.training
    runner.eval()
    try:
        chunks: list[np.ndarray] = []
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(target)
            for start in range(0, xt.shape[0], batch_size):
                out = runner(xt[start : start + batch_size])
                chunks.append(out.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(chunks, axis=0)


def predict_proba(
    model: nn.Module,
    X: Any,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Class probabilities (softmax of the logits) as float64 rows that sum to 1.

    See :func:`predict_logits` for ``device`` and ``batch_size``.

    Examples
    --------
    >>> import numpy as np
    >>> from evohpo.evolution.genome import Genome, LayerGene
    >>> from evohpo.training.nn import build_model
    >>> genome = Genome((LayerGene(8, "tanh", 0.0),), "sgd", 0.1, 0.0, 16)
    >>> proba = predict_proba(build_model(genome, 3, 4, seed=0), np.zeros((5, 3)))
    >>> proba.shape, bool(np.allclose(proba.sum(axis=1), 1.0))
    ((5, 4), True)
    """
    logits = predict_logits(model, X, device=device, batch_size=batch_size).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def _copy_to(model: nn.Module, device: torch.device) -> nn.Module:
    return copy.deepcopy(model).to(device)


def _input_width(model: nn.Module) -> int | None:
    # A convolutional model starts by unflattening its rows; a dense one reads them.
    for module in model.modules():
        if isinstance(module, nn.Unflatten):
            return math.prod(module.unflattened_size)
        if isinstance(module, nn.Linear):
            return module.in_features
    return None
