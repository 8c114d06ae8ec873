"""The trial's score: a scikit-learn scorer by name or callable, or plain accuracy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import get_scorer, get_scorer_names

from evohpo._validation import raise_invalid
from evohpo.training.predict import predict_proba

__all__ = ["ScoredNetwork", "Scorer", "resolve_scoring"]

#: A scikit-learn scorer: ``scorer(estimator, X, y) -> float``, larger is better.
Scorer = Callable[[Any, Any, Any], float]


def resolve_scoring(scoring: Any, owner: str = "GenomeObjective") -> Scorer | None:
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
