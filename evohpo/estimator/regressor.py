"""EvoSearchRegressor: the architecture search for continuous targets."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from sklearn.base import RegressorMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import validate_data

from evohpo._validation import raise_invalid
from evohpo.estimator.base import _EvoSearchBase
from evohpo.estimator.params import Settings, check_input_width
from evohpo.estimator.refit import mean_prediction
from evohpo.exceptions import InvalidParameterError
from evohpo.search.splits import Standardizer
from evohpo.training.task import TaskName

__all__ = ["EvoSearchRegressor"]


class EvoSearchRegressor(RegressorMixin, _EvoSearchBase):  # type: ignore[misc]
    """Neural-architecture and hyperparameter search for a neural network regressor.

    The search of :class:`~evohpo.EvoSearchClassifier` (the same genomes,
    samplers, study, resume, worker processes, time budget, weight inheritance
    and ensemble refit, convolutional bodies with ``input_shape``), for numeric
    targets: every network has one linear output per target and trains on the
    mean squared error of the targets standardised inside the estimator
    (with statistics of each split's training rows, of all the rows for the
    refit), so that every target weighs alike whatever its unit.
    Predictions are mapped back to the targets' scale; the ensemble's
    prediction is the average of its members', and a trial whose validation
    mean squared error exceeds three times the best member's is no member
    (:data:`~evohpo.estimator.refit.MAX_MSE_RATIO`: averaging it in cannot
    beat the best alone), so a short search may refit fewer than
    ``ensemble_size`` networks.

    Parameters
    ----------
    n_trials, timeout, sampler, search_space, input_shape, max_epochs, storage, \
study_name, resume, n_jobs, batch_trials, inherit_weights, weights_dir, \
random_state, verbose, refit, ensemble_size, device
        As for :class:`~evohpo.EvoSearchClassifier`.
    patience : int or None, default=20
        Early stopping: a training stops after this many epochs without a lower
        validation mean squared error. ``None`` trains every network
        ``max_epochs`` epochs.
    validation_fraction : float, default=0.2
        Share of the rows (shuffled) held out to score the trials.
    cv : int, optional
        Score every trial by shuffled ``cv``-fold cross-validation instead
        (``cv`` trainings per trial). Worth it on a few hundred rows, where one
        small validation split picks genomes by its noise (on diabetes,
        docs/benchmarks.md "Regression").
    scoring : str or callable, optional
        The trials' value (``None``: ``"r2"``): the name of a scikit-learn
        regression scorer (``"r2"``, ``"neg_mean_squared_error"``,
        ``"neg_mean_absolute_error"``, ...) or a scorer
        ``scorer(estimator, X, y)``; scorers see predictions and targets on the
        targets' own scale, a vector for one target. Early stopping, the best
        epoch and pruning use the validation mean squared error (of the
        standardised targets) whatever the scoring.
    pruner : optuna.pruners.BasePruner, optional
        Stops unpromising trainings early, from the negative validation mean
        squared error reported after every epoch (the running score of every
        fold with ``cv``). ``None``: no pruning.

    Attributes
    ----------
    n_outputs_ : int
        Number of targets.
    n_features_in_, feature_names_in_, best_params_, best_score_, best_genome_, \
best_index_, best_model_, ensemble_models_, ensemble_genomes_, ensemble_trials_, \
refit_epochs_, refit_time_, study_, n_trials_
        As for :class:`~evohpo.EvoSearchClassifier`; ``best_model_`` predicts
        standardised targets (use :meth:`predict`).
    cv_results_ : dict of lists
        As for the classifier, with ``val_neg_mse`` (the negative validation
        mean squared error of the standardised targets) instead of
        ``val_accuracy``; ``val_loss`` is that mean squared error.

    Notes
    -----
    A target of integers or booleans (a class-like target) is taken as
    numbers, as scikit-learn's regressors do. NaN or infinite targets are
    refused with a ``ValueError``.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from evohpo import EvoSearchRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = EvoSearchRegressor(n_trials=2, max_epochs=5, random_state=0, device="cpu")
    >>> reg.fit(X, y).predict(X[:3]).shape
    (3,)
    """

    _task: ClassVar[TaskName] = "regression"

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    # -- the targets -----------------------------------------------------------------------
    def _check_data(
        self, X: Any, y: Any, settings: Settings
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], None]:
        """``X`` as floats and ``y`` as a float matrix, one column per target."""
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        check_input_width(settings.input_shape, X.shape[1], settings.owner)
        targets = np.asarray(y, dtype=np.float64)
        self._y_ndim = targets.ndim  # predictions take the shape of the targets
        if targets.ndim == 1:
            targets = targets.reshape(-1, 1)
        if settings.cv is not None and settings.cv > len(targets):
            expected = f"an int <= the number of samples ({len(targets)})"
            raise_invalid("cv", settings.owner, expected, settings.cv)
        if settings.scoring == "r2":
            _check_r2_rows(len(targets), settings)
        return X, np.ascontiguousarray(targets), None

    def _set_targets(self, classes: npt.NDArray[Any] | None, y: npt.NDArray[Any]) -> None:
        self.n_outputs_ = int(y.shape[1])

    def _n_outputs(self) -> int:
        return int(self.n_outputs_)

    # -- prediction ------------------------------------------------------------------------
    @available_if(_EvoSearchBase._check_refit)  # type: ignore[untyped-decorator]  # sklearn is untyped
    def predict(self, X: Any) -> npt.NDArray[np.float64]:
        """The ensemble's mean prediction of every row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs_)
            A vector when ``fit`` saw a vector of targets.
        """
        X = self._scaled(X)  # first: it checks that the estimator is fitted
        target: Standardizer | None = self._target_scaler
        assert target is not None  # set by every regression refit
        outputs = mean_prediction(self.ensemble_models_, X, target)
        return outputs[:, 0] if self._y_ndim == 1 else outputs


def _check_r2_rows(n_rows: int, settings: Settings) -> None:
    """Refuse splits whose validation part has one row: R2 needs two (else every
    trial would fail, after training, with a NaN score)."""
    if settings.cv is not None:
        smallest = n_rows // settings.cv
        if smallest < 2:
            expected = f"an int <= {n_rows // 2} (every fold needs 2 rows to score R2)"
            raise_invalid("cv", settings.owner, expected, settings.cv)
        return
    n_val = min(max(1, round(settings.validation_fraction * n_rows)), n_rows - 1)
    if n_val < 2:
        if n_rows < 3:
            raise InvalidParameterError(
                f"{settings.owner} needs at least 3 samples to score R2 on a validation "
                f"split of 2 rows; got {n_rows} sample{'' if n_rows == 1 else 's'}. Pass "
                "another scoring (e.g. 'neg_mean_squared_error') to search on fewer."
            )
        least = 1.5 / n_rows
        expected = f"a float >= {least:.3g} (the validation split needs 2 rows to score R2)"
        raise_invalid("validation_fraction", settings.owner, expected, settings.validation_fraction)
