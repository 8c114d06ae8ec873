"""The storage layer: URLs, the one opener, Optuna's storage internals, trial ownership.

Modules, one job each:

* :mod:`~evohpo.storage.urls`: which storage a URL or path names, its file,
  how to show it with its password hidden;
* :mod:`~evohpo.storage.opener`: :func:`open_storage` and
  :func:`close_storage`, used by every caller;
* :mod:`~evohpo.storage.records`: the trial states that count and the
  attribute names evohpo records on trials;
* :mod:`~evohpo.storage.retry`: heartbeats and the retry of a dead
  process's trial;
* :mod:`~evohpo.storage.ownership`: who runs a trial, and recovering the
  trials of killed processes when a run, a worker or a fit starts;
* :mod:`~evohpo.storage.tracked`: the storage classes that record owners;
* :mod:`~evohpo.storage.errors` and :mod:`~evohpo.storage.drivers`: outages,
  missing database drivers;
* :mod:`~evohpo.storage.internals`: every access to Optuna's private storage API.
"""

from __future__ import annotations

from evohpo.storage.errors import exception_chain, is_storage_outage
from evohpo.storage.opener import close_storage, open_storage
from evohpo.storage.ownership import owner_is_gone, owner_record, recover_orphaned_trials
from evohpo.storage.records import (
    COUNTED_STATES,
    FAIL_REASON_ATTR,
    OWNER_ATTR,
    count_trials,
)
from evohpo.storage.retry import DEFAULT_HEARTBEAT, Heartbeat
from evohpo.storage.urls import (
    JOURNAL_PREFIX,
    describe_storage,
    resolve_storage_url,
    storage_file,
    storage_kind,
)

__all__ = [
    "COUNTED_STATES",
    "DEFAULT_HEARTBEAT",
    "FAIL_REASON_ATTR",
    "JOURNAL_PREFIX",
    "OWNER_ATTR",
    "Heartbeat",
    "close_storage",
    "count_trials",
    "describe_storage",
    "exception_chain",
    "is_storage_outage",
    "open_storage",
    "owner_is_gone",
    "owner_record",
    "recover_orphaned_trials",
    "resolve_storage_url",
    "storage_file",
    "storage_kind",
]
