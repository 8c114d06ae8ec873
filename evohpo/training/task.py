"""What a network learns: classes (cross-entropy) or numbers (mean squared error).

A :class:`Task` is the part of training that depends on the target: how the
targets are checked and stored, the loss a batch minimises, and the
validation loss and score that choose the best epoch and stop training
early. The trainers (:mod:`evohpo.training.loop`, :mod:`evohpo.training.population`)
read it from :attr:`TrainConfig.task <evohpo.training.config.TrainConfig>`
(:func:`get_task`); everything else about training is shared.

* ``"classification"``: integer class indices, one logit per class,
  cross-entropy; the score is the accuracy.
* ``"regression"``: a float matrix of targets (one column per output, a
  vector for one output), one output per target, mean squared error; the score
  is the negative mean squared error (larger is better, as for accuracy). The
  trainer takes the targets as given: standardising them is the caller's job
  (the estimator does it, so that the loss weighs every target alike).
"""

from __future__ import annotations

from typing import Any, Literal, NoReturn

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from evohpo._validation import raise_invalid
from evohpo.exceptions import InvalidParameterError
from evohpo.training.arrays import check_labels

__all__ = ["TASKS", "Task", "TaskName", "get_task"]

TaskName = Literal["classification", "regression"]

#: The names :attr:`TrainConfig.task` accepts.
TASKS: tuple[TaskName, ...] = ("classification", "regression")


class Task:
    """The target-dependent steps of training; see the module docstring."""

    #: ``"classification"`` or ``"regression"``.
    name: TaskName
    #: Fewest outputs a network of this task has.
    min_outputs: int
    #: The trial user attribute that holds the validation score of the kept weights.
    score_attr: str
    #: The validation score in words (tables, log lines).
    score_label: str

    def check_targets(
        self, y: Any, name: str, owner: str, *, n_rows: int, n_outputs: int | None
    ) -> npt.NDArray[Any]:
        """``y`` as the trainer stores it, or raise ``InvalidParameterError``."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch: ``outputs`` ``[rows, n_outputs]``."""
        raise NotImplementedError

    def member_losses(self, outputs: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
        """Each stacked member's mean loss ``[k]``: ``outputs`` ``[k, rows, n_outputs]``,
        ``target`` the members' rows one after the other (``k * rows`` of them)."""
        raise NotImplementedError

    def member_losses_and_grads(
        self, outputs: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`member_losses` and, without autograd, their sum's gradient with
        respect to ``outputs`` (each member's gradient of its own mean loss), of
        the shape of ``outputs``."""
        raise NotImplementedError

    def evaluate(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
    ) -> tuple[float, float]:
        """Mean validation loss and score of ``model`` on ``(x, y)``, one host sync."""
        raise NotImplementedError

    def evaluate_stack(
        self, forward: Any, x: torch.Tensor, y: torch.Tensor, batch_size: int, k: int
    ) -> tuple[list[float], list[float]]:
        """Each member's mean validation loss and score; ``forward(x)`` gives
        ``[k, rows, n_outputs]``."""
        raise NotImplementedError


class _Classification(Task):
    name: TaskName = "classification"
    min_outputs = 2
    score_attr = "val_accuracy"
    score_label = "accuracy"

    def check_targets(
        self, y: Any, name: str, owner: str, *, n_rows: int, n_outputs: int | None
    ) -> npt.NDArray[Any]:
        return check_labels(y, name, owner, n_rows=n_rows, n_classes=n_outputs)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, target)

    def member_losses(self, outputs: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
        per_row = F.cross_entropy(outputs.reshape(target.shape[0], -1), target, reduction="none")
        return per_row.view(k, -1).mean(dim=1)

    def member_losses_and_grads(
        self, outputs: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k, rows, _ = outputs.shape
        index = target.view(k, rows, 1)
        log_proba = torch.log_softmax(outputs, dim=2)
        losses = log_proba.gather(2, index).view(k, rows).mean(dim=1).neg_()
        # d(mean cross-entropy)/d(logits) = (softmax - one-hot) / rows
        grad = log_proba.exp_()
        grad.scatter_(2, index, grad.gather(2, index).sub_(1.0))
        return losses, grad.div_(rows)

    def evaluate(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
    ) -> tuple[float, float]:
        model.eval()
        n_rows = x.shape[0]
        with torch.inference_mode():
            loss = torch.zeros((), device=x.device)
            correct = torch.zeros((), device=x.device, dtype=torch.int64)
            for start in range(0, n_rows, batch_size):
                logits = model(x[start : start + batch_size])
                target = y[start : start + batch_size]
                # Chunk means weighted by chunk shares: no float32 overflow from a sum
                # of large but finite losses.
                loss += F.cross_entropy(logits, target) * (target.shape[0] / n_rows)
                correct += (logits.argmax(dim=1) == target).sum()
            mean_loss = loss.item()  # the one wait for the device; the next read is free
            n_correct = correct.item()
        return mean_loss, n_correct / n_rows

    def evaluate_stack(
        self, forward: Any, x: torch.Tensor, y: torch.Tensor, batch_size: int, k: int
    ) -> tuple[list[float], list[float]]:
        n_rows = x.shape[0]
        loss = torch.zeros(k, device=x.device)
        correct = torch.zeros(k, device=x.device, dtype=torch.int64)
        with torch.inference_mode():
            for start in range(0, n_rows, batch_size):
                logits = forward(x[start : start + batch_size])  # [k, rows, classes]
                target = y[start : start + batch_size]
                rows = target.shape[0]
                per_row = F.cross_entropy(
                    logits.reshape(k * rows, -1), target.repeat(k), reduction="none"
                )
                loss += per_row.view(k, rows).mean(dim=1) * (rows / n_rows)
                correct += (logits.argmax(dim=2) == target).sum(dim=1)
            losses = loss.tolist()
            return losses, [c / n_rows for c in correct.tolist()]


class _Regression(Task):
    name: TaskName = "regression"
    min_outputs = 1
    score_attr = "val_neg_mse"
    score_label = "negative MSE"

    def check_targets(
        self, y: Any, name: str, owner: str, *, n_rows: int, n_outputs: int | None
    ) -> npt.NDArray[Any]:
        expected = "a 1-D or 2-D array of finite numbers"
        try:
            array = np.asarray(y)
        except (TypeError, ValueError, RuntimeError):
            raise_invalid(name, owner, expected, y)
        if array.dtype.kind not in "biuf":
            _refuse(name, owner, expected, f"dtype {array.dtype}")
        if array.ndim == 1:
            array = array.reshape(-1, 1)
        if array.ndim != 2 or array.shape[0] != n_rows or array.shape[1] < 1:
            _refuse(name, owner, f"an array of {n_rows} rows of targets", f"shape {array.shape}")
        if n_outputs is not None and array.shape[1] != n_outputs:
            _refuse(name, owner, f"{n_outputs} target column(s)", f"shape {array.shape}")
        with np.errstate(over="ignore"):
            result = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(result).all():
            _refuse(name, owner, "finite (in float32)", "an array with NaN or infinite values")
        return result

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs, target)

    def member_losses(self, outputs: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
        errors = outputs.reshape(target.shape) - target
        return errors.square().view(k, -1).mean(dim=1)

    def member_losses_and_grads(
        self, outputs: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k, rows, n_outputs = outputs.shape
        errors = outputs - target.view(k, rows, n_outputs)
        losses = errors.square().view(k, -1).mean(dim=1)
        return losses, errors.mul_(2.0 / (rows * n_outputs))

    def evaluate(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
    ) -> tuple[float, float]:
        model.eval()
        n_rows = x.shape[0]
        with torch.inference_mode():
            loss = torch.zeros((), device=x.device)
            for start in range(0, n_rows, batch_size):
                target = y[start : start + batch_size]
                outputs = model(x[start : start + batch_size])
                loss += F.mse_loss(outputs, target) * (target.shape[0] / n_rows)
            mean_loss = loss.item()
        return mean_loss, -mean_loss

    def evaluate_stack(
        self, forward: Any, x: torch.Tensor, y: torch.Tensor, batch_size: int, k: int
    ) -> tuple[list[float], list[float]]:
        n_rows = x.shape[0]
        loss = torch.zeros(k, device=x.device)
        with torch.inference_mode():
            for start in range(0, n_rows, batch_size):
                outputs = forward(x[start : start + batch_size])  # [k, rows, targets]
                target = y[start : start + batch_size]
                errors = (outputs - target).square().mean(dim=(1, 2))
                loss += errors * (target.shape[0] / n_rows)
            losses = loss.tolist()
        return losses, [-value for value in losses]


def _refuse(name: str, owner: str, expected: str, got: str) -> NoReturn:
    # The package's message template, describing the array instead of printing it.
    raise InvalidParameterError(
        f"The {name!r} parameter of {owner} must be {expected}. Got {got} instead."
    )


_TASKS: dict[str, Task] = {"classification": _Classification(), "regression": _Regression()}


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name`` (one of :data:`TASKS`).

    Examples
    --------
    >>> get_task("regression").score_attr
    'val_neg_mse'
    """
    try:
        return _TASKS[name]
    except (KeyError, TypeError):
        raise_invalid("task", "get_task", f"one of {set(TASKS)}", name)
