"""The evaluation registry reads tiny fakes written in each dataset's real on-disk layout."""

import pytest
import torch
from eval_fakes import (
    SUITE_WRITERS,
    write_caltech101,
    write_cifar,
    write_imagefolder,
    write_stl10,
    write_sun397,
)

from gsg_zoo.eval.datasets import TRANSFER_SUITE, build_split, eval_transform, get_info, protocol_indices

TF = eval_transform(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
# (official splits -> sizes) for the writers' defaults
SIZES = {
    "aircraft": {"train": 12, "val": 12, "test": 12},
    "caltech101": {"train": 90, "test": 9},
    "cars": {"train": 16, "test": 12},
    "cifar10": {"train": 50, "test": 20},
    "cifar100": {"train": 50, "test": 20},
    "dtd": {"train": 12, "val": 12, "test": 12},
    "flowers": {"train": 12, "val": 12, "test": 12},
    "food101": {"train": 16, "test": 12},
    "pets": {"train": 16, "test": 12},
    "sun397": {"train": 12, "test": 12},
    "voc2007": {"train": 12, "val": 12, "test": 12},
}


def test_suite_is_complete():
    assert set(TRANSFER_SUITE) == set(SIZES) == set(SUITE_WRITERS)
    assert {get_info(n).metric for n in ("aircraft", "caltech101", "flowers", "pets")} == {"mean_per_class"}
    assert get_info("voc2007").metric == "map11" and get_info("cifar10").metric == "top1"


@pytest.mark.parametrize("name", sorted(SIZES))
def test_every_suite_dataset_loads(tmp_path, name):
    if name in ("cars", "flowers"):
        pytest.importorskip("scipy.io", reason="Stanford Cars / Flowers-102 annotations are .mat files")
    SUITE_WRITERS[name](tmp_path)
    info = get_info(name)
    for split, n in SIZES[name].items():
        ds, ident = build_split(name, tmp_path, split, TF)
        assert len(ds) == n and ident["split"] == split and ident["name"] == name
        image, label = ds[0]
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
        labels = [ds[i][1] for i in range(len(ds))]
        if info.multilabel:
            assert label.shape == (20,) and all(float(y.sum()) >= 1 for y in labels)
        else:
            assert len(set(labels)) >= 3 and min(labels) == 0


def test_stl10_and_imagefolder(tmp_path):
    write_stl10(tmp_path)
    write_imagefolder(tmp_path / "if")
    train, _ = build_split("stl10", tmp_path, "train", TF)
    assert len(train) == 30 and sorted({train[i][1] for i in range(10)}) == [0, 1, 2, 3, 4]
    test, _ = build_split("imagefolder", tmp_path / "if", "test", TF)  # ROOT/val
    assert len(test) == 15


def test_caltech101_30_per_class_seeded_and_rgb(tmp_path):
    write_caltech101(tmp_path, per_class=33, k=3)
    train, _ = build_split("caltech101", tmp_path, "train", TF)
    test, _ = build_split("caltech101", tmp_path, "test", TF)
    train_labels = [train[i][1] for i in range(len(train))]
    assert [train_labels.count(c) for c in range(3)] == [30, 30, 30]  # BACKGROUND_Google excluded
    assert len(test) == 9
    assert set(train.dataset.indices).isdisjoint(test.dataset.indices)
    again, _ = build_split("caltech101", tmp_path, "train", TF)
    assert again.dataset.indices == train.dataset.indices  # seeded
    assert all(train[i][0].shape[0] == 3 for i in range(0, 90, 7))  # grayscale images become RGB


def test_sun397_partition_or_seeded_fallback(tmp_path):
    write_sun397(tmp_path / "p", partition=True)
    train, ident = build_split("sun397", tmp_path / "p", "train", TF)
    assert ident["partition"] == "01"
    files = {str(train.dataset.dataset._image_files[i]).rsplit("_", 1)[-1] for i in train.dataset.indices}
    assert all(int(f.split(".")[0][-5:]) % 2 == 0 for f in files)  # the writer put even images in Training_01
    write_sun397(tmp_path / "s", partition=False)
    train, ident = build_split("sun397", tmp_path / "s", "train", TF)
    test, _ = build_split("sun397", tmp_path / "s", "test", TF)
    assert ident["partition"] == "seeded-0" and len(train) == len(test) == 12
    assert set(train.dataset.indices).isdisjoint(test.dataset.indices)


def test_voc_difficult_only_is_negative(tmp_path):
    SUITE_WRITERS["voc2007"](tmp_path)
    ds, _ = build_split("voc2007", tmp_path, "train", TF)
    # writer: class 3 ("boat") is present in images 3, 7, 8..11 and difficult when i % 3 == 0
    boat = [float(ds[i][1][3]) for i in range(12)]
    assert boat == [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1]


def test_missing_dataset_and_bad_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        build_split("cifar10", tmp_path, "train", TF)
    with pytest.raises(ValueError, match="unknown dataset"):
        get_info("mnist")
    with pytest.raises(ValueError, match="splits"):
        build_split("cifar10", tmp_path, "val", TF)


def test_subset_and_protocol_split(tmp_path):
    write_cifar(tmp_path)
    ds, ident = build_split("cifar10", tmp_path, "train", TF, subset=7)
    assert len(ds) == 7 and ident["subset"] == 7
    idx = protocol_indices(50)
    assert len(idx["val"]) == 10 and len(idx["train"]) == 40
    assert sorted(torch.cat([idx["val"], idx["train"]]).tolist()) == list(range(50))
    assert torch.equal(protocol_indices(50)["val"], idx["val"])
