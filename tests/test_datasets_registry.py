"""The one dataset registry: pretraining and evaluation read the same entries, safely, with clear errors."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from eval_fakes import write_cifar, write_imagefolder, write_stl10

from gsg_zoo.data import registry
from gsg_zoo.data.pretraining import build_dataset, collate_images, collate_pairs
from gsg_zoo.data.readers import SafeCIFAR10, SafeCIFAR100
from gsg_zoo.data.synthetic import SyntheticShapes
from gsg_zoo.eval.datasets import build_split

PRETRAIN = (
    "synthetic",
    "cifar10",
    "cifar100",
    "stl10",
    "hf",
    "webdataset",
    "folder",
    "imagefolder",
    "fashion_mnist",
    "mnist",
    "kmnist",
)


def _torchvision_reads_fakes(monkeypatch):
    """torchvision hashes CIFAR files against the real MD5s; the fakes pass a presence check instead."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.mark.parametrize("hundred", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_safe_cifar_reads_what_torchvision_reads(tmp_path, monkeypatch, hundred, train):
    write_cifar(tmp_path, hundred=hundred, n_train=40, n_test=15, k=7)
    _torchvision_reads_fakes(monkeypatch)
    ref = (tvd.CIFAR100 if hundred else tvd.CIFAR10)(str(tmp_path), train=train)
    safe = (SafeCIFAR100 if hundred else SafeCIFAR10)(tmp_path, train=train)
    assert safe.data.dtype == ref.data.dtype == np.uint8 and safe.data.shape == ref.data.shape
    np.testing.assert_array_equal(safe.data, ref.data)
    assert safe.targets == ref.targets and safe.classes == ref.classes
    assert safe.class_to_idx == ref.class_to_idx
    for i in (0, len(ref) // 2, len(ref) - 1):
        (a, y), (b, z) = safe[i], ref[i]
        assert y == z and np.array_equal(np.asarray(a), np.asarray(b))


def test_pretraining_reads_cifar_safely_with_the_same_items(tmp_path, monkeypatch):
    write_cifar(tmp_path)
    ds = build_dataset("cifar10", tmp_path, "train", transform=np.asarray)
    assert isinstance(ds.dataset, SafeCIFAR10)
    _torchvision_reads_fakes(monkeypatch)
    ref = tvd.CIFAR10(str(tmp_path), train=True, transform=np.asarray)
    assert len(ds) == len(ref) == 50
    for i in range(len(ds)):
        assert ds[i][1] == ref[i][1] and np.array_equal(ds[i][0], ref[i][0])


@pytest.mark.parametrize("reader", ["pretrain", "eval"])
def test_cifar_reader_refuses_code_in_pickles(tmp_path, reader):
    write_cifar(tmp_path)
    witness = tmp_path / "code-ran"

    class Evil:
        def __reduce__(self):
            return (os.makedirs, (str(witness),))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": [0]}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle os.makedirs"):
        if reader == "pretrain":
            build_dataset("cifar10", tmp_path, "test")
        else:
            build_split("cifar10", tmp_path, "test", None)
    assert not witness.exists()
    pickle.loads(pickle.dumps(Evil()))  # the payload is live: unrestricted unpickling runs it
    assert witness.exists()


def test_pretraining_errors_name_layouts_and_choices(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py/\{data_batch_1\.\.5"):
        build_dataset("cifar10", tmp_path, "train")
    (tmp_path / "cifar-100-python").mkdir()  # present but empty: the reader's error, with the layout
    with pytest.raises(
        FileNotFoundError, match=r"expected ROOT/cifar-100-python/\{train.*missing \['train', 'meta'\]"
    ):
        build_dataset("cifar100", tmp_path, "train")
    with pytest.raises(ValueError, match="needs --data ROOT.*stl10_binary"):
        build_dataset("stl10", None)
    with pytest.raises(
        ValueError, match="unknown pretraining dataset 'dtd'; choose from " + ", ".join(PRETRAIN)
    ):
        build_dataset("dtd", tmp_path)
    with pytest.raises(ValueError, match=r"has splits \('train', 'test'\), not 'val'"):
        build_dataset("cifar10", tmp_path, "val")
    write_imagefolder(tmp_path / "if")
    with pytest.raises(FileNotFoundError, match=r"ROOT/<split>/<class>.*is not a directory"):
        build_dataset("imagefolder", tmp_path / "if", "test")  # pretraining reads ROOT/test itself


def test_stl10_splits_need_only_their_files(tmp_path):
    write_stl10(tmp_path)
    train = build_dataset("stl10", tmp_path, "train")
    assert len(train) == 30 and train[0][1] == 0  # no unlabeled_X.bin needed (nor MD5s)
    with pytest.raises(FileNotFoundError, match="STL-10 'unlabeled' not found.*unlabeled_X.bin"):
        build_dataset("stl10", tmp_path, "unlabeled")
    shutil.copy(tmp_path / "stl10_binary" / "test_X.bin", tmp_path / "stl10_binary" / "unlabeled_X.bin")
    both = build_dataset("stl10", tmp_path, "train+unlabeled")
    assert len(both) == 50 and both[49][1] == -1 and both[0][1] == train[0][1]


def test_imagefolder_test_split_is_root_val_for_evaluation_only(tmp_path):
    write_imagefolder(tmp_path, n_train=4, n_test=2, k=3)
    (tmp_path / "test" / "only").mkdir(parents=True)
    shutil.copy(tmp_path / "val" / "class0" / "0.png", tmp_path / "test" / "only" / "0.png")
    evaluated, ident = build_split("imagefolder", tmp_path, "test", None)
    assert len(evaluated) == 6 and ident["split"] == "test"  # ROOT/val
    assert len(build_dataset("imagefolder", tmp_path, "test")) == 1  # ROOT/test
    assert len(build_dataset("imagefolder", tmp_path, "val")) == 6


def test_pretraining_synthetic_is_the_shapes_dataset(tmp_path):
    opts = {"num_images": 12, "image_size": 32, "seed": 3, "clutter": False, "textured_background": True}
    ds = build_dataset("synthetic", None, "test", transform=np.asarray, **opts, grayscale=False)
    ref = SyntheticShapes(12, 32, seed=3, split="test", clutter=False)
    assert repr(ds.dataset) == repr(ref) and len(ds) == 12
    for i in range(12):
        assert ds[i][1] == ref[i][1] and np.array_equal(ds[i][0], np.asarray(ref[i][0]))
    default = build_dataset("synthetic", None)
    assert len(default) == 4000 and default.dataset.image_size == 64  # the documented defaults
    evaluated, _ = build_split("synthetic", None, "train", None, image_size=32)
    assert len(evaluated) == registry.SYNTHETIC_SIZES["train"] == 2000


def test_unreadable_images_are_skipped_in_pretraining_refused_in_evaluation(tmp_path):
    write_imagefolder(tmp_path, n_train=2, n_test=2, k=2)
    (tmp_path / "val" / "class1" / "bad.png").write_bytes(b"not an image")
    tf = lambda image: torch.zeros(3, 4, 4)  # noqa: E731
    pre = build_dataset("imagefolder", tmp_path, "val", transform=tf)
    items = [pre[i] for i in range(len(pre))]
    assert sum(item is None for item in items) == 1
    images, labels, skipped = collate_images(items)
    assert images.shape == (4, 3, 4, 4) and skipped == 1 and labels.tolist() == [0, 0, 1, 1]
    ev, _ = build_split("imagefolder", tmp_path, "test", tf)
    with pytest.raises(ValueError, match="1 unreadable image"):
        collate_pairs([ev[i] for i in range(len(ev))])
    images, labels = collate_pairs([ev[i] for i in range(len(ev)) if ev[i] is not None])
    assert images.shape == (4, 3, 4, 4) and labels.tolist() == [0, 0, 1, 1]


def test_a_new_dataset_is_one_registry_entry(tmp_path, monkeypatch):
    """Both sides read a dataset added only to the registry, with its layout in the missing-files error."""
    entry = registry.DatasetInfo(
        "tiny",
        "Tiny",
        "ROOT/tiny/<class>/<image files>",
        "tiny",
        ("train", "test"),
        lambda r, s, dl, **_: SyntheticShapes(6 if s == "train" else 4, 32, split=s),
        pretrain=True,
        num_classes=10,
    )
    monkeypatch.setitem(registry.DATASETS, "tiny", entry)
    assert "tiny" in registry.dataset_names(pretrain=True)
    with pytest.raises(FileNotFoundError, match="Tiny not found.*ROOT/tiny/<class>"):
        build_dataset("tiny", tmp_path)
    (tmp_path / "tiny").mkdir()
    assert len(build_dataset("tiny", tmp_path, "train")) == 6
    ds, ident = build_split("tiny", tmp_path, "test", None)
    assert len(ds) == 4 and ident == {"name": "tiny", "root": str(tmp_path.resolve()), "split": "test"}


def test_registry_entries_are_complete():
    names = registry.dataset_names()
    assert registry.dataset_names(pretrain=True) == PRETRAIN
    assert set(names) - set(registry.dataset_names(multilabel=False)) == {"voc2007", "folder"}
    assert set(registry.TRANSFER_SUITE) <= set(names) and len(set(names)) == len(names)
    for info in registry.DATASETS.values():
        assert info.splits and ({"train", "test"} <= set(info.splits) or not info.labelled), info.name
        assert info.metric in ("top1", "mean_per_class", "map11")
        assert not info.on_disk or (info.layout.startswith("ROOT/") and info.marker in info.layout), info.name
        assert set(info.protocol) <= set(info.splits), info.name


def test_registry_imports_nothing_heavy():
    """`dataset_names()` serves CLI help: the registry module must not import torch, torchvision or numpy."""
    pkg = Path(registry.__file__).parent
    code = f"""
import json, sys, types
for name, path in (("gsg_zoo", {str(pkg.parent)!r}), ("gsg_zoo.data", {str(pkg)!r})):
    stub = types.ModuleType(name); stub.__path__ = [path]; sys.modules[name] = stub  # skip the __init__s
from gsg_zoo.data.registry import dataset_names
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "numpy", "PIL"))
print(json.dumps([dataset_names(), heavy]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names, heavy = json.loads(out)
    assert names == list(registry.dataset_names()) and heavy == []
