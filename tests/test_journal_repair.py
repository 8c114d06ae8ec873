"""Journal files whose last record a crash cut off: repaired on open, nothing lost.

Before the repair, the next append after a cut-off record shared its line and
made the file unreadable to every process; these tests build both states the
way they happen (a truncated write, then Optuna's own append) and check that
:func:`~evohpo.storage.open_storage` repairs them, keeps every whole record,
and saves the removed bytes next to the journal.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from evohpo.exceptions import StorageError
from evohpo.storage import close_storage, open_storage
from evohpo.storage.journal_file import repair_journal, repair_journal_lines, torn_file

STUDY = "journal-repair"


def _run(url: str, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(url)
    try:
        study = optuna.create_study(study_name=STUDY, storage=storage, load_if_exists=True)
        study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=n_trials)
        return study.get_trials(deepcopy=False)
    finally:
        close_storage(storage)


def _cut(path: Path, n_bytes: int) -> bytes:
    """Cut the last ``n_bytes`` off ``path`` (a write the crash stopped); returns what is left
    of the last line."""
    data = path.read_bytes()
    os.truncate(path, len(data) - n_bytes)
    left = path.read_bytes()
    return left[left.rfind(b"\n") + 1 :]


def _values(trials: list[optuna.trial.FrozenTrial]) -> dict[int, float]:
    return {t.number: t.params["x"] for t in trials if t.state == TrialState.COMPLETE}


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_a_cut_off_last_record_is_removed_and_the_study_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "study.log"
    url = f"journal://{journal}"
    before = _values(_run(url, 3))
    torn = _cut(journal, 25)
    assert torn.startswith(b'{"op_code":6')  # the last trial's result, cut off

    with caplog.at_level(logging.WARNING, logger="evohpo"):
        trials = _run(url, 2)

    # The trial whose result was cut off never completed; the others are all there.
    completed = _values(trials)
    assert len(completed) == 4
    lost = set(before) - set(completed)
    assert len(lost) == 1
    assert {n: before[n] for n in set(before) - lost} == {
        n: completed[n] for n in set(before) - lost
    }
    assert torn_file(journal).read_bytes() == torn + b"\n"
    assert journal.read_bytes().endswith(b"\n")
    assert "cut off by a crash" in caplog.text
    assert str(torn_file(journal)) in caplog.text
    # Every reader, Optuna's own included, reads the file to its end.
    plain = JournalStorage(JournalFileBackend(str(journal)))
    assert len(plain.get_all_trials(plain.get_study_id_from_name(STUDY))) == len(trials)


def test_a_line_merged_by_an_earlier_append_is_split_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "study.log"
    url = f"journal://{journal}"
    _run(url, 3)
    torn = _cut(journal, 25)
    # What any writer without the repair does: append right after the cut-off record.
    plain = optuna.load_study(
        study_name=STUDY, storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    with pytest.raises(AttributeError):  # Optuna's replay misses the record it wrote
        plain.enqueue_trial({"x": 0.5})  # written, but onto the cut-off record's line
    broken = journal.read_bytes()
    assert torn + b'{"op_code":4' in broken

    with caplog.at_level(logging.WARNING, logger="evohpo"):
        trials = _run(url, 1)

    assert [t.params["x"] for t in trials if t.state == TrialState.COMPLETE][-1] == 0.5
    assert torn_file(journal).read_bytes() == torn + b"\n"
    assert "line(s) 10 began with a record cut off" in caplog.text
    # The repaired file is the broken one without the cut-off bytes, plus the new trial.
    assert journal.read_bytes().startswith(broken.replace(torn, b"", 1))


def test_other_damage_is_reported_with_its_line_and_left_alone(tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    url = f"journal://{journal}"
    _run(url, 2)
    lines = journal.read_bytes().splitlines(keepends=True)
    lines.insert(3, b"not a record\n")
    journal.write_bytes(b"".join(lines))
    damaged = journal.read_bytes()

    with pytest.raises(StorageError, match=r"line 4 of .*'not a record'.*Nothing was changed"):
        open_storage(url)

    assert journal.read_bytes() == damaged
    assert not torn_file(journal).exists()


def test_an_intact_journal_is_not_touched(tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    _run(f"journal://{journal}", 2)
    intact = journal.read_bytes()
    modified = journal.stat().st_mtime_ns

    assert repair_journal(journal) is None
    assert repair_journal_lines(journal) is None

    assert journal.read_bytes() == intact
    assert journal.stat().st_mtime_ns == modified
    assert not torn_file(journal).exists()


def test_removed_bytes_accumulate_in_the_torn_file(tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    url = f"journal://{journal}"
    _run(url, 2)
    first = _cut(journal, 10)
    _run(url, 1)
    second = _cut(journal, 10)

    repair = repair_journal(journal)

    assert repair is not None
    assert repair.torn_tail
    assert repair.merged_lines == ()
    assert torn_file(journal).read_bytes() == first + b"\n" + second + b"\n"
    assert first != second


def test_a_file_that_cannot_be_written_is_reported_not_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "study.log"
    url = f"journal://{journal}"
    _run(url, 2)
    _cut(journal, 25)
    with open(journal, "ab") as file:
        file.write(journal.read_bytes().splitlines(keepends=True)[1])  # the next append
    damaged = journal.read_bytes()
    monkeypatch.setattr("evohpo.storage.journal_file.os.access", lambda *args: False)

    with pytest.raises(StorageError, match=r"line \d+ of .* may not write the file"):
        repair_journal(journal)

    assert journal.read_bytes() == damaged
    assert not torn_file(journal).exists()
