"""Storage URLs: which storage a URL or path names, its file, and how to show it."""

from __future__ import annotations

import os
from pathlib import Path

from evohpo.exceptions import StorageError

__all__ = ["describe_storage", "resolve_storage_url", "storage_file"]

_JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


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
    if url.startswith("journal://"):
        return "journal://" + str(_absolute(url[len("journal://") :], base))
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///") :]
        if rest in ("", ":memory:") or rest.startswith("file:"):
            return url
        return _sqlite_url(_absolute(rest, base))
    if "://" in url:
        return url
    lower = url.lower()
    if lower.endswith(_SQLITE_SUFFIXES):
        return _sqlite_url(_absolute(url, base))
    if lower.endswith(_JOURNAL_SUFFIXES):
        return "journal://" + str(_absolute(url, base))
    raise StorageError(
        f"Cannot tell which storage {url!r} is: give a URL (sqlite:///file.db, "
        "postgresql://..., mysql+pymysql://..., journal:///file.log) or a path ending in "
        f"{', '.join(_SQLITE_SUFFIXES + _JOURNAL_SUFFIXES)}."
    )


def _absolute(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def describe_storage(url: str) -> str:
    """``url`` with any password hidden, for messages and logs."""
    if url.startswith(("journal://", "sqlite:")) or "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # any parse failure: show the scheme only
        return url.split("://", 1)[0] + "://***"


def storage_file(url: str) -> Path | None:
    """The file of a SQLite or journal storage URL; ``None`` for servers and memory.

    Examples
    --------
    >>> storage_file("sqlite:////data/evohpo.db").as_posix()
    '/data/evohpo.db'
    >>> storage_file("postgresql://me@db.example/evohpo") is None
    True
    """
    if url.startswith("journal://"):
        return Path(url[len("journal://") :])
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///") :].split("?", 1)[0]
        if rest in ("", ":memory:") or rest.startswith("file:"):
            return None
        return Path(rest)
    return None
