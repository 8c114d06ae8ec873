"""Worker processes that share one storage: the worker loop, the pool, dead-worker recovery.

* :mod:`~evohpo.workers.spec`: :class:`WorkerSpec`, :class:`Backoff`,
  :class:`WorkerReport`;
* :mod:`~evohpo.workers.worker`: :func:`run_worker`, the loop, and the rules
  (budget, failed training, dead workers, outages);
* :mod:`~evohpo.workers.tracker`: the trials a worker started, settled after
  an outage;
* :mod:`~evohpo.workers.process`: one worker process, started and run;
* :mod:`~evohpo.workers.pool`: :class:`WorkerPool` and :func:`run_workers`;
* :mod:`~evohpo.workers.dask`: :func:`run_dask_workers`, the workers as
  tasks on a Dask cluster (evohpo's ``dask`` extra).

Trial ownership and the recovery of dead processes' trials belong to the
storage layer (:mod:`evohpo.storage.ownership`), which study files and the
estimator share.
"""

from __future__ import annotations

from evohpo.storage import Heartbeat
from evohpo.workers.dask import run_dask_workers
from evohpo.workers.pool import WorkerPool, run_workers
from evohpo.workers.spec import Backoff, WorkerReport, WorkerSpec
from evohpo.workers.worker import run_worker

__all__ = [
    "Backoff",
    "Heartbeat",
    "WorkerPool",
    "WorkerReport",
    "WorkerSpec",
    "run_dask_workers",
    "run_worker",
    "run_workers",
]
