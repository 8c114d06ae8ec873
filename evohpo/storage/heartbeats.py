"""Heartbeats of several running trials at once: :func:`beating`.

``study.optimize`` records the heartbeat of its one running trial from a
thread; a process that runs k trials at once (:mod:`evohpo.search.batched`)
must record all k, or other processes would take them for trials of a dead
process once the grace period passes.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat

__all__ = ["beating", "fail_stale_trials"]


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the running trials whose heartbeat stopped, as ``study.optimize`` does before
    each trial (nothing on a storage without heartbeats)."""
    storage = study._storage
    if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


@contextmanager
def beating(storage: BaseStorage, trial_ids: Sequence[int]) -> Iterator[None]:
    """Record the heartbeat of every trial in ``trial_ids`` while the block runs.

    Nothing happens on a storage without heartbeats (in memory, journal files,
    an RDB storage without ``heartbeat_interval``). The first heartbeats are
    recorded before the block starts, as ``study.optimize`` does.
    """
    interval = storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None
    if interval is None or not trial_ids:
        yield
        return
    assert isinstance(storage, BaseHeartbeat)
    for trial_id in trial_ids:
        storage.record_heartbeat(trial_id)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(timeout=interval):
            for trial_id in trial_ids:
                # A storage away for a moment misses a beat; the grace period covers it.
                with contextlib.suppress(Exception):
                    storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, name="evohpo-heartbeats", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
