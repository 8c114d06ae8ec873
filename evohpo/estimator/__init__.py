"""The scikit-learn estimator that wraps the whole search."""

from __future__ import annotations

from evohpo.estimator.classifier import EvoSearchClassifier

__all__ = ["EvoSearchClassifier"]
