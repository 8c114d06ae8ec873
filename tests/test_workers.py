"""Worker processes on one study: PostgreSQL, SQLite and journal storage, and their faults.

The GA is the real :class:`~evohpo.EvoSampler`; the objective asks for a real
genome with :func:`~evohpo.suggest_genome` and sleeps instead of training.
Worker processes are spawned, so they import this module by name: the
repository root must be importable (it is under ``python -m pytest``; the
``sys.path`` line below covers a bare ``pytest``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from evohpo import EvoSampler, SearchSpace, suggest_genome  # noqa: E402
from evohpo._interrupt import GracefulStop, raise_if_stop_requested  # noqa: E402
from evohpo.evolution.lineage import LINEAGE_ATTR  # noqa: E402
from evohpo.exceptions import StorageError, StorageUnavailableError, WorkerError  # noqa: E402
from evohpo.storage import (  # noqa: E402
    FAIL_REASON_ATTR,
    OWNER_ATTR,
    close_storage,
    is_storage_outage,
    open_storage,
)
from evohpo.workers import (  # noqa: E402
    Backoff,
    Heartbeat,
    WorkerPool,
    WorkerSpec,
    run_worker,
    run_workers,
)
from tests._pg import PostgresServer, free_port  # noqa: E402

SPACE = SearchSpace(min_layers=1, max_layers=3, units=(4, 64))
STUDY = "shared"


# -- what the workers run (module level: spawned processes import it) ----------------------
class SleepyObjective:
    """Suggest a genome, sleep, score it; trial ``slow_trial`` sleeps ``slow_sleep`` s."""

    def __init__(
        self,
        sleep: float = 0.02,
        slow_trial: int | None = None,
        slow_sleep: float = 60.0,
        fail_every: int = 0,
    ) -> None:
        self.sleep = sleep
        self.slow_trial = slow_trial
        self.slow_sleep = slow_sleep
        self.fail_every = fail_every

    def __call__(self, trial: optuna.Trial) -> float:
        genome = suggest_genome(trial, SPACE)
        time.sleep(self.slow_sleep if trial.number == self.slow_trial else self.sleep)
        if self.fail_every and trial.number % self.fail_every == 1:
            raise ValueError(f"training of trial {trial.number} blew up")
        return -abs(genome.depth - 2) - abs(math.log10(genome.learning_rate) + 2)


class SteppingObjective:
    """Suggest a genome, then "train" in 10 ms steps, polling for a stop as the trainer does.

    The trial numbered ``signal_trial`` sends SIGTERM to its own process first,
    then would run a hundred times as many steps.
    """

    def __init__(self, steps: int = 20, signal_trial: int | None = None) -> None:
        self.steps = steps
        self.signal_trial = signal_trial

    def __call__(self, trial: optuna.Trial) -> float:
        genome = suggest_genome(trial, SPACE)
        steps = self.steps
        if trial.number == self.signal_trial:
            os.kill(os.getpid(), signal.SIGTERM)
            steps *= 100
        for _ in range(steps):
            time.sleep(0.01)
            raise_if_stop_requested()
        return -abs(genome.depth - 2)


class SlowElsewhere:
    """Trials of 0.3 s in the process ``parent``, of 60 s (stopping at a signal) in others."""

    def __init__(self, parent: int) -> None:
        self.parent = parent

    def __call__(self, trial: optuna.Trial) -> float:
        genome = suggest_genome(trial, SPACE)
        steps = 30 if os.getpid() == self.parent else 6000
        for _ in range(steps):
            time.sleep(0.01)
            raise_if_stop_requested()
        return -abs(genome.depth - 2)


def make_sampler() -> EvoSampler:
    return EvoSampler(population_size=4, seed=0, search_space=SPACE)


def make_spec(url: str, n_trials: int, **options: Any) -> WorkerSpec:
    objective = functools.partial(
        SleepyObjective,
        **{k: options.pop(k) for k in ("sleep", "slow_trial", "fail_every") if k in options},
    )
    options.setdefault("heartbeat", Heartbeat(interval=1, grace_period=3, max_retry=2))
    options.setdefault("backoff", Backoff(initial=0.2, maximum=1.0, max_wait=60.0))
    return WorkerSpec(
        study_name=STUDY,
        storage_url=url,
        objective_factory=objective,
        sampler_factory=make_sampler,
        n_trials=n_trials,
        **options,
    )


def create_study(url: str) -> None:
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name=STUDY, direction="maximize")
    close_storage(storage)


def load_trials(url: str) -> list[FrozenTrial]:
    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=STUDY, storage=storage)
        return sorted(study.get_trials(), key=lambda t: t.number)
    finally:
        close_storage(storage)


# -- checks --------------------------------------------------------------------------------
def check_study(trials: list[FrozenTrial], n_trials: int, n_workers: int) -> None:
    """Numbers unique and contiguous; total reached, overshoot bounded; lineage consistent."""
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))
    complete = {t.number: t for t in trials if t.state == TrialState.COMPLETE}
    assert n_trials <= len(complete) <= n_trials + n_workers - 1
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    generation: dict[int, int] = {}
    repeats = 0

    def bred_after(parent: int, trial: FrozenTrial) -> bool:
        # A child is bred when its trial starts asking, a moment after it got its number:
        # a parent may have a larger number but it finished before the child did.
        original = trial.system_attrs.get("failed_trial", trial.number)
        finished = complete[parent].datetime_complete
        return parent != original and finished is not None and finished <= trial.datetime_complete

    # In completion order: every parent is seen before its children.
    for number, trial in sorted(complete.items(), key=lambda item: item[1].datetime_complete):
        record = trial.user_attrs[LINEAGE_ATTR]
        if record["origin"] == "random":
            assert record["generation"] == 0
            assert record["parents"] == []
        elif record["origin"] == "repeat":
            # The best trial evaluated again, to measure the noise: its copy.
            (parent,) = record["parents"]
            assert parent in complete
            assert bred_after(parent, trial), (number, parent)
            assert record["generation"] == generation[parent]
            assert record["params"] == complete[parent].params
            repeats += 1
        else:
            assert record["origin"] == "bred", record
            parents = record["parents"]
            assert parents
            for parent in parents:
                assert parent in complete, (number, parent)
                assert bred_after(parent, trial), (number, parent)
            assert record["generation"] == 1 + max(generation[p] for p in parents)
        assert trial.params == record["params"]
        generation[number] = record["generation"]
    assert max(generation.values()) >= 2
    # Each worker measures the noise at most twice, whatever the others do.
    assert repeats <= 2 * n_workers


def check_reports(trials: list[FrozenTrial], reports: list[Any]) -> None:
    """Each complete trial is in the report of the worker recorded on it, and only there.

    A worker killed before it reported has no report of what it completed.
    """
    reporters = {r.pid for r in reports if r.exitcode == 0}
    reported = [n for r in reports for n in r.completed]
    assert len(reported) == len(set(reported))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert {t.system_attrs[OWNER_ATTR]["pid"] for t in complete} <= {r.pid for r in reports}
    expected = {t.number for t in complete if t.system_attrs[OWNER_ATTR]["pid"] in reporters}
    assert set(reported) == expected
    assert sum(1 for r in reports if r.completed) >= 2


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer.running_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database()


def storage_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'workers.db'}"
    return f"journal://{tmp_path / 'journal.log'}"


# -- many workers, one study ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite", "journal"]
)
def test_four_workers_reach_the_total(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = storage_url(kind, tmp_path, request)
    create_study(url)
    reports = run_workers(make_spec(url, 24, sleep=0.03), 4, threads_per_worker=1)
    assert [r.exitcode for r in reports] == [0, 0, 0, 0]
    assert all(r.error is None for r in reports)
    trials = load_trials(url)
    check_study(trials, 24, 4)
    check_reports(trials, reports)


@pytest.mark.slow
@pytest.mark.postgres
def test_worker_killed_mid_trial_is_retried_with_same_genome(pg_url: str) -> None:
    create_study(pg_url)
    heartbeat = Heartbeat(interval=1, grace_period=2, max_retry=2)
    spec = make_spec(pg_url, 40, sleep=0.2, slow_trial=6, heartbeat=heartbeat)
    with WorkerPool(spec, 4, threads_per_worker=1) as pool:
        victim = wait_for_running(pg_url, 6, timeout=60)
        assert victim in pool.pids
        os.kill(victim, signal.SIGKILL)
        reports = pool.join(timeout=120)
    killed = [r for r in reports if r.pid == victim]
    assert killed[0].exitcode == -signal.SIGKILL
    assert killed[0].error == "killed by SIGKILL"
    trials = load_trials(pg_url)
    dead = trials[6]
    assert dead.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 6]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.system_attrs["retry_history"] == [6]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == dead.params
    assert retry.user_attrs[LINEAGE_ATTR] == dead.user_attrs[LINEAGE_ATTR]
    assert retry.system_attrs[OWNER_ATTR]["pid"] != victim
    check_study(trials, 40, 4)
    check_reports(trials, reports)


def wait_for_running(url: str, number: int, timeout: float) -> int:
    """The process id of the worker running trial ``number``, once all its genome is asked."""
    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=STUDY, storage=storage)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                record = trial.system_attrs.get(OWNER_ATTR)
                lineage = trial.user_attrs.get(LINEAGE_ATTR)
                asked = bool(lineage) and trial.params == lineage["params"]
                if trial.number == number and record and asked:
                    pid: int = record["pid"]
                    return pid
            time.sleep(0.05)
    finally:
        close_storage(storage)
    raise AssertionError(f"trial {number} did not start within {timeout} s")


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_survive_a_database_restart(
    pg_server: PostgresServer, pg_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    create_study(pg_url)
    spec = make_spec(pg_url, 30, sleep=0.1, heartbeat=Heartbeat(interval=1, grace_period=6))
    with WorkerPool(spec, 4, threads_per_worker=1) as pool:
        wait_for_complete(pg_url, 6, timeout=60)
        pg_server.stop()
        time.sleep(3)
        pg_server.start_again()
        reports = pool.join(timeout=120)
    assert [r.exitcode for r in reports] == [0, 0, 0, 0]
    assert sum(r.outages for r in reports) >= 1
    trials = load_trials(pg_url)
    check_study(trials, 30, 4)
    check_reports(trials, reports)
    err = capfd.readouterr().err
    assert "storage unavailable, retrying in" in err
    assert pg_server.password not in err


def wait_for_complete(url: str, count: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sum(t.state == TrialState.COMPLETE for t in load_trials(url)) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{count} trials did not complete within {timeout} s")


@pytest.mark.slow
def test_journal_resume_fails_and_retries_the_trial_of_a_dead_worker(tmp_path: Path) -> None:
    url = f"journal://{tmp_path / 'journal.log'}"
    create_study(url)
    spec = make_spec(url, 16, sleep=0.02, slow_trial=3, heartbeat=None)
    with WorkerPool(spec, 1, threads_per_worker=1) as pool:
        victim = wait_for_running(url, 3, timeout=60)
        os.kill(victim, signal.SIGKILL)
        pool.join(timeout=60)
    assert load_trials(url)[3].state == TrialState.RUNNING  # nothing noticed it yet

    reports = run_workers(make_spec(url, 16, sleep=0.02, heartbeat=None), 2, threads_per_worker=1)
    trials = load_trials(url)
    dead = trials[3]
    assert dead.state == TrialState.FAIL
    assert "is gone" in dead.system_attrs[FAIL_REASON_ATTR]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 3]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == dead.params
    assert retry.user_attrs[LINEAGE_ATTR] == dead.user_attrs[LINEAGE_ATTR]
    assert FAIL_REASON_ATTR not in retry.system_attrs
    check_study(trials, 16, 2)
    assert {n for r in reports for n in r.completed} >= {retry.number}


@pytest.mark.slow
def test_the_trial_of_a_worker_killed_during_run_workers_is_failed_and_queued(
    tmp_path: Path,
) -> None:
    url = f"journal://{tmp_path / 'journal.log'}"  # no heartbeat: nothing else notices
    create_study(url)
    spec = make_spec(url, 12, sleep=0.05, slow_trial=3, heartbeat=None)
    killed: list[int] = []

    def kill_the_slow_one() -> None:
        for trial in load_trials(url):
            record = trial.system_attrs.get(OWNER_ATTR)
            if not killed and trial.number == 3 and trial.state == TrialState.RUNNING and record:
                os.kill(record["pid"], signal.SIGKILL)
                killed.append(record["pid"])

    reports = run_workers(
        spec, 2, threads_per_worker=1, on_wait=kill_the_slow_one, wait_interval=0.1
    )
    assert killed
    assert [r.exitcode for r in reports if r.pid == killed[0]] == [-signal.SIGKILL]
    trials = load_trials(url)
    assert trials[3].state == TrialState.FAIL
    assert "is gone" in trials[3].system_attrs[FAIL_REASON_ATTR]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 3]
    assert retry.state == TrialState.WAITING  # for the study's next run
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_ctrl_c_while_workers_start_stops_them_without_a_traceback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'start.db'}"
    create_study(url)
    # Trials of 2 s: a worker that starts fast is still at work when it is checked.
    with WorkerPool(make_spec(url, 4, sleep=2.0), 2, threads_per_worker=1) as pool:
        time.sleep(0.5)  # the workers are importing evohpo and torch
        for pid in pool.pids:  # Ctrl-C reaches the whole process group
            os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        assert all(p.poll() is None for p in pool._processes)  # SIGINT is the parent's to act on
        pool.terminate(grace=30)
        reports = pool.join()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert "KeyboardInterrupt" not in err, err
    assert all(r.exitcode is not None for r in reports)


# -- in-process worker ---------------------------------------------------------------------
def test_failed_training_is_recorded_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'fail.db'}"
    create_study(url)
    report = run_worker(make_spec(url, 12, sleep=0.0, fail_every=4))
    trials = load_trials(url)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed
    assert report.failed == len(failed)
    assert all(t.number % 4 == 1 for t in failed)
    for trial in failed:
        assert trial.system_attrs[FAIL_REASON_ATTR] == (
            f"ValueError: training of trial {trial.number} blew up"
        )
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 12
    assert report.completed == tuple(t.number for t in trials if t.state == TrialState.COMPLETE)


def test_a_signal_stops_an_in_process_worker_at_a_training_step(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    create_study(url)
    spec = dataclasses.replace(
        make_spec(url, 10),
        objective_factory=functools.partial(SteppingObjective, steps=10, signal_trial=2),
    )
    guard = GracefulStop()
    started = time.monotonic()
    with guard.installed(), pytest.raises(KeyboardInterrupt):
        run_worker(spec, guard=guard)
    assert time.monotonic() - started < 10  # trial 2 alone would take 10 s
    assert [t.state for t in load_trials(url)] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL]


@pytest.mark.slow
def test_the_calling_process_is_one_of_the_workers(tmp_path: Path) -> None:
    import torch

    url = f"sqlite:///{tmp_path / 'here.db'}"
    create_study(url)
    waits: list[int] = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        reports = run_workers(
            make_spec(url, 16, sleep=0.05),
            2,
            threads_per_worker=1,
            in_this_process=True,
            on_wait=lambda: waits.append(1),
        )
        threads_after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert [r.index for r in reports] == [0, 1]
    assert [r.exitcode for r in reports] == [0, 0]
    assert reports[1].pid == os.getpid() != reports[0].pid
    assert reports[1].completed  # it trains while the other process starts
    assert len(waits) >= len(reports[1].completed)  # progress followed after its own trials
    assert threads_after == 2  # its thread setting was for its trials only
    trials = load_trials(url)
    check_study(trials, 16, 2)
    check_reports(trials, reports)


@pytest.mark.slow
def test_the_timeout_stops_the_other_workers_once_the_calling_process_is_done(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'late.db'}"
    create_study(url)
    spec = dataclasses.replace(
        make_spec(url, 24), objective_factory=functools.partial(SlowElsewhere, os.getpid())
    )
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        run_workers(spec, 2, threads_per_worker=1, timeout=4.0, in_this_process=True)
    # This process ran its 0.3 s trials to the total (about 7 s), then stopped the
    # other worker's 60 s trial at once rather than waiting for it.
    assert time.monotonic() - started < 30
    trials = load_trials(url)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 24
    others = [t for t in trials if t.system_attrs[OWNER_ATTR]["pid"] != os.getpid()]
    assert [t.state for t in others] == [TrialState.FAIL] * len(others)


def test_an_error_of_the_worker_in_the_calling_process_is_a_worker_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    create_study(url)
    spec = dataclasses.replace(make_spec(url, 4), study_name="no-such-study")
    with pytest.raises(WorkerError, match=r"1 of 1 workers .* worker 0: .*no study") as info:
        run_workers(spec, 1, threads_per_worker=1, in_this_process=True)
    assert isinstance(info.value.__cause__, StorageError)


@pytest.mark.slow
def test_a_signal_stops_the_calling_process_and_its_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    create_study(url)
    spec = dataclasses.replace(
        make_spec(url, 100), objective_factory=functools.partial(SteppingObjective, steps=3000)
    )

    sent: list[float] = []

    def interrupt_once_both_train() -> None:
        deadline = time.monotonic() + 120
        while sum(t.state == TrialState.RUNNING for t in load_trials(url)) < 2:
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    guard = GracefulStop()
    sender = threading.Thread(target=interrupt_once_both_train)
    sender.start()
    with guard.installed(), pytest.raises(KeyboardInterrupt):
        run_workers(spec, 2, threads_per_worker=1, in_this_process=True, guard=guard)
    stopped = time.monotonic()
    sender.join()
    assert sent, "the two workers never trained at once"
    assert stopped - sent[0] < 20  # a trial takes 30 s: both stopped at a step
    trials = load_trials(url)
    # Each 30 s trial stopped at a step: failed, none left running.
    assert [t.state for t in trials] == [TrialState.FAIL] * 2


@pytest.mark.slow
def test_terminated_worker_processes_stop_at_a_step_and_leave_no_running_trial(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    create_study(url)
    spec = dataclasses.replace(
        make_spec(url, 100), objective_factory=functools.partial(SteppingObjective, steps=3000)
    )
    with WorkerPool(spec, 2, threads_per_worker=1) as pool:
        deadline = time.monotonic() + 120
        while sum(t.state == TrialState.RUNNING for t in load_trials(url)) < 2:
            assert time.monotonic() < deadline, "the workers never started their trials"
            time.sleep(0.1)
        # Ctrl-C in a terminal reaches every process of the group, then the pool
        # sends SIGTERM: neither may cut a storage write.
        for pid in pool.pids:
            os.kill(pid, signal.SIGINT)
        started = time.monotonic()
        pool.terminate(grace=60)
        stopped_in = time.monotonic() - started
        reports = pool.join()
    assert stopped_in < 20  # a trial takes 30 s; the grace period was not needed
    assert [(r.exitcode, r.error) for r in reports] == [(130, "interrupted")] * 2
    trials = load_trials(url)
    assert [t.state for t in trials] == [TrialState.FAIL] * 2


@pytest.mark.slow
def test_a_script_needs_no_main_guard_unless_its_factories_live_in_it(tmp_path: Path) -> None:
    # Module factories (the estimator's): the script is not run again in the workers.
    unguarded = tmp_path / "unguarded.py"
    unguarded.write_text(
        textwrap.dedent(
            """
            import numpy as np
            from evohpo import EvoSearchClassifier
            print("script ran")
            X = np.random.default_rng(0).normal(size=(60, 3))
            y = (X[:, 0] > 0).astype(int)
            space = {"max_layers": 1, "units": (4, 8), "batch_sizes": (16,)}
            clf = EvoSearchClassifier(n_trials=3, max_epochs=2, search_space=space,
                                      device="cpu", n_jobs=2).fit(X, y)
            print("trials", clf.n_trials_)
            """
        ),
        encoding="utf-8",
    )
    # Factories defined in the script: the workers run it (guarded) to find them.
    guarded = tmp_path / "guarded.py"
    guarded.write_text(
        textwrap.dedent(
            f"""
            import functools, sys
            sys.path.insert(0, {str(REPO)!r})
            from tests.test_workers import SPACE, SleepyObjective, create_study, load_trials
            from evohpo import EvoSampler
            from evohpo.workers import WorkerSpec, run_workers

            def objective():
                return SleepyObjective(sleep=0.0)

            def sampler():
                return EvoSampler(population_size=2, seed=0, search_space=SPACE)

            if __name__ == "__main__":
                url = "sqlite:///{tmp_path / "main.db"}"
                create_study(url)
                spec = WorkerSpec(study_name="shared", storage_url=url, objective_factory=objective,
                                  sampler_factory=sampler, n_trials=6)
                run_workers(spec, 2, threads_per_worker=1)
                print("trials", len(load_trials(url)))
            """
        ),
        encoding="utf-8",
    )
    env = dict(os.environ, EVOHPO_NO_PROGRESS="1")
    outputs = []
    for script in (unguarded, guarded):
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert re.search(r"^trials [34]$", outputs[0], re.M), outputs[0]
    assert outputs[0].count("script ran") == 1  # not again in each worker
    assert re.search(r"^trials [67]$", outputs[1], re.M), outputs[1]


def test_workers_stop_at_once_when_the_total_is_reached(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'done.db'}"
    create_study(url)
    run_worker(make_spec(url, 5, sleep=0.0))
    report = run_worker(make_spec(url, 5, sleep=0.0))
    assert report.completed == ()
    assert len(load_trials(url)) == 5


def test_a_missing_database_driver_says_what_to_install() -> None:
    with pytest.raises(StorageError, match=r"driver is not installed \(no module 'pg8000'\)"):
        open_storage("postgresql+pg8000://evohpo@127.0.0.1:1/evohpo")


def test_missing_study_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(StorageError, match="There is no study 'shared'"):
        run_worker(make_spec(url, 5))


# -- outages and passwords -----------------------------------------------------------------
def test_unreachable_database_is_retried_then_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "hunter2-secret"
    url = f"postgresql://evohpo:{secret}@127.0.0.1:{free_port()}/evohpo"
    spec = make_spec(url, 5, backoff=Backoff(initial=0.1, maximum=0.2, max_wait=0.5))
    with (
        caplog.at_level(logging.WARNING, logger="evohpo"),
        pytest.raises(StorageUnavailableError, match=r"has been unavailable for \d+ s") as info,
    ):
        run_worker(spec)
    message = str(info.value)
    assert secret not in message
    assert "evohpo:***@127.0.0.1" in message
    assert "storage unavailable, retrying in 0.1s" in caplog.text
    assert "retrying in 0.2s" in caplog.text
    assert secret not in caplog.text
    assert secret not in repr(spec)


@pytest.mark.postgres
def test_processes_opening_a_new_database_together_all_get_in(
    pg_server: PostgresServer,
) -> None:
    # Each creates Optuna's tables; the losers of that race open what the winner made.
    url = pg_server.create_database()
    start = time.time() + 6.0
    code = (
        "import sys, time\n"
        "from evohpo.storage import open_storage, close_storage\n"
        f"time.sleep(max(0.0, {start} - time.time()))\n"
        "close_storage(open_storage(sys.argv[1]))\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, [err for _, err in results]


def test_wrong_password_fails_at_once_without_showing_it(pg_server: PostgresServer) -> None:
    url = pg_server.url("postgres", password="not-the-right-one")
    started = time.monotonic()
    with pytest.raises(StorageError, match="authentication failed") as info:
        run_worker(make_spec(url, 5))
    assert time.monotonic() - started < 10
    assert "not-the-right-one" not in str(info.value)
    assert "evohpo:***@" in str(info.value)


def test_a_postgres_scheme_says_to_write_postgresql() -> None:
    with pytest.raises(StorageError, match=r"names PostgreSQL 'postgresql://'") as info:
        open_storage("postgres://me:secret@127.0.0.1:9/db")
    assert "secret" not in str(info.value)


def test_outage_classification() -> None:
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import IntegrityError, OperationalError

    refused = OperationalError("SELECT 1", {}, Exception("connection refused"))
    assert is_storage_outage(refused)
    wrapped = StorageInternalError("commit failed")
    wrapped.__cause__ = refused
    assert is_storage_outage(wrapped)
    denied = OperationalError("", {}, Exception('password authentication failed for user "x"'))
    assert not is_storage_outage(denied)
    assert not is_storage_outage(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_storage_outage(ValueError("connection refused"))


def test_an_outage_is_shown_by_its_cause_not_by_optunas_error_while_handling_it() -> None:
    from sqlalchemy.exc import OperationalError

    from evohpo.storage.errors import error_summary, outage_cause

    refused = OperationalError("SELECT 1", {}, Exception("connection refused"))
    # What Optuna's _run_trial raises when its fallback read fails too, during the outage.
    outer = UnboundLocalError("cannot access local variable 'updated_state'")
    outer.__context__ = refused
    assert outage_cause(outer) is refused
    assert "connection refused" in error_summary(outage_cause(outer))
    plain = ValueError("not an outage")
    assert outage_cause(plain) is plain


def test_spec_is_validated() -> None:
    with pytest.raises(ValueError, match="'n_trials' parameter of WorkerSpec must be an int >= 1"):
        make_spec("sqlite:///x.db", 0)
    with pytest.raises(ValueError, match="'grace_period' parameter of Heartbeat"):
        Heartbeat(interval=10, grace_period=5)


# -- the command line ----------------------------------------------------------------------
#: The study the command line runs, over conftest's ``BASE_STUDY``.
TINY_STUDY: dict[str, Any] = {
    "data": {"test_fraction": None},
    "space": {"batch_sizes": [16, 32]},
    "train": {"device": "cpu"},
    "budget": {"n_trials": 8},
    "compare": None,
    "sampler": {"ga": {"population_size": 3}},
}


@pytest.fixture
def study_file(tmp_path: Path, write_study: Callable[..., Path]) -> Path:
    return write_study(tmp_path, TINY_STUDY, filename="tiny.toml")


def cli_trials(url: str, name: str) -> list[FrozenTrial]:
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        close_storage(storage)


@pytest.mark.slow
def test_cli_run_with_two_worker_processes(
    study_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from evohpo.cli import main

    assert main(["run", str(study_file), "--workers", "2", "--n-trials", "4"]) == 0
    out = capsys.readouterr().out
    assert "finished trials: " in out
    assert "run now" in out
    trials = cli_trials(f"sqlite:///{study_file.parent / 'evohpo.db'}", "tiny/ga/seed0")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 4 <= len(complete) <= 5
    owners = [t.system_attrs[OWNER_ATTR] for t in complete]
    assert {owner["worker"] for owner in owners} <= {0, 1}
    # The command's own process is worker 1: it trains while worker 0 starts.
    assert any(owner["worker"] == 1 and owner["pid"] == os.getpid() for owner in owners)


@pytest.mark.slow
@pytest.mark.postgres
def test_cli_worker_on_postgres_never_prints_the_password(
    study_file: Path, pg_server: PostgresServer, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from evohpo.cli import main

    args = ["worker", str(study_file), "--storage", pg_url, "--n-trials", "4", "-v"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "finished trials: 4 of 4 (4 completed by this worker)" in captured.out
    assert "evohpo:***@127.0.0.1" in captured.out
    assert pg_server.password not in captured.out + captured.err
    assert len(cli_trials(pg_url, "tiny/ga/seed0")) == 4
