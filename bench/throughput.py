"""How close evohpo's trainer gets to the hardware, and where a trial's time goes.

Three measurements, all in float32 on one device (``--device``, the CPU by
default) with ``--threads`` torch threads (1 by default, as
EvoSearchClassifier trains on the CPU, and so that a second job on a small
machine disturbs the numbers little):

1. **Matmul rate.** ``torch.mm`` of a (batch x in) by an (in x out) matrix at the
   shapes evohpo's networks run: batches of 32, 128 and 512 rows; inputs 40
   (mnist1d), 64 (digits) and the hidden widths 256 and 512; outputs 64, 256 and
   512. The machine's peak reference is the best of three large square products
   (512, 1024, 2048). GFLOP/s is ``2*m*n*k / seconds``: the median over repeats,
   after a warm-up, each repeat looping long enough (20 ms) for the timer's
   overhead not to count (on CUDA, after a synchronize).

2. **Trainer rate.** ``train_classifier`` on digits (a fixed 80/20 split,
   standardised), a fixed number of epochs, early stopping off, for a few genomes
   (relu, no dropout, adam) and batch sizes. The FLOPs counted per training row,
   for every ``Linear(in, out)``, the output layer included, are the forward
   product ``2*in*out``, the weight gradient ``2*in*out`` and the input gradient
   ``2*in*out``, the last one except for the first layer (autograd computes no
   gradient for the data). Ignored, being O(rows x width) or O(parameters) rather
   than O(rows x in x out): bias adds, activations, the loss, the optimizer
   step, gathering the batch rows and the validation pass. Training seconds per
   epoch are the median of the trainer's per-epoch ``history`` seconds, which
   include that epoch's validation pass, minus a separately timed validation
   pass (as under 3). The reference rate "at shape" is that of the same matrix
   products (per layer: forward, weight gradient, input gradient) run back to
   back with ``torch.mm`` at the genome's shapes and batch size: what this
   machine gives for exactly the work counted.

3. **Time per trial.** An Optuna study on a SQLite file, set up as
   EvoSearchClassifier sets up its own (EvoSampler with its population size, the
   default SearchSpace, ``GenomeObjective`` with a 0.2 holdout and accuracy
   scoring, NopPruner, max_epochs 100 and patience 20 unless changed), runs
   ``--trials`` trials on digits. Its wall time is split exclusively (each part
   is charged its time minus that of the parts nested in it):

   * sampler: the sampler's hooks, wrapped with timers as in
     ``bench/sampler_overhead.py``, less the storage calls they make;
   * storage: every call on the storage object the study uses (RDBStorage behind
     Optuna's cache, as a SQLite URL gives), split into calls from the sampler's
     hooks and all others (trial creation, parameters, user attributes, the
     per-epoch ``trial.report``, the final state). Sampler time plus its storage
     calls is what ``sampler_overhead.py`` reports;
   * trainer: the ``train_classifier`` call GenomeObjective makes, observed by
     wrapping that function in ``evohpo.search.objective`` (the objective keeps no
     timings of its own). It splits into *training* (the per-epoch history
     seconds minus validation), *validation* and *setup* (the rest of the call:
     input checks, moving data, building the model, copies of the best weights).
     The trainer records no separate validation time, so *validation* is
     estimated: after the study, each trial's final model is timed on a pass
     that repeats the trainer's own (as many standardised rows,
     ``eval_batch_size`` chunks, cross-entropy and accuracy, one read back),
     times its validated epochs. With accuracy scoring the objective makes no
     other scoring pass;
   * rest: Optuna's trial loop, ``suggest_genome`` and the objective's glue.

   A second table lists the storage calls by method (calls and milliseconds per
   trial), the costliest first.

Usage::

    python bench/throughput.py                  # full: about a minute on 2 CPU cores
    python bench/throughput.py --fast           # smoke run (CI): seconds
    python bench/throughput.py --device cuda    # the same on a GPU
    python bench/throughput.py --threads 2 --trials 40

Tables are printed and written to ``bench/results/throughput_matmul.csv``,
``throughput_training.csv``, ``throughput_trial.csv`` and
``throughput_storage.csv``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import statistics
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from _common import WrappedSampler, machine, markdown_table, write_csv
from optuna.storages import BaseStorage

import evohpo.search.objective
from evohpo import EvoSampler, Genome, LayerGene, SearchSpace
from evohpo.search.objective import GenomeObjective
from evohpo.search.splits import Standardizer
from evohpo.training.config import TrainConfig, TrainResult
from evohpo.training.datasets import load_dataset
from evohpo.training.loop import train_classifier

os.environ.setdefault("EVOHPO_NO_PROGRESS", "1")

Shape = tuple[int, int]  # (in_features, out_features) of one Linear layer


@dataclass(frozen=True)
class Settings:
    """What one invocation measures; ``--fast`` shrinks everything."""

    batches: tuple[int, ...]
    in_widths: tuple[int, ...]
    out_widths: tuple[int, ...]
    square_sizes: tuple[int, ...]
    min_repeat_seconds: float
    repeats: int
    genomes: tuple[tuple[int, ...], ...]  # hidden widths
    train_batches: tuple[int, ...]
    train_epochs: int
    trials: int
    trial_max_epochs: int
    trial_patience: int | None
    trial_space: SearchSpace


def settings_for(args: argparse.Namespace) -> Settings:
    if args.fast:
        return Settings(
            batches=(32,),
            in_widths=(64,),
            out_widths=(64,),
            square_sizes=(128, 256),
            min_repeat_seconds=0.002,
            repeats=3,
            genomes=((64,),),
            train_batches=(128,),
            train_epochs=2,
            trials=args.trials or 2,
            trial_max_epochs=2,
            trial_patience=None,
            trial_space=SearchSpace(max_layers=2, units=(16, 64)),
        )
    return Settings(
        batches=(32, 128, 512),
        in_widths=(40, 64, 256, 512),
        out_widths=(64, 256, 512),
        square_sizes=(512, 1024, 2048),
        min_repeat_seconds=0.02,
        repeats=7,
        genomes=((64,), (256, 256), (512, 512, 512)),
        train_batches=(32, 128, 512),
        train_epochs=15,
        trials=args.trials or 20,
        trial_max_epochs=args.max_epochs,
        trial_patience=args.patience or None,
        trial_space=SearchSpace(),
    )


# -- timing ----------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a timer read after it covers their work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    fn: Callable[[], object], device: torch.device, repeats: int, min_seconds: float
) -> float:
    """Median seconds of one call of ``fn``, warmed up, each repeat looping >= min_seconds."""

    def loop(n: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(n):
            fn()
        synchronize(device)
        return time.perf_counter() - start

    loop(1)  # warm-up: allocations, kernel selection, caches
    loops = 1
    while (elapsed := loop(loops)) < min_seconds:
        loops = max(loops + 1, math.ceil(loops * 1.2 * min_seconds / max(elapsed, 1e-9)))
    return statistics.median(loop(loops) / loops for _ in range(repeats))


# -- 1. matmul rate --------------------------------------------------------------------------
def matmul_gflops(m: int, k: int, n: int, device: torch.device, settings: Settings) -> float:
    """GFLOP/s of (m x k) @ (k x n) into a preallocated output."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    out = torch.empty(m, n, device=device)
    seconds = median_seconds(
        lambda: torch.mm(a, b, out=out), device, settings.repeats, settings.min_repeat_seconds
    )
    return 2 * m * k * n / seconds / 1e9


def measure_matmul(
    device: torch.device, settings: Settings
) -> tuple[float, list[dict[str, Any]], list[dict[str, Any]]]:
    """Peak GFLOP/s, the rows of the CSV (long form) and of the printed table (pivoted)."""
    csv_rows: list[dict[str, Any]] = []
    for size in settings.square_sizes:
        rate = matmul_gflops(size, size, size, device, settings)
        csv_rows.append(
            {"kind": "square", "batch": size, "in": size, "out": size, "gflops": round(rate, 2)}
        )
        print(f"  matmul square {size}: {rate:.1f} GFLOP/s", flush=True)
    # Large squares are where the BLAS kernel runs at full speed; take the best of them.
    peak = max(row["gflops"] for row in csv_rows)
    table: list[dict[str, Any]] = []
    for batch in settings.batches:
        for n_in in settings.in_widths:
            row: dict[str, Any] = {"batch": batch, "in": n_in}
            for n_out in settings.out_widths:
                rate = matmul_gflops(batch, n_in, n_out, device, settings)
                csv_rows.append(
                    {
                        "kind": "layer",
                        "batch": batch,
                        "in": n_in,
                        "out": n_out,
                        "gflops": round(rate, 2),
                    }
                )
                row[f"out={n_out}"] = f"{rate:.1f} ({rate / peak:.0%})"
            table.append(row)
            print(f"  matmul batch {batch:4d} x in {n_in:4d}: {row}", flush=True)
    return peak, csv_rows, table


# -- 2. trainer rate -------------------------------------------------------------------------
def layer_shapes(genome: Genome, n_inputs: int, n_classes: int) -> list[Shape]:
    widths = [n_inputs, *(layer.units for layer in genome.layers), n_classes]
    return list(itertools.pairwise(widths))


def training_flops_per_row(shapes: Sequence[Shape]) -> int:
    """Forward, weight-gradient and input-gradient products; no input gradient for layer 0."""
    return sum(2 * n_in * n_out * (2 if i == 0 else 3) for i, (n_in, n_out) in enumerate(shapes))


def step_matmul_gflops(
    shapes: Sequence[Shape], batch: int, device: torch.device, settings: Settings
) -> float:
    """GFLOP/s of one training step's matrix products alone, laid out as nn.Linear has them."""
    products: list[Callable[[], object]] = []
    for i, (n_in, n_out) in enumerate(shapes):
        x = torch.randn(batch, n_in, device=device)
        weight = torch.randn(n_out, n_in, device=device)
        grad_out = torch.randn(batch, n_out, device=device)
        out = torch.empty(batch, n_out, device=device)
        grad_weight = torch.empty(n_out, n_in, device=device)
        products.append(functools.partial(torch.mm, x, weight.t(), out=out))
        products.append(functools.partial(torch.mm, grad_out.t(), x, out=grad_weight))
        if i > 0:  # no input gradient for the data
            grad_in = torch.empty(batch, n_in, device=device)
            products.append(functools.partial(torch.mm, grad_out, weight, out=grad_in))

    def step() -> None:
        for product in products:
            product()

    seconds = median_seconds(step, device, settings.repeats, settings.min_repeat_seconds)
    return batch * training_flops_per_row(shapes) / seconds / 1e9


def validation_pass_seconds(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    device: torch.device,
    settings: Settings,
) -> float:
    """Seconds of one validation pass as the trainer makes it after every epoch."""
    n_rows = x.shape[0]
    model.eval()

    def validate() -> None:
        with torch.inference_mode():
            loss = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            for start in range(0, n_rows, batch_size):
                logits = model(x[start : start + batch_size])
                target = y[start : start + batch_size]
                loss += F.cross_entropy(logits, target) * (target.shape[0] / n_rows)
                correct += (logits.argmax(dim=1) == target).sum()
            loss.item()  # the trainer reads both values back: one wait for the device
            correct.item()

    return median_seconds(validate, device, settings.repeats, settings.min_repeat_seconds / 4)


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    data = load_dataset("digits")
    order = np.random.default_rng(0).permutation(len(data.y))
    n_val = len(order) // 5
    val, train = order[:n_val], order[n_val:]
    scaler = Standardizer.fit(data.X[train])
    return (
        scaler.transform(data.X[train]),
        data.y[train],
        scaler.transform(data.X[val]),
        data.y[val],
        data.n_classes,
    )


def measure_training(device: torch.device, settings: Settings, peak: float) -> list[dict[str, Any]]:
    X_train, y_train, X_val, y_val, n_classes = digits_split()
    xv = torch.from_numpy(X_val).to(device)
    yv = torch.from_numpy(y_val).to(device)
    n_train = len(y_train)
    rows = []
    for widths in settings.genomes:
        for batch in settings.train_batches:
            genome = Genome(
                tuple(LayerGene(units, "relu", 0.0) for units in widths), "adam", 1e-3, 0.0, batch
            )
            config = TrainConfig(
                max_epochs=settings.train_epochs, patience=None, device=device, seed=0
            )
            result = train_classifier(
                genome, X_train, y_train, X_val, y_val, n_classes=n_classes, config=config
            )
            epoch_seconds = statistics.median(record["seconds"] for record in result.history)
            val_seconds = validation_pass_seconds(
                result.model, xv, yv, config.eval_batch_size, device, settings
            )
            train_seconds = epoch_seconds - val_seconds
            shapes = layer_shapes(genome, X_train.shape[1], n_classes)
            epoch_flops = n_train * training_flops_per_row(shapes)
            rate = epoch_flops / train_seconds / 1e9
            reference = step_matmul_gflops(shapes, batch, device, settings)
            n_steps = math.ceil(n_train / batch)
            rows.append(
                {
                    "genome": f"{len(widths)}x{widths[0]}",
                    "batch": batch,
                    "parameters": result.n_parameters,
                    "MFLOP/epoch": round(epoch_flops / 1e6, 1),
                    "epoch ms": round(epoch_seconds * 1e3, 2),
                    "val ms": round(val_seconds * 1e3, 2),
                    "µs/step": round(train_seconds / n_steps * 1e6, 1),
                    "trainer GFLOP/s": round(rate, 2),
                    "matmul GFLOP/s at shape": round(reference, 2),
                    "% of at-shape": f"{rate / reference:.0%}",
                    "% of peak": f"{rate / peak:.0%}",
                }
            )
            print(f"  train {rows[-1]}", flush=True)
    return rows


# -- 3. time per trial -----------------------------------------------------------------------
SAMPLER = "sampler"
SAMPLER_STORAGE = "storage (sampler)"
STORAGE = "storage (study, trial)"
TRAINER = "trainer"
REST = "rest"


class Clock:
    """Exclusive wall time per part: a nested section pauses the one around it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.entries: Counter[str] = Counter()
        self._stack = [REST]
        self._mark = time.perf_counter()

    def _charge(self) -> None:
        synchronize(self.device)  # device work queued so far belongs to the current part
        now = time.perf_counter()
        self.seconds[self._stack[-1]] += now - self._mark
        self._mark = now

    def restart(self) -> None:
        self.seconds.clear()
        self.entries.clear()
        self._stack = [REST]
        self._mark = time.perf_counter()

    def stop(self) -> None:
        self._charge()

    def inside(self, part: str) -> bool:
        return part in self._stack

    @contextmanager
    def section(self, part: str) -> Iterator[None]:
        self._charge()
        self.entries[part] += 1
        self._stack.append(part)
        try:
            yield
        finally:
            self._charge()
            self._stack.pop()

    def timed(self, part: str | Callable[[], str], fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` charging its time to ``part`` (a callable picks the part at call time)."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.section(part() if callable(part) else part):
                return fn(*args, **kwargs)

        return wrapper


class StorageLog:
    """Count and seconds of the storage calls made from outside the storage, per method."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()  # (caller part, method)
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)

    def clear(self) -> None:
        self.calls.clear()
        self.seconds.clear()


def timed_storage(url: str, clock: Clock) -> tuple[BaseStorage, StorageLog]:
    """The storage a study opens for ``url``, every public call charged to the clock."""
    storage = optuna.storages.get_storage(url)  # RDBStorage behind Optuna's cache
    log = StorageLog()

    def caller() -> str:
        return SAMPLER_STORAGE if clock.inside(SAMPLER) else STORAGE

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        charged = clock.timed(caller, fn)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if clock.inside(STORAGE) or clock.inside(SAMPLER_STORAGE):
                return charged(*args, **kwargs)  # one storage method calling another
            key = (caller(), name)
            synchronize(clock.device)
            start = time.perf_counter()
            try:
                return charged(*args, **kwargs)
            finally:
                log.calls[key] += 1
                log.seconds[key] += time.perf_counter() - start

        return wrapper

    for name in dir(BaseStorage):
        if not name.startswith("_") and callable(getattr(storage, name)):
            setattr(storage, name, wrap(name, getattr(storage, name)))
    return storage, log


@dataclass
class TrainerCall:
    result: TrainResult
    eval_batch_size: int


@contextmanager
def observed_trainer(clock: Clock, calls: list[TrainerCall]) -> Iterator[None]:
    """Time every ``train_classifier`` call GenomeObjective makes and keep its result.

    The objective returns only the trial's value, so the function it calls is
    wrapped where the objective looks it up.
    """

    def train(*args: Any, **kwargs: Any) -> TrainResult:
        with clock.section(TRAINER):
            result = train_classifier(*args, **kwargs)
        config = kwargs.get("config") or TrainConfig()
        calls.append(TrainerCall(result, config.eval_batch_size))
        return result

    with mock.patch.object(evohpo.search.objective, "train_classifier", train):
        yield


@dataclass
class TrialReport:
    parts: list[dict[str, Any]]
    storage: list[dict[str, Any]]
    caption: str


def measure_trials(device: torch.device, settings: Settings) -> TrialReport:
    data = load_dataset("digits")
    space = settings.trial_space
    objective = GenomeObjective(
        data.X,
        data.y,
        space=space,
        train_config=TrainConfig(
            max_epochs=settings.trial_max_epochs, patience=settings.trial_patience, device=device
        ),
        seed=0,
    )
    clock = Clock(device)
    # EvoSearchClassifier's population size for this many trials.
    population = min(20, max(4, settings.trials // 3))
    sampler = WrappedSampler(
        EvoSampler(population_size=population, search_space=space, seed=0),
        lambda hook: clock.timed(SAMPLER, hook),
    )
    calls: list[TrainerCall] = []
    with tempfile.TemporaryDirectory() as tmp:
        storage, log = timed_storage(f"sqlite:///{Path(tmp) / 'throughput.db'}", clock)
        study = optuna.create_study(
            storage=storage,
            sampler=sampler,
            pruner=optuna.pruners.NopPruner(),
            direction="maximize",
        )
        with observed_trainer(clock, calls):
            clock.restart()
            log.clear()
            study.optimize(objective, n_trials=settings.trials)
            clock.stop()
        # Copies taken before the calls below add to them.
        parts, hook_calls = dict(clock.seconds), clock.entries[SAMPLER]
        storage_calls, storage_seconds = Counter(log.calls), dict(log.seconds)
        n_trials = len(study.trials)
        storage.remove_session()
    if len(calls) != n_trials:
        raise RuntimeError(f"Saw {len(calls)} trainer calls for {n_trials} trials.")

    # Validation passes, timed now with each trial's model on the validation rows' shape.
    n_val = objective.n_samples - round(objective.train_size)
    scaled = Standardizer.fit(data.X).transform(data.X[:n_val])
    xv = torch.from_numpy(scaled).to(device)
    yv = torch.from_numpy(data.y[:n_val]).to(device)
    epochs = sum(len(call.result.history) for call in calls)
    epoch_seconds = sum(r["seconds"] for call in calls for r in call.result.history)
    val_seconds = sum(
        len(call.result.history)
        * validation_pass_seconds(call.result.model, xv, yv, call.eval_batch_size, device, settings)
        for call in calls
    )
    total = sum(parts.values())

    def per_trial(count: float) -> str:
        return f"{count / n_trials:.1f}"

    def storage_count(part: str) -> str:
        return per_trial(sum(n for (p, _), n in storage_calls.items() if p == part))

    attributed = [
        (
            "training (batches: forward, backward, optimizer)",
            epoch_seconds - val_seconds,
            per_trial(epochs),
        ),
        ("validation passes (estimated)", val_seconds, per_trial(epochs)),
        ("trainer setup and bookkeeping", parts[TRAINER] - epoch_seconds, per_trial(len(calls))),
        ("sampler hooks (own work)", parts[SAMPLER], per_trial(hook_calls)),
        ("storage calls from the sampler", parts[SAMPLER_STORAGE], storage_count(SAMPLER_STORAGE)),
        ("storage calls of study, trials, objective", parts[STORAGE], storage_count(STORAGE)),
        ("rest (Optuna loop, suggest_genome, glue)", parts[REST], ""),
        ("total (study.optimize wall time)", total, ""),
    ]
    part_rows = [
        {
            "part": name,
            "ms/trial": round(seconds / n_trials * 1e3, 2),
            "share": f"{seconds / total:.1%}",
            "count/trial": count,
        }
        for name, seconds, count in attributed
    ]
    storage_rows = [
        {
            "caller": "sampler" if part == SAMPLER_STORAGE else "study, trial, objective",
            "method": method,
            "calls/trial": per_trial(storage_calls[part, method]),
            "ms/call": round(seconds / storage_calls[part, method] * 1e3, 3),
            "ms/trial": round(seconds / n_trials * 1e3, 2),
            "share of trial": f"{seconds / total:.1%}",
        }
        for (part, method), seconds in sorted(storage_seconds.items(), key=lambda kv: -kv[1])
    ]
    caption = (
        f"{n_trials} trials on digits ({round(objective.train_size)} training, {n_val} "
        f"validation rows), SQLite, EvoSampler(population_size={population}), max_epochs "
        f"{settings.trial_max_epochs}, patience {settings.trial_patience}; "
        f"{total:.1f} s in all. Count: epochs, validation passes, trainer calls, sampler "
        "hook calls, storage calls"
    )
    return TrialReport(part_rows, storage_rows, caption)


# -- report ----------------------------------------------------------------------------------
def describe_setup(device: torch.device) -> str:
    build = (
        f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()} CPU kernels, "
        f"CUDA {torch.version.cuda or 'none'})"
    )
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return (
        f"{machine()}; {build}; device {device} ({where}); torch threads {torch.get_num_threads()}"
    )


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg()) + " (1/5/15 min)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny shapes and budget: seconds")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--trials", type=int, default=None, help="study trials (default 20; fast 2)"
    )
    parser.add_argument(
        "--max-epochs", type=int, default=100, help="per study trial, full mode (default 100)"
    )
    parser.add_argument(
        "--patience", type=int, default=20, help="per study trial, full mode; 0: none (default 20)"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    settings = settings_for(args)
    started = time.perf_counter()

    print(describe_setup(device))
    print(f"load average at start: {load_average()}", flush=True)

    print("\n1. matmul rate", flush=True)
    peak, matmul_csv, matmul_table = measure_matmul(device, settings)
    print("\n2. trainer rate", flush=True)
    training = measure_training(device, settings, peak)
    print("\n3. time per trial", flush=True)
    trials = measure_trials(device, settings)

    print(f"\n{describe_setup(device)}")
    print(f"load average at end: {load_average()}; {time.perf_counter() - started:.0f} s in all")
    squares = ", ".join(
        f"{row['in']}: {row['gflops']:.1f}" for row in matmul_csv if row["kind"] == "square"
    )
    print(
        "\nmatmul GFLOP/s (% of peak) of (batch x in) @ (in x out), float32; peak = best "
        f"square product (size: GFLOP/s {squares})\n"
    )
    print(markdown_table(matmul_table))
    print(
        f"\ntrainer rate on digits ({settings.train_epochs} epochs; genome = layers x width, "
        "relu, adam); training time = median epoch minus one validation pass\n"
    )
    print(markdown_table(training))
    print(f"\ntime per trial: {trials.caption}\n")
    print(markdown_table(trials.parts))
    shown = 8
    print(f"\nstorage calls by method, the {shown} costliest\n")
    print(markdown_table(trials.storage[:shown]))
    print()
    for name, rows in (
        ("throughput_matmul.csv", matmul_csv),
        ("throughput_training.csv", training),
        ("throughput_trial.csv", trials.parts),
        ("throughput_storage.csv", trials.storage),
    ):
        print(f"CSV: {write_csv(name, rows)}")


if __name__ == "__main__":
    main()
