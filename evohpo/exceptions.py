"""The exceptions evohpo raises.

Every error evohpo raises on bad input derives from :class:`EvohpoError`. The
concrete classes also derive from the built-in type that scikit-learn and
Optuna users already catch (``ValueError``, ``TypeError``), so ``except
ValueError`` keeps working. :class:`StopRequested` is the one exception that
is not an error: it derives from ``KeyboardInterrupt``, as Ctrl-C does.
"""

from __future__ import annotations

__all__ = [
    "EvohpoError",
    "GenomeFormatError",
    "GenomeSchemaError",
    "InvalidParameterError",
    "SearchSpaceError",
    "StorageError",
    "StorageUnavailableError",
    "StopRequested",
    "StudyConfigError",
    "StudyMismatchError",
    "TrainingDivergedError",
    "TrialFailedError",
    "WorkerError",
]


class EvohpoError(Exception):
    """Base class of every exception raised by evohpo."""


class InvalidParameterError(EvohpoError, ValueError):
    """A setting or argument has a value outside what it accepts."""


class SearchSpaceError(InvalidParameterError):
    """A :class:`~evohpo.SearchSpace` is malformed, or a genome lies outside it."""


class GenomeFormatError(EvohpoError, ValueError):
    """A serialised genome (JSON or parameter dict) cannot be read."""


class GenomeSchemaError(GenomeFormatError):
    """A serialised genome was written by a newer, unknown schema version."""


class StudyConfigError(EvohpoError, ValueError):
    """A study file (TOML) is missing, malformed or names unknown settings."""


class StudyMismatchError(EvohpoError, ValueError):
    """A stored study exists with a different search space, direction or sampler."""


class StorageError(EvohpoError, RuntimeError):
    """A storage URL cannot be opened."""


class StorageUnavailableError(StorageError):
    """The storage stayed unreachable for longer than a worker may wait."""


class TrialFailedError(EvohpoError, RuntimeError):
    """A trial's objective raised; the trial is recorded as failed and the study goes on."""


class WorkerError(EvohpoError, RuntimeError):
    """One or more worker processes stopped with an error."""


class TrainingDivergedError(EvohpoError, ArithmeticError):
    """The training loss became NaN or infinite."""


class StopRequested(KeyboardInterrupt):
    """Training stopped at a safe point because SIGINT or SIGTERM asked for a stop.

    A ``KeyboardInterrupt``, so that ``except Exception`` does not swallow it
    and Optuna records the running trial as failed and stops the study.
    """
