"""Trials asked k at a time and trained together (evohpo.search.batched)."""

from __future__ import annotations

import logging
import time

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from evohpo.evolution.lineage import LINEAGE_ATTR, Lineage
from evohpo.evolution.sampler import EvoSampler
from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import InvalidParameterError
from evohpo.search import batched
from evohpo.search.objective import GenomeObjective
from evohpo.storage import open_storage
from evohpo.training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPACE = SearchSpace(
    max_layers=2,
    units=(8, 32),
    dropout=(0.0, 0.3),
    optimizers=("adam", "sgd", "rmsprop", "adamw"),
    batch_sizes=(32,),
)
CONFIG = TrainConfig(max_epochs=4, patience=None, device="cpu")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=2.0, size=(3, 5))
    y = rng.integers(0, 3, size=150)
    return centers[y] + rng.normal(size=(150, 5)), y


def objective(data, **kwargs):
    X, y = data
    return GenomeObjective(X, y, space=SPACE, train_config=CONFIG, seed=3, **kwargs)


def study_at(url, sampler_seed=0, pruner=None, name="s"):
    return optuna.create_study(
        study_name=name,
        storage=open_storage(url),
        direction="maximize",
        sampler=EvoSampler(population_size=4, search_space=SPACE, seed=sampler_seed),
        pruner=pruner or optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


class PruneOdd(optuna.pruners.BasePruner):
    """Prunes odd-numbered trials at their second report."""

    def prune(self, study, trial):
        return trial.number % 2 == 1 and trial.last_step is not None and trial.last_step >= 2


def test_a_batched_search_prunes_and_resumes(data, tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    study = study_at(url, pruner=PruneOdd())
    batched.optimize(study, objective(data), batch_trials=4, n_trials=6)
    trials = study.trials
    assert len(trials) == 6
    for trial in trials:
        assert "genome" in trial.user_attrs
        assert trial.user_attrs["stop_reason"] == ("pruned" if trial.number % 2 else "max_epochs")
        expected = TrialState.PRUNED if trial.number % 2 else TrialState.COMPLETE
        assert trial.state == expected
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert all(t.last_step == 2 for t in pruned)  # pruned at the epoch the pruner asked
    assert all(sorted(t.intermediate_values) == [1, 2, 3, 4] for t in trials if t.number % 2 == 0)
    resumed = study_at(url, pruner=PruneOdd())
    batched.optimize(resumed, objective(data), batch_trials=3, n_trials=5)
    assert len(resumed.trials) == 11
    assert not [t for t in resumed.trials if t.state == TrialState.RUNNING]
    # Breeding started once enough trials completed: bred trials have parents that
    # finished before them.
    lineages = [Lineage.from_attr(t.user_attrs.get(LINEAGE_ATTR)) for t in resumed.trials]
    assert all(lineage is not None for lineage in lineages)
    trials = resumed.trials
    bred = [(t, lin) for t, lin in zip(trials, lineages, strict=True) if lin and lin.parents]
    assert bred
    for trial, lineage in bred:
        assert all(trials[p].datetime_complete < trial.datetime_start for p in lineage.parents)


def test_batched_search_is_reproducible_and_seeds_each_trial(data):
    def run() -> list[float | None]:
        study = optuna.create_study(
            direction="maximize", sampler=EvoSampler(population_size=4, search_space=SPACE, seed=1)
        )
        batched.optimize(study, objective(data), batch_trials=4, n_trials=8)
        return [t.value for t in study.trials]

    first = run()
    assert first == run()
    assert len(set(first)) > 1


def test_a_trial_in_a_batch_gets_what_it_gets_alone_without_dropout(data):
    # Moderate learning rates: a chaotic run would turn rounding into different results.
    space = SearchSpace(
        max_layers=2,
        units=(8, 32),
        dropout=(0.0, 0.0),
        learning_rate=(1e-3, 1e-2),
        optimizers=("adam", "adamw", "rmsprop"),
        batch_sizes=(32,),
    )
    X, y = data
    make = lambda: GenomeObjective(X, y, space=space, train_config=CONFIG, seed=5)  # noqa: E731

    def values(batch_trials: int) -> list[float | None]:
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.RandomSampler(seed=4)
        )
        batched.optimize(study, make(), batch_trials=batch_trials, n_trials=6)
        return [t.value for t in study.trials]

    np.testing.assert_allclose(values(6), values(1), rtol=1e-6)


def test_callbacks_see_every_trial_and_can_stop(data):
    seen: list[int] = []

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seen.append(trial.number)
        if len(seen) == 5:
            study.stop()

    study = optuna.create_study(direction="maximize")
    batched.optimize(study, objective(data), batch_trials=4, n_trials=20, callbacks=[callback])
    assert seen == [0, 1, 2, 3, 4, 5, 6, 7]  # stops after the batch it was told in


def test_a_timeout_stops_starting_batches(data):
    study = optuna.create_study(direction="maximize")
    started = time.monotonic()
    batched.optimize(study, objective(data), batch_trials=2, timeout=0.5)
    assert len(study.trials) >= 2
    assert len(study.trials) % 2 == 0
    assert time.monotonic() - started < 30


class FailingObjective:
    """Trains trial 1 of each batch into an error, the others to a value."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, trial):  # pragma: no cover - the batched path is used
        raise AssertionError

    def train_trials(self, trials):
        self.calls += 1
        return [ValueError("bad genome") if t.number % 3 == 1 else 0.5 for t in trials]


def test_failures_fail_their_trial_and_raise_unless_caught():
    study = optuna.create_study(direction="maximize")
    with pytest.raises(ValueError, match="bad genome"):
        batched.optimize(study, FailingObjective(), batch_trials=3, n_trials=6)
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    batched.optimize(study, FailingObjective(), batch_trials=3, n_trials=6, catch=(ValueError,))
    assert len(study.trials) == 9
    assert [t.state for t in study.trials].count(TrialState.FAIL) == 3


class BrokenObjective:
    def __call__(self, trial):  # pragma: no cover
        raise AssertionError

    def train_trials(self, trials):
        raise RuntimeError("device lost")


def test_an_error_of_the_whole_batch_fails_every_trial():
    study = optuna.create_study(direction="maximize")
    with pytest.raises(RuntimeError, match="device lost"):
        batched.optimize(study, BrokenObjective(), batch_trials=3, n_trials=6)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3


class SlowObjective:
    """Waits past the grace period, then asks Optuna to fail stale trials."""

    def __call__(self, trial):  # pragma: no cover
        raise AssertionError

    def train_trials(self, trials):
        time.sleep(3.5)
        optuna.storages.fail_stale_trials(trials[0].study)
        return [1.0 for _ in trials]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_running_trials_of_a_batch_keep_their_heartbeats(tmp_path):
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1, grace_period=2
    )
    study = optuna.create_study(storage=storage, direction="maximize")
    batched.optimize(study, SlowObjective(), batch_trials=2, n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


def test_batch_trials_is_checked(data):
    study = optuna.create_study(direction="maximize")
    with pytest.raises(InvalidParameterError, match="batch_trials"):
        batched.optimize(study, objective(data), batch_trials=0, n_trials=1)


def test_a_trial_whose_genome_fails_does_not_stop_its_batch(data, monkeypatch):
    from evohpo.search import objective as objective_module

    real = objective_module.suggest_genome

    def suggest(trial, space):
        if trial.number == 1:
            raise ValueError("no genome for you")
        return real(trial, space)

    monkeypatch.setattr(objective_module, "suggest_genome", suggest)
    study = optuna.create_study(direction="maximize")
    batched.optimize(study, objective(data), batch_trials=3, n_trials=3, catch=(ValueError,))
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]


class ConstantObjective:
    def __call__(self, trial):  # pragma: no cover
        raise AssertionError

    def train_trials(self, trials):
        return [0.5 for _ in trials]


def test_a_study_total_counts_other_workers_running_trials():
    study = optuna.create_study(direction="maximize")
    others = [study.ask() for _ in range(3)]  # another worker's running trials
    total = (5, (TrialState.COMPLETE,))
    sizes = []

    class Recording(ConstantObjective):
        def train_trials(self, trials):
            sizes.append(len(trials))
            if len(sizes) == 1:  # the other worker finishes one trial, fails two
                study.tell(others[0], 0.5)
                for trial in others[1:]:
                    study.tell(trial, state=TrialState.FAIL)
            return super().train_trials(trials)

    batched.optimize(study, Recording(), batch_trials=4, study_total=total)
    # Room for two at first; the two failed trials leave room for two more.
    assert sizes == [2, 2]
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 5
    assert batched._ask_within_total(study, 4, *total) is None


def test_the_room_left_is_looked_at_before_each_ask(monkeypatch):
    """A trial another worker asks between two of ours takes our place."""
    study = optuna.create_study(direction="maximize")
    other = optuna.load_study(study_name=study.study_name, storage=study._storage)
    ask = study.ask

    def ask_while_another_worker_asks(*args, **kwargs):
        trial = ask(*args, **kwargs)
        other.ask()
        return trial

    monkeypatch.setattr(study, "ask", ask_while_another_worker_asks)
    trials = batched._ask_within_total(study, 4, 3, (TrialState.COMPLETE,))
    assert trials is not None
    assert len(trials) == 2  # ours, theirs, ours, theirs
    assert len(study.trials) == 4


def _wait_on_a_running_trial(seconds: float) -> tuple[optuna.Study, optuna.Trial]:
    """A run whose total others' running trial fills, left waiting for ``seconds``."""
    study = optuna.create_study(direction="maximize")
    study.tell(study.ask(), 0.5)
    stuck = study.ask()  # another process's trial, still running
    batched.optimize(
        study,
        ConstantObjective(),
        batch_trials=2,
        timeout=seconds,
        study_total=(2, (TrialState.COMPLETE,)),
    )
    return study, stuck


def _wait_notices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]


def test_a_run_that_waits_long_for_others_running_trials_says_so(caplog, monkeypatch):
    """Others' running trials fill the total: the run waits and, once the wait is long,
    says which trials it waits for (once per interval, not at every look)."""
    monkeypatch.setattr(batched, "_WAIT_FOR_OTHERS", 0.05)
    monkeypatch.setattr(batched, "_WAIT_NOTICE_EVERY", 0.25)
    with caplog.at_level(logging.WARNING, logger="evohpo"):
        study, stuck = _wait_on_a_running_trial(0.6)
    waits = _wait_notices(caplog)
    assert 1 <= len(waits) <= 2  # about a dozen looks, a notice every 0.25 s after the first
    assert f"(numbers [{stuck.number}])" in waits[0]
    assert "total of 2" in waits[0]
    assert len(study.trials) == 2  # nothing started while waiting


def test_a_short_wait_for_others_running_trials_is_quiet(caplog, monkeypatch):
    """A worker at the end of a study waits for the others' last trials: that is normal,
    and not worth a warning."""
    monkeypatch.setattr(batched, "_WAIT_FOR_OTHERS", 0.05)
    with caplog.at_level(logging.WARNING, logger="evohpo"):
        study, _ = _wait_on_a_running_trial(0.5)
    assert _wait_notices(caplog) == []
    assert len(study.trials) == 2


def test_a_stop_keeps_the_trials_of_its_batch_that_finished(data, monkeypatch):
    # Members that train one after another (lone networks, conv genomes, stacks of
    # other depths): a stop during the second keeps the first one's result.
    from evohpo.exceptions import StopRequested
    from evohpo.training import population

    monkeypatch.setattr(population, "plan_stacks", lambda genomes, *a, **k: [[0], [1], [2]])
    monkeypatch.setattr(population, "stackable", lambda *a: False)  # each with train_classifier
    real_alone = population._train_alone
    calls = []

    def stop_at_the_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise StopRequested("stopped by a signal")
        return real_alone(*args, **kwargs)

    monkeypatch.setattr(population, "_train_alone", stop_at_the_second)
    study = optuna.create_study(direction="maximize")
    with pytest.raises(StopRequested):
        batched.optimize(study, objective(data), batch_trials=3, n_trials=6)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] + [TrialState.FAIL] * 2
    first = study.trials[0]
    assert first.value == first.user_attrs["val_accuracy"]
    assert first.user_attrs["epochs_run"] == CONFIG.max_epochs


def test_members_whose_turn_comes_after_the_deadline_are_pruned_untrained(data, monkeypatch):
    from evohpo.training import population

    monkeypatch.setattr(population, "plan_stacks", lambda genomes, *a, **k: [[0], [1], [2]])
    monkeypatch.setattr(population, "stackable", lambda *a: False)  # each with train_classifier
    real_alone = population._train_alone

    def slow_first(*args, **kwargs):
        result = real_alone(*args, **kwargs)
        time.sleep(1.0)  # past the deadline below
        return result

    monkeypatch.setattr(population, "_train_alone", slow_first)
    search = objective(data)
    search.deadline = time.monotonic() + 0.8
    study = optuna.create_study(direction="maximize")
    batched.optimize(study, search, batch_trials=3, n_trials=3)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] + [TrialState.PRUNED] * 2
    for late in study.trials[1:]:
        assert late.user_attrs["stop_reason"] == "time_limit"
        assert late.user_attrs["epochs_run"] == 0


def test_a_signal_ends_the_wait_for_others_running_trials(monkeypatch):
    import os
    import signal
    import threading

    from evohpo._interrupt import GracefulStop

    monkeypatch.setattr(batched, "_WAIT_FOR_OTHERS", 0.05)
    guard = GracefulStop()
    sender = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    with guard.installed():
        sender.start()
        started = time.monotonic()
        _wait_on_a_running_trial(30.0)  # before, only the timeout ended it
        waited = time.monotonic() - started
    sender.join()
    assert guard.requested
    assert waited < 10, waited


def test_the_wait_fails_and_queues_the_trials_of_gone_processes(monkeypatch):
    import socket
    import subprocess
    import sys

    from evohpo.storage import FAIL_REASON_ATTR
    from evohpo.storage.ownership import OWNER_ATTR

    monkeypatch.setattr(batched, "_WAIT_FOR_OTHERS", 0.05)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    study = optuna.create_study(direction="maximize")
    study.tell(study.ask(), 0.5)
    orphan = study.ask()  # a worker of this machine that was killed: it never ends
    study._storage.set_trial_system_attr(
        orphan._trial_id, OWNER_ATTR, {"host": socket.gethostname(), "pid": gone.pid}
    )
    batched.optimize(
        study,
        ConstantObjective(),
        batch_trials=2,
        timeout=30.0,
        study_total=(3, (TrialState.COMPLETE,)),
    )
    trials = study.get_trials()
    assert trials[orphan.number].state == TrialState.FAIL
    assert "is gone" in trials[orphan.number].system_attrs[FAIL_REASON_ATTR]
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 3  # its retry ran here
    assert not [t for t in trials if t.state == TrialState.RUNNING]
