"""MNIST, Fashion-MNIST and KMNIST: the real idx formats, both layouts, padding to 32 px, clear errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets as tvd

from gsg_zoo.data import mnist, registry
from gsg_zoo.data.pretraining import build_dataset
from gsg_zoo.eval.datasets import build_split

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` (uint8) as an idx file (magic 0x0000 08 ndim, big-endian dims), gzip'd for ``.gz``."""
    data = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_split_files(directory: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> dict:
    """The four files of a dataset in ``directory``; returns the arrays written."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        images_name, labels_name = mnist.FILES[split]
        ext = ".gz" if gz else ""
        write_idx(directory / (images_name + ext), images)
        write_idx(directory / (labels_name + ext), labels)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "kmnist"])
def test_flat_folder_of_gzipped_files_is_read_padded_to_32_in_rgb(tmp_path, name):
    arrays = write_split_files(tmp_path)
    ds = build_dataset(name, tmp_path, "train")
    assert len(ds) == 12
    image, label = ds[3]
    assert image.mode == "RGB" and image.size == (32, 32) and label == 3
    pixels = np.asarray(image)
    assert (pixels[:, :, 0] == pixels[:, :, 1]).all() and (pixels[:, :, 0] == pixels[:, :, 2]).all()
    np.testing.assert_array_equal(pixels[2:30, 2:30, 0], arrays["train"][0][3])  # exact, no interpolation
    assert not pixels[:2].any() and not pixels[:, 30:].any()  # the 2 px zero border
    test, ident = build_split(name, tmp_path, "test", None, image_size=64)
    assert len(test) == 5 and test[0][0].size == (64, 64) and ident["split"] == "test"


def test_torchvision_layout_plain_files_and_torchvision_agree(tmp_path):
    arrays = write_split_files(tmp_path / "FashionMNIST" / "raw", gz=False)
    ours = mnist.FashionMNIST(tmp_path, train=False)
    theirs = tvd.FashionMNIST(str(tmp_path), train=False)  # torchvision reads the uncompressed files
    assert ours.files[0].parent == tmp_path / "FashionMNIST" / "raw"
    assert (ours.data == theirs.data).all() and (ours.targets == theirs.targets).all()
    assert ours.classes == theirs.classes and len(ours) == 5
    np.testing.assert_array_equal(ours.data.numpy(), arrays["t10k"][0])


def test_missing_files_name_both_layouts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"KMNIST 'train' not found.*ROOT/KMNIST/raw/.*a folder of"):
        build_dataset("kmnist", tmp_path / "empty", "train")
    with pytest.raises(
        FileNotFoundError, match=r"Fashion-MNIST not found.*/usr/share/datasets/fashion-mnist"
    ):
        build_dataset("fashion_mnist", tmp_path / "nowhere", "train")
    write_split_files(tmp_path / "half")
    (tmp_path / "half" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        build_split("mnist", tmp_path / "half", "test", None)


def test_download_uses_torchvisions_download_into_its_layout(tmp_path, monkeypatch):
    calls = []

    def fake_download(self):
        calls.append(self.raw_folder)
        write_split_files(Path(self.raw_folder))

    monkeypatch.setattr(tvd.MNIST, "download", fake_download)
    ds = build_dataset("mnist", tmp_path, "train", download=True)
    assert calls == [str(tmp_path / "MNIST" / "raw")] and len(ds) == 12
    build_dataset("mnist", tmp_path, "test", download=True)  # present now: no second download
    assert len(calls) == 1


def test_corrupt_idx_files_are_refused(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab"))
    with pytest.raises(ValueError, match="not an idx file of unsigned bytes"):
        mnist.read_idx(tmp_path / "x.gz")
    write_idx(tmp_path / "y", np.zeros((3, 2), np.uint8))
    (tmp_path / "y").write_bytes((tmp_path / "y").read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"5 bytes of data for dimensions \(3, 2\)"):
        mnist.read_idx(tmp_path / "y")


def test_registry_offers_them_to_pretraining_and_evaluation():
    for name in ("fashion_mnist", "mnist", "kmnist"):
        info = registry.get_info(name, pretrain=True)
        assert info.num_classes == 10 and info.splits == ("train", "test") and info.downloadable


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_real_fashion_mnist_from_debians_folder():
    train = build_dataset("fashion_mnist", DEBIAN, "train")
    test, _ = build_split("fashion_mnist", DEBIAN, "test", None, image_size=32)
    assert len(train) == 60_000 and len(test) == 10_000
    labels = train.dataset.targets
    assert sorted(labels.unique().tolist()) == list(range(10)) and (labels.bincount() == 6000).all()
    image, label = test[0]
    assert image.size == (32, 32) and label == 9  # the first test image is an ankle boot
