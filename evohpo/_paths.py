"""Paths under an artifact directory that cannot escape it.

Names that end up in file paths (study names, trial numbers, user-given
output names) go through :func:`safe_join`, which refuses absolute parts,
``..`` that climb out of the base directory and symbolic links that point
outside it.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from evohpo.exceptions import UnsafePathError

__all__ = ["UnsafePathError", "safe_join"]


def safe_join(base: str | os.PathLike[str], *parts: str | os.PathLike[str]) -> Path:
    """Join ``parts`` under ``base`` and check the result stays inside ``base``.

    Parameters
    ----------
    base : path
        The directory everything must stay in. It need not exist yet.
    *parts : path
        Relative path components (``"a/b"`` and ``"a", "b"`` are the same).

    Returns
    -------
    Path
        The joined path with ``..`` and existing symbolic links resolved; it
        is ``base`` itself or lies below it.

    Raises
    ------
    UnsafePathError
        If a part is absolute (or has a drive), contains a NUL character, or
        the resolved path lies outside the resolved ``base`` (through ``..`` or
        a symbolic link).

    Notes
    -----
    Symbolic links are resolved at the time of the call. A link created
    afterwards, between the check and the write, is not seen: directories
    that untrusted processes can write to need more (``O_NOFOLLOW``, a
    private directory).

    Examples
    --------
    >>> safe_join("/srv/artifacts", "study", "trial-3", "model.pt").as_posix()
    '/srv/artifacts/study/trial-3/model.pt'
    >>> safe_join("/srv/artifacts", "../etc/passwd")
    Traceback (most recent call last):
    ...
    evohpo._paths.UnsafePathError: The path '../etc/passwd' leaves the directory ...
    """
    root = Path(base).resolve()
    shown = os.path.join(*[os.fspath(p) for p in parts]) if parts else ""
    for part in parts:
        text = os.fspath(part)
        if "\x00" in text:
            raise UnsafePathError(f"The path {shown!r} contains a NUL character.")
        pure = PurePath(text)
        if pure.is_absolute() or pure.drive or pure.root:
            raise UnsafePathError(
                f"The path {shown!r} must be relative to {str(root)!r}; {text!r} is absolute."
            )
    candidate = root.joinpath(*[os.fspath(p) for p in parts]).resolve()
    if candidate != root and not candidate.is_relative_to(root):
        raise UnsafePathError(
            f"The path {shown!r} leaves the directory {str(root)!r} "
            f"(it resolves to {str(candidate)!r})."
        )
    return candidate
