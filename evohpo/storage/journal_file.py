"""Records of an Optuna journal file cut off by a crash, and their repair.

Optuna's ``JournalFileBackend`` appends each batch of records with one write
and an ``fsync``, under a lock file. A process killed during that write (or a
machine that loses power) can leave the file's last record without its end
and without the newline that ends every record. Optuna's reader skips such a
tail, but the next append goes right after it: the cut-off record and the
first new one share a line, which is not JSON, and from then on every reader
of the file fails ("Expecting ',' delimiter").

:func:`repair_journal` undoes both states before a journal is opened:

* a tail after the last newline (a record that was never complete, so never
  part of the study) is cut off;
* a line that starts with such a cut-off record and continues with a whole one
  keeps the whole one.

The bytes removed are never thrown away: they are appended to a file next to
the journal (``<journal>.torn``), and the ``evohpo`` logger names it. The
repair runs under the journal's own lock, so no process appends meanwhile.
Any other line that is not a record is left alone and reported with its line
number (:class:`~evohpo.exceptions.StorageError`): that is damage evohpo
cannot undo without guessing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from evohpo.exceptions import StorageError

__all__ = ["JournalRepair", "repair_journal", "repair_journal_lines", "torn_file"]

_logger = logging.getLogger("evohpo")

#: Bytes read from a journal's end to find its last line (more when the line is longer).
_TAIL_CHUNK = 1 << 16
#: How every record Optuna's journal writes begins.
_RECORD_START = b'{"op_code":'


@dataclass(frozen=True)
class JournalRepair:
    """What :func:`repair_journal` changed: line numbers (1-based) and where the bytes went."""

    torn_tail: bool
    merged_lines: tuple[int, ...]
    saved_to: Path


def torn_file(journal: Path) -> Path:
    """The file that receives the bytes removed from ``journal``."""
    return journal.with_name(journal.name + ".torn")


def repair_journal(journal: Path, *, shown: str | None = None) -> JournalRepair | None:
    """Repair the journal if its end shows a crash; ``None`` when it needs nothing.

    Reads only the last line without the lock (the common case: nothing to
    do), so opening a long journal costs no extra read. When that line lacks
    its newline or is not a record, every line is checked under the lock, as
    by :func:`repair_journal_lines`. A file this process may not write is left
    as it is (Optuna's reader skips a cut-off tail on its own).

    Raises
    ------
    StorageError
        If a line is damaged in a way this cannot undo (nothing is changed
        then), or the file cannot be written.
    """
    if not _end_is_damaged(journal):
        return None
    return repair_journal_lines(journal, shown=shown)


def repair_journal_lines(journal: Path, *, shown: str | None = None) -> JournalRepair | None:
    """Repair every cut-off record in ``journal``; ``None`` when there is none.

    :func:`~evohpo.storage.opener.open_storage` calls it when Optuna's reader
    fails on a file whose end looked whole.

    Raises
    ------
    StorageError
        As :func:`repair_journal`.
    """
    shown = shown or str(journal)
    if not os.access(journal, os.W_OK):
        # Say which line is damaged; a cut-off tail alone Optuna's reader skips.
        _check_lines(journal, shown, journal.read_bytes().splitlines(keepends=True))
        return None
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(journal))
    lock.acquire()
    try:
        return _repair_locked(journal, shown)
    except OSError as exc:
        raise StorageError(
            f"Cannot repair the journal {shown!r} (a record was cut off by a crash): {exc}"
        ) from exc
    finally:
        lock.release()


def _end_is_damaged(journal: Path) -> bool:
    """Whether the file's end lacks its newline, or its last line is not a record.

    The second happens after a cut-off record got the next append on its line:
    Optuna's reader skips a bad last line silently (and the record appended to
    it with it), and fails only once another line follows.
    """
    try:
        with journal.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            if size == 0:
                return False
            chunk = _TAIL_CHUNK
            while True:
                start = max(0, size - chunk)
                file.seek(start)
                tail = file.read()
                if not tail.endswith(b"\n"):
                    return True
                previous = tail.rfind(b"\n", 0, len(tail) - 1)
                if previous != -1 or start == 0:
                    return not _is_record(tail[previous + 1 :])
                chunk *= 4  # a last line longer than the chunk
    except OSError:
        return False  # opening the storage reports a file it cannot read


def _repair_locked(journal: Path, shown: str) -> JournalRepair | None:
    data = journal.read_bytes()
    end = data.rfind(b"\n") + 1
    tail = data[end:]
    lines = data[:end].splitlines(keepends=True)
    starts = _check_lines(journal, shown, lines)
    removed: list[bytes] = []
    merged: list[int] = []
    kept: list[bytes] = []
    for number, line in enumerate(lines, start=1):
        start = starts.get(number)
        if start is None:
            kept.append(line)
            continue
        removed.append(line[:start] + b"\n")
        kept.append(line[start:])
        merged.append(number)
    if not tail and not merged:
        return None
    if tail:
        removed.append(tail + b"\n")
    saved_to = torn_file(journal)
    with saved_to.open("ab") as file:
        file.write(b"".join(removed))
        file.flush()
        os.fsync(file.fileno())
    if merged:
        _replace(journal, b"".join(kept))
    else:
        os.truncate(journal, end)
    repair = JournalRepair(torn_tail=bool(tail), merged_lines=tuple(merged), saved_to=saved_to)
    _logger.warning(_describe(repair, journal))
    return repair


def _check_lines(journal: Path, shown: str, lines: list[bytes]) -> dict[int, int]:
    """Line number -> where its whole record starts, for each line a cut-off record begins.

    Raises :class:`StorageError` at the first line damaged in another way, or,
    when the file cannot be written, at the first line that needs a repair.
    """
    starts: dict[int, int] = {}
    writable = os.access(journal, os.W_OK)
    for number, line in enumerate(lines, start=1):
        if not line.endswith(b"\n") or _is_record(line):
            continue  # the last line without a newline: the torn tail, cut off apart
        start = _whole_record_start(line)
        where = f"line {number} of {str(journal)!r}"
        if start is None:
            raise StorageError(
                f"Cannot open the storage {shown!r}: {where} is not an Optuna journal record "
                f"({_excerpt(line)}), nor a record cut off by a crash followed by a whole "
                "one, which evohpo repairs. Nothing was changed; restore the file from a "
                "copy, or remove that line by hand."
            )
        if not writable:
            raise StorageError(
                f"Cannot open the storage {shown!r}: {where} begins with a record cut off by "
                "a crash; evohpo repairs that, but this process may not write the file. Open "
                "it once where it can be written."
            )
        starts[number] = start
    return starts


def _is_record(line: bytes) -> bool:
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and "op_code" in value


def _whole_record_start(line: bytes) -> int | None:
    """Where a whole record begins in ``line`` after a cut-off one, if it does."""
    start = line.find(_RECORD_START, 1)
    while start != -1:
        if _is_record(line[start:]):
            return start
        start = line.find(_RECORD_START, start + 1)
    return None


def _replace(journal: Path, body: bytes) -> None:
    """Write ``body`` as the journal's content in one step (readers reopen it by name)."""
    temporary = journal.with_name(journal.name + ".repairing")
    with temporary.open("wb") as file:
        file.write(body)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, journal)


def _excerpt(line: bytes, limit: int = 60) -> str:
    text = line.decode("utf-8", errors="replace").rstrip("\n")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _describe(repair: JournalRepair, journal: Path) -> str:
    parts = []
    if repair.merged_lines:
        lines = ", ".join(str(n) for n in repair.merged_lines)
        parts.append(
            f"line(s) {lines} began with a record cut off by a crash; the whole record "
            "after it was kept"
        )
    if repair.torn_tail:
        parts.append("its last record was cut off by a crash and never completed")
    return (
        f"Repaired the journal {str(journal)!r}: {'; '.join(parts)}. No completed record was "
        f"lost; the removed bytes are in {str(repair.saved_to)!r}."
    )
