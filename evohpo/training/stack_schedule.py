"""Members of different batch sizes in one stack: mini-batches as ticks of the smallest.

A stack runs one forward and backward pass per *tick*: ``tick`` rows of every
member, each member's rows taken from its own order. A member whose batch size
is ``r`` ticks accumulates the gradients of ``r`` ticks and steps once, at the
tick that ends its batch; each tick's loss is weighted by the tick's share of
the member's batch rows, so the accumulated gradient is exactly that of the
mean loss over its batch, as when it trains alone. Every member sees every
training row once per epoch, so the members' epochs (and validations) still
line up.

This needs every member's batch size to be a whole number of ticks (or to hold
every row, one batch per epoch): :func:`fits_ticks` says whether a batch size
does, and :func:`~evohpo.training.population.plan_stacks` keeps the others
apart. A tick costs about as much as a step of the smallest batch, so a
member of ``r`` ticks per batch costs ``r`` times its own step count:
:data:`MAX_TICKS_PER_STEP` caps ``r``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from evohpo._validation import raise_invalid
from evohpo.training.epochs import Batches

__all__ = ["MAX_TICKS_PER_STEP", "TickSchedule", "fits_ticks"]

#: Most ticks a member's batch may span: a batch size 4 times the stack's smallest
#: still trains faster stacked than alone on the CPU (docs/benchmarks.md).
MAX_TICKS_PER_STEP = 4


def fits_ticks(batch_size: int, tick: int, n_rows: int) -> bool:
    """Whether a member of ``batch_size`` trains in a stack of ``tick`` rows per tick."""
    size = min(batch_size, n_rows)
    tick = min(tick, n_rows)
    if size < tick:
        return False
    if size == n_rows:
        return math.ceil(n_rows / tick) <= MAX_TICKS_PER_STEP
    return size % tick == 0 and size // tick <= MAX_TICKS_PER_STEP


class TickSchedule:
    """The ticks of one epoch and, per tick, which members step and their loss weights.

    Parameters
    ----------
    n_rows : int
        Training rows.
    batch_sizes : sequence of int
        Each member's batch size; the smallest sets the tick.
    device : torch.device
        Where the loss weights live.

    Attributes
    ----------
    ticks : Batches
        The ticks (mini-batches of the smallest batch size).
    uniform : bool
        Every member steps at every tick with weight 1 (one batch size).
    weights : torch.Tensor of shape (ticks, k)
        A member's loss weight at each tick: the tick's share of its batch rows.
    stepping : list of tuple of int
        Per tick, the members that step after it (every member at the last tick).

    Examples
    --------
    >>> schedule = TickSchedule(100, [32, 64], torch.device("cpu"))
    >>> schedule.ticks.count, schedule.stepping
    (4, [(0,), (0, 1), (0,), (0, 1)])
    >>> [round(w, 3) for w in schedule.weights[:, 1].tolist()]
    [0.5, 0.5, 0.889, 0.111]
    >>> schedule.member_batch(1, 3), schedule.member_batches(1)
    (2, 2)
    """

    def __init__(self, n_rows: int, batch_sizes: Sequence[int], device: torch.device) -> None:
        sizes = [min(int(b), n_rows) for b in batch_sizes]
        if not sizes:
            raise_invalid("batch_sizes", "TickSchedule", "at least one batch size", batch_sizes)
        self.ticks = Batches(n_rows, min(sizes), device)
        tick, count = self.ticks.size, self.ticks.count
        for size in sizes:
            if not fits_ticks(size, tick, n_rows):
                expected = f"batch sizes that are whole numbers of {tick}-row ticks"
                raise_invalid("batch_sizes", "TickSchedule", expected, list(batch_sizes))
        # Ticks per step of each member; one batch of every row spans every tick.
        self._ratios = [count if size == n_rows else size // tick for size in sizes]
        self.uniform = all(r == 1 for r in self._ratios)
        k = len(sizes)
        rows = self.ticks.rows.cpu()
        weights = torch.ones(count, k)
        stepping: list[list[int]] = [[] for _ in range(count)]
        for member, ratio in enumerate(self._ratios):
            for first in range(0, count, ratio):
                last = min(first + ratio, count)
                share = rows[first:last]
                weights[first:last, member] = share / share.sum()
                stepping[last - 1].append(member)
        self.weights = weights.to(device)
        self.stepping = [tuple(members) for members in stepping]

    def member_batch(self, member: int, tick: int) -> int:
        """The batch (from 1) of ``member`` that tick ``tick`` (from 0) belongs to."""
        return tick // self._ratios[member] + 1

    def member_batches(self, member: int) -> int:
        """Batches per epoch of ``member``."""
        return math.ceil(self.ticks.count / self._ratios[member])
