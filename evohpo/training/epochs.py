"""The pieces of an epoch loop that the solo and the stacked trainer share.

The data as tensors on the device, the mini-batches of an epoch, the
early-stopping counter, the rule that ends training after a validated epoch,
and the validation pass of one model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from evohpo.training.arrays import check_features
from evohpo.training.config import StopReason, TrainConfig
from evohpo.training.task import Task, get_task

#: The task of a trainer called without one.
CLASSIFICATION = get_task("classification")

__all__ = [
    "CLASSIFICATION",
    "Batches",
    "EarlyStopping",
    "TrainingData",
    "check_data",
    "describe_value",
    "evaluate",
    "stop_reason_after",
    "training_divergence",
]


def check_data(
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    n_classes: int,
    owner: str,
    task: Task = CLASSIFICATION,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four arrays as float32 features and the task's targets (int64 class
    indices, or float32 target matrices of ``n_classes`` columns), checked."""
    x_train = check_features(X_train, "X_train", owner)
    x_val = check_features(X_val, "X_val", owner, n_features=x_train.shape[1])
    labels_train = task.check_targets(
        y_train, "y_train", owner, n_rows=x_train.shape[0], n_outputs=n_classes
    )
    labels_val = task.check_targets(
        y_val, "y_val", owner, n_rows=x_val.shape[0], n_outputs=n_classes
    )
    return x_train, labels_train, x_val, labels_val


@dataclass(frozen=True)
class TrainingData:
    """The training and validation sets as tensors on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


class Batches:
    """Mini-batches of one epoch: their sizes and the losses kept on the device.

    With ``no_single`` a last batch of one row joins the batch before it: batch
    normalisation cannot train on one row with one position.
    """

    def __init__(
        self, n_rows: int, batch_size: int, device: torch.device, *, no_single: bool = False
    ) -> None:
        self.n_rows = n_rows
        self.size = min(batch_size, n_rows)
        self.count = math.ceil(n_rows / self.size)
        if no_single and self.count > 1 and n_rows - (self.count - 1) * self.size == 1:
            self.count -= 1
        self.rows = torch.full((self.count,), float(self.size), device=device)
        self.rows[-1] = float(n_rows - (self.count - 1) * self.size)
        self.losses = torch.zeros(self.count, device=device)

    def slice(self, batch: int) -> slice:
        """Positions of batch ``batch`` in the epoch's order (the last one takes the rest)."""
        end = self.n_rows if batch == self.count - 1 else (batch + 1) * self.size
        return slice(batch * self.size, end)

    def mean_loss(self, done: int) -> float:
        """Row-weighted mean loss of the first ``done`` batches (one host sync)."""
        losses = self.losses[:done]
        # Weights that sum to 1 keep the mean finite whenever every batch loss is.
        shares = self.rows[:done] / self.rows[:done].sum()
        return float((losses * shares).sum())


class EarlyStopping:
    """Counts the epochs since the accuracy last rose by more than ``min_delta``."""

    def __init__(self, patience: int | None, min_delta: float) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.reference = -math.inf  # score of the last improvement by more than min_delta
        self.since_improvement = 0

    def update(self, score: float) -> None:
        if score > self.reference + self.min_delta:
            self.reference = score
            self.since_improvement = 0
        else:
            self.since_improvement += 1

    @property
    def exhausted(self) -> bool:
        """Whether patience ran out."""
        return self.patience is not None and self.since_improvement >= self.patience


def stop_reason_after(
    epoch: int,
    cut_short: bool,
    stopping: EarlyStopping,
    config: TrainConfig,
    deadline: float | None,
) -> StopReason | None:
    """Why training stops after this validated epoch, or ``None`` to go on."""
    if cut_short:
        return "time_limit"
    if epoch == config.max_epochs:
        return "max_epochs"
    if stopping.exhausted:
        return "early_stopping"
    if deadline is not None and time.perf_counter() >= deadline:
        return "time_limit"
    return None


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    task: Task = CLASSIFICATION,
) -> tuple[float, float]:
    """Mean validation loss and score of ``model`` on ``(x, y)`` (cross-entropy and
    accuracy by default; see :class:`~evohpo.training.task.Task`), one host sync."""
    return task.evaluate(model, x, y, batch_size)


def training_divergence(losses: torch.Tensor, epoch: int, n_batches: int) -> str:
    bad = torch.nonzero(~torch.isfinite(losses)).flatten().tolist()
    if not bad:  # pragma: no cover - a finite mean of finite losses
        return f"The training loss became non-finite in epoch {epoch}."
    value = float(losses[bad[0]])
    return (
        f"The training loss became {describe_value(value)} in epoch {epoch}, "
        f"batch {bad[0] + 1} of {n_batches}."
    )


def describe_value(value: float) -> str:
    return "NaN" if math.isnan(value) else "infinite"
