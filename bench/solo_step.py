"""One network's optimizer step: the flat rule against torch.optim.

Two tables. First the optimizer step alone (``step()`` on gradients already
there, the median of ``--repeats`` runs of 300 steps), for dense networks of
growing size on digits' 64 features and every optimizer: torch's optimizer as
:func:`evohpo.training.nn.build_optimizer` makes it (fused kernels for sgd,
adam and adamw) against :class:`evohpo.training.flat.FlatParameters` with its
:class:`~evohpo.training.stack_optimizer.StackOptimizer`. This is where
:data:`evohpo.training.flat.FLAT_STEP_MAX_PARAMS` comes from.

Then the same for a stack's rows (the stacked trainer's two ways to step k
members of P parameters each): the rule over the whole ``[k, P]`` tensor
(:class:`~evohpo.training.stack_optimizer.StackOptimizer`) against torch's
fused optimizer on each row
(:class:`~evohpo.training.stack_optimizer.RowOptimizer`), which is where
:data:`~evohpo.training.stack_optimizer.ROW_STEP_THRESHOLD` comes from.

Then whole trainings: ``train_classifier`` on digits (1,200 training rows, 8
epochs, early stopping off) of networks drawn at random from the default
``SearchSpace()`` (seed 0), with the trainer's own choice (the flat rule up to
the line) and with ``torch.optim`` for every network, alternating, the best of
``--repeats``. One torch thread throughout, on ``--device`` (the CPU by default).

Usage::

    python bench/solo_step.py
    python bench/solo_step.py --genomes 24 --repeats 5
    python bench/solo_step.py --fast        # a few networks (smoke test)
    python bench/solo_step.py --device cuda     # on a GPU (timings synchronised)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import numpy as np
import optuna
import torch
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, markdown_table, write_csv

import evohpo
import evohpo.training.flat as flat_module
from evohpo import Genome
from evohpo.training.config import TrainConfig
from evohpo.training.flat import FlatParameters
from evohpo.training.loop import train_classifier
from evohpo.training.nn import OPTIMIZERS, build_model, build_optimizer, count_parameters
from evohpo.training.stack_optimizer import RowOptimizer, StackOptimizer

CPU = torch.device("cpu")
STACK_ROWS = [9_000, 20_000, 32_000, 45_000, 70_000]
STACK_SIZES = [4, 16]
STEP_NETWORKS = [(32,), (64, 64), (128, 64), (256, 128), (256, 256), (384, 256), (512, 512)]


def dense_genome(units: tuple[int, ...], optimizer: str) -> Genome:
    return Genome.from_dict(
        {
            "schema_version": 1,
            "layers": [{"units": u, "activation": "relu", "dropout": 0.0} for u in units],
            "optimizer": optimizer,
            "learning_rate": 1e-3,
            "weight_decay": 1e-4,
            "batch_size": 32,
        }
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(step: Callable[[], object], steps: int, device: torch.device = CPU) -> float:
    """Seconds per call of ``step``, after 20 calls of warm-up (on CUDA, to the last kernel)."""
    for _ in range(20):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def step_seconds(genome: Genome, flat: bool, steps: int = 300, device: torch.device = CPU) -> float:
    """Seconds per ``step()`` of one network's optimizer."""
    model = build_model(genome, 64, 10, seed=0).to(device)
    if flat:
        parameters = FlatParameters(model)
        optimizer = parameters.optimizer(genome)
        parameters.grads.normal_(0.0, 0.01)
    else:
        optimizer = build_optimizer(genome, model.parameters())
        for parameter in model.parameters():
            parameter.grad = torch.randn_like(parameter) * 0.01
    return seconds_per_step(optimizer.step, steps, device)


def stack_step_seconds(
    kind: type, k: int, n_params: int, optimizer: str, steps: int, device: torch.device = CPU
) -> float:
    """Seconds per ``step()`` of ``kind`` over k rows of ``n_params`` parameters."""
    generator = torch.Generator().manual_seed(0)
    params = torch.randn(k, n_params, generator=generator).to(device)
    grads = torch.randn(k, n_params, generator=generator).to(device) * 0.01
    stepper = kind(params, grads, [optimizer] * k, [1e-3] * k, [1e-4] * k)
    return seconds_per_step(stepper.step, steps, device)


@contextmanager
def torch_optim_always() -> Iterator[None]:
    """The trainer steps every network with torch.optim (the code before the flat rule)."""
    line = flat_module.FLAT_STEP_MAX_PARAMS
    flat_module.FLAT_STEP_MAX_PARAMS = 0
    try:
        yield
    finally:
        flat_module.FLAT_STEP_MAX_PARAMS = line


def search_genomes(n: int, seed: int) -> list[Genome]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [evohpo.suggest_genome(study.ask(), evohpo.SearchSpace()) for _ in range(n)]


def training_seconds(genome: Genome, data: tuple[np.ndarray, ...], config: TrainConfig) -> float:
    started = time.perf_counter()
    train_classifier(genome, *data, n_classes=10, config=config)  # reads results back: synced
    return time.perf_counter() - started


def describe(genome: Genome) -> str:
    units = "x".join(str(layer.units) for layer in genome.layers)
    return f"{units} {genome.optimizer} b{genome.batch_size}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genomes", type=int, default=16, help="networks drawn for training")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    print(
        f"# one network's optimizer step, {date.today()}, {machine()}, torch {torch.__version__}, "
        f"{device}"
    )

    step_rows = []
    networks = STEP_NETWORKS[:2] if args.fast else STEP_NETWORKS
    for units in networks:
        for optimizer in OPTIMIZERS:
            genome = dense_genome(units, optimizer)
            times = {False: [], True: []}
            for _ in range(args.repeats):
                for flat in times:
                    steps = 30 if args.fast else 300
                    times[flat].append(step_seconds(genome, flat, steps, device))
            torch_us = statistics.median(times[False]) * 1e6
            flat_us = statistics.median(times[True]) * 1e6
            step_rows.append(
                {
                    "network": "x".join(map(str, units)),
                    "parameters": count_parameters(build_model(genome, 64, 10, seed=0)),
                    "optimizer": optimizer,
                    "torch.optim us": round(torch_us, 1),
                    "flat us": round(flat_us, 1),
                    "ratio": round(flat_us / torch_us, 2),
                }
            )
            print(step_rows[-1], flush=True)

    stack_rows = []
    for n_params in STACK_ROWS[:1] if args.fast else STACK_ROWS:
        for k in STACK_SIZES:
            for optimizer in ("sgd", "adam", "rmsprop"):
                times = {RowOptimizer: [], StackOptimizer: []}
                for _ in range(args.repeats):
                    for kind in times:
                        seconds = stack_step_seconds(
                            kind, k, n_params, optimizer, 30 if args.fast else 200, device
                        )
                        times[kind].append(seconds)
                rows_us = statistics.median(times[RowOptimizer]) * 1e6
                whole_us = statistics.median(times[StackOptimizer]) * 1e6
                stack_rows.append(
                    {
                        "parameters per member": n_params,
                        "k": k,
                        "optimizer": optimizer,
                        "torch.optim per row us": round(rows_us, 1),
                        "whole stack us": round(whole_us, 1),
                        "ratio": round(whole_us / rows_us, 2),
                    }
                )
                print(stack_rows[-1], flush=True)

    X, y = load_digits(return_X_y=True)
    X = ((X - X.mean(0)) / (X.std(0) + 1e-8)).astype(np.float32)
    data = (X[:1200], y[:1200], X[1200:], y[1200:])
    epochs = 2 if args.fast else 8
    config = TrainConfig(max_epochs=epochs, patience=epochs + 1, device=device, seed=0)
    genomes = search_genomes(3 if args.fast else args.genomes, seed=0)
    training_seconds(genomes[0], data, config)  # warm-up
    with torch_optim_always():
        training_seconds(genomes[0], data, config)
    train_rows = []
    for genome in genomes:
        times = {"torch": [], "trainer": []}
        for _ in range(args.repeats):
            with torch_optim_always():
                times["torch"].append(training_seconds(genome, data, config))
            times["trainer"].append(training_seconds(genome, data, config))
        n_params = count_parameters(build_model(genome, 64, 10, seed=0))
        before, after = min(times["torch"]), min(times["trainer"])
        train_rows.append(
            {
                "network": describe(genome),
                "parameters": n_params,
                "flat": n_params <= flat_module.FLAT_STEP_MAX_PARAMS,
                "torch.optim s": round(before, 3),
                "trainer s": round(after, 3),
                "ratio": round(after / before, 2),
            }
        )
        print(train_rows[-1], flush=True)
    total_before = sum(r["torch.optim s"] for r in train_rows)
    total_after = sum(r["trainer s"] for r in train_rows)
    flat_rows = [r for r in train_rows if r["flat"]]
    flat_before = sum(r["torch.optim s"] for r in flat_rows)
    flat_after = sum(r["trainer s"] for r in flat_rows)
    print(
        f"all networks: {total_before:.2f} s vs {total_after:.2f} s, ratio "
        f"{total_after / total_before:.2f}"
    )
    if flat_rows:
        print(
            f"flat ones ({len(flat_rows)}): {flat_before:.2f} s vs {flat_after:.2f} s, "
            f"ratio {flat_after / flat_before:.2f}"
        )
    write_csv("solo_step.csv", step_rows)
    write_csv("solo_step_stacks.csv", stack_rows)
    write_csv("solo_step_training.csv", train_rows)
    print(markdown_table(step_rows))
    print()
    print(markdown_table(stack_rows))
    print()
    print(markdown_table(train_rows))


if __name__ == "__main__":
    main()
