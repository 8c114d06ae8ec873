"""A stack's hand-written training pass against autograd's, and a stack of one against
the solo trainer.

Two tables, on digits (a fixed 1400/397 split, standardised), one torch thread,
``--epochs`` epochs with early stopping off, each row the median of
``--repeats`` runs, the two ways alternating within one process so that a change in
the machine's load hits both alike:

1. **Training pass.** ``train_population`` over a few populations of small dense
   networks, once with :meth:`DenseStack.train_step` (the forward pass, the loss's
   gradient and the backward pass written out with the kernels autograd runs) and
   once with the same step through autograd (``forward``, the task's
   ``member_losses``, ``backward``), which is how stacks trained before.
2. **A lone network.** One genome through ``train_population`` as a stack of one
   (``min_stack=1``, the default) against ``min_stack=2``, where it trains alone
   with ``train_classifier`` (an ``nn.Sequential``, autograd and the flat
   optimizer step). On the CPU, networks of more than ``CPU_STACK_MAX_MACS``
   multiply-adds per row train alone either way; ``--device cuda`` stacks them.

Usage::

    python bench/training_pass.py
    python bench/training_pass.py --fast
    python bench/training_pass.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, markdown_table, write_csv

from evohpo.evolution.genome import Genome, LayerGene
from evohpo.training.config import TrainConfig
from evohpo.training.population import train_population
from evohpo.training.stack_model import DenseStack
from evohpo.training.task import Task

HAND_WRITTEN = DenseStack.train_step


def autograd_step(
    self: DenseStack, x: torch.Tensor, target: torch.Tensor, task: Task, dropout: torch.Generator
) -> torch.Tensor:
    """The stack's training pass through autograd, as stacks trained before."""
    outputs = self.forward(x, dropout=dropout)
    losses = task.member_losses(outputs, target, self.size)
    self.grads.zero_()
    self.backward(losses.sum())
    return losses.detach()


def genome(
    units: Sequence[int],
    activations: str | Sequence[str] = "relu",
    dropout: float = 0.0,
    batch: int = 32,
    optimizer: str = "adam",
) -> Genome:
    names = [activations] * len(units) if isinstance(activations, str) else list(activations)
    layers = tuple(LayerGene(u, a, dropout) for u, a in zip(units, names, strict=True))
    return Genome(layers, optimizer, 1e-3, 0.0, batch)


POPULATIONS: dict[str, list[Genome]] = {
    "2 x 1x32/1x16, relu/tanh, b32": [genome((32,)), genome((16,), "tanh")],
    "4 x 64-48 relu, b32": [genome((64, 48))] * 4,
    "4 x 64-48 relu/tanh/gelu/elu, dropout 0.2, b32": [
        genome((64, 48), a, 0.2) for a in ("relu", "tanh", "gelu", "elu")
    ],
    "2 x 2x64 relu, b64": [genome((64, 64), batch=64)] * 2,
    "8 x 1x64 relu, b32": [genome((64,))] * 8,
    "4 x 2x256 relu, b128": [genome((256, 256), batch=128)] * 4,
}

LONE: dict[str, Genome] = {
    "1x64 relu, b32": genome((64,)),
    "2x64 tanh, dropout 0.2, b32": genome((64, 64), "tanh", 0.2),
    "1x32 gelu, b64, sgd": genome((32,), "gelu", batch=64, optimizer="sgd"),
    "2x256 relu, b128": genome((256, 256), batch=128),
    "3x512 relu, b64": genome((512, 512, 512), batch=64),
}


def digits() -> tuple[np.ndarray, ...]:
    X, y = load_digits(return_X_y=True)
    X = ((X - X.mean(axis=0)) / (X.std(axis=0) + 1e-6)).astype(np.float32)
    return X[:1400], y[:1400], X[1400:], y[1400:]


def timed(run: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    run()  # reads the validation results back each epoch: synchronised
    return time.perf_counter() - started


def compare(
    ways: dict[str, Callable[[], Any]], device: torch.device, repeats: int
) -> dict[str, float]:
    """Median seconds of each way, the ways alternating, after one warm-up of each."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for run in ways.values():
        timed(run, device)
    for _ in range(repeats):
        for name, run in ways.items():
            times[name].append(timed(run, device))
    return {name: statistics.median(values) for name, values in times.items()}


def table_row(label: str, name: str, seconds: dict[str, float]) -> dict[str, Any]:
    """A row of milliseconds for the two ways and the second's ratio to the first (printed)."""
    (base, base_s), (new, new_s) = seconds.items()
    row = {
        label: name,
        f"{base} ms": round(base_s * 1e3),
        f"{new} ms": round(new_s * 1e3),
        "ratio": round(new_s / base_s, 2),
    }
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--fast", action="store_true", help="two rows each, 1 epoch, 1 repeat")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    epochs, repeats = (1, 1) if args.fast else (args.epochs, args.repeats)
    populations = dict(list(POPULATIONS.items())[:2]) if args.fast else POPULATIONS
    lone = dict(list(LONE.items())[:2]) if args.fast else LONE
    data = digits()
    print(
        f"# training pass, {date.today()}, {machine()}, torch {torch.__version__}, {device}, "
        f"{epochs} epochs, median of {repeats}",
        flush=True,
    )

    def train(genomes: Sequence[Genome], min_stack: int = 1) -> Callable[[], Any]:
        configs = [
            TrainConfig(max_epochs=epochs, patience=None, device=device, seed=seed)
            for seed in range(len(genomes))
        ]

        def run() -> Any:
            return train_population(
                genomes, *data, n_classes=10, configs=configs, min_stack=min_stack
            )

        return run

    def with_step(step: Callable[..., torch.Tensor], run: Callable[[], Any]) -> Callable[[], Any]:
        def patched() -> Any:
            DenseStack.train_step = step  # type: ignore[method-assign]
            try:
                return run()
            finally:
                DenseStack.train_step = HAND_WRITTEN  # type: ignore[method-assign]

        return patched

    pass_rows = []
    for name, genomes in populations.items():
        run = train(genomes)
        ways = {"autograd": with_step(autograd_step, run), "hand-written": run}
        pass_rows.append(table_row("population", name, compare(ways, device, repeats)))

    lone_rows = []
    for name, member in lone.items():
        ways = {"train_classifier": train([member], min_stack=2), "stack of one": train([member])}
        lone_rows.append(table_row("network", name, compare(ways, device, repeats)))

    print(f"\ntrain_population, hand-written training pass against autograd's ({device})\n")
    print(markdown_table(pass_rows))
    print(f"\none network: a stack of one against train_classifier ({device})\n")
    print(markdown_table(lone_rows))
    suffix = "_fast" if args.fast else ""
    print(f"\nCSV: {write_csv(f'training_pass{suffix}.csv', pass_rows)}")
    print(f"CSV: {write_csv(f'training_pass_lone{suffix}.csv', lone_rows)}")


if __name__ == "__main__":
    main()
