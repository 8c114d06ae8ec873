"""Batched per-epoch reports: what is stored, how many commits, and what pruners decide."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event

from evohpo.exceptions import InvalidParameterError
from evohpo.search.reporting import EpochReports
from evohpo.storage import close_storage, internals, open_storage

_PG = pytest.param("postgresql", marks=[pytest.mark.slow, pytest.mark.postgres])
KINDS = ["sqlite", "journal", "memory", _PG]

#: Values as awkward as an objective may report: NaN, infinities, an int, a bool.
VALUES: dict[int, Any] = {0: 0.25, 1: math.nan, 2: math.inf, 3: -math.inf, 4: 1, 5: True}
ATTRS: dict[str, Any] = {"genome": '{"layers": [4]}', "n": 3, "none": None, "xs": [1.5, "a"]}

Opener = Callable[[str], BaseStorage]


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Any]:
    from tests._pg import PostgresServer

    with PostgresServer.running_server() as server:
        yield server


@pytest.fixture
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a storage of a kind as evohpo does (journal: one file per test); closes them all."""
    opened: list[BaseStorage] = []

    def open_kind(kind: str) -> BaseStorage:
        if kind == "memory":
            storage: BaseStorage = InMemoryStorage()
        elif kind == "postgresql":
            url = request.getfixturevalue("pg_server").create_database()
            storage = open_storage(url, heartbeat=None)
        elif kind == "sqlite":
            storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=None)
        else:
            storage = open_storage(f"journal://{tmp_path / 'j.log'}")
        opened.append(storage)
        return storage

    yield open_kind
    for storage in opened:
        close_storage(storage)


@pytest.fixture(params=KINDS)
def storage(request: pytest.FixtureRequest, opener: Opener) -> BaseStorage:
    return opener(request.param)


def _write_commits(storage: BaseStorage) -> list[int]:
    """A one-item list counting committed writes: RDB transactions that wrote, journal appends."""
    count = [0]
    if hasattr(storage, "engine"):
        wrote = [False]

        def execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
                wrote[0] = True

        def commit(conn: Any) -> None:
            count[0] += wrote[0]
            wrote[0] = False

        event.listen(storage.engine, "before_cursor_execute", execute)
        event.listen(storage.engine, "commit", commit)
    else:
        backend = storage._backend  # type: ignore[attr-defined]
        append = backend.append_logs

        def counted(logs: list[dict[str, Any]]) -> None:
            count[0] += 1
            append(logs)

        backend.append_logs = counted
    return count


def _stored(trial: FrozenTrial) -> tuple[Any, ...]:
    """What the learning curve and attributes read back, types and NaN included."""
    steps = {(type(s), s): (type(v), repr(v)) for s, v in trial.intermediate_values.items()}
    return steps, trial.user_attrs, trial.state, trial.values


# -- what is stored ----------------------------------------------------------------------------
def test_records_read_back_as_report_and_set_user_attr_write_them(storage: BaseStorage) -> None:
    study = optuna.create_study(storage=storage, direction="maximize")
    by_call, batched, by_reports = study.ask(), study.ask(), study.ask()
    assert all(t.state == TrialState.RUNNING for t in study.trials)  # now in any cache
    for step, value in VALUES.items():
        by_call.report(value, step)
    for key, attr in ATTRS.items():
        by_call.set_user_attr(key, attr)
    internals.write_trial_records(
        study, internals.trial_id(batched), intermediate=VALUES, user_attrs=ATTRS
    )
    reports = EpochReports(by_reports, every=4)
    for step, value in VALUES.items():
        reports.report(step, value)
    reports.flush(ATTRS)

    def views() -> list[list[tuple[Any, ...]]]:
        return [
            [_stored(t) for t in study.trials],
            [_stored(study._storage.get_trial(internals.trial_id(t))) for t in study.trials],
        ]

    for view in views():  # running, read back through every path
        assert view[1] == view[0]
        assert view[2] == view[0]
    assert by_reports.user_attrs == by_call.user_attrs == ATTRS
    for trial in (by_call, batched, by_reports):
        study.tell(trial, 0.5)
    for view in views():  # finished
        assert view[1] == view[0]
        assert view[2] == view[0]
    assert list(study.trials[0].intermediate_values) == list(VALUES)


@pytest.mark.parametrize("kind", ["sqlite", "journal", _PG])
def test_one_commit_per_flush_instead_of_one_per_epoch(kind: str, opener: Opener) -> None:
    storage = opener(kind)
    study = optuna.create_study(storage=storage, direction="maximize")
    commits = _write_commits(storage)
    epochs, attrs = 9, {"a": 1, "b": 2}

    by_call = study.ask()
    before = commits[0]
    for epoch in range(1, epochs + 1):
        by_call.report(0.5, epoch)
        by_call.should_prune()
    for key, attr in attrs.items():
        by_call.set_user_attr(key, attr)
    assert commits[0] - before == epochs + len(attrs)

    trial = study.ask()
    reports = EpochReports(trial, every=3)
    before = commits[0]
    after_each = []
    for epoch in range(1, epochs + 1):
        reports.report(epoch, 0.5)
        after_each.append(commits[0] - before)
    reports.flush(attrs)
    assert after_each == [0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert commits[0] - before == epochs // 3 + 1
    assert len(study.trials[-1].intermediate_values) == epochs


def test_flush_without_anything_to_write_writes_nothing(opener: Opener) -> None:
    storage = opener("sqlite")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    commits = _write_commits(storage)
    reports = EpochReports(trial, every=2)
    reports.flush()
    assert reports.report(2, 0.5) is False
    assert not reports.pending
    reports.flush()
    assert commits[0] == 1


# -- pruning -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", "journal", "memory"])
@pytest.mark.parametrize("every", [1, 3])
def test_median_pruner_prunes_a_bad_trial_at_a_flush_epoch(
    kind: str, every: int, opener: Opener
) -> None:
    storage = opener(kind)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    study = optuna.create_study(storage=storage, direction="maximize", pruner=pruner)

    def objective(trial: optuna.Trial, level: float) -> float:
        reports = EpochReports(trial, every=every)
        for epoch in range(1, 10):
            if reports.report(epoch, level):
                reports.flush({"stopped": epoch})
                raise optuna.TrialPruned()
        reports.flush({"stopped": None})
        return level

    study.optimize(lambda t: objective(t, 0.9), n_trials=2)
    study.optimize(lambda t: objective(t, 0.1), n_trials=1)
    bad = study.trials[-1]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]
    assert bad.user_attrs == {"stopped": every}
    assert sorted(bad.intermediate_values) == list(range(1, every + 1))
    assert bad.value == 0.1
    assert len(study.trials[0].intermediate_values) == 9


# -- errors ------------------------------------------------------------------------------------
def test_writing_to_a_finished_trial_raises_and_writes_nothing(storage: BaseStorage) -> None:
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    study.tell(trial, 1.0)
    trial_id = internals.trial_id(trial)
    with pytest.raises(UpdateFinishedTrialError):
        internals.write_trial_records(study, trial_id, intermediate={1: 0.5})
    with pytest.raises(UpdateFinishedTrialError):
        internals.write_trial_records(study, trial_id, user_attrs={"a": 1})
    assert study.trials[0].intermediate_values == {}
    assert study.trials[0].user_attrs == {}
    study.optimize(lambda t: 0.0, n_trials=1)  # the storage still works
    assert len(study.trials) == 2


def test_journal_trial_finished_elsewhere_during_the_write(opener: Opener) -> None:
    mine = opener("journal")
    other = opener("journal")  # another process on the same file
    study = optuna.create_study(storage=mine, study_name="s")
    trial = study.ask()
    backend = mine._backend  # type: ignore[attr-defined]
    append = backend.append_logs

    def finished_first(logs: list[dict[str, Any]]) -> None:
        optuna.load_study(study_name="s", storage=other).tell(trial.number, state=TrialState.FAIL)
        append(logs)

    backend.append_logs = finished_first
    with pytest.raises(UpdateFinishedTrialError):
        internals.write_trial_records(
            study, internals.trial_id(trial), intermediate={1: 0.5, 2: 0.6}, user_attrs={"a": 1}
        )
    backend.append_logs = append
    # None of the batch's logs is left to fail the next call.
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[0].intermediate_values == {}
    assert study.trials[0].user_attrs == {}
    study.optimize(lambda t: 0.0, n_trials=1)


@pytest.mark.parametrize("every", [0, -1, 1.5, True, "2"])
def test_every_is_checked(every: Any) -> None:
    trial = optuna.create_study().ask()
    with pytest.raises(InvalidParameterError, match="'every' parameter of EpochReports"):
        EpochReports(trial, every=every)


def test_a_repeated_epoch_keeps_its_first_value_as_report_does() -> None:
    study = optuna.create_study()
    trial = study.ask()
    reports = EpochReports(trial, every=2)
    reports.report(1, 0.25)
    with pytest.warns(UserWarning, match="already reported"):
        reports.report(1, 0.75)
    reports.report(2, 0.5)
    with pytest.warns(UserWarning, match="already reported"):
        reports.report(2, 0.9)
    assert study.trials[0].intermediate_values == {1: 0.25, 2: 0.5}


def test_bad_steps_and_values_are_refused_before_anything_is_written() -> None:
    study = optuna.create_study()
    trial = study.ask()
    reports = EpochReports(trial, every=2)
    with pytest.raises(InvalidParameterError, match="'epoch'"):
        reports.report(-1, 0.5)
    with pytest.raises(TypeError, match="`value`"):
        reports.report(1, "high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        internals.write_trial_records(study, internals.trial_id(trial), intermediate={-1: 0.5})
    assert not reports.pending
    assert study.trials[0].intermediate_values == {}


def test_multi_objective_studies_are_refused_as_by_report() -> None:
    trial = optuna.create_study(directions=["maximize", "minimize"]).ask()
    with pytest.raises(NotImplementedError):
        EpochReports(trial, every=1)


def test_a_storage_that_overrides_the_writes_gets_them_one_by_one(tmp_path: Path) -> None:
    calls: list[tuple[str, Any]] = []

    class Audited(RDBStorage):
        def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
            calls.append((key, value))
            super().set_trial_user_attr(trial_id, key, value)

    storage = Audited(f"sqlite:///{tmp_path / 'a.db'}")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    internals.write_trial_records(
        study, internals.trial_id(trial), intermediate={1: 0.5}, user_attrs=ATTRS
    )
    assert calls == list(ATTRS.items())
    assert study.trials[0].user_attrs == ATTRS
    assert study.trials[0].intermediate_values == {1: 0.5}
    close_storage(storage)
