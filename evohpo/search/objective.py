"""The Optuna objective for a classification data set ``(X, y)``.

This is where an Optuna trial meets a torch model: a trial asks for a genome
through :func:`~evohpo.suggest_genome` (so any sampler can answer), the genome
is trained by :func:`~evohpo.training.loop.train_classifier` and the trial's
value is the validation score (:mod:`evohpo.search.scoring`), to be maximised.
The training/validation splits come from :mod:`evohpo.search.splits`.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import optuna

from evohpo._random import derive_seed
from evohpo._validation import check_float, check_input_shape, check_int, raise_invalid
from evohpo.evolution.genome import Genome
from evohpo.evolution.space import SearchSpace
from evohpo.evolution.suggest import suggest_genome
from evohpo.exceptions import InvalidParameterError
from evohpo.search.scoring import ScoredNetwork, Scorer, resolve_scoring
from evohpo.search.splits import FloatArray, IntArray, Split, Standardizer, make_splits
from evohpo.training.arrays import check_features, check_labels
from evohpo.training.config import TrainConfig, TrainResult
from evohpo.training.loop import train_classifier

__all__ = ["GenomeObjective"]

logger = logging.getLogger("evohpo")

_OWNER = "GenomeObjective"


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
        See :func:`~evohpo.search.scoring.resolve_scoring`. Early stopping, the
        choice of the best epoch and the per-epoch reports to the pruner always
        use validation accuracy; ``scoring`` decides the trial's value.
    n_classes : int, optional
        Number of classes; ``max(y) + 1`` (at least 2) by default.
    input_shape : tuple of int, optional
        ``(channels, length)`` or ``(channels, height, width)`` of the rows of
        ``X``, which stay flat (the model reshapes them); its product must be
        the number of features. Genomes with a convolutional body are built
        with it. ``space.input_shape`` by default; when both are given they
        must agree.

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
        input_shape: Sequence[int] | None = None,
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

        self.X: FloatArray = check_features(X, "X", _OWNER, dtype=np.float64)
        self.y = check_labels(y, "y", _OWNER, n_rows=self.X.shape[0])
        self.validation_data = _validation_data(validation_data, self.X.shape[1])
        self.input_shape = _input_shape(input_shape, self.space, self.X.shape[1])
        val = self.validation_data
        if cv is not None and val is None and cv > len(self.y):
            expected = f"an int <= the number of samples ({len(self.y)})"
            raise_invalid("cv", _OWNER, expected, cv)

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
        trial.set_user_attr("n_parameters", genome.n_parameters(self._inputs, self.n_classes))
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
        split: Split,
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
            input_shape=self.input_shape,
        )
        if result.diverged:
            logger.info(
                "Genome training diverged (%s); scoring the weights of epoch %d.",
                result.diverged_reason,
                result.best_epoch,
            )
        return result

    def _score(self, result: TrainResult, split: Split) -> float:
        if self._scorer is None:
            return float(result.best_score)
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
            genome,
            scaled,
            y,
            scaled,
            y,
            n_classes=self.n_classes,
            config=config,
            input_shape=self.input_shape,
        )


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


def _validation_data(value: Any, n_features: int) -> tuple[FloatArray, IntArray] | None:
    """``validation_data`` as checked arrays, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise_invalid("validation_data", _OWNER, "a pair (X_val, y_val) or None", value)
    X_val = check_features(
        value[0], "validation_data[0]", _OWNER, n_features=n_features, dtype=np.float64
    )
    y_val = check_labels(value[1], "validation_data[1]", _OWNER, n_rows=X_val.shape[0])
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
