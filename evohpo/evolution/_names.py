"""Per-gene Optuna parameter names: ``layer2.units``, ``block0.kernel``."""

from __future__ import annotations

from collections.abc import Container

__all__ = ["indexed_param", "parse_indexed_param"]


def indexed_param(prefix: str, index: int, field_name: str) -> str:
    """``prefix`` + ``index`` + ``.`` + ``field_name``: ``layer2.units``."""
    return f"{prefix}{index}.{field_name}"


def parse_indexed_param(name: str, prefix: str, fields: Container[str]) -> tuple[int, str] | None:
    """Inverse of :func:`indexed_param`; ``None`` for a name of another form."""
    head, dot, tail = name.partition(".")
    if not dot or not head.startswith(prefix) or tail not in fields:
        return None
    digits = head[len(prefix) :]
    if not digits.isdigit():
        return None
    return int(digits), tail
