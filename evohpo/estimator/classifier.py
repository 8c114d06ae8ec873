"""EvoSearchClassifier: the whole architecture search behind scikit-learn's API."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import math
import os
import pickle
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import optuna
import sqlalchemy.exc
import torch
from optuna.pruners import BasePruner, NopPruner
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.storages import BaseStorage
from optuna.study import MaxTrialsCallback, StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from evohpo._progress import SearchProgress, quiet_optuna
from evohpo._random import derive_seed, fresh_root_seed
from evohpo._redact import redact_text, redact_url
from evohpo._validation import check_float, check_int, raise_invalid
from evohpo.evolution.genome import Genome
from evohpo.evolution.sampler import NOISY_TOURNAMENT_SIZE, EvoSampler
from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import (
    EvohpoError,
    InvalidParameterError,
    SearchSpaceError,
    StorageError,
    StudyMismatchError,
)
from evohpo.search.objective import GenomeObjective, Scorer, Standardizer, resolve_scoring
from evohpo.storage.drivers import missing_driver
from evohpo.training.nn import build_model, resolve_device
from evohpo.training.train import TrainConfig, predict_logits, predict_proba

__all__ = ["DEFAULT_SEARCH_SPACE", "EvoSearchClassifier"]

logger = logging.getLogger("evohpo")

_OWNER = "EvoSearchClassifier"

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

#: Study user attribute recording what a stored search optimised.
SEARCH_ATTR = "evohpo.search"

_SAMPLER_NAMES = ("ga", "tpe", "random")
#: EvoSampler's population when only a timeout bounds the search.
_TIME_BUDGET_POPULATION = 10
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: What a refit sets, removed by a fit with ``refit=False``.
_REFIT_ATTRS = ("best_model_", "ensemble_models_", "_scaler", "refit_time_")


@dataclass(frozen=True)
class _Settings:
    """The estimator's parameters, validated."""

    n_trials: int | None
    timeout: float | None
    space: SearchSpace
    scorer: Scorer | None
    pruner: BasePruner
    n_jobs: int
    device: torch.device
    verbose: int


class EvoSearchClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Neural-architecture and hyperparameter search for a dense network classifier.

    ``fit`` runs an Optuna study whose trials each train one network (a
    :class:`~evohpo.Genome`: layers, units, activations, dropout, optimizer,
    learning rate, weight decay, batch size) on a training split and score it
    on a validation split; it then retrains the best genomes on all the data
    and predicts with the average of their class probabilities. The search is
    a genetic algorithm (:class:`~evohpo.EvoSampler`) by default, Optuna's TPE
    or random search on request.

    Parameters
    ----------
    n_trials : int or None, default=20
        Total number of finished (complete or pruned) trials the study should
        hold. A resumed study only runs the trials still missing. ``None``
        (only with ``timeout``): no trial limit, the timeout ends the search.
    timeout : float, optional
        Stop starting new trials after this many seconds. The refit is extra:
        ``ensemble_size`` trainings on all the rows, once the search is over.
    sampler : {"ga", "tpe", "random"} or optuna.samplers.BaseSampler, default="ga"
        ``"ga"``: :class:`~evohpo.EvoSampler` with a population of
        ``min(20, max(4, n_trials // 3))`` genomes (random genomes first, then
        bred ones), or of 10 with ``n_trials=None``: a time budget buys an
        unknown number of trials, and a small population starts breeding early.
        ``"tpe"``: :class:`optuna.samplers.TPESampler`. ``"random"``:
        :class:`optuna.samplers.RandomSampler`. A sampler instance is deep-copied
        at every ``fit`` and used with its own seed.
    search_space : SearchSpace or dict, optional
        Ranges and choices of the genes; a dict holds :class:`~evohpo.SearchSpace`
        settings (``{"max_layers": 2, "units": (16, 128)}``). ``None`` means
        :data:`DEFAULT_SEARCH_SPACE`.
    max_epochs : int, default=100
        Epoch limit of every training.
    patience : int or None, default=20
        Early stopping: a training stops after this many epochs without a better
        validation accuracy. ``None`` trains every network ``max_epochs`` epochs.
    validation_fraction : float, default=0.2
        Share of every class held out (stratified) to score the trials.
    cv : int, optional
        Score every trial by stratified ``cv``-fold cross-validation instead
        (``cv`` trainings per trial).
    scoring : str or callable, default="accuracy"
        The trials' value: any name of :func:`sklearn.metrics.get_scorer_names`
        (``"accuracy"``, ``"balanced_accuracy"``, ``"f1_macro"``,
        ``"neg_log_loss"``, ...) or a scorer ``scorer(estimator, X, y)``. Scorers
        see labels encoded as ``0 .. n_classes - 1``. Early stopping and pruning
        use validation accuracy whatever the scoring.
    storage : str, optional
        ``None`` keeps the study in memory; an Optuna storage URL
        (``"sqlite:///search.db"``, ``"postgresql://..."``) persists it.
    study_name : str, optional
        Name of the study. With ``storage`` it is how a search is found again to
        resume it; ``None`` makes a new, uniquely named study every ``fit``. Leave
        it ``None`` under ``GridSearchCV`` or ``cross_val_score``: their fits see
        other rows, and resuming a study on other data is refused.
    resume : bool, default=True
        When ``storage`` already holds a study named ``study_name``: continue it
        up to ``n_trials`` finished trials (``True``), or raise
        :class:`optuna.exceptions.DuplicatedStudyError` (``False``). A study made
        for another search (other scoring, search space, classes, features,
        validation, epochs, patience, seed, or other rows of ``X`` and ``y``)
        raises :class:`~evohpo.exceptions.StudyMismatchError` and is left as it
        was. With ``random_state=None`` a resumed study keeps the seed it was
        made with, hence its validation split. With ``"ga"`` and a
        fixed ``random_state``, a search resumed after ``k`` trials makes the same
        trials as one run straight through; TPE and random sampling continue
        with a fresh random stream (seeded from ``random_state`` and ``k``) so
        they do not repeat the first run's trials.
    pruner : optuna.pruners.BasePruner, optional
        Stops unpromising trainings early, from the validation accuracy reported
        after every epoch (every fold with ``cv``). ``None``: no pruning.
    n_jobs : int or None, default=1
        Trials trained at once, each in a worker process of its own (one torch
        thread each); ``-1`` for one per CPU, ``None`` for 1. Workers share the
        study through its storage, a temporary journal file when ``storage`` is
        ``None`` (see :mod:`evohpo.workers.worker`), and the GA breeds from whatever has
        finished. Starting a worker costs a few seconds, worth it when trials
        take longer than that. With more than one, the order of the trials, hence
        the result, is not reproducible, and trials still running when the total
        is reached finish: the study may hold up to ``n_jobs - 1`` more than
        ``n_trials``. Objects the workers rebuild (``scoring``, ``sampler``,
        ``pruner``) must be picklable.
    random_state : int, RandomState instance or None, default=None
        Root of every random choice (splits, samplers, weight initialisation,
        batch order, dropout). An int makes ``fit`` reproducible on the CPU.
    verbose : int, default=0
        ``0``: silent. ``1``: a progress bar on the search and INFO log lines at
        its start and end (logger ``"evohpo"``). ``2``: also one line per trial.
        The bar is never drawn when the environment variable
        ``EVOHPO_NO_PROGRESS`` is set (not to ``0``).
    refit : bool, default=True
        Retrain the best genomes on all the data; ``predict`` and friends need it.
    ensemble_size : int, default=5
        How many of the best trials the refit retrains: the complete trials in
        order of score (ties broken as for ``best_params_``), a trial whose
        parameters equal a better one's skipped. ``predict_proba`` averages their
        class probabilities. On small data the validation score of the best
        trial is a noisy estimate, and one network's test accuracy varies with
        its seed; the average of a few of the best networks is steadier and
        usually more accurate than the best one alone, most where single
        networks vary most (``bench/ensemble.py``). ``1``: the best trial's
        genome alone. The refit costs one training on all the data per member.
    device : str, default="auto"
        Torch device of the trainings: ``"auto"`` (CUDA when available, else the
        CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... Small networks on a few
        thousand rows train faster on the CPU: a default search on digits took
        27 s on two CPU cores and 40 s on an H100 (mnist1d: 117 s and 214 s).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when ``X`` was a DataFrame with string column names.
    best_params_ : dict
        Optuna parameters of the best trial (``n_layers``, ``layer0.units``, ...):
        the complete trial with the highest score, a lower validation loss
        breaking ties (then the earlier trial). Small validation sets make ties
        of accuracy common; the tie-break prefers the more confident network.
    best_score_ : float
        Validation score of the best trial.
    best_genome_ : Genome
        The best trial's genome.
    best_index_ : int
        Index of the best trial in ``cv_results_``.
    best_model_ : torch.nn.Sequential
        The best genome trained on all the data (only with ``refit=True``), the
        first of ``ensemble_models_``. It takes standardised features; use
        ``predict_proba`` rather than calling it.
    ensemble_models_ : list of torch.nn.Sequential
        The refitted members, best first (only with ``refit=True``); at most
        ``ensemble_size``, fewer when the study holds fewer distinct complete
        trials.
    ensemble_genomes_ : list of Genome
        Their genomes, in the same order.
    ensemble_trials_ : list of int
        Their trial numbers, in the same order.
    refit_epochs_ : list of int
        Epochs of every member's refit: its trial's best epoch (median over
        folds), scaled by the ratio of all rows to the rows a trial trained on,
        rounded (about ``x 1.25`` with ``validation_fraction=0.2``). A trial
        stopped at its best epoch by early stopping; a refit on more data, with
        no validation rows left to stop it, trains proportionally longer.
    refit_time_ : float
        Seconds the whole refit took.
    study_ : optuna.Study
        The study: every trial with its parameters, genome, lineage, scores and
        intermediate values. After unpickling it is rebuilt on first access:
        from its storage URL, or (in-memory studies) from a copy of its trials,
        with a plain random sampler.
    cv_results_ : dict of lists
        One entry per finished or failed trial of the study, by trial number;
        ``pandas.DataFrame(clf.cv_results_)`` loads it. Keys: ``number``,
        ``state``, ``params``, ``param_<name>`` (``None`` where a trial lacks the
        parameter), ``mean_test_score``, ``std_test_score``, ``rank_test_score``,
        with ``cv`` also ``split<k>_test_score``, and ``mean_fit_time``,
        ``n_parameters``, ``best_epoch``, ``epochs_run``, ``stop_reason``,
        ``val_accuracy``, ``val_loss``, ``genome``.
    n_trials_ : int
        Finished (complete or pruned) trials in the study after ``fit``.

    Notes
    -----
    Inputs are standardised inside the estimator, with statistics of the
    training rows of each split, and of all the rows for the refit.

    On the CPU every training runs with one torch thread (the previous setting
    is restored after ``fit``): the networks are small, so one thread per
    training is as fast, and parallel trials (``n_jobs``) do not fight over cores.

    While ``fit`` runs, Optuna's own per-trial log lines are silenced (its
    log level is process-wide and restored afterwards).

    Pickling keeps the fitted model (as a CPU ``state_dict``, rebuilt on the CPU)
    and a reference to the study, not the study object itself.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from evohpo import EvoSearchClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = EvoSearchClassifier(n_trials=2, max_epochs=5, random_state=0, device="cpu")
    >>> clf.fit(X, y).predict(X[:3]).shape
    (3,)
    """

    def __init__(
        self,
        *,
        n_trials: int | None = 20,
        timeout: float | None = None,
        sampler: str | BaseSampler = "ga",
        search_space: SearchSpace | Mapping[str, Any] | None = None,
        max_epochs: int = 100,
        patience: int | None = 20,
        validation_fraction: float = 0.2,
        cv: int | None = None,
        scoring: str | Scorer = "accuracy",
        storage: str | None = None,
        study_name: str | None = None,
        resume: bool = True,
        pruner: BasePruner | None = None,
        n_jobs: int | None = 1,
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        refit: bool = True,
        ensemble_size: int = 5,
        device: str = "auto",
    ) -> None:
        self.n_trials = n_trials
        self.timeout = timeout
        self.sampler = sampler
        self.search_space = search_space
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.cv = cv
        self.scoring = scoring
        self.storage = storage
        self.study_name = study_name
        self.resume = resume
        self.pruner = pruner
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        self.refit = refit
        self.ensemble_size = ensemble_size
        self.device = device

    # -- scikit-learn plumbing -------------------------------------------------------------
    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # Parallel trials finish in a varying order, which changes what the samplers see.
        tags.non_deterministic = self.n_jobs not in (1, None)
        return tags

    def _check_refit(self) -> bool:
        if not self.refit:
            raise AttributeError(
                f"This {_OWNER} was initialized with refit=False: predictions need the "
                "best genome refitted on all the data. Set refit=True, or train "
                "best_genome_ yourself."
            )
        return True

    # -- fit -------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> EvoSearchClassifier:
        """Search genomes on ``(X, y)``, then refit the best ones on all the data.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Finite numeric features.
        y : array-like of shape (n_samples,)
            Class labels of any type (strings, ints, bools), at least two classes.

        Returns
        -------
        self : EvoSearchClassifier
            The fitted estimator.
        """
        settings = self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        classes, y_encoded = _encode_labels(y)  # first: it names labels that do not sort
        check_classification_targets(y)
        if len(classes) < 2:
            raise ValueError(
                f"{_OWNER} needs samples of at least 2 classes; the data hold 1 class: "
                f"{classes[0]!r}."
            )
        if self.cv is not None and self.cv > len(y_encoded):
            raise_invalid(
                "cv", _OWNER, f"an int <= the number of samples ({len(y_encoded)})", self.cv
            )
        y_encoded = y_encoded.astype(np.int64)
        with (
            quiet_optuna(),
            _one_torch_thread(settings.device),
            _verbose_logging(settings.verbose),
            self._search_storage(settings) as storage,
        ):
            existing = self._load_existing_study(storage, settings.pruner)
            stored = existing.user_attrs.get(SEARCH_ATTR) if existing is not None else None
            root = self._root_seed(stored if isinstance(stored, Mapping) else None)
            objective_factory = functools.partial(
                GenomeObjective,
                X,
                y_encoded,
                space=settings.space,
                train_config=TrainConfig(
                    max_epochs=self.max_epochs, patience=self.patience, device=settings.device
                ),
                validation_fraction=self.validation_fraction,
                cv=self.cv,
                seed=derive_seed(root, "objective"),
                scoring=self.scoring,
                n_classes=len(classes),
            )
            objective = objective_factory()
            record = self._search_record(settings, classes, X, y_encoded, root)
            if existing is not None:
                _check_resumable(existing, record)
                study = existing
            else:
                study = self._create_study(storage, settings.pruner, record)
            # Known only now: how many trials a resumed study already holds.
            study.sampler = self._make_sampler(
                settings, root, len(study.get_trials(deepcopy=False))
            )
            self._optimize(study, storage, objective, objective_factory, settings)
            if storage.temporary:
                study = _in_memory_copy(study)
            trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            if not complete:
                states = Counter(t.state.name for t in trials)
                ran = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
                raise EvohpoError(
                    f"No trial of the study {study.study_name!r} completed ({ran or 'none ran'}"
                    f", timeout={self.timeout}); nothing to refit. Give the search more trials "
                    "or time, or a less aggressive pruner."
                )
            best = max(complete, key=_rank_key)
            self.classes_ = classes
            self._study: optuna.Study | None = study
            self._study_ref: dict[str, Any] | None = None
            self.cv_results_ = _cv_results(trials, self.cv)
            self.best_index_ = trials.index(best)
            self.best_params_ = dict(best.params)
            self.best_score_ = _value(best)
            self.best_genome_ = Genome.from_json(best.user_attrs["genome"])
            self.n_trials_ = sum(t.state in _FINISHED for t in trials)
            members = _ensemble_members(complete, self.ensemble_size)
            self.ensemble_trials_ = [t.number for t in members]
            self.ensemble_genomes_ = [Genome.from_json(t.user_attrs["genome"]) for t in members]
            self.refit_epochs_ = [_refit_epochs(t, objective) for t in members]
            if self.refit:
                started = time.perf_counter()
                self.ensemble_models_ = [
                    objective.fit_genome(genome, seed=_refit_seed(root, rank), epochs=epochs).model
                    for rank, (genome, epochs) in enumerate(
                        zip(self.ensemble_genomes_, self.refit_epochs_, strict=True)
                    )
                ]
                self.best_model_ = self.ensemble_models_[0]
                self._scaler = objective.standardizer()
                self.refit_time_ = time.perf_counter() - started
            else:  # no stale model of an earlier fit
                for name in _REFIT_ATTRS:
                    self.__dict__.pop(name, None)
            if settings.verbose >= 1:
                logger.info(
                    "Best of %d trials: #%d, score %.4f, genome %s.",
                    self.n_trials_,
                    best.number,
                    self.best_score_,
                    self.best_genome_.to_json(),
                )
                if self.refit:
                    logger.info(
                        "Refit %d of them (trials %s) on all %d rows in %.1f s.",
                        len(self.ensemble_models_),
                        ", ".join(f"#{n}" for n in self.ensemble_trials_),
                        objective.n_samples,
                        self.refit_time_,
                    )
        return self

    def _validate_params(self) -> _Settings:
        o = _OWNER
        n_trials = None if self.n_trials is None else check_int(self.n_trials, "n_trials", o, low=1)
        timeout = None
        if self.timeout is not None:
            timeout = _check_positive_or_none(self.timeout, "timeout")
        if n_trials is None and timeout is None:
            raise_invalid(
                "n_trials", o, "an int >= 1, or None together with a timeout", self.n_trials
            )
        sampler = self.sampler
        if not isinstance(sampler, BaseSampler) and not (
            isinstance(sampler, str) and sampler in _SAMPLER_NAMES
        ):
            raise_invalid(
                "sampler", o, "one of {'ga', 'tpe', 'random'} or an Optuna sampler", sampler
            )
        space = _check_space(self.search_space)
        check_int(self.max_epochs, "max_epochs", o, low=1)
        if self.patience is not None:
            _check_int_or_none(self.patience, "patience", low=1)
        check_float(
            self.validation_fraction,
            "validation_fraction",
            o,
            low=0.0,
            high=1.0,
            low_open=True,
            high_open=True,
        )
        if self.cv is not None:
            _check_int_or_none(self.cv, "cv", low=2)
        scorer = resolve_scoring(self.scoring, o)
        if self.storage is not None and not isinstance(self.storage, str):
            raise_invalid("storage", o, "an Optuna storage URL (str) or None", self.storage)
        if self.study_name is not None and not isinstance(self.study_name, str):
            raise_invalid("study_name", o, "a str or None", self.study_name)
        if not isinstance(self.resume, bool):
            raise_invalid("resume", o, "a bool", self.resume)
        if self.pruner is not None and not isinstance(self.pruner, BasePruner):
            raise_invalid("pruner", o, "an Optuna pruner (BasePruner) or None", self.pruner)
        pruner = NopPruner() if self.pruner is None else copy.deepcopy(self.pruner)
        if self.n_jobs is None:
            n_jobs = 1
        elif self.n_jobs == -1 and not isinstance(self.n_jobs, bool):
            n_jobs = os.cpu_count() or 1
        else:
            try:
                n_jobs = check_int(self.n_jobs, "n_jobs", o, low=1)
            except InvalidParameterError:
                raise_invalid("n_jobs", o, "an int >= 1, -1 or None", self.n_jobs)
        rs = self.random_state
        if not (
            rs is None
            or isinstance(rs, np.random.RandomState)
            or (isinstance(rs, (int, np.integer)) and not isinstance(rs, bool) and rs >= 0)
        ):
            raise_invalid("random_state", o, "an int >= 0, a RandomState or None", rs)
        if isinstance(self.verbose, bool):
            verbose = int(self.verbose)
        else:
            verbose = check_int(self.verbose, "verbose", o, low=0)
        if not isinstance(self.refit, bool):
            raise_invalid("refit", o, "a bool", self.refit)
        check_int(self.ensemble_size, "ensemble_size", o, low=1)
        try:
            device = resolve_device(self.device)
        except InvalidParameterError as exc:
            raise InvalidParameterError(
                str(exc).replace("of resolve_device", f"of {_OWNER}")
            ) from None
        if n_jobs > 1:
            _check_picklable(self.scoring, self.sampler, self.pruner)
        return _Settings(n_trials, timeout, space, scorer, pruner, n_jobs, device, verbose)

    def _root_seed(self, stored: Mapping[str, Any] | None = None) -> int:
        """The root of every random choice; a resumed study keeps its own by default."""
        rs = self.random_state
        if rs is None:
            seed = None if stored is None else stored.get("seed")
            if isinstance(seed, int) and not isinstance(seed, bool):
                return seed
            return fresh_root_seed()
        if isinstance(rs, np.random.RandomState):
            return int(check_random_state(rs).randint(np.iinfo(np.int32).max))
        return int(rs)

    def _make_sampler(self, settings: _Settings, root: int, n_existing: int) -> BaseSampler:
        """The sampler of this fit, for a study already holding ``n_existing`` trials.

        EvoSampler draws every trial's randomness from ``(seed, trial number)``,
        so one seed serves a fresh and a resumed study alike. TPE and random
        sampling keep one random stream: a resumed study gets a stream of its own
        (keyed by ``n_existing``), or it would repeat the first run's trials.
        """
        if isinstance(self.sampler, BaseSampler):
            return _copy_sampler(self.sampler)
        if self.sampler == "ga":
            population = (
                _TIME_BUDGET_POPULATION
                if settings.n_trials is None
                else min(20, max(4, settings.n_trials // 3))
            )
            return EvoSampler(
                population_size=population,
                # Every trial trains with seeds of its own, so the values are noisy
                # by construction: "auto" would spend a trial to find that out.
                tournament_size=NOISY_TOURNAMENT_SIZE,
                search_space=settings.space,
                seed=derive_seed(root, "sampler"),
            )
        seed = derive_seed(root, "sampler", n_existing) % 2**32
        if self.sampler == "tpe":
            return TPESampler(seed=seed)
        return RandomSampler(seed=seed)

    def _search_record(
        self,
        settings: _Settings,
        classes: npt.NDArray[Any],
        X: npt.NDArray[np.float64],
        y: npt.NDArray[np.int64],
        root: int,
    ) -> dict[str, Any]:
        """What makes stored trials comparable: a resumed study must match it."""
        validation = (
            f"cv={self.cv}"
            if self.cv is not None
            else f"holdout validation_fraction={self.validation_fraction:g}"
        )
        return {
            "estimator": _OWNER,
            "scoring": _describe_scoring(self.scoring),
            "space": settings.space.to_dict(),
            "n_classes": len(classes),
            "n_features": int(X.shape[1]),
            "validation": validation,
            "training": {"max_epochs": int(self.max_epochs), "patience": self.patience},
            "seed": root,
            "data": _fingerprint(X, y, classes),
        }

    # -- the study -------------------------------------------------------------------------
    @contextmanager
    def _search_storage(self, settings: _Settings) -> Iterator[_SearchStorage]:
        """Where this fit's study lives.

        In memory unless ``storage`` is given; a search in worker processes
        (``n_jobs > 1``) without one runs in a temporary journal file, which the
        study is copied out of before it is removed.
        """
        if self.storage is not None:
            yield _SearchStorage(url=self.storage, storage=self.storage, temporary=False)
            return
        if settings.n_jobs == 1:
            yield _SearchStorage(url=None, storage=None, temporary=False)
            return
        from evohpo.workers.worker import open_worker_storage

        with tempfile.TemporaryDirectory(prefix="evohpo-search-") as directory:
            url = f"journal://{Path(directory) / 'search.log'}"
            yield _SearchStorage(url=url, storage=open_worker_storage(url), temporary=True)

    def _load_existing_study(
        self, storage: _SearchStorage, pruner: BasePruner
    ) -> optuna.Study | None:
        """The stored study to resume, if ``storage`` holds one named ``study_name``."""
        name = self.study_name
        if storage.storage is None or storage.temporary or name is None:
            return None
        try:
            study = optuna.load_study(
                study_name=name,
                storage=storage.storage,
                sampler=RandomSampler(seed=0),  # a placeholder
                pruner=pruner,
            )
        except KeyError:
            return None
        except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
            raise _storage_error(storage.storage, exc) from exc
        if not self.resume:
            raise optuna.exceptions.DuplicatedStudyError(
                f"The storage {redact_url(str(storage.storage))!r} already holds a study "
                f"named {name!r} and resume=False. Set resume=True to continue it, or "
                "choose another study_name."
            )
        return study

    def _create_study(
        self, storage: _SearchStorage, pruner: BasePruner, record: dict[str, Any]
    ) -> optuna.Study:
        """A new study for this search; its sampler is set by the caller."""
        try:
            study = optuna.create_study(
                storage=storage.storage,
                study_name=self.study_name,
                direction="maximize",
                sampler=RandomSampler(seed=0),  # a placeholder
                pruner=pruner,
            )
        except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
            raise _storage_error(str(storage.storage), exc) from exc
        study.set_user_attr(SEARCH_ATTR, record)
        return study

    def _optimize(
        self,
        study: optuna.Study,
        storage: _SearchStorage,
        objective: GenomeObjective,
        objective_factory: Callable[[], GenomeObjective],
        settings: _Settings,
    ) -> None:
        """Run the trials still missing: in this process, or in ``n_jobs`` workers."""
        done = sum(t.state in _FINISHED for t in study.get_trials(deepcopy=False))
        remaining = None if settings.n_trials is None else settings.n_trials - done
        if remaining is not None and remaining <= 0:
            if settings.verbose >= 1:
                logger.info(
                    "Study %r already holds %d finished trials (n_trials=%d); no new trial.",
                    study.study_name,
                    done,
                    settings.n_trials,
                )
            return
        if settings.verbose >= 1:
            logger.info(
                "Searching %s trials (%d already done) in study %r with %s, %s%s.",
                remaining if remaining is not None else f"for {settings.timeout:g} s",
                done,
                study.study_name,
                type(study.sampler).__name__,
                f"{self.cv}-fold cross-validation"
                if self.cv is not None
                else f"{self.validation_fraction:g} of the data validating",
                f", in {settings.n_jobs} worker processes" if settings.n_jobs > 1 else "",
            )
        progress = SearchProgress(
            remaining, bar=settings.verbose >= 1, log_trials=settings.verbose >= 2, desc=_OWNER
        )
        try:
            if settings.n_jobs == 1:
                # MaxTrialsCallback stops at the total also when other processes add trials.
                callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [progress]
                if settings.n_trials is not None:
                    callbacks.append(MaxTrialsCallback(settings.n_trials, states=_FINISHED))
                study.optimize(
                    objective, n_trials=remaining, timeout=settings.timeout, callbacks=callbacks
                )
            else:
                self._run_workers(study, storage, objective_factory, settings, progress)
        finally:
            progress.close()

    def _run_workers(
        self,
        study: optuna.Study,
        storage: _SearchStorage,
        objective_factory: Callable[[], GenomeObjective],
        settings: _Settings,
        progress: SearchProgress,
    ) -> None:
        """Run the trials in ``settings.n_jobs`` worker processes on the study's storage.

        Each worker builds the same objective (same splits) and its own copy of
        the sampler; the GA breeds from whatever has finished (see
        :mod:`evohpo.workers.worker`). ``progress`` follows the storage.
        """
        from evohpo.workers.worker import Heartbeat, WorkerSpec, run_workers

        assert storage.url is not None
        spec = WorkerSpec(
            study_name=study.study_name,
            storage_url=storage.url,
            objective_factory=objective_factory,
            sampler_factory=functools.partial(copy.deepcopy, study.sampler),
            pruner_factory=functools.partial(copy.deepcopy, settings.pruner),
            n_trials=settings.n_trials,
            timeout=settings.timeout,
            heartbeat=None if storage.temporary else Heartbeat(),
            counted_states=_FINISHED,
        )
        seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

        def follow() -> None:
            for trial in study.get_trials(deepcopy=False):
                if trial.state.is_finished() and trial.number not in seen:
                    seen.add(trial.number)
                    progress(study, trial)

        run_workers(
            spec,
            settings.n_jobs,
            threads_per_worker=1,
            on_wait=follow,
            log_level=None if settings.verbose >= 1 else logging.WARNING,
        )
        follow()

    # -- fitted study ----------------------------------------------------------------------
    @property
    def study_(self) -> optuna.Study:
        """The fitted search's study (rebuilt on first access after unpickling)."""
        study: optuna.Study | None = self.__dict__.get("_study")
        if study is not None:
            return study
        ref = self.__dict__.get("_study_ref")
        if ref is None:
            raise AttributeError(f"This {_OWNER} has no study_: call fit first.")
        with quiet_optuna():
            study = _rebuild_study(ref)
        self._study = study
        return study

    def trials_dataframe(self, **kwargs: Any) -> Any:
        """The study's trials as a pandas DataFrame (:meth:`optuna.Study.trials_dataframe`)."""
        check_is_fitted(self)
        return self.study_.trials_dataframe(**kwargs)

    # -- prediction ------------------------------------------------------------------------
    def _scaled(self, X: Any) -> npt.NDArray[np.float32]:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        scaler: Standardizer = self._scaler
        return scaler.transform(X)

    @available_if(_check_refit)  # type: ignore[untyped-decorator]  # sklearn is untyped
    def predict_proba(self, X: Any) -> npt.NDArray[np.float64]:
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        X = self._scaled(X)
        proba = predict_proba(self.ensemble_models_[0], X)
        for model in self.ensemble_models_[1:]:
            proba += predict_proba(model, X)
        proba /= len(self.ensemble_models_)
        return proba

    @available_if(_check_refit)  # type: ignore[untyped-decorator]  # sklearn is untyped
    def predict_log_proba(self, X: Any) -> npt.NDArray[np.float64]:
        """Logarithm of :meth:`predict_proba`, computed stably from the logits."""
        X = self._scaled(X)
        # log(mean_m softmax(z_m)) = logsumexp_m(log_softmax(z_m)) - log(M)
        members = np.stack([_log_softmax(predict_logits(m, X)) for m in self.ensemble_models_])
        top = members.max(axis=0)
        log_proba: npt.NDArray[np.float64] = top + np.log(np.exp(members - top).mean(axis=0))
        return log_proba

    @available_if(_check_refit)  # type: ignore[untyped-decorator]  # sklearn is untyped
    def predict(self, X: Any) -> npt.NDArray[Any]:
        """Most probable class of every row, a label of ``classes_``."""
        proba = self.predict_proba(X)
        labels: npt.NDArray[Any] = self.classes_[proba.argmax(axis=1)]
        return labels

    # -- pickling --------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = dict(super().__getstate__())
        state.pop("best_model_", None)  # the first member
        models = state.pop("ensemble_models_", None)
        if models is not None:
            state["_ensemble_states"] = [
                {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                for model in models
            ]
        study = state.pop("_study", None)
        if study is not None:
            state["_study_ref"] = _study_ref(study, self.storage)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        weights = state.pop("_ensemble_states", None)
        super().__setstate__(state)
        if weights is not None:
            models = []
            for genome, member_weights in zip(self.ensemble_genomes_, weights, strict=True):
                model = build_model(genome, self.n_features_in_, len(self.classes_), seed=0)
                model.load_state_dict(member_weights)
                models.append(model.eval())
            self.ensemble_models_ = models
            self.best_model_ = models[0]


# -- helpers -----------------------------------------------------------------------------------
@contextmanager
def _one_torch_thread(device: torch.device) -> Iterator[None]:
    """Train with one torch thread on the CPU; restore the previous count."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _verbose_logging(verbose: int) -> Iterator[None]:
    """Make ``verbose`` output visible when the application configured no logging.

    The search logs on the ``"evohpo"`` logger. Where no handler would show
    INFO records (a plain script or notebook), one on standard error is added
    for the fit; a configured application keeps its own.
    """
    if verbose < 1:
        yield
        return
    previous_level = logger.level
    handler: logging.Handler | None = None
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    if not logger.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(previous_level)


@dataclass(frozen=True)
class _SearchStorage:
    """Where a fit's study lives: ``storage`` for Optuna, ``url`` for worker processes."""

    url: str | None
    storage: str | BaseStorage | None
    temporary: bool


def _storage_error(storage: Any, exc: BaseException) -> StorageError:
    url = str(storage)
    missing = missing_driver(url, exc)
    if missing is not None:
        return StorageError(f"Cannot open the Optuna storage {redact_url(url)!r}: {missing}")
    return StorageError(
        f"Cannot open the Optuna storage {redact_url(url)!r}: "
        f"{redact_text(str(exc))}. Check the URL (e.g. 'sqlite:///search.db') and that the "
        "database is reachable."
    )


def _check_picklable(*settings: Any) -> None:
    """Worker processes rebuild the objective, sampler and pruner from a pickle."""
    try:
        pickle.dumps(settings)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise InvalidParameterError(
            f"With n_jobs > 1, {_OWNER} trains in worker processes, which need the "
            f"scoring, sampler and pruner to be picklable (module-level functions and "
            f"classes, not lambdas or local functions): {exc}"
        ) from exc


def _in_memory_copy(study: optuna.Study) -> optuna.Study:
    """The finished trials and user attributes of ``study`` in an in-memory study."""
    copy_ = optuna.create_study(
        direction="maximize", study_name=study.study_name, sampler=study.sampler
    )
    copy_.add_trials([t for t in study.get_trials() if t.state.is_finished()])
    for key, value in study.user_attrs.items():
        copy_.set_user_attr(key, value)
    return copy_


def _encode_labels(y: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp]]:
    """Sorted class labels and every row's index among them."""
    try:
        classes, encoded = np.unique(y, return_inverse=True)
    except TypeError as exc:  # labels of types that do not compare, e.g. None among str
        kinds = sorted({type(label).__name__ for label in y.tolist()})
        raise ValueError(
            f"{_OWNER} needs class labels of one comparable type; y mixes {kinds}."
        ) from exc
    return classes, encoded.reshape(-1)


def _describe_scoring(scoring: Any) -> str:
    """How a resumed study recognises its scoring, in any process."""
    if isinstance(scoring, str):
        return scoring
    module = getattr(scoring, "__module__", None)
    name = getattr(scoring, "__qualname__", None)
    if module is not None and name is not None:
        return f"{module}.{name}"
    # Scorer objects (make_scorer) describe themselves; drop memory addresses.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(scoring))


def _fingerprint(
    X: npt.NDArray[np.float64], y: npt.NDArray[np.int64], classes: npt.NDArray[Any]
) -> str:
    """A digest of the data, so that a study is resumed only on the data it searched."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(X.shape).encode())
    digest.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    digest.update(repr(classes.tolist()).encode())
    return digest.hexdigest()


def _ensemble_members(complete: list[FrozenTrial], size: int) -> list[FrozenTrial]:
    """The ``size`` best complete trials, one per distinct set of parameters.

    A GA re-evaluates some genomes (an elite, a child equal to its parent): a
    repeat adds nothing an ensemble needs, a different network does.
    """
    members: list[FrozenTrial] = []
    seen: set[str] = set()
    for trial in sorted(complete, key=_rank_key, reverse=True):
        key = json.dumps(trial.params, sort_keys=True)
        if key not in seen:
            seen.add(key)
            members.append(trial)
            if len(members) == size:
                break
    return members


def _refit_epochs(trial: FrozenTrial, objective: GenomeObjective) -> int:
    """As many passes over every row as the trial's best epoch made over its training
    rows: scaled up to the larger data (x1.25 for a 0.2 holdout)."""
    best_epoch = max(1, int(trial.user_attrs.get("best_epoch", 1)))
    return max(1, round(best_epoch * objective.n_samples / objective.train_size))


def _refit_seed(root: int, rank: int) -> int:
    # The best member keeps the seed a single refit had, so its model is unchanged.
    return derive_seed(root, "refit") if rank == 0 else derive_seed(root, "refit", rank)


def _log_softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def _rank_key(trial: FrozenTrial) -> tuple[float, float, int]:
    """Order of complete trials: score, then lower validation loss, then earlier."""
    loss = trial.user_attrs.get("val_loss")
    loss = math.inf if not isinstance(loss, (int, float)) else float(loss)
    return (_value(trial), -loss, -trial.number)


def _value(trial: FrozenTrial) -> float:
    assert trial.value is not None
    return float(trial.value)


def _check_positive_or_none(value: Any, name: str) -> float:
    try:
        return check_float(value, name, _OWNER, low=0.0, low_open=True)
    except InvalidParameterError:
        raise_invalid(name, _OWNER, "a float > 0 or None", value)


def _check_int_or_none(value: Any, name: str, *, low: int) -> int:
    try:
        return check_int(value, name, _OWNER, low=low)
    except InvalidParameterError:
        raise_invalid(name, _OWNER, f"an int >= {low} or None", value)


def _check_space(value: Any) -> SearchSpace:
    if value is None:
        return DEFAULT_SEARCH_SPACE
    if isinstance(value, SearchSpace):
        return value
    if isinstance(value, Mapping):
        return SearchSpace.from_dict(value)
    raise_invalid(
        "search_space",
        _OWNER,
        "a SearchSpace, a dict of SearchSpace settings, or None",
        value,
        SearchSpaceError,
    )


def _copy_sampler(sampler: BaseSampler) -> BaseSampler:
    """A private copy, so that ``fit`` leaves the user's sampler as it was."""
    try:
        return copy.deepcopy(sampler)
    except (TypeError, copy.Error):
        logger.warning(
            "The sampler %r cannot be copied; fit uses it as it is, so its state "
            "(random generator, caches) carries over between fits.",
            sampler,
        )
        return sampler


def _check_resumable(study: optuna.Study, record: dict[str, Any]) -> None:
    """Raise if a stored study was made for another search."""
    if study.direction != StudyDirection.MAXIMIZE:
        raise StudyMismatchError(
            f"The stored study {study.study_name!r} minimizes; {_OWNER} maximizes its score. "
            "Choose another study_name."
        )
    stored = study.user_attrs.get(SEARCH_ATTR)
    if stored is None:
        if study.trials:
            raise StudyMismatchError(
                f"The stored study {study.study_name!r} holds trials that {_OWNER} did not "
                "make. Choose another study_name."
            )
        study.set_user_attr(SEARCH_ATTR, record)
        return
    differences = [
        _difference(key, stored.get(key), record[key])
        for key in record
        if key != "estimator" and _jsonish(stored.get(key)) != _jsonish(record[key])
    ]
    if differences:
        raise StudyMismatchError(
            f"The stored study {study.study_name!r} was made for another search ("
            + "; ".join(differences)
            + "). Resume it with the same settings and data, or choose another study_name."
        )


def _difference(key: str, stored: Any, now: Any) -> str:
    if key == "data":
        return "data: the rows of X or y differ from those the study searched"
    if key == "seed":
        return f"seed: stored {stored!r}, now {now!r} (random_state; None keeps the stored one)"
    return f"{key}: stored {stored!r}, now {now!r}"


def _jsonish(value: Any) -> Any:
    # Stored attributes come back from JSON: tuples read as lists.
    if isinstance(value, Mapping):
        return {k: _jsonish(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonish(v) for v in value]
    return value


def _study_ref(study: optuna.Study, storage: str | None) -> dict[str, Any]:
    ref: dict[str, Any] = {"study_name": study.study_name, "storage": storage}
    if storage is None:
        ref["trials"] = [t for t in study.get_trials() if t.state.is_finished()]
        ref["user_attrs"] = dict(study.user_attrs)
    return ref


def _rebuild_study(ref: dict[str, Any]) -> optuna.Study:
    if ref["storage"] is not None:
        return optuna.load_study(study_name=ref["study_name"], storage=ref["storage"])
    study = optuna.create_study(direction="maximize", study_name=ref["study_name"])
    study.add_trials(ref["trials"])
    for key, value in ref["user_attrs"].items():
        study.set_user_attr(key, value)
    return study


def _cv_results(trials: list[FrozenTrial], cv: int | None) -> dict[str, Any]:
    """One column per key, one row per trial (sorted by number)."""
    scores = np.array(
        [_value(t) if t.state == TrialState.COMPLETE else math.nan for t in trials],
        dtype=np.float64,
    )
    finite = np.where(np.isnan(scores), -np.inf, scores)
    # Rank 1 is the best; trials without a value rank last ("min" method on ties).
    ranks = np.array(
        [
            int((finite > s).sum()) + 1 if not math.isnan(v) else int((~np.isnan(scores)).sum()) + 1
            for s, v in zip(finite, scores, strict=True)
        ],
        dtype=np.int32,
    )
    names = sorted({name for t in trials for name in t.params})
    results: dict[str, Any] = {
        "number": [t.number for t in trials],
        "state": [t.state.name for t in trials],
        "params": [dict(t.params) for t in trials],
    }
    for name in names:
        results[f"param_{name}"] = [t.params.get(name) for t in trials]
    results["mean_test_score"] = scores
    fold_scores = [t.user_attrs.get("fold_scores") for t in trials]
    if cv is not None:
        for k in range(cv):
            results[f"split{k}_test_score"] = np.array(
                [f[k] if f is not None and len(f) > k else math.nan for f in fold_scores]
            )
    results["std_test_score"] = np.array(
        [
            statistics.pstdev(f)
            if f and t.state == TrialState.COMPLETE
            else (0.0 if t.state == TrialState.COMPLETE else math.nan)
            for f, t in zip(fold_scores, trials, strict=True)
        ]
    )
    results["rank_test_score"] = ranks
    attrs: dict[str, Any] = {
        "mean_fit_time": "train_seconds",
        "n_parameters": "n_parameters",
        "best_epoch": "best_epoch",
        "epochs_run": "epochs_run",
        "stop_reason": "stop_reason",
        "val_accuracy": "val_accuracy",
        "val_loss": "val_loss",
        "genome": "genome",
    }
    for key, attr in attrs.items():
        results[key] = [t.user_attrs.get(attr) for t in trials]
    return results
