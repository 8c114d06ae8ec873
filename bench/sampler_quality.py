"""Sampler quality on a synthetic layer-wise objective.

The objective scores a genome against a hidden target network of five
layers, each with its own width, activation and dropout, plus global
training genes. Every target layer counts equally, so the optimum needs the
right settings of the deeper layers too: parameters that exist only when the
depth is large enough (conditional parameters).

With ``--noise SD`` every trial's value gets Gaussian noise of that standard
deviation, as a validation score does in real training. The samplers see only
the noisy values; the table reports the true score of the trial each study
would call best (its best observed value), which is what a user would get.

Usage::

    python bench/sampler_quality.py                 # 30 seeds, 100 and 200 trials
    python bench/sampler_quality.py --noise 0.04    # the same with noisy values
    python bench/sampler_quality.py --seeds 2 --trials 40   # fast mode

Thirty seeds, because the spread between seeds is large (sd about 0.1): with
ten, the standard error of a mean (about 0.03) is as large as the gaps
between the better samplers, and a change of random streams alone moves a
sampler's mean by that much.
"""

from __future__ import annotations

import argparse
import math
import random
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


class NoisyObjective:
    """``score`` plus Gaussian noise; the true score goes to a user attribute.

    The noise of trial ``n`` in run ``seed`` is the same for every sampler, so
    they differ only in what they ask for.
    """

    def __init__(self, seed: int, sd: float) -> None:
        self.seed, self.sd = seed, sd

    def __call__(self, trial: optuna.Trial) -> float:
        true = score(suggest_genome(trial, SPACE))
        trial.set_user_attr("true_score", true)
        return true + random.Random(f"noise-{self.seed}-{trial.number}").gauss(0.0, self.sd)


def true_best(trials: list[optuna.trial.FrozenTrial]) -> float:
    """The true score of the trial with the best observed value."""
    best = max(trials, key=lambda t: t.value if t.value is not None else -math.inf)
    return float(best.user_attrs.get("true_score", best.value))


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
    parser.add_argument(
        "--noise", type=float, default=0.0, help="sd of Gaussian noise on every value (default 0)"
    )
    args = parser.parse_args()
    if args.noise < 0 or not math.isfinite(args.noise):
        parser.error(f"--noise must be a finite number >= 0, got {args.noise}")
    checkpoints = sorted({args.trials // 2, args.trials})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

    rows = []
    for name, factory in SAMPLERS.items():
        bests: dict[int, list[float]] = {c: [] for c in checkpoints}
        start = time.perf_counter()
        for seed in range(args.seeds):
            study = optuna.create_study(direction="maximize", sampler=factory(seed))
            run = NoisyObjective(seed, args.noise) if args.noise else objective
            study.optimize(run, n_trials=args.trials)
            for c in checkpoints:
                bests[c].append(true_best(study.trials[:c]))
        elapsed = time.perf_counter() - start
        row: dict[str, object] = {"sampler": name}
        for c in checkpoints:
            row[f"best after {c} (mean ± sd)"] = mean_std(bests[c])
        row["seconds per run"] = f"{elapsed / args.seeds:.1f}"
        rows.append(row)
        print(f"done: {name}", flush=True)
    noise = f", noise sd {args.noise:g} (true score of the best trial)" if args.noise else ""
    print(f"\nsynthetic layer-wise objective (max 1.0){noise}, {args.seeds} seeds, {machine()}\n")
    print(markdown_table(rows))
    name = f"sampler_quality_noise{args.noise:g}.csv" if args.noise else "sampler_quality.csv"
    print(f"\nCSV: {write_csv(name, rows)}")


if __name__ == "__main__":
    main()
