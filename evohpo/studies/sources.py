"""Where the rows of a study file come from: a named data set, a folder of images, torchvision.

``[data] dataset`` is one of:

- a name of :data:`evohpo.training.datasets.DATASETS` (``"digits"``, ``"mnist1d"``, ...);
- ``"imagefolder"``: the images under ``root`` (one sub-folder per class),
  read by ``torchvision.datasets.ImageFolder``;
- ``"torchvision:<Name>"``, e.g. ``"torchvision:MNIST"``: a class of
  ``torchvision.datasets`` built from ``root=``, ``train=`` and ``download=``
  (its train split, then its test split as the canonical test rows).

Image data take ``root`` (relative to the study file), and optionally
``image_size = [height, width]`` (resize; by default every image keeps the size
of the first one, and all must match), ``grayscale = true|false`` and, for
torchvision, ``download = true|false`` (``false`` by default: nothing is
fetched unless asked). Images become flat rows in ``[0, 1]`` and their shape
``(channels, height, width)`` becomes ``[space] input_shape`` unless the file
sets it (then the two must agree).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import InvalidParameterError, StudyConfigError
from evohpo.studies import _schema as schema

if TYPE_CHECKING:
    from evohpo.training.datasets import Dataset

__all__ = [
    "IMAGE_FOLDER",
    "IMAGE_KEYS",
    "TORCHVISION_PREFIX",
    "ImageSource",
    "check_dataset_name",
    "image_space",
    "is_image_dataset",
    "load_rows",
    "parse_image_source",
]

#: ``[data] dataset`` of a folder of images.
IMAGE_FOLDER = "imagefolder"
#: ``[data] dataset`` prefix of a torchvision data set: ``"torchvision:MNIST"``.
TORCHVISION_PREFIX = "torchvision:"
#: ``[data]`` keys of image data only.
IMAGE_KEYS = ("root", "image_size", "grayscale", "download")


@dataclass(frozen=True)
class ImageSource:
    """The image settings of ``[data]``.

    Attributes
    ----------
    root : str
        The folder, as the study file writes it (relative to the file).
    image_size : (int, int) or None
        ``(height, width)`` every image is resized to.
    grayscale : bool
        One channel instead of the images' own.
    download : bool
        Let torchvision fetch its data set (torchvision data sets only).
    """

    root: str
    image_size: tuple[int, int] | None = None
    grayscale: bool = False
    download: bool = False

    def identity(self) -> dict[str, Any]:
        """What decides the rows (``download`` does not: it only fetches them)."""
        size = None if self.image_size is None else list(self.image_size)
        return {"root": self.root, "image_size": size, "grayscale": self.grayscale}

    def path(self, base_dir: Path) -> Path:
        """The folder, resolved against the study file's directory."""
        return base_dir / Path(self.root).expanduser()


def is_image_dataset(name: str) -> bool:
    """Whether ``[data] dataset`` names image data (a folder or a torchvision data set)."""
    return name == IMAGE_FOLDER or name.startswith(TORCHVISION_PREFIX)


def check_dataset_name(dataset: Any, source: str) -> str:
    """``[data] dataset``, checked: a known name, ``"imagefolder"`` or ``"torchvision:<Name>"``."""
    from evohpo.training.datasets import DATASETS

    if isinstance(dataset, str) and (dataset in DATASETS or is_image_dataset(dataset)):
        if dataset.startswith(TORCHVISION_PREFIX):
            _torchvision_class(dataset, source)
        return dataset
    listed = ", ".join(repr(n) for n in [*sorted(DATASETS), IMAGE_FOLDER])
    schema.config_error(
        source,
        "data",
        "dataset",
        f"one of {{{listed}}} or 'torchvision:<Name>'",
        dataset,
        hint=schema.did_you_mean(dataset, [*DATASETS, IMAGE_FOLDER]),
    )


def _torchvision_class(dataset: str, source: str) -> Any:
    from evohpo.training.images import torchvision_class

    try:
        return torchvision_class(dataset.removeprefix(TORCHVISION_PREFIX))
    except (InvalidParameterError, ImportError) as exc:
        raise StudyConfigError(f"{source}: [data] 'dataset': {exc}") from exc


def parse_image_source(table: Mapping[str, Any], dataset: str, source: str) -> ImageSource | None:
    """The image settings of ``[data]``; ``None`` for other data (which may not set them)."""
    if not is_image_dataset(dataset):
        for key in IMAGE_KEYS:
            if key in table:
                raise StudyConfigError(
                    f"{source}: [data] {key!r} is a setting of image data only (dataset = "
                    f"'{IMAGE_FOLDER}' or '{TORCHVISION_PREFIX}<Name>'); dataset is {dataset!r}."
                )
        return None
    root = table.get("root")
    if not isinstance(root, str) or not root.strip():
        schema.config_error(
            source, "data", "root", f"the folder of the {dataset!r} images (a path)", root
        )
    size = table.get("image_size")
    if size is not None:
        if (
            not isinstance(size, list)
            or len(size) != 2
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in size)
        ):
            schema.config_error(
                source, "data", "image_size", "a pair of positive ints [height, width]", size
            )
        size = (int(size[0]), int(size[1]))
    flags = {}
    for key in ("grayscale", "download"):
        value = table.get(key, False)
        if not isinstance(value, bool):
            schema.config_error(source, "data", key, "true or false", value)
        flags[key] = value
    if flags["download"] and dataset == IMAGE_FOLDER:
        raise StudyConfigError(
            f"{source}: [data] 'download' is a setting of torchvision data sets; an image "
            "folder is read as it is."
        )
    return ImageSource(root=root, image_size=size, **flags)


def image_space(
    space: SearchSpace, dataset: str, images: ImageSource, base_dir: Path, source: str
) -> SearchSpace:
    """``space`` with the images' ``(channels, height, width)`` as its input shape.

    A space that sets ``input_shape`` itself is kept: :func:`load_rows`'s caller
    checks it against the images once they are read.
    """
    if space.input_shape is not None:
        return space
    shape = _read_images(dataset, images, base_dir, source, shape_only=True)
    try:
        return replace(space, input_shape=shape)
    except InvalidParameterError as exc:
        raise StudyConfigError(
            f"{source}: [space] with the images' input_shape {list(shape)}: {exc}"
        ) from exc


def load_rows(
    dataset: str, images: ImageSource | None, base_dir: Path, cache_dir: Path, source: str
) -> Dataset:
    """Read the data set of ``[data]``: every row, flat, with its class index."""
    from evohpo.training.datasets import load_dataset

    if images is None:
        return load_dataset(dataset, cache_dir=cache_dir)
    rows: Dataset = _read_images(dataset, images, base_dir, source, shape_only=False)
    return rows


def _read_images(
    dataset: str, images: ImageSource, base_dir: Path, source: str, *, shape_only: bool
) -> Any:
    """The images' shape (``shape_only``) or their rows, from a folder or a torchvision set."""
    from evohpo.training import images as reader

    root = images.path(base_dir)
    size, gray = images.image_size, images.grayscale
    try:
        if dataset == IMAGE_FOLDER:
            if shape_only:
                return reader.image_folder_shape(root, image_size=size, grayscale=gray)
            return reader.load_image_folder(root, image_size=size, grayscale=gray)
        name, download = dataset.removeprefix(TORCHVISION_PREFIX), images.download
        read_set = reader.torchvision_shape if shape_only else reader.load_torchvision
        return read_set(name, root, download=download, image_size=size, grayscale=gray)
    except (InvalidParameterError, ImportError) as exc:
        raise StudyConfigError(f"{source}: [data]: {exc}") from exc
