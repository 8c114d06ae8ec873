"""Which database driver a storage URL needs, and how to install it.

``grpc://`` URLs (Optuna's gRPC storage proxy) need grpcio and protobuf,
evohpo's ``grpc`` extra.

SQLAlchemy imports a driver when a storage is first opened; a missing one
surfaces as a ``ModuleNotFoundError`` somewhere in the chain of Optuna's or
SQLAlchemy's own error. Every place that opens a storage (study files, the
estimator, workers) turns that into the same message.
"""

from __future__ import annotations

from evohpo.storage.errors import exception_chain

__all__ = ["GRPC_HINT", "missing_driver"]

#: What to install for Optuna's gRPC storage proxy (``grpc://`` URLs, ``evohpo proxy``).
GRPC_HINT = (
    "Install evohpo's grpc extra (pip install 'evohpo[grpc]'): grpcio and protobuf, which "
    "Optuna's gRPC storage proxy needs."
)


def missing_driver(url: str, exc: BaseException) -> str | None:
    """Why ``exc`` happened, if opening ``url`` failed for want of a driver; else ``None``."""
    missing = _missing_module(exc)
    if missing is None:
        return None
    return f"its database driver is not installed (no module {missing!r}). {_driver_hint(url)}"


def _missing_module(exc: BaseException) -> str | None:
    """The module whose import failed somewhere in ``exc``'s chain, if any."""
    for current in exception_chain(exc):
        if isinstance(current, ModuleNotFoundError) and current.name:
            return current.name
    return None


def _driver_hint(url: str) -> str:
    scheme = url.split("://", 1)[0].lower()
    dialect, _, driver = scheme.partition("+")
    if scheme == "grpc":
        return GRPC_HINT
    if dialect in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return (
            "Install evohpo's postgres extra (pip install 'evohpo[postgres]'): psycopg 3, "
            "the driver SQLAlchemy uses for postgresql:// URLs."
        )
    if dialect in ("postgresql", "postgres") and driver == "psycopg2":
        return (
            "Install psycopg2 (pip install psycopg2-binary), or install evohpo's postgres "
            "extra (pip install 'evohpo[postgres]') and write the URL as postgresql://..."
        )
    if dialect == "mysql" and driver == "pymysql":
        return "Install evohpo's mysql extra (pip install 'evohpo[mysql]'): PyMySQL."
    if dialect == "mysql":
        return (
            "Install evohpo's mysql extra (pip install 'evohpo[mysql]') and write the URL "
            "as mysql+pymysql://user@host/db (plain mysql:// needs the mysqlclient package)."
        )
    return f"Install the driver that SQLAlchemy needs for {scheme}:// URLs."
