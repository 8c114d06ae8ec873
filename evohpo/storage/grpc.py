"""Optuna's gRPC storage proxy: serving a storage, and ``grpc://`` URLs.

Thousands of workers on one database server open thousands of connections;
Optuna's answer is a proxy that holds the connections and which workers reach
over gRPC. :func:`serve_storage` (``evohpo proxy --storage URL``) serves a
SQLite or database-server storage with Optuna's ``run_grpc_proxy_server``;
``grpc://host:port`` storage URLs, wherever evohpo takes a storage (study
files, ``--storage``, the estimator's ``storage=``, workers), open a
:class:`TrackedGrpcStorage`, Optuna's ``GrpcStorageProxy`` client with
evohpo's trial owners and heartbeats. Both need evohpo's ``grpc`` extra
(grpcio, protobuf). Optuna's proxy cannot serve journal files
(optuna/optuna#6084), and neither does ``evohpo proxy``.

Heartbeats through the proxy
    Optuna's heartbeats are a feature of ``RDBStorage``: its client records
    each beat in a table of the database, which the gRPC protocol has no call
    for, so a plain ``GrpcStorageProxy`` has no heartbeats at all. A
    :class:`TrackedGrpcStorage` given a :class:`~evohpo.storage.Heartbeat`
    (``open_storage`` gives one to ``grpc://`` URLs by default) writes each
    beat as the trial system attribute :data:`HEARTBEAT_ATTR`, every
    ``Heartbeat.interval`` seconds, through the proxy. Before each trial, every
    worker fails and re-enqueues (same parameters and lineage,
    :mod:`evohpo.storage.retry`) the running trials whose beat it has watched
    stand still for ``Heartbeat.grace_period`` seconds of its own clock:
    machines' clocks need not agree, but a worker that has just started
    watches a whole grace period before it judges a trial. Trials of processes
    that open the database directly keep Optuna's heartbeats and are judged
    by those processes; each kind ignores the other's trials.

A killed worker's trial, through the proxy
    It stays ``RUNNING`` until a worker notices it: at once when a worker
    starts on the same host (its owner process is gone,
    :mod:`evohpo.storage.ownership`); otherwise when a live worker, anywhere,
    has watched its heartbeat stand still for the grace period. Either way it
    is failed, and a retry with the same genome and lineage record waits for
    the next worker to ask (at most ``Heartbeat.max_retry`` retries of one
    original trial). A worker killed before its trial's first beat (while
    ``study.ask`` runs) leaves a trial only the ownership rule and
    ``stale_after`` see.

Outages
    A proxy that does not answer (gRPC ``UNAVAILABLE``, or no answer within
    :data:`READY_TIMEOUT` when the storage is opened) and a proxy whose
    database is away are outages
    (:func:`~evohpo.storage.errors.is_storage_outage`). Optuna's proxy passes
    any storage error on as gRPC ``UNKNOWN`` with the error's message, in
    which a failed commit reads the same whether the server went away or the
    data were bad; ``evohpo proxy`` marks database outages with
    :data:`~evohpo.storage.errors.GRPC_OUTAGE_MARK` (a plain Optuna proxy's
    are recognised only where SQLAlchemy's class name shows). Workers wait
    with their backoff and settle their trials when it answers again, as
    with a database. A beat that cannot be written is skipped with one
    warning; the grace period covers it.
"""

from __future__ import annotations

import functools
import importlib
import logging
import socket
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, GrpcStorageProxy
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from evohpo._redact import redact_exception
from evohpo.exceptions import StorageError
from evohpo.storage.drivers import GRPC_HINT
from evohpo.storage.errors import (
    GRPC_OUTAGE_MARK,
    error_summary,
    exception_chain,
    is_storage_outage,
)
from evohpo.storage.records import HEARTBEAT_ATTR
from evohpo.storage.retry import Heartbeat, RetryStaleTrial, retry_callback
from evohpo.storage.tracked import TrialStartListener, _OwnerRecording
from evohpo.storage.urls import describe_storage, grpc_address, storage_kind

__all__ = [
    "HEARTBEAT_ATTR",
    "READY_TIMEOUT",
    "TrackedGrpcStorage",
    "check_port_free",
    "open_grpc_storage",
    "require_grpc",
    "servable",
    "serve_storage",
]

_logger = logging.getLogger("evohpo")

#: Seconds :func:`open_grpc_storage` waits for the proxy to answer.
READY_TIMEOUT = 5.0


def require_grpc() -> None:
    """Raise :class:`~evohpo.exceptions.StorageError` saying what to install if grpcio
    or protobuf is missing."""
    try:
        for module in ("grpc", "optuna.storages._grpc.auto_generated.api_pb2"):
            importlib.import_module(module)
    except ImportError as exc:
        name = getattr(exc, "name", None) or str(exc)
        raise StorageError(
            f"Optuna's gRPC storage proxy is not installed (no module {name!r}). {GRPC_HINT}"
        ) from exc


class TrackedGrpcStorage(_OwnerRecording, BaseHeartbeat, GrpcStorageProxy):
    """Optuna's ``GrpcStorageProxy`` with trial owners and heartbeats; see the module.

    Parameters
    ----------
    host, port
        The proxy's address.
    heartbeat : Heartbeat, optional
        Heartbeats written as :data:`HEARTBEAT_ATTR`; ``None``: none.
    owner_extra : mapping, optional
        Keys added to every owner record (a worker's number).
    listener : callable, optional
        Called with the id of each trial that starts in this process.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        heartbeat: Heartbeat | None = None,
        owner_extra: Mapping[str, Any] | None = None,
        listener: TrialStartListener | None = None,
    ) -> None:
        self._init_owner(owner_extra, listener)
        self._heartbeat = heartbeat
        self._stale_callback: RetryStaleTrial | None = (
            None if heartbeat is None else retry_callback(heartbeat.max_retry)
        )
        self._heartbeat_down = False
        # study id -> trial id -> (last beat seen, monotonic time it was first seen)
        self._watched: dict[int, dict[int, tuple[Any, float]]] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            super().__init__(host=host, port=port)

    @property
    def address(self) -> str:
        """``grpc://host:port`` of the proxy."""
        return f"grpc://{self._host}:{self._port}"

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._create_owned_trial(study_id, template_trial)

    def reconnect(self) -> None:
        """Close the gRPC channel and make a new one (it connects when next used)."""
        self.close()
        self._setup()

    # -- heartbeats ------------------------------------------------------------------------
    def get_heartbeat_interval(self) -> int | None:
        return None if self._heartbeat is None else self._heartbeat.interval

    def get_heartbeat_stale_trial_callback(self) -> RetryStaleTrial | None:
        return self._stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:
            return  # finished meanwhile (here, or failed by another worker)
        except Exception as exc:
            # Optuna's heartbeat thread ends at the first error: skip the beat instead.
            if not is_storage_outage(exc):
                raise
            if not self._heartbeat_down:
                _logger.warning(
                    "heartbeat of a running trial not recorded (gRPC proxy %s unavailable: "
                    "%s); trying again in %s s",
                    self.address,
                    redact_exception(exc).splitlines()[0],
                    self.get_heartbeat_interval(),
                )
            self._heartbeat_down = True
        else:
            self._heartbeat_down = False

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Running trials whose beat this process has seen stand still for the grace period.

        Judged by this process's monotonic clock, from the first time it saw
        each beat; trials without :data:`HEARTBEAT_ATTR` are not judged.
        """
        if self._heartbeat is None:
            return []
        now = time.monotonic()
        before = self._watched.get(study_id, {})
        watched: dict[int, tuple[Any, float]] = {}
        stale: list[int] = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None:
                continue
            seen = before.get(trial._trial_id)
            if seen is None or seen[0] != beat:
                seen = (beat, now)
            watched[trial._trial_id] = seen
            if now - seen[1] > self._heartbeat.grace_period:
                stale.append(trial._trial_id)
        self._watched[study_id] = watched
        return stale


def open_grpc_storage(
    url: str,
    *,
    heartbeat: Heartbeat | None,
    owner_extra: Mapping[str, Any] | None = None,
    listener: TrialStartListener | None = None,
    timeout: float | None = None,
) -> TrackedGrpcStorage:
    """A :class:`TrackedGrpcStorage` for ``grpc://host:port``, once the proxy answers.

    Raises
    ------
    StorageError
        If grpcio or protobuf is missing, or the URL is not ``grpc://host:port``.
    ConnectionError
        If the proxy does not answer within ``timeout`` seconds (default
        :data:`READY_TIMEOUT`; an outage: its cause is grpc's ``FutureTimeoutError``).
    """
    timeout = READY_TIMEOUT if timeout is None else timeout
    host, port = grpc_address(url)
    require_grpc()
    storage = TrackedGrpcStorage(
        host=host, port=port, heartbeat=heartbeat, owner_extra=owner_extra, listener=listener
    )
    try:
        storage.wait_server_ready(timeout=timeout)
    except ConnectionError as exc:
        storage.close()
        raise ConnectionError(
            f"no gRPC storage proxy answers at {host}:{port} within {timeout:g} s "
            "(start one with: evohpo proxy --storage URL)"
        ) from exc.__cause__
    return storage


def serve_storage(
    storage: BaseStorage,
    *,
    host: str = "127.0.0.1",
    port: int = 13000,
    max_threads: int = 10,
) -> None:
    """Serve ``storage`` with Optuna's ``run_grpc_proxy_server`` until interrupted.

    Open ``storage`` with ``open_storage(url, track=False)``: the proxy runs no
    trials, and its clients record owners and heartbeats themselves.

    Raises
    ------
    StorageError
        If grpcio or protobuf is missing, or ``host:port`` cannot be listened on.
    """
    require_grpc()
    pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="evohpo-proxy")
    served = cast("BaseStorage", _OutageMarking(storage))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.run_grpc_proxy_server(served, host=host, port=port, thread_pool=pool)
    except RuntimeError as exc:
        if "bind" not in str(exc).lower():
            raise
        raise StorageError(
            f"The gRPC storage proxy cannot listen on {host}:{port} (in use, or not an "
            "address of this machine): pass --port N with a free port."
        ) from exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class DatabaseOutage(RuntimeError):
    """A database outage, as the proxy passes it on (gRPC ``UNKNOWN``, with
    :data:`~evohpo.storage.errors.GRPC_OUTAGE_MARK` in its details)."""


class _OutageMarking:
    """The served storage, whose database outages reach clients as outages.

    Optuna's proxy passes any other error on as gRPC ``UNKNOWN`` with the
    error's message, and Optuna's ``RDBStorage`` reports a commit that failed
    because the server went away in the same words as one that failed on bad
    data. The servicer only calls the storage's methods, so wrapping them is
    enough.
    """

    def __init__(self, storage: BaseStorage) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._storage, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except Exception as exc:
                if not is_storage_outage(exc):
                    raise
                raise DatabaseOutage(f"{GRPC_OUTAGE_MARK}: {_outage_reason(exc)}") from exc

        return call


def _outage_reason(exc: BaseException) -> str:
    """The driver's words for an outage (SQLAlchemy's error), not Optuna's wrapper's."""
    from sqlalchemy.exc import DBAPIError

    for current in exception_chain(exc):
        if isinstance(current, DBAPIError):
            return error_summary(current)
    return error_summary(exc)


def check_port_free(host: str, port: int) -> None:
    """Refuse a ``host:port`` that something listens on already.

    gRPC servers bind with ``SO_REUSEPORT`` on Linux: a second proxy on a port
    would share it with the first, each answering some clients, instead of
    failing.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise StorageError(f"The gRPC storage proxy cannot listen on {host}: {exc}.") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # Connections of a proxy just stopped may linger (TIME_WAIT): they do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise StorageError(
                f"The gRPC storage proxy cannot listen on {host}:{port} ({exc.strerror}): "
                "is another proxy running there? Pass --port N with a free port."
            ) from exc


def servable(url: str) -> None:
    """Refuse a storage URL the proxy cannot serve (a journal file, another proxy)."""
    kind = storage_kind(url)
    if kind == "journal":
        raise StorageError(
            f"Optuna's gRPC storage proxy cannot serve the journal file {describe_storage(url)!r} "
            "(optuna/optuna#6084): serve a SQLite, PostgreSQL or MySQL storage."
        )
    if kind == "grpc":
        raise StorageError(
            f"{describe_storage(url)!r} is a gRPC proxy already: serve the database it serves."
        )
