"""A study's workers as tasks on a real Dask cluster (``LocalCluster``, worker processes).

The workers run :class:`tests.test_workers.SleepyObjective` with the real
:class:`~evohpo.EvoSampler`; the Dask worker processes import it by name, as
:mod:`tests.test_workers`' own worker processes do.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from evohpo.evolution.lineage import LINEAGE_ATTR  # noqa: E402
from evohpo.exceptions import WorkerError  # noqa: E402
from evohpo.storage import OWNER_ATTR  # noqa: E402
from evohpo.workers import WorkerReport, run_dask_workers  # noqa: E402
from tests.test_workers import (  # noqa: E402
    check_study,
    create_study,
    load_trials,
    make_spec,
    wait_for_running,
)

distributed = pytest.importorskip("distributed", reason="needs evohpo's dask extra")


def local_cluster() -> distributed.LocalCluster:
    """Two Dask worker processes of one thread each on 127.0.0.1 (dashboard on a free port)."""
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", host="127.0.0.1"
    )


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    """Two Dask worker processes of one thread each, for the whole module."""
    with local_cluster() as cluster, distributed.Client(cluster) as dask_client:
        yield dask_client


def check_dask_reports(trials: list, reports: list[WorkerReport], pids: set[int]) -> None:
    """Each complete trial was reported by the one worker recorded on it, in a Dask process."""
    assert [r.index for r in reports] == list(range(len(reports)))
    assert all(r.error is None for r in reports)
    reported = [n for r in reports for n in r.completed]
    assert len(reported) == len(set(reported))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert set(reported) == {t.number for t in complete}
    owners = {t.number: t.system_attrs[OWNER_ATTR] for t in complete}
    for report in reports:
        assert report.pid in pids
        for number in report.completed:
            assert owners[number]["pid"] == report.pid
            assert owners[number]["worker"] == report.index


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_dask_workers_share_one_study(
    kind: str, tmp_path: Path, client: distributed.Client
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'dask.db'}"
        if kind == "sqlite"
        else f"journal://{tmp_path / 'dask.log'}"
    )
    create_study(url)
    heartbeat = {} if kind == "sqlite" else {"heartbeat": None}
    reports = run_dask_workers(make_spec(url, 20, sleep=0.03, **heartbeat), client, 2)
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2
    trials = load_trials(url)
    check_study(trials, 20, 2)
    check_dask_reports(trials, reports, pids)
    # Both Dask worker processes ran an evohpo worker: the scheduler spread the tasks.
    assert {r.pid for r in reports} == pids


@pytest.mark.slow
def test_a_timeout_stops_every_worker_after_its_trial(
    tmp_path: Path, client: distributed.Client
) -> None:
    url = f"sqlite:///{tmp_path / 'dask.db'}"
    create_study(url)
    with pytest.raises(TimeoutError):
        run_dask_workers(make_spec(url, 10_000, sleep=0.05), client, 2, timeout=3.0)
    trials = load_trials(url)
    assert trials
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) < 10_000


def test_a_worker_error_names_the_worker(tmp_path: Path, client: distributed.Client) -> None:
    url = f"sqlite:///{tmp_path / 'nostudy.db'}"
    with pytest.raises(WorkerError, match=r"2 of 2 workers .* no study 'shared'"):
        run_dask_workers(make_spec(url, 4), client, 2)


def test_arguments_are_checked(tmp_path: Path, client: distributed.Client) -> None:
    spec = make_spec(f"sqlite:///{tmp_path / 'x.db'}", 4)
    with pytest.raises(ValueError, match="n_workers"):
        run_dask_workers(spec, client, 0)
    with pytest.raises(ValueError, match="timeout"):
        run_dask_workers(spec, client, 1, timeout=0)


@pytest.mark.slow
def test_a_killed_dask_worker_loses_no_trial(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dask.db'}"
    create_study(url)
    victims: list[int] = []

    def kill_the_runner_of_trial_4() -> None:
        victims.append(wait_for_running(url, 4, timeout=60))
        os.kill(victims[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_the_runner_of_trial_4)
    with local_cluster() as cluster, distributed.Client(cluster) as client:
        killer.start()
        reports = run_dask_workers(make_spec(url, 40, sleep=0.2, slow_trial=4), client, 2)
        killer.join()
    (victim,) = victims
    trials = load_trials(url)
    dead = trials[4]
    assert dead.state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 4]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == dead.params
    assert retry.user_attrs[LINEAGE_ATTR] == dead.user_attrs[LINEAGE_ATTR]
    assert retry.system_attrs[OWNER_ATTR]["pid"] != victim
    check_study(trials, 40, 2)
    # Dask ran the lost task again: two reports, neither from the dead process.
    assert len(reports) == 2
    assert victim not in {r.pid for r in reports}
