"""What a network's training step costs, and what follows from it on the CPU.

Small dense networks are bound by torch's fixed cost per operation: a step of
a 64-unit layer at batch 32 keeps a core's matrix units a few percent busy. So
on the CPU they train with one thread (a second one gains nothing: 1.00-1.11x
the time measured) and share steps in stacks
(:mod:`evohpo.training.population`). Larger dense networks and convolutional
bodies are bound by arithmetic: a stack does not share that work, but more
threads do (with two threads instead of one: 3x512 at batch 64 0.52x the time,
384+128 at batch 128 0.74x, 16 random conv genomes on digits 0.77x in all;
docs/benchmarks.md, "Threads per network"). :func:`arithmetic_bound` draws that line.
"""

from __future__ import annotations

import itertools

from evohpo.training.spec import NetworkSpec, layer_residual, network_blocks

__all__ = ["CPU_STACK_MAX_MACS", "arithmetic_bound", "dense_macs", "skip_kinds"]

#: On the CPU, a dense network with more multiply-adds per row than this is bound by
#: arithmetic: it trains alone, not in a stack (measured on digits with one thread:
#: 2x161 1.8x faster in stacks of 8, 385+97 1.3x, 2x256 0.8-1.0x), and with more than
#: one thread where the caller allows (:func:`evohpo.training.threads.thread_budget`).
CPU_STACK_MAX_MACS = 1 << 16


def skip_kinds(genome: NetworkSpec, n_features: int) -> list[str | None]:
    """Per hidden layer: ``"identity"``, ``"projection"`` or ``None`` (a plain layer)."""
    widths = [n_features, *(layer.units for layer in genome.layers)]
    return [
        ("identity" if n_in == layer.units else "projection") if layer_residual(layer) else None
        for n_in, layer in zip(widths, genome.layers, strict=False)
    ]


def dense_macs(genome: NetworkSpec, n_features: int, n_outputs: int) -> int:
    """Multiply-adds per row of the dense layers: every layer's, and the skip projections of
    residual layers whose width changes.

    Examples
    --------
    >>> from evohpo import Genome
    >>> genome = Genome.from_dict({"schema_version": 1, "layers": [
    ...     {"units": 256, "activation": "relu", "dropout": 0.0}] * 2,
    ...     "optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 0.0, "batch_size": 64})
    >>> dense_macs(genome, 64, 10)  # 64*256 + 256*256 + 256*10
    84480
    """
    sizes = [n_features, *(layer.units for layer in genome.layers), n_outputs]
    total = sum(a * b for a, b in itertools.pairwise(sizes))
    for index, kind in enumerate(skip_kinds(genome, n_features)):
        if kind == "projection":
            total += sizes[index] * sizes[index + 1]
    return total


def arithmetic_bound(genome: NetworkSpec, n_features: int, n_outputs: int) -> bool:
    """Whether the CPU spends ``genome``'s steps on arithmetic rather than per-operation cost:
    a convolutional body, or dense layers above :data:`CPU_STACK_MAX_MACS`."""
    if network_blocks(genome) is not None:
        return True
    return dense_macs(genome, n_features, n_outputs) > CPU_STACK_MAX_MACS
