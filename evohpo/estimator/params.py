"""The estimator's parameters and training data, checked before a search starts."""

from __future__ import annotations

import copy
import math
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from optuna.pruners import BasePruner, NopPruner
from optuna.samplers import BaseSampler

from evohpo._validation import check_float, check_input_shape, check_int, raise_invalid
from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import InvalidParameterError, SearchSpaceError, StorageError
from evohpo.search.batch_size import check_batch_trials
from evohpo.search.inheritance import is_weight_store
from evohpo.search.samplers import SAMPLERS
from evohpo.search.scoring import Scorer, resolve_scoring
from evohpo.storage.urls import JOURNAL_SUFFIXES, SQLITE_SUFFIXES, resolve_storage_url
from evohpo.training.nn import resolve_device
from evohpo.training.task import TaskName

__all__ = [
    "DEFAULT_SEARCH_SPACE",
    "OWNER",
    "Settings",
    "check_input_width",
    "check_n_classes",
    "check_settings",
    "encode_labels",
]

#: The name error messages give the estimator.
OWNER = "EvoSearchClassifier"

#: The search space used when ``search_space`` is ``None``: dense networks of one
#: to three layers, the adaptive optimizers, and the learning rates they train
#: well with. Chosen so that 20 trials reach a good model on small tabular data.
DEFAULT_SEARCH_SPACE = SearchSpace(
    min_layers=1,
    max_layers=3,
    units=(32, 512),
    dropout=(0.0, 0.5),
    optimizers=("adam", "adamw"),
    learning_rate=(1e-4, 1e-2),
    weight_decay=(1e-6, 1e-2),
    batch_sizes=(32, 64, 128),
)


@dataclass(frozen=True)
class Settings:
    """The estimator's parameters, checked; see :class:`EvoSearchClassifier`.

    ``space``, ``pruner``, ``n_jobs``, ``device`` and ``verbose`` are resolved
    (defaults filled in, a private copy of the pruner); ``sampler`` and
    ``random_state`` are kept as given, ``scoring`` too unless ``None`` (then
    the task's default: ``"accuracy"``, or ``"r2"`` for regression). ``owner``
    is the estimator's class name, for messages. ``input_shape`` is the shape rows
    are folded to, the estimator's or else the search space's (``None``: dense
    networks); ``space`` then has it as its own.
    """

    n_trials: int | None
    timeout: float | None
    sampler: str | BaseSampler
    space: SearchSpace
    max_epochs: int
    patience: int | None
    validation_fraction: float
    cv: int | None
    scoring: str | Scorer
    storage: str | None
    study_name: str | None
    resume: bool
    pruner: BasePruner
    n_jobs: int
    batch_trials: int | None  # None: "auto", resolved once the sampler is known
    inherit_weights: bool
    weights_dir: Any
    random_state: int | np.random.RandomState | None
    verbose: int
    refit: bool
    ensemble_size: int
    device: torch.device
    input_shape: tuple[int, ...] | None = None
    owner: str = OWNER
    task: TaskName = "classification"

    def describe_validation(self) -> str:
        """How trials are scored, as the study's record states it."""
        if self.cv is not None:
            return f"cv={self.cv}"
        return f"holdout validation_fraction={self.validation_fraction:g}"


def check_settings(
    params: Mapping[str, Any], owner: str = OWNER, task: TaskName = "classification"
) -> Settings:
    """Check the estimator's parameters (``get_params()``) in their documented order.

    ``owner`` is the estimator's name in messages; ``task`` decides the default
    scoring and which scorers fit (:func:`~evohpo.search.scoring.resolve_scoring`).

    Raises
    ------
    InvalidParameterError
        Naming the first parameter that is wrong, what it accepts and what it got.
    """
    # NumPy's booleans (a grid built from an array) are bools here; stored as bool.
    p: dict[str, Any] = {k: bool(v) if isinstance(v, np.bool_) else v for k, v in params.items()}
    n_trials, timeout = _check_budget(p["n_trials"], p["timeout"], owner)
    sampler = p["sampler"]
    if not isinstance(sampler, BaseSampler) and not (
        isinstance(sampler, str) and sampler in SAMPLERS
    ):
        raise_invalid(
            "sampler", owner, "one of {'ga', 'tpe', 'random'} or an Optuna sampler", sampler
        )
    input_shape = None
    if p["input_shape"] is not None:
        input_shape = check_input_shape(p["input_shape"], "input_shape", owner)
    space = _check_space(p["search_space"], input_shape, owner)
    check_int(p["max_epochs"], "max_epochs", owner, low=1)
    if p["patience"] is not None:
        _check_int_or_none(p["patience"], "patience", owner, low=1)
    check_float(
        p["validation_fraction"],
        "validation_fraction",
        owner,
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )
    if p["cv"] is not None:
        _check_int_or_none(p["cv"], "cv", owner, low=2)
    scoring = p["scoring"]
    if scoring is None:
        scoring = "r2" if task == "regression" else "accuracy"
    resolve_scoring(scoring, owner, regression=task == "regression")
    pruner = _check_study_params(p, owner)
    n_jobs = _check_n_jobs(p["n_jobs"], owner)
    checked = check_batch_trials(p["batch_trials"], "batch_trials", owner)
    batch_trials = None if checked == "auto" else checked
    if not isinstance(p["inherit_weights"], bool):
        raise_invalid("inherit_weights", owner, "True or False", p["inherit_weights"])
    if p["weights_dir"] is not None and not is_weight_store(p["weights_dir"]):
        expected = "None, a folder path or an optuna artifact store"
        raise_invalid("weights_dir", owner, expected, p["weights_dir"])
    _check_random_state(p["random_state"], owner)
    verbose = p["verbose"]
    if not isinstance(verbose, bool):
        verbose = check_int(verbose, "verbose", owner, low=0)
    if not isinstance(p["refit"], bool):
        raise_invalid("refit", owner, "a bool", p["refit"])
    check_int(p["ensemble_size"], "ensemble_size", owner, low=1)
    device = _check_device(p["device"], owner)
    if n_jobs > 1:
        _check_picklable(scoring, p["sampler"], p["pruner"], owner=owner)
    return Settings(
        n_trials=n_trials,
        timeout=timeout,
        sampler=sampler,
        space=space,
        max_epochs=int(p["max_epochs"]),
        patience=None if p["patience"] is None else int(p["patience"]),
        validation_fraction=float(p["validation_fraction"]),
        cv=None if p["cv"] is None else int(p["cv"]),
        scoring=scoring,
        storage=None if p["storage"] is None else _resolve_storage(p["storage"], owner),
        study_name=p["study_name"],
        resume=p["resume"],
        pruner=pruner,
        n_jobs=n_jobs,
        batch_trials=batch_trials,
        inherit_weights=p["inherit_weights"],
        weights_dir=p["weights_dir"],
        random_state=p["random_state"],
        verbose=int(verbose),
        refit=p["refit"],
        ensemble_size=int(p["ensemble_size"]),
        device=device,
        input_shape=space.input_shape,
        owner=owner,
        task=task,
    )


def encode_labels(
    y: npt.NDArray[Any], owner: str = OWNER
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """Sorted class labels and every row's index among them; at least two classes.

    Raises
    ------
    ValueError
        If the labels do not sort (mixed types) or there is a single class.
    """
    try:
        classes, encoded = np.unique(y, return_inverse=True)
    except TypeError as exc:  # labels of types that do not compare, e.g. None among str
        kinds = sorted({type(label).__name__ for label in y.tolist()})
        raise ValueError(
            f"{owner} needs class labels of one comparable type; y mixes {kinds}."
        ) from exc
    return classes, encoded.reshape(-1).astype(np.int64)


def check_n_classes(
    classes: npt.NDArray[Any], n_samples: int, cv: int | None, owner: str = OWNER
) -> None:
    """Raise unless there are two classes or more, and ``cv`` folds fit the rows."""
    if len(classes) < 2:
        raise ValueError(
            f"{owner} needs samples of at least 2 classes; the data hold 1 class: "
            f"{classes[:1].tolist()[0]!r}."  # a Python value: np.float64(0.0) reads as 0.0
        )
    if cv is not None and cv > n_samples:
        raise_invalid("cv", owner, f"an int <= the number of samples ({n_samples})", cv)


def _check_budget(n_trials: Any, timeout: Any, owner: str) -> tuple[int | None, float | None]:
    checked_trials = None if n_trials is None else check_int(n_trials, "n_trials", owner, low=1)
    checked_timeout = None
    if timeout is not None:
        try:
            checked_timeout = check_float(timeout, "timeout", owner, low=0.0, low_open=True)
        except InvalidParameterError:
            raise_invalid("timeout", owner, "a finite float > 0, or None for no limit", timeout)
    if checked_trials is None and checked_timeout is None:
        raise_invalid("n_trials", owner, "an int >= 1, or None together with a timeout", n_trials)
    return checked_trials, checked_timeout


def _check_int_or_none(value: Any, name: str, owner: str, *, low: int) -> int:
    try:
        return check_int(value, name, owner, low=low)
    except InvalidParameterError:
        raise_invalid(name, owner, f"an int >= {low} or None", value)


def check_input_width(
    input_shape: tuple[int, ...] | None, n_features: int, owner: str = OWNER
) -> None:
    """Raise unless ``input_shape`` (when set) folds a row of ``n_features`` values."""
    if input_shape is not None and math.prod(input_shape) != n_features:
        raise InvalidParameterError(
            f"The 'input_shape' parameter of {owner} must fold every row of X: its product "
            f"must equal the number of features, {n_features}. Got {input_shape} instead, "
            f"whose product is {math.prod(input_shape)}."
        )


def _check_space(value: Any, input_shape: tuple[int, ...] | None, owner: str) -> SearchSpace:
    """The search space, with ``input_shape`` set on it when given."""
    if value is None:
        space = DEFAULT_SEARCH_SPACE
    elif isinstance(value, SearchSpace):
        space = value
    elif isinstance(value, Mapping):
        space = SearchSpace.from_dict(value)
    else:
        raise_invalid(
            "search_space",
            owner,
            "a SearchSpace, a dict of SearchSpace settings, or None",
            value,
            SearchSpaceError,
        )
    if input_shape is None or space.input_shape == input_shape:
        return space
    if space.input_shape is not None:
        raise SearchSpaceError(
            f"The 'input_shape' parameter of {owner} is {input_shape}, but its search_space "
            f"has input_shape {space.input_shape}. Give the shape once (either), or the same."
        )
    return replace(space, input_shape=input_shape)


def _check_study_params(p: Mapping[str, Any], owner: str) -> BasePruner:
    """Check ``storage``, ``study_name``, ``resume`` and ``pruner``; a copy of the pruner."""
    if p["storage"] is not None and not isinstance(p["storage"], str):
        raise_invalid("storage", owner, "an Optuna storage URL (str) or None", p["storage"])
    if p["study_name"] is not None and not isinstance(p["study_name"], str):
        raise_invalid("study_name", owner, "a str or None", p["study_name"])
    if not isinstance(p["resume"], bool):
        raise_invalid("resume", owner, "a bool", p["resume"])
    pruner = p["pruner"]
    if pruner is not None and not isinstance(pruner, BasePruner):
        raise_invalid("pruner", owner, "an Optuna pruner (BasePruner) or None", pruner)
    return NopPruner() if pruner is None else copy.deepcopy(pruner)


def _resolve_storage(storage: str, owner: str) -> str:
    """``storage`` as a URL: a bare path ending in ``.db`` or ``.log`` (as the commands
    take) becomes a SQLite or journal URL, relative paths from the working directory."""
    try:
        return resolve_storage_url(storage)
    except StorageError:
        expected = (
            "a storage URL (sqlite:///file.db, postgresql://..., journal:///file.log, "
            f"grpc://host:port) or a path ending in {', '.join(SQLITE_SUFFIXES + JOURNAL_SUFFIXES)}"
        )
        raise_invalid("storage", owner, expected, storage)


def _check_n_jobs(n_jobs: Any, owner: str) -> int:
    if n_jobs is None:
        return 1
    if n_jobs == -1 and not isinstance(n_jobs, bool):
        return os.cpu_count() or 1
    try:
        return check_int(n_jobs, "n_jobs", owner, low=1)
    except InvalidParameterError:
        raise_invalid("n_jobs", owner, "an int >= 1, -1 or None", n_jobs)


def _check_random_state(rs: Any, owner: str) -> None:
    if not (
        rs is None
        or isinstance(rs, np.random.RandomState)
        or (isinstance(rs, (int, np.integer)) and not isinstance(rs, bool) and rs >= 0)
    ):
        raise_invalid("random_state", owner, "an int >= 0, a RandomState or None", rs)


def _check_device(device: Any, owner: str) -> torch.device:
    try:
        return resolve_device(device)
    except InvalidParameterError as exc:
        raise InvalidParameterError(str(exc).replace("of resolve_device", f"of {owner}")) from None


def _check_picklable(*settings: Any, owner: str) -> None:
    """Worker processes rebuild the objective, sampler and pruner from a pickle."""
    try:
        pickle.dumps(settings)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise InvalidParameterError(
            f"With n_jobs > 1, {owner} trains in worker processes, which need the "
            f"scoring, sampler and pruner to be picklable (module-level functions and "
            f"classes, not lambdas or local functions): {exc}"
        ) from exc
