"""evohpo: evolutionary neural-architecture and hyperparameter search for Optuna.

Importing the package is cheap: the genome and search space load at once;
the Optuna side (sampler, ``suggest_genome``) and the torch side (the
scikit-learn estimator) load on first use. So ``import evohpo.training.loop`` loads
no Optuna and ``import evohpo.evolution.sampler`` loads no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from evohpo._version import __version__
from evohpo.evolution.genome import Genome, LayerGene
from evohpo.evolution.lineage import Lineage
from evohpo.evolution.space import SearchSpace

if TYPE_CHECKING:
    from evohpo.estimator.classifier import EvoSearchClassifier
    from evohpo.estimator.regressor import EvoSearchRegressor
    from evohpo.evolution.mutation import MutationRates
    from evohpo.evolution.sampler import EvoSampler
    from evohpo.evolution.suggest import suggest_genome
    from evohpo.search.inheritance import WeightBank, WeightInheritance

__all__ = [
    "EvoSampler",
    "EvoSearchClassifier",
    "EvoSearchRegressor",
    "Genome",
    "LayerGene",
    "Lineage",
    "MutationRates",
    "SearchSpace",
    "WeightBank",
    "WeightInheritance",
    "__version__",
    "suggest_genome",
]

_LAZY = {
    "EvoSampler": "evohpo.evolution.sampler",
    "EvoSearchClassifier": "evohpo.estimator.classifier",
    "EvoSearchRegressor": "evohpo.estimator.regressor",
    "MutationRates": "evohpo.evolution.mutation",
    "suggest_genome": "evohpo.evolution.suggest",
    "WeightBank": "evohpo.search.inheritance",
    "WeightInheritance": "evohpo.search.inheritance",
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
