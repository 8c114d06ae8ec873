"""A trained network seen as a fitted scikit-learn estimator, for scorers.

scikit-learn scorers call ``predict`` or ``predict_proba`` on an estimator;
these wrappers give them a trained network. Imported only where a scorer is
used (:mod:`evohpo.search.scoring`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from evohpo.search.splits import Standardizer
from evohpo.training.predict import predict_logits, predict_proba

__all__ = ["ScoredNetwork", "ScoredRegressor"]


class ScoredNetwork(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
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
    def classes_(self) -> npt.NDArray[np.int64]:
        return np.arange(self.n_classes, dtype=np.int64)

    def predict_proba(self, X: Any) -> npt.NDArray[np.float64]:
        assert self.model is not None
        return predict_proba(self.model, X)

    def predict(self, X: Any) -> npt.NDArray[np.int64]:
        labels: npt.NDArray[np.int64] = self.predict_proba(X).argmax(axis=1).astype(np.int64)
        return labels


class ScoredRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """A trained regression network seen as a fitted regressor.

    ``predict`` maps the network's (standardised) outputs back with ``target``,
    to the scale of the targets it was trained on: a vector for one target, a
    matrix for several. Only for handing to scikit-learn scorers.
    """

    def __init__(
        self, model: torch.nn.Module | None = None, target: Standardizer | None = None
    ) -> None:
        self.model = model
        self.target = target

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict(self, X: Any) -> npt.NDArray[np.float64]:
        assert self.model is not None
        assert self.target is not None
        outputs = self.target.inverse_transform(predict_logits(self.model, X))
        return outputs[:, 0] if outputs.shape[1] == 1 else outputs
