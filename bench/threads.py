"""Where more torch threads pay: one network trained with 1 and with N threads.

For each network (dense ones of growing size at several batch sizes, then
convolutional genomes drawn at random from ``SearchSpace(input_shape=...)``),
``train_classifier`` on digits (1,200 training rows, 8 epochs, early stopping
off) with one torch thread and with ``--threads`` threads, alternating, the
best of ``--repeats``. Reported: seconds each way, the ratio, the network's
multiply-adds per row ("conv" for a convolutional genome) and whether
:func:`evohpo.training.cost.arithmetic_bound` gives it the threads (the line
the trainers use under a thread budget).

Usage::

    python bench/threads.py                 # 1 vs 2 threads
    python bench/threads.py --threads 4 --repeats 5
    python bench/threads.py --fast          # a few networks, 2 epochs (smoke test)
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, markdown_table, write_csv

import evohpo
from evohpo import Genome
from evohpo.training.config import TrainConfig
from evohpo.training.cost import arithmetic_bound, dense_macs
from evohpo.training.loop import train_classifier
from evohpo.training.threads import torch_threads

DENSE = [
    ((64,), 32),
    ((128,), 64),
    ((256,), 128),
    ((256, 256), 32),
    ((256, 256), 128),
    ((384, 128), 128),
    ((512, 512), 64),
    ((512, 512, 512), 64),
]


def dense_genome(units: tuple[int, ...], batch: int) -> Genome:
    return Genome.from_dict(
        {
            "schema_version": 1,
            "layers": [{"units": u, "activation": "relu", "dropout": 0.1} for u in units],
            "optimizer": "adamw",
            "learning_rate": 1e-3,
            "weight_decay": 1e-4,
            "batch_size": batch,
        }
    )


def conv_genomes(n: int, shape: tuple[int, ...], seed: int) -> list[Genome]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    space = evohpo.SearchSpace(input_shape=shape)
    return [evohpo.suggest_genome(study.ask(), space) for _ in range(n)]


def timed(genome: Genome, data: tuple[np.ndarray, ...], threads: int, **kw: Any) -> float:
    with torch_threads(threads):
        started = time.perf_counter()
        train_classifier(genome, *data, n_classes=10, **kw)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--conv", type=int, default=8, help="convolutional genomes per shape")
    parser.add_argument("--fast", action="store_true")
    args = parser.parse_args()
    epochs = 2 if args.fast else 8
    X, y = load_digits(return_X_y=True)
    X = ((X - X.mean(0)) / (X.std(0) + 1e-8)).astype(np.float32)
    data = (X[:1200], y[:1200], X[1200:], y[1200:])
    config = TrainConfig(max_epochs=epochs, patience=epochs + 1, device="cpu", seed=0)
    cases: list[tuple[str, Genome, tuple[int, ...] | None]] = [
        (f"dense {'x'.join(map(str, units))}, batch {batch}", dense_genome(units, batch), None)
        for units, batch in (DENSE[:2] + DENSE[-1:] if args.fast else DENSE)
    ]
    n_conv = 1 if args.fast else args.conv
    for shape in ((1, 8, 8), (1, 64)):
        for i, genome in enumerate(conv_genomes(n_conv, shape, seed=3)):
            cases.append((f"conv {shape} #{i}", genome, shape))
    print(f"# threads, 1 vs {args.threads}, {date.today()}, {machine()}")
    timed(cases[0][1], data, 1, config=config)  # warm-up: first optimizer, allocator
    rows = []
    for name, genome, shape in cases:
        times: dict[int, list[float]] = {1: [], args.threads: []}
        for _ in range(args.repeats):
            for threads in times:
                times[threads].append(
                    timed(genome, data, threads, config=config, input_shape=shape)
                )
        one, many = min(times[1]), min(times[args.threads])
        rows.append(
            {
                "network": name,
                "dense MACs/row": "conv" if shape else dense_macs(genome, 64, 10),
                "gets the budget": arithmetic_bound(genome, 64, 10),
                "1 thread s": round(one, 3),
                f"{args.threads} threads s": round(many, 3),
                "ratio": round(many / one, 2),
            }
        )
        print(rows[-1], flush=True)
    for kind in ("dense", "conv"):
        group = [r for r in rows if r["network"].startswith(kind)]
        one = sum(r["1 thread s"] for r in group)
        many = sum(r[f"{args.threads} threads s"] for r in group)
        print(f"{kind}: total {one:.2f} s vs {many:.2f} s, ratio {many / one:.2f}")
    print(f"torch {torch.__version__}")
    write_csv("threads.csv", rows)
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
