from __future__ import annotations

import logging
import os
import pickle
import re
import sqlite3
import time
from dataclasses import replace

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from optuna.pruners import BasePruner
from sklearn.base import clone
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from evohpo import EvoSampler, EvoSearchClassifier, SearchSpace
from evohpo.estimator.params import DEFAULT_SEARCH_SPACE, check_settings
from evohpo.estimator.record import SEARCH_ATTR
from evohpo.evolution.describe import describe_genome
from evohpo.exceptions import (
    EvohpoError,
    InvalidParameterError,
    SearchSpaceError,
    StudyMismatchError,
)
from evohpo.storage import OWNER_ATTR

#: A space that trains in a blink and still learns the test problems.
TINY = {
    "max_layers": 1,
    "units": (16, 32),
    "dropout": (0.0, 0.1),
    "optimizers": ("adam",),
    "learning_rate": (1e-2, 3e-2),
    "batch_sizes": (32,),
}


def tiny(**overrides: object) -> EvoSearchClassifier:
    settings: dict[str, object] = {
        "n_trials": 2,
        "max_epochs": 4,
        "search_space": TINY,
        "device": "cpu",
        "random_state": 0,
    }
    settings.update(overrides)
    return EvoSearchClassifier(**settings)


class AlwaysPrune(BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=160, n_features=6, n_informative=4, n_classes=3, random_state=0
    )
    return X, y


# -- scikit-learn's own estimator suite ---------------------------------------------------------
# No check is expected to fail.
@parametrize_with_checks(
    [EvoSearchClassifier(n_trials=2, max_epochs=5, search_space=TINY, device="cpu")]
)
def test_sklearn_estimator_suite(estimator, check):
    check(estimator)


# -- the search ----------------------------------------------------------------------------------
def test_fit_exposes_the_search(data):
    X, y = data
    clf = tiny(n_trials=3).fit(X, y)
    assert clf.n_trials_ == 3
    assert clf.n_features_in_ == 6
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert isinstance(clf.study_, optuna.Study)
    assert clf.study_.direction == optuna.study.StudyDirection.MAXIMIZE
    best = clf.study_.trials[clf.best_index_]
    assert clf.best_score_ == best.value == clf.study_.best_value
    assert clf.best_params_ == best.params
    assert clf.best_genome_.to_params() == best.params
    assert SearchSpace.from_dict(TINY).contains(clf.best_genome_)
    assert isinstance(clf.best_model_, torch.nn.Module)
    assert clf.ensemble_models_[0] is clf.best_model_
    assert clf.ensemble_trials_[0] == best.number
    assert clf.ensemble_genomes_[0] == clf.best_genome_
    # 160 rows, about 128 of them trained on in a trial: the refit trains 1.25 times as long.
    assert abs(clf.refit_epochs_[0] - 1.25 * best.user_attrs["best_epoch"]) < 1
    assert clf.refit_time_ > 0
    proba = clf.predict_proba(X)
    assert proba.shape == (160, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(X), proba.argmax(axis=1))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-10)
    assert clf.score(X, y) > 0.6


def test_ties_of_score_go_to_the_lower_validation_loss():
    from evohpo.estimator.results import rank_key

    def trial(number, value, loss):
        t = optuna.trial.create_trial(value=value, user_attrs={"val_loss": loss})
        t.number = number
        return t

    trials = [trial(0, 0.9, 0.5), trial(1, 0.9, 0.2), trial(2, 0.8, 0.1), trial(3, 0.9, None)]
    assert max(trials, key=rank_key).number == 1
    assert max([trials[0], trials[3]], key=rank_key).number == 0


def test_ensemble_members_are_the_best_distinct_trials():
    from evohpo.estimator.refit import ensemble_members

    def trial(number, value, units):
        t = optuna.trial.create_trial(
            value=value,
            params={"units": units},
            distributions={"units": optuna.distributions.IntDistribution(1, 99)},
            user_attrs={"val_loss": 0.5},
        )
        t.number = number
        return t

    trials = [trial(0, 0.7, 1), trial(1, 0.9, 2), trial(2, 0.9, 2), trial(3, 0.8, 3)]
    assert [t.number for t in ensemble_members(trials, 5)] == [1, 3, 0]  # #2 repeats #1
    assert [t.number for t in ensemble_members(trials, 2)] == [1, 3]
    assert [t.number for t in ensemble_members(trials, 1)] == [1]


def test_ensemble_averages_the_members(data):
    X, y = data
    clf = tiny(n_trials=4, ensemble_size=3).fit(X, y)
    assert len(clf.ensemble_models_) == len(clf.ensemble_trials_) == 3
    assert len(set(clf.ensemble_trials_)) == 3
    scores = [clf.study_.trials[n].value for n in clf.ensemble_trials_]
    assert scores == sorted(scores, reverse=True)
    assert [len(clf.refit_epochs_), len(clf.ensemble_genomes_)] == [3, 3]
    from evohpo.training.predict import predict_proba

    scaled = clf._scaler.transform(X)
    members = [predict_proba(m, scaled) for m in clf.ensemble_models_]
    np.testing.assert_allclose(clf.predict_proba(X), np.mean(members, axis=0), rtol=1e-12)
    assert not np.allclose(members[0], members[1])
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), clf.predict_proba(X), rtol=1e-10)
    # The best member is the model a refit of the best genome alone makes.
    single = tiny(n_trials=4, ensemble_size=1).fit(X, y)
    assert single.ensemble_trials_ == clf.ensemble_trials_[:1]
    # The best member trains with the same seed and epochs alone or in the ensemble's
    # stack; only its dropout masks come from the stack's stream.
    assert single.best_genome_ == clf.best_genome_
    assert single.refit_epochs_ == clf.refit_epochs_[:1]
    if all(layer.dropout == 0.0 for layer in clf.best_genome_.layers):
        np.testing.assert_allclose(
            predict_proba(single.best_model_, scaled), members[0], rtol=1e-4, atol=1e-6
        )
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    assert restored.best_model_ is restored.ensemble_models_[0]


def test_cv_results_load_into_pandas(data):
    X, y = data
    clf = tiny(n_trials=3).fit(X, y)
    frame = pd.DataFrame(clf.cv_results_)
    assert len(frame) == 3
    assert frame["number"].tolist() == [0, 1, 2]
    assert set(frame["state"]) == {"COMPLETE"}
    assert frame.loc[clf.best_index_, "rank_test_score"] == 1
    assert frame.loc[clf.best_index_, "mean_test_score"] == clf.best_score_
    assert sorted(frame["rank_test_score"]) == sorted(
        frame["mean_test_score"].rank(ascending=False, method="min").astype(int)
    )
    assert {"params", "param_n_layers", "param_layer0.units", "mean_fit_time"} <= set(frame)
    assert {"n_parameters", "best_epoch", "stop_reason", "genome", "std_test_score"} <= set(frame)
    assert (frame["std_test_score"] == 0.0).all()
    trials = clf.trials_dataframe()
    assert len(trials) == 3
    assert "user_attrs_genome" in trials


def test_kfold_search(data):
    X, y = data
    clf = tiny(cv=3).fit(X, y)
    frame = pd.DataFrame(clf.cv_results_)
    splits = frame[["split0_test_score", "split1_test_score", "split2_test_score"]]
    np.testing.assert_allclose(splits.mean(axis=1), frame["mean_test_score"])
    np.testing.assert_allclose(splits.std(axis=1, ddof=0), frame["std_test_score"])
    assert all(len(t.intermediate_values) == 3 for t in clf.study_.trials)


@pytest.mark.parametrize(
    ("sampler", "kind"),
    [
        ("ga", EvoSampler),
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
    ],
)
def test_sampler_names(data, sampler, kind):
    X, y = data
    clf = tiny(sampler=sampler).fit(X, y)
    assert isinstance(clf.study_.sampler, kind)


def test_sampler_instance_is_copied_not_consumed(data):
    X, y = data
    sampler = optuna.samplers.RandomSampler(seed=5)
    state = pickle.dumps(sampler)
    first = tiny(sampler=sampler).fit(X, y)
    assert first.study_.sampler is not sampler
    assert pickle.dumps(sampler) == state
    second = tiny(sampler=sampler).fit(X, y)
    assert first.best_params_ == second.best_params_


def test_evosampler_instance_is_copied_not_shared(data):
    X, y = data
    sampler = EvoSampler(population_size=2, seed=0)
    first = tiny(sampler=sampler).fit(X, y)
    assert first.study_.sampler is not sampler
    second = tiny(sampler=sampler).fit(X, y)
    assert first.best_params_ == second.best_params_


def test_clone_with_an_evosampler_instance():
    cloned = clone(tiny(sampler=EvoSampler(seed=0)))
    assert isinstance(cloned.sampler, EvoSampler)


def test_search_space_dict_and_object(data):
    X, y = data
    space = SearchSpace(max_layers=2, units=(4, 8), optimizers=("adamw",), batch_sizes=(16,))
    for setting in (space, space.to_dict()):
        clf = tiny(search_space=setting).fit(X, y)
        assert space.contains(clf.best_genome_)
    assert EvoSearchClassifier().search_space is None  # stored as given ...
    assert DEFAULT_SEARCH_SPACE.max_layers == 3  # ... and documented as this default


def test_max_epochs_and_patience(data):
    X, y = data
    clf = tiny(n_trials=3, max_epochs=3, patience=None).fit(X, y)
    assert set(clf.cv_results_["epochs_run"]) == {3}
    assert set(clf.cv_results_["stop_reason"]) == {"max_epochs"}
    clf = tiny(n_trials=3, max_epochs=30, patience=1).fit(X, y)
    assert "early_stopping" in clf.cv_results_["stop_reason"]
    assert max(clf.cv_results_["epochs_run"]) < 30


def test_validation_fraction_changes_the_split(data):
    X, y = data
    scores = {tiny(validation_fraction=f).fit(X, y).best_score_ for f in (0.1, 0.5)}
    assert len(scores) == 2


@pytest.mark.parametrize(
    ("scoring", "low", "high"),
    [
        ("accuracy", 0.0, 1.0),
        ("balanced_accuracy", 0.0, 1.0),
        ("f1_macro", 0.0, 1.0),
        ("neg_log_loss", -np.inf, 0.0),
    ],
)
def test_scoring(data, scoring, low, high):
    X, y = data
    clf = tiny(scoring=scoring).fit(X, y)
    assert low <= clf.best_score_ <= high
    assert clf.best_score_ == max(clf.cv_results_["mean_test_score"])


def test_callable_scoring(data):
    from sklearn.metrics import make_scorer, recall_score

    X, y = data
    clf = tiny(scoring=make_scorer(recall_score, average="macro")).fit(X, y)
    assert 0.0 <= clf.best_score_ <= 1.0


def test_timeout(data):
    X, y = data
    assert tiny(n_trials=3, timeout=60.0).fit(X, y).n_trials_ == 3
    with pytest.raises(EvohpoError, match=r"completed \(none ran, timeout=1e-09\)"):
        tiny(n_trials=50, timeout=1e-9).fit(X, y)


def test_time_budget_without_a_trial_limit(data):
    X, y = data
    started = time.perf_counter()
    clf = tiny(n_trials=None, timeout=3.0, sampler="ga").fit(X, y)
    searched = time.perf_counter() - started
    # More trials than the GA's population: breeding started within the budget.
    assert clf.n_trials_ > 10
    origins = {t.user_attrs["evohpo"]["origin"] for t in clf.study_.trials}
    assert "bred" in origins
    # Trained with seeds of their own, trials are noisy: no trial spent on repeats.
    assert "repeat" not in origins
    assert searched < 30
    assert clf.study_.sampler._population_size == 10


def test_trials_train_in_batches(data):
    X, y = data
    clf = tiny(n_trials=5, batch_trials=2, sampler="random").fit(X, y)
    assert clf.n_trials_ == 5
    starts = sorted(t.datetime_start for t in clf.study_.trials)
    # Two trials asked together start before either ends.
    first, second = sorted(clf.study_.trials, key=lambda t: t.number)[:2]
    assert second.datetime_start < first.datetime_complete
    assert starts[2] > first.datetime_complete
    one_by_one = tiny(n_trials=5, batch_trials=1, sampler="random").fit(X, y)
    assert one_by_one.best_params_.keys() == clf.best_params_.keys()


def test_a_study_resumes_with_another_batch_size(data, tmp_path):
    X, y = data
    url = f"sqlite:///{tmp_path / 'b.db'}"
    tiny(n_trials=3, batch_trials=1, storage=url, study_name="b").fit(X, y)
    clf = tiny(n_trials=6, batch_trials=3, storage=url, study_name="b").fit(X, y)
    assert clf.n_trials_ == 6
    assert [t.number for t in clf.study_.trials] == list(range(6))


def test_auto_batch_follows_the_population_the_budget_and_the_network_size(data):
    from evohpo.estimator.session import study_batch_trials
    from evohpo.evolution.sampler import EvoSampler
    from evohpo.search.objective import GenomeObjective

    X, y = data
    small = GenomeObjective(X, y, space=SearchSpace(**TINY))
    wide = GenomeObjective(X, y, space=SearchSpace(max_layers=3, units=(32, 512)))
    settings = tiny(n_trials=30)._check_settings()
    assert study_batch_trials(settings, EvoSampler(population_size=5), small) == 5
    assert study_batch_trials(settings, optuna.samplers.TPESampler(), small) == 8
    # On the CPU, arithmetic-bound networks gain nothing from stacks: one at a time.
    assert study_batch_trials(settings, optuna.samplers.TPESampler(), wide) == 1
    few = tiny(n_trials=3)._check_settings()
    assert study_batch_trials(few, optuna.samplers.TPESampler(), small) == 3
    fixed = tiny(n_trials=30, batch_trials=12)._check_settings()
    assert study_batch_trials(fixed, EvoSampler(population_size=5), wide) == 12
    workers = tiny(n_trials=30, n_jobs=2)._check_settings()
    assert study_batch_trials(workers, EvoSampler(population_size=6), small) == 3


def timed_fit_on_tiled_data(data, **params):
    """A timed ``tiny(n_trials=None, patience=None, **params)`` fit on 8 copies of the rows:
    epochs slow enough for the refit and the deadline to matter."""
    X, y = data
    started = time.perf_counter()
    clf = tiny(n_trials=None, patience=None, **params).fit(np.tile(X, (8, 1)), np.tile(y, 8))
    return clf, time.perf_counter() - started


def test_timeout_bounds_the_whole_fit_refit_included(data):
    clf, elapsed = timed_fit_on_tiled_data(data, timeout=4.0, max_epochs=200)
    assert elapsed < 4.0 + 2.0, elapsed
    assert len(clf.ensemble_models_) >= 1
    assert clf.n_trials_ >= 1


def test_timeout_bounds_the_whole_fit_with_cross_validation(data):
    # Before, each fold had the whole time left: 4 folds took about 4 times the timeout.
    clf, elapsed = timed_fit_on_tiled_data(data, timeout=4.0, max_epochs=1000, cv=4)
    assert elapsed < 4.0 + 2.0, elapsed
    assert set(clf.cv_results_["state"]) == {"COMPLETE"}  # each fold had its share
    assert "time_limit" in clf.cv_results_["stop_reason"]


@pytest.mark.slow
def test_timeout_bounds_the_whole_fit_with_worker_processes(data):
    # Long enough for the workers' interpreters to start on a busy machine.
    clf, elapsed = timed_fit_on_tiled_data(data, timeout=15.0, max_epochs=500, n_jobs=2)
    # Their trials stop training at the deadline; the workers' start-up is spent time.
    assert elapsed < 15.0 + 3.0, elapsed
    assert "time_limit" in clf.cv_results_["stop_reason"]
    assert len(clf.ensemble_models_) >= 1


def test_pruner_receives_reports(data):
    X, y = data
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    clf = tiny(n_trials=4, pruner=pruner).fit(X, y)
    assert all(t.intermediate_values for t in clf.study_.trials)
    assert clf.study_.pruner is not pruner  # a copy


def test_all_trials_pruned_is_a_clear_error(data):
    X, y = data
    with pytest.raises(
        EvohpoError, match=r"No trial of the study .* completed \(2 PRUNED.*less aggressive pruner"
    ):
        tiny(pruner=AlwaysPrune()).fit(X, y)


@pytest.mark.filterwarnings("ignore:The value nan is not acceptable:UserWarning")
def test_all_trials_failed_points_at_why(data):
    X, y = data
    with pytest.raises(EvohpoError, match=r"\(2 FAIL, timeout=None\).* NaN or infinite"):
        tiny(scoring=lambda estimator, X, y: float("nan")).fit(X, y)


@pytest.mark.slow
def test_parallel_trials_run_in_worker_processes(data):
    X, y = data
    clf = tiny(n_trials=6, n_jobs=2, max_epochs=100, patience=None).fit(X, y)
    # Trials still running when the total is reached finish: at most n_jobs - 1 more.
    assert 6 <= clf.n_trials_ <= 7
    assert clf.cv_results_["number"] == list(range(clf.n_trials_))
    assert set(clf.cv_results_["state"]) == {"COMPLETE"}
    workers = [t.system_attrs[OWNER_ATTR] for t in clf.study_.trials]
    # This process is worker 1 and trains while worker 0's process starts.
    assert 1 in {w["worker"] for w in workers}
    for worker in workers:
        assert (worker["pid"] == os.getpid()) == (worker["worker"] == 1), worker
    assert type(clf.study_._storage).__name__ == "InMemoryStorage"  # copied out
    assert np.isin(clf.predict(X), clf.classes_).all()
    assert clf.__sklearn_tags__().non_deterministic
    assert not tiny().__sklearn_tags__().non_deterministic


@pytest.mark.slow
def test_parallel_trials_share_a_persisted_study(data, tmp_path):
    X, y = data
    url = f"sqlite:///{tmp_path / 'search.db'}"
    tiny(n_trials=2, storage=url, study_name="p").fit(X, y)
    clf = tiny(n_trials=8, n_jobs=2, storage=url, study_name="p").fit(X, y)
    assert 8 <= clf.n_trials_ <= 9
    stored = optuna.load_study(study_name="p", storage=url).trials
    assert [t.number for t in stored] == list(range(clf.n_trials_))
    bred = [t for t in stored[2:] if t.user_attrs["evohpo"]["origin"] == "bred"]
    assert bred, "the workers bred from the stored population"


def test_parallel_trials_need_a_picklable_scoring(data):
    X, y = data
    with pytest.raises(InvalidParameterError, match=r"n_jobs > 1.*picklable"):
        tiny(n_jobs=2, scoring=lambda estimator, X, y: 1.0).fit(X, y)


def test_n_jobs_none_means_one(data):
    X, y = data
    assert tiny(n_jobs=None).fit(X, y).n_trials_ == 2


def test_diverging_genomes_do_not_crash_the_search(data):
    X, y = data
    exploding = {**TINY, "optimizers": ("sgd",), "learning_rate": (1e30, 1e31)}
    clf = tiny(search_space=exploding).fit(X, y)
    assert set(clf.cv_results_["stop_reason"]) == {"diverged"}
    assert set(clf.cv_results_["state"]) == {"COMPLETE"}
    assert np.isin(clf.predict(X), clf.classes_).all()


def test_torch_threads_are_restored(data):
    X, y = data
    before = torch.get_num_threads()
    tiny().fit(X, y)
    assert torch.get_num_threads() == before


# -- determinism and resume ----------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ga", "tpe"])
def test_random_state_makes_fit_deterministic(data, sampler):
    X, y = data
    first = tiny(sampler=sampler, n_trials=3).fit(X, y)
    second = tiny(sampler=sampler, n_trials=3).fit(X, y)
    assert first.best_params_ == second.best_params_
    assert first.cv_results_["mean_test_score"].tolist() == (
        second.cv_results_["mean_test_score"].tolist()
    )
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    other = tiny(sampler=sampler, n_trials=3, random_state=1).fit(X, y)
    assert other.cv_results_["params"] != first.cv_results_["params"]


def test_random_state_instance(data):
    X, y = data
    a = tiny(random_state=np.random.RandomState(3)).fit(X, y)
    b = tiny(random_state=np.random.RandomState(3)).fit(X, y)
    assert a.best_params_ == b.best_params_


def test_resume_a_persisted_study(data, tmp_path):
    X, y = data
    url = f"sqlite:///{tmp_path / 'search.db'}"
    first = tiny(storage=url, study_name="s", sampler="ga").fit(X, y)
    assert first.n_trials_ == 2
    second = tiny(storage=url, study_name="s", sampler="ga", n_trials=4).fit(X, y)
    assert second.n_trials_ == 4
    numbers = [t.number for t in second.study_.trials]
    assert numbers == [0, 1, 2, 3]
    # With the GA, 2 trials + 2 resumed ones are the 4 trials of one straight run.
    straight = tiny(sampler="ga", n_trials=4).fit(X, y)
    assert second.cv_results_["params"] == straight.cv_results_["params"]
    # The total is reached: no new trial.
    third = tiny(storage=url, study_name="s", sampler="ga", n_trials=4).fit(X, y)
    assert len(third.study_.trials) == 4
    with sqlite3.connect(tmp_path / "search.db") as db:
        assert db.execute("select count(*) from trials").fetchone() == (4,)


def test_resumed_random_search_does_not_repeat_itself(data, tmp_path):
    X, y = data
    url = f"sqlite:///{tmp_path / 'search.db'}"
    tiny(storage=url, study_name="r", sampler="random").fit(X, y)
    clf = tiny(storage=url, study_name="r", sampler="random", n_trials=4).fit(X, y)
    params = [tuple(sorted(p.items())) for p in clf.cv_results_["params"]]
    assert len(set(params)) == 4


def test_resume_false_refuses_an_existing_study(data, tmp_path):
    X, y = data
    url = f"sqlite:///{tmp_path / 'search.db'}"
    tiny(storage=url, study_name="s").fit(X, y)
    with pytest.raises(
        optuna.exceptions.DuplicatedStudyError, match=r"already holds a study named 's'"
    ):
        tiny(storage=url, study_name="s", resume=False).fit(X, y)


def test_resume_refuses_a_study_of_another_search(data, tmp_path):
    X, y = data
    url = f"sqlite:///{tmp_path / 'search.db'}"
    tiny(storage=url, study_name="s").fit(X, y)
    with pytest.raises(StudyMismatchError, match=r"scoring: stored 'accuracy', now 'f1_macro'"):
        tiny(storage=url, study_name="s", scoring="f1_macro").fit(X, y)
    with pytest.raises(StudyMismatchError, match=r"n_features: stored 6, now 5"):
        tiny(storage=url, study_name="s").fit(X[:, :5], y)
    optuna.create_study(storage=url, study_name="m", direction="minimize")
    with pytest.raises(StudyMismatchError, match="minimizes"):
        tiny(storage=url, study_name="m").fit(X, y)


def test_a_refused_fit_leaves_the_fitted_estimator_as_it_was(data, tmp_path):
    X, y = data
    clf = tiny(storage=f"sqlite:///{tmp_path / 'search.db'}", study_name="s").fit(X, y)
    before = clf.predict_proba(X[:5])
    with pytest.raises(StudyMismatchError, match=r"n_features: stored 6, now 2"):
        clf.fit(X[:, :2], y)
    # Before, the refused fit had already reset n_features_in_ to 2.
    assert clf.n_features_in_ == 6
    np.testing.assert_array_equal(clf.predict_proba(X[:5]), before)


def test_a_fit_with_refit_false_cannot_predict_after_set_params(data):
    X, y = data
    clf = tiny(refit=False).fit(X, y)
    clf.set_params(refit=True)
    assert not hasattr(clf, "predict")
    with pytest.raises(AttributeError) as info:
        clf.predict(X)
    # scikit-learn's available_if names the method and chains the reason.
    assert re.search(
        r"fitted with refit=False.*Fit again with refit=True", str(info.value.__cause__)
    )


def test_numpy_booleans_are_taken_as_bools(data):
    X, y = data
    clf = tiny(refit=np.True_, resume=np.True_, inherit_weights=np.False_).fit(X, y)
    assert np.isin(clf.predict(X[:3]), clf.classes_).all()


def test_resume_refuses_other_data_split_or_training(data, tmp_path):
    X, y = data
    url = f"sqlite:///{tmp_path / 'search.db'}"
    tiny(storage=url, study_name="s").fit(X, y)
    with sqlite3.connect(tmp_path / "search.db") as db:
        before = db.execute("select count(*) from trials").fetchone()
    cases = [
        ({"validation_fraction": 0.5}, r"validation: stored 'holdout validation_fraction=0.2'"),
        ({"cv": 3}, r"now 'cv=3'"),
        ({"max_epochs": 2}, r"training: stored \{'max_epochs': 4"),
        ({"random_state": 7}, r"seed: stored 0, now 7 \(random_state"),
    ]
    for setting, match in cases:
        with pytest.raises(StudyMismatchError, match=match):
            tiny(storage=url, study_name="s", n_trials=4, **setting).fit(X, y)
    other = X.copy()
    other[0, 0] += 1.0
    with pytest.raises(StudyMismatchError, match="the rows of X or y differ"):
        tiny(storage=url, study_name="s", n_trials=4).fit(other, y)
    with pytest.raises(StudyMismatchError, match="the rows of X or y differ"):
        tiny(storage=url, study_name="s", n_trials=4).fit(X, np.roll(y, 1))
    with sqlite3.connect(tmp_path / "search.db") as db:
        assert db.execute("select count(*) from trials").fetchone() == before


def test_resume_refuses_another_sampler_or_pruner(data, tmp_path):
    X, y = data
    url = f"sqlite:///{tmp_path / 'search.db'}"
    tiny(storage=url, study_name="s", sampler="tpe").fit(X, y)
    cases = [
        ({"sampler": "random"}, r"sampler: stored 'tpe', now 'random'"),
        ({"pruner": optuna.pruners.MedianPruner()}, r"pruner: stored .*NopPruner.*MedianPruner"),
    ]
    for setting, match in cases:
        with pytest.raises(StudyMismatchError, match=match):
            tiny(storage=url, study_name="s", n_trials=4, **{"sampler": "tpe", **setting}).fit(X, y)
    # The same sampler and pruner resume.
    assert tiny(storage=url, study_name="s", sampler="tpe", n_trials=3).fit(X, y).n_trials_ == 3
    # Weight inheritance changes what trials learn: it cannot be switched on either.
    with pytest.raises(StudyMismatchError, match=r"inherit_weights: stored False, now True"):
        tiny(storage=url, study_name="s", sampler="tpe", n_trials=4, inherit_weights=True).fit(X, y)

    def ga(population_size, n_trials=2):
        sampler = EvoSampler(population_size=population_size, seed=1)
        return tiny(storage=url, study_name="g", sampler=sampler, n_trials=n_trials)

    ga(4).fit(X, y)
    with pytest.raises(StudyMismatchError, match=r"sampler: .*'population_size': 4.*8"):
        ga(8, n_trials=4).fit(X, y)
    # A sampler of the same settings and another seed is the same search.
    resumed = tiny(storage=url, study_name="g", sampler=EvoSampler(population_size=4, seed=9))
    assert resumed.set_params(n_trials=4).fit(X, y).n_trials_ == 4


def test_a_study_stored_before_samplers_were_recorded_resumes(data, tmp_path):
    X, y = data
    url = f"sqlite:///{tmp_path / 'search.db'}"
    first = tiny(storage=url, study_name="s").fit(X, y)
    study = optuna.load_study(study_name="s", storage=url)
    record = dict(first.study_.user_attrs[SEARCH_ATTR])
    del record["sampler"], record["pruner"], record["inherit_weights"]
    study.set_user_attr(SEARCH_ATTR, record)
    assert tiny(storage=url, study_name="s", n_trials=3).fit(X, y).n_trials_ == 3


def test_storage_takes_a_bare_path_as_the_commands_do(data, tmp_path, monkeypatch):
    X, y = data
    monkeypatch.chdir(tmp_path)
    tiny(storage="search.db", study_name="s").fit(X, y)
    tiny(storage="search.log", study_name="j").fit(X, y)
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'search.db'}")
    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "search.log"))
    )
    assert len(optuna.load_study(study_name="j", storage=journal).trials) == 2
    # A resume=False refusal shows where the study is, as a URL.
    with pytest.raises(optuna.exceptions.DuplicatedStudyError, match=r"'sqlite:////.*search\.db'"):
        tiny(storage="search.db", study_name="s", resume=False).fit(X, y)


def test_batch_trials_takes_numpy_ints_as_a_grid_gives_them(data):
    X, y = data
    search = GridSearchCV(tiny(max_epochs=2), {"batch_trials": np.array([1, 2])}, cv=2)
    assert search.fit(X, y).best_params_["batch_trials"] in (1, 2)


def test_resume_without_random_state_keeps_the_stored_seed(data, tmp_path):
    X, y = data
    url = f"sqlite:///{tmp_path / 'search.db'}"
    first = tiny(storage=url, study_name="s", random_state=None).fit(X, y)
    seed = first.study_.user_attrs["evohpo.search"]["seed"]
    second = tiny(storage=url, study_name="s", random_state=None, n_trials=4).fit(X, y)
    assert second.n_trials_ == 4
    assert second.study_.user_attrs["evohpo.search"]["seed"] == seed
    # The same seed gives the same split and the same trials as one straight run.
    straight = tiny(random_state=seed, n_trials=4).fit(X, y)
    assert second.cv_results_["params"] == straight.cv_results_["params"]


def my_scorer(estimator, X, y):
    return float(np.mean(estimator.predict(X) == y))


def test_a_function_scoring_is_recorded_by_name_so_other_processes_resume(data, tmp_path):
    X, y = data
    url = f"sqlite:///{tmp_path / 'search.db'}"
    clf = tiny(storage=url, study_name="s", scoring=my_scorer).fit(X, y)
    recorded = clf.study_.user_attrs["evohpo.search"]["scoring"]
    assert recorded == f"{my_scorer.__module__}.{my_scorer.__qualname__}"  # no address
    assert tiny(storage=url, study_name="s", scoring=my_scorer, n_trials=3).fit(X, y).n_trials_ == 3


def test_storage_without_study_name_makes_a_new_study(data, tmp_path):
    X, y = data
    url = f"sqlite:///{tmp_path / 'search.db'}"
    a = tiny(storage=url).fit(X, y)
    b = tiny(storage=url).fit(X, y)
    assert a.study_.study_name != b.study_.study_name
    assert len(b.study_.trials) == 2


def test_bad_storage_url(data):
    X, y = data
    with pytest.raises(EvohpoError, match="Cannot open the storage 'nope://x'"):
        tiny(storage="nope://x").fit(X, y)


def test_a_missing_database_driver_says_what_to_install(data):
    X, y = data
    with pytest.raises(EvohpoError, match=r"driver is not installed \(no module 'pg8000'\)"):
        tiny(storage="postgresql+pg8000://evohpo@127.0.0.1:1/db", study_name="s").fit(X, y)


def test_storage_errors_hide_the_password(data):
    X, y = data
    url = "postgresql://evohpo:s3cret-pw@127.0.0.1:1/nowhere"  # nothing listens on port 1
    with pytest.raises(EvohpoError, match=r"evohpo:\*\*\*@127.0.0.1") as caught:
        tiny(storage=url, study_name="s").fit(X, y)
    assert "s3cret-pw" not in str(caught.value)


# -- labels and inputs --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "labels",
    [
        np.array(["cat", "dog", "emu"]),
        np.array([3, 7, 10]),
        np.array(["b", "a"]),
        np.array([True, False]),
    ],
)
def test_any_label_type(data, labels):
    X, y = data
    y = labels[y % len(labels)]
    clf = tiny().fit(X, y)
    np.testing.assert_array_equal(clf.classes_, np.unique(labels))
    predictions = clf.predict(X)
    assert predictions.dtype == clf.classes_.dtype
    assert set(predictions) <= set(labels)
    np.testing.assert_array_equal(predictions, clf.classes_[clf.predict_proba(X).argmax(axis=1)])


def test_dataframe_feature_names_and_lists(data):
    X, y = data
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    clf = tiny().fit(frame, pd.Series(y))
    np.testing.assert_array_equal(clf.feature_names_in_, frame.columns)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        clf.predict(X)
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(frame[frame.columns[::-1]])
    listed = tiny().fit(X.tolist(), y.tolist())
    assert not hasattr(listed, "feature_names_in_")
    np.testing.assert_array_equal(listed.predict(X.tolist()), clf.predict(frame))


def test_every_class_with_two_samples_validates(data):
    X, y = data
    y = y.copy()
    y[y == 2] = 1
    y[:2] = 2  # a class of 2 samples: one trains, one validates
    clf = tiny(scoring="neg_log_loss").fit(X, y)
    assert np.isfinite(clf.best_score_)


def test_a_scorer_that_needs_a_missing_class_names_it(data):
    X, y = data
    y = y.copy()
    y[y == 2] = 1
    y[0] = 2  # a single sample: it cannot validate
    with pytest.raises(InvalidParameterError, match=r"scorer 'neg_log_loss' failed .* \[2\]"):
        tiny(scoring="neg_log_loss").fit(X, y)


def test_cv_larger_than_the_data_names_the_estimator(data):
    X, y = data
    with pytest.raises(InvalidParameterError, match=r"'cv' parameter of EvoSearchClassifier"):
        tiny(cv=10).fit(X[:9], y[:9])


def test_labels_of_mixed_types_are_a_clear_error(data):
    X, y = data
    labels = [("a", None, "b")[v] for v in y]
    labels[0] = "a"  # scikit-learn's own check looks at the first label
    with pytest.raises(ValueError, match="one comparable type; y mixes"):
        tiny().fit(X, labels)


def test_values_near_the_float64_limit_are_standardised(data):
    X, y = data
    huge = X * 1e306
    clf = tiny().fit(huge, y)
    assert np.isfinite(clf.predict_proba(huge)).all()
    assert clf.score(huge, y) > 0.5


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        ([[np.nan, 1.0], [0.0, 1.0], [1.0, 0.0]], [0, 1, 0], "Input X contains NaN"),
        ([[np.inf, 1.0], [0.0, 1.0], [1.0, 0.0]], [0, 1, 0], "Input X contains infinity"),
        ([[0.0, 1.0], [1.0, 0.0]], [0, 1, 1], "inconsistent numbers of samples"),
        ([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], [1, 1, 1], "at least 2 classes.*1 class: 1\\.$"),
        (np.empty((0, 2)), [], "0 sample"),
        ([[0.0], [1.0], [2.0]], [0.5, 1.5, 2.5], "Unknown label type"),
    ],
)
def test_bad_data_gets_sklearn_errors(X, y, match):
    with pytest.raises(ValueError, match=match):
        tiny().fit(np.asarray(X), np.asarray(y))


def test_predict_checks(data):
    X, y = data
    with pytest.raises(NotFittedError, match="not fitted yet"):
        tiny().predict(X)
    clf = tiny().fit(X, y)
    with pytest.raises(
        ValueError, match="X has 5 features, but EvoSearchClassifier is expecting 6"
    ):
        clf.predict(X[:, :5])


def test_refit_false_keeps_the_search_only(data):
    X, y = data
    clf = tiny().fit(X, y).set_params(refit=False).fit(X, y)
    assert clf.best_params_
    assert not hasattr(clf, "best_model_")
    assert not hasattr(clf, "ensemble_models_")
    assert clf.ensemble_trials_  # the members a refit would train
    assert not hasattr(clf, "predict")
    with pytest.raises(AttributeError, match="has no attribute 'predict_proba'") as excinfo:
        clf.predict_proba(X)
    assert "initialized with refit=False" in str(excinfo.value.__cause__)


# -- parameter validation -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"n_trials": 0}, r"'n_trials' parameter of EvoSearchClassifier must be an int >= 1"),
        (
            {"n_trials": None},
            r"'n_trials' parameter of EvoSearchClassifier must be an int >= 1, or None "
            r"together with a timeout",
        ),
        ({"timeout": -1}, r"'timeout' parameter .* a finite float > 0, or None .* Got -1"),
        ({"timeout": float("inf")}, r"'timeout' parameter .* a finite float > 0, or None"),
        ({"sampler": "cmaes"}, r"'sampler' parameter .* one of \{'ga', 'tpe', 'random'\}"),
        ({"search_space": [1, 2]}, r"'search_space' parameter .* a SearchSpace, a dict"),
        ({"search_space": {"depth": 2}}, r"Unknown SearchSpace settings \['depth'\]"),
        ({"search_space": {"max_layers": 0}}, r"'max_layers' parameter of SearchSpace"),
        ({"max_epochs": 0}, r"'max_epochs' parameter .* an int >= 1"),
        ({"patience": 0}, r"'patience' parameter .* an int >= 1 or None"),
        ({"validation_fraction": 1.0}, r"'validation_fraction' parameter .* \(0.0, 1.0\)"),
        ({"cv": 1}, r"'cv' parameter .* an int >= 2 or None"),
        ({"scoring": "bogus"}, r"'scoring' parameter .* sklearn.metrics.get_scorer_names\(\)"),
        ({"storage": 3}, r"'storage' parameter .* storage URL"),
        ({"storage": "results"}, r"'storage' parameter .* a path ending in \.db"),
        ({"study_name": 3}, r"'study_name' parameter .* a str or None"),
        ({"resume": "yes"}, r"'resume' parameter .* a bool"),
        ({"pruner": "median"}, r"'pruner' parameter .* an Optuna pruner"),
        ({"n_jobs": 0}, r"'n_jobs' parameter .* an int >= 1, -1 or None"),
        ({"batch_trials": 0}, r"'batch_trials' parameter .* an int >= 1 or 'auto'"),
        ({"batch_trials": "many"}, r"'batch_trials' parameter .* an int >= 1 or 'auto'"),
        ({"batch_trials": np.int64(0)}, r"'batch_trials' parameter .* an int >= 1 or 'auto'"),
        ({"random_state": -1}, r"'random_state' parameter .* an int >= 0, a RandomState"),
        ({"verbose": -1}, r"'verbose' parameter .* an int >= 0"),
        ({"refit": 1}, r"'refit' parameter .* a bool"),
        ({"ensemble_size": 0}, r"'ensemble_size' parameter .* an int >= 1. Got 0"),
        ({"ensemble_size": 2.0}, r"'ensemble_size' parameter .* an int >= 1. Got 2.0"),
        ({"device": "tpu:9"}, r"'device' parameter of EvoSearchClassifier"),
    ],
)
def test_bad_settings_name_the_parameter(data, setting, match):
    X, y = data
    clf = tiny(**setting)
    assert clf.get_params()[next(iter(setting))] is next(iter(setting.values()))
    with pytest.raises(InvalidParameterError, match=match):
        clf.fit(X, y)


def test_search_space_errors_are_search_space_errors(data):
    X, y = data
    with pytest.raises(SearchSpaceError):
        tiny(search_space={"units": (0, 3)}).fit(X, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_when_unavailable(data):
    X, y = data
    with pytest.raises(
        InvalidParameterError, match=r"'device' parameter .* available \(CUDA is not\)"
    ):
        tiny(device="cuda").fit(X, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_pickles_to_the_cpu(data):
    X, y = data
    clf = tiny(device="cuda").fit(X, y)
    assert next(clf.best_model_.parameters()).is_cuda
    restored = pickle.loads(pickle.dumps(clf))
    assert not next(restored.best_model_.parameters()).is_cuda
    np.testing.assert_allclose(restored.predict_proba(X), clf.predict_proba(X), atol=1e-6)


# -- output, pickling, composition -------------------------------------------------------------
def test_verbose_draws_a_bar_and_logs(data, monkeypatch, caplog, capsys):
    X, y = data
    monkeypatch.delenv("EVOHPO_NO_PROGRESS", raising=False)
    with caplog.at_level(logging.INFO, logger="evohpo"):
        clf = tiny(verbose=2).fit(X, y)
    assert "EvoSearchClassifier" in capsys.readouterr().err  # the bar
    assert "Searching 2 trials" in caplog.text
    assert "Trial 1 complete: value=" in caplog.text
    assert "Best of 2 trials" in caplog.text
    best = next(r.getMessage() for r in caplog.records if "Best of" in r.getMessage())
    assert best.endswith(f": {describe_genome(clf.best_genome_)}.")  # a summary, not JSON
    monkeypatch.setenv("EVOHPO_NO_PROGRESS", "1")
    tiny(verbose=1).fit(X, y)
    assert "EvoSearchClassifier" not in capsys.readouterr().err
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="evohpo"):
        tiny(verbose=1, n_trials=None, timeout=2.0).fit(X, y)
        tiny(verbose=1, n_trials=1, timeout=60.0).fit(X, y)
    assert re.search(r"Searching for 2\.0 s \(0 trials already done\)", caplog.text)
    assert re.search(r"Searching 1 trial for at most \d+\.\d s \(0 trials", caplog.text)


def test_verbose_output_shows_without_logging_configured(data, capsys, monkeypatch):
    X, y = data
    logger = logging.getLogger("evohpo")
    monkeypatch.setattr(logger, "propagate", False)  # as if no handler were configured
    monkeypatch.setattr(logger, "handlers", [])
    tiny(verbose=1).fit(X, y)
    err = capsys.readouterr().err
    assert "evohpo: Searching 2 trials" in err
    assert "evohpo: Best of 2 trials" in err
    assert logger.handlers == []  # removed again


def test_hyperband_pruner(data):
    X, y = data
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=8, reduction_factor=2)
    clf = tiny(n_trials=8, max_epochs=8, pruner=pruner, sampler="random").fit(X, y)
    states = set(clf.cv_results_["state"])
    assert "COMPLETE" in states
    assert all(t.intermediate_values for t in clf.study_.trials)
    pruned = [t for t in clf.study_.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, states
    assert all(t.user_attrs["stop_reason"] == "pruned" for t in pruned)


def test_silent_by_default(data, caplog, capsys):
    X, y = data
    optuna.logging.set_verbosity(optuna.logging.INFO)
    with caplog.at_level(logging.INFO):
        tiny().fit(X, y)
    assert optuna.logging.get_verbosity() == optuna.logging.INFO  # restored
    assert "Trial 0 finished" not in capsys.readouterr().err
    assert "Searching" not in caplog.text


def test_pickle_round_trip(data, tmp_path):
    X, y = data
    for storage in (None, f"sqlite:///{tmp_path / 'search.db'}"):
        clf = tiny(storage=storage, study_name="p").fit(X, y)
        restored = pickle.loads(pickle.dumps(clf))
        np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
        np.testing.assert_array_equal(restored.predict(X), clf.predict(X))
        assert restored.best_genome_ == clf.best_genome_
        assert [t.params for t in restored.study_.trials] == [t.params for t in clf.study_.trials]
        assert restored.study_.best_value == clf.best_score_
    assert pickle.loads(pickle.dumps(tiny())).get_params() == tiny().get_params()


def test_a_pickle_finds_the_study_the_fit_used(data, tmp_path, monkeypatch):
    # A bare path (resolved when fitted, so the pickle opens it from any folder),
    # and a storage parameter changed after the fit: the pickle keeps the fit's.
    X, y = data
    monkeypatch.chdir(tmp_path)
    clf = tiny(storage="search.db", study_name="bare").fit(X, y)
    in_memory = tiny(study_name="mem").fit(X, y)
    in_memory.set_params(storage=f"sqlite:///{tmp_path / 'elsewhere.db'}")
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for fitted in (clf, in_memory):
        restored = pickle.loads(pickle.dumps(fitted))
        assert [t.params for t in restored.study_.trials] == [
            t.params for t in fitted.study_.trials
        ]
    assert not (tmp_path / "elsewhere.db").exists()


def test_clone_and_grid_search(data):
    X, y = data
    clf = tiny(sampler=optuna.samplers.RandomSampler(seed=0))
    copy = clone(clf)
    assert copy.get_params().keys() == clf.get_params().keys()
    assert copy.sampler is not clf.sampler
    grid = GridSearchCV(tiny(), {"max_epochs": [2, 3]}, cv=2).fit(X, y)
    assert grid.best_params_["max_epochs"] in (2, 3)
    assert grid.score(X, y) > 0.5


def test_pipeline(data):
    X, y = data
    pipe = make_pipeline(MinMaxScaler(), tiny()).fit(X, y)
    assert pipe.score(X, y) > 0.6
    assert pipe.predict_proba(X).shape == (160, 3)


def test_training_errors_propagate_from_fit(data, monkeypatch):
    X, y = data
    from evohpo.search import objective as objective_module

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(objective_module, "train_population", broken)
    with pytest.raises(RuntimeError, match="device lost"):
        tiny().fit(X, y)


# -- convolutional genomes (input_shape) --------------------------------------------------------
#: TINY with a body of one or two small blocks.
TINY_CONV = {**TINY, "max_blocks": 2, "channels": (2, 4), "kernels": (3,)}


def signals(n: int = 120, length: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Noisy signals whose class is where a bump sits: left or right half."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    X = rng.normal(scale=0.3, size=(n, length))
    centres = np.where(y == 0, length // 4, 3 * length // 4)
    X[np.arange(n), centres] += 3.0
    return X, y


@pytest.mark.parametrize(
    ("input_shape", "error", "match"),
    [
        (
            (6,),
            InvalidParameterError,
            r"'input_shape' parameter of EvoSearchClassifier must be a "
            r"tuple of 2 or 3 positive ints.* Got \(6,\)",
        ),
        ((1, 2, 3, 1), InvalidParameterError, r"'input_shape' parameter .* 2 or 3 positive ints"),
        ((0, 6), InvalidParameterError, r"'input_shape' parameter .* Got \(0, 6\)"),
        ("1x6", InvalidParameterError, r"'input_shape' parameter .* Got '1x6'"),
        (
            (1, 5),
            InvalidParameterError,
            r"'input_shape' parameter of EvoSearchClassifier must fold every row of X: its "
            r"product must equal the number of features, 6\. Got \(1, 5\) instead, whose "
            r"product is 5",
        ),
        (
            (1, 1, 6),
            SearchSpaceError,
            r"'input_shape' parameter of EvoSearchClassifier is \(1, 1, 6\), but its "
            r"search_space has input_shape \(2, 3\)",
        ),
    ],
)
def test_bad_input_shapes_name_the_parameter(data, input_shape, error, match):
    X, y = data
    space = {**TINY, "input_shape": (2, 3)} if error is SearchSpaceError else TINY
    with pytest.raises(error, match=match):
        tiny(input_shape=input_shape, search_space=space).fit(X, y)


def test_input_shape_sets_the_search_spaces_input_shape():
    params = tiny(input_shape=(1, 8, 8)).get_params()
    assert check_settings(params).space == SearchSpace(**TINY, input_shape=(1, 8, 8))
    default = check_settings({**params, "search_space": None}).space
    assert default == replace(DEFAULT_SEARCH_SPACE, input_shape=(1, 8, 8))
    own = check_settings({**params, "input_shape": None, "search_space": {"input_shape": [2, 3]}})
    assert own.input_shape == own.space.input_shape == (2, 3)
    assert check_settings({**params, "input_shape": None}).input_shape is None


def test_conv_search_on_digits_as_images(tmp_path):
    X, y = load_digits(return_X_y=True)
    X, y = X[:300], y[:300]
    url = f"sqlite:///{tmp_path / 'search.db'}"
    clf = tiny(
        input_shape=(1, 8, 8), search_space=TINY_CONV, max_epochs=1, storage=url, study_name="conv"
    )
    clf.fit(X, y)
    assert clf.best_genome_.blocks is not None
    assert all(g.blocks is not None for g in clf.ensemble_genomes_)
    assert clf.predict(X[:7]).shape == (7,)
    assert set(clf.predict(X)) <= set(range(10))
    record = clf.study_.user_attrs[SEARCH_ATTR]
    assert record["input_shape"] == [1, 8, 8]
    assert record["space"]["input_shape"] == [1, 8, 8]
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    # The study resumes with the same shape, and only with it.
    again = clone(clf).set_params(n_trials=3).fit(X, y)
    assert again.n_trials_ == 3
    with pytest.raises(StudyMismatchError, match=r"input_shape: stored \[1, 8, 8\], now \[1, 64\]"):
        clone(clf).set_params(input_shape=(1, 64), search_space=TINY_CONV).fit(X, y)


def test_conv_search_on_signals_learns_where_the_bump_is():
    X, y = signals()
    clf = tiny(input_shape=(1, 16), search_space=TINY_CONV, max_epochs=6, n_trials=2).fit(X, y)
    assert clf.best_genome_.blocks is not None
    assert clf.score(X, y) > 0.8
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict(X), clf.predict(X))


def test_a_dense_search_records_no_input_shape(data):
    X, y = data
    clf = tiny().fit(X, y)
    record = clf.study_.user_attrs[SEARCH_ATTR]
    assert "input_shape" not in record
    assert "input_shape" not in record["space"]
    assert clf.best_genome_.blocks is None


def test_quickstart_example_runs(capsys):
    import runpy
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "quickstart_estimator.py"
    accuracy = runpy.run_path(str(path))["main"](["--fast"])
    assert accuracy > 0.8
    assert "test accuracy" in capsys.readouterr().out


def test_no_trial_in_time_with_workers_says_they_start_first():
    from evohpo.estimator.results import complete_trials
    from evohpo.exceptions import EvohpoError

    with pytest.raises(EvohpoError, match=r"none ran, timeout=1\.5.*n_jobs=2 no worker finished"):
        complete_trials("s", [], 1.5, n_jobs=2)
    with pytest.raises(EvohpoError, match=r"Give the search more trials or time\.$"):
        complete_trials("s", [], 1.5, n_jobs=1)


@pytest.mark.parametrize("scoring", ["r2", "neg_mean_squared_error"])
def test_a_classifier_refuses_a_regression_scorer(data, scoring):
    X, y = data
    with pytest.raises(InvalidParameterError, match=r"'scoring' .* \(this one scores regressors\)"):
        tiny(scoring=scoring).fit(X, y)
