"""OptunaHub entry point of evohpo: the sampler itself ships in the ``evohpo`` wheel."""

from evohpo import EvoSampler

__all__ = ["EvoSampler"]
