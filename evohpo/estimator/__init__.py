"""The scikit-learn estimator that wraps the whole search.

Modules, one job each:

* :mod:`~evohpo.estimator.base`: what both estimators share: their
  parameters, ``fit`` (check, search, select, refit), the study, pickling;
* :mod:`~evohpo.estimator.classifier`: :class:`EvoSearchClassifier`: class
  labels and probabilities;
* :mod:`~evohpo.estimator.regressor`: :class:`EvoSearchRegressor`: numeric
  targets, standardised inside, and averaged predictions;
* :mod:`~evohpo.estimator.params`: the parameters and the training data,
  checked into a :class:`~evohpo.estimator.params.Settings`;
* :mod:`~evohpo.estimator.session`: the study of a fit: its storage, loading
  or creating it, running its trials here or in worker processes;
* :mod:`~evohpo.estimator.record`: what a stored study was made for, so that
  only the same search resumes it;
* :mod:`~evohpo.estimator.results`: the ranking of trials and ``cv_results_``;
* :mod:`~evohpo.estimator.refit`: the ensemble's members, their retraining and
  their averaged probabilities or predictions.
"""

from __future__ import annotations

from evohpo.estimator.classifier import EvoSearchClassifier
from evohpo.estimator.regressor import EvoSearchRegressor

__all__ = ["EvoSearchClassifier", "EvoSearchRegressor"]
