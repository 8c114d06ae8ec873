"""Study files, storages, and creating or resuming the studies they describe.

A study file (TOML) declares an experiment: the data set and its splits, the
search space, the training settings, the budget of every study, the samplers
to compare and their seeds. Each (sampler, seed) pair is one Optuna study,
named ``<name>/<sampler>/seed<seed>`` so that the studies of one file group
together in optuna-dashboard.

Everything needed to resume lives in the storage: the trials (with their
genomes and lineage) and, as study user attributes, the study's identity
(data set, split, space, training settings, sampler, seed, direction). A
stored study whose identity differs from the file is refused with
:class:`~evohpo.exceptions.StudyMismatchError` before anything is written.

Budgets are totals: a study that holds 7 finished trials of a 10-trial
budget runs 3 more, and a timeout counts the training time already spent.
"""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from evohpo._interrupt import GracefulStop
from evohpo._random import derive_seed
from evohpo._version import __version__
from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import (
    InvalidParameterError,
    StudyConfigError,
    StudyMismatchError,
)
from evohpo.storage.opener import close_storage, open_storage
from evohpo.storage.urls import describe_storage, resolve_storage_url, storage_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from evohpo.search.objective import GenomeObjective
    from evohpo.training.datasets import Dataset

__all__ = [
    "DEFAULT_STORAGE_NAME",
    "DIRECTION",
    "FINISHED_STATES",
    "PRUNERS",
    "RUNTIME_TRAIN_KEYS",
    "SAMPLERS",
    "STUDY_ATTR",
    "Budget",
    "PreparedData",
    "StudyConfig",
    "StudyRun",
    "build_pruner",
    "build_sampler",
    "check_study",
    "close_storage",
    "describe_storage",
    "finished_trials",
    "group_study_names",
    "load_study_config",
    "open_storage",
    "open_study",
    "parse_study_config",
    "prepare_data",
    "resolve_storage_url",
    "run_study",
    "storage_file",
    "study_identity",
    "study_name",
]

_logger = logging.getLogger("evohpo")

#: Samplers a study file can name.
SAMPLERS: tuple[str, ...] = ("ga", "tpe", "random")
#: Every study maximises validation accuracy.
DIRECTION = "maximize"
#: Study user attribute that holds the study's identity (a JSON object).
STUDY_ATTR = "evohpo.studies.study"
#: File name of the default SQLite storage, next to the study file.
DEFAULT_STORAGE_NAME = "evohpo.db"
#: Trial states that count towards a budget.
FINISHED_STATES: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.PRUNED)
#: Version of the identity record; part of the identity.
_IDENTITY_FORMAT = 1
#: ``[train]`` settings that change where and how fast a trial runs, not what it
#: learns: left out of a study's identity, so a study resumes on another device.
RUNTIME_TRAIN_KEYS: tuple[str, ...] = ("device", "eval_batch_size")
#: Differences listed in a mismatch message at most.
_MAX_DIFFERENCES = 12

_TOP_KEYS = (
    "name",
    "description",
    "storage",
    "data",
    "space",
    "train",
    "pruner",
    "budget",
    "compare",
    "sampler",
)
#: Pruners a study file can name (``[pruner] name = ...``), with Optuna's classes.
PRUNERS: dict[str, str] = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
}
_DATA_KEYS = ("dataset", "test_fraction", "validation_fraction", "split_seed")
_TRAIN_KEYS = (
    "max_epochs",
    "patience",
    "min_delta",
    "device",
    "eval_batch_size",
    "max_train_time",
)
_BUDGET_KEYS = ("n_trials", "timeout")
_COMPARE_KEYS = ("samplers", "seeds", "target")


# -- the study file ----------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """How much each study may spend, in total over all its runs.

    Attributes
    ----------
    n_trials : int or None
        Finished (complete or pruned) trials per study.
    timeout : float or None
        Seconds of trial time per study.
    """

    n_trials: int | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class StudyConfig:
    """A parsed study file.

    Attributes
    ----------
    name : str
        Group name; studies are called ``<name>/<sampler>/seed<seed>``.
    description : str
        Free text.
    dataset : str
        A name from :data:`evohpo.training.datasets.DATASETS`.
    test_fraction : float or None
        Share of rows held out for the final test; ``None`` uses the data
        set's canonical test split if it has one, else 0.2.
    validation_fraction : float
        Share of the remaining rows used to score trials.
    split_seed : int
        Seed of the (stratified) splits, the same for every sampler and seed.
    space : SearchSpace
        The search space.
    train : dict
        Keyword arguments of :class:`evohpo.training.train.TrainConfig` (no seed).
    budget : Budget
        Per-study budget.
    samplers : tuple of str
        Samplers compared by ``evohpo compare``.
    seeds : tuple of int
        Seeds compared by ``evohpo compare``.
    target : float or None
        Validation accuracy whose first reach is timed by ``compare``.
    sampler_options : dict
        Keyword arguments per sampler name (``[sampler.ga]`` ...).
    pruner : dict
        ``{"name": ..., **options}`` from ``[pruner]``; ``"none"`` (the
        default) trains every trial to its end, so no sampler loses trials to
        a pruner tuned for another.
    storage : str or None
        Storage URL given in the file (relative paths resolved), or ``None``.
    base_dir : Path
        Directory of the study file: default storage, outputs and caches.
    source : str
        Where the configuration came from, for messages.
    """

    name: str
    dataset: str
    space: SearchSpace
    budget: Budget
    description: str = ""
    test_fraction: float | None = None
    validation_fraction: float = 0.2
    split_seed: int = 0
    train: Mapping[str, Any] = field(default_factory=dict)
    samplers: tuple[str, ...] = SAMPLERS
    seeds: tuple[int, ...] = (0,)
    target: float | None = None
    sampler_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    pruner: Mapping[str, Any] = field(default_factory=lambda: {"name": "none"})
    storage: str | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    source: str = "<study>"

    @property
    def output_dir(self) -> Path:
        """Where plots and exports of this study file go by default."""
        return self.base_dir / "runs" / _safe_name(self.name)

    @property
    def cache_dir(self) -> Path:
        """Where generated data sets are cached."""
        return self.base_dir / "runs" / "cache"

    @property
    def storage_url(self) -> str:
        """The storage of the file, or the default SQLite file next to it."""
        if self.storage is not None:
            return self.storage
        return resolve_storage_url(str(self.base_dir / DEFAULT_STORAGE_NAME))

    def data_identity(self) -> dict[str, Any]:
        """The settings that decide the rows each study sees."""
        return {
            "dataset": self.dataset,
            "test_fraction": self.test_fraction,
            "validation_fraction": self.validation_fraction,
            "split_seed": self.split_seed,
        }


def load_study_config(path: str | os.PathLike[str], *, check_device: bool = True) -> StudyConfig:
    """Read and check a study file.

    Parameters
    ----------
    path : path
        A TOML study file.
    check_device : bool
        Check that ``[train] device`` is usable on this machine (that imports
        torch). Commands that train nothing may skip it.

    Returns
    -------
    StudyConfig

    Raises
    ------
    StudyConfigError
        If the file is missing, is not valid TOML (the message names the
        line), or holds unknown or invalid settings.
    """
    file = Path(path)
    if file.is_dir():
        inside = sorted(p.name for p in file.glob("*.toml"))
        hint = f" It holds {', '.join(inside)}." if inside else ""
        raise StudyConfigError(
            f"The study file {str(file)!r} is a directory; give the path of a .toml file.{hint}"
        )
    if not file.is_file():
        hint = ""
        if not file.suffix:
            candidate = file.with_suffix(".toml")
            if candidate.is_file():
                hint = f" Did you mean {str(candidate)!r}?"
        raise StudyConfigError(f"The study file {str(file)!r} does not exist.{hint}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyConfigError(f"The study file {str(file)!r} cannot be read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyConfigError(f"The study file {str(file)!r} is not valid TOML: {exc}.") from exc
    return parse_study_config(
        data,
        source=str(file),
        base_dir=file.resolve().parent,
        default_name=file.stem,
        check_device=check_device,
    )


def parse_study_config(
    data: Mapping[str, Any],
    *,
    source: str = "<study>",
    base_dir: str | os.PathLike[str] | None = None,
    default_name: str | None = None,
    check_device: bool = True,
) -> StudyConfig:
    """Check the mapping of a study file and build a :class:`StudyConfig`.

    Parameters
    ----------
    data : mapping
        The parsed TOML document.
    source : str
        Name of the file, used in messages.
    base_dir : path, optional
        Directory relative paths are resolved against; the working directory
        by default.
    default_name : str, optional
        Group name when the file sets none (the file's stem).
    check_device : bool
        Check that ``[train] device`` names a device this machine has (this
        imports torch).

    Examples
    --------
    >>> config = parse_study_config(
    ...     {"name": "demo", "data": {"dataset": "iris"}, "budget": {"n_trials": 4}}
    ... )
    >>> config.dataset, config.budget.n_trials, config.samplers
    ('iris', 4, ('ga', 'tpe', 'random'))
    """
    base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    _check_keys(data, _TOP_KEYS, "", source)
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip() or "/" in name:
        _config_error(source, "", "name", "a non-empty str without '/'", name)
    description = data.get("description", "")
    if not isinstance(description, str):
        _config_error(source, "", "description", "a str", description)

    data_table = _table(data, "data", source, required=True)
    _check_keys(data_table, _DATA_KEYS, "data", source)
    from evohpo.training.datasets import DATASETS

    dataset = data_table.get("dataset")
    if dataset not in DATASETS:
        listed = ", ".join(repr(n) for n in sorted(DATASETS))
        _config_error(
            source,
            "data",
            "dataset",
            f"one of {{{listed}}}",
            dataset,
            hint=_did_you_mean(dataset, DATASETS),
        )
    test_fraction = data_table.get("test_fraction")
    if test_fraction is not None:
        test_fraction = _fraction(test_fraction, "test_fraction", "data", source)
    validation_fraction = _fraction(
        data_table.get("validation_fraction", 0.2), "validation_fraction", "data", source
    )
    split_seed = _int(data_table.get("split_seed", 0), "split_seed", "data", source, low=0)

    space_table = _table(data, "space", source)
    try:
        space = SearchSpace.from_dict(space_table)
    except InvalidParameterError as exc:
        raise StudyConfigError(f"{source}: [space]: {exc}") from exc

    train_table = dict(_table(data, "train", source))
    _check_keys(train_table, _TRAIN_KEYS, "train", source)
    _check_train(train_table, source, check_device=check_device)

    budget_table = _table(data, "budget", source, required=True)
    _check_keys(budget_table, _BUDGET_KEYS, "budget", source)
    n_trials = budget_table.get("n_trials")
    if n_trials is not None:
        n_trials = _int(n_trials, "n_trials", "budget", source, low=1)
    timeout = budget_table.get("timeout")
    if timeout is not None:
        timeout = _positive(timeout, "timeout", "budget", source)
    if n_trials is None and timeout is None:
        raise StudyConfigError(
            f"{source}: [budget] needs 'n_trials', 'timeout' or both; it sets neither."
        )

    compare_table = _table(data, "compare", source)
    _check_keys(compare_table, _COMPARE_KEYS, "compare", source)
    samplers = compare_table.get("samplers", list(SAMPLERS))
    if (
        not isinstance(samplers, list)
        or not samplers
        or any(s not in SAMPLERS for s in samplers)
        or len(set(samplers)) != len(samplers)
    ):
        _config_error(
            source,
            "compare",
            "samplers",
            f"a non-empty list of distinct {list(SAMPLERS)}",
            samplers,
        )
    seeds = compare_table.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds):
        _config_error(source, "compare", "seeds", "a non-empty list of distinct ints", seeds)
    seeds = [_int(s, "seeds", "compare", source, low=0) for s in seeds]
    target = compare_table.get("target")
    if target is not None:
        target = _fraction(target, "target", "compare", source, allow_one=True)

    pruner = dict(_table(data, "pruner", source))
    pruner.setdefault("name", "none")
    if pruner["name"] not in PRUNERS:
        listed = ", ".join(repr(n) for n in PRUNERS)
        _config_error(
            source,
            "pruner",
            "name",
            f"one of {{{listed}}}",
            pruner["name"],
            hint=_did_you_mean(pruner["name"], PRUNERS),
        )
    pruner_keys = _keyword_names(getattr(optuna.pruners, PRUNERS[pruner["name"]]))
    _check_keys(pruner, None if pruner_keys is None else ["name", *pruner_keys], "pruner", source)
    try:
        build_pruner(pruner)
    except (TypeError, ValueError) as exc:
        raise StudyConfigError(f"{source}: [pruner]: {exc}") from exc

    options_table = _table(data, "sampler", source)
    _check_keys(options_table, SAMPLERS, "sampler", source)
    sampler_options: dict[str, dict[str, Any]] = {}
    for sampler_name in SAMPLERS:
        options = dict(_table(options_table, sampler_name, source, prefix="sampler."))
        _check_sampler_keys(sampler_name, options, source)
        sampler_options[sampler_name] = options
        try:
            build_sampler(sampler_name, seed=0, options=options, space=space)
        except (TypeError, ValueError) as exc:
            raise StudyConfigError(f"{source}: [sampler.{sampler_name}]: {exc}") from exc

    storage = data.get("storage")
    if storage is not None:
        if not isinstance(storage, str) or not storage:
            _config_error(source, "", "storage", "a storage URL or path", storage)
        storage = resolve_storage_url(storage, base_dir=base)

    return StudyConfig(
        name=name.strip(),
        description=description,
        dataset=str(dataset),
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        split_seed=split_seed,
        space=space,
        train=train_table,
        budget=Budget(n_trials=n_trials, timeout=timeout),
        samplers=tuple(samplers),
        seeds=tuple(seeds),
        target=target,
        sampler_options=sampler_options,
        pruner=pruner,
        storage=storage,
        base_dir=base,
        source=source,
    )


def _config_error(
    source: str, table: str, key: str, expected: str, got: Any, *, hint: str = ""
) -> Any:
    where = f"[{table}] " if table else ""
    raise StudyConfigError(
        f"{source}: {where}{key!r} must be {expected}. Got {got!r} instead.{hint}"
    )


def _did_you_mean(word: Any, known: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(str(word), list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _keyword_names(cls: Any) -> list[str] | None:
    """Keyword parameters of ``cls``'s constructor; ``None`` if it takes ``**kwargs``."""
    parameters = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in keyword]


#: Sampler settings evohpo sets itself, so a study file may not.
_SAMPLER_OWN_KEYS: dict[str, str] = {
    "seed": "it comes from [compare] seeds or --seed",
    "search_space": "it is the study file's [space]",
}


def _check_sampler_keys(name: str, options: Mapping[str, Any], source: str) -> None:
    """Refuse unknown settings in ``[sampler.<name>]`` with a hint before building it."""
    table = f"sampler.{name}"
    for key, why in _SAMPLER_OWN_KEYS.items():
        if key in options:
            raise StudyConfigError(f"{source}: [{table}] cannot set {key!r}: {why}.")
    if name == "ga":
        from evohpo.evolution.sampler import EvoSampler

        sampler_class: Any = EvoSampler
    else:
        sampler_class = {
            "tpe": optuna.samplers.TPESampler,
            "random": optuna.samplers.RandomSampler,
        }[name]
    known = _keyword_names(sampler_class)
    if known is None:
        return
    known = [k for k in known if k not in _SAMPLER_OWN_KEYS]
    if not known and options:
        raise StudyConfigError(f"{source}: [{table}] takes no settings; it has {sorted(options)}.")
    _check_keys(options, known, table, source)


def _table(
    data: Mapping[str, Any], key: str, source: str, *, required: bool = False, prefix: str = ""
) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            raise StudyConfigError(f"{source}: the table [{prefix}{key}] is missing.")
        return {}
    if not isinstance(value, Mapping):
        raise StudyConfigError(
            f"{source}: {prefix}{key} must be a table ([{prefix}{key}]). Got {value!r} instead."
        )
    return value


def _check_keys(
    data: Mapping[str, Any], known: Sequence[str] | None, table: str, source: str
) -> None:
    if known is None:  # the class takes **kwargs: let it check them
        return
    for key in data:
        if key not in known:
            where = f"[{table}]" if table else "the top level"
            hint = _did_you_mean(key, known)
            raise StudyConfigError(
                f"{source}: unknown setting {key!r} in {where}; the settings are "
                f"{sorted(known)}.{hint}"
            )


def _int(value: Any, key: str, table: str, source: str, *, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        _config_error(
            source, table, key, "an int" + (f" >= {low}" if low is not None else ""), value
        )
    return int(value)


def _positive(value: Any, key: str, table: str, source: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        _config_error(source, table, key, "a number > 0", value)
    return float(value)


def _fraction(value: Any, key: str, table: str, source: str, *, allow_one: bool = False) -> float:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0 < value < 1 + (1e-12 if allow_one else 0)
        and (allow_one or value < 1)
    )
    if not ok:
        _config_error(
            source, table, key, "a number in (0, 1]" if allow_one else "a number in (0, 1)", value
        )
    return float(value)


def _check_train(train: Mapping[str, Any], source: str, *, check_device: bool = True) -> None:
    from evohpo.training.train import TrainConfig

    try:
        config = TrainConfig(**train)
    except InvalidParameterError as exc:
        raise StudyConfigError(f"{source}: [train]: {exc}") from exc
    if check_device:
        # Caught here, a device this machine lacks cannot reach the storage as a failed trial.
        from evohpo.training.nn import resolve_device  # imports torch: only when a file is loaded

        try:
            resolve_device(config.device)
        except InvalidParameterError as exc:
            # resolve_device's "The 'device' parameter of resolve_device must be ...",
            # reworded as every other study-file setting is.
            reason = re.sub(r"^The 'device' parameter of \w+ (must be )", r"\1", str(exc))
            raise StudyConfigError(
                f"{source}: [train] 'device' {reason} Use 'auto' (CUDA when available, else "
                "the CPU) or 'cpu': the device is not part of a study's identity, so a study "
                "resumes on any device."
            ) from exc


# -- identity, naming, creation ------------------------------------------------------------
def study_name(group: str, sampler: str, seed: int) -> str:
    """Name of the Optuna study of one sampler and seed: ``digits/ga/seed0``."""
    return f"{group}/{sampler}/seed{seed}"


def study_identity(config: StudyConfig, sampler: str, seed: int) -> dict[str, Any]:
    """The study user attribute :data:`STUDY_ATTR`: what makes results comparable.

    A stored study must match it on every key but ``evohpo_version`` to be
    resumed. The training settings that do not change what a trial learns
    (:data:`RUNTIME_TRAIN_KEYS`: the device, the evaluation batch size) are
    left out, so a study started on one machine resumes on another.
    """
    return {
        "format": _IDENTITY_FORMAT,
        "group": config.name,
        "dataset": config.dataset,
        "data": config.data_identity(),
        "space": config.space.to_dict(),
        "train": _train_identity(config.train),
        "sampler": sampler,
        "sampler_options": dict(sorted(config.sampler_options.get(sampler, {}).items())),
        "pruner": dict(sorted(config.pruner.items())),
        "seed": seed,
        "direction": DIRECTION,
        "evohpo_version": __version__,
    }


def _train_identity(train: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(train.items()) if k not in RUNTIME_TRAIN_KEYS}


def _normalise(value: Any) -> Any:
    # What comes back from storage went through JSON: compare in that form.
    return json.loads(json.dumps(value, sort_keys=True))


class _Unset:
    """A key that one side of an identity lacks."""

    def __repr__(self) -> str:
        return "(not set)"


_UNSET = _Unset()


def _differences(stored: Any, expected: Any, path: str) -> list[tuple[str, Any, Any]]:
    """``(dotted key, stored, expected)`` for every leaf where two JSON values differ."""
    if isinstance(stored, Mapping) and isinstance(expected, Mapping):
        found: list[tuple[str, Any, Any]] = []
        keys = [*expected, *(k for k in stored if k not in expected)]
        for key in keys:
            sub = f"{path}.{key}" if path else str(key)
            found.extend(_differences(stored.get(key, _UNSET), expected.get(key, _UNSET), sub))
        return found
    return [] if stored == expected else [(path, stored, expected)]


def _show(value: Any, limit: int = 200) -> str:
    if isinstance(value, _Unset):
        return repr(value)
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _comparable(identity: Mapping[str, Any]) -> dict[str, Any]:
    """``identity`` as compared: JSON-normalised, without version and runtime settings.

    Studies stored before the runtime settings left the identity still carry
    them; they are dropped here too, so such studies resume.
    """
    result = {k: v for k, v in _normalise(identity).items() if k != "evohpo_version"}
    if isinstance(result.get("train"), Mapping):
        result["train"] = _train_identity(result["train"])
    return result


def _check_identity(
    storage: BaseStorage, study_id: int, name: str, identity: Mapping[str, Any], where: str
) -> bool:
    """Raise if the stored study differs; return whether it carries an identity."""
    directions = storage.get_study_directions(study_id)
    if directions != [StudyDirection.MAXIMIZE]:
        shown = ", ".join(d.name.lower() for d in directions)
        raise StudyMismatchError(
            f"The study {name!r} in {where} has the direction(s) [{shown}], but evohpo "
            f"studies maximize validation accuracy. Nothing was changed; use another "
            "study name or storage."
        )
    stored = storage.get_study_user_attrs(study_id).get(STUDY_ATTR)
    if stored is None:
        if storage.get_all_trials(study_id, deepcopy=False):
            raise StudyMismatchError(
                f"The study {name!r} in {where} already holds trials that evohpo did not "
                "record (no 'evohpo.studies.study' attribute). Nothing was changed; use another "
                "study name or storage."
            )
        return False
    if not isinstance(stored, Mapping):
        raise StudyMismatchError(f"The study {name!r} in {where} has an unreadable identity.")
    expected, recorded = _comparable(identity), _comparable(stored)
    found = [
        difference
        for key in expected
        for difference in _differences(recorded.get(key, _UNSET), expected[key], key)
    ]
    if found:
        tops = list(dict.fromkeys(path.split(".", 1)[0] for path, _, _ in found))
        listed = found[:_MAX_DIFFERENCES]
        details = "; ".join(
            f"{path}: stored {_show(old)}, now {_show(new)}" for path, old, new in listed
        )
        if len(found) > len(listed):
            details += f"; and {len(found) - len(listed)} more"
        raise StudyMismatchError(
            f"The study {name!r} in {where} was created with different settings "
            f"({', '.join(tops)}), so its trials are not comparable: {details}. "
            "Nothing was changed; restore the settings, or change 'name' in the study "
            "file (or use another storage) to start new studies."
        )
    return True


def check_study(
    storage: BaseStorage,
    config: StudyConfig,
    sampler: str,
    seed: int,
    *,
    storage_url: str = "",
) -> None:
    """Raise :class:`StudyMismatchError` if the stored study differs; write nothing.

    A missing study passes: it would be created.
    """
    name = study_name(config.name, sampler, seed)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return
    where = describe_storage(storage_url) if storage_url else "the storage"
    _check_identity(storage, study_id, name, study_identity(config, sampler, seed), where)


def open_study(
    storage: BaseStorage,
    config: StudyConfig,
    sampler: str,
    seed: int,
    *,
    storage_url: str = "",
) -> optuna.Study:
    """Create the study of ``(sampler, seed)`` or load it after checking its identity.

    Raises
    ------
    StudyMismatchError
        If a study of that name exists with another direction, search space,
        data, training settings or sampler settings; nothing is written then.
    """
    name = study_name(config.name, sampler, seed)
    identity = study_identity(config, sampler, seed)
    where = describe_storage(storage_url) if storage_url else "the storage"
    try:
        study_id: int | None = storage.get_study_id_from_name(name)
    except KeyError:
        study_id = None
    n_existing = 0
    if study_id is not None:
        _check_identity(storage, study_id, name, identity, where)
        n_existing = len(storage.get_all_trials(study_id, deepcopy=False))
    built = build_sampler(
        sampler,
        seed=seed,
        options=config.sampler_options.get(sampler, {}),
        space=config.space,
        n_existing=n_existing,
    )
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        sampler=built,
        pruner=build_pruner(config.pruner),
        load_if_exists=True,
    )
    # Another worker may have created it in between: check again, then label it.
    if not _check_identity(storage, study._study_id, name, identity, where):
        study.set_user_attr(STUDY_ATTR, identity)
        for key in ("dataset", "sampler", "seed"):
            study.set_user_attr(key, identity[key])
    return study


def build_sampler(
    name: str,
    *,
    seed: int,
    options: Mapping[str, Any] | None = None,
    space: SearchSpace | None = None,
    n_existing: int = 0,
) -> BaseSampler:
    """The sampler called ``name`` (``"ga"``, ``"tpe"`` or ``"random"``).

    ``EvoSampler`` derives every random stream from ``(seed, trial number)``
    and so resumes without repeating itself. Optuna's TPE and random samplers
    keep one stream from their seed; they are seeded from ``(seed,
    n_existing)`` instead, where ``n_existing`` is the number of trials
    already stored, so a resumed study does not replay its first trials.
    """
    options = dict(options or {})
    if name == "ga":
        from evohpo.evolution.sampler import NOISY_TOURNAMENT_SIZE, EvoSampler

        options.setdefault("search_space", space)
        # Each trial trains with seeds of its own: noisy values by construction,
        # so "auto" would only spend a trial finding that out.
        options.setdefault("tournament_size", NOISY_TOURNAMENT_SIZE)
        return EvoSampler(seed=seed, **options)
    derived = derive_seed(seed, name, n_existing) % 2**32
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=derived, **options)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=derived, **options)
    listed = ", ".join(repr(s) for s in SAMPLERS)
    raise InvalidParameterError(f"Unknown sampler {name!r}; the samplers are {listed}.")


def build_pruner(settings: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """The Optuna pruner ``{"name": ..., **options}`` describes.

    Examples
    --------
    >>> type(build_pruner({"name": "median", "n_warmup_steps": 3})).__name__
    'MedianPruner'
    """
    options = dict(settings)
    name = options.pop("name", "none")
    if name not in PRUNERS:
        listed = ", ".join(repr(n) for n in PRUNERS)
        raise InvalidParameterError(f"Unknown pruner {name!r}; the pruners are {listed}.")
    pruner: optuna.pruners.BasePruner = getattr(optuna.pruners, PRUNERS[name])(**options)
    return pruner


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count towards the budget, by number."""
    trials = study.get_trials(deepcopy=False, states=FINISHED_STATES)
    return sorted(trials, key=lambda t: t.number)


def _trial_seconds(trial: FrozenTrial) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return max(0.0, (trial.datetime_complete - trial.datetime_start).total_seconds())


def group_study_names(storage: BaseStorage, group: str | None = None) -> list[str]:
    """Names of the evohpo studies in ``storage`` (of one group if given), sorted."""
    names: list[str] = []
    for frozen in storage.get_all_studies():
        identity = frozen.user_attrs.get(STUDY_ATTR)
        if not isinstance(identity, Mapping):
            continue
        if group is None or identity.get("group") == group:
            names.append(frozen.study_name)
    return sorted(names, key=study_sort_key)


def study_sort_key(name: str) -> tuple[str, int, str, int, str]:
    group, _, rest = name.partition("/")
    sampler, _, seed = rest.partition("/")
    order = SAMPLERS.index(sampler) if sampler in SAMPLERS else len(SAMPLERS)
    number = int(seed[4:]) if seed.startswith("seed") and seed[4:].isdigit() else -1
    return group, order, sampler, number, name


# -- data ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreparedData:
    """The splits every sampler and seed of a study file share.

    Features are raw: :class:`~evohpo.search.objective.GenomeObjective` standardises
    them with the statistics of its training rows.

    Attributes
    ----------
    X_train, y_train : ndarray
        Rows the networks are trained on.
    X_val, y_val : ndarray
        Rows that score the trials (the value Optuna maximises).
    X_test, y_test : ndarray
        Rows held out until the best trial of a study is refit and tested.
    class_names : list of str
    """

    X_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    X_val: np.ndarray = field(repr=False)
    y_val: np.ndarray = field(repr=False)
    X_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    class_names: list[str]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def prepare_data(config: StudyConfig, dataset: Dataset | None = None) -> PreparedData:
    """Load the data set and make the train, validation and test splits.

    The splits are stratified and seeded by ``split_seed`` only, so they are
    the same for every sampler and seed.

    Raises
    ------
    StudyConfigError
        If ``test_fraction`` or ``validation_fraction`` leaves a part with
        fewer rows than classes (or a class too small to split); the message
        names the setting and the fractions that would work.
    """
    from evohpo.training.datasets import load_dataset

    data = dataset
    if data is None:
        data = load_dataset(config.dataset, cache_dir=config.cache_dir)
    rows = np.arange(data.X.shape[0])
    if config.test_fraction is None and data.test_index is not None:
        test = np.asarray(data.test_index)
        rest = np.setdiff1d(rows, test)
    else:
        fraction = config.test_fraction if config.test_fraction is not None else 0.2
        rest, test = _split(
            rows,
            data.y,
            fraction,
            config,
            key="test_fraction",
            parts=("training and validation", "test"),
        )
    train, val = _split(
        rest,
        data.y[rest],
        config.validation_fraction,
        config,
        key="validation_fraction",
        parts=("training", "validation"),
    )
    train, val, test = np.sort(train), np.sort(val), np.sort(test)
    X = data.X
    return PreparedData(
        X_train=X[train],
        y_train=data.y[train],
        X_val=X[val],
        y_val=data.y[val],
        X_test=X[test],
        y_test=data.y[test],
        class_names=list(data.class_names),
    )


def _split(
    rows: np.ndarray,
    labels: np.ndarray,
    fraction: float,
    config: StudyConfig,
    *,
    key: str,
    parts: tuple[str, str],
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(rest, held out)`` split of ``rows``; a too small part is a config error."""
    from sklearn.model_selection import train_test_split

    try:
        kept, held = train_test_split(
            rows, test_size=fraction, stratify=labels, random_state=config.split_seed
        )
    except ValueError as exc:
        n_rows, n_classes = len(rows), len(np.unique(labels))
        n_held = math.ceil(fraction * n_rows)
        counts = {parts[0]: n_rows - n_held, parts[1]: n_held}
        small = [
            f"{n} {part} row{'' if n == 1 else 's'}" for part, n in counts.items() if n < n_classes
        ]
        if small:
            low, high = n_classes / n_rows, (n_rows - n_classes) / n_rows
            problem = (
                f"it leaves {' and '.join(small)} of {n_rows}, fewer than the {n_classes} "
                "classes (a stratified split needs a row of every class in each part); "
            )
            problem += (
                f"use a value in [{low:.3g}, {high:.3g}]"
                if low <= high
                else "the data set is too small for this split"
            )
        else:
            problem = f"the stratified split fails: {str(exc).strip().rstrip('.')}"
        default = (
            " (the default)" if key == "test_fraction" and config.test_fraction is None else ""
        )
        raise StudyConfigError(
            f"{config.source}: [data] {key!r} = {fraction:g}{default} does not work on "
            f"{config.dataset!r}: {problem}."
        ) from exc
    return np.asarray(kept), np.asarray(held)


# -- running one study ---------------------------------------------------------------------
@dataclass(frozen=True)
class StudyRun:
    """What :func:`run_study` did.

    Attributes
    ----------
    study : optuna.Study
    n_before, n_after : int
        Finished trials before and after this run.
    target : int or None
        The total the run aimed at.
    """

    study: optuna.Study
    n_before: int
    n_after: int
    target: int | None


TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


def remaining_budget(study: optuna.Study, budget: Budget) -> tuple[int | None, float | None]:
    """Trials and seconds left of ``budget``, counting what ``study`` already did."""
    done = finished_trials(study)
    n_left = None if budget.n_trials is None else max(0, budget.n_trials - len(done))
    time_left = None
    if budget.timeout is not None:
        spent = sum(_trial_seconds(t) for t in study.get_trials(deepcopy=False))
        time_left = max(0.0, budget.timeout - spent)
    return n_left, time_left


def run_study(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    budget: Budget,
    *,
    guard: GracefulStop | None = None,
    callbacks: Sequence[TrialCallback] = (),
) -> StudyRun:
    """Run ``study`` until it holds ``budget`` in total (trials and/or seconds).

    After a signal to ``guard`` (see :mod:`evohpo._interrupt`) the study stops:
    a trial that was training stops at its next optimizer step and is
    recorded as failed (it does not count), one that was not finishes; then
    :class:`KeyboardInterrupt` propagates.
    """
    n_before = len(finished_trials(study))
    n_left, time_left = remaining_budget(study, budget)
    if n_left == 0 or (time_left is not None and time_left <= 0):
        return StudyRun(study, n_before, n_before, budget.n_trials)
    guard = guard if guard is not None else GracefulStop()

    def guarded(trial: optuna.Trial) -> float:
        # A stop that came while the trial was being created: do not train it.
        guard.check()
        return objective(trial)

    total = budget.n_trials

    def enough(done_study: optuna.Study, trial: FrozenTrial) -> None:
        # Other workers may share the study: stop at the total, not "n more".
        if total is not None and len(finished_trials(done_study)) >= total:
            done_study.stop()

    _logger.info(
        "Running %s: %s trials and %s s left.",
        study.study_name,
        "no limit on" if n_left is None else n_left,
        "no limit on" if time_left is None else round(time_left),
    )
    study.optimize(
        guarded,
        n_trials=n_left,
        timeout=time_left,
        callbacks=[*callbacks, enough, guard.stop_study],
        gc_after_trial=False,
        show_progress_bar=False,
    )
    guard.check()
    return StudyRun(study, n_before, len(finished_trials(study)), total)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "study"


# -- the objective ---------------------------------------------------------------------------
def make_objective(config: StudyConfig, data: PreparedData, seed: int) -> GenomeObjective:
    """The :class:`evohpo.search.objective.GenomeObjective` of this study file and seed.

    Every sampler gets the same rows: the objective trains on the training
    split (standardised with its own statistics) and scores each trial on the
    validation split. Trial ``n`` trains with a seed derived from ``(seed, n)``.
    """
    from evohpo.search.objective import GenomeObjective
    from evohpo.training.train import TrainConfig

    return GenomeObjective(
        data.X_train,
        data.y_train,
        space=config.space,
        train_config=TrainConfig(**config.train),
        validation_data=(data.X_val, data.y_val),
        seed=seed,
    )
