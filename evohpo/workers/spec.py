"""What a worker is told (:class:`WorkerSpec`, :class:`Backoff`) and what it reports.

:class:`~evohpo.storage.Heartbeat`, the heartbeat settings of RDB storages,
belongs to the storage layer; it is re-exported here because a spec holds one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from evohpo._redact import redact_url
from evohpo._validation import check_float, check_int, raise_invalid
from evohpo.storage import COUNTED_STATES, Heartbeat

__all__ = ["Backoff", "Heartbeat", "Objective", "WorkerReport", "WorkerSpec"]

_OWNER = "WorkerSpec"

#: What an objective factory returns: Optuna's objective.
Objective = Callable[[optuna.Trial], Any]


@dataclass(frozen=True)
class Backoff:
    """How a worker waits for a storage that went away.

    Parameters
    ----------
    initial : float, default=1.0
        First wait in seconds; each further wait doubles, up to ``maximum``.
    maximum : float, default=30.0
        Longest single wait.
    max_wait : float, default=600.0
        Total seconds a worker waits for the storage to come back before it
        gives up; the count restarts once the storage answers again.
    """

    initial: float = 1.0
    maximum: float = 30.0
    max_wait: float = 600.0

    def __post_init__(self) -> None:
        check_float(self.initial, "initial", "Backoff", low=0.0, low_open=True)
        check_float(self.maximum, "maximum", "Backoff", low=self.initial)
        check_float(self.max_wait, "max_wait", "Backoff", low=0.0)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs to join a study; picklable.

    Parameters
    ----------
    study_name : str
        The study, which must exist in the storage.
    storage_url : str
        A SQLAlchemy URL (``postgresql://user:password@host/db``,
        ``sqlite:///file.db``...), ``journal:///path/file.log`` or
        ``grpc://host:port`` (a gRPC storage proxy, ``evohpo proxy``). Hidden from
        ``repr``; shown only through :func:`evohpo._redact.redact_url`.
    objective_factory : callable
        ``objective_factory()`` returns the objective, called once in each
        worker. It must be picklable (a module-level function, class or
        :func:`functools.partial` of one) so that new processes can rebuild it.
    sampler_factory : callable
        ``sampler_factory()`` returns the study's sampler (an
        :class:`~evohpo.EvoSampler` for the GA); picklable like
        ``objective_factory``. An ``EvoSampler`` derives its random streams
        from the trial number, so workers may share its seed; any other
        sampler is reseeded in each worker (``reseed_rng``), as Optuna does
        for its threads, lest all workers suggest the same parameters.
    n_trials : int or None
        Total counted trials of the study (see :mod:`evohpo.workers`); ``None``
        runs until ``timeout`` or until stopped.
    timeout : float or None
        Seconds each worker runs at most (a running trial is not cut).
    deadline : float or None
        A wall-clock time (``time.time()``) after which no worker starts a
        trial, whenever it started: what a caller with its own time budget
        gives, since a worker's ``timeout`` counts from its own start, after
        its process has started and imported what it needs. With ``timeout``
        too, whichever ends first. Workers on other machines read it on their
        own clocks.
    heartbeat : Heartbeat or None
        Heartbeats on RDB storage and through a gRPC proxy
        (:mod:`evohpo.storage.grpc`); ``None`` turns them off.
    backoff : Backoff
        Waiting for a storage that went away.
    stale_after : float or None
        Also fail and retry running trials started more than this many
        seconds ago when a worker starts, whatever their host (see
        :mod:`evohpo.storage.ownership`).
    counted_states : tuple of TrialState
        States that count towards ``n_trials``.
    pruner_factory : callable, optional
        ``pruner_factory()`` returns the study's pruner; Optuna's default
        (``MedianPruner``) if omitted.
    batch_trials : int, default=1
        Trials the worker asks and trains together
        (:func:`evohpo.search.batched.optimize`); the objective needs a
        ``train_trials`` method when it is above 1.
    """

    study_name: str
    storage_url: str = field(repr=False)
    objective_factory: Callable[[], Objective]
    sampler_factory: Callable[[], BaseSampler]
    n_trials: int | None = None
    timeout: float | None = None
    deadline: float | None = None
    heartbeat: Heartbeat | None = field(default_factory=Heartbeat)
    backoff: Backoff = field(default_factory=Backoff)
    stale_after: float | None = None
    counted_states: tuple[TrialState, ...] = COUNTED_STATES
    pruner_factory: Callable[[], BasePruner] | None = None
    batch_trials: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.study_name, str) or not self.study_name:
            raise_invalid("study_name", _OWNER, "a non-empty str", self.study_name)
        if not isinstance(self.storage_url, str) or not self.storage_url:
            raise_invalid("storage_url", _OWNER, "a storage URL", redact_url(str(self.storage_url)))
        for name in ("objective_factory", "sampler_factory", "pruner_factory"):
            value = getattr(self, name)
            if not callable(value) and not (name == "pruner_factory" and value is None):
                raise_invalid(name, _OWNER, "a picklable callable", getattr(self, name))
        if self.n_trials is not None:
            check_int(self.n_trials, "n_trials", _OWNER, low=1)
        if self.timeout is not None:
            check_float(self.timeout, "timeout", _OWNER, low=0.0, low_open=True)
        if self.deadline is not None:
            check_float(self.deadline, "deadline", _OWNER, low=0.0, low_open=True)
        if self.stale_after is not None:
            check_float(self.stale_after, "stale_after", _OWNER, low=0.0, low_open=True)
        if self.heartbeat is not None and not isinstance(self.heartbeat, Heartbeat):
            raise_invalid("heartbeat", _OWNER, "a Heartbeat or None", self.heartbeat)
        if not isinstance(self.backoff, Backoff):
            raise_invalid("backoff", _OWNER, "a Backoff", self.backoff)
        check_int(self.batch_trials, "batch_trials", _OWNER, low=1)

    @property
    def shown_storage(self) -> str:
        """The storage URL with its password hidden."""
        return redact_url(self.storage_url)

    @property
    def max_retry(self) -> int | None:
        """Retries of one original trial: the heartbeat's, or the default where none."""
        if self.heartbeat is not None:
            return self.heartbeat.max_retry
        return Heartbeat().max_retry


@dataclass(frozen=True)
class WorkerReport:
    """What one worker did.

    Attributes
    ----------
    index : int
        The worker's number in its pool (0 for a lone worker).
    pid : int
        Its process id.
    completed : tuple of int
        Numbers of the trials it completed.
    failed : int
        Its trials that failed.
    pruned : int
        Its trials that were pruned.
    outages : int
        Times it waited for the storage.
    seconds : float
        Wall-clock time it ran.
    exitcode : int or None
        Exit status of its process (negative: killed by that signal); ``None``
        while unknown.
    error : str or None
        Why it stopped early (passwords hidden), else ``None``.
    """

    index: int
    pid: int
    completed: tuple[int, ...] = ()
    failed: int = 0
    pruned: int = 0
    outages: int = 0
    seconds: float = 0.0
    exitcode: int | None = 0
    error: str | None = None
