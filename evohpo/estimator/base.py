"""What the classifier and the regressor share: parameters, fit, study, refit, pickling.

:class:`_EvoSearchBase` runs the whole search behind scikit-learn's API; a
subclass says what its targets are (:attr:`_EvoSearchBase._task`), checks and
encodes them (``_check_data``), keeps what predictions need of them
(``_set_targets``, ``_n_outputs``) and predicts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from evohpo._progress import quiet_optuna
from evohpo.estimator.params import Settings, check_settings
from evohpo.estimator.refit import (
    affordable_members,
    ensemble_members,
    kept_members,
    refit_ensemble,
    refit_epochs,
)
from evohpo.estimator.results import FINISHED, complete_trials, cv_results, rank_key, trial_value
from evohpo.estimator.session import (
    Search,
    rebuild_study,
    run_search,
    study_ref,
    verbose_logging,
)
from evohpo.evolution.describe import describe_genome
from evohpo.evolution.genome import Genome
from evohpo.evolution.space import SearchSpace
from evohpo.search.scoring import Scorer
from evohpo.search.splits import Standardizer
from evohpo.training.nn import build_model
from evohpo.training.task import TaskName, get_task
from evohpo.training.threads import cpu_thread_budget, thread_budget, torch_threads

__all__ = ["_EvoSearchBase"]

logger = logging.getLogger("evohpo")

#: The least training time the refit gets when the search spent the whole timeout.
_MIN_REFIT_SECONDS = 1.0

#: What a refit sets, removed by a fit with ``refit=False``.
_REFIT_ATTRS = ("best_model_", "ensemble_models_", "_scaler", "_target_scaler", "refit_time_")


class _EvoSearchBase(BaseEstimator):  # type: ignore[misc]
    """The search of :class:`~evohpo.EvoSearchClassifier` and
    :class:`~evohpo.EvoSearchRegressor`; see their documentation."""

    #: What the networks learn (:mod:`evohpo.training.task`).
    _task: ClassVar[TaskName] = "classification"

    def __init__(
        self,
        *,
        n_trials: int | None = 20,
        timeout: float | None = None,
        sampler: str | BaseSampler = "ga",
        search_space: SearchSpace | Mapping[str, Any] | None = None,
        input_shape: tuple[int, ...] | None = None,
        max_epochs: int = 100,
        patience: int | None = 20,
        validation_fraction: float = 0.2,
        cv: int | None = None,
        scoring: str | Scorer | None = None,
        storage: str | None = None,
        study_name: str | None = None,
        resume: bool = True,
        pruner: BasePruner | None = None,
        n_jobs: int | None = 1,
        batch_trials: int | str = "auto",
        inherit_weights: bool = False,
        weights_dir: Any = None,
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
        self.input_shape = input_shape
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
        self.batch_trials = batch_trials
        self.inherit_weights = inherit_weights
        self.weights_dir = weights_dir
        self.random_state = random_state
        self.verbose = verbose
        self.refit = refit
        self.ensemble_size = ensemble_size
        self.device = device

    # -- what a subclass says about its targets --------------------------------------------
    def _check_data(
        self, X: Any, y: Any, settings: Settings
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[Any], npt.NDArray[Any] | None]:
        """``X`` as floats, ``y`` as the search trains on it, the classes (``None``:
        regression)."""
        raise NotImplementedError

    def _set_targets(self, classes: npt.NDArray[Any] | None, y: npt.NDArray[Any]) -> None:
        """Keep what predictions need to know of the targets (``classes_``, ...)."""
        raise NotImplementedError

    def _n_outputs(self) -> int:
        """Outputs of the fitted networks."""
        raise NotImplementedError

    # -- scikit-learn plumbing -------------------------------------------------------------
    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # Parallel trials finish in a varying order, which changes what the samplers see.
        tags.non_deterministic = self.n_jobs not in (1, None)
        return tags

    def _check_refit(self) -> bool:
        if not self.refit:
            raise AttributeError(
                f"This {type(self).__name__} was initialized with refit=False: predictions "
                "need the best genome refitted on all the data. Set refit=True, or train "
                "best_genome_ yourself."
            )
        if "best_params_" in self.__dict__ and "_scaler" not in self.__dict__:
            raise AttributeError(
                f"This {type(self).__name__} was fitted with refit=False: predictions need "
                "the best genome refitted on all the data. Fit again with refit=True, or "
                "train best_genome_ yourself."
            )
        return True

    # -- fit -------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> Self:
        """Search genomes on ``(X, y)``, then refit the best ones on all the data.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Finite numeric features.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Class labels of any type (strings, ints, bools), at least two
            classes; for the regressor finite numbers, one column per target.

        Returns
        -------
        self : object
            The fitted estimator.

        A fit that raises (bad data, a refused resume, Ctrl-C) leaves the
        estimator as it was: a fitted one still predicts as before.
        """
        before = dict(self.__dict__)
        try:
            return self._fit(X, y)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _fit(self, X: Any, y: Any) -> Self:
        started = time.monotonic()  # timeout counts from here, the refit included
        settings = self._check_settings()
        X, y_checked, classes = self._check_data(X, y, settings)
        # On the CPU one torch thread, except for trainings of networks bound by arithmetic,
        # which take the cores this process had (evohpo.training.threads).
        cpu = settings.device.type == "cpu"
        budget = cpu_thread_budget(settings.n_jobs) if cpu else None
        with (
            quiet_optuna(),
            torch_threads(1 if cpu else None),
            thread_budget(budget),
            verbose_logging(settings.verbose),
        ):
            search = run_search(settings, X, y_checked, classes, started=started)
            self._set_targets(classes, y_checked)
            self._select(search, settings)
            if settings.refit:
                self._refit(search)
            else:  # no stale model of an earlier fit
                for name in _REFIT_ATTRS:
                    self.__dict__.pop(name, None)
            if settings.verbose >= 1:
                self._log_result(search)
        return self

    def _check_settings(self) -> Settings:
        """The parameters, checked (:func:`evohpo.estimator.params.check_settings`)."""
        return check_settings(self.get_params(deep=False), type(self).__name__, self._task)

    def _select(self, search: Search, settings: Settings) -> None:
        """Set the best trial's attributes, ``cv_results_`` and the ensemble's members."""
        trials = search.trials
        complete = complete_trials(
            search.study.study_name, trials, settings.timeout, settings.n_jobs
        )
        best = max(complete, key=rank_key)
        self._input_shape = settings.input_shape  # how the members fold a row
        self._study: optuna.Study | None = search.study
        self._study_ref: dict[str, Any] | None = None
        # The URL the fit used (a bare path resolved), not the parameter, which a
        # later set_params may change: a pickle finds the study by it.
        self._study_storage: str | None = settings.storage
        self.cv_results_ = cv_results(trials, settings.cv, get_task(self._task).score_attr)
        self.best_index_ = trials.index(best)
        self.best_params_ = dict(best.params)
        self.best_score_ = trial_value(best)
        self.best_genome_ = Genome.from_json(best.user_attrs["genome"])
        self.n_trials_ = sum(t.state in FINISHED for t in trials)
        members = ensemble_members(complete, settings.ensemble_size, self._task)
        self._set_members(members, search)

    def _set_members(self, members: list[FrozenTrial], search: Search) -> None:
        self.ensemble_trials_ = [t.number for t in members]
        self.ensemble_genomes_ = [Genome.from_json(t.user_attrs["genome"]) for t in members]
        self.refit_epochs_ = [refit_epochs(t, search.objective) for t in members]

    def _refit(self, search: Search) -> None:
        """Train the ensemble's genomes on all the rows.

        Under a timeout the refit takes what the search left: members whose
        estimated refits do not fit in it stay out (the best always trains),
        and a member the deadline still cut to less than
        :data:`~evohpo.estimator.refit.MIN_TRAINED_SHARE` of its epochs is left
        out after training.
        """
        objective = search.objective
        left = None
        if search.deadline is not None:
            # The refit takes what the search left, and at least a moment.
            left = max(search.deadline - time.monotonic(), _MIN_REFIT_SECONDS)
            by_number = {t.number: t for t in search.trials}
            members = [by_number[number] for number in self.ensemble_trials_]
            self._set_members(affordable_members(members, objective, left), search)
        # A member whose trial inherited its weights starts where that trial started.
        starts = [search.start_states.get(number) for number in self.ensemble_trials_]
        ensemble = refit_ensemble(
            objective,
            self.ensemble_genomes_,
            self.refit_epochs_,
            search.root,
            max_train_time=left,
            initial_states=starts,
        )
        kept = kept_members(ensemble.epochs_run, self.refit_epochs_)
        if len(kept) < len(ensemble.models):
            logger.info(
                "The deadline cut %d ensemble members short; they are left out.",
                len(ensemble.models) - len(kept),
            )
            self.ensemble_trials_ = [self.ensemble_trials_[r] for r in kept]
            self.ensemble_genomes_ = [self.ensemble_genomes_[r] for r in kept]
            self.refit_epochs_ = [self.refit_epochs_[r] for r in kept]
        self.ensemble_models_ = [ensemble.models[r] for r in kept]
        self.best_model_ = ensemble.models[0]
        self._scaler = ensemble.scaler
        self._target_scaler = ensemble.target
        self.refit_time_ = ensemble.seconds

    def _log_result(self, search: Search) -> None:
        logger.info(
            "Best of %d trials: #%d, score %.4f: %s.",
            self.n_trials_,
            search.trials[self.best_index_].number,
            self.best_score_,
            describe_genome(self.best_genome_),  # the whole genome is best_genome_
        )
        if self.refit:
            logger.info(
                "Refit %d of them (trials %s) on all %d rows in %.1f s.",
                len(self.ensemble_models_),
                ", ".join(f"#{n}" for n in self.ensemble_trials_),
                search.objective.n_samples,
                self.refit_time_,
            )

    # -- fitted study ----------------------------------------------------------------------
    @property
    def study_(self) -> optuna.Study:
        """The fitted search's study (rebuilt on first access after unpickling)."""
        study: optuna.Study | None = self.__dict__.get("_study")
        if study is not None:
            return study
        ref = self.__dict__.get("_study_ref")
        if ref is None:
            raise AttributeError(f"This {type(self).__name__} has no study_: call fit first.")
        with quiet_optuna():
            study = rebuild_study(ref)
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
            state["_study_ref"] = study_ref(study, state.get("_study_storage", self.storage))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        weights = state.pop("_ensemble_states", None)
        super().__setstate__(state)
        if weights is not None:
            models = []
            shape = self.__dict__.get("_input_shape")
            n_outputs = self._n_outputs()
            for genome, member_weights in zip(self.ensemble_genomes_, weights, strict=True):
                model = build_model(
                    genome, self.n_features_in_, n_outputs, seed=0, input_shape=shape
                )
                model.load_state_dict(member_weights)
                models.append(model.eval())
            self.ensemble_models_ = models
            self.best_model_ = models[0]
