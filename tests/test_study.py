from __future__ import annotations

import logging
import math
import os
import random
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from evohpo import EvoSampler, Genome, SearchSpace, suggest_genome
from evohpo._interrupt import GracefulStop, raise_if_stop_requested, stop_requested
from evohpo.exceptions import (
    InvalidParameterError,
    StopRequested,
    StorageError,
    StudyConfigError,
    StudyMismatchError,
)
from evohpo.search.batch_size import (
    AUTO_BATCH_TRIALS,
    auto_batch_trials,
    check_batch_trials,
    largest_network_macs,
    resolve_batch_trials,
)
from evohpo.search.samplers import build_pruner, build_sampler
from evohpo.storage import OWNER_ATTR, describe_storage, open_storage, resolve_storage_url
from evohpo.studies.config import Budget, load_study_config, parse_study_config
from evohpo.studies.data import prepare_data
from evohpo.studies.group import (
    STUDY_ATTR,
    group_studies,
    open_study,
    study_identity,
    study_name,
)
from evohpo.studies.run import (
    finished_trials,
    make_objective,
    remaining_budget,
    run_study,
    study_batch_trials,
    trial_seconds,
    trial_time_shares,
)
from evohpo.studies.workers import study_file_spec
from evohpo.training.population import CPU_STACK_MAX_MACS

STUDIES = Path(__file__).resolve().parents[1] / "studies"

WriteStudy = Callable[..., Path]


def cheap_objective(space: SearchSpace) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        genome = suggest_genome(trial, space)
        return 1.0 / (1.0 + abs(math.log10(genome.learning_rate) + 2) + genome.depth / 10)

    return objective


def storage_snapshot(storage: optuna.storages.BaseStorage) -> list[Any]:
    """Everything a study record holds, to check that nothing changed."""
    snapshot = []
    for frozen in storage.get_all_studies():
        trials = storage.get_all_trials(frozen._study_id)
        snapshot.append(
            (
                frozen.study_name,
                frozen.directions,
                frozen.user_attrs,
                frozen.system_attrs,
                [(t.number, t.state, t.params, t.values, t.user_attrs) for t in trials],
            )
        )
    return snapshot


# -- study files --------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_study_files_parse(path: Path) -> None:
    config = load_study_config(path)
    assert config.name == path.stem
    assert config.budget.n_trials is not None
    assert config.target is not None
    assert set(config.samplers) == {"ga", "tpe", "random"}
    assert len(config.seeds) >= 2
    assert config.storage_url == f"sqlite:///{STUDIES / 'evohpo.db'}"


def test_shipped_study_files_cover_the_data_sets() -> None:
    names = {load_study_config(p).dataset for p in STUDIES.glob("*.toml")}
    assert {"digits", "mnist1d", "wine", "breast_cancer"} <= names


def test_tiny_config_parses(tmp_path: Path, write_study: WriteStudy) -> None:
    config = load_study_config(write_study(tmp_path))
    assert config.name == "tiny"
    assert config.dataset == "iris"
    assert config.space.max_layers == 2
    assert config.train == {"max_epochs": 2}
    assert config.budget == Budget(n_trials=4)
    assert config.samplers == ("ga", "tpe")
    assert config.seeds == (0, 1)
    assert config.sampler_options["ga"] == {"population_size": 2}
    assert config.base_dir == tmp_path.resolve()
    assert config.storage_url == f"sqlite:///{tmp_path.resolve() / 'evohpo.db'}"
    assert config.output_dir == tmp_path.resolve() / "runs" / "tiny"


def test_batch_trials_is_a_train_setting_apart_from_the_train_config(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    assert load_study_config(write_study(tmp_path)).batch_trials == "auto"
    config = load_study_config(write_study(tmp_path, train={"batch_trials": 3}))
    assert config.batch_trials == 3
    assert config.train == {"max_epochs": 2}  # what TrainConfig takes
    explicit = load_study_config(write_study(tmp_path, train={"batch_trials": "auto"}))
    assert explicit.batch_trials == "auto"


def test_study_names_that_read_alike_get_their_own_output_folders(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    folders = {
        name: load_study_config(write_study(tmp_path, name=name)).output_dir
        for name in ("my study", "my_study", "my/study".replace("/", "\\"), "cache")
    }
    assert len(set(folders.values())) == len(folders)
    assert folders["my_study"].name == "my_study"  # a name that may stay, stays
    assert folders["my study"].name.startswith("my_study-")
    config = load_study_config(write_study(tmp_path, name="cache"))
    assert config.output_dir != config.cache_dir
    assert all(folder.parent == tmp_path.resolve() / "runs" for folder in folders.values())


def test_name_defaults_to_the_file_stem(tmp_path: Path, write_study: WriteStudy) -> None:
    path = write_study(tmp_path, filename="wine-small.toml", name=None)
    assert load_study_config(path).name == "wine-small"


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(StudyConfigError, match=r"'.*nothere\.toml' does not exist"):
        load_study_config(tmp_path / "nothere.toml")


def test_a_directory_is_not_a_study_file(tmp_path: Path, write_study: WriteStudy) -> None:
    write_study(tmp_path, filename="tiny.toml")
    with pytest.raises(
        StudyConfigError,
        match=r"is a directory; give the path of a \.toml file\. "
        r"It holds tiny\.toml\.",
    ):
        load_study_config(tmp_path)


def test_the_device_check_can_be_skipped(tmp_path: Path, write_study: WriteStudy) -> None:
    # Commands that train nothing (best, dashboard) work where the device is missing.
    path = write_study(tmp_path, train={"device": "cuda:7"})
    with pytest.raises(StudyConfigError, match=r"'device' must be a device that is available"):
        load_study_config(path)
    assert load_study_config(path, check_device=False).train["device"] == "cuda:7"


def test_missing_suffix_gets_a_hint(tmp_path: Path, write_study: WriteStudy) -> None:
    write_study(tmp_path, filename="tiny.toml")
    with pytest.raises(StudyConfigError, match=r"Did you mean '.*tiny\.toml'\?"):
        load_study_config(tmp_path / "tiny")


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text('name = "x"\n[data]\ndataset = digits\n', encoding="utf-8")
    with pytest.raises(StudyConfigError, match=r"not valid TOML: .*line 3"):
        load_study_config(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"budget": {"n_trials": None, "n_trails": 4}},
            r"unknown setting 'n_trails' in \[budget\].*Did you mean 'n_trials'",
        ),
        ({"budget": {"n_trials": 0}}, r"\[budget\] 'n_trials' must be an int >= 1. Got 0"),
        ({"budget": {"n_trials": "ten"}}, r"'n_trials' must be an int >= 1. Got 'ten'"),
        ({"budget": {"n_trials": None, "timeout": -1}}, r"'timeout' must be a number > 0"),
        ({"budget": {"n_trials": None}}, r"\[budget\] needs 'n_trials', 'timeout' or both"),
        ({"data": {"dataset": "mnist"}}, r"\[data\] 'dataset' must be one of .*'digits'"),
        ({"data": {"dataset": "digit"}}, r"Got 'digit' instead\. Did you mean 'digits'\?"),
        ({"data": {"test_fraction": 1.5}}, r"'test_fraction' must be a number in \(0, 1\)"),
        ({"space": {"units": [16, 4]}}, r"\[space\]: .*'units'.*low <= high"),
        (
            {"space": {"units": None, "unit": [4, 16]}},
            r"\[space\]: Unknown SearchSpace settings \['unit'\]",
        ),
        ({"train": {"max_epochs": 0}}, r"\[train\]: The 'max_epochs' parameter of TrainConfig"),
        (
            {"train": {"max_epochs": None, "epochs": 2}},
            r"unknown setting 'epochs' in \[train\]",
        ),
        ({"compare": {"samplers": ["ga", "cmaes"]}}, r"'samplers' must be a non-empty list"),
        (
            {"compare": {"seeds": [0, 0]}},
            r"'seeds' must be a non-empty list of distinct ints",
        ),
        ({"compare": {"target": 2}}, r"'target' must be a number in \(0, 1\]"),
        (
            {"sampler": {"ga": {"population_size": 1}}},
            r"\[sampler.ga\]: The 'population_size'",
        ),
        (
            {"sampler": {"ga": {"population_size": None, "populaton_size": 2}}},
            r"unknown setting 'populaton_size' in \[sampler\.ga\].*"
            r"Did you mean 'population_size'\?",
        ),
        (
            {"sampler": {"ga": {"population_size": None, "popsize": 2}}},
            r"unknown setting 'popsize' in \[sampler\.ga\]",
        ),
        (
            {"sampler": {"ga": {"population_size": None, "seed": 3}}},
            r"\[sampler\.ga\] cannot set 'seed': it comes from \[compare\] seeds",
        ),
        (
            {"sampler": {"tpe": {"n_startup_trails": 2}}},
            r"unknown setting 'n_startup_trails' in \[sampler\.tpe\].*"
            r"Did you mean 'n_startup_trials'\?",
        ),
        (
            {"sampler": {"random": {"n_startup_trials": 2}}},
            r"\[sampler\.random\] takes no settings",
        ),
        ({"name": "a/b"}, r"'name' must be a non-empty str without '/'"),
        ({"name": ".."}, r"'name' must be .* not '\.' or '\.\.'"),
        ({"pruner": {"name": "asha"}}, r"\[pruner\] 'name' must be one of"),
        (
            {"pruner": {"name": "median", "n_warmup_step": 2}},
            r"unknown setting 'n_warmup_step' in \[pruner\].*Did you mean 'n_warmup_steps'\?",
        ),
        (
            {"pruner": {"name": "medain"}},
            r"\[pruner\] 'name' must be one of .*Did you mean 'median'\?",
        ),
        (
            {"pruner": {"name": "median", "n_warmup_steps": -1}},
            r"\[pruner\] 'n_warmup_steps' must be an int >= 0\. Got -1",
        ),
        *(
            (
                {"pruner": {"name": name, key: value}},
                rf"\[pruner\] '{key}' must be {expected}\. Got {re.escape(repr(value))}",
            )
            for name, key, value, expected in (
                ("hyperband", "reduction_factor", "x", "an int >= 2"),
                ("hyperband", "min_resource", 0, "an int >= 1"),
                ("hyperband", "max_resource", "all", "an int >= 1 or 'auto'"),
                ("successive_halving", "min_resource", 0, "an int >= 1 or 'auto'"),
                ("median", "n_startup_trials", "5", "an int >= 0"),
                ("percentile", "percentile", "50", r"a number in \[0, 100\]"),
                ("percentile", "percentile", 101, r"a number in \[0, 100\]"),
            )
        ),
        ({"pruner": {"name": ["median"]}}, r"\[pruner\] 'name' must be one of"),
        ({"compare": {"seeds": [[0]]}}, r"\[compare\] 'seeds' must be a non-empty list"),
        (
            {"train": {"device": "cuda:7"}},
            r"study\.toml: \[train\] 'device' must be a device that is available.*"
            r"Got 'cuda:7' instead\. Use 'auto'",
        ),
        ({"train": {"device": "gpu"}}, r"\[train\]: The 'device' parameter"),
        *(
            (
                {"train": {"batch_trials": value}},
                rf"study\.toml: \[train\] 'batch_trials' must be an int >= 1 or 'auto'\. "
                rf"Got {re.escape(repr(value))} instead",
            )
            for value in (0, -2, "x", "Auto", 2.5, True)
        ),
        ({"samplers": ["ga"]}, r"unknown setting 'samplers' in the top level"),
    ],
)
def test_invalid_settings_are_named(
    tmp_path: Path, write_study: WriteStudy, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(StudyConfigError, match=message):
        load_study_config(write_study(tmp_path, **overrides))


def test_storage_in_the_file_is_relative_to_the_file(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path, storage="results/x.db"))
    assert config.storage_url == f"sqlite:///{tmp_path.resolve() / 'results' / 'x.db'}"


def test_parse_mapping_directly() -> None:
    config = parse_study_config(
        {"data": {"dataset": "wine"}, "budget": {"timeout": 5}}, default_name="w"
    )
    assert config.name == "w"
    assert config.budget == Budget(n_trials=None, timeout=5.0)
    assert config.samplers == ("ga", "tpe", "random")


# -- storages -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///rel.db", "sqlite:////base/rel.db"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("results.sqlite3", "sqlite:////base/results.sqlite3"),
        ("/abs/x.db", "sqlite:////abs/x.db"),
        ("journal:///abs/j.log", "journal:///abs/j.log"),
        ("journal:////abs/j.log", "journal:///abs/j.log"),
        ("sqlite://///abs/x.db", "sqlite:////abs/x.db"),
        ("journal://rel/j.log", "journal:///base/rel/j.log"),
        ("runs/j.jsonl", "journal:///base/runs/j.jsonl"),
        ("postgresql://u:pw@host:5432/db", "postgresql://u:pw@host:5432/db"),
    ],
)
def test_resolve_storage_url(url: str, expected: str) -> None:
    assert resolve_storage_url(url, base_dir="/base") == expected


def test_unknown_storage_form_is_refused() -> None:
    with pytest.raises(StorageError, match=r"Cannot tell which storage 'results\.txt' is"):
        resolve_storage_url("results.txt")


def test_describe_storage_hides_passwords() -> None:
    shown = describe_storage("postgresql://me:secret@db.example:5432/evohpo")
    assert "secret" not in shown
    assert shown.startswith("postgresql://me:")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchdb://host/db", r"Cannot open the storage 'nosuchdb://host/db'"),
        (
            "sqlite:////nonexistent-dir/sub/x.db",
            r"Cannot open the storage .*: the directory '/nonexistent-dir/sub' does not exist\.$",
        ),
        (
            "journal:///nonexistent-dir/sub/x.log",
            r"Cannot open the storage .*: the directory '/nonexistent-dir/sub' does not exist\.$",
        ),
    ],
)
def test_storage_that_cannot_be_opened(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        open_storage(url)


def test_a_directory_is_not_a_storage_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"is a directory, not a storage file"):
        open_storage(f"sqlite:///{tmp_path}")


@pytest.mark.parametrize("form", ["sqlite", "journal"])
def test_open_without_create_of_a_missing_file_creates_nothing(tmp_path: Path, form: str) -> None:
    path = tmp_path / ("typo.db" if form == "sqlite" else "typo.log")
    url = f"sqlite:///{path}" if form == "sqlite" else f"journal://{path}"
    with pytest.raises(StorageError, match=r"the file '.*typo\.(db|log)' does not exist"):
        open_storage(url, create=False)
    assert list(tmp_path.iterdir()) == []
    open_storage(url)  # a command that writes creates it
    assert path.exists()
    assert open_storage(url, create=False) is not None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+pg8000://me@127.0.0.1:1/db", r"no module 'pg8000'.*Install the driver"),
        ("mysql://me@127.0.0.1:1/db", r"no module 'MySQLdb'.*evohpo\[mysql\].*mysql\+pymysql://"),
    ],
)
def test_a_missing_database_driver_says_what_to_install(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=r"its database driver is not installed \(" + message):
        open_storage(url)


def test_plain_postgresql_urls_have_their_driver_and_no_warning() -> None:
    # SQLAlchemy picks psycopg 3 for postgresql://; evohpo's postgres extra installs it.
    # Nothing listens on the port: the error must be the connection's, not an import's.
    from tests._pg import free_port

    url = f"postgresql://me:hunter2-secret@127.0.0.1:{free_port()}/db"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(StorageError, match=r"(?i)connection refused") as info:
            open_storage(url)
    assert "driver" not in str(info.value)
    assert "hunter2-secret" not in str(info.value)
    # Optuna's ExperimentalWarning for heartbeat_interval would print on every command.
    assert [str(w.message) for w in caught] == []


def test_storage_error_hides_the_password() -> None:
    with pytest.raises(StorageError) as info:
        open_storage("nosuchdb://me:hunter2@host/db")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("form", ["sqlite", "journal"])
def test_sqlite_and_journal_storages_hold_studies(
    tmp_path: Path, write_study: WriteStudy, form: str
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'a.db'}" if form == "sqlite" else f"journal://{tmp_path / 'a.log'}"
    )
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(url)
    study = open_study(storage, config, "ga", 0, storage_url=url)
    run_study(study, cheap_objective(config.space), Budget(n_trials=3))
    again = open_storage(url)
    assert [s.name for s in group_studies(again, "tiny")] == ["tiny/ga/seed0"]
    assert len(optuna.load_study(study_name="tiny/ga/seed0", storage=again).trials) == 3


# -- identity and mismatches -------------------------------------------------------------------
def test_open_study_records_its_identity(tmp_path: Path, write_study: WriteStudy) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, config, "tpe", 1)
    assert study.study_name == study_name("tiny", "tpe", 1) == "tiny/tpe/seed1"
    identity = study.user_attrs[STUDY_ATTR]
    assert identity["dataset"] == "iris"
    assert identity["sampler"] == "tpe"
    assert identity["seed"] == 1
    assert identity["direction"] == "maximize"
    assert identity["space"] == config.space.to_dict()
    assert SearchSpace.from_dict(identity["space"]) == config.space
    assert study.user_attrs["sampler"] == "tpe"
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE]
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    # Opening again with the same file is fine.
    assert open_study(storage, config, "tpe", 1)._study_id == study._study_id


def test_different_space_is_refused_and_nothing_changes(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, config, "ga", 0)
    run_study(study, cheap_objective(config.space), Budget(n_trials=3))
    before = storage_snapshot(storage)
    changed = load_study_config(write_study(tmp_path, space={"units": [4, 32]}))
    with pytest.raises(
        StudyMismatchError,
        match=r"'tiny/ga/seed0' .*different settings \(space\).*Nothing was changed",
    ):
        open_study(storage, changed, "ga", 0)
    assert storage_snapshot(storage) == before


def test_different_training_settings_are_refused(tmp_path: Path, write_study: WriteStudy) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    open_study(storage, config, "ga", 0)
    changed = load_study_config(write_study(tmp_path, train={"max_epochs": 3}))
    with pytest.raises(StudyMismatchError, match=r"\(train\)"):
        open_study(storage, changed, "ga", 0)


def test_the_mismatch_names_every_differing_setting(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    open_study(storage, config, "ga", 0)
    changed = load_study_config(
        write_study(tmp_path, space={"units": [4, 32]}, train={"max_epochs": 3, "patience": 1})
    )
    with pytest.raises(StudyMismatchError) as info:
        open_study(storage, changed, "ga", 0)
    message = str(info.value)
    assert "different settings (space, train)" in message
    assert "space.units: stored [4, 16], now [4, 32]" in message
    assert "train.max_epochs: stored 2, now 3" in message
    assert "train.patience: stored (not set), now 1" in message
    assert "max_layers" not in message  # the settings that agree are not listed


def test_device_and_eval_batch_size_are_not_part_of_the_identity(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(
        write_study(tmp_path, train={"device": "cpu", "eval_batch_size": 64})
    )
    assert study_identity(config, "ga", 0)["train"] == {"max_epochs": 2}
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, config, "ga", 0)
    run_study(study, cheap_objective(config.space), Budget(n_trials=2))
    # The same study resumes on another device, with another evaluation batch size.
    moved = load_study_config(
        write_study(tmp_path, train={"device": "auto", "eval_batch_size": 512})
    )
    assert open_study(storage, moved, "ga", 0)._study_id == study._study_id


def test_batch_trials_is_not_part_of_the_identity(tmp_path: Path, write_study: WriteStudy) -> None:
    config = load_study_config(write_study(tmp_path, train={"batch_trials": 1}))
    other = load_study_config(write_study(tmp_path, train={"batch_trials": 5}))
    assert study_identity(config, "ga", 0) == study_identity(other, "ga", 0)
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, config, "ga", 0)
    run_study(study, cheap_objective(config.space), Budget(n_trials=2))
    assert open_study(storage, other, "ga", 0)._study_id == study._study_id


def test_studies_stored_with_a_device_in_their_identity_still_resume(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, config, "ga", 0)
    old = dict(study.user_attrs[STUDY_ATTR])
    old["train"] = {**old["train"], "device": "cuda:0", "eval_batch_size": 4096}
    study.set_user_attr(STUDY_ATTR, old)  # as evohpo 0.x recorded it
    assert open_study(storage, config, "ga", 0)._study_id == study._study_id


def test_budget_changes_are_allowed(tmp_path: Path, write_study: WriteStudy) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    open_study(storage, config, "ga", 0)
    bigger = load_study_config(write_study(tmp_path, budget={"n_trials": 9}))
    open_study(storage, bigger, "ga", 0)


def test_different_direction_is_refused_and_nothing_changes(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    other = optuna.create_study(storage=storage, study_name="tiny/ga/seed0", direction="minimize")
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    before = storage_snapshot(storage)
    with pytest.raises(
        StudyMismatchError, match=r"direction\(s\) \[minimize\].*Nothing was changed"
    ):
        open_study(storage, config, "ga", 0)
    assert storage_snapshot(storage) == before


def test_foreign_study_with_trials_is_refused(tmp_path: Path, write_study: WriteStudy) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    other = optuna.create_study(storage=storage, study_name="tiny/ga/seed0", direction="maximize")
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    before = storage_snapshot(storage)
    with pytest.raises(StudyMismatchError, match="evohpo did not record"):
        open_study(storage, config, "ga", 0)
    assert storage_snapshot(storage) == before


def test_identity_excludes_the_budget(tmp_path: Path, write_study: WriteStudy) -> None:
    config = load_study_config(write_study(tmp_path))
    identity = study_identity(config, "ga", 0)
    assert "budget" not in identity
    assert identity["sampler_options"] == {"population_size": 2}


def test_pruning_is_off_by_default_and_configurable(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path))
    assert config.pruner == {"name": "none"}
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(open_study(storage, config, "ga", 0).pruner, optuna.pruners.NopPruner)
    median = load_study_config(
        write_study(tmp_path, pruner={"name": "median", "n_warmup_steps": 1})
    )
    assert median.pruner == {"name": "median", "n_warmup_steps": 1}
    assert isinstance(build_pruner(median.pruner), optuna.pruners.MedianPruner)
    # The pruner is part of the identity: changing it is refused.
    with pytest.raises(StudyMismatchError, match=r"\(pruner\)"):
        open_study(storage, median, "ga", 0)


# -- samplers -------------------------------------------------------------------------------------
def test_the_study_files_ga_uses_fixed_tournaments_unless_told_otherwise() -> None:
    # Trials of a study file train with seeds of their own: noisy values, so no
    # trial is spent on repeats to find that out, unless the file asks for "auto".
    space = SearchSpace(max_layers=2, units=(4, 16))

    def origins(options: dict[str, object] | None) -> list[str]:
        sampler = build_sampler("ga", seed=0, space=space, options=options)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(lambda t: -suggest_genome(t, space).depth, n_trials=8)
        return [t.user_attrs["evohpo"]["origin"] for t in study.trials]

    assert origins({"population_size": 4}) == ["random"] * 4 + ["bred"] * 4
    auto = {"population_size": 4, "tournament_size": "auto"}
    assert origins(auto) == ["random"] * 4 + ["repeat"] * 2 + ["bred"] * 2


def test_build_sampler_kinds() -> None:
    space = SearchSpace(max_layers=2)
    assert isinstance(build_sampler("ga", seed=0, space=space), EvoSampler)
    assert isinstance(build_sampler("tpe", seed=0), optuna.samplers.TPESampler)
    assert isinstance(build_sampler("random", seed=0), optuna.samplers.RandomSampler)
    with pytest.raises(ValueError, match="Unknown sampler 'cmaes'"):
        build_sampler("cmaes", seed=0)


def test_resumed_tpe_does_not_replay_its_first_trials() -> None:
    def first_draws(n_existing: int) -> list[float]:
        sampler = build_sampler("random", seed=0, n_existing=n_existing)
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        return [t.params["x"] for t in study.trials]

    assert first_draws(0) == first_draws(0)
    assert first_draws(0) != first_draws(3)


# -- data ------------------------------------------------------------------------------------------
def test_prepare_data_is_the_same_for_every_sampler_and_seed(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path))
    first, second = prepare_data(config), prepare_data(config)
    np.testing.assert_array_equal(first.X_train, second.X_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert len(first.y_train) + len(first.y_val) + len(first.y_test) == 150
    assert len(first.y_test) == 30
    # stratified: every class in every split
    for y in (first.y_train, first.y_val, first.y_test):
        assert set(np.unique(y)) == {0, 1, 2}
    # raw features: the objective standardises them
    assert first.X_train.max() > 4  # iris, in cm
    assert first.class_names == ["setosa", "versicolor", "virginica"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"validation_fraction": 0.01},
            r"study\.toml: \[data\] 'validation_fraction' = 0\.01 does not work on 'iris': "
            r"it leaves 2 validation rows of 120, fewer than the 3 classes .*"
            r"use a value in \[0\.025, 0\.975\]\.$",
        ),
        (
            {"test_fraction": 0.99},
            r"\[data\] 'test_fraction' = 0\.99 does not work on 'iris': "
            r"it leaves 1 training and validation row of 150",
        ),
        (
            {"test_fraction": None, "validation_fraction": 0.99},
            r"'validation_fraction' = 0\.99 does not work .*leaves 1 training row of",
        ),
    ],
)
def test_splits_that_leave_too_few_rows_are_config_errors(
    tmp_path: Path, write_study: WriteStudy, data: dict[str, Any], message: str
) -> None:
    config = load_study_config(write_study(tmp_path, data=data))
    with pytest.raises(StudyConfigError, match=message):
        prepare_data(config)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (
            [1, 5],
            r"study\.toml: \[space\] 'input_shape' = \[1, 5\] holds 5 values, but every row "
            r"of 'iris' has 4 features: .*e\.g\. \[1, 4\]",
        ),
        ([2, 1, 3], r"\[space\] 'input_shape' = \[2, 1, 3\] holds 6 values, .* 4 features"),
    ],
)
def test_an_input_shape_that_does_not_fold_the_rows_is_a_config_error(
    tmp_path: Path, write_study: WriteStudy, shape: list[int], message: str
) -> None:
    config = load_study_config(write_study(tmp_path, space={"input_shape": shape}))
    with pytest.raises(StudyConfigError, match=message):
        prepare_data(config)


def test_an_input_shape_reaches_the_objective_and_the_identity(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    space = {"input_shape": [1, 4], "min_blocks": 1, "max_blocks": 1, "channels": [2, 4]}
    path = write_study(tmp_path, space=space, train={"max_epochs": 1, "device": "cpu"})
    config = load_study_config(path)
    identity = study_identity(config, "ga", 0)
    assert identity["space"]["input_shape"] == [1, 4]
    assert "images" not in identity["data"]
    objective = make_objective(config, prepare_data(config), 0)
    assert objective.input_shape == (1, 4)
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, config, "ga", 0)
    run_study(study, objective, Budget(n_trials=2))
    genomes = [Genome.from_json(t.user_attrs["genome"]) for t in finished_trials(study)]
    assert [g.body_depth for g in genomes] == [1, 1]


def test_a_dense_study_files_identity_has_no_body_settings(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    identity = study_identity(load_study_config(write_study(tmp_path)), "ga", 0)
    assert identity["data"] == {
        "dataset": "iris",
        "test_fraction": 0.2,
        "validation_fraction": 0.2,
        "split_seed": 0,
    }
    assert not {"input_shape", "min_blocks", "channels", "readouts"} & set(identity["space"])


# -- running and resuming ------------------------------------------------------------------------
def test_budget_is_a_total(tmp_path: Path, write_study: WriteStudy) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    objective = cheap_objective(config.space)
    first = run_study(open_study(storage, config, "ga", 0), objective, Budget(n_trials=3))
    assert (first.n_before, first.n_after) == (0, 3)
    # A new process: a new sampler object, the population from storage.
    second = run_study(open_study(storage, config, "ga", 0), objective, Budget(n_trials=7))
    assert (second.n_before, second.n_after) == (3, 7)
    third = run_study(open_study(storage, config, "ga", 0), objective, Budget(n_trials=7))
    assert (third.n_before, third.n_after) == (7, 7)
    study = optuna.load_study(study_name="tiny/ga/seed0", storage=storage)
    assert [t.number for t in study.trials] == list(range(7))
    bred = [t for t in study.trials if t.user_attrs["evohpo"]["origin"] == "bred"]
    assert bred
    assert any(p < 3 for t in bred if t.number >= 3 for p in t.user_attrs["evohpo"]["parents"])


def test_timeout_counts_time_already_spent(tmp_path: Path, write_study: WriteStudy) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")

    def slow(trial: optuna.Trial) -> float:
        time.sleep(0.2)
        return trial.suggest_float("x", 0, 1)

    study = open_study(storage, config, "random", 0)
    counts = []
    for _ in range(4):
        run_study(study, slow, Budget(timeout=0.5))
        counts.append(len(study.trials))
    # Trials of at least 0.2 s each: a third starts after 0.4 s, a fourth never,
    # however many times the run is resumed (a fresh timeout would add more).
    assert 1 <= counts[0] <= 3
    assert counts[-1] <= 3
    assert counts[-1] == counts[-2]  # the time is spent: a later run adds nothing


@pytest.mark.parametrize(
    ("budget", "left"),
    [
        (Budget(n_trials=1), "1 trial left"),
        (Budget(n_trials=3), "3 trials left"),
        (Budget(timeout=60), "60 s of trial time left"),
        (Budget(timeout=2.5), "2.5 s of trial time left"),
        (Budget(n_trials=1, timeout=60), "1 trial and 60 s of trial time left"),
        (Budget(n_trials=2, timeout=60), "2 trials and 60 s of trial time left"),
        (Budget(), "no limit on trials or time"),
    ],
)
def test_the_run_logs_the_budget_left_in_words(
    tmp_path: Path,
    write_study: WriteStudy,
    caplog: pytest.LogCaptureFixture,
    budget: Budget,
    left: str,
) -> None:
    config = load_study_config(write_study(tmp_path))
    study = open_study(open_storage(f"sqlite:///{tmp_path / 's.db'}"), config, "random", 0)

    def stop(done: optuna.Study, trial: FrozenTrial) -> None:
        done.stop()  # one trial is enough to see the line

    with caplog.at_level(logging.INFO, logger="evohpo"):
        run_study(study, cheap_objective(config.space), budget, callbacks=[stop])
    assert f"Running tiny/random/seed0: {left}, 1 at a time." in caplog.messages


def test_auto_batch_trials_is_capped_by_the_population_and_the_trials() -> None:
    cpu, cuda = AUTO_BATCH_TRIALS["cpu"], AUTO_BATCH_TRIALS["cuda"]
    assert auto_batch_trials("cpu") == cpu
    assert auto_batch_trials("cuda") == cuda
    assert auto_batch_trials("mps") == cpu  # other devices: the CPU's choice
    assert auto_batch_trials("cuda", population_size=3) == 3
    assert auto_batch_trials("cuda", population_size=cuda + 5, n_trials=2) == 2
    assert auto_batch_trials("cpu", n_trials=0) == 1
    # Arithmetic-bound networks train no faster in stacks on the CPU; conv spaces train alone.
    assert auto_batch_trials("cpu", largest_macs=CPU_STACK_MAX_MACS) == cpu
    assert auto_batch_trials("cpu", largest_macs=CPU_STACK_MAX_MACS + 1) == 1
    assert auto_batch_trials("cuda", largest_macs=CPU_STACK_MAX_MACS + 1) == cuda
    assert auto_batch_trials("cuda", largest_macs=None) == 1
    assert largest_network_macs(SearchSpace(max_layers=1, units=(4, 8)), 5, 2) == 56
    assert largest_network_macs(SearchSpace(input_shape=(1, 10)), 10, 2) is None
    assert resolve_batch_trials("auto", "cpu", EvoSampler(population_size=3)) == 3
    assert resolve_batch_trials("auto", "cpu", optuna.samplers.TPESampler()) == cpu
    assert resolve_batch_trials(cpu + 1, "cpu", EvoSampler(population_size=3)) == cpu + 1
    assert check_batch_trials("auto", "batch_trials", "f") == "auto"
    assert check_batch_trials(4, "batch_trials", "f") == 4
    for bad in (0, True, 2.5, "x", None):
        with pytest.raises(
            InvalidParameterError,
            match=r"The 'batch_trials' parameter of f must be an int >= 1 or 'auto'",
        ):
            check_batch_trials(bad, "batch_trials", "f")


def test_study_batch_trials_resolves_the_file_setting(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path, train={"device": "cpu"}))
    ga = build_sampler("ga", seed=0, options=config.sampler_options["ga"], space=config.space)
    tpe = build_sampler("tpe", seed=0, options={}, space=config.space)
    assert study_batch_trials(config, ga, 20) == 2  # the GA's population
    assert study_batch_trials(config, tpe, None) == AUTO_BATCH_TRIALS["cpu"]
    assert study_batch_trials(config, tpe, 3) == 3
    assert study_batch_trials(config, ga, 20, 5) == 5  # --batch-trials
    fixed = load_study_config(write_study(tmp_path, train={"device": "cpu", "batch_trials": 6}))
    assert study_batch_trials(fixed, ga, 20) == 6
    assert study_batch_trials(fixed, ga, 20, "auto") == 2
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert study_file_spec(fixed, "ga", 0, url, n_trials=20).batch_trials == 6
    assert study_file_spec(config, "ga", 0, url, n_trials=20).batch_trials == 2
    # Two workers share one population: each takes half of it.
    assert study_file_spec(config, "ga", 0, url, n_trials=20, workers=2).batch_trials == 1
    assert study_file_spec(config, "tpe", 0, url, n_trials=20, workers=2).batch_trials == 8
    assert study_file_spec(config, "tpe", 0, url, n_trials=3, batch_trials=4).batch_trials == 4


def _timed_trial(number: int, start: float, end: float | None, pid: int | None) -> FrozenTrial:
    origin = datetime(2026, 1, 1)
    return FrozenTrial(
        number=number,
        state=TrialState.RUNNING if end is None else TrialState.COMPLETE,
        value=None if end is None else 0.5,
        datetime_start=origin + timedelta(seconds=start),
        datetime_complete=None if end is None else origin + timedelta(seconds=end),
        params={},
        distributions={},
        user_attrs={},
        system_attrs={} if pid is None else {OWNER_ATTR: {"host": "h", "pid": pid}},
        intermediate_values={},
        trial_id=number,
    )


def test_trials_trained_together_share_their_time() -> None:
    trials = [
        _timed_trial(0, 0, 4, pid=1),  # a batch of three in process 1
        _timed_trial(1, 0, 4, pid=1),
        _timed_trial(2, 0, 2, pid=1),
        _timed_trial(3, 4, 5, pid=1),  # then one alone
        _timed_trial(4, 1, 3, pid=2),  # another process: its own time
        _timed_trial(5, 1, 2, pid=None),  # no owner known: each on its own
        _timed_trial(6, 1, 2, pid=None),
        _timed_trial(7, 6, None, pid=1),  # still running
    ]
    shares = trial_time_shares(trials)
    assert shares == pytest.approx(
        {0: 2 / 3 + 1, 1: 2 / 3 + 1, 2: 2 / 3, 3: 1, 4: 2, 5: 1, 6: 1, 7: 0}
    )
    assert sum(shares[n] for n in range(4)) == pytest.approx(5)  # process 1's wall time
    # Trials one after another keep their durations.
    alone = [_timed_trial(n, 2 * n, 2 * n + 1.5, pid=1) for n in range(3)]
    assert trial_time_shares(alone) == pytest.approx({n: 1.5 for n in range(3)})


def test_run_study_trains_batches_and_counts_their_time_once(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path, train={"device": "cpu"}))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, config, "tpe", 0)
    objective = make_objective(config, prepare_data(config), 0)
    run = run_study(study, objective, Budget(n_trials=5), batch_trials=3)
    assert (run.n_before, run.n_after) == (0, 5)
    trials = finished_trials(study)
    assert [t.number for t in study.trials] == list(range(5))
    spans = [(t.datetime_start, t.datetime_complete) for t in trials]
    assert all(start is not None and end is not None for start, end in spans)
    starts = [start.timestamp() for start, _ in spans if start is not None]
    ends = [end.timestamp() for _, end in spans if end is not None]
    batches = [range(3), range(3, 5)]
    for batch in batches:  # every trial of a batch was asked before the first was told
        assert max(starts[i] for i in batch) < min(ends[i] for i in batch)
    assert starts[3] >= max(ends[:3])
    for trial in trials:
        assert Genome.from_json(trial.user_attrs["genome"]).depth == trial.params["n_layers"]
    # The budget's trial time counts each batch's wall time once, not once per trial.
    _, left = remaining_budget(study, Budget(timeout=1e6))
    assert left is not None
    walls = [max(ends[i] for i in b) - min(starts[i] for i in b) for b in batches]
    assert 1e6 - left == pytest.approx(sum(walls), abs=1e-3)
    assert 1e6 - left < sum(trial_seconds(t) for t in trials)


def test_a_stop_before_a_batch_trains_fails_it_untrained(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path, train={"device": "cpu"}))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, config, "ga", 0)
    objective = make_objective(config, prepare_data(config), 0)
    trained: list[int] = []

    class Spy:
        def __call__(self, trial: optuna.Trial) -> float:
            return objective(trial)

        def train_trials(self, trials: list[optuna.Trial]) -> list[float | Exception]:
            trained.append(len(trials))
            return objective.train_trials(trials)

    guard = GracefulStop()
    guard.requested = True  # as a signal that came while the batch was being asked
    with pytest.raises(KeyboardInterrupt):
        run_study(study, Spy(), Budget(n_trials=4), guard=guard, batch_trials=2)
    assert trained == []
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    # Resumed without a stop, the study fills its budget in batches.
    run_study(study, Spy(), Budget(n_trials=4), batch_trials=2)
    assert trained == [2, 2]
    assert len(finished_trials(study)) == 4


def test_batches_need_an_objective_that_trains_several_trials(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, config, "ga", 0)
    with pytest.raises(InvalidParameterError, match="without a train_trials method"):
        run_study(study, cheap_objective(config.space), Budget(n_trials=2), batch_trials=2)
    assert study.trials == []


def _train_until_stopped(trial: optuna.Trial) -> None:
    """What the trainer does: report now and then, poll the stop request every step."""
    for step in range(100_000):
        if step % 50 == 0:
            trial.report(0.5, step)
        raise_if_stop_requested()
        time.sleep(0.001)
    pytest.fail("the stop request was never seen")


def test_interrupt_during_a_trial_fails_it_and_keeps_the_rest(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, config, "ga", 0)
    inner = cheap_objective(config.space)

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 2:
            os.kill(os.getpid(), signal.SIGINT)
            _train_until_stopped(trial)
        return inner(trial)

    guard = GracefulStop()
    # What the process had before (Python's default_int_handler, or SIG_IGN where the
    # process was started in the background by a shell without job control).
    before = signal.getsignal(signal.SIGINT)
    with guard.installed(), pytest.raises(KeyboardInterrupt):
        run_study(study, objective, Budget(n_trials=4), guard=guard)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    assert signal.getsignal(signal.SIGINT) is before
    # Resuming fills the budget; the failed trial does not count.
    resumed = open_study(storage, config, "ga", 0)
    run_study(resumed, inner, Budget(n_trials=4))
    assert len(finished_trials(resumed)) == 4
    assert len(resumed.trials) == 5


def test_a_trial_that_does_not_poll_finishes_and_the_study_stops(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, config, "ga", 0)
    inner = cheap_objective(config.space)

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # not cut: the signal only asks for a stop
        return inner(trial)

    guard = GracefulStop()
    with guard.installed(), pytest.raises(KeyboardInterrupt):
        run_study(study, objective, Budget(n_trials=4), guard=guard)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]


@pytest.mark.slow
def test_signals_at_any_moment_of_storage_writes_never_wedge_the_storage(
    tmp_path: Path,
) -> None:
    # A KeyboardInterrupt raised inside a SQLite write used to leave a
    # connection holding the write lock: recording the failed trial then hit
    # "database is locked" and the trial stayed RUNNING. Signals now land
    # between steps; try many moments of a report-heavy trial.
    url = f"sqlite:///{tmp_path / 's.db'}"
    rng = random.Random(0)
    for attempt in range(12):
        study = optuna.create_study(study_name=f"s{attempt}", storage=url)

        def objective(trial: optuna.Trial) -> float:
            for step in range(100_000):
                trial.report(0.5, step)
                raise_if_stop_requested()
            pytest.fail("the stop request was never seen")

        timer = threading.Timer(rng.uniform(0.05, 0.5), os.kill, (os.getpid(), signal.SIGINT))
        guard = GracefulStop()
        with guard.installed():
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                run_study(study, objective, Budget(n_trials=1), guard=guard)
        timer.join()
        assert [t.state for t in study.trials] == [TrialState.FAIL]
        study.optimize(lambda trial: 1.0, n_trials=1)  # the storage still takes writes
        assert study.trials[-1].state == TrialState.COMPLETE


def test_signal_outside_a_trial_stops_at_the_next_boundary(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, config, "tpe", 0)
    guard = GracefulStop()

    def stop_after_first(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.number == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives outside any trial

    with guard.installed(), pytest.raises(KeyboardInterrupt):
        run_study(
            study,
            cheap_objective(config.space),
            Budget(n_trials=4),
            guard=guard,
            callbacks=[stop_after_first],
        )
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert guard.signum == signal.SIGTERM


def _signal_and_wait(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(1)


def test_second_signal_interrupts_at_once() -> None:
    guard = GracefulStop()
    with guard.installed():
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.requested
        with pytest.raises(KeyboardInterrupt):
            _signal_and_wait(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt), guard.interruptible():
            pass


def test_repeated_signals_only_ask_without_force_on_repeat() -> None:
    guard = GracefulStop(force_on_repeat=False)
    with guard.installed():
        os.kill(os.getpid(), signal.SIGINT)
        _signal_and_wait(signal.SIGTERM)  # not raised: a worker's parent follows Ctrl-C
        assert guard.requested
        assert guard.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt), guard.interruptible():
            pass


def test_a_signal_the_process_ignores_stays_ignored() -> None:
    # As a shell without job control starts background commands: SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        guard = GracefulStop()
        with guard.installed():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) == guard._handle
            _signal_and_wait(signal.SIGINT)
            assert not guard.requested
            os.kill(os.getpid(), signal.SIGTERM)
            assert guard.requested
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_stop_request_belongs_to_the_installed_guard() -> None:
    assert not stop_requested()
    guard = GracefulStop()
    with guard.installed():
        os.kill(os.getpid(), signal.SIGINT)
        assert stop_requested()
        with pytest.raises(StopRequested, match="stopped by a signal"):
            raise_if_stop_requested()
    # Uninstalled, the request no longer stops anything in this process.
    assert guard.requested
    assert not stop_requested()
    raise_if_stop_requested()


def test_graceful_stop_is_inert_outside_the_main_thread() -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with GracefulStop().installed():
                pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert errors == []


def test_weights_kept_under_a_name_replaced_without_a_digest_are_still_found(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    path = write_study(tmp_path, name="my study", storage="postgresql://u@h/db")
    config = load_study_config(path)
    assert config.weights_store() == config.output_dir / "weights"
    earlier = tmp_path.resolve() / "runs" / "my_study" / "weights"
    earlier.mkdir(parents=True)
    assert config.weights_store() == earlier
