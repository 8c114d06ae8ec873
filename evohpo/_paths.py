"""Checks on output paths, made before work whose result would be written there."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["folder_problem"]


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be written in ``folder`` (made with its missing parents), or ``None``.

    Looks at the nearest part of the path that exists: it must be a directory
    this process may write in.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # exists() follows links: this one leads nowhere
            return f"{str(existing)!r} is a link to {os.readlink(existing)!r}, which does not exist"
        existing = existing.parent
    if not existing.is_dir():
        return f"{str(existing)!r} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"this process may not write in {str(existing)!r}"
    return None
