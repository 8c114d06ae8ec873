"""Opening and closing Optuna storages: the one way every caller does it.

Study files (``evohpo run`` and the other commands), the estimator and
workers all open their storage with :func:`open_storage`, so they all get:

* SQLite waiting up to 60 s for a locked database; other databases checking
  pooled connections before use (``pool_pre_ping``), so that a restarted
  server is reconnected to;
* heartbeats on database servers (PostgreSQL, MySQL): a trial whose process
  died, on any machine, is failed after :attr:`Heartbeat.grace_period` and
  retried with the same parameters (:mod:`evohpo.storage.retry`). SQLite and
  journal files get none unless asked (workers ask, on SQLite): their
  processes share one machine, where the ownership rule below recovers
  trials at once, and Optuna warns about heartbeats outside ``optimize``;
* ``grpc://host:port``: Optuna's gRPC storage proxy (``evohpo proxy``), with
  owners and heartbeats written through it (:mod:`evohpo.storage.grpc`);
* the owner of each trial recorded when it starts, so that the trials of
  killed processes are recovered at the next start
  (:mod:`evohpo.storage.ownership`);
* the same errors: a missing file, directory or database driver, or a
  server that refuses, is a :class:`~evohpo.exceptions.StorageError` whose
  message says why; one that cannot be reached right now is a
  :class:`~evohpo.exceptions.StorageUnavailableError` (its cause is the
  driver's error, so :func:`~evohpo.storage.errors.is_storage_outage` holds);
  passwords never appear in messages (the URL's password is registered with
  :func:`evohpo._redact.register_secret`).
"""

from __future__ import annotations

import contextlib
import random
import time
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage

from evohpo._redact import redact_text, register_secret, url_password
from evohpo.exceptions import StorageError, StorageUnavailableError
from evohpo.storage.drivers import missing_driver
from evohpo.storage.errors import error_summary, is_storage_outage
from evohpo.storage.journal_file import repair_journal, repair_journal_lines
from evohpo.storage.retry import DEFAULT_HEARTBEAT, Heartbeat, retry_callback
from evohpo.storage.tracked import TrackedJournalStorage, TrackedRDBStorage, TrialStartListener
from evohpo.storage.urls import describe_storage, storage_file, storage_kind

__all__ = ["close_storage", "open_storage"]

#: Seconds SQLite waits for a lock held by another connection.
SQLITE_TIMEOUT = 60


def open_storage(
    url: str,
    *,
    create: bool = True,
    heartbeat: Heartbeat | Literal["auto"] | None = "auto",
    owner_extra: Mapping[str, Any] | None = None,
    listener: TrialStartListener | None = None,
    track: bool = True,
) -> BaseStorage:
    """Open (and create if needed) the storage at ``url``.

    Parameters
    ----------
    url : str
        A URL as :func:`~evohpo.storage.urls.resolve_storage_url` returns it:
        ``sqlite:///file.db``, ``journal:///file.log``, ``grpc://host:port``
        (Optuna's gRPC storage proxy, :mod:`evohpo.storage.grpc`) or any
        SQLAlchemy URL that Optuna's ``RDBStorage`` accepts.
    create : bool, default=True
        Create a SQLite or journal file that does not exist. With ``False``
        (commands that look at existing studies) a missing file is an error
        and nothing is created.
    heartbeat : Heartbeat, "auto" or None, default="auto"
        Heartbeats of RDB storages (SQLite included) and gRPC proxies;
        ``None`` turns them off; ``"auto"``: ``Heartbeat()`` on database
        servers and gRPC proxies, none on SQLite. Journal files have none.
    owner_extra : mapping, optional
        Keys added to the owner record of every trial this process starts
        (workers add their number).
    listener : callable, optional
        Called with the storage id of every trial that starts in this process.
    track : bool, default=True
        ``False`` opens a plain Optuna ``RDBStorage`` (no owner records,
        heartbeats as asked), for the gRPC proxy to serve; journal files and
        gRPC URLs are always tracked.

    Returns
    -------
    optuna.storages.BaseStorage
        A :class:`~evohpo.storage.tracked.TrackedJournalStorage`,
        :class:`~evohpo.storage.tracked.TrackedRDBStorage` or
        :class:`~evohpo.storage.grpc.TrackedGrpcStorage`.

    Raises
    ------
    StorageUnavailableError
        If the database cannot be reached for now (waiting may help).
    StorageError
        If the storage cannot be opened for another reason (its file or
        directory is missing, its database driver is not installed, the
        server refuses the login); the message says why and hides passwords.
    """
    register_secret(url_password(url))
    shown = describe_storage(url)
    _check_file(url, shown, create=create)
    kind = storage_kind(url)
    try:
        if kind == "journal":
            return _open_journal(url, shown, owner_extra, listener)
        if kind == "grpc":
            from evohpo.storage.grpc import open_grpc_storage

            return open_grpc_storage(
                url,
                heartbeat=DEFAULT_HEARTBEAT if heartbeat == "auto" else heartbeat,
                owner_extra=owner_extra,
                listener=listener,
            )
        return _open_rdb(url, kind, heartbeat, owner_extra, listener, track=track)
    except StorageError:
        raise  # already says which storage and why
    except Exception as exc:
        raise _open_error(url, shown, exc) from exc


def _open_journal(
    url: str,
    shown: str,
    owner_extra: Mapping[str, Any] | None,
    listener: TrialStartListener | None,
) -> TrackedJournalStorage:
    """A journal file's storage, after repairing a record a crash cut off (see
    :mod:`evohpo.storage.journal_file`): appending after one would make the file
    unreadable to every process."""
    from optuna.storages.journal import JournalFileBackend

    path = storage_file(url)
    assert path is not None
    repair_journal(path, shown=shown)

    def storage() -> TrackedJournalStorage:
        backend = JournalFileBackend(str(path))
        return TrackedJournalStorage(backend, owner_extra=owner_extra, listener=listener)

    try:
        return storage()
    except ValueError:  # Optuna's reader: a line that is not JSON (json's error is one too)
        if repair_journal_lines(path, shown=shown) is None:
            raise
        return storage()


def _open_rdb(
    url: str,
    kind: str,
    heartbeat: Heartbeat | Literal["auto"] | None,
    owner_extra: Mapping[str, Any] | None,
    listener: TrialStartListener | None,
    *,
    track: bool,
) -> optuna.storages.RDBStorage:
    engine: dict[str, Any] = {"pool_pre_ping": True}  # a restarted server is reconnected to
    if kind == "sqlite":
        engine = {"connect_args": {"timeout": SQLITE_TIMEOUT}}
    if heartbeat == "auto":
        heartbeat = DEFAULT_HEARTBEAT if kind == "server" else None
    options: dict[str, Any] = {}
    if heartbeat is not None:
        options = {
            "heartbeat_interval": heartbeat.interval,
            "grace_period": heartbeat.grace_period,
            "heartbeat_stale_trial_callback": retry_callback(heartbeat.max_retry),
        }
    for attempt in range(_SCHEMA_RACE_TRIES):
        # Heartbeats are "experimental" to Optuna, which warns on every command otherwise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            try:
                if not track:
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine, **options)
                return TrackedRDBStorage(
                    url, owner_extra=owner_extra, listener=listener, engine_kwargs=engine, **options
                )
            except Exception as exc:
                # Workers started together on a new database all create Optuna's tables;
                # those that lose the race see the winner's (a duplicate key or table).
                # The tables exist then: opening again finds them.
                if attempt == _SCHEMA_RACE_TRIES - 1 or not _lost_schema_race(exc):
                    raise
        time.sleep(0.1 * (attempt + 1) + random.uniform(0.0, 0.1))
    raise AssertionError("unreachable")  # pragma: no cover


#: Times a storage is opened when another process was creating its tables meanwhile.
_SCHEMA_RACE_TRIES = 5


def _lost_schema_race(exc: BaseException) -> bool:
    """Whether ``exc`` says another process created a table or row of the schema first."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, IntegrityError) or (
            isinstance(seen, ProgrammingError) and "already exists" in str(seen)
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _check_file(url: str, shown: str, *, create: bool) -> None:
    """Refuse a SQLite or journal file that cannot be one, before anything is created."""
    path = storage_file(url)
    if path is None:
        return
    problem = None
    if path.is_dir():
        problem = f"{str(path)!r} is a directory, not a storage file"
    elif path.parent.exists() and not path.parent.is_dir():
        problem = f"{str(path.parent)!r} is a file, not a directory"
    elif not path.parent.is_dir():
        problem = f"the directory {str(path.parent)!r} does not exist"
    elif not create and not path.exists():
        problem = (
            f"the file {str(path)!r} does not exist (nothing was created: check the "
            "path, or run a study into it first)"
        )
    if problem is not None:
        raise StorageError(f"Cannot open the storage {shown!r}: {problem}.")


def _open_error(url: str, shown: str, exc: BaseException) -> StorageError:
    missing = missing_driver(url, exc)
    if missing is not None:
        return StorageError(f"Cannot open the storage {shown!r}: {missing}")
    message = str(exc).strip()
    reason = redact_text(message.splitlines()[0]) if message else error_summary(exc)
    if is_storage_outage(exc):
        return StorageUnavailableError(f"Cannot open the storage {shown!r}: {reason}")
    if url.startswith("postgres://"):
        reason += " (SQLAlchemy names PostgreSQL 'postgresql://', not 'postgres://')"
    return StorageError(f"Cannot open the storage {shown!r}: {reason}")


def close_storage(storage: BaseStorage) -> None:
    """Close the connections ``storage`` holds (RDB storages, gRPC proxies; others: nothing).

    The storage stays usable (it connects again when asked). Call it when done:
    psycopg 3 warns about a connection that is garbage-collected open.
    """
    from evohpo.storage.grpc import TrackedGrpcStorage

    if isinstance(storage, TrackedGrpcStorage):
        with contextlib.suppress(Exception):
            storage.reconnect()
        return
    if isinstance(storage, optuna.storages.RDBStorage):
        with contextlib.suppress(Exception):
            storage.scoped_session.remove()
        with contextlib.suppress(Exception):
            storage.engine.dispose()
