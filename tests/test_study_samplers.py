"""``[sampler.<name>]`` settings: checked when the study file is read, before any storage."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from evohpo.evolution.mutation import MutationRates
from evohpo.exceptions import StudyConfigError
from evohpo.storage import open_storage
from evohpo.studies.config import load_study_config
from evohpo.studies.group import STUDY_ATTR, open_study
from evohpo.studies.workers import study_file_spec

WriteStudy = Callable[..., Path]


def _bad(sampler: str, key: str, value: Any, expected: str) -> tuple[dict[str, Any], str]:
    """A ``[sampler.<sampler>]`` override and the message that names it."""
    message = (
        rf"study\.toml: \[sampler\.{sampler}\] '{key}' must be {expected}\. "
        rf"Got {re.escape(repr(value))} instead"
    )
    return {sampler: {key: value}}, message


@pytest.mark.parametrize(
    ("sampler", "message"),
    [
        _bad("tpe", "n_startup_trials", "x", "an int >= 0"),
        _bad("tpe", "n_startup_trials", -3, "an int >= 0"),
        _bad("tpe", "n_startup_trials", 2.0, "an int >= 0"),
        _bad("tpe", "n_startup_trials", True, "an int >= 0"),
        _bad("tpe", "n_ei_candidates", 0, "an int >= 1"),
        _bad("tpe", "n_ei_candidates", "24", "an int >= 1"),
        _bad("tpe", "multivariate", 1, "true or false"),
        _bad("tpe", "multivariate", "yes", "true or false"),
        _bad("tpe", "group", 0, "true or false"),
        _bad("tpe", "constant_liar", "false", "true or false"),
        _bad("tpe", "consider_endpoints", 1, "true or false"),
        _bad("tpe", "warn_independent_sampling", 1, "true or false"),
        _bad("tpe", "prior_weight", -1.0, r"a number >= 0"),
        _bad("tpe", "prior_weight", True, r"a number >= 0"),
        _bad("tpe", "prior_weight", float("nan"), r"a number >= 0"),
        (
            {"tpe": {"gamma": 0.5}},
            r"\[sampler\.tpe\] cannot set 'gamma' from a study file: it takes a Python "
            r"function.*The settings it may set are \[.*'n_startup_trials'",
        ),
        (
            {"tpe": {"weights": [1.0, 2.0]}},
            r"\[sampler\.tpe\] cannot set 'weights' from a study file: it takes a Python function",
        ),
        (
            {"tpe": {"constraints_func": "f"}},
            r"\[sampler\.tpe\] cannot set 'constraints_func' from a study file",
        ),
        (
            {"tpe": {"multivariate": False, "group": True}},
            r"\[sampler\.tpe\]: .*group.*multivariate",
        ),
        ({"random": {"seed": 3}}, r"\[sampler\.random\] cannot set 'seed'"),
        ({"ga": {"population_size": "3"}}, r"\[sampler\.ga\]: The 'population_size' parameter"),
        ({"ga": {"n_startup_trials": True}}, r"\[sampler\.ga\]: The 'n_startup_trials' parameter"),
        ({"ga": {"aging": 1}}, r"\[sampler\.ga\]: The 'aging' parameter of EvoSampler"),
    ],
)
def test_bad_sampler_settings_are_named(
    tmp_path: Path, write_study: WriteStudy, sampler: dict[str, Any], message: str
) -> None:
    with pytest.raises(StudyConfigError, match=message):
        load_study_config(write_study(tmp_path, sampler=sampler))


def test_every_tpe_setting_a_study_file_may_set_builds(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    tpe = {
        "n_startup_trials": 0,
        "n_ei_candidates": 8,
        "multivariate": True,
        "group": True,
        "constant_liar": False,
        "prior_weight": 0,
        "consider_prior": True,
        "consider_magic_clip": False,
        "consider_endpoints": True,
        "warn_independent_sampling": False,
    }
    with pytest.warns((FutureWarning, optuna.exceptions.ExperimentalWarning)):
        config = load_study_config(write_study(tmp_path, sampler={"tpe": tpe}))
    assert config.sampler_options["tpe"] == tpe
    assert config.sampler_arguments("tpe") == tpe


@pytest.mark.parametrize(
    ("tpe", "stored"), [({"n_startup_trials": "x"}, "x"), ({"gamma": 0.5}, 0.5)]
)
def test_a_bad_tpe_setting_never_reaches_the_storage(
    tmp_path: Path,
    write_study: WriteStudy,
    capsys: pytest.CaptureFixture[str],
    tpe: dict[str, Any],
    stored: Any,
) -> None:
    from evohpo.cli import main

    path = write_study(tmp_path, sampler={"tpe": tpe}, train={"device": "cpu"})
    assert main(["run", str(path), "--sampler", "tpe"]) == 1
    assert "[sampler.tpe]" in capsys.readouterr().err
    assert not (tmp_path / "evohpo.db").exists()  # no study holds the bad value
    # The file fixed, the study runs: nothing stuck in the storage disagrees.
    path = write_study(tmp_path, sampler={"tpe": {"n_startup_trials": 3}}, train={"device": "cpu"})
    assert main(["run", str(path), "--sampler", "tpe", "--n-trials", "1"]) == 0


# -- [sampler.ga.mutation_rates] ------------------------------------------------------------------
def test_mutation_rates_table_becomes_the_gas_mutation_rates(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    rates = {"gene": 0.3, "insert_layer": 0.0, "units_sigma": 1.5}
    config = load_study_config(write_study(tmp_path, sampler={"ga": {"mutation_rates": rates}}))
    # The file's table is the identity; the sampler gets the MutationRates.
    assert config.sampler_options["ga"] == {"population_size": 2, "mutation_rates": rates}
    expected = MutationRates(gene=0.3, insert_layer=0.0, units_sigma=1.5)
    assert config.sampler_arguments("ga")["mutation_rates"] == expected
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(storage, config, "ga", 0)
    assert study.sampler._rates == expected
    assert study.user_attrs[STUDY_ATTR]["sampler_options"]["mutation_rates"] == rates
    # Worker processes build the same sampler from a pickled factory.
    spec = study_file_spec(config, "ga", 0, "sqlite:///unused.db", n_trials=4, batch_trials=1)
    assert pickle.loads(pickle.dumps(spec.sampler_factory))()._rates == expected


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        (
            {"gene": 2.0},
            r"study\.toml: \[sampler\.ga\.mutation_rates\]: The 'gene' parameter of "
            r"MutationRates must be a float in the range \[0\.0, 1\.0\]\. Got 2\.0 instead",
        ),
        ({"gene": True}, r"\[sampler\.ga\.mutation_rates\]: The 'gene' parameter"),
        ({"units_sigma": 0}, r"\[sampler\.ga\.mutation_rates\]: The 'units_sigma' parameter"),
        ({"dropout_sigma": "x"}, r"\[sampler\.ga\.mutation_rates\]: The 'dropout_sigma'"),
        (
            {"gen": 0.2},
            r"unknown setting 'gen' in \[sampler\.ga\.mutation_rates\].*Did you mean 'gene'\?",
        ),
    ],
)
def test_bad_mutation_rates_are_named(
    tmp_path: Path, write_study: WriteStudy, rates: dict[str, Any], message: str
) -> None:
    path = write_study(tmp_path, sampler={"ga": {"mutation_rates": rates}})
    with pytest.raises(StudyConfigError, match=message):
        load_study_config(path)


def test_mutation_rates_must_be_a_table(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(
        'name = "tiny"\n[data]\ndataset = "iris"\n[budget]\nn_trials = 2\n'
        "[sampler.ga]\nmutation_rates = 0.2\n",
        encoding="utf-8",
    )
    with pytest.raises(
        StudyConfigError,
        match=r"\[sampler\.ga\] 'mutation_rates' must be a table of rates "
        r"\(\[sampler\.ga\.mutation_rates\]\)\. Got 0\.2 instead",
    ):
        load_study_config(path, check_device=False)
