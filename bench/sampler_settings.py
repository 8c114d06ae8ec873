"""EvoSampler's settings compared on several objectives, on seeds the other benchmarks don't use.

How the defaults were chosen, and what each alternative costs. Every setting
runs on four objectives:

* ``layerwise``: the objective of ``sampler_quality.py`` (a five-layer target);
* ``second target``: a three-layer target with other widths, activations and
  globals, in a wider space;
* ``define-by-run``: a plain function with a categorical branch and
  conditional parameters (no genome), maximum 0.5;
* ``layerwise + noise``: the first with Gaussian noise of sd 0.04 on every
  value (about the noise of a validation accuracy next to the spread between
  candidates); scored by the true value of the trial each study calls best.

Usage::

    python bench/sampler_settings.py                    # 100 seeds from 1000, 200 trials
    python bench/sampler_settings.py --seeds 2 --trials 20 --settings defaults "tournament 10"
    python bench/sampler_settings.py --seeds 300 --objectives "layerwise + noise"
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from collections.abc import Callable
from multiprocessing import Pool
from typing import Any

import optuna
from _common import machine, markdown_table, write_csv
from sampler_quality import NoisyObjective, objective, true_best

from evohpo import EvoSampler, Genome, MutationRates, SearchSpace, suggest_genome

SECOND_SPACE = SearchSpace(min_layers=1, max_layers=6, units=(16, 1024))
SECOND_TARGET = ((512, "relu", 0.4), (48, "tanh", 0.0), (200, "gelu", 0.25))
NOISE = 0.04


def second_score(genome: Genome) -> float:
    """1.0 for the second target network (three layers, SGD, learning rate 5e-4)."""
    total = 0.0
    for i, (units, act, drop) in enumerate(SECOND_TARGET):
        if i >= genome.depth:
            continue
        layer = genome.layers[i]
        closeness = math.exp(-(math.log2(layer.units / units) ** 2) / 2)
        closeness *= 1.0 if layer.activation == act else 0.3
        closeness *= 1.0 - abs(layer.dropout - drop)
        total += closeness
    extra = max(0, genome.depth - len(SECOND_TARGET))
    globals_ = math.exp(-((math.log10(genome.learning_rate) - math.log10(5e-4)) ** 2))
    globals_ *= 1.0 if genome.optimizer == "sgd" else 0.7
    return total / len(SECOND_TARGET) * 0.8**extra * (0.4 + 0.6 * globals_)


def second_objective(trial: optuna.Trial) -> float:
    return second_score(suggest_genome(trial, SECOND_SPACE))


def define_by_run(trial: optuna.Trial) -> float:
    """Maximum 0.5 (branch "b" with z = 0.7, x = 1.3, y = 1e-2, n = 13)."""
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    x = trial.suggest_float("x", -5, 5)
    y = trial.suggest_float("y", 1e-4, 1.0, log=True)
    n = trial.suggest_int("n", 1, 20)
    loss = (x - 1.3) ** 2 + (math.log10(y) + 2) ** 2 + 0.05 * (n - 13) ** 2
    if kind == "b":
        loss += 2 * (trial.suggest_float("z", 0, 1) - 0.7) ** 2 - 0.5
    elif kind == "c":
        loss += 0.3 * abs(math.log2(trial.suggest_categorical("w", [1, 2, 4, 8])) - 2)
    return -loss


OBJECTIVES: dict[str, Callable[[int], Callable[[optuna.Trial], float]]] = {
    "layerwise": lambda seed: objective,
    "second target": lambda seed: second_objective,
    "define-by-run": lambda seed: define_by_run,
    "layerwise + noise": lambda seed: NoisyObjective(seed, NOISE),
}

_MORE_STRUCTURAL = {"insert_layer": 0.1, "remove_layer": 0.1, "duplicate_layer": 0.1}
SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    # The variation of 2026-12-02 and before: smaller steps, more structural change.
    "previous variation": {
        "crossover_prob": 0.7,
        "mutation_rates": MutationRates(
            units_sigma=0.4, learning_rate_sigma=0.5, **_MORE_STRUCTURAL
        ),
    },
    "crossover 0.7": {"crossover_prob": 0.7},
    "tournament 5": {"tournament_size": 5},
    "tournament 3": {"tournament_size": 3},
    "tournament 10": {"tournament_size": 10},
    "population 6": {"population_size": 6},
    "population 15": {"population_size": 15},
    "5 startup trials": {"n_startup_trials": 5},
    "aging": {"aging": True},
    # Regularized evolution as Real et al. run it: the newest 20, no elite kept.
    "regularized evolution": {
        "aging": True,
        "elitism": 0,
        "population_size": 20,
        "tournament_size": 8,
    },
    "gene 0.2": {"mutation_rates": MutationRates(gene=0.2)},
    "structural 0.1": {"mutation_rates": MutationRates(**_MORE_STRUCTURAL)},
}


def one_run(job: tuple[str, str, int, tuple[int, ...]]) -> list[float]:
    """True best value after each checkpoint of one seeded study."""
    setting, objective_name, seed, checkpoints = job
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    sampler = EvoSampler(seed=seed, **SETTINGS[setting])
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(OBJECTIVES[objective_name](seed), n_trials=max(checkpoints))
    return [true_best(study.trials[:c]) for c in checkpoints]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument(
        "--objectives", nargs="+", choices=list(OBJECTIVES), default=list(OBJECTIVES)
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if args.seeds < 1 or args.trials < 2 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1, --trials at least 2")
    checkpoints = tuple(sorted({args.trials // 2, args.trials}))
    seeds = range(args.first_seed, args.first_seed + args.seeds)

    rows = []
    start = time.perf_counter()
    with Pool(args.jobs) as pool:
        for setting in args.settings:
            row: dict[str, object] = {"setting": setting}
            for name in args.objectives:
                jobs = [(setting, name, seed, checkpoints) for seed in seeds]
                results = pool.map(one_run, jobs)
                means = [sum(r[i] for r in results) / len(results) for i in range(len(checkpoints))]
                row[name] = " / ".join(f"{m:.3f}" for m in means)
            rows.append(row)
            print(f"done: {setting}", flush=True)
    after = " / ".join(str(c) for c in checkpoints)
    print(
        f"\nEvoSampler settings: mean true best after {after} trials, {args.seeds} seeds from "
        f"{args.first_seed}, noise sd {NOISE:g} on the last objective, "
        f"{time.perf_counter() - start:.0f} s, {machine()}\n"
    )
    print(markdown_table(rows))
    print(f"\nCSV: {write_csv('sampler_settings.csv', rows)}")


if __name__ == "__main__":
    main()
