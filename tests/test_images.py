"""Image data in study files: folders of PNG files and torchvision data sets, read offline."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from evohpo import Genome
from evohpo.cli import main
from evohpo.exceptions import InvalidParameterError, StudyConfigError
from evohpo.studies.config import load_study_config
from evohpo.studies.data import prepare_data
from evohpo.studies.group import study_identity
from evohpo.training.images import (
    image_folder_shape,
    load_image_folder,
    load_torchvision,
    torchvision_class,
)
from evohpo.training.nn import build_model

WriteStudy = Callable[..., Path]

#: A study of 8x8 images: one small conv block at most, one epoch, two trials.
IMAGES: dict[str, Any] = {
    "data": {"dataset": "imagefolder", "root": "images", "test_fraction": 0.25},
    "space": {
        "max_layers": 1,
        "units": [4, 8],
        "max_blocks": 1,
        "channels": [2, 4],
        "kernels": [3],
        "batch_sizes": [8],
    },
    "train": {"max_epochs": 1, "device": "cpu"},
    "budget": {"n_trials": 2},
}


def write_images(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> None:
    """PNG files ``root/<class>/<i>.png``: bright images for one class, dark for the other."""
    rng = np.random.default_rng(0)
    for name, shapes in sizes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, (height, width) in enumerate(shapes):
            pixels = rng.integers(0, 128, size=(height, width, 3)) + 127 * (name == "bright")
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Two classes of six 8x8 RGB images each."""
    root = tmp_path / "images"
    write_images(root, {"bright": [(8, 8)] * 6, "dark": [(8, 8)] * 6})
    return root


def write_mnist(root: Path, n_train: int = 20, n_test: int = 10, size: int = 8) -> None:
    """A tiny stand-in for MNIST in torchvision's raw layout (idx files), 4 classes."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 4).astype(np.uint8)
        pixels = rng.integers(0, 256, size=(n, size, size)).astype(np.uint8)
        header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, size, size))
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + pixels.tobytes())
        header = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big")
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())


# -- reading images ------------------------------------------------------------------------------
def test_an_image_folder_becomes_flat_rows_in_unit_range(images: Path) -> None:
    data = load_image_folder(images)
    assert data.X.shape == (12, 3 * 8 * 8)
    assert data.X.dtype == np.float32
    assert data.input_shape == (3, 8, 8)
    assert data.class_names == ["bright", "dark"]
    np.testing.assert_array_equal(data.y, [0] * 6 + [1] * 6)
    # Every row is its image, channels first, divided by 255.
    pixels = np.asarray(Image.open(images / "bright" / "0.png"), dtype=np.float32)
    np.testing.assert_allclose(data.X[0], pixels.transpose(2, 0, 1).ravel() / 255, atol=1e-6)
    assert data.X[:6].mean() > data.X[6:].mean() + 0.3


def test_grayscale_and_image_size(images: Path) -> None:
    gray = load_image_folder(images, grayscale=True, image_size=[4, 6])
    assert gray.input_shape == (1, 4, 6)
    assert gray.X.shape == (12, 24)
    assert gray.X.min() >= 0.0
    assert gray.X.max() <= 1.0
    assert image_folder_shape(images, grayscale=True, image_size=[4, 6]) == (1, 4, 6)


def test_images_of_another_size_need_image_size(images: Path) -> None:
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(images / "dark" / "extra.png")
    match = r"extra\.png is 6x6 with 3 channels, the first one 8x8 .*Set image_size"
    with pytest.raises(InvalidParameterError, match=match):
        load_image_folder(images)
    assert load_image_folder(images, image_size=[8, 8]).X.shape == (13, 192)


def test_an_unreadable_image_is_named(images: Path) -> None:
    (images / "dark" / "broken.png").write_text("not an image")
    with pytest.raises(InvalidParameterError, match=r"Cannot read the image .*broken\.png: "):
        load_image_folder(images)


def test_an_image_folder_of_one_class_is_refused(tmp_path: Path) -> None:
    write_images(tmp_path / "one", {"only": [(8, 8)] * 3})
    with pytest.raises(InvalidParameterError, match=r"holds one class \('only'\); .* two"):
        load_image_folder(tmp_path / "one")


def test_a_torchvision_data_set_by_name_keeps_its_test_split(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    data = load_torchvision("MNIST", tmp_path)
    assert data.X.shape == (30, 64)
    assert data.input_shape == (1, 8, 8)
    np.testing.assert_array_equal(data.test_index, np.arange(20, 30))
    assert data.class_names == ["0 - zero", "1 - one", "2 - two", "3 - three"]
    assert load_torchvision("MNIST", tmp_path, image_size=[4, 4]).input_shape == (1, 4, 4)


def test_an_unknown_torchvision_data_set_suggests_the_closest() -> None:
    match = r"'MNSIT'.*no such class.*Did you mean 'MNIST'"
    with pytest.raises(InvalidParameterError, match=match):
        torchvision_class("MNSIT")
    with pytest.raises(InvalidParameterError, match=r"'EMNIST'.*not built from root="):
        torchvision_class("EMNIST")


def test_missing_torchvision_says_what_to_install(
    images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ImportError, match=r"pip install 'evohpo\[vision\]'"):
        load_image_folder(images)


# -- study files ---------------------------------------------------------------------------------
def test_an_image_study_sets_the_input_shape_and_identity(
    images: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(images.parent, IMAGES))
    assert config.space.input_shape == (3, 8, 8)
    identity = study_identity(config, "ga", 0)
    assert identity["data"]["images"] == {"root": "images", "image_size": None, "grayscale": False}
    assert identity["space"]["input_shape"] == [3, 8, 8]
    data = prepare_data(config)
    assert data.X_train.shape[1] == data.X_test.shape[1] == 192
    assert len(data.y_test) == 3
    gray = load_study_config(
        write_study(images.parent, IMAGES, data={"grayscale": True, "image_size": [4, 4]})
    )
    assert gray.space.input_shape == (1, 4, 4)


def test_the_identity_follows_the_folders_images(images: Path, write_study: WriteStudy) -> None:
    config = load_study_config(write_study(images.parent, IMAGES))
    before = study_identity(config, "ga", 0)["data_digest"]
    assert study_identity(config, "ga", 0)["data_digest"] == before
    (images / "dark" / ".DS_Store").write_bytes(b"\0\1")  # files the loader skips
    (images / "README.txt").write_text("two classes")
    assert study_identity(config, "ga", 0)["data_digest"] == before
    write_images(images, {"dark": [(8, 8)] * 7})  # one image more
    assert study_identity(config, "ga", 0)["data_digest"] != before


def test_the_image_extensions_are_torchvisions() -> None:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from evohpo.studies.sources import IMAGE_EXTENSIONS

    assert set(IMAGE_EXTENSIONS) == set(IMG_EXTENSIONS)


def test_an_image_study_runs_and_exports_end_to_end(
    images: Path, write_study: WriteStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(images.parent, IMAGES)
    assert main(["run", str(path), "--sampler", "ga"]) == 0
    out = capsys.readouterr().out
    assert "finished trials: 2 of 2" in out
    assert re.search(r"best genome: [01] blocks? \[", out), out
    exported = images.parent / "exported"
    assert main(["export", str(path), "--sampler", "ga", "--output", str(exported)]) == 0
    metadata = json.loads((exported / "metadata.json").read_text())
    assert metadata["input_shape"] == [3, 8, 8]
    assert "input_shape=input_shape" in metadata["load"]
    genome = Genome.from_json((exported / "genome.json").read_text())
    assert genome.blocks is not None
    model = build_model(genome, 192, 2, input_shape=metadata["input_shape"])
    model.load_state_dict(torch.load(exported / "model.pt", weights_only=True))


def test_a_torchvision_study_uses_the_data_sets_test_split(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    write_mnist(tmp_path / "mnist")
    data_table = {"dataset": "torchvision:MNIST", "root": "mnist", "test_fraction": None}
    config = load_study_config(write_study(tmp_path, IMAGES, data=data_table))
    assert config.space.input_shape == (1, 8, 8)
    data = prepare_data(config)
    assert len(data.y_test) == 10
    assert data.n_classes == 4


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"root": "absent"}, r"\[data\]: The folder '.*absent' given as root does not exist"),
        ({"root": None}, r"\[data\] 'root' must be the folder of the 'imagefolder' images"),
        ({"root": "empty"}, r"'.*empty' lacks images: .*one sub-folder per class.*\.png"),
        ({"image_size": [8]}, r"\[data\] 'image_size' must be a pair of positive ints"),
        ({"grayscale": "yes"}, r"\[data\] 'grayscale' must be true or false"),
        ({"download": True}, r"'download' is a setting of torchvision data sets"),
        ({"dataset": "torchvision:MNSIT"}, r"'MNSIT'.*Did you mean 'MNIST'\?"),
        (
            {"dataset": "torchvision:MNIST", "root": "absent"},
            r"'MNIST' does not exist, and download is off\. Set download = true on a machine "
            "with a network",
        ),
        (
            {"dataset": "torchvision:MNIST", "root": "empty"},
            r"found no MNIST data .* Set download = true on a machine with a network",
        ),
        ({"dataset": "iris"}, r"\[data\] 'root' is a setting of image data only"),
    ],
)
def test_bad_image_settings_are_named(
    images: Path, write_study: WriteStudy, data: dict[str, Any], match: str
) -> None:
    (images.parent / "empty" / "some_class").mkdir(parents=True)
    path = write_study(images.parent, IMAGES, data=data)
    with pytest.raises(StudyConfigError, match=match):
        load_study_config(path)


def test_an_explicit_input_shape_must_match_the_images(
    images: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(images.parent, IMAGES, space={"input_shape": [1, 8, 8]}))
    with pytest.raises(
        StudyConfigError, match=r"\[space\] 'input_shape' = \[1, 8, 8\] differs from .*\[3, 8, 8\]"
    ):
        prepare_data(config)
    same = write_study(images.parent, IMAGES, space={"input_shape": [3, 8, 8]})
    assert prepare_data(load_study_config(same)).X_train.shape[1] == 192


def test_a_study_file_without_torchvision_says_what_to_install(
    images: Path, write_study: WriteStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    match = r"needs torchvision.*pip install 'evohpo\[vision\]'"
    with pytest.raises(StudyConfigError, match=match):
        load_study_config(write_study(images.parent, IMAGES))
