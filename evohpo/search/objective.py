"""The Optuna objective for a classification data set ``(X, y)``.

This is the one module that knows both an Optuna trial and a torch model: a
trial asks for a genome through :func:`~evohpo.suggest_genome` (so any sampler
can answer), the genome is trained by :func:`~evohpo.training.train.train_classifier`
and the trial's value is the validation score, to be maximised.

Validation is a stratified holdout split by default, stratified k-fold when
``cv`` is given, or the caller's own ``validation_data``. Features are
standardised (mean and standard deviation) with statistics of each training
split only, so no validation row leaks into training.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
import optuna
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import get_scorer, get_scorer_names

from evohpo._random import derive_seed
from evohpo._validation import check_float, check_int, raise_invalid
from evohpo.evolution.genome import Genome
from evohpo.evolution.space import SearchSpace
from evohpo.evolution.suggest import suggest_genome
from evohpo.exceptions import InvalidParameterError
from evohpo.training.train import TrainConfig, TrainResult, predict_proba, train_classifier

__all__ = [
    "GenomeObjective",
    "Standardizer",
    "Scorer",
    "resolve_scoring",
]

logger = logging.getLogger("evohpo")

_OWNER = "GenomeObjective"

#: A scikit-learn scorer: ``scorer(estimator, X, y) -> float``, larger is better.
Scorer = Callable[[Any, Any, Any], float]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# -- scoring -------------------------------------------------------------------------------
def resolve_scoring(scoring: Any, owner: str = _OWNER) -> Scorer | None:
    """The scorer that ``scoring`` names; ``None`` stands for plain accuracy.

    Parameters
    ----------
    scoring : str or callable
        ``"accuracy"``, any name of :func:`sklearn.metrics.get_scorer_names`
        (``"balanced_accuracy"``, ``"f1_macro"``, ``"neg_log_loss"``, ...), or a
        scikit-learn scorer ``scorer(estimator, X, y)`` such as
        :func:`sklearn.metrics.make_scorer` returns.
    owner : str
        Named in the error message.

    Returns
    -------
    callable or None
        ``None`` for ``"accuracy"``: the trainer's own validation accuracy is the
        score, with no extra pass over the data.

    Examples
    --------
    >>> resolve_scoring("accuracy") is None
    True
    >>> resolve_scoring("f1_macro")  # doctest: +ELLIPSIS
    make_scorer(f1_score, ...average=macro)
    """
    if isinstance(scoring, str):
        if scoring == "accuracy":
            return None
        try:
            return get_scorer(scoring)  # type: ignore[no-any-return]
        except ValueError:
            pass
        examples = ", ".join(
            repr(n)
            for n in ("accuracy", "balanced_accuracy", "f1_macro", "neg_log_loss", "roc_auc_ovr")
        )
        raise_invalid(
            "scoring",
            owner,
            f"a scorer name of sklearn.metrics.get_scorer_names() ({examples}, ... "
            f"{len(get_scorer_names())} in all) or a callable scorer(estimator, X, y)",
            scoring,
        )
    if callable(scoring):
        return scoring  # type: ignore[no-any-return]
    raise_invalid("scoring", owner, "a str or a callable scorer(estimator, X, y)", scoring)


class _ScoredNetwork(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A trained network seen as a fitted classifier over the classes ``0..n-1``.

    Only for handing to scikit-learn scorers, which call ``predict`` or
    ``predict_proba`` on an estimator.
    """

    def __init__(self, model: torch.nn.Module | None = None, n_classes: int = 2) -> None:
        self.model = model
        self.n_classes = n_classes

    def __sklearn_is_fitted__(self) -> bool:
        return True

    @property
    def classes_(self) -> IntArray:
        return np.arange(self.n_classes, dtype=np.int64)

    def predict_proba(self, X: Any) -> FloatArray:
        assert self.model is not None
        return predict_proba(self.model, X)

    def predict(self, X: Any) -> IntArray:
        labels: IntArray = self.predict_proba(X).argmax(axis=1).astype(np.int64)
        return labels


# -- standardisation -----------------------------------------------------------------------
@dataclass(frozen=True)
class Standardizer:
    """Per-feature mean and scale; constant features keep a scale of 1.

    Examples
    --------
    >>> import numpy as np
    >>> s = Standardizer.fit(np.array([[0.0, 5.0], [2.0, 5.0]]))
    >>> s.transform(np.array([[1.0, 5.0]])).tolist()
    [[0.0, 0.0]]
    """

    mean: FloatArray
    scale: FloatArray

    @classmethod
    def fit(cls, X: npt.ArrayLike) -> Standardizer:
        """Statistics of the rows of ``X`` (computed in float64).

        Any finite data work, values near the float64 limit included: the
        statistics are computed on the data divided by each feature's largest
        magnitude, then scaled back.
        """
        data = np.asarray(X, dtype=np.float64)
        peak = np.abs(data).max(axis=0)
        peak[peak == 0.0] = 1.0
        mean = (data / peak).mean(axis=0) * peak
        scale = (data / peak).std(axis=0) * peak
        # Constant (or numerically constant) features: centre them, do not blow them up.
        tiny = scale <= np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
        scale[tiny] = 1.0
        return cls(mean=mean, scale=scale)

    def transform(self, X: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """``(X - mean) / scale`` as a C-contiguous float32 array (a new array).

        Values beyond float32's range (rows far outside the fitted data) are
        clipped to it, so the result is finite wherever ``X`` is.
        """
        data = np.asarray(X, dtype=np.float64)
        # Halves first: the difference of two finite float64 values can overflow.
        with np.errstate(over="ignore"):
            out = (data * 0.5 - self.mean * 0.5) / self.scale * 2.0
        limit = float(np.finfo(np.float32).max)
        np.clip(out, -limit, limit, out=out)
        return np.ascontiguousarray(out, dtype=np.float32)


@dataclass(frozen=True)
class _Split:
    """One training/validation pair, standardised with its training statistics."""

    X_train: npt.NDArray[np.float32]
    y_train: IntArray
    X_val: npt.NDArray[np.float32]
    y_val: IntArray


# -- the objective -------------------------------------------------------------------------
class GenomeObjective:
    """Callable Optuna objective: suggest a genome, train it, return its validation score.

    The value of a trial is to be maximised: the validation accuracy, or the
    ``scoring`` metric of the best epoch's weights.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Finite numeric features.
    y : array-like of shape (n_samples,)
        Integer class indices ``0 .. n_classes - 1`` (encoding labels is the
        caller's job, as :class:`~evohpo.EvoSearchClassifier` does).
    space : SearchSpace, optional
        Ranges and choices of the genome; ``SearchSpace()`` by default.
    train_config : TrainConfig, optional
        Epochs, patience and device; its ``seed`` is replaced per trial.
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
    scoring : str or callable, default="accuracy"
        See :func:`resolve_scoring`. Early stopping, the choice of the best epoch
        and the per-epoch reports to the pruner always use validation accuracy;
        ``scoring`` decides the trial's value.
    n_classes : int, optional
        Number of classes; ``max(y) + 1`` (at least 2) by default.

    Notes
    -----
    *Pruning.* With a holdout split (or ``validation_data``), the validation
    accuracy is reported after every epoch (``step`` = epoch, from 1), and the
    trial is pruned as soon as ``trial.should_prune()`` says so. With ``cv``, the
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
        scoring: str | Scorer = "accuracy",
        n_classes: int | None = None,
    ) -> None:
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
        self.scoring = scoring
        self._scorer = resolve_scoring(scoring, _OWNER)

        self.X = _as_features(X, "X")
        self.y = _as_labels(y, "y", self.X.shape[0])
        val: tuple[FloatArray, IntArray] | None = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise_invalid(
                    "validation_data", _OWNER, "a pair (X_val, y_val) or None", validation_data
                )
            X_val = _as_features(validation_data[0], "validation_data[0]", self.X.shape[1])
            val = (X_val, _as_labels(validation_data[1], "validation_data[1]", X_val.shape[0]))
        self.validation_data = val

        highest = int(self.y.max())
        if val is not None:
            highest = max(highest, int(val[1].max()))
        if n_classes is None:
            n_classes = max(2, highest + 1)
        self.n_classes = check_int(n_classes, "n_classes", _OWNER, low=max(2, highest + 1))
        self._splits = self._make_splits()

    # -- data ----------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        """Number of input features."""
        return int(self.X.shape[1])

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

    def _make_splits(self) -> list[_Split]:
        if self.validation_data is not None:
            pairs = [(self.X, self.y, *self.validation_data)]
        else:
            rng = np.random.default_rng(derive_seed(self.seed, "split"))
            if self.cv is None:
                train, val = stratified_holdout(self.y, self.validation_fraction, rng)
                index_pairs = [(train, val)]
            else:
                index_pairs = stratified_kfold(self.y, self.cv, rng)
            pairs = [
                (self.X[train], self.y[train], self.X[val], self.y[val])
                for train, val in index_pairs
            ]
        splits = []
        for X_train, y_train, X_val, y_val in pairs:
            scaler = Standardizer.fit(X_train)
            splits.append(
                _Split(scaler.transform(X_train), y_train, scaler.transform(X_val), y_val)
            )
        return splits

    def standardizer(self) -> Standardizer:
        """Statistics of all the data :meth:`fit_genome` trains on.

        The model :meth:`fit_genome` returns expects inputs transformed by
        ``objective.standardizer().transform(X)``.
        """
        return Standardizer.fit(self._all_data()[0])

    def _all_data(self) -> tuple[FloatArray, IntArray]:
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
        genome = suggest_genome(trial, self.space)
        config = replace(self.train_config, seed=self.trial_seed(trial.number))
        trial.set_user_attr("genome", genome.to_json())
        trial.set_user_attr("n_parameters", genome.n_parameters(self.n_features, self.n_classes))
        started = time.perf_counter()
        if len(self._splits) == 1:
            return self._holdout(trial, genome, config, started)
        return self._kfold(trial, genome, config, started)

    def _holdout(
        self, trial: optuna.Trial, genome: Genome, config: TrainConfig, started: float
    ) -> float:
        split = self._splits[0]
        best = [0, -math.inf]  # epoch, accuracy: recorded should the trial be pruned

        def report(epoch: int, accuracy: float) -> None:
            if accuracy > best[1]:
                best[:] = [epoch, accuracy]
            trial.report(accuracy, epoch)
            if trial.should_prune():
                _set_attrs(
                    trial,
                    train_seconds=time.perf_counter() - started,
                    best_epoch=int(best[0]),
                    epochs_run=epoch,
                    stop_reason="pruned",
                    val_accuracy=float(best[1]),
                )
                raise optuna.TrialPruned(f"Pruned after epoch {epoch} (accuracy {accuracy:.4f}).")

        result = self._train(genome, split, config, report)
        score = self._score(result, split)
        _set_attrs(
            trial,
            n_parameters=result.n_parameters,
            train_seconds=time.perf_counter() - started,
            best_epoch=result.best_epoch,
            epochs_run=result.epochs_run,
            stop_reason=result.stop_reason,
            val_accuracy=result.best_score,
            val_loss=_finite_or_none(result.best_val_loss),
        )
        return score

    def _kfold(
        self, trial: optuna.Trial, genome: Genome, config: TrainConfig, started: float
    ) -> float:
        scores: list[float] = []
        epochs: list[int] = []
        accuracies: list[float] = []
        losses: list[float] = []
        reasons: list[str] = []
        epochs_run = 0
        n_parameters = 0
        for fold, split in enumerate(self._splits, start=1):
            result = self._train(genome, split, config, None)
            scores.append(self._score(result, split))
            epochs.append(result.best_epoch)
            accuracies.append(result.best_score)
            losses.append(result.best_val_loss)
            reasons.append(result.stop_reason)
            epochs_run += result.epochs_run
            n_parameters = result.n_parameters
            running = statistics.fmean(scores)
            trial.report(running, fold)
            if fold < len(self._splits) and trial.should_prune():
                reasons.append("pruned")
                _set_attrs(
                    trial,
                    **_fold_attrs(scores, epochs, accuracies, losses, reasons, epochs_run, started),
                )
                raise optuna.TrialPruned(f"Pruned after fold {fold} (mean score {running:.4f}).")
        _set_attrs(
            trial,
            n_parameters=n_parameters,
            **_fold_attrs(scores, epochs, accuracies, losses, reasons, epochs_run, started),
        )
        return statistics.fmean(scores)

    def _train(
        self,
        genome: Genome,
        split: _Split,
        config: TrainConfig,
        on_epoch_end: Callable[[int, float], None] | None,
    ) -> TrainResult:
        result = train_classifier(
            genome,
            split.X_train,
            split.y_train,
            split.X_val,
            split.y_val,
            n_classes=self.n_classes,
            config=config,
            on_epoch_end=on_epoch_end,
        )
        if result.diverged:
            logger.info(
                "Genome training diverged (%s); scoring the weights of epoch %d.",
                result.diverged_reason,
                result.best_epoch,
            )
        return result

    def _score(self, result: TrainResult, split: _Split) -> float:
        if self._scorer is None:
            return float(result.best_score)
        network = _ScoredNetwork(result.model, self.n_classes)
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
    def fit_genome(self, genome: Genome, *, seed: int, epochs: int | None = None) -> TrainResult:
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
            probe = self._train(
                genome, self._splits[0], replace(self.train_config, seed=seed), None
            )
            epochs = max(1, probe.best_epoch)
        epochs = check_int(epochs, "epochs", "GenomeObjective.fit_genome", low=1)
        X, y = self._all_data()
        scaled = self.standardizer().transform(X)
        config = replace(self.train_config, seed=seed, max_epochs=epochs, patience=None)
        return train_classifier(
            genome, scaled, y, scaled, y, n_classes=self.n_classes, config=config
        )


# -- splits --------------------------------------------------------------------------------
def stratified_holdout(
    y: IntArray, fraction: float, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Training and validation row indices, ``fraction`` of every class validating.

    Every class keeps at least one training row, and every class with two rows
    or more has at least one validation row; a class with a single row has
    none in validation. At least one row validates.

    Examples
    --------
    >>> import numpy as np
    >>> train, val = stratified_holdout(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), 0.5,
    ...                                 np.random.default_rng(0))
    >>> len(train), len(val)
    (5, 5)
    """
    train: list[IntArray] = []
    val: list[IntArray] = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        rng.shuffle(rows)
        # Every class that can spare a row validates: scorers such as
        # neg_log_loss need every class among the validation labels.
        n_val = min(max(1, round(fraction * len(rows))), len(rows) - 1)
        val.append(rows[:n_val])
        train.append(rows[n_val:])
    if sum(len(v) for v in val) == 0:
        largest = max(range(len(train)), key=lambda i: len(train[i]))
        if len(train[largest]) < 2:
            raise InvalidParameterError(
                f"A validation split needs a class with at least 2 samples; got {len(y)} "
                "samples, one of each class."
            )
        val[largest], train[largest] = train[largest][:1], train[largest][1:]
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def stratified_kfold(
    y: IntArray, n_folds: int, rng: np.random.Generator
) -> list[tuple[IntArray, IntArray]]:
    """``n_folds`` (train, validation) index pairs; every class spread over the folds.

    Rows are dealt to the folds in turn, class after class in a shuffled order,
    so fold sizes differ by at most one and a class with fewer rows than folds
    is missing from some validation folds (no warning, no error).
    """
    if len(y) < n_folds:
        raise_invalid("cv", _OWNER, f"an int <= the number of samples ({len(y)})", n_folds)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    fold_of = np.empty(len(y), dtype=np.int64)
    fold_of[order] = np.arange(len(y)) % n_folds
    return [(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(n_folds)]


# -- helpers -------------------------------------------------------------------------------
def _set_attrs(trial: optuna.Trial, **attrs: Any) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _fold_attrs(
    scores: list[float],
    epochs: list[int],
    accuracies: list[float],
    losses: list[float],
    reasons: list[str],
    epochs_run: int,
    started: float,
) -> dict[str, Any]:
    if "pruned" in reasons:
        reason = "pruned"
    elif "diverged" in reasons:
        reason = "diverged"
    else:
        reason = Counter(reasons).most_common(1)[0][0]
    return {
        "train_seconds": time.perf_counter() - started,
        "best_epoch": int(statistics.median_low(epochs)),
        "epochs_run": epochs_run,
        "stop_reason": reason,
        "val_accuracy": statistics.fmean(accuracies),
        "val_loss": _finite_or_none(statistics.fmean(losses)),
        "fold_scores": list(scores),
        "fold_best_epochs": list(epochs),
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _invalid(name: str, expected: str, got: str) -> NoReturn:
    # The package's message template, with a description instead of an array's repr.
    raise InvalidParameterError(
        f"The {name!r} parameter of {_OWNER} must be {expected}. Got {got} instead."
    )


def _as_features(X: Any, name: str, n_features: int | None = None) -> FloatArray:
    try:
        array = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        _invalid(name, "a 2-D array of numbers", f"a {type(X).__name__}")
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        _invalid(name, "a non-empty 2-D array", f"shape {array.shape}")
    if n_features is not None and array.shape[1] != n_features:
        _invalid(name, f"an array with {n_features} columns", f"shape {array.shape}")
    if not np.isfinite(array).all():
        _invalid(name, "finite", "an array with NaN or infinite values")
    return array


def _as_labels(y: Any, name: str, n_rows: int) -> IntArray:
    array = np.asarray(y)
    if array.dtype.kind not in "iu" or array.shape != (n_rows,):
        _invalid(
            name,
            f"a 1-D integer array of {n_rows} class indices",
            f"dtype {array.dtype}, shape {array.shape}",
        )
    if array.min() < 0:
        _invalid(name, "class indices >= 0", f"a minimum of {array.min()}")
    return array.astype(np.int64)
