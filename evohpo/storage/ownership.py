"""Which process owns a running trial, and recovering the trials of dead processes.

A trial left ``RUNNING`` by a process that was killed (SIGKILL, out of
memory, power cut) would stay ``RUNNING`` forever: nothing else records its
end, and it never counts towards a budget. The rules:

Owner record
    Every storage that :func:`evohpo.storage.open_storage` opens writes, when
    a trial starts in this process (a new trial, or a waiting one taken up),
    the system attribute :data:`~evohpo.storage.records.OWNER_ATTR`: the host
    name, the process id, the process's start time (so that a process id
    reused by another process is not mistaken for the owner), the boot id and,
    for workers, the worker's number. Study files (``evohpo run``), the
    estimator and workers all open their storage that way.

Recovery at start
    When a run, a worker or an estimator fit starts on a study, every running
    trial whose owner is *gone* is failed at once (reason ``"WorkerLost:
    ..."`` in :data:`~evohpo.storage.records.FAIL_REASON_ATTR`) and re-enqueued
    with the same parameters and user attributes, hence the same genome and
    lineage (:mod:`evohpo.storage.retry`); the retry runs first, and counts
    towards the budget once finished. An owner is gone when it ran on this
    host (same host name) and either this machine has booted since, or no live
    process has its id, or the live process of that id started at another time
    (a zombie counts as gone).

Other hosts
    Trials owned by processes of other hosts are never touched by this rule:
    on RDB storages Optuna's heartbeat fails and retries them once their
    heartbeat is older than its grace period. Workers take ``stale_after``
    (seconds) to also recover running trials started longer ago than that,
    whatever their host: the only rule that sees dead processes of other
    machines on a journal file; set it above the longest trial.

Limits
    A dead process's trial is found only when a process (re)starts on the
    study, or by a heartbeat; a new trial is created with its owner record in
    one write, but a waiting trial (a retry) is taken up and then given its
    record, and one killed in between (a few milliseconds) has no owner and is
    left to heartbeats and ``stale_after``; the process start time is read from
    ``/proc`` (Linux): elsewhere a reused process id hides a death; hosts that
    share a host name and a process-id namespace would be mistaken for one;
    trial start times for ``stale_after`` come from each host's clock.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from evohpo.storage.records import OWNER_ATTR
from evohpo.storage.retry import DEFAULT_HEARTBEAT, fail_and_retry, retry_callback

__all__ = ["owner_is_gone", "owner_record", "recover_orphaned_trials"]

_logger = logging.getLogger("evohpo")


def boot_id() -> str | None:
    """This boot of the machine (Linux ``boot_id``), or ``None`` where unknown."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3 onwards of ``/proc/<pid>/stat`` (after the command name), or ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or ``None`` where unknown."""
    fields = _stat_fields(pid)
    # Field 22 of proc_pid_stat(5) is the 20th after the command name.
    if fields is None or len(fields) < 20 or not fields[19].isdigit():
        return None
    return int(fields[19])


def pid_alive(pid: int) -> bool:
    """Whether a process of id ``pid`` runs on this host (a zombie does not)."""
    if os.name != "posix":  # os.kill(pid, 0) would not be a probe elsewhere
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user
        return True
    fields = _stat_fields(pid)
    return fields is None or fields[:1] != ["Z"]


@functools.cache
def _this_process(pid: int) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "started": process_start_time(pid),
        "boot": boot_id(),
    }


def owner_record(**extra: Any) -> dict[str, Any]:
    """The owner record of this process (JSON-serialisable), with ``extra`` keys added.

    Examples
    --------
    >>> record = owner_record(worker=2)
    >>> record["pid"] == os.getpid(), record["worker"]
    (True, 2)
    """
    return {**_this_process(os.getpid()), **extra}


def owner_is_gone(record: Any) -> bool:
    """Whether the process of an owner ``record`` is known to be gone (see the module's rules).

    Records of other hosts, records this process cannot read and this
    process's own record are never gone.
    """
    if not isinstance(record, Mapping) or record.get("host") != socket.gethostname():
        return False
    boot = boot_id()
    if boot is not None and record.get("boot") not in (None, boot):
        return True
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    recorded = record.get("started")
    if not isinstance(recorded, int) or isinstance(recorded, bool):
        recorded = None  # a record without a start time: the process id decides
    if pid == os.getpid():
        current = _this_process(pid)["started"]
        return recorded is not None and current is not None and recorded != current
    if not pid_alive(pid):
        return True
    started = process_start_time(pid)
    return recorded is not None and started is not None and started != recorded


def _why_orphaned(trial: FrozenTrial, stale_after: float | None, now: datetime) -> str | None:
    record = trial.system_attrs.get(OWNER_ATTR)
    if owner_is_gone(record):
        assert isinstance(record, Mapping)
        return f"its process ({record.get('pid')} on {record.get('host')}) is gone"
    if (
        stale_after is not None
        and trial.datetime_start is not None
        and (now - trial.datetime_start).total_seconds() > stale_after
    ):
        return f"still running after {stale_after:g} s (stale_after) when a worker started"
    return None


def recover_orphaned_trials(
    study: optuna.Study,
    *,
    stale_after: float | None = None,
    max_retry: int | None = DEFAULT_HEARTBEAT.max_retry,
) -> list[int]:
    """Fail the running trials of gone processes and re-enqueue them.

    Call it when a run, a worker or a fit starts; the module's notes give the
    rule and its limits. Harmless on a study without running trials, and on
    in-memory storages (their trials have no owner record).

    Parameters
    ----------
    study : optuna.Study
    stale_after : float, optional
        Also recover the running trials started more than this many seconds
        ago, whatever their owner.
    max_retry : int or None, default=3
        Retries of one original trial (:class:`~evohpo.storage.retry.Heartbeat`).

    Returns
    -------
    list of int
        Numbers of the trials failed and re-enqueued (or failed, once out of
        retries).
    """
    retry = retry_callback(max_retry)
    now = datetime.now()
    recovered: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _why_orphaned(trial, stale_after, now)
        if reason is not None and fail_and_retry(study, trial, f"WorkerLost: {reason}", retry):
            _logger.warning("trial %d failed at start: %s", trial.number, reason)
            recovered.append(trial.number)
    return recovered
