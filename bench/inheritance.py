"""The same GA search with and without Lamarckian weight inheritance.

For each data set and seed, two searches that differ only in
``WeightInheritance(inherit=...)``: ``EvoSampler(population_size=8, seed=s)``
and a ``GenomeObjective`` on the same space, ``TrainConfig(max_epochs,
patience, device="cpu")`` and training/validation rows, with ``n_trials``
trials each. Both arms store every trial's weights (``inherit=False`` only
stores them), so the best trial's own trained network is scored on held-out
test rows, standardised with the training rows' statistics as the
objective's split is. The two arms of a seed run back to back, so that a
change in the machine's load hits both alike.

Data: scikit-learn's digits (a fixed stratified 75/25 train/test split) and
mnist1d (generated offline, its own 4000/1000 split), both as dense
networks; with ``--conv``, mnist1d as 1x40 signals with a convolutional
body too. The validation rows are a fixed stratified 20% of the training
rows; the seed moves the sampler and every trial's training seed.

Reported per data set and arm (median over seeds; per seed in a second table):

* best val: the best trial's validation accuracy; test: its stored
  network's accuracy on the test rows;
* steps: training steps of all trials, ``epochs_run * ceil(n_train /
  batch_size)`` summed; seconds: trial durations (start to end, weights
  stored and loaded included) summed;
* to match (steps, s): the cumulative steps (seconds) after which the arm's
  running best first reaches the scratch arm's final best validation
  accuracy, as a fraction of the scratch arm's total; "-" where it never
  does. For the scratch arm this is where it found its own best;
* exact: share of bred trials whose start computes their first parent's
  function; inherited: median fraction of a bred trial's parameters
  taken from a parent (inheriting arm only).

Usage::

    python bench/inheritance.py                  # digits and mnist1d dense, 3 seeds
    python bench/inheritance.py --conv           # and mnist1d with conv genomes
    python bench/inheritance.py --dense-residual --datasets mnist1d   # residual dense layers
    python bench/inheritance.py --quick          # smoke run: digits, 1 seed, seconds
    python bench/inheritance.py --datasets digits --seeds 0 1 --trials 30

Every search is one row of ``bench/results/inheritance_runs.csv``, the medians
go to ``inheritance.csv`` (``_quick``, ``_conv`` (``--no-dense``) and
``_residual`` (``--dense-residual``) name files of their own).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("EVOHPO_NO_PROGRESS", "1")

from _common import RESULTS, machine, markdown_table, write_csv

ARMS = ("scratch", "inherit")


@dataclass(frozen=True)
class Data:
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def split(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> Data:
    from sklearn.model_selection import train_test_split

    X_train, X_val, y_train, y_val = train_test_split(
        X, y, test_size=0.2, stratify=y, random_state=0
    )
    return Data(X_train, y_train, X_val, y_val, X_test, y_test)


def load_digits() -> Data:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    return split(X_train, y_train, X_test, y_test)


def load_mnist1d() -> Data:
    from evohpo.training.datasets import load_dataset

    data = load_dataset("mnist1d", cache_dir=RESULTS / "cache")
    assert data.test_index is not None
    test = np.zeros(len(data.y), dtype=bool)
    test[data.test_index] = True
    return split(data.X[~test], data.y[~test], data.X[test], data.y[test])


def spaces(quick: bool, dense_residual: bool = False) -> dict[str, Any]:
    from evohpo import SearchSpace

    common: dict[str, Any] = {
        "activations": ("relu", "gelu", "silu"),
        "dropout": (0.0, 0.3),
        "optimizers": ("adam", "adamw"),
        "learning_rate": (3e-4, 1e-2),
        "weight_decay": (1e-6, 1e-3),
        "batch_sizes": (32, 64, 128),
    }
    if quick:
        return {
            "dense": SearchSpace(max_layers=1, units=(8, 32), **common),
            "conv": SearchSpace(
                input_shape=(1, 40),
                min_blocks=1,
                max_blocks=1,
                channels=(4, 8),
                max_layers=1,
                units=(8, 16),
                **common,
            ),
        }
    return {
        "dense": SearchSpace(
            min_layers=1,
            max_layers=3,
            units=(16, 256),
            # Residual dense layers: inserts start as a zero branch, exact for every activation.
            dense_residual=(False, True) if dense_residual else (False,),
            **common,
        ),
        # studies/mnist1d_conv.toml, with narrower blocks to fit the budget.
        "conv": SearchSpace(
            input_shape=(1, 40),
            min_blocks=1,
            max_blocks=3,
            channels=(8, 32),
            kernels=(3, 5),
            strides=(1, 2),
            block_dropout=(0.0, 0.2),
            readouts=("avg", "flatten"),
            min_layers=1,
            max_layers=2,
            units=(32, 128),
            **common,
        ),
    }


#: (name in the tables, loader, space key)
CASES: dict[str, tuple[Any, str]] = {
    "digits": (load_digits, "dense"),
    "mnist1d": (load_mnist1d, "dense"),
    "mnist1d-conv": (load_mnist1d, "conv"),
}


def search(data: Data, space: Any, arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One search; its per-trial records and the best trial's test accuracy."""
    import optuna
    import torch

    from evohpo import EvoSampler
    from evohpo.search.inheritance import WeightBank, WeightInheritance
    from evohpo.search.objective import GenomeObjective
    from evohpo.search.splits import Standardizer
    from evohpo.storage import close_storage, open_storage
    from evohpo.training.config import TrainConfig
    from evohpo.training.nn import build_model

    n_classes = int(max(data.y_train.max(), data.y_val.max(), data.y_test.max())) + 1
    with tempfile.TemporaryDirectory(prefix="evohpo-inheritance-") as tmp:
        settings = WeightInheritance(
            store=Path(tmp) / "weights",
            keep_best=2 * args.population,
            keep_recent=2 * args.population,
            inherit=arm == "inherit",
        )
        objective = GenomeObjective(
            data.X_train,
            data.y_train,
            space=space,
            train_config=TrainConfig(max_epochs=args.epochs, patience=args.patience, device="cpu"),
            seed=seed,
            validation_data=(data.X_val, data.y_val),
            n_classes=n_classes,
            inheritance=settings,
        )
        storage = open_storage(f"sqlite:///{tmp}/study.db")
        # No pruner, as the estimator: a pruner would judge inherited and fresh
        # starts by their first epochs, which differ by design.
        study = optuna.create_study(
            storage=storage,
            direction="maximize",
            pruner=optuna.pruners.NopPruner(),
            sampler=EvoSampler(population_size=args.population, seed=seed, search_space=space),
        )
        started = time.perf_counter()
        study.optimize(objective, n_trials=args.trials)
        wall = time.perf_counter() - started
        trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        best = study.best_trial
        genome, state = WeightBank(settings).load(study, best.number)
        model = build_model(
            genome, data.X_train.shape[1], n_classes, seed=0, input_shape=space.input_shape
        )
        model.load_state_dict(state)
        model.eval()
        scaled = Standardizer.fit(data.X_train).transform(data.X_test)
        with torch.no_grad():
            predicted = model(torch.from_numpy(scaled)).argmax(dim=1).numpy()
        test = float((predicted == data.y_test).mean())
        close_storage(storage)
    n_train = len(data.y_train)
    records = []
    for t in sorted(trials, key=lambda t: t.number):
        attrs = t.user_attrs
        batch = json.loads(attrs["genome"])["batch_size"] if "genome" in attrs else 1
        lineage = attrs.get("evohpo") or {}
        assert t.datetime_complete is not None
        assert t.datetime_start is not None
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        records.append(
            {
                "value": t.value if t.value is not None else -math.inf,
                "steps": int(attrs.get("epochs_run", 0)) * math.ceil(n_train / batch),
                "seconds": seconds,
                "train_seconds": float(attrs.get("train_seconds", 0.0)),
                "bred": lineage.get("origin") == "bred",
                "inherited": attrs.get("inherited"),
                "warning": "inheritance_warning" in attrs,
            }
        )
    return {
        "records": records,
        "best_val": float(best.values[0]),
        "test": test,
        "wall": wall,
        "best_trial": best.number,
    }


def to_reach(records: list[dict[str, Any]], target: float, key: str) -> float:
    """Cumulative ``key`` after which the running best first reaches ``target`` (inf: never)."""
    total = 0.0
    for record in records:
        total += float(record[key])
        if record["value"] >= target:
            return total
    return math.inf


def run_row(
    case: str, seed: int, arm: str, run: dict[str, Any], scratch: dict[str, Any]
) -> dict[str, Any]:
    records = run["records"]
    target = scratch["best_val"]
    base_steps = sum(r["steps"] for r in scratch["records"])
    base_seconds = sum(r["seconds"] for r in scratch["records"])
    bred = [r for r in records if r["bred"]]
    starts = [r["inherited"] for r in bred if isinstance(r["inherited"], dict)]
    return {
        "data": case,
        "arm": arm,
        "seed": seed,
        "trials": len(records),
        "best_trial": run["best_trial"],
        "best_val": round(run["best_val"], 4),
        "test": round(run["test"], 4),
        "steps": sum(r["steps"] for r in records),
        "seconds": round(sum(r["seconds"] for r in records), 1),
        "train_seconds": round(sum(r["train_seconds"] for r in records), 1),
        "wall": round(run["wall"], 1),
        "steps_to_match": round(to_reach(records, target, "steps") / base_steps, 3),
        "seconds_to_match": round(to_reach(records, target, "seconds") / base_seconds, 3),
        "bred": len(bred),
        "inherited_starts": len(starts),
        "exact": sum(bool(s.get("exact")) for s in starts),
        "median_fraction": (
            round(statistics.median(float(s.get("fraction", 0.0)) for s in starts), 3)
            if starts
            else math.nan
        ),
        "warnings": sum(r["warning"] for r in records),
    }


def fmt_fraction(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.2f}"


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for case in dict.fromkeys(r["data"] for r in rows):
        for arm in ARMS:
            group = [r for r in rows if r["data"] == case and r["arm"] == arm]
            if not group:
                continue
            inheriting = arm == "inherit"
            bred = sum(r["bred"] for r in group)
            exact = sum(r["exact"] for r in group)
            fractions = [r["median_fraction"] for r in group if math.isfinite(r["median_fraction"])]

            def med(key: str, g: list[dict[str, Any]] = group) -> float:
                return float(statistics.median(r[key] for r in g))

            out.append(
                {
                    "data": case,
                    "arm": arm,
                    "best val": f"{med('best_val'):.4f}",
                    "test acc": f"{med('test'):.4f}",
                    "steps": f"{med('steps'):.0f}",
                    "trial s": f"{med('seconds'):.1f}",
                    "to match (steps)": fmt_fraction(med("steps_to_match")),
                    "to match (s)": fmt_fraction(med("seconds_to_match")),
                    "reached": f"{sum(math.isfinite(r['steps_to_match']) for r in group)}"
                    f"/{len(group)}",
                    "exact starts": f"{exact}/{bred}" if inheriting else "",
                    "inherited fraction": (
                        f"{statistics.median(fractions):.2f}" if inheriting and fractions else ""
                    ),
                }
            )
    return out


def per_seed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "data": r["data"],
            "arm": r["arm"],
            "seed": r["seed"],
            "best trial": r["best_trial"],
            "best val": f"{r['best_val']:.4f}",
            "test acc": f"{r['test']:.4f}",
            "steps": r["steps"],
            "trial s": f"{r['seconds']:.1f}",
            "to match (steps)": fmt_fraction(r["steps_to_match"]),
            "to match (s)": fmt_fraction(r["seconds_to_match"]),
            "exact starts": f"{r['exact']}/{r['bred']}" if r["arm"] == "inherit" else "",
            "inherited fraction": (
                fmt_fraction(r["median_fraction"]) if r["arm"] == "inherit" else ""
            ),
        }
        for r in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=("digits", "mnist1d"), default=None)
    parser.add_argument("--conv", action="store_true", help="also mnist1d with conv genomes")
    parser.add_argument("--no-dense", action="store_true", help="only the conv runs")
    parser.add_argument(
        "--dense-residual",
        action="store_true",
        help="dense layers may be residual (SearchSpace(dense_residual=(False, True)))",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="smoke run: digits, 1 seed, tiny")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials, args.population, args.epochs, args.patience = [0], 8, 3, 3, 2
        args.datasets = args.datasets or ["digits"]
    datasets = args.datasets or ["digits", "mnist1d"]
    cases = [] if args.no_dense else list(datasets)
    if args.conv:
        cases.append("mnist1d-conv")
    if not cases:
        parser.error("--no-dense leaves nothing to run without --conv")

    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(args.threads)
    command = "python bench/inheritance.py " + " ".join(sys.argv[1:])
    print(f"# weight inheritance, {date.today()}, {machine()}, {args.threads} torch thread(s)")
    print(f"# {command.strip()}")
    print(
        f"# {args.trials} trials, EvoSampler(population_size={args.population}), "
        f"max_epochs {args.epochs}, patience {args.patience}, seeds {args.seeds}"
    )
    space_of = spaces(args.quick, args.dense_residual)
    loaded: dict[Any, Data] = {}
    rows: list[dict[str, Any]] = []
    # A throwaway search first: the first trials of a process pay for imports
    # and torch's first calls, which would fall on the first arm only.
    loader, key = CASES[cases[0]]
    loaded[loader] = loader()
    search(
        loaded[loader],
        space_of[key],
        "inherit",
        0,
        argparse.Namespace(**{**vars(args), "trials": 2, "population": 2, "epochs": 1}),
    )
    # Seeds outermost and the two arms of a seed back to back: a slow spell of
    # the machine lands on both arms, not on one.
    for seed in args.seeds:
        for case in cases:
            loader, key = CASES[case]
            if loader not in loaded:
                loaded[loader] = loader()
            runs = {}
            for arm in ARMS:
                runs[arm] = search(loaded[loader], space_of[key], arm, seed, args)
            for arm in ARMS:
                row = run_row(case, seed, arm, runs[arm], runs["scratch"])
                print(row, flush=True)
                rows.append(row)
    # A conv-only run does not overwrite the dense run's files.
    suffix = ("_quick" if args.quick else "") + ("_conv" if args.no_dense else "")
    suffix += "_residual" if args.dense_residual else ""
    write_csv(f"inheritance_runs{suffix}.csv", rows)
    table = summary(rows)
    write_csv(f"inheritance{suffix}.csv", table)
    print("\nMedian over seeds:\n")
    print(markdown_table(table))
    print("\nPer seed:\n")
    print(markdown_table(per_seed(rows)))


if __name__ == "__main__":
    main()
