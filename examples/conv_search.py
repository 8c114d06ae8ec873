"""Convolutional genomes: EvoSearchClassifier on scikit-learn's digits read as 8x8 images.

    python examples/conv_search.py          # 12 trials, a few minutes on 2 cores
    python examples/conv_search.py --fast   # a few seconds (also: EVOHPO_FAST=1)

``input_shape=(1, 8, 8)`` folds every row of 64 pixels to one channel of 8 x 8
inside the network, and the genomes get a body of convolutional blocks (channels,
kernel, stride, pooling, residual, batch norm, activation, dropout) before their
dense layers. The data stay flat rows: scaling, splits and ``predict`` are those
of any scikit-learn classifier.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from evohpo import EvoSearchClassifier

#: Small bodies for small images: 3x3 kernels, pooling to shrink 8 -> 4 -> 2 -> 1.
SPACE = {
    "max_blocks": 3,
    "channels": (8, 32),
    "kernels": (3,),
    "strides": (1,),
    "max_layers": 2,
    "units": (32, 256),
    "optimizers": ("adam", "adamw"),
    "learning_rate": (3e-4, 1e-2),
    "batch_sizes": (32, 64),
}


def main(argv: Sequence[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fast",
        action="store_true",
        default=os.environ.get("EVOHPO_FAST", "") not in ("", "0"),
        help="a tiny search budget, for a smoke run",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    budget = {"n_trials": 12, "max_epochs": 30, "patience": 5}
    if args.fast:
        budget = {"n_trials": 3, "max_epochs": 2, "patience": 2, "ensemble_size": 1}
    clf = EvoSearchClassifier(
        input_shape=(1, 8, 8), search_space=SPACE, random_state=0, verbose=1, **budget
    )
    clf.fit(X_train, y_train)

    accuracy = clf.score(X_test, y_test)
    genome = clf.best_genome_
    print(f"\ntest accuracy: {accuracy:.4f}")
    print(f"best body:     {genome.body_depth} blocks, {genome.readout} readout")
    for i, block in enumerate(genome.blocks or ()):
        print(
            f"  block{i}: {block.channels} channels, kernel {block.kernel}, stride "
            f"{block.stride}, pool {block.pool}, residual {block.residual}, "
            f"batch norm {block.batchnorm}, {block.activation}"
        )
    print(f"dense layers:  {[layer.units for layer in genome.layers]}")
    print(f"parameters:    {clf.cv_results_['n_parameters'][clf.best_index_]}")
    return accuracy


if __name__ == "__main__":
    main()
