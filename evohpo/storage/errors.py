"""Telling storage errors apart: outages that waiting may fix, and the rest.

Optuna and SQLAlchemy wrap a driver's error in their own, so every question
about an error (is it an outage? a missing driver?) walks its chain of causes
with :func:`exception_chain`.
"""

from __future__ import annotations

from collections.abc import Iterator

from evohpo._redact import redact_exception

__all__ = ["error_summary", "exception_chain", "is_storage_outage"]

# Connection errors that waiting cannot fix (PostgreSQL, MySQL and SQLite wording).
_PERMANENT_MARKERS = (
    "authentication failed",
    "no password supplied",
    "does not exist",
    "permission denied",
    "pg_hba.conf",
    "access denied",
    "unknown database",
    "unable to open database file",
)


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its cause (or context), then that one's, ...; each once.

    Examples
    --------
    >>> try:
    ...     try:
    ...         raise KeyError("inner")
    ...     except KeyError as inner:
    ...         raise RuntimeError("outer") from inner
    ... except RuntimeError as outer:
    ...     [type(e).__name__ for e in exception_chain(outer)]
    ['RuntimeError', 'KeyError']
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_storage_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the storage is unreachable for now (waiting may help).

    True for SQLAlchemy's ``OperationalError``, ``InterfaceError`` and
    ``DisconnectionError``, for an invalidated connection, and for any error
    caused by one of them (Optuna's ``StorageInternalError``, evohpo's
    :class:`~evohpo.exceptions.StorageUnavailableError`); false when the
    message says the error is permanent (authentication failed, unknown
    database, unreadable SQLite file).
    """
    from sqlalchemy import exc as sa_exc

    for current in exception_chain(exc):
        transient = isinstance(
            current, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)
        ) or (isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated)
        if transient:
            message = str(current).lower()
            return not any(marker in message for marker in _PERMANENT_MARKERS)
    return False


def error_summary(exc: BaseException) -> str:
    """The first line of ``"Type: message"`` of ``exc``, passwords hidden."""
    text = redact_exception(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
