"""Offline classification data sets for study files.

Nothing is downloaded: scikit-learn's bundled sets (digits, wine,
breast_cancer, iris) ship with scikit-learn, and mnist1d is generated
procedurally by the ``mnist1d`` package with its default arguments (its
``make_dataset``, never its downloader). Generating mnist1d takes a while,
so it is cached as a ``.npz`` file (numpy arrays only, no pickle). Images
(a folder of them, or a torchvision data set) are read by
:mod:`evohpo.training.images`.

Examples
--------
>>> data = load_dataset("wine")
>>> data.X.shape, data.n_classes, data.class_names[:2]
((178, 13), 3, ['class_0', 'class_1'])
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evohpo._validation import raise_invalid
from evohpo.exceptions import InvalidParameterError

__all__ = ["DATASETS", "Dataset", "load_dataset"]

_logger = logging.getLogger("evohpo")

#: Version of the mnist1d cache layout; part of the cache file name.
_MNIST1D_CACHE_VERSION = 1


@dataclass(frozen=True)
class Dataset:
    """A classification data set held in memory.

    Attributes
    ----------
    name : str
        The name it was loaded by.
    X : ndarray of shape (n_samples, n_features)
        Features as float32.
    y : ndarray of shape (n_samples,)
        Class indices in ``[0, n_classes)`` as int64.
    class_names : list of str
        Name of each class index.
    test_index : ndarray of int or None
        Rows of a canonical test split shipped with the data set (mnist1d's
        last 1000 rows), else ``None``.
    description : str
        One line saying where the data come from.
    input_shape : tuple of int or None
        ``(channels, height, width)`` of images (rows are flattened images, see
        :mod:`evohpo.training.images`), ``None`` for tabular data.
    """

    name: str
    X: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    class_names: list[str]
    test_index: np.ndarray | None = field(default=None, repr=False)
    description: str = ""
    input_shape: tuple[int, ...] | None = None

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return int(self.X.shape[1])


def _from_sklearn(loader_name: str, description: str) -> Callable[[Path | None], Dataset]:
    def load(cache_dir: Path | None) -> Dataset:
        import sklearn.datasets

        bunch: Any = getattr(sklearn.datasets, loader_name)()
        target_names = getattr(bunch, "target_names", None)
        classes = np.unique(bunch.target)
        if target_names is None:
            names = [str(c) for c in classes]
        else:
            names = [str(target_names[c]) for c in classes]
        name = loader_name.removeprefix("load_")
        return Dataset(
            name=name,
            X=np.ascontiguousarray(bunch.data, dtype=np.float32),
            y=np.searchsorted(classes, bunch.target).astype(np.int64),
            class_names=names,
            description=description,
        )

    return load


def _mnist1d_args() -> Any:
    from mnist1d.data import get_dataset_args

    return get_dataset_args()


def _mnist1d_cache_path(cache_dir: Path, args: Any) -> Path:
    settings = {k: v for k, v in sorted(vars(args).items()) if k != "url"}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / f"mnist1d-v{_MNIST1D_CACHE_VERSION}-{digest}.npz"


def _generate_mnist1d(args: Any) -> dict[str, np.ndarray]:
    """Run mnist1d's generator, keeping the global random state unchanged.

    ``make_dataset`` seeds and draws from the global ``random`` and
    ``numpy.random`` states; both are restored afterwards.
    """
    from mnist1d.data import make_dataset

    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 - mnist1d uses the legacy global state
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    return {
        "x": np.asarray(data["x"], dtype=np.float32),
        "y": np.asarray(data["y"], dtype=np.int64),
        "x_test": np.asarray(data["x_test"], dtype=np.float32),
        "y_test": np.asarray(data["y_test"], dtype=np.int64),
    }


def _load_mnist1d(cache_dir: Path | None) -> Dataset:
    args = _mnist1d_args()
    arrays: dict[str, np.ndarray] | None = None
    path = _mnist1d_cache_path(cache_dir, args) if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {key: stored[key] for key in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError) as exc:
            _logger.warning("Ignoring the unreadable mnist1d cache %s (%s).", path, exc)
    if arrays is None:
        _logger.info("Generating mnist1d (cached afterwards).")
        arrays = _generate_mnist1d(args)
        if path is not None:
            _write_npz_atomically(path, arrays)
    n_train = arrays["x"].shape[0]
    X = np.concatenate([arrays["x"], arrays["x_test"]]).astype(np.float32)
    y = np.concatenate([arrays["y"], arrays["y_test"]]).astype(np.int64)
    return Dataset(
        name="mnist1d",
        X=np.ascontiguousarray(X),
        y=y,
        class_names=[str(i) for i in range(10)],
        test_index=np.arange(n_train, X.shape[0]),
        description="mnist1d generated offline by the mnist1d package (default arguments)",
    )


def _write_npz_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".npz.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: Loaders by name. Every one works offline.
DATASETS: dict[str, Callable[[Path | None], Dataset]] = {
    "breast_cancer": _from_sklearn(
        "load_breast_cancer", "Wisconsin breast cancer, bundled with scikit-learn"
    ),
    "digits": _from_sklearn("load_digits", "8x8 handwritten digits, bundled with scikit-learn"),
    "iris": _from_sklearn("load_iris", "Fisher's iris, bundled with scikit-learn"),
    "mnist1d": _load_mnist1d,
    "wine": _from_sklearn("load_wine", "Wine recognition, bundled with scikit-learn"),
}


def load_dataset(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load one of :data:`DATASETS` without any network access.

    Parameters
    ----------
    name : str
        One of ``"breast_cancer"``, ``"digits"``, ``"iris"``, ``"mnist1d"``,
        ``"wine"``.
    cache_dir : path, optional
        Where generated data sets (mnist1d) are cached; ``None``: not cached.

    Returns
    -------
    Dataset
        Features as float32, labels as class indices.

    Raises
    ------
    InvalidParameterError
        For an unknown name.
    """
    if name not in DATASETS:
        listed = ", ".join(repr(n) for n in sorted(DATASETS))
        close = difflib.get_close_matches(str(name), sorted(DATASETS), n=1)
        try:
            raise_invalid("dataset", "load_dataset", f"one of {{{listed}}}", name)
        except InvalidParameterError as exc:
            if not close:
                raise
            raise InvalidParameterError(f"{exc} Did you mean {close[0]!r}?") from None
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise InvalidParameterError(
            f"The 'cache_dir' parameter of load_dataset must be a path or None. "
            f"Got {cache_dir!r} instead."
        )
    return DATASETS[name](Path(cache_dir) if cache_dir is not None else None)
