"""Stopping on SIGINT and SIGTERM at a point where stopping is safe.

A handler that raises :class:`KeyboardInterrupt` wherever the main thread
happens to be can cut a storage write in half: SQLAlchemy then keeps a
connection that holds SQLite's write lock, Optuna's write of the failed trial
waits for that lock, gives up, and the trial stays ``RUNNING``. So the first
signal only records a request. Code that runs long polls it where stopping
is safe: the trainer between optimizer steps (:func:`raise_if_stop_requested`),
the study loop between trials (:meth:`GracefulStop.stop_study`). Only blocks
that merely wait (for worker processes, for a web server) are marked
:meth:`GracefulStop.interruptible` and stop at once; so does a second signal.

Signal handlers belong to the process, so the installed :class:`GracefulStop`
is the process's: :func:`stop_requested` reads it, and it reads ``False``
when none is installed (a user's own script, a test).

A signal the process was started ignoring stays ignored, as Python itself
leaves it: a shell without job control starts background commands (``evohpo
run a.toml &`` in a script) with SIGINT ignored, so that a Ctrl-C meant for
the script's foreground command does not stop them.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

from evohpo.exceptions import StopRequested

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["GracefulStop", "raise_if_stop_requested", "stop_requested"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_installed: GracefulStop | None = None


def stop_requested() -> bool:
    """Whether the installed :class:`GracefulStop` has received a signal."""
    guard = _installed
    return guard is not None and guard.requested


def raise_if_stop_requested() -> None:
    """Raise :class:`~evohpo.exceptions.StopRequested` if a stop was requested."""
    if stop_requested():
        raise StopRequested("stopped by a signal")


class GracefulStop:
    """Turn SIGINT and SIGTERM into a clean stop.

    The first signal sets :attr:`requested`; the trial that is training stops
    at its next optimizer step (Optuna records it as failed), a trial that
    is not training finishes, and the study stops at the trial boundary. In
    :meth:`interruptible` blocks, and on a second signal (with
    ``force_on_repeat``), it raises :class:`KeyboardInterrupt` at once.

    Parameters
    ----------
    force_on_repeat : bool, default=True
        Whether a second signal raises at once. Worker processes turn it off:
        their parent stops them with SIGTERM, and kills them itself after a
        grace period.

    Attributes
    ----------
    requested : bool
        A signal has arrived.
    signum : int or None
        The last signal received.
    """

    def __init__(self, *, force_on_repeat: bool = True) -> None:
        self.force_on_repeat = force_on_repeat
        self.requested = False
        self.signum: int | None = None
        self._depth = 0

    @contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        """Install the handlers (main thread only; elsewhere a no-op).

        A signal that is ignored when the block starts (``SIG_IGN``, inherited
        from the parent) keeps being ignored.
        """
        global _installed
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {
            sig: handler
            for sig in _SIGNALS
            if (handler := signal.getsignal(sig)) is not signal.SIG_IGN
        }
        outer = _installed
        _installed = self
        for sig in previous:
            signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            _installed = outer

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        again = self.requested and self.force_on_repeat
        self.requested = True
        self.signum = signum
        if self._depth > 0 or again:
            raise KeyboardInterrupt

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A block that only waits, which a signal stops at once.

        Use it only where an exception at any point is harmless: around a
        wait for other processes, never around storage writes. It refuses to
        start after a stop request.
        """
        self.check()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def check(self) -> None:
        """Raise :class:`KeyboardInterrupt` if a stop was requested."""
        if self.requested:
            raise KeyboardInterrupt

    def stop_study(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """An Optuna callback: stop ``study`` after this trial if a stop was requested."""
        if self.requested:
            study.stop()
