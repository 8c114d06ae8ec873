"""Optuna's gRPC storage proxy: ``evohpo proxy`` and ``grpc://`` URLs, against real components.

Each proxy is a real ``python -m evohpo proxy`` process on 127.0.0.1 in front
of a SQLite file or a throwaway PostgreSQL server (:mod:`tests._pg`); the
workers are real worker processes (:mod:`evohpo.workers`) running the
objective and checks of :mod:`tests.test_workers`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from evohpo.evolution.lineage import LINEAGE_ATTR  # noqa: E402
from evohpo.exceptions import StorageError, StorageUnavailableError  # noqa: E402
from evohpo.storage import (  # noqa: E402
    FAIL_REASON_ATTR,
    OWNER_ATTR,
    is_storage_outage,
    open_storage,
    resolve_storage_url,
    storage_kind,
)
from evohpo.storage import grpc as grpc_storage  # noqa: E402
from evohpo.storage.urls import grpc_address  # noqa: E402
from evohpo.workers import Backoff, Heartbeat, WorkerPool, run_worker, run_workers  # noqa: E402
from tests._pg import PostgresServer, free_port  # noqa: E402
from tests.test_workers import (  # noqa: E402
    TINY_STUDY,
    check_reports,
    check_study,
    create_study,
    load_trials,
    make_spec,
    wait_for_complete,
    wait_for_running,
)

grpc = pytest.importorskip("grpc", reason="needs evohpo's grpc extra")

HEARTBEAT_ATTR = grpc_storage.HEARTBEAT_ATTR
PROXY_COMMAND = (sys.executable, "-m", "evohpo", "proxy")


# -- a real proxy process ------------------------------------------------------------------
@dataclass
class Proxy:
    """``evohpo proxy`` serving ``storage_url`` on 127.0.0.1:``port``."""

    storage_url: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the proxy process and wait until it answers."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*PROXY_COMMAND, "--storage", self.storage_url, "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise AssertionError(f"the proxy exited: {self.log.read_text()}")
            with contextlib.suppress(ConnectionError):
                probe = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=self.port)
                probe.wait_server_ready(timeout=1.0)
                probe.close()
                return
        raise AssertionError(f"the proxy did not answer within {timeout} s")

    def kill(self) -> None:
        """Kill the proxy at once (SIGKILL)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> int | None:
        """Stop the proxy as Ctrl-C does; its exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextlib.contextmanager
def running_proxy(storage_url: str, log: Path) -> Iterator[Proxy]:
    proxy = Proxy(storage_url, free_port(), log)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer.running_server() as server:
        yield server


def backing_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "postgres":
        server: PostgresServer = request.getfixturevalue("pg_server")
        return server.create_database()
    return f"sqlite:///{tmp_path / 'proxied.db'}"


# -- URLs, missing grpcio, no proxy --------------------------------------------------------
def test_grpc_urls() -> None:
    assert storage_kind("grpc://proxy.example:15000") == "grpc"
    assert resolve_storage_url("grpc://proxy.example:15000") == "grpc://proxy.example:15000"
    assert grpc_address("grpc://proxy.example") == ("proxy.example", 13000)
    for bad in ("grpc://", "grpc://host:port", "grpc://host:1/db", "grpc://me@host:1"):
        with pytest.raises(StorageError, match=r"grpc://host:port"):
            grpc_address(bad)


def test_missing_grpcio_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from evohpo.cli import main

    monkeypatch.setitem(sys.modules, "grpc", None)  # import grpc now fails
    with pytest.raises(StorageError) as caught:
        open_storage("grpc://127.0.0.1:13000")
    assert "pip install 'evohpo[grpc]'" in str(caught.value)
    assert not isinstance(caught.value, StorageUnavailableError)
    assert main(["proxy", "--storage", str(tmp_path / "x.db")]) == 1
    assert "pip install 'evohpo[grpc]'" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_no_proxy_is_an_outage_that_workers_wait_for(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(grpc_storage, "READY_TIMEOUT", 0.3)
    url = f"grpc://127.0.0.1:{free_port()}"
    with pytest.raises(StorageUnavailableError, match="no gRPC storage proxy answers") as caught:
        open_storage(url)
    assert is_storage_outage(caught.value)
    spec = make_spec(url, 4, backoff=Backoff(initial=0.2, maximum=0.4, max_wait=1.0))
    with pytest.raises(StorageUnavailableError, match="gives up"):
        run_worker(spec)
    assert "storage unavailable, retrying in" in caplog.text


class FakeRpcError(grpc.RpcError):
    """What a gRPC stub raises: a status code and details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_grpc_errors_are_told_apart() -> None:
    from evohpo.storage.errors import GRPC_OUTAGE_MARK, error_summary

    unknown = grpc.StatusCode.UNKNOWN
    outages = [
        FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"),
        FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"),
        FakeRpcError(unknown, f"Exception calling application: {GRPC_OUTAGE_MARK}: ..."),
        FakeRpcError(unknown, "Exception calling application: (psycopg.OperationalError) x"),
    ]
    others = [
        FakeRpcError(grpc.StatusCode.NOT_FOUND, "no such trial"),
        FakeRpcError(unknown, "Exception calling application: ValueError: bad value"),
        FakeRpcError(unknown, "(psycopg.OperationalError) password authentication failed"),
    ]
    for error in outages:
        wrapped = StorageError("cannot write")
        wrapped.__cause__ = error
        assert is_storage_outage(error), error.details()
        assert is_storage_outage(wrapped), error.details()
    for error in others:
        assert not is_storage_outage(error), error.details()
    assert error_summary(others[0]) == "gRPC NOT_FOUND: no such trial"


def test_proxy_refuses_what_it_cannot_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from evohpo.cli import main

    assert main(["proxy", "--storage", str(tmp_path / "runs.log")]) == 1
    assert "cannot serve the journal file" in capsys.readouterr().err
    assert main(["proxy", "--storage", "grpc://127.0.0.1:13000"]) == 1
    assert "is a gRPC proxy already" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["proxy", "--storage", str(tmp_path / "x.db"), "--port", str(port)]) == 1
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


# -- workers through a real proxy ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def test_two_workers_share_a_proxy(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    backing = backing_url(kind, tmp_path, request)
    with running_proxy(backing, tmp_path / "proxy.log") as proxy:
        create_study(proxy.url)
        reports = run_workers(make_spec(proxy.url, 20, sleep=0.03), 2, threads_per_worker=1)
        through_proxy = load_trials(proxy.url)
        assert proxy.stop() == 130  # Ctrl-C: "proxy stopped."
    assert [r.exitcode for r in reports] == [0, 0]
    trials = load_trials(backing)  # what the proxy wrote to the database
    assert [(t.number, t.state, t.params) for t in trials] == [
        (t.number, t.state, t.params) for t in through_proxy
    ]
    check_study(trials, 20, 2)
    check_reports(trials, reports)
    # Heartbeats and owners were written through the proxy, by the workers.
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert all(isinstance(t.system_attrs.get(HEARTBEAT_ATTR), float) for t in complete)
    assert {t.system_attrs[OWNER_ATTR]["worker"] for t in complete} == {0, 1}
    log = (tmp_path / "proxy.log").read_text()
    assert f"storage URL {proxy.url}" in log
    if kind == "postgres":
        server: PostgresServer = request.getfixturevalue("pg_server")
        assert server.password not in log


@pytest.mark.slow
def test_a_killed_workers_trial_is_retried_through_the_proxy_heartbeat(tmp_path: Path) -> None:
    with running_proxy(f"sqlite:///{tmp_path / 'proxied.db'}", tmp_path / "proxy.log") as proxy:
        create_study(proxy.url)
        heartbeat = Heartbeat(interval=1, grace_period=3, max_retry=2)
        spec = make_spec(proxy.url, 24, sleep=0.1, slow_trial=5, heartbeat=heartbeat)
        with WorkerPool(spec, 2, threads_per_worker=1) as pool:
            victim = wait_for_running(proxy.url, 5, timeout=60)
            os.kill(victim, signal.SIGKILL)
            started = time.monotonic()
            reports = pool.join(timeout=120)
        trials = load_trials(proxy.url)
    assert time.monotonic() - started < 60
    dead = trials[5]
    assert dead.state == TrialState.FAIL
    # The surviving worker, already running, saw the beat stand still: no start-up rule.
    assert FAIL_REASON_ATTR not in dead.system_attrs
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 5]
    assert retry.system_attrs["retry_history"] == [5]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == dead.params
    assert retry.user_attrs[LINEAGE_ATTR] == dead.user_attrs[LINEAGE_ATTR]
    assert retry.system_attrs[OWNER_ATTR]["pid"] != victim
    check_study(trials, 24, 2)
    (survivor,) = [r for r in reports if r.pid != victim]
    assert retry.number in survivor.completed


@pytest.mark.slow
def test_a_worker_starting_through_the_proxy_recovers_a_dead_workers_trial(
    tmp_path: Path,
) -> None:
    with running_proxy(f"sqlite:///{tmp_path / 'proxied.db'}", tmp_path / "proxy.log") as proxy:
        create_study(proxy.url)
        spec = make_spec(proxy.url, 12, sleep=0.02, slow_trial=3, heartbeat=None)
        with WorkerPool(spec, 1, threads_per_worker=1) as pool:
            victim = wait_for_running(proxy.url, 3, timeout=60)
            os.kill(victim, signal.SIGKILL)
            pool.join(timeout=60)
        assert load_trials(proxy.url)[3].state == TrialState.RUNNING
        run_workers(make_spec(proxy.url, 12, sleep=0.02, heartbeat=None), 1, threads_per_worker=1)
        trials = load_trials(proxy.url)
    dead = trials[3]
    assert dead.state == TrialState.FAIL
    assert "is gone" in dead.system_attrs[FAIL_REASON_ATTR]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 3]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == dead.params


@pytest.mark.slow
def test_workers_wait_for_a_restarted_proxy(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    proxy = Proxy(f"sqlite:///{tmp_path / 'proxied.db'}", free_port(), tmp_path / "proxy.log")
    proxy.start()
    try:
        create_study(proxy.url)
        # The grace period outlasts the restart: no trial is taken for a dead worker's.
        heartbeat = Heartbeat(interval=1, grace_period=30, max_retry=2)
        # Trials long enough that 20 are left to run when the outage begins, however
        # soon both workers have started.
        spec = make_spec(proxy.url, 24, sleep=0.3, heartbeat=heartbeat)
        with WorkerPool(spec, 2, threads_per_worker=1) as pool:
            wait_for_complete(proxy.url, 4, timeout=60)
            proxy.kill()
            time.sleep(1)
            proxy.start()
            reports = pool.join(timeout=120)
        trials = load_trials(proxy.url)
    finally:
        proxy.stop()
    assert [r.exitcode for r in reports] == [0, 0]
    assert sum(r.outages for r in reports) >= 1
    check_study(trials, 24, 2)
    check_reports(trials, reports)
    assert "storage unavailable, retrying in" in capfd.readouterr().err


@pytest.mark.slow
def test_study_files_and_the_estimator_take_grpc_urls(
    tmp_path: Path, write_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from sklearn.datasets import load_iris

    from evohpo.cli import main
    from evohpo.estimator import EvoSearchClassifier

    study_file = write_study(tmp_path, TINY_STUDY, filename="tiny.toml")
    backing = f"sqlite:///{tmp_path / 'proxied.db'}"
    with running_proxy(backing, tmp_path / "proxy.log") as proxy:
        assert main(["run", str(study_file), "--storage", proxy.url, "--n-trials", "3"]) == 0
        assert f"in {proxy.url}" in capsys.readouterr().out
        assert main(["best", str(study_file), "--storage", proxy.url]) == 0
        assert '"params"' in capsys.readouterr().out
        X, y = load_iris(return_X_y=True)
        model = EvoSearchClassifier(
            n_trials=3, max_epochs=2, storage=proxy.url, study_name="iris", random_state=0
        ).fit(X, y)
        assert len(model.study_.trials) == 3
    names = {s.study_name for s in optuna.get_all_study_summaries(backing)}
    assert names == {"tiny/ga/seed0", "iris"}
    trials = optuna.load_study(study_name="tiny/ga/seed0", storage=backing).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert all(OWNER_ATTR in t.system_attrs and LINEAGE_ATTR in t.user_attrs for t in trials)


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_wait_for_a_database_restart_behind_the_proxy(
    tmp_path: Path, pg_server: PostgresServer, capfd: pytest.CaptureFixture[str]
) -> None:
    with running_proxy(pg_server.create_database(), tmp_path / "proxy.log") as proxy:
        create_study(proxy.url)
        heartbeat = Heartbeat(interval=1, grace_period=20, max_retry=2)
        # Trials long enough that 20 are left to run when the outage begins, however
        # soon both workers have started.
        spec = make_spec(proxy.url, 24, sleep=0.3, heartbeat=heartbeat)
        with WorkerPool(spec, 2, threads_per_worker=1) as pool:
            wait_for_complete(proxy.url, 4, timeout=60)
            pg_server.stop()
            # Long enough that both workers ask the proxy during it even when the
            # machine is busy with other tests (2 s went unnoticed once in CI).
            time.sleep(6)
            pg_server.start_again()
            reports = pool.join(timeout=120)
        trials = load_trials(proxy.url)
    assert [r.exitcode for r in reports] == [0, 0]
    assert sum(r.outages for r in reports) >= 1
    check_study(trials, 24, 2)
    check_reports(trials, reports)
    err = capfd.readouterr().err
    assert "database unavailable behind the gRPC proxy" in err
    assert pg_server.password not in err
    assert pg_server.password not in (tmp_path / "proxy.log").read_text()
