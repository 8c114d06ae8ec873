"""The rows of a study file: its train, validation and test splits.

Every sampler and seed of a study file sees the same rows: the splits are
stratified (shuffled for regression) and depend on the data set and
``[data]`` settings only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from evohpo.exceptions import StudyConfigError
from evohpo.studies.config import StudyConfig
from evohpo.studies.sources import load_rows

if TYPE_CHECKING:
    from evohpo.training.datasets import Dataset

__all__ = ["PreparedData", "prepare_data"]


@dataclass(frozen=True)
class PreparedData:
    """The splits every sampler and seed of a study file share.

    Features are raw: :class:`~evohpo.search.objective.GenomeObjective` standardises
    them with the statistics of its training rows.

    Attributes
    ----------
    X_train, y_train : ndarray
        Rows the networks are trained on.
    X_val, y_val : ndarray
        Rows that score the trials (the value Optuna maximises).
    X_test, y_test : ndarray
        Rows held out until the best trial of a study is refit and tested.
    class_names : list of str
        Empty for regression.
    task : {"classification", "regression"}
        What ``y`` holds: class indices, or numeric targets.
    feature_names : tuple of str or None
        The feature columns' names, where the data set has them (a CSV file).
    """

    X_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    X_val: np.ndarray = field(repr=False)
    y_val: np.ndarray = field(repr=False)
    X_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    class_names: list[str]
    task: str = "classification"
    feature_names: tuple[str, ...] | None = None

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)


def prepare_data(config: StudyConfig, dataset: Dataset | None = None) -> PreparedData:
    """Load the data set and make the train, validation and test splits.

    The splits are stratified and seeded by ``split_seed`` only, so they are
    the same for every sampler and seed.

    Raises
    ------
    StudyConfigError
        If ``test_fraction`` or ``validation_fraction`` leaves a part with
        fewer rows than classes (or a class too small to split); the message
        names the setting and the fractions that would work. If ``[space]
        input_shape`` does not fold the data's rows (or differs from the
        images' shape). If image data cannot be read.
    """
    data = dataset
    if data is None:
        data = load_rows(
            config.dataset,
            config.images,
            config.base_dir,
            config.cache_dir,
            config.source,
            table=config.csv,
            task=config.task,
        )
    _check_input_shape(config, data)
    rows = np.arange(data.X.shape[0])
    if config.test_fraction is None and data.test_index is not None:
        test = np.asarray(data.test_index)
        rest = np.setdiff1d(rows, test)
    else:
        fraction = config.test_fraction if config.test_fraction is not None else 0.2
        rest, test = _split(
            rows,
            data.y,
            fraction,
            config,
            key="test_fraction",
            parts=("training and validation", "test"),
        )
    train, val = _split(
        rest,
        data.y[rest],
        config.validation_fraction,
        config,
        key="validation_fraction",
        parts=("training", "validation"),
    )
    train, val, test = np.sort(train), np.sort(val), np.sort(test)
    X = data.X
    return PreparedData(
        X_train=X[train],
        y_train=data.y[train],
        X_val=X[val],
        y_val=data.y[val],
        X_test=X[test],
        y_test=data.y[test],
        class_names=list(data.class_names),
        task=data.task,
        feature_names=data.feature_names,
    )


def _check_input_shape(config: StudyConfig, data: Dataset) -> None:
    """``[space] input_shape`` must fold every row of ``data``, and match images' shape."""
    shape = config.space.input_shape
    if shape is None:
        return
    where = f"{config.source}: [space] 'input_shape' = {list(shape)}"
    if data.input_shape is not None and tuple(data.input_shape) != tuple(shape):
        raise StudyConfigError(
            f"{where} differs from the shape of the images of {config.dataset!r}, "
            f"{list(data.input_shape)} (channels, height, width). Leave input_shape out to "
            "take the images' shape, or set [data] image_size and grayscale to match it."
        )
    if math.prod(shape) != data.n_features:
        raise StudyConfigError(
            f"{where} holds {math.prod(shape)} values, but every row of {config.data_label!r} "
            f"has {data.n_features} features: the product of the shape must equal the "
            f"number of features (e.g. [1, {data.n_features}] for a signal)."
        )


def _split(
    rows: np.ndarray,
    labels: np.ndarray,
    fraction: float,
    config: StudyConfig,
    *,
    key: str,
    parts: tuple[str, str],
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(rest, held out)`` split of ``rows`` (shuffled for regression); a too
    small part is a config error."""
    from sklearn.model_selection import train_test_split

    stratify = None if config.task == "regression" else labels
    try:
        kept, held = train_test_split(
            rows, test_size=fraction, stratify=stratify, random_state=config.split_seed
        )
    except ValueError as exc:
        n_rows, n_classes = len(rows), len(np.unique(labels))
        n_held = math.ceil(fraction * n_rows)
        counts = {parts[0]: n_rows - n_held, parts[1]: n_held}
        small = [
            f"{n} {part} row{'' if n == 1 else 's'}" for part, n in counts.items() if n < n_classes
        ]
        if small:
            low, high = n_classes / n_rows, (n_rows - n_classes) / n_rows
            problem = (
                f"it leaves {' and '.join(small)} of {n_rows}, fewer than the {n_classes} "
                "classes (a stratified split needs a row of every class in each part); "
            )
            problem += (
                f"use a value in [{low:.3g}, {high:.3g}]"
                if low <= high
                else "the data set is too small for this split"
            )
        else:
            problem = f"the stratified split fails: {str(exc).strip().rstrip('.')}"
        default = (
            " (the default)" if key == "test_fraction" and config.test_fraction is None else ""
        )
        hint = ""
        if config.task != "regression" and n_classes > n_rows / 4:
            hint = (
                f" With {n_classes} classes in {n_rows} rows, is the target a number to "
                'predict? Then set task = "regression" at the top level.'
            )
        raise StudyConfigError(
            f"{config.source}: [data] {key!r} = {fraction:g}{default} does not work on "
            f"{config.data_label!r}: {problem}.{hint}"
        ) from exc
    return np.asarray(kept), np.asarray(held)
