"""Hide database passwords in storage URLs, messages and log records.

A storage URL such as ``postgresql://user:secret@host/db`` is shown as
``postgresql://user:***@host/db`` wherever evohpo logs it, puts it in an error
message or prints it. Three rules apply to any text:

* the password of every ``scheme://user:password@host`` URL is replaced;
* ``password=...`` (also ``passwd=``/``pwd=``), as in URL query strings and
  libpq connection strings, is replaced;
* every password registered with :func:`register_secret` (the workers register
  the one of their storage URL) is replaced wherever it appears, so that a
  password quoted by a driver outside any URL is caught too. Secrets shorter
  than :data:`MIN_SECRET_LENGTH` characters are not registered: replacing them
  everywhere would mangle ordinary text; the two rules above still apply.

:class:`RedactingFilter` applies the rules to log records, their arguments
and their tracebacks.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Iterable
from urllib.parse import quote, unquote

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "RedactingFilter",
    "install_redaction",
    "redact_exception",
    "redact_text",
    "redact_url",
    "register_secret",
    "url_password",
]

#: What a hidden password is replaced with.
MASK = "***"
#: Shortest password :func:`register_secret` accepts.
MIN_SECRET_LENGTH = 4

# scheme://user:password@host...; the password runs to the last "@" of the
# token, so unencoded "@" in a password are hidden too.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<password>\S*)@(?P<tail>[^@\s]*)"
)
_KEY_PASSWORD = re.compile(r"(?i)(?P<key>\b(?:password|passwd|pwd)=)(?P<value>[^\s&;,'\"]+)")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def url_password(url: str) -> str | None:
    """The password of ``scheme://user:password@host`` (percent-decoded), if any.

    Examples
    --------
    >>> url_password("postgresql://evo:s%40cret@db.example/evohpo")
    's@cret'
    >>> url_password("sqlite:///study.db") is None
    True
    """
    match = _URL_PASSWORD.search(url)
    if match is None or not match.group("password"):
        return None
    return unquote(match.group("password"))


def register_secret(secret: str | None) -> None:
    """Hide ``secret`` in everything :func:`redact_text` sees from now on (this process).

    Its percent-encoded form (as written in a URL) is registered with it.
    ``None`` and secrets shorter than :data:`MIN_SECRET_LENGTH` are ignored.
    """
    if secret is None or len(secret) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        _secrets.update({secret, quote(secret, safe="")})


def redact_text(text: str) -> str:
    """``text`` with every password it shows replaced by :data:`MASK`.

    Examples
    --------
    >>> redact_text("cannot reach postgresql://evo:secret@db:5432/evohpo (timeout)")
    'cannot reach postgresql://evo:***@db:5432/evohpo (timeout)'
    >>> redact_text("host=db user=evo password=secret dbname=evohpo")
    'host=db user=evo password=*** dbname=evohpo'
    """
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@{m.group('tail')}", text)
    text = _KEY_PASSWORD.sub(lambda m: f"{m.group('key')}{MASK}", text)
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def redact_url(url: str) -> str:
    """A storage URL fit to show: its password (in the URL or its query) hidden.

    Examples
    --------
    >>> redact_url("postgresql://user:secret@host/db")
    'postgresql://user:***@host/db'
    >>> redact_url("postgresql+psycopg2://user@host/db?password=secret&sslmode=require")
    'postgresql+psycopg2://user@host/db?password=***&sslmode=require'
    >>> redact_url("sqlite:////tmp/evohpo.db")
    'sqlite:////tmp/evohpo.db'
    """
    return redact_text(url)


def redact_exception(exc: BaseException, *, with_traceback: bool = False) -> str:
    """``"Type: message"`` of ``exc`` (with its traceback if asked), passwords hidden."""
    if with_traceback:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    else:
        message = str(exc).strip()
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return redact_text(text)


class RedactingFilter(logging.Filter):
    """A logging filter that hides passwords in the message, its arguments and traceback.

    Attach it to handlers (a filter on a handler sees the records of every
    logger that propagates to it). The record is rewritten in place: its
    message is formatted with its arguments, then redacted; a traceback is
    rendered and redacted into ``record.exc_text``.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        record.msg = redact_text(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_redaction(logger_names: Iterable[str] = ("evohpo", "optuna")) -> None:
    """Add a :class:`RedactingFilter` to every handler of the named loggers and of the root.

    Handlers that already carry one are left alone, so calling this again is
    harmless.
    """
    loggers = [logging.getLogger(name) for name in logger_names] + [logging.getLogger()]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
