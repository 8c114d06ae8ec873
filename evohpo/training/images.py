"""Image data sets as flat rows: a folder of images, or a torchvision data set by name.

Images are read with torchvision (``torchvision.datasets.ImageFolder``, or a
class of ``torchvision.datasets`` such as ``MNIST``) and turned by
``torchvision.transforms.v2`` into float32 tensors in ``[0, 1]`` of shape
``(channels, height, width)``, then flattened: every image is one row of a
:class:`~evohpo.training.datasets.Dataset` whose ``input_shape`` says how to
fold the row back. torchvision is optional (``pip install 'evohpo[vision]'``)
and imported only when images are read.

An image folder holds one sub-folder per class, named after the class, with
its images inside (``root/cat/001.png``, ``root/dog/002.png``): the layout of
``ImageFolder``. Every image is read as RGB (three channels), or as one
channel with ``grayscale=True``; all must have the size of the first one
unless ``image_size`` resizes them.

Nothing here downloads unless ``download=True`` is asked for a torchvision
data set.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evohpo._validation import raise_invalid
from evohpo.exceptions import InvalidParameterError
from evohpo.training.datasets import Dataset

__all__ = [
    "VISION_EXTRA",
    "image_folder_shape",
    "load_image_folder",
    "load_torchvision",
    "torchvision_class",
    "torchvision_names",
    "torchvision_shape",
]

#: How to install the optional dependency.
VISION_EXTRA = "pip install 'evohpo[vision]'"

#: Parameters a torchvision data set class must take to be loaded by name.
_TORCHVISION_PARAMS = ("root", "train", "download")


def _torchvision() -> Any:
    """The ``torchvision`` module, or an :class:`ImportError` that says how to install it."""
    try:
        import torchvision
        import torchvision.transforms.v2  # the v2 transforms are a submodule of their own
    except ImportError as exc:
        raise ImportError(
            f"Reading images needs torchvision, which is not installed: {VISION_EXTRA} "
            "(or pip install torchvision)."
        ) from exc
    return torchvision


def _transform(image_size: tuple[int, int] | None, grayscale: bool) -> Callable[[Any], Any]:
    """PIL image or tensor -> float32 tensor ``(channels, height, width)`` in ``[0, 1]``."""
    v2 = _torchvision().transforms.v2
    steps: list[Any] = [v2.ToImage()]
    if grayscale:
        steps.append(v2.Grayscale(num_output_channels=1))
    if image_size is not None:
        steps.append(v2.Resize(list(image_size), antialias=True))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)  # type: ignore[no-any-return]


def _check_size(image_size: Any, owner: str) -> tuple[int, int] | None:
    if image_size is None:
        return None
    expected = "None or a pair of positive ints (height, width)"
    if isinstance(image_size, (str, bytes)) or not isinstance(image_size, Sequence):
        raise_invalid("image_size", owner, expected, image_size)
    size = tuple(image_size)
    if len(size) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in size):
        raise_invalid("image_size", owner, expected, image_size)
    return int(size[0]), int(size[1])


def _existing_folder(root: str | os.PathLike[str]) -> Path:
    path = Path(root)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise InvalidParameterError(f"The folder {str(path)!r} given as root {what}.")
    return path


# -- image folders -------------------------------------------------------------------------------
def _image_folder(root: Path, transform: Callable[[Any], Any] | None) -> Any:
    """``ImageFolder(root)``; a folder without images is a clear error."""
    datasets = _torchvision().datasets
    extensions = ", ".join(datasets.folder.IMG_EXTENSIONS)
    try:
        return datasets.ImageFolder(str(root), transform=transform)
    except FileNotFoundError as exc:
        reason = str(exc).partition(" Supported extensions")[0].strip()
        raise InvalidParameterError(
            f"The image folder {str(root)!r} lacks images: it needs one sub-folder per "
            f"class, each holding image files ({extensions}); torchvision: {reason}"
        ) from None


def image_folder_shape(
    root: str | os.PathLike[str],
    *,
    image_size: Sequence[int] | None = None,
    grayscale: bool = False,
) -> tuple[int, int, int]:
    """The ``(channels, height, width)`` :func:`load_image_folder` gives, from its first image.

    Raises
    ------
    InvalidParameterError
        If ``root`` is not a folder or holds no images.
    """
    owner = "image_folder_shape"
    size = _check_size(image_size, owner)
    folder = _image_folder(_existing_folder(root), _transform(size, grayscale))
    shape = tuple(folder[0][0].shape)
    return shape[0], shape[1], shape[2]


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    image_size: Sequence[int] | None = None,
    grayscale: bool = False,
) -> Dataset:
    """Read every image of a class-per-sub-folder tree (``torchvision.datasets.ImageFolder``).

    Parameters
    ----------
    root : path
        The folder: one sub-folder per class, named after it, holding its images.
    image_size : (int, int), optional
        Resize every image to ``(height, width)``. ``None``: all images must
        have the size of the first one.
    grayscale : bool, default=False
        One channel instead of RGB's three.

    Returns
    -------
    Dataset
        Flat float32 rows in ``[0, 1]``, classes in sorted folder order, and
        ``input_shape`` ``(channels, height, width)``.

    Raises
    ------
    InvalidParameterError
        If ``root`` is not a folder, holds no images, or holds images of
        different sizes without ``image_size``.
    ImportError
        If torchvision is not installed.
    """
    owner = "load_image_folder"
    size = _check_size(image_size, owner)
    path = _existing_folder(root)
    folder = _image_folder(path, _transform(size, grayscale))
    if len(folder.classes) < 2:
        raise InvalidParameterError(
            f"The image folder {str(path)!r} holds one class ({folder.classes[0]!r}); "
            "classification needs at least two: one sub-folder per class."
        )
    rows, labels, shape = _read(folder, [str(p) for p, _ in folder.samples])
    return Dataset(
        name="imagefolder",
        X=rows,
        y=labels,
        class_names=[str(name) for name in folder.classes],
        description=f"images of {len(folder.classes)} classes read from {str(path)!r}",
        input_shape=shape,
    )


def _read(
    images: Any, names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Flat float32 rows, int64 labels and the image shape of an image data set."""
    rows: list[np.ndarray] = []
    labels: list[int] = []
    first: tuple[int, ...] | None = None
    for index in range(len(images)):
        try:
            image, label = images[index]
        except (OSError, ValueError) as exc:  # PIL: an unreadable or truncated file
            name = names[index] if names is not None else f"image {index}"
            raise InvalidParameterError(f"Cannot read the image {name}: {exc}.") from exc
        shape = tuple(image.shape)
        if first is None:
            first = shape
        elif shape != first:
            name = names[index] if names is not None else f"image {index}"
            raise InvalidParameterError(
                f"The images differ in size: {name} is {_describe(shape)}, the first one "
                f"{_describe(first)}. Set image_size to resize them all."
            )
        if isinstance(label, torch.Tensor) and label.numel() == 1:
            label = label.item()
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise InvalidParameterError(
                f"The data set's targets must be class indices (ints); item {index} has "
                f"{label!r}. Only classification data sets can be read."
            )
        rows.append(image.reshape(-1).numpy())
        labels.append(int(label))
    if first is None:
        raise InvalidParameterError("The data set holds no images.")
    X = np.stack(rows).astype(np.float32)
    return np.ascontiguousarray(X), np.asarray(labels, dtype=np.int64), first


def _describe(shape: tuple[int, ...]) -> str:
    channels, height, width = shape
    return f"{height}x{width} with {channels} channel{'s' if channels != 1 else ''}"


# -- torchvision data sets -----------------------------------------------------------------------
def torchvision_names() -> list[str]:
    """Classes of ``torchvision.datasets`` that :func:`load_torchvision` can build."""
    datasets = _torchvision().datasets
    return sorted(
        name for name in dir(datasets) if _takes_train_split(getattr(datasets, name, None))
    )


def _takes_train_split(cls: Any) -> bool:
    """Whether ``cls`` is a data set class built from ``root``, ``train`` and ``download`` alone."""
    if not inspect.isclass(cls) or not issubclass(cls, torch.utils.data.Dataset):
        return False
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    if not set(_TORCHVISION_PARAMS) <= set(parameters):
        return False
    required = [
        name
        for name, p in parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    return set(required) <= {"root"}


def torchvision_class(name: str) -> Any:
    """The class ``torchvision.datasets.<name>``; an unknown name suggests the closest.

    Raises
    ------
    InvalidParameterError
        If there is no such class, or it does not take ``root``, ``train``
        and ``download``.
    """
    names = torchvision_names()
    if name not in names:
        known = getattr(_torchvision().datasets, name, None) is not None
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        why = (
            "it is not built from root=, train= and download= alone"
            if known
            else "there is no such class in torchvision.datasets"
        )
        raise InvalidParameterError(
            f"Cannot read the torchvision data set {name!r}: {why}. The data sets that can "
            f"be read by name are {names}.{hint}"
        )
    return getattr(_torchvision().datasets, name)


def _torchvision_split(
    name: str, root: Path, *, train: bool, download: bool, transform: Callable[[Any], Any]
) -> Any:
    cls = torchvision_class(name)
    if not download and not root.is_dir():
        raise InvalidParameterError(
            f"The folder {str(root)!r} (root) of the torchvision data set {name!r} does not "
            "exist, and download is off. Set download = true on a machine with a network "
            "(torchvision then fetches the data set into root), or point root at a folder "
            "that holds it."
        )
    try:
        return cls(root=str(root), train=train, download=download, transform=transform)
    except RuntimeError as exc:
        if download:
            raise
        raise InvalidParameterError(
            f"torchvision found no {name} data under {str(root)!r} and download is off "
            f"({str(exc).rstrip('.')}). Set download = true on a machine with a network, "
            "or point root at a folder that holds the data set."
        ) from None


def torchvision_shape(
    name: str,
    root: str | os.PathLike[str],
    *,
    download: bool = False,
    image_size: Sequence[int] | None = None,
    grayscale: bool = False,
) -> tuple[int, int, int]:
    """The ``(channels, height, width)`` :func:`load_torchvision` gives, from its first image."""
    size = _check_size(image_size, "torchvision_shape")
    data = _torchvision_split(
        name, Path(root), train=True, download=download, transform=_transform(size, grayscale)
    )
    shape = tuple(data[0][0].shape)
    return shape[0], shape[1], shape[2]


def load_torchvision(
    name: str,
    root: str | os.PathLike[str],
    *,
    download: bool = False,
    image_size: Sequence[int] | None = None,
    grayscale: bool = False,
) -> Dataset:
    """Read a torchvision data set (``torchvision.datasets.<name>``), train and test splits.

    Parameters
    ----------
    name : str
        A class of :func:`torchvision_names`, e.g. ``"MNIST"``, ``"CIFAR10"``.
    root : path
        Where the data set is (or goes, with ``download=True``).
    download : bool, default=False
        Let torchvision fetch the data set into ``root`` (needs a network).
    image_size : (int, int), optional
        Resize every image to ``(height, width)``.
    grayscale : bool, default=False
        One channel; otherwise the images keep their own channels.

    Returns
    -------
    Dataset
        The training split's rows, then the test split's (``test_index``),
        flat float32 in ``[0, 1]``, with ``input_shape``.

    Raises
    ------
    InvalidParameterError
        For an unknown name (with the closest one), a missing ``root`` or
        missing data without ``download``.
    ImportError
        If torchvision is not installed.
    """
    size = _check_size(image_size, "load_torchvision")
    path = Path(root)
    transform = _transform(size, grayscale)
    parts = [
        _torchvision_split(name, path, train=train, download=download, transform=transform)
        for train in (True, False)
    ]
    (X_train, y_train, shape), (X_test, y_test, test_shape) = (_read(p) for p in parts)
    if test_shape != shape:
        raise InvalidParameterError(
            f"The train and test images of {name!r} differ: {_describe(shape)} and "
            f"{_describe(test_shape)}. Set image_size."
        )
    targets = np.concatenate([y_train, y_test])
    present = np.unique(targets)
    names = getattr(parts[0], "classes", None)
    if isinstance(names, Sequence) and len(names) > int(present.max()):
        class_names = [str(names[c]) for c in present]
    else:
        class_names = [str(c) for c in present]
    return Dataset(
        name=f"torchvision:{name}",
        X=np.ascontiguousarray(np.concatenate([X_train, X_test])),
        y=np.searchsorted(present, targets).astype(np.int64),
        class_names=class_names,
        test_index=np.arange(len(y_train), len(targets)),
        description=f"torchvision's {name} read from {str(path)!r}",
        input_shape=shape,
    )
