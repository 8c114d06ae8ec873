"""The training side: torch networks built from genomes, the training loop and data sets.

Nothing here imports Optuna or the evolution side: the trainer reads any object
shaped like :class:`~evohpo.training.spec.NetworkSpec`, which :class:`evohpo.Genome`
is. Modules are imported directly (``evohpo.training.loop``); this package file
stays empty so that importing the data sets does not load torch.
"""
