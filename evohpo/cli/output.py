"""What the command prints: results on stdout, messages and the progress bar on stderr."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

import optuna

from evohpo._progress import SearchProgress, progress_disabled
from evohpo.storage import COUNTED_STATES

__all__ = [
    "command_logging",
    "err",
    "out",
    "progress_enabled",
    "torch_threads",
    "trial_progress",
]


def out(text: str = "") -> None:
    """Print a line of the command's result on stdout."""
    print(text, file=sys.stdout, flush=True)


def err(text: str) -> None:
    """Print a message on stderr."""
    print(text, file=sys.stderr, flush=True)


def progress_enabled() -> bool:
    """Whether to draw the progress bar: on a terminal, unless ``EVOHPO_NO_PROGRESS`` is set."""
    if progress_disabled():
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


@contextlib.contextmanager
def trial_progress() -> Iterator[SearchProgress]:
    """A bar over the finished (complete or pruned) trials; silent unless :func:`progress_enabled`.

    Its ``plan(total)`` sets the number of trials to come, ``describe(name)``
    names the study running; pass the object itself as an Optuna callback.
    """
    with SearchProgress(bar=progress_enabled(), counted=COUNTED_STATES) as progress:
        yield progress


@contextlib.contextmanager
def torch_threads(args: argparse.Namespace) -> Iterator[None]:
    """Use ``--threads`` torch CPU threads for the command, also as the trainers' thread
    budget; a command without ``--threads`` loads no torch.

    ``"auto"`` becomes torch's thread count (the machine's cores, or
    ``OMP_NUM_THREADS``) shared among ``--workers``, and ``args.threads`` that number.
    """
    n = getattr(args, "threads", None)
    if n is None:
        yield
        return
    from evohpo.training.threads import cpu_thread_budget, thread_budget
    from evohpo.training.threads import torch_threads as threads

    if n == "auto":
        n = args.threads = cpu_thread_budget(getattr(args, "workers", 1))
    with threads(n), thread_budget(n):
        yield


@contextlib.contextmanager
def command_logging(verbose: bool, debug: bool) -> Iterator[None]:
    """Route evohpo's log to stderr and quiet Optuna for the duration of a command."""
    logger = logging.getLogger("evohpo")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("evohpo: %(message)s"))
    old_level, old_propagate = logger.level, logger.propagate
    old_optuna = optuna.logging.get_verbosity()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    # Optuna logs every trial, and a failed trial's traceback, at INFO/WARNING.
    optuna.logging.set_verbosity(
        optuna.logging.DEBUG if debug else optuna.logging.INFO if verbose else optuna.logging.ERROR
    )
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
        optuna.logging.set_verbosity(old_optuna)
