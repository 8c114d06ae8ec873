"""Trials per second with 1 and 2 worker processes on one study: PostgreSQL, gRPC, SQLite.

Each trial trains a real network: a 2-layer MLP (64 units per layer, batch 64,
a fixed number of epochs, no early stopping) on scikit-learn's digits, asked
for through ``suggest_genome`` and bred by the real ``EvoSampler``. The
layer sizes, batch size and epochs are fixed so that every trial costs about
the same, whatever genome the GA breeds; each worker trains with one torch
thread, so the measurement is about parallel workers, not intra-op threads.

Throughput is the number of trials completed while every worker was running
trials (from the latest first start to the earliest last completion over the
workers, by the storage's timestamps), so process start-up (imports, loading
the data) and the ragged end are not part of it; the wall time including
start-up is shown too. Both
worker counts run in the same invocation, so their ratio is measured under
the same conditions.

The ``grpc`` storage is Optuna's gRPC storage proxy (``evohpo proxy``, a
separate process on 127.0.0.1) in front of the same kind of PostgreSQL
database: its rows against the ``postgresql`` rows give the proxy's cost,
and its "vs direct" column divides by the direct PostgreSQL rate at the same
worker count. It needs evohpo's ``grpc`` extra.

Usage::

    python bench/scaling.py                     # PostgreSQL (a throwaway server), gRPC, SQLite
    python bench/scaling.py --storages postgresql,grpc
    python bench/scaling.py --storages sqlite --trials 8
    python bench/scaling.py --postgres-url postgresql://user@host/db
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from _common import machine, markdown_table, write_csv
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
SPACE_SETTINGS: dict[str, Any] = {
    "min_layers": 2,
    "max_layers": 2,
    "units": (64, 64),
    "batch_sizes": (64,),
}


def make_objective(epochs: int) -> Any:
    """A GenomeObjective on digits with a fixed cost per trial (built in each worker)."""
    from sklearn.datasets import load_digits

    from evohpo import SearchSpace
    from evohpo.search.objective import GenomeObjective
    from evohpo.training.config import TrainConfig

    X, y = load_digits(return_X_y=True)
    return GenomeObjective(
        X,
        y,
        space=SearchSpace(**SPACE_SETTINGS),
        train_config=TrainConfig(max_epochs=epochs, patience=None, device="cpu"),
        seed=0,
    )


def make_sampler() -> Any:
    from evohpo import EvoSampler, SearchSpace

    return EvoSampler(population_size=4, seed=0, search_space=SearchSpace(**SPACE_SETTINGS))


@contextmanager
def postgres(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    sys.path.insert(0, str(REPO))
    from tests._pg import PostgresServer

    with PostgresServer.running_server() as server:
        yield server.create_database()


@contextmanager
def grpc_proxy(postgres_url: str | None) -> Iterator[str]:
    """``evohpo proxy`` on a free port of 127.0.0.1 in front of a PostgreSQL database."""
    import socket
    import subprocess

    from optuna.storages import GrpcStorageProxy

    with postgres(postgres_url) as backing:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "evohpo", "proxy", "--storage", backing, "--port", str(port)],
            stdout=subprocess.DEVNULL,
            cwd=REPO,
        )
        try:
            end = time.monotonic() + 120
            while True:
                if process.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("the gRPC proxy did not start")
                try:
                    with warnings.catch_warnings():  # "experimental"
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        probe = GrpcStorageProxy(host="127.0.0.1", port=port)
                    probe.wait_server_ready(timeout=1.0)
                    probe.close()
                    break
                except ConnectionError:
                    continue
            yield f"grpc://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=60)


def measure(url: str, n_workers: int, n_trials: int, epochs: int) -> dict[str, Any]:
    from evohpo.storage import OWNER_ATTR, close_storage, open_storage
    from evohpo.workers import WorkerSpec, run_workers

    name = f"scaling-{n_workers}"
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name=name, direction="maximize")
    spec = WorkerSpec(
        study_name=name,
        storage_url=url,
        objective_factory=functools.partial(make_objective, epochs),
        sampler_factory=make_sampler,
        pruner_factory=optuna.pruners.NopPruner,
        n_trials=n_trials,
    )
    started = time.perf_counter()
    run_workers(spec, n_workers, threads_per_worker=1)
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name=name, storage=storage)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    # The window in which every worker was running trials: from the latest first
    # start to the earliest last completion over the workers.
    by_worker: dict[int, list[Any]] = {}
    for trial in done:
        by_worker.setdefault(trial.system_attrs[OWNER_ATTR]["pid"], []).append(trial)
    begin = max(min(t.datetime_start for t in ts) for ts in by_worker.values())
    end = min(max(t.datetime_complete for t in ts) for ts in by_worker.values())
    inside = [t for t in done if begin < t.datetime_complete <= end]
    busy = (end - begin).total_seconds()
    close_storage(storage)
    return {
        "trials": len(done),
        "counted": len(inside),
        "seconds": busy,
        "rate": len(inside) / busy,
        "wall": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per worker (default 16)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per trial (default 30)")
    parser.add_argument(
        "--storages",
        default="postgresql,grpc,sqlite",
        help="comma-separated: postgresql, grpc (a proxy in front of PostgreSQL), sqlite",
    )
    parser.add_argument("--postgres-url", help="use this database instead of a throwaway one")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("evohpo").setLevel(logging.WARNING)

    load = os.getloadavg()[0]
    if load > 0.5:
        print(
            f"warning: load average {load:.2f} before the run; other processes on this "
            "machine distort the ratio",
            file=sys.stderr,
        )
    rows: list[dict[str, Any]] = []
    direct: dict[int, float] = {}  # PostgreSQL trials/s by workers, for the gRPC rows
    for kind in [s.strip() for s in args.storages.split(",") if s.strip()]:
        with tempfile.TemporaryDirectory() as tmp:
            context = (
                postgres(args.postgres_url)
                if kind == "postgresql"
                else grpc_proxy(args.postgres_url)
                if kind == "grpc"
                else _fixed(f"sqlite:///{Path(tmp) / 'scaling.db'}")
            )
            with context as url:
                results = {n: measure(url, n, n * args.trials, args.epochs) for n in (1, 2)}
        base = results[1]["rate"]
        if kind == "postgresql":
            direct = {n: result["rate"] for n, result in results.items()}
        for n, result in results.items():
            versus = direct.get(n) if kind == "grpc" else None
            rows.append(
                {
                    "storage": kind,
                    "workers": n,
                    "trials": result["trials"],
                    "measured": f"{result['counted']} in {result['seconds']:.1f} s",
                    "wall s (with start-up)": f"{result['wall']:.1f}",
                    "trials/s": f"{result['rate']:.3f}",
                    "vs 1 worker": f"{result['rate'] / base:.2f}x",
                    "vs direct": "" if versus is None else f"{result['rate'] / versus:.2f}x",
                }
            )
            print(f"{kind}, {n} worker(s): {result['rate']:.3f} trials/s", file=sys.stderr)
    print(f"# Worker scaling ({machine()})\n")
    print(
        f"{args.trials} trials per worker, {args.epochs} epochs each, digits, "
        f"1 torch thread per worker; load average before the run {load:.2f}\n"
    )
    print(markdown_table(rows))
    print(f"\nCSV: {write_csv('scaling.csv', rows)}")
    return 0


@contextmanager
def _fixed(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    raise SystemExit(main())
