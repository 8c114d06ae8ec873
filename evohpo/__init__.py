"""evohpo: evolutionary neural-architecture and hyperparameter search for Optuna."""

from evohpo._version import __version__
from evohpo.genome import Genome, LayerGene
from evohpo.space import SearchSpace
from evohpo.suggest import suggest_genome

__all__ = [
    "Genome",
    "LayerGene",
    "SearchSpace",
    "__version__",
    "suggest_genome",
]
