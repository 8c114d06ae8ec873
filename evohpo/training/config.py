"""How to train and what training returns: :class:`TrainConfig`, :class:`TrainResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import torch
from torch import nn

from evohpo._validation import check_float, check_int, raise_invalid
from evohpo.exceptions import InvalidParameterError, TrainingDivergedError
from evohpo.training.task import TASKS, TaskName

__all__ = ["EpochRecord", "StopReason", "TrainConfig", "TrainResult"]

StopReason = Literal["max_epochs", "early_stopping", "diverged", "time_limit"]

_MAX_SEED = 2**64 - 1


class EpochRecord(TypedDict):
    """One entry of :attr:`TrainResult.history`."""

    epoch: int
    train_loss: float
    val_loss: float
    val_score: float
    seconds: float


@dataclass(frozen=True)
class TrainConfig:
    """How to train: epochs, early stopping, device, seed and time budget.

    Every field is validated on construction; a bad value raises
    :class:`~evohpo.exceptions.InvalidParameterError` naming the field.

    Parameters
    ----------
    max_epochs : int
        Upper bound on the number of epochs, at least 1.
    patience : int or None
        Stop after this many consecutive epochs without an improvement of the
        validation accuracy (at least 1); ``None`` disables early stopping.
    min_delta : float
        Smallest rise of the validation accuracy (>= 0) that counts as an
        improvement for ``patience``. It does not affect which weights are kept:
        those of the epoch with the highest accuracy, the lowest validation loss
        breaking ties.
    device : str or torch.device
        ``"auto"`` (CUDA when available, else the CPU), or any torch device.
    seed : int
        Root of the weight-initialisation, batch-order and dropout streams,
        in ``[0, 2**64 - 1]``.
    eval_batch_size : int
        Rows per forward pass when scoring the validation set, at least 1.
    max_train_time : float or None
        Wall-clock budget in seconds (> 0). It is checked after every batch; when it
        runs out mid-epoch, that partial epoch is still validated and recorded, and
        training stops with ``stop_reason == "time_limit"``. ``None``: no limit.
    task : {"classification", "regression"}
        What the network learns (:mod:`evohpo.training.task`): class indices with
        cross-entropy, the validation score being the accuracy; or float targets
        with mean squared error, the score being the negative mean squared error.
        ``patience``, ``min_delta`` and the best weights follow that score.

    Examples
    --------
    >>> TrainConfig(max_epochs=20, patience=None).max_epochs
    20
    >>> TrainConfig(patience=0)
    Traceback (most recent call last):
    ...
    evohpo.exceptions.InvalidParameterError: The 'patience' parameter of TrainConfig must be ...
    """

    max_epochs: int = 100
    patience: int | None = 10
    min_delta: float = 0.0
    device: str | torch.device = "auto"
    seed: int = 0
    eval_batch_size: int = 4096
    max_train_time: float | None = None
    task: TaskName = "classification"

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        object.__setattr__(
            self, "max_epochs", check_int(self.max_epochs, "max_epochs", owner, low=1)
        )
        if self.patience is not None:
            try:
                patience = check_int(self.patience, "patience", owner, low=1)
            except InvalidParameterError:
                raise_invalid("patience", owner, "an int >= 1 or None", self.patience)
            object.__setattr__(self, "patience", patience)
        object.__setattr__(
            self, "min_delta", check_float(self.min_delta, "min_delta", owner, low=0.0)
        )
        _check_device_spec(self.device, owner)
        object.__setattr__(self, "seed", check_int(self.seed, "seed", owner, low=0, high=_MAX_SEED))
        object.__setattr__(
            self,
            "eval_batch_size",
            check_int(self.eval_batch_size, "eval_batch_size", owner, low=1),
        )
        if self.max_train_time is not None:
            try:
                limit = check_float(
                    self.max_train_time, "max_train_time", owner, low=0.0, low_open=True
                )
            except InvalidParameterError:
                raise_invalid("max_train_time", owner, "a float > 0.0 or None", self.max_train_time)
            object.__setattr__(self, "max_train_time", limit)
        if not isinstance(self.task, str) or self.task not in TASKS:
            raise_invalid("task", owner, f"one of {TASKS}", self.task)


def _check_device_spec(device: Any, owner: str) -> None:
    # Only the spelling is checked here: a config may be written where CUDA is
    # missing and used where it is present. Availability is checked at training.
    expected = "'auto' or a torch device such as 'cpu' or 'cuda:0'"
    if isinstance(device, torch.device) or device == "auto":
        return
    if not isinstance(device, str):
        raise_invalid("device", owner, expected, device)
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise_invalid("device", owner, expected, device)


@dataclass
class TrainResult:
    """What :func:`~evohpo.training.loop.train_classifier` returns.

    Attributes
    ----------
    model : torch.nn.Sequential
        The model with the weights of the best epoch, in eval mode, left on the
        training device (``result.model.cpu()`` moves it).
    best_epoch : int
        1-based epoch whose weights ``model`` holds; 0 when no epoch finished with
        a finite loss (training diverged at once): ``model`` then holds the initial
        weights.
    best_score : float
        Validation score of ``model``: its accuracy, in ``[0, 1]`` (the negative
        mean squared error with ``task="regression"``). With ``best_epoch == 0``
        it is the accuracy of the initial weights (0.0 if even their validation
        loss is not finite).
    best_val_loss : float
        Mean validation loss of ``model`` (cross-entropy, or mean squared error).
    epochs_run : int
        Epochs in which training happened, a diverged or time-cut one included.
    history : list of EpochRecord
        One dict per validated epoch: ``epoch``, ``train_loss``, ``val_loss``,
        ``val_score``, ``seconds`` (training and validation of that epoch). All
        values are finite; a diverged epoch is not recorded.
    stop_reason : {"max_epochs", "early_stopping", "diverged", "time_limit"}
        Why training stopped.
    diverged_reason : str or None
        Where the loss stopped being finite (epoch and batch), else ``None``.
    n_parameters : int
        Trainable parameters of ``model``.
    train_seconds : float
        Wall-clock seconds of the whole call.
    """

    model: nn.Sequential
    best_epoch: int
    best_score: float
    best_val_loss: float
    epochs_run: int
    history: list[EpochRecord] = field(repr=False)
    stop_reason: StopReason
    diverged_reason: str | None
    n_parameters: int
    train_seconds: float

    @property
    def diverged(self) -> bool:
        """Whether training stopped because the loss stopped being finite."""
        return self.stop_reason == "diverged"

    def raise_if_diverged(self) -> None:
        """Raise :class:`~evohpo.exceptions.TrainingDivergedError` if training diverged.

        For callers that want divergence to be an error; the trainer itself never
        raises on divergence.
        """
        if self.stop_reason == "diverged":
            raise TrainingDivergedError(self.diverged_reason or "Training diverged.")
