from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest

from evohpo.exceptions import InvalidParameterError
from evohpo.training import datasets
from evohpo.training.datasets import DATASETS, load_dataset

# Digests of mnist1d's default data set (float32 features, int64 labels; train rows first).
MNIST1D_X_SHA256 = "0b2b548d14a498bf71ce4d5e7df61d47851b3e5dd7e7f581a1011383cb03467c"
MNIST1D_Y_SHA256 = "6feec4a017698c7fe237c8854cbd2e338c6dd5c16240f6fa79daefaaa129e169"


@pytest.mark.parametrize(
    ("name", "shape", "n_classes"),
    [
        ("digits", (1797, 64), 10),
        ("wine", (178, 13), 3),
        ("breast_cancer", (569, 30), 2),
        ("iris", (150, 4), 3),
    ],
)
def test_sklearn_sets_load_offline(name: str, shape: tuple[int, int], n_classes: int) -> None:
    data = load_dataset(name)
    assert data.name == name
    assert data.X.shape == shape
    assert data.X.dtype == np.float32
    assert data.y.dtype == np.int64
    assert data.n_classes == n_classes == len(np.unique(data.y))
    assert data.y.min() == 0
    assert data.y.max() == n_classes - 1
    assert data.test_index is None
    assert np.isfinite(data.X).all()


def test_class_names_follow_the_labels() -> None:
    data = load_dataset("breast_cancer")
    assert data.class_names == ["malignant", "benign"]


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(InvalidParameterError, match=r"'dataset' .* one of .*'digits'.*Got 'mnist'"):
        load_dataset("mnist")


def test_a_near_miss_gets_a_hint() -> None:
    with pytest.raises(
        InvalidParameterError, match=r"Got 'digit' instead\. Did you mean 'digits'\?$"
    ):
        load_dataset("digit")
    with pytest.raises(InvalidParameterError, match=r"Got 'zzz' instead\.$"):
        load_dataset("zzz")


def test_bad_cache_dir_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match="cache_dir"):
        load_dataset("wine", cache_dir=3)  # type: ignore[arg-type]


def test_every_registered_set_has_a_loader() -> None:
    classification = ["breast_cancer", "digits", "iris", "mnist1d", "wine"]
    assert sorted(DATASETS) == sorted([*classification, "diabetes", "friedman1"])


@pytest.mark.slow
def test_mnist1d_is_generated_offline_deterministically_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002 - the test checks this global state is left alone
    before = (random.random(), np.random.random())  # noqa: NPY002
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002

    data = load_dataset("mnist1d", cache_dir=cache)
    after = (random.random(), np.random.random())  # noqa: NPY002
    assert after == before, "generating mnist1d changed the global random state"

    assert data.X.shape == (5000, 40)
    assert data.X.dtype == np.float32
    assert data.n_classes == 10
    assert data.test_index is not None
    assert list(data.test_index[[0, -1]]) == [4000, 4999]
    # mnist1d's default arguments (seed 42) always give the same signals and labels.
    assert hashlib.sha256(data.X.tobytes()).hexdigest() == MNIST1D_X_SHA256
    assert hashlib.sha256(data.y.tobytes()).hexdigest() == MNIST1D_Y_SHA256
    files = list(cache.glob("mnist1d-*.npz"))
    assert len(files) == 1
    with np.load(files[0], allow_pickle=False) as stored:
        assert sorted(stored.files) == ["x", "x_test", "y", "y_test"]

    def no_generation(args: object) -> dict[str, np.ndarray]:
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(datasets, "_generate_mnist1d", no_generation)
    again = load_dataset("mnist1d", cache_dir=cache)
    np.testing.assert_array_equal(again.X, data.X)
    np.testing.assert_array_equal(again.y, data.y)
