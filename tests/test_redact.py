from __future__ import annotations

import logging

import pytest

from evohpo._redact import (
    MASK,
    RedactingFilter,
    install_redaction,
    redact_exception,
    redact_text,
    redact_url,
    register_secret,
    url_password,
)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        (
            "postgresql+psycopg2://evo:s%40cr%2Ft@db.example:5432/evohpo?sslmode=require",
            "postgresql+psycopg2://evo:***@db.example:5432/evohpo?sslmode=require",
        ),
        (
            "mysql+pymysql://root:p@ss@w0rd@127.0.0.1/optuna",
            "mysql+pymysql://root:***@127.0.0.1/optuna",
        ),
        ("postgresql://:secret@host/db", "postgresql://:***@host/db"),
        ("postgresql://user@host/db?password=secret", "postgresql://user@host/db?password=***"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:////tmp/evohpo.db", "sqlite:////tmp/evohpo.db"),
        ("journal:///tmp/journal.log", "journal:///tmp/journal.log"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_finds_urls_and_keywords_inside_messages() -> None:
    text = (
        "could not connect to postgresql://evo:secret1@db/x; "
        "dsn 'host=db user=evo password=secret2 dbname=x'"
    )
    shown = redact_text(text)
    assert "secret1" not in shown
    assert "secret2" not in shown
    assert "postgresql://evo:***@db/x" in shown
    assert "password=*** dbname=x" in shown


def test_registered_secrets_are_hidden_anywhere() -> None:
    register_secret("tr0ub4dor&3")
    assert redact_text("driver said: bad token tr0ub4dor&3") == f"driver said: bad token {MASK}"
    assert redact_text("encoded tr0ub4dor%263") == f"encoded {MASK}"
    register_secret("abc")  # too short to replace everywhere
    assert redact_text("abcdef") == "abcdef"


def test_url_password_is_decoded() -> None:
    assert url_password("postgresql://u:p%40ss@h/d") == "p@ss"
    assert url_password("postgresql://u@h/d") is None


def test_redact_exception() -> None:
    with pytest.raises(RuntimeError) as info:
        raise RuntimeError("cannot open postgresql://u:hunter22@h/d")
    exc = info.value
    assert redact_exception(exc) == "RuntimeError: cannot open postgresql://u:***@h/d"
    full = redact_exception(exc, with_traceback=True)
    assert "Traceback" in full
    assert "hunter22" not in full


def test_filter_hides_passwords_in_arguments_and_tracebacks() -> None:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    logger = logging.getLogger("evohpo.test_redact")
    handler = Collect()
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("storage %s is away", "postgresql://u:hunter33@h/d")
        try:
            raise ValueError("postgresql://u:hunter44@h/d refused")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert records[0] == "storage postgresql://u:***@h/d is away"
    assert "hunter44" not in records[1]
    assert "postgresql://u:***@h/d refused" in records[1]


def test_install_redaction_is_idempotent() -> None:
    logger = logging.getLogger("evohpo.test_install")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        install_redaction(["evohpo.test_install"])
        install_redaction(["evohpo.test_install"])
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)
