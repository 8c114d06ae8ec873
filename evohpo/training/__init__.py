"""The training side: torch networks built from genomes, the training loop and data sets.

Nothing here imports Optuna.
"""
