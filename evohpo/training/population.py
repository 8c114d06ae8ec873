"""Train many genomes at once: :func:`train_population`.

The small networks a search mostly trains are bound by torch's fixed cost per
operation, not by arithmetic: a 64-unit layer at batch 32 keeps a CPU core's
matrix units a few percent busy. Training k of them as one stack
(:class:`~evohpo.training.stack_model.DenseStack`) pays that cost once per
step for all k.

Each member trains as it would alone with
:func:`~evohpo.training.loop.train_classifier` and the same ``TrainConfig``:

* the same initial weights (from its own seed) and the same order of batches
  (its own shuffling stream), so without dropout a member follows its solo run
  up to floating-point rounding;
* its own optimizer, learning rate, weight decay and optimizer state
  (:class:`~evohpo.training.stack_optimizer.StackOptimizer`);
* its own validation after every epoch, early stopping, best weights, divergence
  check and ``max_epochs``. A member that stops leaves the stack at the end of
  that epoch (the stack is compacted: the others' weights and optimizer state
  are carried over unchanged).

Dropout masks come from one stream per stack, derived from the members' seeds:
each member's masks have the distribution they have alone, not the same values,
so a member's result depends on which members it trained with (the stacks, and
so the results, are the same for the same genomes and seeds).

Which genomes stack (:func:`plan_stacks`): dense genomes of the same depth and
batch size, at most ``max_stack`` at a time, and not when padding to the widest
member would more than double the arithmetic of large networks. A dense genome
alone in its group trains as a stack of one: a stack's hand-written training
pass (:meth:`~evohpo.training.stack_model.DenseStack.train_step`) costs less
than autograd's for small networks. Genomes with a convolutional body, and on
the CPU networks whose steps are bound by arithmetic (:data:`CPU_STACK_MAX_MACS`),
train alone with :func:`~evohpo.training.loop.train_classifier`. Residual dense
layers stack (:mod:`~evohpo.training.stack_model`). Inside a
:func:`~evohpo.training.threads.thread_budget`, CPU stacks train with one thread
and networks alone by :func:`~evohpo.training.threads.threads_for`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from evohpo._interrupt import raise_if_stop_requested
from evohpo._random import derive_seed
from evohpo._validation import check_int, raise_invalid
from evohpo.exceptions import StopRequested
from evohpo.training.config import EpochRecord, StopReason, TrainConfig, TrainResult
from evohpo.training.conv import check_input_shape
from evohpo.training.cost import CPU_STACK_MAX_MACS, dense_macs, skip_kinds
from evohpo.training.epochs import (
    Batches,
    EarlyStopping,
    TrainingData,
    check_data,
    describe_value,
    evaluate,
    stop_reason_after,
)
from evohpo.training.loop import train_classifier
from evohpo.training.nn import count_parameters, resolve_device, start_model
from evohpo.training.spec import NetworkSpec, check_network, network_blocks
from evohpo.training.stack_model import DenseStack, stack_widths
from evohpo.training.stack_optimizer import RowOptimizer, StackOptimizer, stack_optimizer
from evohpo.training.task import Task, get_task
from evohpo.training.threads import threads_for, torch_threads

__all__ = [
    "CPU_STACK_MAX_MACS",
    "MemberCallback",
    "MemberOutcome",
    "NotTrained",
    "plan_stacks",
    "stackable",
    "train_population",
]

#: ``callback(member, epoch, val_score)``: what ``on_epoch_end`` is called with.
MemberCallback = Callable[[int, int, float], None]

#: What :func:`train_population` returns per member: its result, or the exception its
#: ``on_epoch_end`` callback raised (which ended that member's training only).
MemberOutcome = TrainResult | Exception

#: Above this many multiply-adds per row and member, padding costs real arithmetic.
_SMALL_NETWORK_MACS = 1 << 15
#: Largest padded/own arithmetic ratio accepted for a stack of large networks.
_MAX_PADDING_OVERHEAD = 2.0

_OWNER = "train_population"


def train_population(
    genomes: Sequence[NetworkSpec],
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    *,
    n_classes: int,
    configs: Sequence[TrainConfig],
    on_epoch_end: MemberCallback | None = None,
    input_shape: Sequence[int] | None = None,
    max_stack: int = 16,
    min_stack: int = 1,
    initial_states: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
    skip_late: bool = False,
) -> list[MemberOutcome]:
    """Train every genome on the same data, stacking those that can share a step.

    Parameters
    ----------
    genomes : sequence of Genome or NetworkSpec
        The members.
    X_train, y_train, X_val, y_val, n_classes, input_shape
        As for :func:`~evohpo.training.loop.train_classifier`, shared by all members.
    configs : sequence of TrainConfig
        One per member: its seed, ``max_epochs``, ``patience`` and ``min_delta``.
        ``device``, ``eval_batch_size`` and ``max_train_time`` must be the same
        for all (the time budget counts for the whole call).
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(member, epoch, val_score)`` (``member`` indexes
        ``genomes``) after each validated epoch of a member. An exception it
        raises (``optuna.TrialPruned`` for instance) ends that member's training
        and becomes its outcome; the other members go on.
    max_stack : int, default=16
        Most members trained in one stack.
    min_stack : int, default=1
        Fewest members of a stack: a smaller group trains one by one with
        ``train_classifier``. With 1, a lone dense genome trains as a stack of
        one, whose hand-written backward pass makes small networks' steps
        cheaper than the solo trainer's (0.70-0.78x the time on the CPU,
        docs/benchmarks.md); genomes with a convolutional body, and on the CPU
        networks large enough that arithmetic dominates, always train alone.
    initial_states : sequence of state dicts or None, optional
        One per member: the weights it starts from instead of its seed's
        (inherited weights), or ``None`` for the seed's; as
        ``train_classifier(initial_state=...)``.
    skip_late : bool, default=False
        With ``max_train_time``: members whose turn (a later stack, or a lone
        network after others) comes once the time is spent are not trained;
        their outcome is :class:`NotTrained`. The first group always trains,
        and without it every member trains at least one epoch, as a refit needs.

    Returns
    -------
    list of TrainResult or Exception
        One per genome, in order. A member's ``train_seconds`` is its share of
        the time: each epoch's wall time divided among the members that trained
        in it.

    Raises
    ------
    StopRequested
        As ``train_classifier``: after SIGINT or SIGTERM where the ``evohpo``
        command or a worker handles them. Its ``partial_outcomes`` holds the
        outcomes of the members that finished before it (``None`` for the
        others). Exceptions other than those of ``on_epoch_end`` propagate.

    Examples
    --------
    >>> import numpy as np
    >>> from evohpo.evolution.genome import Genome, LayerGene
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(np.int64)
    >>> genomes = [Genome((LayerGene(u, "relu", 0.0),), "adam", 1e-2, 0.0, 32) for u in (8, 16)]
    >>> configs = [TrainConfig(max_epochs=10, device="cpu", seed=s) for s in (0, 1)]
    >>> results = train_population(
    ...     genomes, X[:150], y[:150], X[150:], y[150:], n_classes=2, configs=configs)
    >>> [r.best_score > 0.8 for r in results]
    [True, True]
    """
    started = time.perf_counter()
    genomes = [check_network(g, f"genomes[{i}]", _OWNER) for i, g in enumerate(genomes)]
    configs = _check_configs(configs, len(genomes))
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise_invalid("on_epoch_end", _OWNER, "a callable or None", on_epoch_end)
    task = get_task(configs[0].task) if configs else get_task("classification")
    n_classes = check_int(n_classes, "n_classes", _OWNER, low=task.min_outputs)
    max_stack = check_int(max_stack, "max_stack", _OWNER, low=1)
    min_stack = check_int(min_stack, "min_stack", _OWNER, low=1, high=max_stack)
    if not genomes:
        return []
    if initial_states is None:
        initial_states = [None] * len(genomes)
    elif isinstance(initial_states, Mapping) or len(initial_states) != len(genomes):
        expected = f"a sequence of {len(genomes)} state dicts or None"
        raise_invalid("initial_states", _OWNER, expected, type(initial_states).__name__)
    arrays = check_data(X_train, y_train, X_val, y_val, n_classes, _OWNER, task)
    if input_shape is not None:  # checked here for every member: stacks never build a body
        input_shape = check_input_shape(input_shape, arrays[0].shape[1], _OWNER)
    config = configs[0]
    device = resolve_device(config.device)
    data = TrainingData(*(torch.from_numpy(array).to(device) for array in arrays))
    deadline = None if config.max_train_time is None else started + config.max_train_time

    outcomes: list[MemberOutcome | None] = [None] * len(genomes)
    n_rows = int(data.x_train.shape[0])
    max_macs = CPU_STACK_MAX_MACS if device.type == "cpu" else None
    n_features = data.x_train.shape[1]
    plan = [
        part
        for stack in plan_stacks(genomes, n_rows, n_features, n_classes, max_stack, max_macs)
        for part in ([stack] if len(stack) >= min_stack else [[index] for index in stack])
    ]
    stack_threads = threads_for(arithmetic_bound=False) if device.type == "cpu" else None
    try:
        for position, stack in enumerate(plan):
            late = deadline is not None and time.perf_counter() >= deadline
            if skip_late and position > 0 and late:
                # Members trained after others (lone networks, later stacks) whose turn
                # comes after the time budget: untrained, not scored after a token epoch.
                for index in stack:
                    outcomes[index] = NotTrained(
                        "The time budget ran out before this member's training started."
                    )
                continue
            if len(stack) == 1 and (
                min_stack > 1 or not stackable(genomes[stack[0]], n_features, n_classes, max_macs)
            ):
                index = stack[0]
                outcomes[index] = _train_alone(
                    index,
                    genomes[index],
                    arrays,
                    n_classes,
                    configs[index],
                    on_epoch_end,
                    input_shape,
                    deadline,
                    initial_states[index],
                )
                continue
            members = [_Member(i, genomes[i], configs[i], device, initial_states[i]) for i in stack]
            with torch_threads(stack_threads):  # a CPU stack holds small networks only
                _train_stack(members, data, n_classes, config, deadline, on_epoch_end)
            for member in members:
                outcomes[member.index] = member.outcome(data, n_classes, config)
    except StopRequested as stop:
        # The stacks and lone networks trained before the stop are finished: say which.
        stop.partial_outcomes = list(outcomes)  # type: ignore[attr-defined]
        raise
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]


class NotTrained(RuntimeError):
    """The outcome of a member whose training the time budget left no time to start."""


def stackable(genome: NetworkSpec, n_features: int, n_outputs: int, max_macs: int | None) -> bool:
    """Whether ``genome`` trains in a stack: dense, of at most ``max_macs`` multiply-adds
    per row (``None``: any size)."""
    if network_blocks(genome) is not None:
        return False
    return max_macs is None or dense_macs(genome, n_features, n_outputs) <= max_macs


def plan_stacks(
    genomes: Sequence[NetworkSpec],
    n_rows: int,
    n_features: int,
    n_outputs: int,
    max_stack: int,
    max_macs: int | None = None,
) -> list[list[int]]:
    """Which genomes train together: lists of indices into ``genomes``.

    Dense genomes group by depth and batch size (as many rows per step, as many
    steps per epoch); in a group, the largest first, a stack takes members until
    it holds ``max_stack``, or, for networks large enough that arithmetic
    dominates, until padding would more than double it. A genome with a
    convolutional body, or with more than ``max_macs`` multiply-adds per row,
    stands alone.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    plan: list[list[int]] = []
    for index, genome in enumerate(genomes):
        if not stackable(genome, n_features, n_outputs, max_macs):
            plan.append([index])
            continue
        key = (len(genome.layers), min(int(genome.batch_size), n_rows))
        groups.setdefault(key, []).append(index)
    for members in groups.values():
        members.sort(key=lambda i: -dense_macs(genomes[i], n_features, n_outputs))
        stack: list[int] = []
        for index in members:
            candidate = [*stack, index]
            if stack and (
                len(candidate) > max_stack
                or not _pads_well([genomes[i] for i in candidate], n_features, n_outputs)
            ):
                plan.append(stack)
                candidate = [index]
            stack = candidate
        plan.append(stack)
    return sorted(sorted(stack) for stack in plan)


def _pads_well(genomes: Sequence[NetworkSpec], n_features: int, n_outputs: int) -> bool:
    """Whether no member's padded arithmetic exceeds its own by more than the limit.

    Small networks always pad well: their step costs the fixed price of its
    operations, whatever the widths.
    """
    widths = stack_widths(genomes, n_features, n_outputs)
    padded = sum(a * b for a, b in itertools.pairwise(widths))
    # A layer where any member projects its skip computes a projection for all.
    kinds = [skip_kinds(g, n_features) for g in genomes]
    for index, (n_in, n_out) in enumerate(itertools.pairwise(widths[:-1])):
        if any(member[index] == "projection" for member in kinds):
            padded += n_in * n_out
    if padded <= _SMALL_NETWORK_MACS:
        return True
    smallest = min(dense_macs(g, n_features, n_outputs) for g in genomes)
    return padded <= _MAX_PADDING_OVERHEAD * smallest


def _check_configs(configs: Any, n_genomes: int) -> list[TrainConfig]:
    if not isinstance(configs, Sequence) or len(configs) != n_genomes:
        raise_invalid("configs", _OWNER, f"a sequence of {n_genomes} TrainConfig", configs)
    for index, config in enumerate(configs):
        if not isinstance(config, TrainConfig):
            raise_invalid(f"configs[{index}]", _OWNER, "a TrainConfig", config)
    shared = ("device", "eval_batch_size", "max_train_time", "task")
    for name in shared:
        values = {str(getattr(c, name)) for c in configs}
        if len(values) > 1:
            raise_invalid("configs", _OWNER, f"the same {name} for every member", sorted(values))
    return list(configs)


# -- a member alone ------------------------------------------------------------------------
class _CallbackRaised(Exception):
    """Carries an exception of ``on_epoch_end`` out of ``train_classifier``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _train_alone(
    index: int,
    genome: NetworkSpec,
    arrays: tuple[Any, Any, Any, Any],
    n_classes: int,
    config: TrainConfig,
    on_epoch_end: MemberCallback | None,
    input_shape: Sequence[int] | None,
    deadline: float | None,
    initial_state: Mapping[str, torch.Tensor] | None,
) -> MemberOutcome:
    callback = None
    if on_epoch_end is not None:

        def callback(epoch: int, score: float) -> None:
            try:
                on_epoch_end(index, epoch, score)
            except Exception as exc:
                raise _CallbackRaised(exc) from exc

    if deadline is not None:
        left = deadline - time.perf_counter()
        if left <= 0:
            left = 1e-9  # the budget is spent: one partial epoch, as train_classifier does
        config = dataclasses.replace(config, max_train_time=left)
    try:
        return train_classifier(
            genome,
            *arrays,
            n_classes=n_classes,
            config=config,
            on_epoch_end=callback,
            input_shape=input_shape,
            initial_state=initial_state,
        )
    except _CallbackRaised as raised:
        return raised.error


# -- members of a stack --------------------------------------------------------------------
@dataclass
class _Member:
    """One genome's training record inside a stack."""

    index: int
    genome: NetworkSpec
    config: TrainConfig
    device: torch.device
    initial_state: Mapping[str, torch.Tensor] | None = None
    stopping: EarlyStopping = field(init=False)
    shuffle: torch.Generator = field(init=False)
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    best_val_loss: float = math.inf
    best_row: torch.Tensor | None = None
    stack: DenseStack | None = None
    epochs_run: int = 0
    seconds: float = 0.0
    stop_reason: StopReason | None = None
    diverged_reason: str | None = None
    error: Exception | None = None

    def __post_init__(self) -> None:
        self.stopping = EarlyStopping(self.config.patience, self.config.min_delta)
        seed = derive_seed(self.config.seed, "shuffle")
        self.shuffle = torch.Generator(device=self.device).manual_seed(seed)

    @property
    def init_seed(self) -> int:
        return derive_seed(self.config.seed, "init")

    def offer(self, epoch: int, score: float, val_loss: float, row: torch.Tensor) -> None:
        """Keep ``row`` (this member's flat weights) if this epoch is its best so far."""
        if score > self.best_score or (score == self.best_score and val_loss < self.best_val_loss):
            self.best_epoch, self.best_score, self.best_val_loss = epoch, score, val_loss
            self.best_row = row.clone()

    def outcome(self, data: TrainingData, n_classes: int, config: TrainConfig) -> MemberOutcome:
        if self.error is not None:
            return self.error
        assert self.stack is not None
        assert self.stop_reason is not None
        if self.best_row is not None:
            model = self.stack.member_model(self.genome, self.best_row)
            score, val_loss = self.best_score, self.best_val_loss
        else:
            # Diverged before any epoch was validated: the initial weights, as alone.
            n_features = int(data.x_train.shape[1])
            model = start_model(
                self.genome,
                n_features,
                n_classes,
                seed=self.init_seed,
                initial_state=self.initial_state,
                owner=_OWNER,
            )
            model = model.to(data.x_train.device)
            task = get_task(config.task)
            val_loss, score = evaluate(model, data.x_val, data.y_val, config.eval_batch_size, task)
            score = score if math.isfinite(val_loss) else 0.0
        model.eval()
        return TrainResult(
            model=model,
            best_epoch=self.best_epoch,
            best_score=score,
            best_val_loss=val_loss,
            epochs_run=self.epochs_run,
            history=self.history,
            stop_reason=self.stop_reason,
            diverged_reason=self.diverged_reason,
            n_parameters=count_parameters(model),
            train_seconds=self.seconds,
        )


# -- a stack -------------------------------------------------------------------------------
def _train_stack(
    members: list[_Member],
    data: TrainingData,
    n_classes: int,
    config: TrainConfig,
    deadline: float | None,
    on_epoch_end: MemberCallback | None,
) -> None:
    """Train ``members`` as one stack until every one has stopped."""
    # Members of the same activations side by side: the stack applies each
    # activation to a run of consecutive members (DenseStack._activate).
    members = sorted(members, key=lambda m: [layer.activation for layer in m.genome.layers])
    device = data.x_train.device
    stack = DenseStack(
        [m.genome for m in members],
        int(data.x_train.shape[1]),
        n_classes,
        [m.init_seed for m in members],
        device,
        initial_states=[m.initial_state for m in members],
    )
    for member in members:
        member.stack = stack
    optimizer = stack_optimizer(
        stack.params,
        stack.grads,
        [m.genome.optimizer for m in members],
        [m.genome.learning_rate for m in members],
        [m.genome.weight_decay for m in members],
    )
    dropout_seed = derive_seed(*(m.config.seed for m in members), "dropout")
    dropout = torch.Generator(device=device).manual_seed(dropout_seed)
    batches = Batches(int(data.x_train.shape[0]), int(members[0].genome.batch_size), device)
    task = get_task(config.task)
    live = list(members)
    epoch = 0
    while live:
        epoch += 1
        epoch_started = time.perf_counter()
        losses, done = _train_epoch(stack, optimizer, live, data, batches, dropout, deadline, task)
        train_losses = _mean_losses(losses, batches, done)
        val_losses, val_scores = _evaluate_stack(stack, data, config.eval_batch_size, task)
        share = (time.perf_counter() - epoch_started) / len(live)
        for row, member in enumerate(live):
            member.epochs_run = epoch
            member.seconds += share
            _end_epoch(
                member,
                epoch,
                row,
                stack,
                train_losses[row],
                val_losses[row],
                val_scores[row],
                losses[:done, row],
                done,
                batches.count,
                share,
                deadline,
                on_epoch_end,
            )
        kept = [row for row, member in enumerate(live) if member.stop_reason is None]
        if len(kept) < len(live):
            live = [live[row] for row in kept]
            if live:
                index = stack.keep(kept)
                optimizer.keep(index, stack.params, stack.grads)


def _train_epoch(
    stack: DenseStack,
    optimizer: StackOptimizer | RowOptimizer,
    live: list[_Member],
    data: TrainingData,
    batches: Batches,
    dropout: torch.Generator,
    deadline: float | None,
    task: Task,
) -> tuple[torch.Tensor, int]:
    """One pass over the training rows, each member in its own order.

    Returns every batch's per-member loss ``[batches, k]`` and how many batches ran.
    """
    k = stack.size
    n_rows = batches.n_rows
    device = data.x_train.device
    order = torch.stack([torch.randperm(n_rows, generator=m.shuffle, device=device) for m in live])
    losses = torch.zeros(batches.count, k, device=device)
    n_features = data.x_train.shape[1]
    for batch in range(batches.count):
        rows = order[:, batches.slice(batch)].reshape(-1)
        x = data.x_train.index_select(0, rows).view(k, -1, n_features)
        y = data.y_train.index_select(0, rows)
        # Writes every member's gradient of its own mean loss over the last ones.
        member_losses = stack.train_step(x, y, task, dropout)
        optimizer.step()
        losses[batch] = member_losses
        raise_if_stop_requested()
        if deadline is not None and time.perf_counter() >= deadline:
            return losses, batch + 1
    return losses, batches.count


def _mean_losses(losses: torch.Tensor, batches: Batches, done: int) -> list[float]:
    """Row-weighted mean training loss of each member over the batches that ran."""
    shares = batches.rows[:done] / batches.rows[:done].sum()
    return (losses[:done] * shares[:, None]).sum(dim=0).tolist()


def _evaluate_stack(
    stack: DenseStack, data: TrainingData, batch_size: int, task: Task
) -> tuple[list[float], list[float]]:
    """Each member's mean validation loss and score (one host sync)."""
    return task.evaluate_stack(stack.forward, data.x_val, data.y_val, batch_size, stack.size)


def _end_epoch(
    member: _Member,
    epoch: int,
    row: int,
    stack: DenseStack,
    train_loss: float,
    val_loss: float,
    val_score: float,
    batch_losses: torch.Tensor,
    done: int,
    n_batches: int,
    seconds: float,
    deadline: float | None,
    on_epoch_end: MemberCallback | None,
) -> None:
    """A member's bookkeeping after an epoch: record it, keep the best weights, decide."""
    if not math.isfinite(train_loss):
        bad = torch.nonzero(~torch.isfinite(batch_losses)).flatten().tolist()
        first = bad[0] if bad else 0
        value = float(batch_losses[first]) if bad else train_loss
        member.stop_reason = "diverged"
        member.diverged_reason = (
            f"The training loss became {describe_value(value)} in epoch {epoch}, "
            f"batch {first + 1} of {n_batches}."
        )
        return
    if not math.isfinite(val_loss):
        member.stop_reason = "diverged"
        member.diverged_reason = (
            f"The validation loss became {describe_value(val_loss)} after epoch {epoch}, "
            f"batch {done} of {n_batches} (every training batch loss was finite)."
        )
        return
    member.history.append(
        EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_score=val_score,
            seconds=seconds,
        )
    )
    member.stopping.update(val_score)
    member.offer(epoch, val_score, val_loss, stack.params[row])
    if on_epoch_end is not None:
        try:
            on_epoch_end(member.index, epoch, val_score)
        except Exception as exc:
            member.error = exc
            member.stop_reason = "early_stopping"  # leaves the stack; the outcome is exc
            return
    member.stop_reason = stop_reason_after(
        epoch, done < n_batches, member.stopping, member.config, deadline
    )
