from __future__ import annotations

import pickle

import numpy as np
import optuna
import pytest
import torch
from optuna.samplers import RandomSampler
from sklearn.base import clone, is_regressor
from sklearn.datasets import make_friedman1
from sklearn.metrics import make_scorer, mean_absolute_error, r2_score
from sklearn.model_selection import cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from evohpo import EvoSearchClassifier, EvoSearchRegressor
from evohpo.estimator.params import check_settings
from evohpo.evolution.genome import Genome, LayerGene
from evohpo.exceptions import InvalidParameterError, StudyMismatchError
from evohpo.search.objective import GenomeObjective
from evohpo.search.scoring import resolve_scoring
from evohpo.search.splits import Standardizer, make_splits, shuffled_kfold
from evohpo.training.config import TrainConfig
from evohpo.training.loop import train_classifier
from evohpo.training.population import train_population
from tests.test_estimator import TINY  # a space that trains in a blink and still learns


def tiny(**overrides: object) -> EvoSearchRegressor:
    settings: dict[str, object] = {
        "n_trials": 2,
        "max_epochs": 10,
        "search_space": TINY,
        "device": "cpu",
        "random_state": 0,
    }
    settings.update(overrides)
    return EvoSearchRegressor(**settings)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_friedman1(n_samples=160, n_features=6, random_state=0)
    return X, 100.0 * y + 1000.0  # far from standardised: the estimator must scale it


# -- scikit-learn's own estimator suite ---------------------------------------------------------
# No check is expected to fail.
@parametrize_with_checks(
    [EvoSearchRegressor(n_trials=2, max_epochs=5, search_space=TINY, device="cpu")]
)
def test_sklearn_estimator_suite(estimator, check):
    check(estimator)


# -- the trainers ---------------------------------------------------------------------------------
def _regression_arrays() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 4)).astype(np.float32)
    y = np.stack([X[:, 0] * 2 + X[:, 1] ** 2, X[:, 2]], axis=1).astype(np.float32)
    return X[:180], y[:180], X[180:], y[180:]


def test_trainer_minimises_the_squared_error():
    X_train, y_train, X_val, y_val = _regression_arrays()
    genome = Genome((LayerGene(32, "relu", 0.0),), "adam", 1e-2, 0.0, 32)
    config = TrainConfig(max_epochs=30, device="cpu", task="regression")
    result = train_classifier(genome, X_train, y_train, X_val, y_val, n_classes=2, config=config)
    assert result.best_score == pytest.approx(-result.best_val_loss)
    assert result.best_val_loss < 0.3  # targets of variance about 3 and 1
    history = [record["val_loss"] for record in result.history]
    assert history[-1] < history[0]
    # One target as a vector, one output.
    one = train_classifier(
        genome, X_train, y_train[:, 0], X_val, y_val[:, 0], n_classes=1, config=config
    )
    assert one.model.output.out_features == 1


def test_stacked_members_train_as_alone():
    X_train, y_train, X_val, y_val = _regression_arrays()
    genomes = [
        Genome((LayerGene(32, "relu", 0.0),), "adam", 1e-2, 0.0, 32),
        Genome((LayerGene(16, "tanh", 0.0),), "adamw", 3e-3, 1e-4, 32),
    ]
    configs = [TrainConfig(max_epochs=8, device="cpu", seed=s, task="regression") for s in (0, 1)]
    stacked = train_population(
        genomes, X_train, y_train, X_val, y_val, n_classes=2, configs=configs
    )
    for genome, config, result in zip(genomes, configs, stacked, strict=True):
        alone = train_classifier(genome, X_train, y_train, X_val, y_val, n_classes=2, config=config)
        assert not isinstance(result, Exception)
        assert result.best_epoch == alone.best_epoch
        assert result.best_val_loss == pytest.approx(alone.best_val_loss, rel=1e-4)


def test_trainer_refuses_bad_targets():
    X_train, y_train, X_val, y_val = _regression_arrays()
    genome = Genome((LayerGene(8, "relu", 0.0),), "adam", 1e-2, 0.0, 32)
    config = TrainConfig(max_epochs=1, device="cpu", task="regression")
    bad = y_train.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidParameterError, match=r"'y_train' .* finite"):
        train_classifier(genome, X_train, bad, X_val, y_val, n_classes=2, config=config)
    with pytest.raises(InvalidParameterError, match=r"2 target column"):
        train_classifier(genome, X_train, y_train[:, 0], X_val, y_val, n_classes=2, config=config)
    with pytest.raises(InvalidParameterError, match=r"'task' parameter of TrainConfig"):
        TrainConfig(task="ranking")  # type: ignore[arg-type]


# -- splits and scoring ---------------------------------------------------------------------------
def test_regression_splits_shuffle_and_standardise_the_targets():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = rng.normal(loc=500.0, scale=40.0, size=(50, 2))
    (split,) = make_splits(
        X, y, seed=0, validation_fraction=0.2, cv=None, validation_data=None, regression=True
    )
    assert split.target is not None
    assert split.y_val_raw is not None
    assert len(split.y_train) == 40
    assert len(split.y_val) == 10
    np.testing.assert_allclose(split.y_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(split.y_train.std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(split.target.inverse_transform(split.y_val), split.y_val_raw, 1e-5)
    folds = shuffled_kfold(50, 3, np.random.default_rng(0))
    assert sorted(np.concatenate([val for _, val in folds]).tolist()) == list(range(50))
    assert {len(val) for _, val in folds} == {16, 17}


def test_standardizer_round_trip():
    s = Standardizer.fit(np.array([[1.0, 10.0], [3.0, 30.0]]))
    z = s.transform(np.array([[2.0, 40.0]]))
    np.testing.assert_allclose(s.inverse_transform(z), [[2.0, 40.0]], rtol=1e-6)


def test_regression_scoring_names():
    assert resolve_scoring("r2", regression=True) is not None
    assert resolve_scoring("neg_mean_absolute_error", regression=True) is not None
    with pytest.raises(InvalidParameterError, match=r"regression scorer name .*'r2'"):
        resolve_scoring("accuracy", regression=True)
    with pytest.raises(InvalidParameterError, match=r"regression scorer"):
        resolve_scoring("f1_macro", "EvoSearchRegressor", regression=True)


def test_objective_scores_on_the_targets_scale(data):
    X, y = data
    objective = GenomeObjective(
        X,
        y,
        train_config=TrainConfig(max_epochs=5, device="cpu", task="regression"),
        scoring="neg_mean_absolute_error",
    )
    assert objective.n_classes == 1  # one output per target
    # A seeded genome: an unseeded draw may be one that diverges, whose error has no bound.
    study = optuna.create_study(direction="maximize", sampler=RandomSampler(seed=0))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert "val_neg_mse" in trial.user_attrs
    assert "val_accuracy" not in trial.user_attrs
    assert trial.user_attrs["val_neg_mse"] == pytest.approx(-trial.user_attrs["val_loss"])
    # An error in the targets' units (std about 500), not in standardised ones (about 1).
    assert -2000.0 < trial.value < -5.0
    with pytest.raises(InvalidParameterError, match="n_classes"):
        GenomeObjective(X, y, train_config=TrainConfig(task="regression"), n_classes=2)


# -- the estimator ---------------------------------------------------------------------------
def test_fit_exposes_the_search(data):
    X, y = data
    reg = tiny(n_trials=3).fit(X, y)
    assert is_regressor(reg)
    assert reg.n_trials_ == 3
    assert reg.n_features_in_ == 6
    assert reg.n_outputs_ == 1
    best = reg.study_.trials[reg.best_index_]
    assert reg.best_score_ == best.value == reg.study_.best_value
    assert reg.best_genome_.to_params() == best.params
    assert reg.ensemble_models_[0] is reg.best_model_
    assert reg.get_params()["scoring"] is None
    assert reg.study_.user_attrs["evohpo.search"]["scoring"] == "r2"
    assert reg.study_.user_attrs["evohpo.search"]["task"] == "regression"
    pred = reg.predict(X)
    assert pred.shape == (160,)
    assert pred.dtype == np.float64
    # Predictions come back on the targets' scale (mean 1000 + 100 * 14).
    assert abs(pred.mean() - y.mean()) < 0.2 * y.std()
    assert reg.score(X, y) == pytest.approx(r2_score(y, pred))
    assert reg.score(X, y) > 0.4
    results = reg.cv_results_
    assert "val_neg_mse" in results
    assert "val_accuracy" not in results
    assert results["mean_test_score"][reg.best_index_] == reg.best_score_


def test_ensemble_averages_the_members(data):
    X, y = data
    reg = tiny(n_trials=4, ensemble_size=3).fit(X, y)
    assert len(reg.ensemble_models_) > 1
    from evohpo.estimator.refit import mean_prediction

    scaled = reg._scaler.transform(X)
    members = [mean_prediction([m], scaled, reg._target_scaler)[:, 0] for m in reg.ensemble_models_]
    np.testing.assert_allclose(reg.predict(X), np.mean(members, axis=0), rtol=1e-6)


def test_multi_output_targets(data):
    X, y = data
    Y = np.stack([y, -0.01 * y + 7.0], axis=1)
    reg = tiny(cv=3).fit(X, Y)
    assert reg.n_outputs_ == 2
    pred = reg.predict(X)
    assert pred.shape == (160, 2)
    assert np.corrcoef(pred[:, 0], pred[:, 1])[0, 1] < -0.9
    assert len(reg.cv_results_["split2_test_score"]) == 2
    # A column vector of targets predicts a column.
    assert tiny().fit(X, y[:, None]).predict(X[:4]).shape == (4, 1)


def test_scoring_names_and_callables(data):
    X, y = data
    reg = tiny(scoring="neg_mean_absolute_error").fit(X, y)
    assert reg.best_score_ < 0
    mae = make_scorer(mean_absolute_error, greater_is_better=False)
    assert tiny(scoring=mae).fit(X, y).best_score_ < 0
    with pytest.raises(InvalidParameterError, match=r"'scoring' parameter of EvoSearchRegressor"):
        tiny(scoring="accuracy").fit(X, y)


def test_class_like_targets_are_numbers(data):
    X, _ = data
    y = np.arange(len(X)) % 3
    reg = tiny().fit(X, y)
    pred = reg.predict(X)
    assert pred.dtype == np.float64
    assert len(np.unique(pred)) > 3  # numbers, not classes
    assert tiny().fit(X, y.astype(bool)).predict(X[:2]).shape == (2,)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_targets_are_a_clear_error(data, value):
    X, y = data
    y = y.copy()
    y[5] = value
    with pytest.raises(ValueError, match=r"Input y contains (NaN|infinity)"):
        tiny().fit(X, y)


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"n_trials": 0}, r"'n_trials' parameter of EvoSearchRegressor"),
        ({"cv": 1}, r"'cv' parameter of EvoSearchRegressor"),
        ({"cv": 500}, r"'cv' parameter of EvoSearchRegressor .*number of samples \(160\)"),
        ({"input_shape": (1, 5)}, r"'input_shape' parameter of EvoSearchRegressor"),
        ({"device": "gpu"}, r"'device' parameter of EvoSearchRegressor"),
    ],
)
def test_bad_settings_name_the_regressor(data, setting, match):
    X, y = data
    with pytest.raises(InvalidParameterError, match=match):
        tiny(**setting).fit(X, y)


def test_settings_default_scoring_follows_the_task():
    params = EvoSearchRegressor().get_params()
    assert check_settings(params, "EvoSearchRegressor", "regression").scoring == "r2"
    assert check_settings(EvoSearchClassifier().get_params()).scoring == "accuracy"


def test_resume_a_persisted_study_and_refuse_another_task(data, tmp_path):
    X, y = data
    url = f"sqlite:///{tmp_path / 'search.db'}"
    first = tiny(storage=url, study_name="s").fit(X, y)
    resumed = tiny(storage=url, study_name="s", n_trials=3).fit(X, y)
    assert resumed.n_trials_ == 3
    assert resumed.cv_results_["params"][:2] == first.cv_results_["params"]
    with pytest.raises(StudyMismatchError, match="data"):
        tiny(storage=url, study_name="s", n_trials=4).fit(X, y + 1.0)
    labels = (y > np.median(y)).astype(int)
    with pytest.raises(StudyMismatchError, match="another search"):
        EvoSearchClassifier(
            n_trials=4,
            max_epochs=10,
            search_space=TINY,
            device="cpu",
            random_state=0,
            storage=url,
            study_name="s",
        ).fit(X, labels)


def test_random_state_makes_fit_deterministic(data):
    X, y = data
    a = tiny(sampler="tpe").fit(X, y).predict(X)
    b = tiny(sampler="tpe").fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)


def test_pickle_round_trip(data):
    X, y = data
    reg = tiny(ensemble_size=2).fit(X, y)
    loaded = pickle.loads(pickle.dumps(reg))
    np.testing.assert_allclose(loaded.predict(X), reg.predict(X), rtol=1e-6)
    assert loaded.study_.best_value == reg.best_score_


def test_refit_false_keeps_the_search_only(data):
    X, y = data
    reg = tiny(refit=False).fit(X, y)
    assert not hasattr(reg, "predict")
    assert reg.best_genome_ is not None


def test_clone_and_cross_val_score(data):
    X, y = data
    scores = cross_val_score(clone(tiny()), X, y, cv=2)
    assert scores.shape == (2,)


def test_time_budget_and_batched_trials(data):
    X, y = data
    reg = tiny(n_trials=None, timeout=3.0, batch_trials=4).fit(X, y)
    assert reg.n_trials_ >= 1
    assert np.isfinite(reg.predict(X)).all()


@pytest.mark.slow
def test_parallel_trials_run_in_worker_processes(data):
    X, y = data
    reg = tiny(n_trials=4, n_jobs=2).fit(X, y)
    assert reg.n_trials_ >= 4
    assert reg.score(X, y) > 0.0


def test_conv_search_with_an_input_shape():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 16))
    y = X[:, 4:8].sum(axis=1) * 10.0 + 3.0  # a bump somewhere in a 16-long signal
    space = {**TINY, "min_blocks": 1, "max_blocks": 1, "channels": (4, 8)}
    reg = tiny(input_shape=(1, 16), search_space=space, max_epochs=8).fit(X, y)
    assert all(g.blocks for g in reg.ensemble_genomes_)
    assert reg.predict(X).shape == (200,)
    loaded = pickle.loads(pickle.dumps(reg))
    np.testing.assert_allclose(loaded.predict(X[:5]), reg.predict(X[:5]), rtol=1e-5)


def test_diverging_genomes_do_not_crash_the_search(data):
    X, y = data
    space = {**TINY, "learning_rate": (5.0, 10.0), "optimizers": ("sgd",)}
    reg = tiny(search_space=space).fit(X, y)
    assert np.isfinite(reg.best_score_) or reg.n_trials_ == 2


def test_cuda_device_when_available(data):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    X, y = data
    reg = tiny(device="cuda").fit(X, y)
    loaded = pickle.loads(pickle.dumps(reg))
    np.testing.assert_allclose(loaded.predict(X), reg.predict(X), rtol=1e-4, atol=1e-3)


# -- study files ---------------------------------------------------------------------------------
def _regression_study(**overrides: object) -> dict[str, object]:
    study: dict[str, object] = {
        "task": "regression",
        "data": {"dataset": "diabetes", "test_fraction": 0.2},
        "train": {"max_epochs": 3, "device": "cpu"},
        "budget": {"n_trials": 3},
        "compare": {"samplers": ["ga", "tpe", "random"], "seeds": [0], "target": 0.1},
    }
    study.update(overrides)
    return study


def test_study_file_task_follows_the_data_set(tmp_path, write_study):
    from evohpo.exceptions import StudyConfigError
    from evohpo.studies.config import load_study_config
    from evohpo.studies.data import prepare_data

    study = _regression_study()
    del study["task"]
    config = load_study_config(write_study(tmp_path, study))
    assert config.task == "regression"  # diabetes has numeric targets
    assert config.score_label == "R2"
    data = prepare_data(config)
    assert data.y_train.dtype == np.float64
    assert len(data.y_test) == 89  # 20% of 442, shuffled rather than stratified
    with pytest.raises(StudyConfigError, match=r"'task' = 'classification', but .* 'diabetes'"):
        load_study_config(write_study(tmp_path, _regression_study(task="classification")))
    with pytest.raises(StudyConfigError, match=r"'task' = 'regression', but .* 'iris'"):
        load_study_config(write_study(tmp_path, task="regression"))
    with pytest.raises(StudyConfigError, match=r"'task' must be one of"):
        load_study_config(write_study(tmp_path, _regression_study(task="regresion")))


def test_friedman1_is_generated_offline_and_fixed():
    from evohpo.training.datasets import load_dataset

    first, second = load_dataset("friedman1"), load_dataset("friedman1")
    assert first.task == "regression"
    assert first.X.shape == (2000, 10)
    np.testing.assert_array_equal(first.y, second.y)


def test_compare_runs_on_a_regression_study(tmp_path, write_study, capsys):
    import json

    from evohpo.cli import main

    path = write_study(tmp_path, _regression_study(), filename="reg.toml")
    assert main(["compare", str(path)]) == 0
    out = capsys.readouterr().out
    assert "target validation R2 0.1" in out
    header = next(line for line in out.splitlines() if line.startswith("sampler"))
    assert "best val R2" in header
    assert "test R2" in header
    assert "acc" not in header
    rows = [line for line in out.splitlines() if line.startswith(("ga ", "tpe ", "random "))]
    assert len(rows) == 3
    assert main(["export", str(path), "--output", str(tmp_path / "best")]) == 0
    assert "test R2 of the refit" in capsys.readouterr().out
    metadata = json.loads((tmp_path / "best" / "metadata.json").read_text())
    assert metadata["task"] == "regression"
    assert metadata["n_outputs"] == 1
    assert "n_classes" not in metadata
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == [
        "genome.json",
        "metadata.json",
        "model.pt",
    ]
    assert "validation_r2" in metadata
    assert "target_standardize" in metadata


@pytest.mark.parametrize(
    ("n_rows", "settings", "message"),
    [
        (5, {}, r"'validation_fraction' .* >= 0\.3 \(the validation split needs 2 rows"),
        (150, {"validation_fraction": 0.005}, r"'validation_fraction' .* >= 0\.01 "),
        (9, {"cv": 5}, r"'cv' .* <= 4 \(every fold needs 2 rows to score R2\)"),
        (2, {}, r"needs at least 3 samples to score R2 .* another scoring"),
    ],
)
def test_splits_too_small_to_score_r2_are_refused_before_training(
    n_rows: int, settings: dict, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import evohpo.estimator.session

    def no_search(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the search started")

    monkeypatch.setattr(evohpo.estimator.session, "_optimize", no_search)
    X = np.random.default_rng(0).normal(size=(n_rows, 3))
    with pytest.raises(InvalidParameterError, match=message):
        EvoSearchRegressor(n_trials=2, max_epochs=2, **settings).fit(X, X[:, 0])
    # Another scoring needs no two rows to score.
    monkeypatch.undo()
    if n_rows == 5:
        fitted = EvoSearchRegressor(n_trials=2, max_epochs=2, scoring="neg_mean_squared_error")
        assert fitted.fit(X, X[:, 0]).n_trials_ == 2
