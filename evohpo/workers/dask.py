"""A study's workers as tasks on a Dask cluster: :func:`run_dask_workers`.

Dask (``dask.distributed``) brings its own cluster launchers (SSH, Slurm,
PBS, Kubernetes, cloud VMs: ``dask-jobqueue``, ``dask-kubernetes``...). Each
of ``n_workers`` Dask tasks runs :func:`~evohpo.workers.run_worker` on the
same :class:`~evohpo.workers.WorkerSpec`, so every worker joins the one study
in the one storage the spec names, which every Dask worker must reach: a
database server, a gRPC storage proxy (``grpc://``, :mod:`evohpo.storage.grpc`)
or, on one machine or a shared file system, a SQLite or journal file. The
rules of :mod:`evohpo.workers.worker` hold unchanged: the budget is a total of
the study, a dead worker's trial is retried with the same genome, outages are
waited for.

On the cluster
    Give each Dask worker process one thread (``threads_per_worker=1``, or
    ``--nthreads 1``): one task then runs per process, training with
    ``threads`` torch threads, and a process killed takes one evohpo worker
    with it. Dask runs the task of a lost Dask worker again elsewhere (up to
    its ``allowed-failures``); the new evohpo worker recovers the lost trial
    at once on the same host, else the heartbeat does
    (:mod:`evohpo.storage.ownership`).

Stopping
    Ctrl-C or ``timeout`` sets a Dask ``Event`` that every task watches: each
    worker finishes its running trial, then stops. Dask cannot interrupt a
    running task, so a stopped worker may take one trial's time to end.

Passwords
    The spec, storage URL included, travels pickled to the scheduler and the
    Dask workers. Keep database passwords out of it: set ``PGPASSWORD`` on
    the Dask workers, or give them a ``grpc://`` URL, which has none.
"""

from __future__ import annotations

import importlib
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any

from evohpo._interrupt import GracefulStop
from evohpo._redact import redact_text
from evohpo._validation import check_float, check_int
from evohpo.exceptions import EvohpoError, WorkerError
from evohpo.storage.errors import error_summary
from evohpo.workers.spec import WorkerReport, WorkerSpec
from evohpo.workers.worker import run_worker

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["run_dask_workers"]

#: What a task's report says when it stopped on request.
STOPPED = "stopped (run_dask_workers was interrupted or timed out)"


def _distributed() -> Any:
    """The ``distributed`` module (untyped here: most of its API has no annotations)."""
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise EvohpoError(
            f"Dask's distributed scheduler is not installed (no module {exc.name!r}). "
            "Install evohpo's dask extra: pip install 'evohpo[dask]'."
        ) from exc


def dask_worker_task(
    spec: WorkerSpec, index: int, threads: int | None, stop_name: str
) -> WorkerReport:
    """One evohpo worker, as a Dask task; stops after its trial once ``stop_name`` is set."""
    dask_distributed = _distributed()
    guard = GracefulStop(force_on_repeat=False)
    client = dask_distributed.get_client()
    done = threading.Event()

    def watch() -> None:
        # A Dask Event works in the thread that made it, with an explicit client elsewhere.
        stop = dask_distributed.Event(stop_name, client=client)
        while not done.is_set():
            try:
                if stop.wait(timeout=1.0):
                    guard.requested = True
                    return
            except Exception:  # the scheduler is gone: the task will be lost anyway
                return

    watcher = threading.Thread(target=watch, name="evohpo-dask-stop", daemon=True)
    watcher.start()
    try:
        return run_worker(spec, index=index, threads=threads, guard=guard)
    except KeyboardInterrupt:
        return WorkerReport(index=index, pid=os.getpid(), exitcode=None, error=STOPPED)
    finally:
        done.set()


def run_dask_workers(
    spec: WorkerSpec,
    client: Client,
    n_workers: int,
    *,
    threads: int | None = 1,
    timeout: float | None = None,
) -> list[WorkerReport]:
    """Run ``n_workers`` evohpo workers as tasks on ``client``'s Dask cluster; wait for them.

    The study must exist in the spec's storage, as for
    :func:`~evohpo.workers.run_workers`; the spec and its factories must be
    picklable and importable on the Dask workers (module-level functions of an
    installed package, or :func:`functools.partial` of them).

    Parameters
    ----------
    spec : WorkerSpec
    client : distributed.Client
        A client of the cluster (``Client(LocalCluster(...))``,
        ``Client("tcp://scheduler:8786")``...).
    n_workers : int
        Tasks to run, at least 1: one per Dask worker thread, usually.
    threads : int or None, default=1
        Torch threads of each task's process; ``None`` leaves them alone.
    timeout : float, optional
        Seconds to wait for the workers before they are asked to stop (each
        finishes its running trial); then :class:`TimeoutError` is raised.

    Returns
    -------
    list of WorkerReport
        One per task, by index; ``pid`` is the Dask worker process's.

    Raises
    ------
    WorkerError
        If a task stopped with an error (after all of them ended); the
        message names the worker and the error, passwords hidden.
    TimeoutError
        After ``timeout``, once the workers have stopped.
    """
    check_int(n_workers, "n_workers", "run_dask_workers", low=1)
    if threads is not None:
        check_int(threads, "threads", "run_dask_workers", low=1)
    if timeout is not None:
        check_float(timeout, "timeout", "run_dask_workers", low=0.0, low_open=True)
    dask_distributed = _distributed()
    wait = dask_distributed.wait
    token = uuid.uuid4().hex[:12]
    stop_name = f"evohpo-stop-{token}"
    stop = dask_distributed.Event(stop_name, client=client)
    futures = [
        client.submit(
            dask_worker_task,
            spec,
            index,
            threads,
            stop_name,
            key=f"evohpo-worker-{index}-{token}",
            pure=False,
        )
        for index in range(n_workers)
    ]
    try:
        wait(futures, timeout=timeout)
    except BaseException:  # TimeoutError, KeyboardInterrupt: stop the tasks, then raise
        stop.set()
        wait(futures)
        raise
    finally:
        stop.set()
    reports: list[WorkerReport] = []
    errors: list[str] = []
    for index, future in enumerate(futures):
        try:
            report = future.result()
        except Exception as exc:
            message = error_summary(exc)
            report = WorkerReport(index=index, pid=0, exitcode=None, error=message)
            errors.append(f"worker {index}: {message}")
        reports.append(report)
    if errors:
        raise WorkerError(
            f"{len(errors)} of {n_workers} workers on study {spec.study_name!r} in "
            f"{spec.shown_storage} stopped with an error: {redact_text('; '.join(errors))}"
        )
    return reports
