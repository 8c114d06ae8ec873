"""Weight inheritance in searches: artifacts, bred children, bad cases, retention, settings."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

import evohpo
from evohpo.evolution.genome import Genome
from evohpo.evolution.lineage import LINEAGE_ATTR
from evohpo.exceptions import InvalidParameterError, StudyConfigError
from evohpo.search.inheritance import (
    INHERITED_ATTR,
    STUDY_BYTES_ATTR,
    WARNING_ATTR,
    WEIGHTS_ATTR,
    WeightBank,
    WeightInheritance,
    inherited_start,
)
from evohpo.search.objective import GenomeObjective
from evohpo.storage.ownership import OWNER_ATTR
from evohpo.training.config import TrainConfig
from evohpo.training.nn import build_model

SPACE = evohpo.SearchSpace(max_layers=2, units=(4, 16))


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(160, 6))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return X, y


def make_objective(store: Any, **settings: Any) -> GenomeObjective:
    X, y = _data()
    return GenomeObjective(
        X,
        y,
        space=SPACE,
        train_config=TrainConfig(max_epochs=3, patience=None, device="cpu"),
        inheritance=WeightInheritance(store, **settings),
    )


def make_sampler() -> evohpo.EvoSampler:
    return evohpo.EvoSampler(population_size=3, seed=0, search_space=SPACE)


def _study(tmp_path: Path, name: str = "s") -> optuna.Study:
    return optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        direction="maximize",
        sampler=make_sampler(),
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


def _bred(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [
        t
        for t in study.get_trials(states=[TrialState.COMPLETE])
        if t.user_attrs[LINEAGE_ATTR]["origin"] == "bred"
    ]


def test_bred_trials_start_from_their_parents_weights(tmp_path: Path) -> None:
    study = _study(tmp_path)
    objective = make_objective(tmp_path / "weights")
    study.optimize(objective, n_trials=10)
    complete = study.get_trials(states=[TrialState.COMPLETE])
    assert len(complete) == 10
    assert all(WEIGHTS_ATTR in t.user_attrs for t in complete)
    bred = _bred(study)
    assert bred
    for trial in bred:
        record = trial.user_attrs[INHERITED_ATTR]
        assert set(record["parents"]) <= set(trial.user_attrs[LINEAGE_ATTR]["parents"])
        assert 0.0 <= record["fraction"] <= 1.0
        assert WARNING_ATTR not in trial.user_attrs
    assert any(t.user_attrs[INHERITED_ATTR]["fraction"] > 0 for t in bred)
    random_trials = [t for t in complete if t.user_attrs[LINEAGE_ATTR]["origin"] == "random"]
    assert all(INHERITED_ATTR not in t.user_attrs for t in random_trials)


def test_a_stored_trial_loads_as_its_trained_model(tmp_path: Path) -> None:
    study = _study(tmp_path)
    objective = make_objective(tmp_path / "weights")
    study.optimize(objective, n_trials=2)
    best = study.best_trial
    genome, state = WeightBank(objective.inheritance).load(study, best.number)  # type: ignore[arg-type]
    assert genome.to_json() == best.user_attrs["genome"]
    model = build_model(genome, 6, 2, seed=0)
    model.load_state_dict(state)
    split = objective._splits[0]
    with torch.no_grad():
        logits = model.eval()(torch.as_tensor(split.X_val, dtype=torch.float32))
    accuracy = float((logits.argmax(1).numpy() == split.y_val).mean())
    assert accuracy == pytest.approx(best.user_attrs["val_accuracy"])


@pytest.mark.parametrize("damage", ["removed", "corrupt"])
def test_a_missing_or_corrupt_parent_artifact_starts_the_child_fresh(
    tmp_path: Path, damage: str
) -> None:
    store = tmp_path / "weights"
    study = _study(tmp_path)
    objective = make_objective(store)
    study.optimize(objective, n_trials=3)  # the random population
    for path in store.iterdir():
        if damage == "removed":
            path.unlink()
        else:
            path.write_bytes(b"\x00garbage")
    study.optimize(objective, n_trials=3)
    bred = _bred(study)
    assert bred
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    first = min(bred, key=lambda t: t.number)
    warning = first.user_attrs[WARNING_ATTR]
    assert ("not in the weights folder" if damage == "removed" else "corrupt") in warning
    assert INHERITED_ATTR not in first.user_attrs  # nothing usable: it started fresh


def test_retention_keeps_the_best_and_the_latest_and_reports_their_size(tmp_path: Path) -> None:
    store = tmp_path / "weights"
    study = _study(tmp_path)
    study.optimize(make_objective(store, keep_best=2, keep_recent=1), n_trials=9)
    complete = study.get_trials(states=[TrialState.COMPLETE])
    ranked = sorted(complete, key=lambda t: (-t.value, t.number))  # type: ignore[operator]
    kept_numbers = {t.number for t in ranked[:2]} | {max(t.number for t in complete)}
    kept = {t.user_attrs[WEIGHTS_ATTR]["artifact"] for t in complete if t.number in kept_numbers}
    on_disk = {path.name for path in store.iterdir()}
    assert on_disk == kept
    assert study.user_attrs[STUDY_BYTES_ATTR] == sum(
        t.user_attrs[WEIGHTS_ATTR]["bytes"] for t in complete if t.number in kept_numbers
    )
    assert study.user_attrs[STUDY_BYTES_ATTR] == sum(p.stat().st_size for p in store.iterdir())


def test_inherit_false_only_keeps_weights(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study.optimize(make_objective(tmp_path / "w", inherit=False), n_trials=6)
    assert _bred(study)
    assert all(INHERITED_ATTR not in t.user_attrs for t in study.trials)
    assert all(WEIGHTS_ATTR in t.user_attrs for t in study.trials)


def test_a_resumed_study_goes_on_inheriting_from_trials_before_the_stop(tmp_path: Path) -> None:
    store = tmp_path / "weights"
    _study(tmp_path).optimize(make_objective(store), n_trials=4)
    resumed = _study(tmp_path)  # a new process: new sampler, objective and bank
    objective = pickle.loads(pickle.dumps(make_objective(store)))
    resumed.optimize(objective, n_trials=4)
    later = [t for t in _bred(resumed) if t.number >= 4]
    assert later
    parents = {p for t in later for p in t.user_attrs[INHERITED_ATTR]["parents"]}
    assert parents & set(range(4))


def test_batched_trials_inherit_too(tmp_path: Path) -> None:
    from evohpo.search.batched import optimize

    study = _study(tmp_path)
    optimize(study, make_objective(tmp_path / "weights"), n_trials=9, batch_trials=3)
    bred = _bred(study)
    assert bred
    assert all(INHERITED_ATTR in t.user_attrs for t in bred)


def test_same_seed_same_search_with_inheritance(tmp_path: Path) -> None:
    values = []
    for run in range(2):
        (tmp_path / str(run)).mkdir()
        study = _study(tmp_path / str(run))
        study.optimize(make_objective(tmp_path / str(run) / "w"), n_trials=7)
        values.append([t.value for t in study.trials])
    assert values[0] == values[1]


def test_bad_settings_name_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="'store'"):
        WeightInheritance(42)
    with pytest.raises(InvalidParameterError, match="'keep_best'"):
        WeightInheritance(tmp_path, keep_best=0)
    with pytest.raises(InvalidParameterError, match="'inherit'"):
        WeightInheritance(tmp_path, inherit="yes")
    X, y = _data()
    with pytest.raises(InvalidParameterError, match="'inheritance'"):
        GenomeObjective(X, y, inheritance=str(tmp_path))  # type: ignore[arg-type]


# -- the estimator and study files --------------------------------------------------------------
def test_the_estimator_keeps_weights_next_to_its_storage(tmp_path: Path) -> None:
    X, y = _data(1)
    db = tmp_path / "fit.db"
    clf = evohpo.EvoSearchClassifier(
        n_trials=8,
        max_epochs=3,
        search_space=SPACE,
        storage=f"sqlite:///{db}",
        study_name="fit",
        inherit_weights=True,
        random_state=0,
        ensemble_size=1,
        device="cpu",
    )
    clf.fit(X, y)
    study = clf.study_
    assert (tmp_path / "fit.db.artifacts").is_dir()
    assert all(WEIGHTS_ATTR in t.user_attrs for t in study.trials)
    assert any(INHERITED_ATTR in t.user_attrs for t in study.trials)
    assert clf.score(X, y) > 0.6


def test_a_refit_starts_where_an_inheriting_trial_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _study(tmp_path)
    objective = make_objective(tmp_path / "weights")
    started: dict[int, Any] = {}
    inherited_start_of = objective._inherited_start

    def record(trial: optuna.Trial, genome: Genome, seed: int) -> Any:
        state, attrs = inherited_start_of(trial, genome, seed)
        started[trial.number] = state
        return state, attrs

    monkeypatch.setattr(objective, "_inherited_start", record)
    study.optimize(objective, n_trials=10)
    bred = [t for t in _bred(study) if inherited_start(t)]
    assert bred
    for trial in bred:
        start = objective.refit_start(study, trial)
        assert start is not None
        assert start.keys() == started[trial.number].keys()
        for key, tensor in start.items():
            assert torch.equal(tensor, started[trial.number][key]), (trial.number, key)
    fresh = next(t for t in study.trials if not inherited_start(t))
    assert objective.refit_start(study, fresh) is None
    # With a parent's weights gone, the start cannot be rebuilt: a fresh refit, with a word.
    parent = bred[-1].user_attrs[LINEAGE_ATTR]["parents"][0]
    artifact = study.trials[parent].user_attrs[WEIGHTS_ATTR]["artifact"]
    FileSystemArtifactStore(str(tmp_path / "weights")).remove(artifact)
    assert objective.refit_start(study, bred[-1]) is None


def test_the_estimators_refit_starts_inheriting_members_where_they_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import evohpo.estimator.base as estimator_base

    seen: list[Any] = []
    real_refit = estimator_base.refit_ensemble

    def refit_ensemble(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["initial_states"])
        return real_refit(*args, **kwargs)

    monkeypatch.setattr(estimator_base, "refit_ensemble", refit_ensemble)
    X, y = _data(1)
    clf = evohpo.EvoSearchClassifier(
        n_trials=8,
        max_epochs=3,
        search_space=SPACE,
        inherit_weights=True,
        random_state=0,
        ensemble_size=8,
        device="cpu",
    ).fit(X, y)
    (starts,) = seen
    by_number = {t.number: t for t in clf.study_.trials}
    inherited = [inherited_start(by_number[n]) for n in clf.ensemble_trials_]
    assert any(inherited)
    # The weights lived in a temporary folder, gone now: the starts were read before.
    assert [start is not None for start in starts] == inherited


@pytest.mark.parametrize(("name", "value"), [("inherit_weights", "yes"), ("weights_dir", 42)])
def test_the_estimators_bad_settings_name_the_parameter(name: str, value: Any) -> None:
    X, y = _data()
    with pytest.raises(InvalidParameterError, match=f"'{name}'"):
        evohpo.EvoSearchClassifier(n_trials=1, **{name: value}).fit(X, y)


def test_a_study_file_turns_inheritance_on(
    tmp_path: Path, write_study: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from evohpo.cli import main

    path = write_study(
        tmp_path, train={"inherit_weights": True, "max_epochs": 2}, budget={"n_trials": 6}
    )
    assert main(["run", str(path)]) == 0
    assert "trained weights kept: " in capsys.readouterr().out
    study = optuna.load_study(
        study_name="tiny/ga/seed0", storage=f"sqlite:///{tmp_path / 'evohpo.db'}"
    )
    assert all(WEIGHTS_ATTR in t.user_attrs for t in study.trials)
    assert any(INHERITED_ATTR in t.user_attrs for t in study.trials)
    assert (tmp_path / "evohpo.db.artifacts").is_dir()


def test_a_study_resumes_only_with_the_same_inheritance_setting(
    tmp_path: Path, write_study: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from evohpo.cli import main

    on = write_study(tmp_path, train={"inherit_weights": True, "max_epochs": 2})
    assert main(["run", str(on), "--n-trials", "2"]) == 0
    off = write_study(tmp_path, train={"inherit_weights": False, "max_epochs": 2})
    capsys.readouterr()
    assert main(["run", str(off), "--n-trials", "3"]) == 1
    assert "inherit_weights: stored true, now false" in capsys.readouterr().err
    # A study stored before the setting was recorded resumes with it off, as it ran.
    url = f"sqlite:///{tmp_path / 'evohpo.db'}"
    study = optuna.load_study(study_name="tiny/ga/seed0", storage=url)
    identity = dict(study.user_attrs["evohpo.study"])
    assert identity["inherit_weights"] is True
    del identity["inherit_weights"]
    study.set_user_attr("evohpo.study", identity)
    assert main(["run", str(off), "--n-trials", "3"]) == 0


def test_a_study_file_with_a_bad_inheritance_setting_is_refused(
    tmp_path: Path, write_study: Any
) -> None:
    from evohpo.studies.config import load_study_config

    path = write_study(tmp_path, train={"inherit_weights": "sometimes"})
    with pytest.raises(StudyConfigError, match="inherit_weights"):
        load_study_config(path)


def test_a_weights_dir_that_cannot_be_made_stops_the_run_before_any_trial(
    tmp_path: Path, write_study: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from evohpo.cli import main

    (tmp_path / "afile").write_text("")
    path = write_study(tmp_path, train={"inherit_weights": True, "weights_dir": "afile/w"})
    assert main(["run", str(path)]) == 1
    assert "'store' parameter of WeightInheritance must be a folder that can be created" in (
        capsys.readouterr().err
    )
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'evohpo.db'}")
    assert all(not s.n_trials for s in optuna.get_all_study_summaries(storage))
    X, y = _data()
    with pytest.raises(InvalidParameterError, match="a folder that can be created"):
        evohpo.EvoSearchClassifier(
            n_trials=2, inherit_weights=True, weights_dir=str(tmp_path / "afile" / "w")
        ).fit(X, y)


# -- workers on PostgreSQL share one weight store ------------------------------------------------
@pytest.mark.slow
@pytest.mark.postgres
def test_workers_on_postgres_share_one_weight_store(tmp_path: Path) -> None:
    from evohpo.storage import close_storage, open_storage
    from evohpo.workers import WorkerSpec, run_workers
    from tests._pg import PostgresServer

    with PostgresServer.running_server() as server:
        url = server.create_database()
        storage = open_storage(url)
        optuna.create_study(storage=storage, study_name="w", direction="maximize")
        close_storage(storage)
        spec = WorkerSpec(
            study_name="w",
            storage_url=url,
            objective_factory=functools.partial(make_objective, str(tmp_path / "weights")),
            sampler_factory=make_sampler,
            pruner_factory=optuna.pruners.NopPruner,
            n_trials=10,
        )
        reports = run_workers(spec, 2, threads_per_worker=1)
        assert [r.exitcode for r in reports] == [0, 0]
        storage = open_storage(url)
        try:
            trials = optuna.load_study(study_name="w", storage=storage).get_trials()
        finally:
            close_storage(storage)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 10 <= len(complete) <= 11
    assert not [t.number for t in trials if t.state != TrialState.COMPLETE]
    assert all(WEIGHTS_ATTR in t.user_attrs for t in complete)
    inherited = [t for t in complete if INHERITED_ATTR in t.user_attrs]
    assert inherited
    # Every parent's weights were found, whichever worker trained it.
    assert not [t.number for t in complete if WARNING_ATTR in t.user_attrs]
    assert {t.system_attrs[OWNER_ATTR]["worker"] for t in complete} == {0, 1}


def test_an_objective_of_ones_own_warm_starts_from_the_parents(tmp_path: Path) -> None:
    """``warm_start`` loads exactly the stored parent tensors of every copied gene."""
    bank = evohpo.WeightBank(evohpo.WeightInheritance(tmp_path / "w"))
    loaded: dict[int, dict[str, torch.Tensor]] = {}

    def objective(trial: optuna.Trial) -> float:
        genome = evohpo.suggest_genome(trial, SPACE)
        model = build_model(genome, 6, 2, seed=trial.number)
        if bank.warm_start(trial, genome, model):
            loaded[trial.number] = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():  # "training": every weight moves
            for parameter in model.parameters():
                parameter.add_(0.01 * (trial.number + 1))
        bank.keep(trial, genome, model)
        return -float(sum(p.detach().abs().sum() for p in model.parameters()))

    study = _study(tmp_path)
    study.optimize(objective, n_trials=8)
    assert loaded
    checked = 0
    for number, state in loaded.items():
        record = study.trials[number].user_attrs[INHERITED_ATTR]
        genome = evohpo.Genome.from_json(study.trials[number].user_attrs[LINEAGE_ATTR]["genome"])
        for index, layer in enumerate(genome.layers):
            how = record["genes"][layer.id]
            if how.startswith("copy:#"):
                parent = int(how.split("#")[1])
                parent_genome, parent_state = bank.load(study, parent)
                source = next(i for i, g in enumerate(parent_genome.layers) if g.id == layer.id)
                torch.testing.assert_close(
                    state[f"hidden{index}.weight"], parent_state[f"hidden{source}.weight"]
                )
                checked += 1
    assert checked
