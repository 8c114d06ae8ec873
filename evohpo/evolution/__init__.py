"""The evolution side: genomes, search spaces, variation, selection and the Optuna sampler.

Nothing here imports torch. Modules are imported directly (``evohpo.evolution.sampler``);
this package file stays empty so that importing the genome does not load Optuna.
"""
