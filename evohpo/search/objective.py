"""The Optuna objective for a classification or regression data set ``(X, y)``.

This is where an Optuna trial meets a torch model: a trial asks for a genome
through :func:`~evohpo.suggest_genome` (so any sampler can answer), the genome
is trained by :func:`~evohpo.training.loop.train_classifier` and the trial's
value is the validation score (:mod:`evohpo.search.scoring`), to be maximised.
The training/validation splits come from :mod:`evohpo.search.splits`. The
task (:mod:`evohpo.training.task`) is the ``train_config``'s: classes, or
float targets standardised per split.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import optuna
from optuna.pruners import NopPruner
from optuna.trial import FrozenTrial

from evohpo._random import derive_seed
from evohpo._validation import check_float, check_input_shape, check_int, raise_invalid
from evohpo.evolution.genome import Genome
from evohpo.evolution.space import SearchSpace
from evohpo.evolution.suggest import suggest_genome
from evohpo.exceptions import InvalidParameterError, StopRequested
from evohpo.search.batch_size import largest_network_macs
from evohpo.search.inheritance import (
    WARNING_ATTR,
    WEIGHTS_ATTR,
    WeightBank,
    WeightInheritance,
    inherited_start,
)
from evohpo.search.reporting import DEFAULT_REPORT_EVERY, EpochReports
from evohpo.search.scoring import Scorer, resolve_scoring
from evohpo.search.splits import FloatArray, Split, Standardizer, make_splits
from evohpo.search.trial_runs import Folds, TrialRun, finite_or_none
from evohpo.storage import internals
from evohpo.training.arrays import check_features, check_labels
from evohpo.training.config import TrainConfig, TrainResult
from evohpo.training.loop import train_classifier
from evohpo.training.population import (
    MemberCallback,
    MemberOutcome,
    NotTrained,
    train_population,
)
from evohpo.training.task import Task, get_task

__all__ = ["GenomeObjective"]

logger = logging.getLogger("evohpo")

_OWNER = "GenomeObjective"


# -- the objective -------------------------------------------------------------------------
class GenomeObjective:
    """Callable Optuna objective: suggest a genome, train it, return its validation score.

    The value of a trial is to be maximised: the validation accuracy, or the
    ``scoring`` metric of the best epoch's weights.

    With ``train_config.task == "regression"`` the targets are numbers: the
    splits are shuffled (not stratified), every split standardises its
    targets with its training rows' statistics, networks train on mean squared
    error (early stopping and pruning follow the validation MSE) and
    ``scoring`` (R2 by default) sees predictions on the targets' own scale.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Finite numeric features.
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Integer class indices ``0 .. n_classes - 1`` (encoding labels is the
        caller's job, as :class:`~evohpo.EvoSearchClassifier` does); for
        regression finite numbers, one column per target.
    space : SearchSpace, optional
        Ranges and choices of the genome; ``SearchSpace()`` by default.
    train_config : TrainConfig, optional
        Epochs, patience, device and task; its ``seed`` is replaced per trial.
    validation_fraction : float, default=0.2
        Share of the rows of every class held out for validation, in ``(0, 1)``.
        The split is stratified and drawn from ``seed``.
    cv : int, optional
        Stratified k-fold cross-validation with ``cv >= 2`` folds instead of a
        holdout split: the value is the mean score over the folds.
    seed : int, default=0
        Root of the split and of every training seed. Trial ``n`` trains with the
        seed ``derive_seed(seed, n, "train")`` (every fold alike), so a trial's
        result does not depend on which trials ran before it.
    validation_data : (X_val, y_val), optional
        An explicit validation set; overrides ``validation_fraction`` and ``cv``.
    scoring : str or callable, optional
        See :func:`~evohpo.search.scoring.resolve_scoring`; ``None``:
        ``"accuracy"``, or ``"r2"`` for regression. Early stopping, the
        choice of the best epoch and the per-epoch reports to the pruner always
        use the trainer's validation score (accuracy, or negative MSE);
        ``scoring`` decides the trial's value.
    n_classes : int, optional
        Number of classes; ``max(y) + 1`` (at least 2) by default. Leave it
        ``None`` for regression: the outputs are the columns of ``y``.
    input_shape : tuple of int, optional
        ``(channels, length)`` or ``(channels, height, width)`` of the rows of
        ``X``, which stay flat (the model reshapes them); its product must be
        the number of features. Genomes with a convolutional body are built
        with it. ``space.input_shape`` by default; when both are given they
        must agree.
    report_every : int or "auto", default="auto"
        The validation accuracy of every epoch (the running score of every
        fold with ``cv``) is kept and written to the storage, and the pruner
        asked, every ``report_every`` epochs, and when the trial ends, in one
        commit (:mod:`evohpo.search.reporting`). 1 writes and asks after every
        epoch, as ``trial.report`` does. ``"auto"``: once, when the trial
        ends, if the study's pruner is a ``NopPruner`` (nothing decides on
        them); otherwise every ``max(1, min(5, max_epochs // 10))`` epochs, and
        every fold.
    inheritance : WeightInheritance, optional
        Keep every trial's trained weights and start bred trials from their
        parents' (:mod:`evohpo.search.inheritance`). ``None``: every trial
        trains from scratch.

    Notes
    -----
    *Pruning.* With a holdout split (or ``validation_data``), the validation
    accuracy of every epoch is reported (``step`` = epoch, from 1), and the
    trial is pruned as soon as ``trial.should_prune()`` says so (asked at
    the epochs ``report_every`` sets). With ``cv``, the
    running mean of the fold scores is reported after every fold (``step`` =
    number of folds done, from 1): folds are the natural unit of work there, the
    reported value is the trial's value in the making, and a pruned trial saves
    every fold still to come.

    *User attributes* of every trial: ``"genome"`` (JSON), ``"n_parameters"``,
    ``"train_seconds"``, ``"best_epoch"``, ``"epochs_run"``, ``"stop_reason"``
    (``"max_epochs"``, ``"early_stopping"``, ``"diverged"``, ``"time_limit"`` or
    ``"pruned"``), ``"val_accuracy"`` and ``"val_loss"`` (mean cross-entropy of the
    kept weights; absent for a pruned trial); with ``cv`` also ``"fold_scores"`` and
    ``"fold_best_epochs"``, ``"best_epoch"`` being the median of the latter.

    A training whose loss becomes NaN or infinite ends with ``stop_reason ==
    "diverged"`` and the trial returns the score of its best finite epoch; the
    study goes on. An exception raised by training propagates, so Optuna records
    the trial as failed with the reason (``study.optimize(catch=...)`` decides
    whether the study continues).

    Examples
    --------
    >>> import numpy as np, optuna
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(120, 4))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> objective = GenomeObjective(
    ...     X, y, space=SearchSpace(max_layers=1, units=(8, 16)),
    ...     train_config=TrainConfig(max_epochs=3, device="cpu"))
    >>> study = optuna.create_study(direction="maximize")
    >>> study.optimize(objective, n_trials=2)
    >>> sorted(study.best_trial.user_attrs)  # doctest: +NORMALIZE_WHITESPACE
    ['best_epoch', 'epochs_run', 'genome', 'n_parameters', 'stop_reason',
     'train_seconds', 'val_accuracy', 'val_loss']
    """

    def __init__(
        self,
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        *,
        space: SearchSpace | None = None,
        train_config: TrainConfig | None = None,
        validation_fraction: float = 0.2,
        cv: int | None = None,
        seed: int = 0,
        validation_data: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
        scoring: str | Scorer | None = None,
        n_classes: int | None = None,
        input_shape: Sequence[int] | None = None,
        report_every: int | str = "auto",
        inheritance: WeightInheritance | None = None,
    ) -> None:
        if inheritance is not None and not isinstance(inheritance, WeightInheritance):
            raise_invalid("inheritance", _OWNER, "a WeightInheritance or None", inheritance)
        self.inheritance = inheritance
        self._bank = WeightBank(inheritance) if inheritance is not None else None
        if self._bank is not None:
            # A folder that cannot be made fails the search now, not each trial's storing.
            _ = self._bank.store
        self.report_every: int | str = "auto"
        if not (isinstance(report_every, str) and report_every == "auto"):
            try:
                self.report_every = check_int(report_every, "report_every", _OWNER, low=1)
            except InvalidParameterError:
                raise_invalid("report_every", _OWNER, "an int >= 1 or 'auto'", report_every)
        #: ``time.monotonic()`` after which no trial trains any more (a trial then
        #: stops with ``stop_reason == "time_limit"``); ``None``: no deadline.
        self.deadline: float | None = None
        if space is not None and not isinstance(space, SearchSpace):
            raise_invalid("space", _OWNER, "a SearchSpace or None", space)
        if train_config is not None and not isinstance(train_config, TrainConfig):
            raise_invalid("train_config", _OWNER, "a TrainConfig or None", train_config)
        self.space = space if space is not None else SearchSpace()
        self.train_config = train_config if train_config is not None else TrainConfig()
        self.validation_fraction = check_float(
            validation_fraction,
            "validation_fraction",
            _OWNER,
            low=0.0,
            high=1.0,
            low_open=True,
            high_open=True,
        )
        if cv is not None:
            cv = check_int(cv, "cv", _OWNER, low=2)
        self.cv = cv
        self.seed = check_int(seed, "seed", _OWNER)
        self.task: Task = get_task(self.train_config.task)
        regression = self.task.name == "regression"
        if scoring is None:
            scoring = "r2" if regression else "accuracy"
        self.scoring = scoring
        self._scorer = resolve_scoring(scoring, _OWNER, regression=regression)

        self.X: FloatArray = check_features(X, "X", _OWNER, dtype=np.float64)
        self.y: npt.NDArray[Any] = _targets(y, "y", self.X.shape[0], regression)
        self.validation_data = _validation_data(validation_data, self.X.shape[1], regression)
        self.input_shape = _input_shape(input_shape, self.space, self.X.shape[1])
        val = self.validation_data
        if cv is not None and val is None and cv > len(self.y):
            expected = f"an int <= the number of samples ({len(self.y)})"
            raise_invalid("cv", _OWNER, expected, cv)

        if regression:
            if n_classes is not None:
                raise_invalid("n_classes", _OWNER, "None for regression", n_classes)
            n_targets = self.y.shape[1]
            if val is not None and val[1].shape[1] != n_targets:
                expected = f"{n_targets} target column(s), as y"
                raise_invalid("validation_data[1]", _OWNER, expected, val[1].shape)
            #: Outputs of the networks: the number of classes, or of targets.
            self.n_classes = n_targets
        else:
            highest = int(self.y.max())
            if val is not None:
                highest = max(highest, int(val[1].max()))
            if n_classes is None:
                n_classes = max(2, highest + 1)
            self.n_classes = check_int(n_classes, "n_classes", _OWNER, low=max(2, highest + 1))
        self._splits = make_splits(
            self.X,
            self.y,
            seed=self.seed,
            validation_fraction=self.validation_fraction,
            cv=self.cv,
            validation_data=val,
            regression=regression,
        )

    # -- data ----------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        """Number of input features."""
        return int(self.X.shape[1])

    @property
    def _inputs(self) -> int | tuple[int, ...]:
        """What :meth:`Genome.n_parameters` reads: the input shape, else the width."""
        return self.n_features if self.input_shape is None else self.input_shape

    @property
    def n_splits(self) -> int:
        """Number of training/validation pairs a trial trains on (1, or ``cv``)."""
        return len(self._splits)

    @property
    def train_size(self) -> float:
        """Mean number of training rows per split (what a trial trains on)."""
        return statistics.fmean(len(split.y_train) for split in self._splits)

    @property
    def n_samples(self) -> int:
        """Number of rows :meth:`fit_genome` trains on."""
        return len(self._all_data()[1])

    def largest_network_macs(self) -> int | None:
        """Multiply-adds per row of the largest dense network of the space
        (:func:`evohpo.search.batch_size.largest_network_macs`)."""
        if self.input_shape is not None:
            return None
        return largest_network_macs(self.space, self.n_features, self.n_classes)

    def standardizer(self) -> Standardizer:
        """Statistics of all the data :meth:`fit_genome` trains on.

        The model :meth:`fit_genome` returns expects inputs transformed by
        ``objective.standardizer().transform(X)``.
        """
        return Standardizer.fit(self._all_data()[0])

    def target_standardizer(self) -> Standardizer | None:
        """Statistics of all the targets :meth:`fit_genome` trains on (regression;
        ``None`` for classification): the model :meth:`fit_genome` returns
        predicts ``target_standardizer().transform(y)``, and ``inverse_transform``
        maps its outputs back."""
        if self.task.name != "regression":
            return None
        return Standardizer.fit(self._all_data()[1])

    def _all_training_data(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[Any]]:
        """All the rows, standardised as the refit trains on them (targets too)."""
        X, y = self._all_data()
        target = self.target_standardizer()
        return self.standardizer().transform(X), y if target is None else target.transform(y)

    def _all_data(self) -> tuple[FloatArray, npt.NDArray[Any]]:
        if self.validation_data is None:
            return self.X, self.y
        X_val, y_val = self.validation_data
        return np.concatenate([self.X, X_val]), np.concatenate([self.y, y_val])

    # -- the objective -------------------------------------------------------------------
    def trial_seed(self, number: int) -> int:
        """The training seed of trial ``number``."""
        return derive_seed(self.seed, number, "train")

    def __call__(self, trial: optuna.Trial) -> float:
        """Train the genome ``trial`` suggests; return its validation score."""
        (outcome,) = self.train_trials([trial])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def train_trials(self, trials: Sequence[optuna.Trial]) -> list[float | Exception]:
        """Train the genomes of several running trials together; one outcome per trial.

        Each trial gets what :meth:`__call__` gives it alone: its genome, its own
        training seed, its reports to the pruner and its user attributes. The
        dense genomes train as stacks
        (:func:`~evohpo.training.population.train_population`). An outcome is
        the trial's value, or the exception that ended it: ``optuna.TrialPruned``,
        or an error of its genome. An error of the training itself propagates
        (it concerns every trial of the call).
        """
        runs: list[TrialRun | Exception] = []
        for trial in trials:
            try:
                runs.append(self._start(trial))
            except Exception as exc:  # a genome the trainer refuses fails its trial only
                runs.append(exc)
        started = [run for run in runs if isinstance(run, TrialRun)]
        left = self._time_left()
        end = None if left is None else time.perf_counter() + left
        for run in started:
            run.sharing = len(started)
            if left is not None:
                run.config = replace(run.config, max_train_time=left)
        try:
            if len(self._splits) == 1:
                self._holdout(started)
            else:
                self._kfold(started, end)
        except StopRequested as stop:
            # What finished before the stop keeps its result (see evohpo.search.batched).
            stop.finished_outcomes = [  # type: ignore[attr-defined]
                run if isinstance(run, Exception) else (run.outcome() if run.done else None)
                for run in runs
            ]
            raise
        self._retain_weights(started)
        return [run if isinstance(run, Exception) else run.outcome() for run in runs]

    def _time_left(self) -> float | None:
        """Seconds of training left before :attr:`deadline` (at least a moment), if set."""
        if self.deadline is None:
            return self.train_config.max_train_time
        left = max(self.deadline - time.monotonic(), 1e-3)
        limit = self.train_config.max_train_time
        return left if limit is None else min(left, limit)

    def _report_interval(self, trial: optuna.Trial) -> int:
        """Epochs (folds with ``cv``) between two writes of a trial's reports."""
        steps = self.train_config.max_epochs if len(self._splits) == 1 else len(self._splits)
        if self.report_every != "auto":
            return int(self.report_every)
        if isinstance(trial.study.pruner, NopPruner):
            return steps + 1  # nothing decides on them: one write when the trial ends
        if len(self._splits) > 1:
            return 1  # folds are few and long: the pruner judges every one
        return max(1, min(DEFAULT_REPORT_EVERY, steps // 10))

    def _start(self, trial: optuna.Trial) -> TrialRun:
        genome = suggest_genome(trial, self.space)
        config = replace(self.train_config, seed=self.trial_seed(trial.number))
        every = self._report_interval(trial)
        attrs = {
            "genome": genome.to_json(),
            "n_parameters": genome.n_parameters(self._inputs, self.n_classes),
        }
        initial_state = None
        if self._bank is not None:
            initial_state, inherited = self._inherited_start(trial, genome, config.seed)
            attrs.update(inherited)
        internals.write_running_trial_records(trial, user_attrs=attrs)
        run = TrialRun(trial, genome, config, EpochReports(trial, every=every))
        run.score_attr = self.task.score_attr
        run.initial_state = initial_state
        return run

    def _inherited_start(
        self, trial: optuna.Trial, genome: Genome, seed: int
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The weights ``trial`` inherits and the attributes that record it; a
        failure to inherit is a warning, never the trial's failure."""
        assert self._bank is not None
        try:
            return self._bank.start_state(
                trial,
                genome,
                n_features=self.n_features,
                n_outputs=self.n_classes,
                seed=seed,
                input_shape=self.input_shape,
            )
        except Exception as exc:
            logger.warning("Trial %d starts fresh: inheriting failed: %s", trial.number, exc)
            return None, {WARNING_ATTR: f"inheriting failed, started fresh: {exc!r}"}

    def refit_start(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any] | None:
        """The weights finished ``trial`` started from, for its refit: ``None`` unless
        it inherited them (then a refit from fresh weights would not repeat the
        training its parents gave it) and its parents' weights are still stored."""
        if self._bank is None or not inherited_start(trial):
            return None
        genome = Genome.from_json(trial.user_attrs["genome"])
        try:
            state = self._bank.refit_state(
                study,
                trial,
                genome,
                n_features=self.n_features,
                n_outputs=self.n_classes,
                seed=self.trial_seed(trial.number),
                input_shape=self.input_shape,
            )
        except Exception as exc:
            state, why = None, repr(exc)
        else:
            why = "its parents' weights are no longer all stored"
        if state is None:
            logger.warning(
                "Refit: trial #%d started from its parents' weights, but %s; its genome "
                "trains from fresh weights, which need not reach the trial's score.",
                trial.number,
                why,
            )
        return state

    def _keep_weights(self, run: TrialRun, model: Any) -> None:
        """Store the trial's trained weights (a failure is a warning on the trial)."""
        if self._bank is None:
            return
        try:
            run.extra_attrs.update(self._bank.save(run.trial, run.genome, model))
        except Exception as exc:
            logger.warning("Trial %d: its weights were not stored: %s", run.trial.number, exc)
            run.extra_attrs[WARNING_ATTR] = f"weights not stored: {exc!r}"

    def _retain_weights(self, runs: Sequence[TrialRun]) -> None:
        if self._bank is None or not runs:
            return
        saved = {
            run.trial.number: run.extra_attrs[WEIGHTS_ATTR]
            for run in runs
            if WEIGHTS_ATTR in run.extra_attrs
        }
        try:
            self._bank.retain(runs[0].trial.study, saved)
        except Exception as exc:  # retention is housekeeping: the trials stand
            logger.warning("Removing old weights failed: %s", exc)

    def _holdout(self, runs: list[TrialRun]) -> None:
        split = self._splits[0]

        def report(member: int, epoch: int, accuracy: float) -> None:
            runs[member].report_epoch(epoch, accuracy)

        try:
            results: Sequence[MemberOutcome | None] = self._train(runs, split, report)
        except StopRequested as stop:
            # Record the members that finished before the stop; the caller tells them.
            partial = getattr(stop, "partial_outcomes", None) or [None] * len(runs)
            self._finish_holdout(runs, partial, split)
            raise
        self._finish_holdout(runs, results, split)

    def _finish_holdout(
        self, runs: list[TrialRun], results: Sequence[MemberOutcome | None], split: Split
    ) -> None:
        for run, result in zip(runs, results, strict=True):
            if result is None:  # stopped before it finished
                continue
            if isinstance(result, NotTrained):  # asked with others; the time ran out first
                run.prune(f"Not trained: {result}", epochs_run=0, stop_reason="time_limit")
                continue
            if isinstance(result, Exception):
                run.error = result
                continue
            run.value = self._score(result, split)
            self._keep_weights(run, result.model)
            run.finish(
                n_parameters=result.n_parameters,
                train_seconds=result.train_seconds,
                best_epoch=result.best_epoch,
                epochs_run=result.epochs_run,
                stop_reason=result.stop_reason,
                val_loss=finite_or_none(result.best_val_loss),
                **{self.task.score_attr: result.best_score},
            )

    def _kfold(self, runs: list[TrialRun], end: float | None) -> None:
        """Each fold in turn. A time budget (until ``end``, ``time.perf_counter()``)
        covers all folds: each fold gets an equal share of what is left."""
        folds = [Folds(score_attr=self.task.score_attr) for _ in runs]
        live = list(range(len(runs)))
        for fold, split in enumerate(self._splits, start=1):
            if end is not None:
                share = max(end - time.perf_counter(), 1e-3) / (len(self._splits) - fold + 1)
                for index in live:
                    runs[index].config = replace(runs[index].config, max_train_time=share)
            results = self._train([runs[i] for i in live], split, None)
            still: list[int] = []
            for index, result in zip(live, results, strict=True):
                if isinstance(result, NotTrained):  # the time ran out before this fold
                    runs[index].prune(
                        f"Not trained in fold {fold}: {result}", stop_reason="time_limit"
                    )
                    continue
                if isinstance(result, Exception):  # pragma: no cover - no callback to raise
                    runs[index].error = result
                    continue
                folds[index].add(result, self._score(result, split))
                if fold == 1:
                    self._keep_weights(runs[index], result.model)
                running = statistics.fmean(folds[index].scores)
                last = fold == len(self._splits)
                if runs[index].report_fold(fold, running, last=last):
                    folds[index].reasons.append("pruned")
                    runs[index].prune(
                        f"Pruned after fold {fold} (mean score {running:.4f}).",
                        **folds[index].attrs(),
                    )
                else:
                    still.append(index)
            live = still
        for index in live:
            runs[index].value = statistics.fmean(folds[index].scores)
            runs[index].finish(n_parameters=folds[index].n_parameters, **folds[index].attrs())

    def _train(
        self,
        runs: Sequence[TrialRun],
        split: Split,
        on_epoch_end: MemberCallback | None,
    ) -> list[MemberOutcome]:
        results = train_population(
            [run.genome for run in runs],
            split.X_train,
            split.y_train,
            split.X_val,
            split.y_val,
            n_classes=self.n_classes,
            configs=[run.config for run in runs],
            on_epoch_end=on_epoch_end,
            input_shape=self.input_shape,
            initial_states=[run.initial_state for run in runs],
            skip_late=True,
        )
        for result in results:
            if isinstance(result, TrainResult) and result.diverged:
                logger.info(
                    "Genome training diverged (%s); scoring the weights of epoch %d.",
                    result.diverged_reason,
                    result.best_epoch,
                )
        return results

    def _score(self, result: TrainResult, split: Split) -> float:
        if self._scorer is None:
            return float(result.best_score)
        from evohpo.search.scored import ScoredNetwork, ScoredRegressor

        if split.target is not None:  # regression: scored on the targets' own scale
            assert split.y_val_raw is not None
            y_val = split.y_val_raw
            truth = y_val[:, 0] if y_val.shape[1] == 1 else y_val
            regressor = ScoredRegressor(result.model, split.target)
            return float(self._scorer(regressor, split.X_val, truth))
        network = ScoredNetwork(result.model, self.n_classes)
        try:
            return float(self._scorer(network, split.X_val, split.y_val))
        except ValueError as exc:
            missing = sorted(set(range(self.n_classes)) - set(np.unique(split.y_val).tolist()))
            if not missing:
                raise
            raise InvalidParameterError(
                f"The scorer {self.scoring!r} failed on validation rows that hold no sample "
                f"of the class(es) {missing} (classes encoded as 0..{self.n_classes - 1}): "
                f"{exc} A class needs 2 samples to be validated by a holdout and as many "
                "as the folds with cv; give it more samples, or use a scoring that works "
                "on a subset of the classes, such as 'accuracy'."
            ) from exc

    # -- refit ---------------------------------------------------------------------------
    def fit_genome(
        self,
        genome: Genome,
        *,
        seed: int,
        epochs: int | None = None,
        initial_state: Mapping[str, Any] | None = None,
    ) -> TrainResult:
        """Train ``genome`` on all the data (``X``, plus ``validation_data`` if given).

        Parameters
        ----------
        genome : Genome
            The genome to train, usually the best trial's.
        seed : int
            Training seed.
        epochs : int, optional
            How many epochs to train, with no early stopping, e.g. derived from
            the best trial's ``"best_epoch"`` user attribute (the estimator scales
            it by ``n_samples / train_size``: more rows, more epochs). When
            omitted, the number is found first by training on the first
            training/validation split with early stopping (one extra training).
        initial_state : state dict, optional
            Weights to start from instead of the seed's: what a trial that
            inherited its parents' weights started from (:meth:`refit_start`).

        Returns
        -------
        TrainResult
            Its ``model`` expects inputs transformed by :meth:`standardizer`. As
            every row is used for training, the "validation" scores in it are
            measured on the training data; the weights kept are those of the
            epoch with the highest training accuracy (the lowest training loss
            breaking ties), usually the last one.
        """
        if not isinstance(genome, Genome):
            raise_invalid("genome", "GenomeObjective.fit_genome", "a Genome", genome)
        seed = check_int(seed, "seed", "GenomeObjective.fit_genome", low=0, high=2**64 - 1)
        if epochs is None:
            split = self._splits[0]
            probe = train_classifier(
                genome,
                split.X_train,
                split.y_train,
                split.X_val,
                split.y_val,
                n_classes=self.n_classes,
                config=replace(self.train_config, seed=seed),
                input_shape=self.input_shape,
                initial_state=initial_state,
            )
            epochs = max(1, probe.best_epoch)
        epochs = check_int(epochs, "epochs", "GenomeObjective.fit_genome", low=1)
        scaled, y = self._all_training_data()
        config = replace(self.train_config, seed=seed, max_epochs=epochs, patience=None)
        return train_classifier(
            genome,
            scaled,
            y,
            scaled,
            y,
            n_classes=self.n_classes,
            config=config,
            input_shape=self.input_shape,
            initial_state=initial_state,
        )

    def fit_genomes(
        self,
        genomes: Sequence[Genome],
        *,
        seeds: Sequence[int],
        epochs: Sequence[int],
        max_train_time: float | None = None,
        initial_states: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[TrainResult]:
        """Train several genomes on all the data at once, each for its own epochs.

        What :meth:`fit_genome` does for each, with the dense genomes trained as
        stacks (:func:`~evohpo.training.population.train_population`): an
        ensemble's refit. ``max_train_time`` (seconds, for all of them) cuts
        the training short, each member keeping the weights it has then.
        ``initial_states`` (one per genome, ``None`` for the seed's weights) as
        in :meth:`fit_genome`.
        """
        owner = "GenomeObjective.fit_genomes"
        for index, genome in enumerate(genomes):
            if not isinstance(genome, Genome):
                raise_invalid(f"genomes[{index}]", owner, "a Genome", genome)
        if not (len(seeds) == len(epochs) == len(genomes)):
            raise_invalid("seeds", owner, f"{len(genomes)} seeds and epochs", (seeds, epochs))
        scaled, y = self._all_training_data()
        configs = [
            replace(
                self.train_config,
                seed=check_int(seed, "seeds", owner, low=0, high=2**64 - 1),
                max_epochs=check_int(n, "epochs", owner, low=1),
                patience=None,
                max_train_time=max_train_time,
            )
            for seed, n in zip(seeds, epochs, strict=True)
        ]
        results = train_population(
            list(genomes),
            scaled,
            y,
            scaled,
            y,
            n_classes=self.n_classes,
            configs=configs,
            input_shape=self.input_shape,
            initial_states=initial_states,
        )
        # Without a callback no member ends in an exception.
        return [result for result in results if isinstance(result, TrainResult)]


# -- helpers -------------------------------------------------------------------------------
def _targets(y: Any, name: str, n_rows: int, regression: bool) -> npt.NDArray[Any]:
    """Class indices (int64), or for regression a float64 matrix of finite targets."""
    if not regression:
        return check_labels(y, name, _OWNER, n_rows=n_rows)
    try:
        array = np.asarray(y)
    except (TypeError, ValueError, RuntimeError):
        raise_invalid(name, _OWNER, "an array of numbers", y)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    targets = check_features(array, name, _OWNER, dtype=np.float64)
    if targets.shape[0] != n_rows:
        expected = f"an array of {n_rows} rows"
        raise_invalid(name, _OWNER, expected, f"an array of shape {np.shape(y)}")
    return targets


def _validation_data(
    value: Any, n_features: int, regression: bool = False
) -> tuple[FloatArray, npt.NDArray[Any]] | None:
    """``validation_data`` as checked arrays, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise_invalid("validation_data", _OWNER, "a pair (X_val, y_val) or None", value)
    X_val = check_features(
        value[0], "validation_data[0]", _OWNER, n_features=n_features, dtype=np.float64
    )
    y_val = _targets(value[1], "validation_data[1]", X_val.shape[0], regression)
    return X_val, y_val


def _input_shape(value: Any, space: SearchSpace, n_features: int) -> tuple[int, ...] | None:
    """``input_shape`` (or the space's) checked against the space and the features."""
    shape = None if value is None else check_input_shape(value, "input_shape", _OWNER)
    if shape is not None and space.input_shape is not None and shape != space.input_shape:
        expected = f"the space's input_shape {space.input_shape} (or None)"
        raise_invalid("input_shape", _OWNER, expected, shape)
    if shape is None:
        shape = space.input_shape
    if shape is not None and math.prod(shape) != n_features:
        raise InvalidParameterError(
            f"The 'input_shape' parameter of {_OWNER} must have as many elements as X has "
            f"features: {shape} holds {math.prod(shape)}, X has {n_features} features."
        )
    return shape
