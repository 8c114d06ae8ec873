"""Where the rows of a study file come from: a named data set, a folder of images, torchvision.

``[data] dataset`` is one of:

- a name of :data:`evohpo.training.datasets.DATASETS` (``"digits"``, ``"mnist1d"``, ...);
- ``"imagefolder"``: the images under ``root`` (one sub-folder per class),
  read by ``torchvision.datasets.ImageFolder``;
- ``"torchvision:<Name>"``, e.g. ``"torchvision:MNIST"``: a class of
  ``torchvision.datasets`` built from ``root=``, ``train=`` and ``download=``
  (its train split, then its test split as the canonical test rows);
- ``"csv"``: a table of your own, the CSV file at ``path`` (relative to the
  study file, with a header row), read by :func:`evohpo.training.tables.load_csv`:
  ``target`` names the column to predict (the last by default), ``features``
  the columns to predict it from (all others by default), ``delimiter`` the
  character between cells (``","``). The top-level ``task`` says whether the
  target holds classes (the default) or numbers (``"regression"``).

Image data take ``root`` (relative to the study file), and optionally
``image_size = [height, width]`` (resize; by default every image keeps the size
of the first one, and all must match), ``grayscale = true|false`` and, for
torchvision, ``download = true|false`` (``false`` by default: nothing is
fetched unless asked). Images become flat rows in ``[0, 1]`` and their shape
``(channels, height, width)`` becomes ``[space] input_shape`` unless the file
sets it (then the two must agree).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import InvalidParameterError, StudyConfigError
from evohpo.studies import _schema as schema

if TYPE_CHECKING:
    from evohpo.training.datasets import Dataset
    from evohpo.training.task import TaskName

__all__ = [
    "CSV",
    "CSV_KEYS",
    "IMAGE_FOLDER",
    "IMAGE_KEYS",
    "CsvSource",
    "TORCHVISION_PREFIX",
    "ImageSource",
    "check_dataset_name",
    "image_space",
    "is_image_dataset",
    "load_rows",
    "parse_csv_source",
    "parse_image_source",
]

#: ``[data] dataset`` of a folder of images.
IMAGE_FOLDER = "imagefolder"
#: The files an image folder's loader reads (torchvision's ``ImageFolder``:
#: ``torchvision.datasets.folder.IMG_EXTENSIONS``), in class sub-folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: ``[data] dataset`` prefix of a torchvision data set: ``"torchvision:MNIST"``.
TORCHVISION_PREFIX = "torchvision:"
#: ``[data]`` keys of image data only.
IMAGE_KEYS = ("root", "image_size", "grayscale", "download")
#: ``[data] dataset`` of a CSV file of your own.
CSV = "csv"
#: ``[data]`` keys of a CSV file only.
CSV_KEYS = ("path", "target", "features", "delimiter")


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

    def digest(self, base_dir: Path) -> str | None:
        """SHA-256 of the images the folder's loader reads (relative paths and sizes):
        an image added, removed, renamed or resized changes it, other files (a
        ``.DS_Store``, a README) do not. ``None`` if the folder cannot be read."""
        root = self.path(base_dir)
        if not root.is_dir():
            return None
        digest = hashlib.sha256()
        try:
            images = sorted(
                path
                for path in root.rglob("*")
                if len(path.relative_to(root).parts) > 1  # inside a class folder
                and path.name.lower().endswith(IMAGE_EXTENSIONS)
                and path.is_file()
            )
            for path in images:
                name = path.relative_to(root).as_posix()
                digest.update(f"{name}\0{path.stat().st_size}\n".encode())
        except OSError:
            return None
        return digest.hexdigest()


@dataclass(frozen=True)
class CsvSource:
    """The CSV settings of ``[data]`` (``dataset = "csv"``).

    Attributes
    ----------
    path : str
        The file, as the study file writes it (relative to the file).
    target : str or None
        The column to predict; the last one when ``None``.
    features : tuple of str or None
        The columns to predict it from; all others when ``None``.
    delimiter : str
        The character between cells.
    """

    path: str
    target: str | None = None
    features: tuple[str, ...] | None = None
    delimiter: str = ","

    def identity(self) -> dict[str, Any]:
        """What decides the rows, besides the file's contents (:meth:`digest`)."""
        features = None if self.features is None else list(self.features)
        return {
            "path": self.path,
            "target": self.target,
            "features": features,
            "delimiter": self.delimiter,
        }

    def file(self, base_dir: Path) -> Path:
        """The file, resolved against the study file's directory."""
        return base_dir / Path(self.path).expanduser()

    def digest(self, base_dir: Path) -> str | None:
        """SHA-256 of the file's bytes; ``None`` if it cannot be read (the loader says why)."""
        digest = hashlib.sha256()
        try:
            with self.file(base_dir).open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            return None
        return digest.hexdigest()


def is_image_dataset(name: str) -> bool:
    """Whether ``[data] dataset`` names image data (a folder or a torchvision data set)."""
    return name == IMAGE_FOLDER or name.startswith(TORCHVISION_PREFIX)


def check_dataset_name(dataset: Any, source: str) -> str:
    """``[data] dataset``, checked: a known name, ``"imagefolder"`` or ``"torchvision:<Name>"``."""
    from evohpo.training.datasets import DATASETS

    if isinstance(dataset, str) and (
        dataset in DATASETS or dataset == CSV or is_image_dataset(dataset)
    ):
        if dataset.startswith(TORCHVISION_PREFIX):
            _torchvision_class(dataset, source)
        return dataset
    listed = ", ".join(repr(n) for n in [*sorted(DATASETS), CSV, IMAGE_FOLDER])
    schema.config_error(
        source,
        "data",
        "dataset",
        f"one of {{{listed}}} or 'torchvision:<Name>'",
        dataset,
        hint=schema.did_you_mean(dataset, [*DATASETS, CSV, IMAGE_FOLDER]),
    )


def _torchvision_class(dataset: str, source: str) -> Any:
    from evohpo.training.images import torchvision_class

    try:
        return torchvision_class(dataset.removeprefix(TORCHVISION_PREFIX))
    except (InvalidParameterError, ImportError) as exc:
        raise StudyConfigError(f"{source}: [data] 'dataset': {exc}") from exc


def _refuse_keys(
    table: Mapping[str, Any], keys: tuple[str, ...], owner: str, dataset: str, source: str
) -> None:
    """A ``[data]`` key of another kind of data is an error naming whose it is."""
    for key in keys:
        if key in table:
            raise StudyConfigError(
                f"{source}: [data] {key!r} is a setting of {owner}; dataset is {dataset!r}."
            )


def parse_csv_source(table: Mapping[str, Any], dataset: str, source: str) -> CsvSource | None:
    """The CSV settings of ``[data]``; ``None`` for other data (which may not set them)."""
    if dataset != CSV:
        _refuse_keys(table, CSV_KEYS, f"a CSV file only (dataset = '{CSV}')", dataset, source)
        return None
    path = table.get("path")
    if not isinstance(path, str) or not path.strip():
        schema.config_error(source, "data", "path", "the CSV file (a path)", path)
    target = table.get("target")
    if target is not None and (not isinstance(target, str) or not target):
        schema.config_error(source, "data", "target", "a column name", target)
    features = table.get("features")
    if features is not None:
        if (
            not isinstance(features, list)
            or not features
            or not all(isinstance(c, str) and c for c in features)
        ):
            schema.config_error(
                source, "data", "features", "a non-empty list of column names", features
            )
        features = tuple(features)
    delimiter = table.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        schema.config_error(
            source, "data", "delimiter", "one character (',', ';', '\\t', ...)", delimiter
        )
    return CsvSource(path=path, target=target, features=features, delimiter=delimiter)


def parse_image_source(table: Mapping[str, Any], dataset: str, source: str) -> ImageSource | None:
    """The image settings of ``[data]``; ``None`` for other data (which may not set them)."""
    if not is_image_dataset(dataset):
        images = f"image data only (dataset = '{IMAGE_FOLDER}' or '{TORCHVISION_PREFIX}<Name>')"
        _refuse_keys(table, IMAGE_KEYS, images, dataset, source)
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
    dataset: str,
    images: ImageSource | None,
    base_dir: Path,
    cache_dir: Path,
    source: str,
    *,
    table: CsvSource | None = None,
    task: TaskName = "classification",
) -> Dataset:
    """Read the data set of ``[data]``: every row, flat, with its class index (or target)."""
    from evohpo.training.datasets import load_dataset

    if table is not None:
        return _read_csv(table, base_dir, source, task)
    if images is None:
        return load_dataset(dataset, cache_dir=cache_dir)
    rows: Dataset = _read_images(dataset, images, base_dir, source, shape_only=False)
    return rows


def _read_csv(table: CsvSource, base_dir: Path, source: str, task: TaskName) -> Dataset:
    from evohpo.training.tables import load_csv

    path = table.file(base_dir)
    if not path.is_file():
        raise StudyConfigError(
            f"{source}: [data] 'path' = {table.path!r}: there is no file {str(path)!r} "
            "(a relative path is read from the study file's folder)."
        )
    try:
        return load_csv(
            path,
            target=table.target,
            features=table.features,
            delimiter=table.delimiter,
            task=task,
        )
    except InvalidParameterError as exc:
        raise StudyConfigError(f"{source}: [data]: {exc}") from exc


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
