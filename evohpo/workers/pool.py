"""A pool of worker processes on one study: :class:`WorkerPool` and :func:`run_workers`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing.connection
import os
import pickle
import signal
import subprocess
import time
from collections.abc import Callable
from typing import BinaryIO

import optuna

from evohpo._interrupt import GracefulStop
from evohpo._redact import redact_exception, redact_text
from evohpo._validation import check_float, check_int
from evohpo.exceptions import WorkerError
from evohpo.storage import close_storage, open_storage, recover_orphaned_trials
from evohpo.workers.process import THREAD_VARIABLES, Launch, launch_header, spawn
from evohpo.workers.spec import WorkerReport, WorkerSpec
from evohpo.workers.worker import run_worker

__all__ = ["WorkerPool", "run_workers"]

_logger = logging.getLogger("evohpo")


def default_threads(n_workers: int) -> int:
    """Torch threads of each of ``n_workers`` workers on this machine: the CPUs shared out."""
    return max(1, (os.cpu_count() or 1) // n_workers)


class WorkerPool:
    """Worker processes on one study; see :func:`run_workers`.

    Each worker is a new Python interpreter (not forked, which is unsafe once
    torch has started its threads): it reads the pickled spec from a pipe and
    sends its :class:`WorkerReport` back through another. Unlike
    :mod:`multiprocessing`'s spawn, it runs the calling script again only when
    the spec names something defined in it (then, as there, the script needs
    an ``if __name__ == "__main__"`` guard); factories from modules, such as
    the estimator's and the study files', need none.

    Parameters
    ----------
    spec : WorkerSpec
    n_workers : int
        Processes to start.
    threads_per_worker : int, optional
        Intra-op threads of each process (``OMP_NUM_THREADS`` and friends,
        ``torch.set_num_threads``); by default the CPU count divided by
        ``n_workers``, at least 1.
    log_level : int, optional
        Level of the workers' ``"evohpo"`` loggers (they log on standard
        error); by default the effective level of this process's.

    Examples
    --------
    ``with WorkerPool(spec, 4) as pool: reports = pool.join()``; the pool
    stops the processes still running when the block is left early.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        n_workers: int,
        *,
        threads_per_worker: int | None = None,
        log_level: int | None = None,
    ) -> None:
        check_int(n_workers, "n_workers", "WorkerPool", low=1)
        if threads_per_worker is None:
            threads_per_worker = default_threads(n_workers)
        check_int(threads_per_worker, "threads_per_worker", "WorkerPool", low=1)
        self.spec = spec
        if log_level is None:
            log_level = logging.getLogger("evohpo").getEffectiveLevel()
        level = log_level
        env = {**os.environ, **{name: str(threads_per_worker) for name in THREAD_VARIABLES}}
        header = pickle.dumps(launch_header())
        self._processes: list[subprocess.Popen[bytes]] = []
        self._pipes: list[BinaryIO] = []
        try:
            for index in range(n_workers):
                launch = Launch(
                    spec, index, threads_per_worker, level, optuna.logging.get_verbosity()
                )
                process, pipe = spawn(header, launch, env)
                self._processes.append(process)
                self._pipes.append(pipe)
        except BaseException:
            self.terminate(grace=5.0)
            self._close_pipes()
            raise
        self._pids = [p.pid for p in self._processes]
        self._reports: dict[int, WorkerReport] = {}
        self._done: set[int] = set()

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers, by index."""
        return list(self._pids)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if any(p.poll() is None for p in self._processes):
            self.terminate()
        self.join()

    def terminate(self, grace: float = 30.0) -> None:
        """Ask running workers to stop (SIGTERM: their running trial fails), then kill."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        end = time.monotonic() + grace
        for process in self._processes:
            try:
                process.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def join(self, timeout: float | None = None) -> list[WorkerReport]:
        """Wait for every worker; their reports by index.

        A worker killed before it could report (SIGKILL, out of memory) gets
        a report with its negative exit code and an ``error``.

        Raises
        ------
        TimeoutError
            If workers are still running after ``timeout`` seconds.
        """
        end = None if timeout is None else time.monotonic() + timeout
        pending = [i for i in range(len(self._processes)) if i not in self._done]
        while pending:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"{len(pending)} worker(s) still running after {timeout} s")
            # A worker's pipe becomes readable when it reports or dies.
            ready = multiprocessing.connection.wait(
                [self._pipes[i].fileno() for i in pending], left
            )
            for i in list(pending):
                if self._pipes[i].fileno() in ready:
                    self._receive(i)
                    self._processes[i].wait()
                    self._done.add(i)
                    pending.remove(i)
        self._close_pipes()
        return [self._final_report(i) for i in range(len(self._processes))]

    def _receive(self, index: int) -> None:
        """Read the report a worker sends, if it sent one (the pipe reads to its end)."""
        pipe = self._pipes[index]
        try:
            data = pipe.read()
        except OSError:
            return
        if data:
            with contextlib.suppress(Exception):  # a report cut short by a kill
                report = pickle.loads(data)
                if isinstance(report, WorkerReport):
                    self._reports[index] = dataclasses.replace(report, index=index)

    def _close_pipes(self) -> None:
        for pipe in self._pipes:
            pipe.close()

    def _final_report(self, index: int) -> WorkerReport:
        process = self._processes[index]
        report = self._reports.get(index)
        if report is None:
            code = process.returncode
            if code is not None and code < 0:
                try:
                    what = f"killed by {signal.Signals(-code).name}"
                except ValueError:
                    what = f"killed by signal {-code}"
            else:
                what = f"exited with status {code} without a report"
            return WorkerReport(index, self._pids[index], exitcode=code, error=what)
        return dataclasses.replace(report, exitcode=process.returncode)


def run_workers(
    spec: WorkerSpec,
    n_workers: int,
    *,
    threads_per_worker: int | None = None,
    timeout: float | None = None,
    on_wait: Callable[[], None] | None = None,
    wait_interval: float = 1.0,
    log_level: int | None = None,
    in_this_process: bool = False,
    guard: GracefulStop | None = None,
) -> list[WorkerReport]:
    """Run ``n_workers`` workers on one study and wait for them.

    The study must exist (create it first, e.g. with ``optuna.create_study(...,
    load_if_exists=True)``). Processes are spawned, so ``spec`` and its
    factories must be picklable. Ctrl-C or SIGTERM stops every worker: their
    running trials are recorded as failed, finished trials are kept.

    Parameters
    ----------
    spec : WorkerSpec
    n_workers : int
        Workers, at least 1.
    threads_per_worker : int, optional
        See :class:`WorkerPool`.
    timeout : float, optional
        Seconds from the call after which workers still running are stopped
        (SIGTERM: their running trials fail) and :class:`TimeoutError` is
        raised.
    on_wait : callable, optional
        Called every ``wait_interval`` seconds while the workers run (to
        follow the study's progress, say), and after each trial of the
        worker in this process.
    wait_interval : float, default=1.0
    log_level : int, optional
        See :class:`WorkerPool`.
    in_this_process : bool, default=False
        Run the last worker in the calling process (:func:`run_worker`)
        instead of a new one, ``n_workers - 1`` processes beside it. The
        caller trains from the start, while the new processes still import
        torch, rather than waiting idle: for a short search on few cores that
        is a large share of the time. ``timeout`` then bounds the wait for the
        others once this process's worker is done (which stops by the spec's
        own ``timeout`` and ``deadline``).
    guard : GracefulStop, optional
        The installed signal guard, for the worker in this process (see
        :func:`run_worker`); waits for the others stop at once on a signal.

    Returns
    -------
    list of WorkerReport
        One per worker, by index. Workers killed from outside (SIGKILL) have
        a negative ``exitcode``; the others carry on without them.

    Raises
    ------
    WorkerError
        If a worker stopped with an error (after all workers have exited);
        the message names the worker and the error, passwords hidden.
    """
    check_int(n_workers, "n_workers", "run_workers", low=1)
    check_float(wait_interval, "wait_interval", "run_workers", low=0.0, low_open=True)
    end = None if timeout is None else time.monotonic() + timeout
    if threads_per_worker is None:
        threads_per_worker = default_threads(n_workers)
    guard = guard if guard is not None else GracefulStop()
    spawned = n_workers - 1 if in_this_process else n_workers
    own: WorkerReport | None = None
    own_error: BaseException | None = None
    pool = (
        WorkerPool(spec, spawned, threads_per_worker=threads_per_worker, log_level=log_level)
        if spawned
        else None
    )
    with pool if pool is not None else contextlib.nullcontext():
        try:
            if in_this_process:
                own, own_error = _run_here(spec, spawned, threads_per_worker, guard, on_wait)
            reports = [] if pool is None else _wait(pool, end, on_wait, wait_interval, guard)
        except (KeyboardInterrupt, TimeoutError):
            if pool is not None:
                pool.terminate()
            raise
    if own is not None:
        reports.append(own)
    errors = [r for r in reports if r.error is not None and (r.exitcode or 0) >= 0]
    killed = [r for r in reports if r.exitcode is not None and r.exitcode < 0]
    for report in killed:
        _logger.warning("worker %d (process %d): %s", report.index, report.pid, report.error)
    if killed:
        _recover_killed(spec)
    if errors:
        details = "; ".join(f"worker {r.index}: {r.error}" for r in errors)
        raise WorkerError(
            f"{len(errors)} of {n_workers} workers on study {spec.study_name!r} in "
            f"{spec.shown_storage} stopped with an error: {redact_text(details)}"
        ) from own_error
    return reports


def _recover_killed(spec: WorkerSpec) -> None:
    """Fail and re-enqueue the running trials of workers killed from outside.

    No worker of the pool is left to notice that their processes are gone (a
    worker does so when it starts), and without a heartbeat nothing else will.
    Their retries wait in the queue for the study's next run.
    """
    storage = None
    try:
        storage = open_storage(spec.storage_url)
        study = optuna.load_study(study_name=spec.study_name, storage=storage)
        recovered = recover_orphaned_trials(study, max_retry=spec.max_retry)
    except Exception as exc:  # housekeeping: the next worker to start does it too
        _logger.warning("could not fail the trials of killed workers: %s", redact_exception(exc))
        return
    finally:
        if storage is not None:
            close_storage(storage)
    if recovered:
        _logger.warning(
            "failed the running trials of killed workers and queued their retries: %s",
            ", ".join(f"#{number}" for number in recovered),
        )


def _run_here(
    spec: WorkerSpec,
    index: int,
    threads: int,
    guard: GracefulStop,
    on_wait: Callable[[], None] | None,
) -> tuple[WorkerReport, BaseException | None]:
    """The worker of the calling process: its report and, if it failed, its error.

    An error ends this worker only, as it would a worker process; the others
    finish and :func:`run_workers` raises. A signal ends them all.
    """
    callbacks = [] if on_wait is None else [lambda study, trial: on_wait()]
    started = time.monotonic()
    try:
        report = run_worker(spec, index=index, threads=threads, guard=guard, callbacks=callbacks)
        return report, None
    except Exception as exc:
        _logger.debug("worker %d (this process) failed", index, exc_info=True)
        report = WorkerReport(
            index,
            os.getpid(),
            seconds=time.monotonic() - started,
            error=redact_exception(exc),
            exitcode=1,
        )
        return report, exc


def _wait(
    pool: WorkerPool,
    end: float | None,
    on_wait: Callable[[], None] | None,
    wait_interval: float,
    guard: GracefulStop,
) -> list[WorkerReport]:
    """The pool's reports once every process has ended (``on_wait`` called meanwhile);
    :class:`TimeoutError` at ``end`` (``time.monotonic()``)."""
    with guard.interruptible():
        while True:
            left = None if end is None else max(0.0, end - time.monotonic())
            if on_wait is None:
                return pool.join(left)
            try:
                return pool.join(wait_interval if left is None else min(left, wait_interval))
            except TimeoutError:
                if left is not None and left <= wait_interval:
                    raise
                on_wait()
