from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys

import numpy as np
import optuna
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.pruners import BasePruner
from optuna.trial import TrialState

from evohpo import Genome, LayerGene, SearchSpace
from evohpo._random import derive_seed
from evohpo.exceptions import InvalidParameterError
from evohpo.search import objective as objective_module
from evohpo.search.objective import GenomeObjective
from evohpo.search.splits import Standardizer, stratified_holdout, stratified_kfold
from evohpo.training.config import TrainConfig

TINY = SearchSpace(
    max_layers=2,
    units=(8, 16),
    optimizers=("adam",),
    learning_rate=(5e-3, 2e-2),
    batch_sizes=(32,),
)
CONFIG = TrainConfig(max_epochs=4, patience=None, device="cpu")
ATTRS = {"genome", "n_parameters", "train_seconds", "best_epoch", "epochs_run", "stop_reason"}


class AlwaysPrune(BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 5))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    return X, y


def _study(pruner: BasePruner | None = None) -> optuna.Study:
    return optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0), pruner=pruner
    )


def test_holdout_trial_stores_user_attrs_and_epoch_reports(data):
    X, y = data
    objective = GenomeObjective(X, y, space=TINY, train_config=CONFIG)
    study = _study()
    study.optimize(objective, n_trials=2)
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        attrs = trial.user_attrs
        assert attrs.keys() >= ATTRS | {"val_accuracy"}
        genome = Genome.from_json(attrs["genome"])
        assert TINY.contains(genome)
        assert genome.to_params() == trial.params
        assert attrs["n_parameters"] == genome.n_parameters(5, 3)
        assert attrs["train_seconds"] > 0
        assert 1 <= attrs["best_epoch"] <= attrs["epochs_run"] == 4
        assert attrs["stop_reason"] == "max_epochs"
        assert trial.value == attrs["val_accuracy"]
        # One report per epoch, 1-based; the value is the best epoch's accuracy.
        assert sorted(trial.intermediate_values) == [1, 2, 3, 4]
        assert trial.value == max(trial.intermediate_values.values())
        json.loads(attrs["genome"])


def test_trial_value_depends_only_on_seed_and_trial_number(data):
    X, y = data
    values = []
    for _ in range(2):
        study = _study()
        study.optimize(GenomeObjective(X, y, space=TINY, train_config=CONFIG, seed=3), n_trials=2)
        values.append([t.value for t in study.trials])
    assert values[0] == values[1]
    objective = GenomeObjective(X, y, space=TINY, train_config=CONFIG, seed=3)
    assert objective.trial_seed(7) == derive_seed(3, 7, "train")


def test_pruned_trial_records_why(data):
    X, y = data
    study = _study(AlwaysPrune())
    study.optimize(GenomeObjective(X, y, space=TINY, train_config=CONFIG), n_trials=2)
    for trial in study.trials:
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs["stop_reason"] == "pruned"
        assert list(trial.intermediate_values) == [1]  # pruned after the first epoch


def test_median_pruner_sees_every_epoch(data):
    X, y = data
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1)
    study = _study(pruner)
    study.optimize(GenomeObjective(X, y, space=TINY, train_config=CONFIG), n_trials=4)
    assert study.trials[0].state == TrialState.COMPLETE
    for trial in study.trials:
        assert trial.intermediate_values
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(1, len(steps) + 1))


def test_kfold_reports_running_mean_per_fold(data):
    X, y = data
    objective = GenomeObjective(X, y, space=TINY, train_config=CONFIG, cv=3)
    assert objective.n_splits == 3
    study = _study()
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    folds = trial.user_attrs["fold_scores"]
    assert len(folds) == 3
    assert trial.value == pytest.approx(statistics.fmean(folds))
    assert trial.intermediate_values == pytest.approx(
        {k: statistics.fmean(folds[:k]) for k in (1, 2, 3)}
    )
    assert trial.user_attrs["best_epoch"] == statistics.median_low(
        trial.user_attrs["fold_best_epochs"]
    )


def test_kfold_prunes_between_folds(data):
    X, y = data
    study = _study(AlwaysPrune())
    study.optimize(GenomeObjective(X, y, space=TINY, train_config=CONFIG, cv=3), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    assert len(trial.user_attrs["fold_scores"]) == 1


def test_validation_data_overrides_split(data):
    X, y = data
    objective = GenomeObjective(
        X[:100], y[:100], space=TINY, train_config=CONFIG, cv=5, validation_data=(X[100:], y[100:])
    )
    assert objective.n_splits == 1
    split = objective._splits[0]
    assert split.X_train.shape[0] == 100
    assert split.X_val.shape[0] == 50
    # fit_genome trains on both parts.
    assert objective.standardizer().mean == pytest.approx(X.mean(axis=0))


def test_standardisation_uses_training_rows_only(data):
    X, y = data
    X = X.copy()
    objective = GenomeObjective(X, y, space=TINY, train_config=CONFIG, validation_fraction=0.3)
    train, val = stratified_holdout(
        y, 0.3, np.random.default_rng(derive_seed(objective.seed, "split"))
    )
    split = objective._splits[0]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    np.testing.assert_allclose(split.X_train.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(split.X_val, (X[val] - mean) / std, rtol=1e-5, atol=1e-5)
    assert len(val) == pytest.approx(0.3 * len(y), abs=3)


def test_standardizer_keeps_constant_features_finite():
    X = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    scaled = Standardizer.fit(X).transform(X)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[:, 1], 0.0)
    np.testing.assert_allclose(scaled[:, 0].std(), 1.0, rtol=1e-6)


def test_diverged_training_returns_best_score_and_study_continues(data):
    X, y = data
    exploding = SearchSpace(
        max_layers=1, units=(16, 16), optimizers=("sgd",), learning_rate=(1e30, 1e31)
    )
    study = _study()
    study.optimize(GenomeObjective(X, y, space=exploding, train_config=CONFIG), n_trials=2)
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        assert trial.user_attrs["stop_reason"] == "diverged"
        assert 0.0 <= trial.value <= 1.0


def test_training_exception_fails_the_trial(data, monkeypatch):
    X, y = data

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(objective_module, "train_population", broken)
    objective = GenomeObjective(X, y, space=TINY, train_config=CONFIG)
    study = _study()
    with pytest.raises(RuntimeError, match="out of memory"):
        study.optimize(objective, n_trials=1)
    study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert "genome" in study.trials[1].user_attrs


@pytest.mark.parametrize(
    ("scoring", "low", "high"),
    [
        ("accuracy", 0.0, 1.0),
        ("balanced_accuracy", 0.0, 1.0),
        ("f1_macro", 0.0, 1.0),
        ("neg_log_loss", -math.inf, 0.0),
    ],
)
def test_scoring_sets_the_value(data, scoring, low, high):
    X, y = data
    study = _study()
    study.optimize(
        GenomeObjective(X, y, space=TINY, train_config=CONFIG, scoring=scoring), n_trials=1
    )
    trial = study.trials[0]
    assert low <= trial.value <= high
    assert 0.0 <= trial.user_attrs["val_accuracy"] <= 1.0
    if scoring != "accuracy":
        # Per-epoch reports stay accuracies, whatever the scoring.
        assert max(trial.intermediate_values.values()) == trial.user_attrs["val_accuracy"]


def test_fit_genome_trains_on_all_rows_for_the_given_epochs(data):
    X, y = data
    objective = GenomeObjective(X, y, space=TINY, train_config=CONFIG)
    genome = Genome((LayerGene(16, "relu", 0.0),), "adam", 1e-2, 0.0, 32)
    result = objective.fit_genome(genome, seed=1, epochs=3)
    assert result.epochs_run == 3
    assert result.stop_reason == "max_epochs"
    again = objective.fit_genome(genome, seed=1, epochs=3)
    assert [{**h, "seconds": 0} for h in again.history] == [
        {**h, "seconds": 0} for h in result.history
    ]
    probed = objective.fit_genome(genome, seed=1)
    assert 1 <= probed.epochs_run <= CONFIG.max_epochs


def _signals(n_rows, length, seed=0):
    """Noisy signals with a positive (class 1) or negative (class 0) pulse anywhere."""
    rng = np.random.default_rng(seed)
    X = rng.normal(scale=0.5, size=(n_rows, length))
    y = rng.integers(0, 2, size=n_rows)
    for row, start in enumerate(rng.integers(0, length - 3, size=n_rows)):
        X[row, start : start + 3] += 2.0 if y[row] else -2.0
    return X, y


CONV_SPACE = SearchSpace(
    max_layers=1,
    units=(8, 16),
    optimizers=("adam",),
    learning_rate=(5e-3, 2e-2),
    batch_sizes=(32,),
    input_shape=(2, 8),
    min_blocks=1,
    max_blocks=2,
    channels=(2, 6),
)


@pytest.mark.parametrize("input_shape", [None, (2, 8)])
def test_conv_genomes_train_on_flat_rows_of_the_input_shape(input_shape):
    X, y = _signals(120, 16)
    objective = GenomeObjective(
        X, y, space=CONV_SPACE, train_config=CONFIG, input_shape=input_shape
    )
    study = _study()
    study.optimize(objective, n_trials=2)

    assert objective.input_shape == (2, 8)
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        genome = Genome.from_json(trial.user_attrs["genome"])
        assert genome.body_depth >= 1
        assert trial.user_attrs["n_parameters"] == genome.n_parameters((2, 8), 2)
    best = Genome.from_json(study.best_trial.user_attrs["genome"])
    result = objective.fit_genome(best, seed=0, epochs=2)
    assert result.model(torch.zeros(3, 16)).shape == (3, 2)
    assert result.n_parameters == best.n_parameters((2, 8), 2)


def test_dense_genomes_ignore_the_input_shape(data):
    X, y = data
    objective = GenomeObjective(X, y, space=TINY, train_config=CONFIG, input_shape=(1, 5))
    genome = Genome((LayerGene(16, "relu", 0.0),), "adam", 1e-2, 0.0, 32)
    plain = GenomeObjective(X, y, space=TINY, train_config=CONFIG)

    result = objective.fit_genome(genome, seed=1, epochs=2)
    reference = plain.fit_genome(genome, seed=1, epochs=2)

    assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in reference.history]


@pytest.mark.parametrize(
    ("input_shape", "space", "match"),
    [
        ((2, 3), TINY, r"'input_shape' parameter .* \(2, 3\) holds 6, X has 5 features"),
        ((5, 1, 1, 1), TINY, r"'input_shape' parameter of GenomeObjective must be a tuple of 2"),
        ((0, 5), TINY, r"'input_shape' parameter of GenomeObjective must be a tuple of 2"),
        (None, CONV_SPACE, r"'input_shape' parameter .* \(2, 8\) holds 16, X has 5 features"),
        ((5, 1), CONV_SPACE, r"'input_shape' .* must be the space's input_shape \(2, 8\)"),
    ],
)
def test_bad_input_shape_names_the_setting(data, input_shape, space, match):
    X, y = data
    with pytest.raises(InvalidParameterError, match=match):
        GenomeObjective(X, y, space=space, input_shape=input_shape)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"validation_fraction": 1.0}, r"'validation_fraction' parameter of GenomeObjective"),
        ({"validation_fraction": 0}, r"'validation_fraction' parameter of GenomeObjective"),
        ({"cv": 1}, r"'cv' parameter of GenomeObjective must be an int >= 2"),
        (
            {"scoring": "nope"},
            r"'scoring' parameter of GenomeObjective must be a classification scorer",
        ),
        ({"scoring": 3}, r"'scoring' parameter of GenomeObjective must be a str or a callable"),
        ({"space": {"max_layers": 2}}, r"'space' parameter of GenomeObjective"),
        ({"train_config": {}}, r"'train_config' parameter of GenomeObjective"),
        ({"n_classes": 1}, r"'n_classes' parameter of GenomeObjective must be an int >= 3"),
        ({"validation_data": ([[1.0]], [0])}, r"'validation_data\[0\]' parameter .* 5 columns"),
        ({"validation_data": "nope"}, r"'validation_data' parameter of GenomeObjective"),
    ],
)
def test_bad_settings_name_the_parameter(data, kwargs, match):
    X, y = data
    with pytest.raises(InvalidParameterError, match=match):
        GenomeObjective(X, y, **kwargs)


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        ([[1.0, np.nan], [0.0, 1.0]], [0, 1], r"'X' parameter .* must be finite"),
        ([1.0, 2.0], [0, 1], r"'X' parameter .* non-empty 2-D array. Got shape \(2,\)"),
        (
            [[1.0], [2.0]],
            [0.0, 1.0],
            r"'y' parameter .* 1-D array of integer class indices\. Got dtype float64",
        ),
        ([[1.0], [2.0]], [0, 1, 1], r"'y' parameter .* 1-D array of 2 labels\. Got shape \(3,\)"),
        ([[1.0], [2.0]], [-1, 1], r"'y' parameter .* class indices >= 0"),
    ],
)
def test_bad_data_is_refused(X, y, match):
    with pytest.raises(InvalidParameterError, match=match):
        GenomeObjective(np.asarray(X), np.asarray(y))


def test_cv_larger_than_the_data_is_refused():
    X, y = np.zeros((3, 2)), np.array([0, 1, 1])
    with pytest.raises(InvalidParameterError, match=r"'cv' parameter .* number of samples \(3\)"):
        GenomeObjective(X, y, cv=4)


def test_kfold_refuses_more_folds_than_samples():
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'n_folds' parameter of stratified_kfold must be an int in the range "
        r"\[2, 3\] \(the number of samples\)\. Got 4 instead\.",
    ):
        stratified_kfold(np.array([0, 1, 1]), 4, np.random.default_rng(0))


def test_holdout_with_one_sample_per_class_is_refused():
    with pytest.raises(InvalidParameterError, match="at least 2 samples"):
        GenomeObjective(np.eye(2), np.array([0, 1]))


labels = st.lists(st.integers(0, 4), min_size=2, max_size=60)


@settings(max_examples=60, deadline=None)
@given(y=labels, fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**32))
def test_holdout_split_is_a_stratified_partition(y, fraction, seed):
    y = np.asarray(y)
    if np.bincount(y).max() < 2:
        return  # refused, see above
    train, val = stratified_holdout(y, fraction, np.random.default_rng(seed))
    assert len(val) >= 1
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(y)))
    for label in np.unique(y):
        count = int((y == label).sum())
        in_val = int((y[val] == label).sum())
        assert in_val <= count - 1  # every class trains
        assert abs(in_val - fraction * count) <= 1


@settings(max_examples=60, deadline=None)
@given(y=labels, k=st.integers(2, 6), seed=st.integers(0, 2**32))
def test_kfold_splits_partition_the_rows(y, k, seed):
    y = np.asarray(y)
    if len(y) < k:
        return
    folds = stratified_kfold(y, k, np.random.default_rng(seed))
    assert len(folds) == k
    vals = np.concatenate([val for _, val in folds])
    assert sorted(vals.tolist()) == list(range(len(y)))
    sizes = [len(val) for _, val in folds]
    assert max(sizes) - min(sizes) <= 1
    for train, val in folds:
        assert set(train.tolist()).isdisjoint(val.tolist())
        for label in np.unique(y):
            count = int((y == label).sum())
            assert abs(int((y[val] == label).sum()) - count / k) <= 1


def test_a_worker_scored_by_accuracy_does_not_load_scikit_learn():
    # What a worker process imports: scikit-learn costs it about a second of start-up
    # and is needed only for a named scorer.
    code = (
        "import sys, numpy as np, optuna\n"
        "from evohpo import SearchSpace\n"
        "from evohpo.search import batched\n"
        "from evohpo.search.objective import GenomeObjective\n"
        "from evohpo.training.config import TrainConfig\n"
        "X = np.random.default_rng(0).normal(size=(60, 4))\n"
        "y = np.arange(60) % 2\n"
        "space = SearchSpace(max_layers=1, units=(4, 8))\n"
        "objective = GenomeObjective(X, y, space=space, scoring='accuracy',\n"
        "    train_config=TrainConfig(max_epochs=1, device='cpu'))\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "study = optuna.create_study(direction='maximize')\n"
        "batched.optimize(study, objective, n_trials=1)\n"
        "print(len(study.trials), 'sklearn' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False"]
