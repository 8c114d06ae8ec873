"""Sampler quality on a synthetic layer-wise objective.

The objective scores a genome against a hidden target network of five
layers, each with its own width, activation and dropout, plus global
training genes. Every target layer counts equally, so the optimum needs the
right settings of the deeper layers too: parameters that exist only when the
depth is large enough (conditional parameters).

Usage::

    python bench/sampler_quality.py                 # 30 seeds, 100 and 200 trials
    python bench/sampler_quality.py --seeds 2 --trials 40   # fast mode

Thirty seeds, because the spread between seeds is large (sd about 0.1): with
ten, the standard error of a mean (about 0.03) is as large as the gaps
between the better samplers, and a change of random streams alone moves a
sampler's mean by that much.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable

import optuna
from _common import machine, markdown_table, mean_std, write_csv

from evohpo import EvoSampler, Genome, SearchSpace, suggest_genome

SPACE = SearchSpace(min_layers=1, max_layers=8, units=(8, 512))
TARGET_UNITS = (256, 128, 96, 64, 32)
TARGET_ACTIVATIONS = ("gelu", "relu", "silu", "tanh", "elu")
TARGET_DROPOUT = (0.1, 0.2, 0.3, 0.15, 0.05)


def score(genome: Genome) -> float:
    """1.0 for the target network; every target layer weighs the same."""
    total = 0.0
    for i, (units, act, drop) in enumerate(
        zip(TARGET_UNITS, TARGET_ACTIVATIONS, TARGET_DROPOUT, strict=True)
    ):
        if i >= genome.depth:
            continue
        layer = genome.layers[i]
        closeness = math.exp(-(math.log2(layer.units / units) ** 2))
        closeness *= 1.0 if layer.activation == act else 0.4
        closeness *= 1.0 - abs(layer.dropout - drop)
        total += closeness
    layers = total / len(TARGET_UNITS)
    extra = max(0, genome.depth - len(TARGET_UNITS))
    globals_ = math.exp(-((math.log10(genome.learning_rate) - math.log10(3e-3)) ** 2))
    globals_ *= 1.0 if genome.optimizer == "adamw" else 0.6
    globals_ *= 1.0 if genome.batch_size == 64 else 0.8
    return layers * (0.85**extra) * (0.5 + 0.5 * globals_)


def objective(trial: optuna.Trial) -> float:
    return score(suggest_genome(trial, SPACE))


SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "EvoSampler": lambda seed: EvoSampler(seed=seed),
    "NSGAIISampler": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
    "RandomSampler": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "TPESampler": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "TPESampler(multivariate, group)": lambda seed: optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    checkpoints = sorted({args.trials // 2, args.trials})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

    rows = []
    for name, factory in SAMPLERS.items():
        bests: dict[int, list[float]] = {c: [] for c in checkpoints}
        start = time.perf_counter()
        for seed in range(args.seeds):
            study = optuna.create_study(direction="maximize", sampler=factory(seed))
            study.optimize(objective, n_trials=args.trials)
            values = [t.value for t in study.trials if t.value is not None]
            for c in checkpoints:
                bests[c].append(max(values[:c]))
        elapsed = time.perf_counter() - start
        row: dict[str, object] = {"sampler": name}
        for c in checkpoints:
            row[f"best after {c} (mean ± sd)"] = mean_std(bests[c])
        row["seconds per run"] = f"{elapsed / args.seeds:.1f}"
        rows.append(row)
        print(f"done: {name}", flush=True)
    print(f"\nsynthetic layer-wise objective (max 1.0), {args.seeds} seeds, {machine()}\n")
    print(markdown_table(rows))
    print(f"\nCSV: {write_csv('sampler_quality.csv', rows)}")


if __name__ == "__main__":
    main()
