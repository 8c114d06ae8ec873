"""evohpo: evolutionary neural-architecture and hyperparameter search for Optuna.

The genome, search space, operators and sampler import no torch; the
scikit-learn estimator, which trains networks, is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evohpo._version import __version__
from evohpo.genome import Genome, LayerGene
from evohpo.lineage import Lineage
from evohpo.operators import MutationRates
from evohpo.sampler import EvoSampler
from evohpo.space import SearchSpace
from evohpo.suggest import suggest_genome

if TYPE_CHECKING:
    from evohpo.estimator import EvoSearchClassifier

__all__ = [
    "EvoSampler",
    "EvoSearchClassifier",
    "Genome",
    "LayerGene",
    "Lineage",
    "MutationRates",
    "SearchSpace",
    "__version__",
    "suggest_genome",
]


def __getattr__(name: str) -> Any:
    # Importing torch takes seconds; only the estimator needs it.
    if name == "EvoSearchClassifier":
        from evohpo.estimator import EvoSearchClassifier

        return EvoSearchClassifier
    raise AttributeError(f"module 'evohpo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
