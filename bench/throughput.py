"""How close evohpo's trainer gets to the hardware, and where a trial's time goes.

Four measurements, all in float32 on one device (``--device``, the CPU by
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
   include that epoch's validation pass, minus a separately timed pass that
   repeats the trainer's own (as many rows, ``eval_batch_size`` chunks,
   cross-entropy and accuracy, one read back). The reference rate "at shape"
   is that of the same matrix products (per layer: forward, weight gradient,
   input gradient) run back to back with ``torch.mm`` at the genome's shapes
   and batch size: what this machine gives for exactly the work counted.

3. **Time per trial.** An Optuna study on a SQLite file, set up as
   EvoSearchClassifier sets up its own (EvoSampler with its population size,
   the estimator's default search space, ``GenomeObjective`` with a 0.2
   holdout and accuracy scoring, NopPruner, max_epochs 100 and patience 20
   unless changed, ``evohpo.search.batched.optimize`` stopping at ``--trials``
   finished trials), runs ``--trials`` trials (24: a population of 8) on
   digits twice: with ``batch_trials=1`` (one trial trained at a time) and with
   the estimator's ``batch_trials="auto"`` (8 on the CPU here; ``--batch-trials``
   changes it), where the trials of a batch train together with
   ``train_population`` (those of the same depth and batch size as one stack).
   Each run's wall time is split exclusively (each part is charged its time
   minus that of the parts nested in it):

   * sampler: the sampler's hooks, wrapped with timers as in
     ``bench/sampler_overhead.py``, less the storage calls they make;
   * storage: every call on the storage object the study uses (RDBStorage behind
     Optuna's cache, as a SQLite URL gives), split into calls from the sampler's
     hooks and all others (asking and telling trials, parameters, user
     attributes, the epoch reports, which GenomeObjective writes in one commit
     when the trial ends under a NopPruner). Sampler time plus its storage calls
     is what ``sampler_overhead.py`` reports;
   * trainer: the ``train_population`` calls GenomeObjective makes (one per
     batch), observed by wrapping that function in ``evohpo.search.objective``
     (the objective keeps no timings of its own). Inside it, the epoch passes
     over the training batches (*training*) and the validation passes after
     each epoch (*validation*) are timed directly, by wrapping the functions
     that run them, for stacks and for networks trained alone
     (``train_classifier``) alike; *setup* is the rest of the call (input
     checks, moving data, building the models or the stack, copies of the best
     weights, per-epoch bookkeeping). A stack's epoch pass trains all its
     members: the count is of passes, not of member epochs;
   * rest: the trial loop (``study.ask``/``tell``), ``suggest_genome`` and the
     objective's glue.

   The caption says how many trials trained in stacks of which sizes, and the
   work per trial: member epochs, training GFLOP (counted as in 2) and the
   rate of the training passes, useful and as done (with the stacks'
   padding). The two studies train different genomes after the first
   generation (the GA breeds a batch's children before any of them is told),
   so compare times per trial with the work per trial in view. A second
   table lists the storage calls by method (calls and milliseconds per
   trial), the costliest first.

4. **Stacked trainer.** Trials per second of ``train_population`` against
   ``train_classifier`` called for the same genomes one after the other, on
   digits (the split of 2), 10 epochs, early stopping off, member ``i`` seeded
   ``i``, for populations of k = 1, 4, 8 and 16 genomes: all ``1x64`` (relu,
   adam, batch 32), all ``2x256`` (batch 128), or mixed (drawn at random, seed
   0, from a space of 1 to 3 layers of 32 to 512 units, every activation and
   optimizer, dropout up to 0.5, batches of 32, 64 or 128: they stack by depth
   and batch size, the column *stacks* gives the sizes; a group of one trains
   as a stack of one, as ``train_population`` does by default, unless it is
   too large for a CPU stack). The two ways
   alternate which runs first in each of 5 repeats (after a warm-up), so that a
   busy spell of the machine hits both; the rates are the medians, the
   speed-up their ratio. GFLOP/s and the fractions of section 1's peak count
   training FLOPs as section 2 does, over the whole call (validation and setup
   included): *% of peak (stacked)* for the padded stack shapes, the work done;
   *useful* and *solo* for the members' own shapes.

Usage::

    python bench/throughput.py                  # full: several minutes on 2 CPU cores
    python bench/throughput.py --fast           # smoke run (CI): seconds
    python bench/throughput.py --device cuda    # the same on a GPU
    python bench/throughput.py --threads 2 --trials 40 --batch-trials 16

Tables are printed and written to ``bench/results/throughput_matmul.csv``,
``throughput_training.csv``, ``throughput_trial.csv``, ``throughput_storage.csv``
and ``throughput_stacked.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from _common import WrappedSampler, machine, markdown_table, write_csv
from optuna.storages import BaseStorage
from optuna.study import MaxTrialsCallback

import evohpo.search.objective
from evohpo import EvoSampler, Genome, LayerGene, SearchSpace
from evohpo.estimator.params import DEFAULT_SEARCH_SPACE
from evohpo.evolution.suggest import suggest_genome
from evohpo.search import batched
from evohpo.search.batch_size import auto_batch_trials
from evohpo.search.objective import GenomeObjective
from evohpo.search.splits import Standardizer
from evohpo.storage import COUNTED_STATES
from evohpo.training import loop as training_loop
from evohpo.training import population
from evohpo.training.config import TrainConfig, TrainResult
from evohpo.training.datasets import load_dataset
from evohpo.training.epochs import evaluate
from evohpo.training.loop import train_classifier
from evohpo.training.population import (
    CPU_STACK_MAX_MACS,
    MemberOutcome,
    plan_stacks,
    train_population,
)
from evohpo.training.stack_model import stack_widths

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
    trial_batches: tuple[int, ...]  # batch_trials of the studies compared
    trial_max_epochs: int
    trial_patience: int | None
    trial_space: SearchSpace
    trial_space_name: str
    stack_ks: tuple[int, ...]
    stack_epochs: int
    stack_repeats: int


def settings_for(args: argparse.Namespace, device: torch.device) -> Settings:
    if args.fast:
        trials = args.trials or 2
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
            trials=trials,
            trial_batches=(
                1,
                args.batch_trials
                or auto_batch_trials(device.type, trial_population(trials), trials),
            ),
            trial_max_epochs=2,
            trial_patience=None,
            # One depth and batch size: the trials of a batch train as one stack.
            trial_space=SearchSpace(max_layers=1, units=(16, 64), batch_sizes=(128,)),
            trial_space_name="a one-layer space",
            stack_ks=(1, 4),
            stack_epochs=1,
            stack_repeats=1,
        )
    trials = args.trials or 24
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
        trials=trials,
        trial_batches=(
            1,
            args.batch_trials or auto_batch_trials(device.type, trial_population(trials), trials),
        ),
        trial_max_epochs=args.max_epochs,
        trial_patience=args.patience or None,
        trial_space=DEFAULT_SEARCH_SPACE,
        trial_space_name="the estimator's default search space",
        stack_ks=(1, 4, 8, 16),
        stack_epochs=10,
        stack_repeats=5,
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
TRAINING = "training"
VALIDATION = "validation"
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
class TrainerLog:
    """What the objective handed the trainer, and the training work it got done.

    ``calls``: members per ``train_population`` call; ``stacks``: members per
    stack; ``epochs``: member epochs; ``useful_flops``: the members' training
    FLOPs (as section 2 counts them); ``padded_flops``: what stacks spent on
    padding on top.
    """

    calls: list[int] = field(default_factory=list)
    stacks: list[int] = field(default_factory=list)
    epochs: int = 0
    useful_flops: float = 0.0
    padded_flops: float = 0.0


def member_flops(shapes: Sequence[Shape], n_rows: int, epochs: int) -> float:
    """Training FLOPs of ``epochs`` epochs over ``n_rows`` rows at ``shapes`` (section 2)."""
    return float(n_rows * epochs * training_flops_per_row(shapes))


@contextmanager
def observed_trainer(clock: Clock, log: TrainerLog) -> Iterator[None]:
    """Time every ``train_population`` call GenomeObjective makes, and its parts.

    The objective returns only the trials' values, so the function it calls is
    wrapped where the objective looks it up. Inside it, the epoch passes over
    the training batches and the validation passes, of stacks and of networks
    trained alone (``train_classifier``), are charged to parts of their own;
    what is left of the call is setup and bookkeeping.
    """

    def train(genomes: Sequence[Any], *args: Any, **kwargs: Any) -> list[MemberOutcome]:
        with clock.section(TRAINER):
            outcomes = train_population(genomes, *args, **kwargs)
        log.calls.append(len(outcomes))
        n_rows, n_features = np.shape(args[0])
        for genome, outcome in zip(genomes, outcomes, strict=True):
            epochs = outcome.epochs_run if isinstance(outcome, TrainResult) else 0
            shapes = layer_shapes(genome, n_features, kwargs["n_classes"])
            log.epochs += epochs
            log.useful_flops += member_flops(shapes, n_rows, epochs)
        return outcomes

    train_stack = population._train_stack

    def stack(members: list[Any], data: Any, n_classes: int, *args: Any) -> None:
        log.stacks.append(len(members))
        train_stack(members, data, n_classes, *args)
        n_rows, n_features = data.x_train.shape
        genomes = [member.genome for member in members]
        padded = list(itertools.pairwise(stack_widths(genomes, n_features, n_classes)))
        for member in members:
            own = layer_shapes(member.genome, n_features, n_classes)
            epochs = member.epochs_run
            log.padded_flops += member_flops(padded, n_rows, epochs) - member_flops(
                own, n_rows, epochs
            )

    patches = (
        (evohpo.search.objective, "train_population", train),
        (population, "_train_stack", stack),
        (population, "_train_epoch", clock.timed(TRAINING, population._train_epoch)),
        (population, "_evaluate_stack", clock.timed(VALIDATION, population._evaluate_stack)),
        (training_loop, "_train_epoch", clock.timed(TRAINING, training_loop._train_epoch)),
        (training_loop, "evaluate", clock.timed(VALIDATION, evaluate)),
    )
    with ExitStack() as patched:
        for module, name, replacement in patches:
            patched.enter_context(mock.patch.object(module, name, replacement))
        yield


@dataclass
class StudyRun:
    """One study's measurements (section 3) with ``batch_trials`` trials trained together."""

    batch_trials: int
    n_trials: int
    parts: dict[str, float]
    entries: Counter[str]
    storage_calls: Counter[tuple[str, str]]
    storage_seconds: dict[tuple[str, str], float]
    trainer: TrainerLog

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def per_trial(self, count: float) -> str:
        return f"{count / self.n_trials:.2f}"

    def storage_count(self, part: str) -> str:
        return self.per_trial(sum(n for (p, _), n in self.storage_calls.items() if p == part))

    def split(self) -> list[tuple[str, float, str]]:
        """(part, seconds, count per trial) in the order of the table."""
        parts = defaultdict(float, self.parts)
        return [
            (
                "training (epoch passes: forward, backward, optimizer)",
                parts[TRAINING],
                self.per_trial(self.entries[TRAINING]),
            ),
            ("validation passes", parts[VALIDATION], self.per_trial(self.entries[VALIDATION])),
            (
                "trainer setup and bookkeeping",
                parts[TRAINER],
                self.per_trial(len(self.trainer.calls)),
            ),
            ("sampler hooks (own work)", parts[SAMPLER], self.per_trial(self.entries[SAMPLER])),
            (
                "storage calls from the sampler",
                parts[SAMPLER_STORAGE],
                self.storage_count(SAMPLER_STORAGE),
            ),
            (
                "storage calls of study, trials, objective",
                parts[STORAGE],
                self.storage_count(STORAGE),
            ),
            ("rest (Optuna loop, suggest_genome, glue)", parts[REST], ""),
            ("total (optimize wall time)", self.total, ""),
        ]

    def describe(self) -> str:
        sizes = Counter(self.trainer.stacks)
        shown = ", ".join(
            f"{n} stack{'s' if n > 1 else ''} of {size}" for size, n in sorted(sizes.items())[::-1]
        )
        trainer = self.trainer
        training = self.parts.get(TRAINING, 0.0)
        done = trainer.useful_flops + trainer.padded_flops
        return (
            f"batch_trials={self.batch_trials}: {self.total:.1f} s, {len(trainer.calls)} "
            f"train_population calls, {sum(trainer.stacks)} of {self.n_trials} trials "
            f"trained in stacks ({shown or 'none'}), the others alone; "
            f"{trainer.epochs / self.n_trials:.1f} epochs and "
            f"{trainer.useful_flops / self.n_trials / 1e9:.2f} training GFLOP per trial, "
            f"training passes at {trainer.useful_flops / training / 1e9:.1f} GFLOP/s useful, "
            f"{done / training / 1e9:.1f} done"
        )


def trial_objective(device: torch.device, settings: Settings) -> GenomeObjective:
    """GenomeObjective as EvoSearchClassifier builds it (0.2 holdout, accuracy)."""
    data = load_dataset("digits")
    return GenomeObjective(
        data.X,
        data.y,
        space=settings.trial_space,
        train_config=TrainConfig(
            max_epochs=settings.trial_max_epochs, patience=settings.trial_patience, device=device
        ),
        seed=0,
    )


def trial_population(n_trials: int) -> int:
    """EvoSearchClassifier's population size for this many trials."""
    return min(20, max(4, n_trials // 3))


def run_study(device: torch.device, settings: Settings, batch_trials: int) -> StudyRun:
    objective = trial_objective(device, settings)
    clock = Clock(device)
    sampler = WrappedSampler(
        EvoSampler(
            population_size=trial_population(settings.trials),
            search_space=settings.trial_space,
            seed=0,
        ),
        lambda hook: clock.timed(SAMPLER, hook),
    )
    trainer = TrainerLog()
    with tempfile.TemporaryDirectory() as tmp:
        storage, log = timed_storage(f"sqlite:///{Path(tmp) / 'throughput.db'}", clock)
        study = optuna.create_study(
            storage=storage,
            sampler=sampler,
            pruner=optuna.pruners.NopPruner(),
            direction="maximize",
        )
        # As EvoSearchClassifier runs it: batched.optimize, stopping at n_trials finished.
        stop = MaxTrialsCallback(settings.trials, states=COUNTED_STATES)
        with observed_trainer(clock, trainer):
            clock.restart()
            log.clear()
            batched.optimize(
                study,
                objective,
                batch_trials=batch_trials,
                n_trials=settings.trials,
                callbacks=[stop],
            )
            clock.stop()
        # Copies taken before the calls below add to them.
        run = StudyRun(
            batch_trials=batch_trials,
            n_trials=len(study.trials),
            parts=dict(clock.seconds),
            entries=Counter(clock.entries),
            storage_calls=Counter(log.calls),
            storage_seconds=dict(log.seconds),
            trainer=trainer,
        )
        storage.remove_session()
    if sum(trainer.calls) != run.n_trials or not run.entries[TRAINING]:
        raise RuntimeError(
            f"Saw {sum(trainer.calls)} trainer members in {len(trainer.calls)} calls and "
            f"{run.entries[TRAINING]} epoch passes for {run.n_trials} trials."
        )
    print(f"  {run.describe()}", flush=True)
    return run


@dataclass
class TrialReport:
    parts: list[dict[str, Any]]
    storage: list[dict[str, Any]]
    caption: str


def measure_trials(device: torch.device, settings: Settings) -> TrialReport:
    """The study run once per ``settings.trial_batches``; one column group per run."""
    runs = [run_study(device, settings, batch) for batch in settings.trial_batches]
    part_rows: list[dict[str, Any]] = []
    for index, (name, _, _) in enumerate(runs[0].split()):
        row: dict[str, Any] = {"part": name}
        for run in runs:
            _, seconds, count = run.split()[index]
            tag = f"({run.batch_trials})"
            row[f"ms/trial {tag}"] = round(seconds / run.n_trials * 1e3, 2)
            row[f"share {tag}"] = f"{seconds / run.total:.1%}"
            row[f"count/trial {tag}"] = count
        part_rows.append(row)

    keys = sorted(
        {key for run in runs for key in run.storage_seconds},
        key=lambda key: [-run.storage_seconds.get(key, 0.0) for run in runs],
    )
    storage_rows: list[dict[str, Any]] = []
    for part, method in keys:
        row = {
            "caller": "sampler" if part == SAMPLER_STORAGE else "study, trial, objective",
            "method": method,
        }
        for run in runs:
            tag = f"({run.batch_trials})"
            calls = run.storage_calls.get((part, method), 0)
            seconds = run.storage_seconds.get((part, method), 0.0)
            row[f"calls/trial {tag}"] = run.per_trial(calls)
            row[f"ms/call {tag}"] = round(seconds / calls * 1e3, 3) if calls else ""
            row[f"ms/trial {tag}"] = round(seconds / run.n_trials * 1e3, 2)
        storage_rows.append(row)

    objective = trial_objective(device, settings)
    n_train = round(objective.train_size)
    caption = (
        f"{runs[0].n_trials} trials on digits ({n_train} training, "
        f"{objective.n_samples - n_train} validation rows), SQLite, "
        f"EvoSampler(population_size={trial_population(settings.trials)}), "
        f"{settings.trial_space_name}, max_epochs {settings.trial_max_epochs}, patience "
        f"{settings.trial_patience}, NopPruner; (n) = batch_trials, trials trained together. "
        + "; ".join(run.describe() for run in runs)
        + ". Count: epoch passes (one per stack and epoch), validation passes, "
        "train_population calls, sampler hook calls, storage calls"
    )
    return TrialReport(part_rows, storage_rows, caption)


# -- 4. stacked trainer ----------------------------------------------------------------------
#: Most members per stack (train_population's default); k = 16 is one stack.
MAX_STACK = 16

#: The mixed population's space: every optimizer and activation, dropout, three batch sizes.
MIXED_SPACE = SearchSpace(
    min_layers=1,
    max_layers=3,
    units=(32, 512),
    dropout=(0.0, 0.5),
    optimizers=("sgd", "adam", "adamw", "rmsprop"),
    learning_rate=(1e-4, 1e-2),
    batch_sizes=(32, 64, 128),
)


def drawn_genomes(space: SearchSpace, n: int, seed: int) -> list[Genome]:
    """``n`` genomes drawn at random from ``space`` (as a search's first trials are)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [suggest_genome(study.ask(), space) for _ in range(n)]


def stacked_populations(n: int) -> dict[str, list[Genome]]:
    """The populations of section 4, ``n`` genomes each; a k-member run takes the first k."""
    small = Genome((LayerGene(64, "relu", 0.0),), "adam", 1e-3, 0.0, 32)
    wide = Genome(
        (LayerGene(256, "relu", 0.0), LayerGene(256, "relu", 0.0)), "adam", 1e-3, 0.0, 128
    )
    return {
        "1x64, batch 32": [small] * n,
        "2x256, batch 128": [wide] * n,
        "mixed": drawn_genomes(MIXED_SPACE, n, seed=0),
    }


def stack_flops(
    genomes: Sequence[Genome],
    outcomes: Sequence[MemberOutcome],
    n_train: int,
    n_features: int,
    n_classes: int,
    cap: int | None,
) -> tuple[float, float]:
    """Training FLOPs of a ``train_population`` run: as done (padded stacks) and useful.

    Counted as in section 2, per member and epoch run: a member of a stack does
    the work of the stack's padded widths (a stack of one: its own widths).
    """
    done = useful = 0.0
    for stack in plan_stacks(genomes, n_train, n_features, n_classes, MAX_STACK, cap):
        widths = stack_widths([genomes[i] for i in stack], n_features, n_classes)
        padded = training_flops_per_row(list(itertools.pairwise(widths)))
        for index in stack:
            outcome = outcomes[index]
            epochs = outcome.epochs_run if isinstance(outcome, TrainResult) else 0
            own = training_flops_per_row(layer_shapes(genomes[index], n_features, n_classes))
            useful += n_train * epochs * own
            done += n_train * epochs * padded
    return done, useful


def measure_stacked(device: torch.device, settings: Settings, peak: float) -> list[dict[str, Any]]:
    """Trials per second of train_population against train_classifier one genome at a time."""
    # What train_population plans on this device: on the CPU, large networks train alone.
    cap = CPU_STACK_MAX_MACS if device.type == "cpu" else None
    X_train, y_train, X_val, y_val, n_classes = digits_split()
    n_train, n_features = X_train.shape
    data = (X_train, y_train, X_val, y_val)

    def configs(k: int, epochs: int) -> list[TrainConfig]:
        return [
            TrainConfig(max_epochs=epochs, patience=None, device=device, seed=seed)
            for seed in range(k)
        ]

    def stacked(genomes: Sequence[Genome], epochs: int) -> tuple[float, list[MemberOutcome]]:
        synchronize(device)
        start = time.perf_counter()
        outcomes = train_population(
            genomes,
            *data,
            n_classes=n_classes,
            configs=configs(len(genomes), epochs),
            max_stack=MAX_STACK,
        )
        synchronize(device)
        return time.perf_counter() - start, outcomes

    def solo(genomes: Sequence[Genome], epochs: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        for genome, config in zip(genomes, configs(len(genomes), epochs), strict=True):
            train_classifier(genome, *data, n_classes=n_classes, config=config)
        synchronize(device)
        return time.perf_counter() - start

    populations = stacked_populations(max(settings.stack_ks))
    for genomes in populations.values():  # warm-up: allocations, kernel selection
        stacked(genomes[:2], 1)
        solo(genomes[:1], 1)

    rows = []
    for name, genomes_all in populations.items():
        for k in settings.stack_ks:
            genomes = genomes_all[:k]
            stacked_seconds: list[float] = []
            solo_seconds: list[float] = []
            outcomes: list[MemberOutcome] = []
            for repeat in range(settings.stack_repeats):
                # Alternate the order, so that a slow spell of the machine hits both.
                if repeat % 2:
                    solo_seconds.append(solo(genomes, settings.stack_epochs))
                seconds, outcomes = stacked(genomes, settings.stack_epochs)
                stacked_seconds.append(seconds)
                if not repeat % 2:
                    solo_seconds.append(solo(genomes, settings.stack_epochs))
            failed = [o for o in outcomes if not isinstance(o, TrainResult)]
            if failed:
                raise RuntimeError(f"{name}, k={k}: train_population returned {failed[0]!r}")
            plan = plan_stacks(genomes, n_train, n_features, n_classes, MAX_STACK, cap)
            sizes = sorted(map(len, plan), reverse=True)
            done, useful = stack_flops(genomes, outcomes, n_train, n_features, n_classes, cap)
            stacked_s = statistics.median(stacked_seconds)
            solo_s = statistics.median(solo_seconds)
            rows.append(
                {
                    "population": name,
                    "k": k,
                    "stacks": "+".join(map(str, sizes)),
                    "solo trials/s": round(k / solo_s, 2),
                    "stacked trials/s": round(k / stacked_s, 2),
                    "speed-up": f"{solo_s / stacked_s:.2f}x",
                    "stacked GFLOP/s": round(done / stacked_s / 1e9, 2),
                    "% of peak (stacked)": f"{done / stacked_s / 1e9 / peak:.1%}",
                    "useful % of peak": f"{useful / stacked_s / 1e9 / peak:.1%}",
                    "solo % of peak": f"{useful / solo_s / 1e9 / peak:.1%}",
                }
            )
            print(f"  stacked {rows[-1]}", flush=True)
    return rows


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
        "--trials", type=int, default=None, help="study trials (default 24; fast 2)"
    )
    parser.add_argument(
        "--batch-trials",
        type=int,
        default=None,
        help="trials trained together in the second study (default: as the estimator's 'auto')",
    )
    parser.add_argument(
        "--max-epochs", type=int, default=100, help="per study trial, full mode (default 100)"
    )
    parser.add_argument(
        "--patience", type=int, default=20, help="per study trial, full mode; 0: none (default 20)"
    )
    parser.add_argument(
        "--sections",
        default="1234",
        help="which of sections 2-4 to run, as digits (default 1234); section 1 always runs, "
        "as the others' peak reference",
    )
    parser.add_argument(
        "--stack-repeats", type=int, default=None, help="section 4's repeats (default 5; fast 1)"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    settings = settings_for(args, device)
    if args.stack_repeats is not None:
        settings = dataclasses.replace(settings, stack_repeats=args.stack_repeats)
    started = time.perf_counter()

    print(describe_setup(device))
    print(f"load average at start: {load_average()}", flush=True)

    print("\n1. matmul rate", flush=True)
    peak, matmul_csv, matmul_table = measure_matmul(device, settings)
    training: list[dict[str, Any]] = []
    trials: TrialReport | None = None
    stacked: list[dict[str, Any]] = []
    if "2" in args.sections:
        print("\n2. trainer rate", flush=True)
        training = measure_training(device, settings, peak)
    if "3" in args.sections:
        print("\n3. time per trial", flush=True)
        trials = measure_trials(device, settings)
    if "4" in args.sections:
        print("\n4. stacked trainer", flush=True)
        stacked = measure_stacked(device, settings, peak)

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
    tables: list[tuple[str, list[dict[str, Any]]]] = [("throughput_matmul.csv", matmul_csv)]
    if training:
        print(
            f"\ntrainer rate on digits ({settings.train_epochs} epochs; genome = layers x width, "
            "relu, adam); training time = median epoch minus one validation pass\n"
        )
        print(markdown_table(training))
        tables.append(("throughput_training.csv", training))
    if trials is not None:
        print(f"\ntime per trial: {trials.caption}\n")
        print(markdown_table(trials.parts))
        shown = 8
        print(f"\nstorage calls by method, the {shown} costliest\n")
        print(markdown_table(trials.storage[:shown]))
        tables += [
            ("throughput_trial.csv", trials.parts),
            ("throughput_storage.csv", trials.storage),
        ]
    if stacked:
        print(
            f"\nstacked trainer: train_population against train_classifier one genome after the "
            f"other, the same k genomes (seeds 0..k-1) on digits, {settings.stack_epochs} epochs, "
            f"early stopping off; median of {settings.stack_repeats} alternating repeats; "
            "% of peak over the whole call (validation and setup included), counting the padded "
            "stacks' work, useful % only the members' own\n"
        )
        print(markdown_table(stacked))
        tables.append(("throughput_stacked.csv", stacked))
    print()
    for name, rows in tables:
        print(f"CSV: {write_csv(name, rows)}")


if __name__ == "__main__":
    main()
