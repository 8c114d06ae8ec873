"""The trial's score: a scikit-learn scorer by name or callable, or plain accuracy.

Scorers see a trained network as a fitted estimator
(:mod:`evohpo.search.scored`). scikit-learn is imported only where a scorer
is named: a search scored by plain accuracy (a classifier's default) never
loads it, which saves a worker process about a second of start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evohpo._validation import raise_invalid

__all__ = ["Scorer", "resolve_scoring"]

#: Where scikit-learn's regression metrics live: a scorer name for a regressor must
#: score with one of them.
_REGRESSION_METRICS = "sklearn.metrics._regression"

#: A scikit-learn scorer: ``scorer(estimator, X, y) -> float``, larger is better.
Scorer = Callable[[Any, Any, Any], float]


def resolve_scoring(
    scoring: Any, owner: str = "GenomeObjective", *, regression: bool = False
) -> Scorer | None:
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
    regression : bool, default=False
        Score regressors: a name must be one of scikit-learn's regression
        scorers (``"r2"``, ``"neg_mean_squared_error"``, ...), and no name
        stands for the trainer's own score.

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
        if scoring == "accuracy" and not regression:
            return None
        from sklearn.metrics import get_scorer, get_scorer_names

        try:
            scorer = get_scorer(scoring)
        except ValueError:
            scorer = None
        metric = getattr(getattr(scorer, "_score_func", None), "__module__", None)
        if scorer is not None and not regression and metric != _REGRESSION_METRICS:
            return scorer  # type: ignore[no-any-return]
        if scorer is not None and regression and metric == _REGRESSION_METRICS:
            return scorer  # type: ignore[no-any-return]
        if regression:
            names = [n for n in get_scorer_names() if _is_regression_scorer(n)]
            raise_invalid(
                "scoring",
                owner,
                f"a regression scorer name of sklearn.metrics.get_scorer_names() "
                f"({', '.join(map(repr, names))}) or a callable scorer(estimator, X, y)",
                scoring,
            )
        examples = ", ".join(
            repr(n)
            for n in ("accuracy", "balanced_accuracy", "f1_macro", "neg_log_loss", "roc_auc_ovr")
        )
        kind = " (this one scores regressors)" if scorer is not None else ""
        raise_invalid(
            "scoring",
            owner,
            f"a classification scorer name of sklearn.metrics.get_scorer_names() "
            f"({examples}, ...) or a callable scorer(estimator, X, y){kind}",
            scoring,
        )
    if callable(scoring):
        return scoring  # type: ignore[no-any-return]
    raise_invalid("scoring", owner, "a str or a callable scorer(estimator, X, y)", scoring)


def _is_regression_scorer(name: str) -> bool:
    from sklearn.metrics import get_scorer

    metric = getattr(get_scorer(name), "_score_func", None)
    return getattr(metric, "__module__", None) == _REGRESSION_METRICS
