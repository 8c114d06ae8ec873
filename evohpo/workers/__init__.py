"""Worker processes that share one storage: the worker loop, the pool, dead-worker recovery."""

from __future__ import annotations

from evohpo.workers.worker import (
    Backoff,
    Heartbeat,
    WorkerPool,
    WorkerReport,
    WorkerSpec,
    run_worker,
    run_workers,
)

__all__ = [
    "Backoff",
    "Heartbeat",
    "WorkerPool",
    "WorkerReport",
    "WorkerSpec",
    "run_worker",
    "run_workers",
]
