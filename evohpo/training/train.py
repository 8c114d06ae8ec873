"""Train the network a genome describes and score it on validation data.

:func:`train_classifier` is the whole training engine of a trial: it builds
the model, trains it with the genome's optimizer, learning rate, weight decay
and batch size, scores it on the validation set after every epoch, stops early
when the score stops improving and returns the weights of the best epoch.

It is built for many short trainings on small tabular data:

* the data live as tensors on the device and mini-batches are taken by index
  from a seeded permutation (no ``DataLoader``);
* the loss of every batch is kept on the device and read once per epoch, so
  there is no host synchronisation per batch (this matters on CUDA);
* validation runs under :func:`torch.inference_mode` in large batches.

Randomness comes from three private generators derived from
``TrainConfig.seed`` (weight initialisation, batch order, dropout masks). The
global torch random state is neither read nor changed, so a run is
reproducible on the CPU whatever else the process does, also when several
trainings run in threads (Optuna's ``n_jobs``).

A loss that becomes NaN or infinite never raises: the run stops with
``stop_reason == "diverged"`` and the best weights seen so far. Pruning works
through ``on_epoch_end``: whatever that callback raises (``optuna.TrialPruned``
for instance) propagates unchanged. After SIGINT or SIGTERM to a process
whose :class:`~evohpo._interrupt.GracefulStop` is installed (the ``evohpo``
command, its workers), training raises
:class:`~evohpo.exceptions.StopRequested` after the optimizer step that is
running: the one point where a stop cuts nothing in half. This module never
imports optuna.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evohpo._interrupt import raise_if_stop_requested
from evohpo._random import derive_seed
from evohpo._validation import check_float, check_int, raise_invalid
from evohpo.evolution.genome import Genome
from evohpo.exceptions import InvalidParameterError, TrainingDivergedError
from evohpo.training.nn import (
    SeededDropout,
    build_model,
    build_optimizer,
    count_parameters,
    model_device,
    resolve_device,
)

__all__ = [
    "EpochRecord",
    "StopReason",
    "TrainConfig",
    "TrainResult",
    "predict_logits",
    "predict_proba",
    "train_classifier",
]

logger = logging.getLogger(__name__)

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
    """What :func:`train_classifier` returns.

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
        Validation accuracy of ``model``, in ``[0, 1]``. With ``best_epoch == 0``
        it is the accuracy of the initial weights (0.0 if even their validation
        loss is not finite).
    best_val_loss : float
        Mean validation cross-entropy of ``model``.
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


def train_classifier(
    genome: Genome,
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    *,
    n_classes: int,
    config: TrainConfig | None = None,
    on_epoch_end: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train the network ``genome`` describes as a classifier.

    Parameters
    ----------
    genome : Genome
        Architecture and training hyperparameters (optimizer, learning rate, weight
        decay, batch size).
    X_train, X_val : array of shape (n_samples, n_features)
        Finite numeric features, converted to float32.
    y_train, y_val : array of shape (n_samples,)
        Integer class indices in ``[0, n_classes)``.
    n_classes : int
        Number of classes (output logits), at least 2.
    config : TrainConfig, optional
        Epochs, early stopping, device, seed and time budget; ``TrainConfig()`` by
        default.
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(epoch, val_score)`` after every validated epoch
        (1-based epoch, validation accuracy), before the stopping rules are applied.
        Whatever it raises propagates unchanged and ends training: this is how an
        Optuna objective prunes (``trial.report`` then ``raise TrialPruned``). It is
        not called for a diverged epoch.

    Returns
    -------
    TrainResult
        The best epoch's model and the training record.

    Raises
    ------
    StopRequested
        At the next optimizer step after SIGINT or SIGTERM, where the
        ``evohpo`` command or a worker has installed its signal handlers.

    Notes
    -----
    The loss is minimised with cross-entropy on mini-batches of
    ``genome.batch_size`` rows (the last one may be smaller), in an order drawn
    afresh every epoch. Finiteness of the training loss is checked once per epoch
    from losses kept on the device; an epoch whose loss or validation loss is not
    finite is discarded and training stops with the best weights of an earlier
    epoch. Runs with the same seed on the CPU give identical histories and
    weights (given the same torch build and number of threads); CUDA kernels may
    add run-to-run noise.

    Examples
    --------
    >>> import numpy as np
    >>> from evohpo.evolution.genome import Genome, LayerGene
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(np.int64)
    >>> genome = Genome((LayerGene(16, "relu", 0.0),), "adam", 1e-2, 0.0, 32)
    >>> result = train_classifier(
    ...     genome, X[:150], y[:150], X[150:], y[150:], n_classes=2,
    ...     config=TrainConfig(max_epochs=20, device="cpu"),
    ... )
    >>> result.best_score > 0.8
    True
    """
    started = time.perf_counter()
    owner = "train_classifier"
    if not isinstance(genome, Genome):
        raise_invalid("genome", owner, "a Genome", genome)
    if config is None:
        config = TrainConfig()
    elif not isinstance(config, TrainConfig):
        raise_invalid("config", owner, "a TrainConfig or None", config)
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise_invalid("on_epoch_end", owner, "a callable or None", on_epoch_end)
    n_classes = check_int(n_classes, "n_classes", owner, low=2)
    x_train = _features(X_train, "X_train", owner)
    x_val = _features(X_val, "X_val", owner, n_features=x_train.shape[1])
    labels_train = _labels(y_train, "y_train", owner, x_train.shape[0], n_classes)
    labels_val = _labels(y_val, "y_val", owner, x_val.shape[0], n_classes)
    device = resolve_device(config.device)
    deadline = None if config.max_train_time is None else started + config.max_train_time

    xt = torch.from_numpy(x_train).to(device)
    yt = torch.from_numpy(labels_train).to(device)
    xv = torch.from_numpy(x_val).to(device)
    yv = torch.from_numpy(labels_val).to(device)

    init_seed = derive_seed(config.seed, "init")
    model = build_model(genome, x_train.shape[1], n_classes, seed=init_seed).to(device)
    optimizer = build_optimizer(genome, model.parameters())
    shuffle = torch.Generator(device=device).manual_seed(derive_seed(config.seed, "shuffle"))
    dropout = torch.Generator(device=device).manual_seed(derive_seed(config.seed, "dropout"))
    _set_dropout_generator(model, dropout)

    n_train = x_train.shape[0]
    batch_size = min(genome.batch_size, n_train)
    n_batches = math.ceil(n_train / batch_size)
    batch_rows = torch.full((n_batches,), float(batch_size), device=device)
    batch_rows[-1] = float(n_train - (n_batches - 1) * batch_size)
    batch_losses = torch.zeros(n_batches, device=device)

    history: list[EpochRecord] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch = 0
    best_score = -math.inf
    best_val_loss = math.inf
    reference_score = -math.inf  # score of the last improvement by more than min_delta
    since_improvement = 0
    epochs_run = 0
    stop_reason: StopReason = "max_epochs"
    diverged_reason: str | None = None

    for epoch in range(1, config.max_epochs + 1):
        epoch_started = time.perf_counter()
        epochs_run = epoch
        model.train()
        order = torch.randperm(n_train, generator=shuffle, device=device)
        done = n_batches
        for batch in range(n_batches):
            rows = order[batch * batch_size : (batch + 1) * batch_size]
            loss = F.cross_entropy(model(xt.index_select(0, rows)), yt.index_select(0, rows))
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimizer.step()
            batch_losses[batch] = loss.detach()
            raise_if_stop_requested()
            if deadline is not None and time.perf_counter() >= deadline:
                done = batch + 1
                break

        losses = batch_losses[:done]
        # Weights that sum to 1 keep the mean finite whenever every batch loss is.
        shares = batch_rows[:done] / batch_rows[:done].sum()
        train_loss = float((losses * shares).sum())
        if not math.isfinite(train_loss):
            stop_reason = "diverged"
            diverged_reason = _training_divergence(losses, epoch, n_batches)
            break
        val_loss, val_score = _evaluate(model, xv, yv, config.eval_batch_size)
        if not math.isfinite(val_loss):
            stop_reason = "diverged"
            diverged_reason = (
                f"The validation loss became {_describe(val_loss)} after epoch {epoch}, "
                f"batch {done} of {n_batches} (every training batch loss was finite)."
            )
            break
        history.append(
            EpochRecord(
                epoch=epoch,
                train_loss=train_loss,
                val_loss=val_loss,
                val_score=val_score,
                seconds=time.perf_counter() - epoch_started,
            )
        )
        if val_score > reference_score + config.min_delta:
            reference_score = val_score
            since_improvement = 0
        else:
            since_improvement += 1
        if val_score > best_score or (val_score == best_score and val_loss < best_val_loss):
            best_epoch, best_score, best_val_loss = epoch, val_score, val_loss
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if on_epoch_end is not None:
            on_epoch_end(epoch, val_score)
        if done < n_batches:
            stop_reason = "time_limit"
            break
        if epoch == config.max_epochs:
            break
        if config.patience is not None and since_improvement >= config.patience:
            stop_reason = "early_stopping"
            break
        if deadline is not None and time.perf_counter() >= deadline:
            stop_reason = "time_limit"
            break

    _set_dropout_generator(model, None)
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        # Diverged before any epoch was validated: fall back to the initial weights.
        model = build_model(genome, x_train.shape[1], n_classes, seed=init_seed).to(device)
        best_val_loss, best_score = _evaluate(model, xv, yv, config.eval_batch_size)
        if not math.isfinite(best_val_loss):
            best_score = 0.0
    model.eval()
    if diverged_reason is not None:
        logger.info("%s Keeping the weights of epoch %d.", diverged_reason, best_epoch)
    return TrainResult(
        model=model,
        best_epoch=best_epoch,
        best_score=best_score,
        best_val_loss=best_val_loss,
        epochs_run=epochs_run,
        history=history,
        stop_reason=stop_reason,
        diverged_reason=diverged_reason,
        n_parameters=count_parameters(model),
        train_seconds=time.perf_counter() - started,
    )


def _training_divergence(losses: torch.Tensor, epoch: int, n_batches: int) -> str:
    bad = torch.nonzero(~torch.isfinite(losses)).flatten().tolist()
    if not bad:  # pragma: no cover - a finite mean of finite losses
        return f"The training loss became non-finite in epoch {epoch}."
    value = float(losses[bad[0]])
    return (
        f"The training loss became {_describe(value)} in epoch {epoch}, "
        f"batch {bad[0] + 1} of {n_batches}."
    )


def _set_dropout_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    for module in model.modules():
        if isinstance(module, SeededDropout):
            module.generator = generator


def _describe(value: float) -> str:
    return "NaN" if math.isnan(value) else "infinite"


def _evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, one host sync."""
    model.eval()
    n_rows = x.shape[0]
    with torch.inference_mode():
        loss = torch.zeros((), device=x.device)
        correct = torch.zeros((), device=x.device, dtype=torch.int64)
        for start in range(0, n_rows, batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            # Chunk means weighted by chunk shares: no float32 overflow from a sum of
            # large but finite losses.
            loss += F.cross_entropy(logits, target) * (target.shape[0] / n_rows)
            correct += (logits.argmax(dim=1) == target).sum()
        mean_loss = loss.item()  # the one wait for the device; the next read is free
        n_correct = correct.item()
    return mean_loss, n_correct / n_rows


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
    x = _features(X, "X", owner, n_features=_input_width(model))
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
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return module.in_features
    return None


def _features(X: Any, name: str, owner: str, n_features: int | None = None) -> np.ndarray:
    """``X`` as a C-contiguous float32 matrix, or an error naming ``name``."""
    try:
        array = np.asarray(X)
    except (TypeError, ValueError, RuntimeError):
        raise_invalid(name, owner, "a 2-D array of numbers", X)
    if array.dtype.kind not in "biuf":
        _raise_array(name, owner, "a 2-D array of numbers", f"dtype {array.dtype}")
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        _raise_array(name, owner, "a non-empty 2-D array", f"shape {array.shape}")
    if n_features is not None and array.shape[1] != n_features:
        _raise_array(name, owner, f"an array with {n_features} columns", f"shape {array.shape}")
    result = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(result).all():
        _raise_array(name, owner, "finite (in float32)", "an array with NaN or infinite values")
    return result


def _labels(y: Any, name: str, owner: str, n_rows: int, n_classes: int) -> np.ndarray:
    """``y`` as an int64 vector of class indices, or an error naming ``name``."""
    try:
        array = np.asarray(y)
    except (TypeError, ValueError, RuntimeError):
        raise_invalid(name, owner, "a 1-D array of class indices", y)
    if array.dtype.kind not in "iu":
        _raise_array(name, owner, "a 1-D array of integer class indices", f"dtype {array.dtype}")
    if array.shape != (n_rows,):
        _raise_array(name, owner, f"a 1-D array of {n_rows} labels", f"shape {array.shape}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= n_classes:
        _raise_array(
            name,
            owner,
            f"class indices in [0, {n_classes - 1}] (n_classes={n_classes})",
            f"values in [{low}, {high}]",
        )
    return np.ascontiguousarray(array, dtype=np.int64)


def _raise_array(name: str, owner: str, expected: str, got: str) -> NoReturn:
    # The package's message template, with a description instead of the array's repr.
    raise InvalidParameterError(
        f"The {name!r} parameter of {owner} must be {expected}. Got {got} instead."
    )
