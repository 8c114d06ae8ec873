"""Trials of killed processes: the owner rule, and ``evohpo run`` resumed after a SIGKILL.

A process killed with SIGKILL leaves its trial ``RUNNING``. Whoever starts
next on the study (a run, a worker, a fit) fails it and re-enqueues it with
the same parameters when its owner, on this host, is gone; trials of other
hosts are left alone (:mod:`evohpo.storage.ownership`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from evohpo.evolution.lineage import LINEAGE_ATTR, Lineage
from evohpo.storage import (
    COUNTED_STATES,
    FAIL_REASON_ATTR,
    OWNER_ATTR,
    close_storage,
    internals,
    open_storage,
    owner_is_gone,
    owner_record,
    recover_orphaned_trials,
)
from evohpo.storage.ownership import boot_id, process_start_time

REPO = Path(__file__).resolve().parents[1]


# -- the owner rule ----------------------------------------------------------------------------
@pytest.fixture
def live_child() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def record_of(pid: int, **changes: Any) -> dict[str, Any]:
    record = {
        "host": socket.gethostname(),
        "pid": pid,
        "started": process_start_time(pid),
        "boot": boot_id(),
    }
    record.update(changes)
    return record


def test_owner_record_names_this_process() -> None:
    record = owner_record(worker=3)
    assert record["host"] == socket.gethostname()
    assert record["pid"] == os.getpid()
    assert record["worker"] == 3
    assert isinstance(record["started"], int)  # Linux: from /proc
    assert record["boot"]
    assert not owner_is_gone(record)


def test_a_dead_process_on_this_host_is_gone() -> None:
    pid = dead_pid()
    assert owner_is_gone(record_of(pid, started=12345))
    assert owner_is_gone({"host": socket.gethostname(), "pid": pid})  # an older record


def test_a_live_process_with_another_start_time_is_gone(
    live_child: subprocess.Popen[bytes],
) -> None:
    record = record_of(live_child.pid)
    assert isinstance(record["started"], int)
    assert not owner_is_gone(record)
    assert owner_is_gone({**record, "started": record["started"] + 1})  # the pid was reused
    assert not owner_is_gone({**record, "started": None})  # no start time: the pid decides
    this = owner_record()
    assert owner_is_gone({**this, "started": this["started"] + 1})


def test_another_boot_is_gone_and_another_host_never_is(
    live_child: subprocess.Popen[bytes],
) -> None:
    assert owner_is_gone(record_of(live_child.pid, boot="an-earlier-boot"))
    elsewhere = socket.gethostname() + "-elsewhere"
    assert not owner_is_gone(record_of(dead_pid(), host=elsewhere))
    assert not owner_is_gone(record_of(dead_pid(), host=elsewhere, boot="another-boot"))
    assert not owner_is_gone(None)
    assert not owner_is_gone({"host": socket.gethostname(), "pid": "12"})


@pytest.mark.parametrize("form", ["sqlite", "journal"])
def test_start_records_the_owner_and_recovery_retries_the_same_trial(
    tmp_path: Path, form: str
) -> None:
    url = (
        f"sqlite:///{tmp_path / 's.db'}" if form == "sqlite" else f"journal://{tmp_path / 's.log'}"
    )
    storage = open_storage(url)
    try:
        study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
        orphan = study.ask()
        orphan.suggest_float("x", 0.0, 1.0)
        orphan.set_user_attr("genome", {"x": "kept"})
        assert study.trials[0].system_attrs[OWNER_ATTR] == owner_record()
        foreign = study.ask()
        foreign.suggest_float("x", 0.0, 1.0)
        dead = record_of(dead_pid(), started=1)
        set_owner(study, orphan, dead)
        set_owner(study, foreign, {**dead, "host": socket.gethostname() + "-elsewhere"})

        assert recover_orphaned_trials(study) == [0]
        trials = study.get_trials()
        assert [t.state for t in trials] == [
            TrialState.FAIL,
            TrialState.RUNNING,
            TrialState.WAITING,
        ]
        assert "is gone" in trials[0].system_attrs[FAIL_REASON_ATTR]
        retry = trials[2]
        assert retry.system_attrs["failed_trial"] == 0
        assert retry.params == trials[0].params
        assert retry.user_attrs == {"genome": {"x": "kept"}}
        assert OWNER_ATTR not in retry.system_attrs
        assert FAIL_REASON_ATTR not in retry.system_attrs
        assert recover_orphaned_trials(study) == []  # once only

        study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=1)
        done = study.trials[2]
        assert done.state == TrialState.COMPLETE
        assert done.params == trials[0].params
        assert done.system_attrs[OWNER_ATTR] == owner_record()  # taken up here
        assert study.trials[1].state == TrialState.RUNNING  # another host's: left to heartbeats
    finally:
        close_storage(storage)


@pytest.mark.parametrize("form", ["sqlite", "journal"])
def test_a_new_trial_is_created_with_its_owner_in_one_write(
    tmp_path: Path, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed right after creating a trial must not leave it without an owner:
    nothing would recover it (no owner, no heartbeat), and a resumed run would wait on it."""
    url = (
        f"sqlite:///{tmp_path / 's.db'}" if form == "sqlite" else f"journal://{tmp_path / 's.log'}"
    )
    storage = open_storage(url)
    try:
        study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
        created: list[int] = []
        # Optuna's own creation, under evohpo's storage class: the process dies just after.
        if form == "sqlite":
            base: Any = optuna.storages.RDBStorage
            real = base._create_new_trial

            def create_and_die(self: Any, study_id: int, template_trial: Any = None) -> Any:
                created.append(real(self, study_id, template_trial)._trial_id)
                raise KeyboardInterrupt

            monkeypatch.setattr(base, "_create_new_trial", create_and_die)
        else:
            base = optuna.storages.JournalStorage
            real = base.create_new_trial

            def create_and_die(self: Any, study_id: int, template_trial: Any = None) -> Any:
                created.append(real(self, study_id, template_trial))
                raise KeyboardInterrupt

            monkeypatch.setattr(base, "create_new_trial", create_and_die)
        with pytest.raises(KeyboardInterrupt):
            study.ask()
        monkeypatch.undo()
        reader = open_storage(url)
        try:
            (trial,) = optuna.load_study(study_name="s", storage=reader).get_trials()
        finally:
            close_storage(reader)
        assert created == [trial._trial_id]
        assert trial.state == TrialState.RUNNING
        assert trial.system_attrs[OWNER_ATTR] == owner_record()
    finally:
        close_storage(storage)


def test_a_trial_killed_before_it_was_bred_is_retried_and_bred(tmp_path: Path) -> None:
    """Killed between its creation and the sampler's breeding: no parameters, no lineage.
    Its retry is bred when it is taken up, as a new trial is."""
    from evohpo import EvoSampler

    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    try:
        study = optuna.create_study(
            study_name="s",
            storage=storage,
            sampler=EvoSampler(population_size=2, seed=0),
            direction="maximize",
        )
        study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=2)
        bare = storage.create_new_trial(internals.study_id(study))  # what the kill left
        internals.set_trial_system_attr(study, bare, OWNER_ATTR, record_of(dead_pid(), started=1))
        assert recover_orphaned_trials(study) == [2]
        study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)
        lost, retry = study.trials[2:]
        assert (lost.state, retry.state) == (TrialState.FAIL, TrialState.COMPLETE)
        assert LINEAGE_ATTR not in lost.user_attrs
        assert retry.system_attrs["failed_trial"] == 2
        bred = Lineage.from_attr(retry.user_attrs[LINEAGE_ATTR])
        assert bred is not None
        assert bred.origin in ("bred", "repeat")  # the GA's own child, not an enqueued one
        assert set(retry.params) == {"x"}
    finally:
        close_storage(storage)


def set_owner(study: optuna.Study, trial: optuna.Trial, record: dict[str, Any]) -> None:
    internals.set_trial_system_attr(study, internals.trial_id(trial), OWNER_ATTR, record)


# -- evohpo run, killed and resumed --------------------------------------------------------------
N_TRIALS = 4

#: The study the killed run works on, over conftest's ``BASE_STUDY``.
STUDY_FILE: dict[str, Any] = {
    "name": "killed",
    "data": {"test_fraction": None},
    "space": {"units": [8, 32], "batch_sizes": [16]},
    "train": {"max_epochs": 250, "patience": 1000, "device": "cpu"},
    "budget": {"n_trials": N_TRIALS},
    "compare": None,
    "sampler": {"ga": {"population_size": 2}},
}
STUDY = "killed/ga/seed0"


def read_trials(url: str) -> list[FrozenTrial] | None:
    """The study's trials read with plain Optuna storages; ``None`` before it exists."""
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = url[len("journal://") :]
        if not Path(path).exists():
            return None
        storage: optuna.storages.BaseStorage = JournalStorage(JournalFileBackend(path))
    else:
        storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=STUDY, storage=storage).get_trials()
    except KeyError:
        return None
    finally:
        if isinstance(storage, optuna.storages.RDBStorage):
            storage.engine.dispose()


def describe(trials: list[FrozenTrial], killed: list[FrozenTrial]) -> str:
    """What a failed assertion on the resumed study shows: every trial's record."""
    lines = [f"killed: {[t.number for t in killed]}"]
    for t in [*killed, *trials]:
        lines.append(
            f"{t.number} {t.state.name} params={t.params} user_attrs={sorted(t.user_attrs)} "
            f"lineage={t.user_attrs.get(LINEAGE_ATTR)} system_attrs={t.system_attrs}"
        )
    return "\n".join(lines)


def fully_asked(trial: FrozenTrial) -> bool:
    lineage = trial.user_attrs.get(LINEAGE_ATTR)
    return bool(lineage) and trial.params == lineage["params"]


def kill_mid_trial(study_file: Path, url: str) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """Run the study in a process, SIGKILL it while trials train (a batch of them, with
    ``batch_trials``); the trials finished, and the killed ones."""
    env = dict(os.environ, EVOHPO_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "evohpo", "run", str(study_file), "--storage", url]
    log = study_file.with_suffix(".err")
    with log.open("wb") as err:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            trials = read_trials(url) or []
            running = [t for t in trials if t.state == TrialState.RUNNING and fully_asked(t)]
            if running and any(t.state == TrialState.COMPLETE for t in trials):
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        if process.poll() is None and process.returncode != -signal.SIGKILL:
            process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, log.read_text(errors="replace")
    trials = read_trials(url)
    assert trials is not None
    killed = [t for t in trials if t.state == TrialState.RUNNING]
    finished = [t for t in trials if t.state in COUNTED_STATES]
    assert finished
    return finished, killed


@pytest.mark.slow
@pytest.mark.parametrize("form", ["sqlite", "journal"])
def test_a_killed_run_resumes_with_its_trial_retried(
    tmp_path: Path, form: str, write_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from evohpo.cli import main

    # The kill lands a moment after a read of the storage: if the batch seen running had
    # just finished, nothing died mid-trial, and the run is tried again on a fresh storage.
    for attempt in range(3):
        study_file = write_study(tmp_path, STUDY_FILE, filename=f"killed{attempt}.toml")
        if form == "sqlite":
            url = f"sqlite:///{tmp_path / f'killed{attempt}.db'}"
            optuna.storages.RDBStorage(url).engine.dispose()  # tables first: no race on them
        else:
            url = f"journal://{tmp_path / f'killed{attempt}.log'}"
        finished, killed = kill_mid_trial(study_file, url)
        if killed:
            break
    assert killed, "three kills in a row landed between trials"
    assert all(k.system_attrs[OWNER_ATTR]["pid"] != os.getpid() for k in killed)

    assert main(["run", str(study_file), "--storage", url]) == 0
    assert f"finished trials: {N_TRIALS} of {N_TRIALS}" in capsys.readouterr().out
    trials = read_trials(url)
    assert trials is not None
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    by_number = {t.number: t for t in trials}
    for before in finished:  # kept as they were
        after = by_number[before.number]
        assert (after.state, after.values, after.params) == (
            before.state,
            before.values,
            before.params,
        )
        assert after.user_attrs == before.user_attrs
        assert after.datetime_complete == before.datetime_complete
    for lost in killed:
        dead = by_number[lost.number]
        assert dead.state == TrialState.FAIL
        assert dead.system_attrs[FAIL_REASON_ATTR].startswith("WorkerLost: its process")
        (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]
        assert retry.state in COUNTED_STATES
        # A trial of the batch may die while it is being asked: the retry keeps the
        # parameters it had and draws the others.
        assert lost.params.items() <= retry.params.items()
        if fully_asked(lost):
            assert retry.params == lost.params
        # Its lineage too; one killed before the sampler bred it (just created) has
        # none, and its retry is bred when it is taken up.
        assert LINEAGE_ATTR in retry.user_attrs, describe(trials, killed)
        if LINEAGE_ATTR in lost.user_attrs:
            assert retry.user_attrs[LINEAGE_ATTR] == lost.user_attrs[LINEAGE_ATTR]
        assert retry.system_attrs[OWNER_ATTR]["pid"] == os.getpid()
    assert sum(t.state in COUNTED_STATES for t in trials) == N_TRIALS
