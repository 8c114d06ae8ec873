"""Telling storage errors apart: outages that waiting may fix, and the rest.

Optuna and SQLAlchemy wrap a driver's error in their own, so every question
about an error (is it an outage? a missing driver?) walks its chain of causes
with :func:`exception_chain`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from evohpo._redact import redact_exception, redact_text

__all__ = [
    "GRPC_OUTAGE_MARK",
    "error_summary",
    "exception_chain",
    "is_storage_outage",
    "outage_cause",
]

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
    database, unreadable SQLite file). Through a gRPC storage proxy: true for
    a proxy that does not answer (``UNAVAILABLE``, a timeout) and for one whose
    database is away (``UNKNOWN`` with :data:`GRPC_OUTAGE_MARK`, which
    ``evohpo proxy`` adds, or SQLAlchemy's class name in its details).
    """
    return _judged_link(exc)[1]


def outage_cause(exc: BaseException) -> BaseException:
    """The error in ``exc``'s chain that says the storage is away (what to show a user:
    Optuna may raise an error of its own while handling it), else ``exc``."""
    link, outage = _judged_link(exc)
    return link if outage and link is not None else exc


def _judged_link(exc: BaseException) -> tuple[BaseException | None, bool]:
    """The first error of ``exc``'s chain that tells outage or not, and which it tells."""
    from sqlalchemy import exc as sa_exc

    for current in exception_chain(exc):
        grpc_outage = _grpc_outage(current)
        if grpc_outage is not None:
            return current, grpc_outage
        transient = isinstance(
            current, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)
        ) or (isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated)
        if transient:
            message = str(current).lower()
            return current, not any(marker in message for marker in _PERMANENT_MARKERS)
    return None, False


#: What ``evohpo proxy`` puts in the message of a database outage it passes on to its clients.
GRPC_OUTAGE_MARK = "database unavailable behind the gRPC proxy"
# A plain Optuna proxy passes SQLAlchemy's error on with its class name, at best.
_GRPC_DATABASE_OUTAGES = (
    GRPC_OUTAGE_MARK,
    "OperationalError",
    "InterfaceError",
    "DisconnectionError",
)


def _grpc_outage(exc: BaseException) -> bool | None:
    """Whether a gRPC error is an outage; ``None`` if ``exc`` is no gRPC error.

    grpc is looked up in ``sys.modules``: an error of it can only exist once it
    was imported, and this keeps grpcio optional.
    """
    grpc = sys.modules.get("grpc")
    if grpc is None:
        return None
    if isinstance(exc, grpc.FutureTimeoutError):
        return True
    if not isinstance(exc, grpc.RpcError) or not callable(getattr(exc, "code", None)):
        return None
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return True
    details = str(exc.details() or "") if callable(getattr(exc, "details", None)) else ""
    if code == grpc.StatusCode.UNKNOWN and any(n in details for n in _GRPC_DATABASE_OUTAGES):
        return not any(marker in details.lower() for marker in _PERMANENT_MARKERS)
    return False


def error_summary(exc: BaseException) -> str:
    """The first line of ``"Type: message"`` of ``exc``, passwords hidden.

    A gRPC error gives its status and details instead (its own text spans lines).
    """
    grpc = sys.modules.get("grpc")
    if grpc is not None and isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        details = exc.details() if callable(getattr(exc, "details", None)) else None
        text = redact_text(f"gRPC {exc.code().name}: {details or 'no details'}").strip()
        return text.splitlines()[0]
    text = redact_exception(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
