"""Storage URLs: which storage a URL or path names, its file, and how to show it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from evohpo._redact import redact_url
from evohpo.exceptions import StorageError

__all__ = [
    "JOURNAL_PREFIX",
    "JOURNAL_SUFFIXES",
    "SQLITE_PREFIX",
    "SQLITE_SUFFIXES",
    "describe_storage",
    "resolve_storage_url",
    "storage_file",
    "storage_kind",
]

#: Scheme of an Optuna journal file: ``journal:///absolute/path.log``.
JOURNAL_PREFIX = "journal://"
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


def storage_kind(url: str) -> Literal["journal", "sqlite", "server"]:
    """Which kind of storage ``url`` names: a journal file, SQLite, or a database server.

    Examples
    --------
    >>> storage_kind("journal:///data/log.jsonl"), storage_kind("sqlite:///data/evohpo.db")
    ('journal', 'sqlite')
    >>> storage_kind("postgresql://me@db.example/evohpo")
    'server'
    """
    if url.startswith(JOURNAL_PREFIX):
        return "journal"
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
