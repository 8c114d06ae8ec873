"""Opening and closing Optuna storages."""

from __future__ import annotations

import contextlib
import warnings

import optuna
from optuna.storages import BaseStorage

from evohpo._redact import redact_text
from evohpo.exceptions import StorageError
from evohpo.storage.drivers import missing_driver
from evohpo.storage.urls import describe_storage, storage_file

__all__ = ["close_storage", "open_storage"]


def open_storage(url: str, *, create: bool = True) -> BaseStorage:
    """Open (and create if needed) the storage at ``url``.

    SQLite waits up to 60 s on a locked database; PostgreSQL and MySQL get
    Optuna's heartbeat (a trial whose worker died is failed after two minutes
    and its parameters retried), which needs ``study.optimize``, as used here.

    Parameters
    ----------
    url : str
        A URL as :func:`resolve_storage_url` returns it.
    create : bool
        Create a SQLite or journal file that does not exist. With ``False``
        (commands that look at existing studies) a missing file is an error
        and nothing is created.

    Raises
    ------
    StorageError
        If the storage cannot be opened (its file or directory is missing, its
        database driver is not installed, the server refuses); the message
        says why and hides passwords.
    """
    shown = describe_storage(url)
    path = storage_file(url)
    if path is not None:
        problem = None
        if path.is_dir():
            problem = f"{str(path)!r} is a directory, not a storage file"
        elif not path.parent.is_dir():
            problem = f"the directory {str(path.parent)!r} does not exist"
        elif not create and not path.exists():
            problem = (
                f"the file {str(path)!r} does not exist (nothing was created: check the "
                "path, or run a study into it first)"
            )
        if problem is not None:
            raise StorageError(f"Cannot open the storage {shown!r}: {problem}.")
    try:
        if url.startswith("journal://"):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("sqlite:"):
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        # Heartbeats are "experimental" to Optuna, which warns on every command otherwise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=2)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=30,
                grace_period=120,
                heartbeat_stale_trial_callback=retry,
            )
    except Exception as exc:
        missing = missing_driver(url, exc)
        if missing is not None:
            raise StorageError(f"Cannot open the storage {shown!r}: {missing}") from exc
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"Cannot open the storage {shown!r}: {redact_text(reason)}") from exc


def close_storage(storage: BaseStorage) -> None:
    """Close the database connections ``storage`` holds (RDB storages; others: nothing).

    The storage stays usable (it connects again when asked). Call it when done:
    psycopg 3 warns about a connection that is garbage-collected open.
    """
    if isinstance(storage, optuna.storages.RDBStorage):
        with contextlib.suppress(Exception):
            storage.scoped_session.remove()
        with contextlib.suppress(Exception):
            storage.engine.dispose()
