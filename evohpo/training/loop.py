"""Train the network a genome describes and score it on validation data.

:func:`train_classifier` is the whole training engine of a trial: it builds
the model, trains it with the genome's optimizer, learning rate, weight decay
and batch size, scores it on the validation set after every epoch, stops early
when the score stops improving and returns the weights of the best epoch. It
is made of small steps: one epoch (:func:`_train_epoch`), one evaluation
(:func:`evaluate`), the early-stopping rule (:class:`EarlyStopping`) and the
keeping of the best weights (:class:`_BestWeights`).

It is built for many short trainings on small tabular data:

* the data live as tensors on the device and mini-batches are taken by index
  from a seeded permutation (no ``DataLoader``);
* the loss of every batch is kept on the device and read once per epoch, so
  there is no host synchronisation per batch;
* validation runs under :func:`torch.inference_mode` in large batches;
* a small network's parameters are views of one flat tensor, stepped by one
  element-wise update rule rather than ``torch.optim``, whose per-step Python
  costs more than such a network's arithmetic (:mod:`evohpo.training.flat`);
* inside a :func:`~evohpo.training.threads.thread_budget` on the CPU, a network
  bound by arithmetic trains with the budget's threads, a small one with one
  (:mod:`evohpo.training.cost`).

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
running: the one point where a stop cuts nothing in half.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from evohpo._interrupt import raise_if_stop_requested
from evohpo._random import derive_seed
from evohpo._validation import check_int, raise_invalid
from evohpo.training.config import EpochRecord, StopReason, TrainConfig, TrainResult
from evohpo.training.cost import arithmetic_bound
from evohpo.training.epochs import (
    Batches,
    EarlyStopping,
    TrainingData,
    check_data,
    describe_value,
    evaluate,
    stop_reason_after,
    training_divergence,
)
from evohpo.training.flat import FlatParameters, solo_optimizer
from evohpo.training.nn import (
    SeededDropout,
    build_model,
    count_parameters,
    resolve_device,
    start_model,
)
from evohpo.training.spec import NetworkSpec, check_network
from evohpo.training.stack_optimizer import StackOptimizer
from evohpo.training.task import Task, get_task
from evohpo.training.threads import threads_for, torch_threads

__all__ = ["train_classifier"]

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, float], None]


def train_classifier(
    genome: NetworkSpec,
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    *,
    n_classes: int,
    config: TrainConfig | None = None,
    on_epoch_end: EpochCallback | None = None,
    input_shape: Sequence[int] | None = None,
    initial_state: Mapping[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train the network ``genome`` describes as a classifier.

    Parameters
    ----------
    genome : Genome or NetworkSpec
        Architecture and training hyperparameters (optimizer, learning rate, weight
        decay, batch size).
    X_train, X_val : array of shape (n_samples, n_features)
        Finite numeric features, converted to float32.
    y_train, y_val : array of shape (n_samples,) or (n_samples, n_classes)
        Integer class indices in ``[0, n_classes)``; with ``config.task ==
        "regression"`` finite targets, one column per output (a vector for one).
    n_classes : int
        Number of classes (output logits), at least 2; with ``config.task ==
        "regression"`` the number of targets (outputs), at least 1.
    config : TrainConfig, optional
        Epochs, early stopping, device, seed and time budget; ``TrainConfig()`` by
        default.
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(epoch, val_score)`` after every validated epoch
        (1-based epoch, validation accuracy), before the stopping rules are applied.
        Whatever it raises propagates unchanged and ends training: this is how an
        Optuna objective prunes (``trial.report`` then ``raise TrialPruned``). It is
        not called for a diverged epoch.
    input_shape : sequence of int, optional
        ``(channels, length)`` or ``(channels, height, width)`` of the rows (its
        product is ``n_features``), for a genome with a convolutional body; see
        :func:`~evohpo.training.nn.build_model`. The rows stay flat: the model
        reshapes them.
    initial_state : mapping of str to Tensor, optional
        Weights to start from instead of the seed's (a state dict of the
        genome's model, such as inherited weights; see
        :func:`~evohpo.training.nn.start_model`). The optimizer state starts
        afresh either way.

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
    The loss is minimised with cross-entropy (mean squared error for
    ``task="regression"``, :mod:`evohpo.training.task`) on mini-batches of
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
    genome = check_network(genome, "genome", owner)
    if config is None:
        config = TrainConfig()
    elif not isinstance(config, TrainConfig):
        raise_invalid("config", owner, "a TrainConfig or None", config)
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise_invalid("on_epoch_end", owner, "a callable or None", on_epoch_end)
    task = get_task(config.task)
    n_classes = check_int(n_classes, "n_classes", owner, low=task.min_outputs)
    arrays = check_data(X_train, y_train, X_val, y_val, n_classes, owner, task)
    device = resolve_device(config.device)
    data = TrainingData(*(torch.from_numpy(array).to(device) for array in arrays))
    deadline = None if config.max_train_time is None else started + config.max_train_time

    threads = None
    if device.type == "cpu":
        bound = arithmetic_bound(genome, int(data.x_train.shape[1]), n_classes)
        threads = threads_for(arithmetic_bound=bound)
    with torch_threads(threads):
        run = _Run.start(genome, data, n_classes, config, input_shape, initial_state)
        _train_epochs(run, config, deadline, on_epoch_end)
        run.restore_best(genome, n_classes, config)
    if run.diverged_reason is not None:
        logger.info("%s Keeping the weights of epoch %d.", run.diverged_reason, run.best.epoch)
    return TrainResult(
        model=run.model,
        best_epoch=run.best.epoch,
        best_score=run.best.score,
        best_val_loss=run.best.val_loss,
        epochs_run=run.epochs_run,
        history=run.history,
        stop_reason=run.stop_reason,
        diverged_reason=run.diverged_reason,
        n_parameters=count_parameters(run.model),
        train_seconds=time.perf_counter() - started,
    )


class _BestWeights:
    """The weights of the epoch with the highest accuracy, the lowest loss breaking ties."""

    def __init__(self) -> None:
        self.epoch = 0
        self.score = -math.inf
        self.val_loss = math.inf
        self.state: dict[str, torch.Tensor] | None = None

    def offer(self, epoch: int, score: float, val_loss: float, model: nn.Module) -> None:
        """Keep a copy of ``model``'s weights if this epoch beats the best so far."""
        if score > self.score or (score == self.score and val_loss < self.val_loss):
            self.epoch, self.score, self.val_loss = epoch, score, val_loss
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class _Run:
    """The state of one training run."""

    model: nn.Sequential
    flat: FlatParameters | None
    optimizer: StackOptimizer | torch.optim.Optimizer
    shuffle: torch.Generator
    data: TrainingData
    batches: Batches
    init_seed: int
    input_shape: Sequence[int] | None
    task: Task
    #: The weights training started from, if not the seed's (the fallback of a
    #: run that diverges before its first validated epoch).
    initial_state: Mapping[str, torch.Tensor] | None = None
    best: _BestWeights = field(default_factory=_BestWeights)
    history: list[EpochRecord] = field(default_factory=list)
    epochs_run: int = 0
    stop_reason: StopReason = "max_epochs"
    diverged_reason: str | None = None

    @classmethod
    def start(
        cls,
        genome: NetworkSpec,
        data: TrainingData,
        n_classes: int,
        config: TrainConfig,
        input_shape: Sequence[int] | None,
        initial_state: Mapping[str, torch.Tensor] | None = None,
    ) -> _Run:
        """A fresh model, its optimizer and the seeded generators of the run."""
        device = data.x_train.device
        init_seed = derive_seed(config.seed, "init")
        n_features = data.x_train.shape[1]
        model = start_model(
            genome,
            n_features,
            n_classes,
            seed=init_seed,
            input_shape=input_shape,
            initial_state=initial_state,
            owner="train_classifier",
        ).to(device)
        flat, optimizer = solo_optimizer(model, genome)
        shuffle = torch.Generator(device=device).manual_seed(derive_seed(config.seed, "shuffle"))
        dropout = torch.Generator(device=device).manual_seed(derive_seed(config.seed, "dropout"))
        _set_dropout_generator(model, dropout)
        has_norm = any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())
        batches = Batches(data.x_train.shape[0], genome.batch_size, device, no_single=has_norm)
        task = get_task(config.task)
        return cls(
            model,
            flat,
            optimizer,
            shuffle,
            data,
            batches,
            init_seed,
            input_shape,
            task,
            initial_state,
        )

    def restore_best(self, genome: NetworkSpec, n_classes: int, config: TrainConfig) -> None:
        """Leave the best epoch's weights in ``model``, in eval mode."""
        _set_dropout_generator(self.model, None)
        if self.flat is not None:
            self.flat.release()
        if self.best.state is not None:
            self.model.load_state_dict(self.best.state)
        else:
            # Diverged before any epoch was validated: fall back to the initial weights.
            data = self.data
            n_features = data.x_train.shape[1]
            model = build_model(
                genome, n_features, n_classes, seed=self.init_seed, input_shape=self.input_shape
            )
            if self.initial_state is not None:
                model.load_state_dict(self.initial_state)
            self.model = model.to(data.x_train.device)
            loss, score = evaluate(
                self.model, data.x_val, data.y_val, config.eval_batch_size, self.task
            )
            self.best.val_loss = loss
            self.best.score = score if math.isfinite(loss) else 0.0
        self.model.eval()


def _train_epochs(
    run: _Run, config: TrainConfig, deadline: float | None, on_epoch_end: EpochCallback | None
) -> None:
    """Train epoch after epoch until a stopping rule fires; record it in ``run``."""
    stopping = EarlyStopping(config.patience, config.min_delta)
    data, batches = run.data, run.batches
    for epoch in range(1, config.max_epochs + 1):
        epoch_started = time.perf_counter()
        run.epochs_run = epoch
        done = _train_epoch(run, deadline)
        train_loss = batches.mean_loss(done)
        if not math.isfinite(train_loss):
            run.stop_reason = "diverged"
            run.diverged_reason = training_divergence(batches.losses[:done], epoch, batches.count)
            return
        val_loss, val_score = evaluate(
            run.model, data.x_val, data.y_val, config.eval_batch_size, run.task
        )
        if not math.isfinite(val_loss):
            run.stop_reason = "diverged"
            run.diverged_reason = (
                f"The validation loss became {describe_value(val_loss)} after epoch {epoch}, "
                f"batch {done} of {batches.count} (every training batch loss was finite)."
            )
            return
        seconds = time.perf_counter() - epoch_started
        run.history.append(
            EpochRecord(
                epoch=epoch,
                train_loss=train_loss,
                val_loss=val_loss,
                val_score=val_score,
                seconds=seconds,
            )
        )
        stopping.update(val_score)
        run.best.offer(epoch, val_score, val_loss, run.model)
        if on_epoch_end is not None:
            on_epoch_end(epoch, val_score)
        reason = stop_reason_after(epoch, done < batches.count, stopping, config, deadline)
        if reason is not None:
            run.stop_reason = reason
            return


def _train_epoch(run: _Run, deadline: float | None) -> int:
    """One pass over the training set in a fresh random order; the batches run.

    Fewer than all batches run when ``deadline`` passes mid-epoch.
    """
    model, optimizer, batches, data = run.model, run.optimizer, run.batches, run.data
    model.train()
    order = torch.randperm(batches.n_rows, generator=run.shuffle, device=data.x_train.device)
    for batch in range(batches.count):
        rows = order[batches.slice(batch)]
        logits = model(data.x_train.index_select(0, rows))
        loss = run.task.loss(logits, data.y_train.index_select(0, rows))
        optimizer.zero_grad()
        torch.autograd.backward(loss)
        optimizer.step()
        batches.losses[batch] = loss.detach()
        raise_if_stop_requested()
        if deadline is not None and time.perf_counter() >= deadline:
            return batch + 1
    return batches.count


def _set_dropout_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    for module in model.modules():
        if isinstance(module, SeededDropout):
            module.generator = generator
