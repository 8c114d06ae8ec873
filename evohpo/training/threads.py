"""How many CPU threads torch uses: set for a scope, and chosen per network.

:func:`torch_threads` sets torch's intra-op threads for a ``with`` block.
:func:`thread_budget` lets the trainers choose per network inside a block:
one thread for small dense networks (bound by per-operation cost, where a
second thread gains nothing), up to the budget for networks bound
by arithmetic (:func:`evohpo.training.cost.arithmetic_bound`). The estimator
and the ``evohpo`` command train with one thread and a budget of the cores
each process may use; code that sets no budget keeps torch's setting as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from evohpo._validation import check_int

__all__ = [
    "cpu_thread_budget",
    "current_thread_budget",
    "thread_budget",
    "threads_for",
    "torch_threads",
]

_BUDGET: ContextVar[int | None] = ContextVar("evohpo_thread_budget", default=None)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch CPU threads inside the ``with`` block; ``None`` leaves the count alone.

    Parameters
    ----------
    n : int or None
        Number of intra-op threads. The previous count is restored on exit,
        also when the block raises.

    Examples
    --------
    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    if n is None or n == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def thread_budget(n: int | None) -> Iterator[None]:
    """Let the CPU trainers train arithmetic-bound networks with up to ``n`` threads.

    Parameters
    ----------
    n : int or None
        The most threads one training uses; ``None`` sets no budget (torch's
        thread count is then left as it is).

    Examples
    --------
    >>> with thread_budget(4):
    ...     threads_for(arithmetic_bound=True), threads_for(arithmetic_bound=False)
    (4, 1)
    >>> threads_for(arithmetic_bound=True) is None
    True
    """
    if n is not None:
        n = check_int(n, "n", "thread_budget", low=1)
    token = _BUDGET.set(n)
    try:
        yield
    finally:
        _BUDGET.reset(token)


def current_thread_budget() -> int | None:
    """The budget of the innermost :func:`thread_budget` block, ``None`` outside any."""
    return _BUDGET.get()


def threads_for(*, arithmetic_bound: bool) -> int | None:
    """Threads for training one network on the CPU under the current budget.

    ``None`` without a budget (leave torch's count alone); else one thread for
    a network bound by per-operation cost, the budget for one bound by arithmetic.
    """
    budget = _BUDGET.get()
    if budget is None:
        return None
    return budget if arithmetic_bound else 1


def cpu_thread_budget(processes: int = 1) -> int:
    """The threads each of ``processes`` processes may train with: torch's thread count (by
    default the machine's cores, or ``OMP_NUM_THREADS``) shared among them, at least one.

    Examples
    --------
    >>> import torch
    >>> cpu_thread_budget() == torch.get_num_threads()
    True
    >>> cpu_thread_budget(10_000)
    1
    """
    processes = check_int(processes, "processes", "cpu_thread_budget", low=1)
    return max(1, torch.get_num_threads() // processes)
