"""Storage URLs: which storage a URL or path names, its file, and how to show it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from evohpo._redact import redact_url
from evohpo.exceptions import StorageError

__all__ = [
    "GRPC_PREFIX",
    "JOURNAL_PREFIX",
    "JOURNAL_SUFFIXES",
    "SQLITE_PREFIX",
    "SQLITE_SUFFIXES",
    "describe_storage",
    "grpc_address",
    "resolve_storage_url",
    "storage_file",
    "storage_kind",
]

#: Scheme of an Optuna journal file: ``journal:///absolute/path.log``.
JOURNAL_PREFIX = "journal://"
#: Scheme of an Optuna gRPC storage proxy: ``grpc://host:port`` (see :mod:`evohpo.storage.grpc`).
GRPC_PREFIX = "grpc://"
#: Port of a ``grpc://`` URL that gives none: Optuna's default.
GRPC_DEFAULT_PORT = 13000
#: Scheme of a SQLite database file: ``sqlite:///path.db``.
SQLITE_PREFIX = "sqlite:///"
#: File name endings a bare path may have: journal file, SQLite database.
JOURNAL_SUFFIXES: tuple[str, ...] = (".log", ".jsonl", ".journal")
SQLITE_SUFFIXES: tuple[str, ...] = (".db", ".sqlite", ".sqlite3")


def resolve_storage_url(url: str, *, base_dir: str | os.PathLike[str] | None = None) -> str:
    """Normalise a storage URL or path; relative paths are taken from ``base_dir``.

    Accepted forms:

    * any SQLAlchemy URL Optuna's ``RDBStorage`` accepts: ``sqlite:///file.db``,
      ``postgresql://user@host/db``, ``mysql+pymysql://user@host/db``;
    * ``journal:///absolute/file.log`` or ``journal://relative/file.log``: an
      Optuna journal file (``JournalFileBackend``), safe for many processes on
      one machine or a shared file system;
    * ``grpc://host:port``: an Optuna gRPC storage proxy (``evohpo proxy``);
    * a bare path ending in ``.db``, ``.sqlite`` or ``.sqlite3`` (SQLite) or
      ``.log``, ``.jsonl``, ``.journal`` (journal file).

    Examples
    --------
    >>> resolve_storage_url("results.db", base_dir="/data")
    'sqlite:////data/results.db'
    >>> resolve_storage_url("journal://runs/log.jsonl", base_dir="/data")
    'journal:///data/runs/log.jsonl'
    >>> resolve_storage_url("postgresql://me@db.example/evohpo")
    'postgresql://me@db.example/evohpo'
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if url.startswith(JOURNAL_PREFIX):
        return JOURNAL_PREFIX + str(_absolute(url[len(JOURNAL_PREFIX) :], base))
    if url.startswith(SQLITE_PREFIX):
        rest = url[len(SQLITE_PREFIX) :]
        if rest in ("", ":memory:") or rest.startswith("file:"):
            return url
        return _sqlite_url(_absolute(rest, base))
    if "://" in url:
        return url
    lower = url.lower()
    if lower.endswith(SQLITE_SUFFIXES):
        return _sqlite_url(_absolute(url, base))
    if lower.endswith(JOURNAL_SUFFIXES):
        return JOURNAL_PREFIX + str(_absolute(url, base))
    raise StorageError(
        f"Cannot tell which storage {url!r} is: give a URL (sqlite:///file.db, "
        "postgresql://..., mysql+pymysql://..., journal:///file.log) or a path ending in "
        f"{', '.join(SQLITE_SUFFIXES + JOURNAL_SUFFIXES)}."
    )


def _absolute(path: str, base: Path) -> Path:
    if path.startswith("//"):
        # ``journal:////data/x.log``: one root. pathlib keeps a leading "//" (POSIX
        # leaves its meaning open), which then shows up in every message.
        path = "/" + path.lstrip("/")
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _sqlite_url(path: Path) -> str:
    return f"{SQLITE_PREFIX}{path}"


def describe_storage(url: str) -> str:
    """``url`` with any password hidden, for messages and logs.

    Examples
    --------
    >>> describe_storage("postgresql://me:secret@db.example/evohpo")
    'postgresql://me:***@db.example/evohpo'
    """
    return redact_url(url)


def storage_kind(url: str) -> Literal["journal", "sqlite", "server", "grpc"]:
    """Which kind of storage ``url`` names: a journal file, SQLite, a database server,
    or a gRPC storage proxy.

    Examples
    --------
    >>> storage_kind("journal:///data/log.jsonl"), storage_kind("sqlite:///data/evohpo.db")
    ('journal', 'sqlite')
    >>> storage_kind("postgresql://me@db.example/evohpo"), storage_kind("grpc://proxy:13000")
    ('server', 'grpc')
    """
    if url.startswith(JOURNAL_PREFIX):
        return "journal"
    if url.startswith(GRPC_PREFIX):
        return "grpc"
    if url.startswith("sqlite:"):
        return "sqlite"
    return "server"


def storage_file(url: str) -> Path | None:
    """The file of a SQLite or journal storage URL; ``None`` for servers and memory.

    Examples
    --------
    >>> storage_file("sqlite:////data/evohpo.db").as_posix()
    '/data/evohpo.db'
    >>> storage_file("postgresql://me@db.example/evohpo") is None
    True
    """
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX) :])
    if url.startswith(SQLITE_PREFIX):
        rest = url[len(SQLITE_PREFIX) :].split("?", 1)[0]
        if rest in ("", ":memory:") or rest.startswith("file:"):
            return None
        return Path(rest)
    return None


def grpc_address(url: str) -> tuple[str, int]:
    """Host and port of a ``grpc://host[:port]`` URL (port 13000 if none is given).

    Examples
    --------
    >>> grpc_address("grpc://proxy.example:15000")
    ('proxy.example', 15000)
    >>> grpc_address("grpc://127.0.0.1"), grpc_address("grpc://[::1]:15000/")
    (('127.0.0.1', 13000), ('::1', 15000))
    """
    if not url.startswith(GRPC_PREFIX):
        raise StorageError(f"{describe_storage(url)!r} is not a grpc://host:port URL.")
    rest = url[len(GRPC_PREFIX) :].rstrip("/")
    try:
        parsed = urlsplit("//" + rest)
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or parsed.path or parsed.query or parsed.username is not None:
        raise StorageError(
            f"Cannot read the gRPC proxy address {describe_storage(url)!r}: write it as "
            "grpc://host:port (for example grpc://127.0.0.1:13000)."
        )
    return host, GRPC_DEFAULT_PORT if port is None else port
