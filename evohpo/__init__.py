"""evohpo: evolutionary neural-architecture and hyperparameter search for Optuna.

Importing the package is cheap: the genome and search space load at once;
the Optuna side (sampler, ``suggest_genome``) and the torch side (the
scikit-learn estimator) load on first use. So ``import evohpo.train`` loads
no Optuna and ``import evohpo.sampler`` loads no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from evohpo._version import __version__
from evohpo.genome import Genome, LayerGene
from evohpo.lineage import Lineage
from evohpo.space import SearchSpace

if TYPE_CHECKING:
    from evohpo.estimator import EvoSearchClassifier
    from evohpo.operators import MutationRates
    from evohpo.sampler import EvoSampler
    from evohpo.suggest import suggest_genome

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

_LAZY = {
    "EvoSampler": "evohpo.sampler",
    "EvoSearchClassifier": "evohpo.estimator",
    "MutationRates": "evohpo.operators",
    "suggest_genome": "evohpo.suggest",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'evohpo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
