"""Evaluation dataset registry: torchvision's classes in their on-disk layouts, official splits.

Every dataset lives under one ``--data ROOT`` in the layout its torchvision class reads (the
layouts do not collide, so one ROOT can hold the whole transfer suite)::

    cifar10      ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}
    cifar100     ROOT/cifar-100-python/{train,test,meta}
    stl10        ROOT/stl10_binary/{train,test}_{X,y}.bin
    imagefolder  ROOT/train/<class>/*, ROOT/val/<class>/*     (the "test" split is ROOT/val)
    synthetic    nothing on disk: gsg_zoo.data.synthetic.SyntheticShapes, 2000 train / 1000 test
    aircraft     ROOT/fgvc-aircraft-2013b/data/...             (official train / val / test)
    caltech101   ROOT/caltech101/101_ObjectCategories/<class>/image_NNNN.jpg
    cars         ROOT/stanford_cars/{devkit/,cars_train/,cars_test/,cars_test_annos_withlabels.mat}
    dtd          ROOT/dtd/dtd/{images,labels}/                 (official split 1: train1/val1/test1)
    flowers      ROOT/flowers-102/{jpg/,imagelabels.mat,setid.mat}  (official train / val / test)
    food101      ROOT/food-101/{images,meta}/
    pets         ROOT/oxford-iiit-pet/{images,annotations}/    (official trainval / test)
    sun397       ROOT/SUN397/{ClassName.txt,<letter>/<class>/sun_*.jpg} [+ Training_01.txt, Testing_01.txt]
    voc2007      ROOT/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main}/  (train / val / test)

Protocol choices where torchvision has no split (Ericsson et al. 2021):

* Caltech-101: 30 training images per class drawn with a fixed seed (0), the rest is test
  (torchvision drops ``BACKGROUND_Google``, so 101 classes).
* SUN397: torchvision's class has no partitions; the official partition 01 is read from
  ``Training_01.txt`` / ``Testing_01.txt`` in ``ROOT/SUN397/``, ``ROOT/SUN397/Partitions/`` or
  ``ROOT/Partitions/`` (from the official ``Partitions.zip``). Without them a seeded split of the
  same size (50 train / 50 test images per class, half/half for smaller classes) is used and
  reported as such.
* VOC2007: multi-label targets: a class is positive when the image holds a non-difficult object of
  it; images whose only objects of a class are "difficult" count as negatives.
* A validation split, where none is official, is a seeded 20% of the training split.

Nothing is downloaded unless ``download=True`` (``--download``).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tvd
from torchvision import transforms as T

from ..data.augment import ToRGB, _interp, eval_transform  # noqa: F401  (re-exported)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
SYNTHETIC_SIZES = {"train": 2000, "test": 1000}
SPLIT_SEED = 0
VAL_FRACTION = 0.2

# ----------------------------------------------------------------------------- transforms


def train_transform(size: int, mean: Any, std: Any, interpolation: str = "bilinear") -> T.Compose:
    """The linear-probe augmentation: ``RandomResizedCrop(size)`` + horizontal flip."""
    return T.Compose(
        [
            ToRGB(),
            T.RandomResizedCrop(size, interpolation=_interp(interpolation)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(tuple(float(m) for m in mean), tuple(float(s) for s in std)),
        ]
    )


# ----------------------------------------------------------------------------- safe loaders


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: CIFAR batches, never arbitrary code."""

    ALLOWED = {
        (m, n)
        for m in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy")
        for n in ("_reconstruct", "ndarray", "dtype", "scalar")
    } | {("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: not a CIFAR batch file")


def _load_batch(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return _ArrayUnpickler(f, encoding="latin1").load()


class SafeCIFAR10(tvd.CIFAR10):
    """torchvision's CIFAR-10 reading its pickled batches with a numpy-only unpickler.

    Files are checked for presence (not MD5, which costs seconds per load); ``download=True``
    still verifies the archive.
    """

    def __init__(self, root: str | Path, train: bool = True, transform: Callable | None = None,
                 download: bool = False) -> None:  # fmt: skip
        tvd.VisionDataset.__init__(self, str(root), transform=transform)
        self.train = train
        if download:
            self.download()
        base = Path(self.root) / self.base_folder
        files = [f for f, _ in (self.train_list if train else self.test_list)] + [self.meta["filename"]]
        missing = [f for f in files if not (base / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{base}: missing {missing} (download with --download)")
        data, self.targets = [], []
        for f in files[:-1]:
            entry = _load_batch(base / f)
            data.append(np.asarray(entry["data"], dtype=np.uint8))
            self.targets.extend(int(x) for x in entry.get("labels", entry.get("fine_labels", [])))
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self.classes = list(_load_batch(base / self.meta["filename"])[self.meta["key"]])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class SafeCIFAR100(SafeCIFAR10):
    base_folder = tvd.CIFAR100.base_folder
    url, filename, tgz_md5 = tvd.CIFAR100.url, tvd.CIFAR100.filename, tvd.CIFAR100.tgz_md5
    train_list, test_list, meta = tvd.CIFAR100.train_list, tvd.CIFAR100.test_list, tvd.CIFAR100.meta


class PresentSTL10(tvd.STL10):
    """STL-10 checking that its labelled binaries exist (no MD5; ``unlabeled_X.bin`` not required)."""

    def _check_integrity(self) -> bool:
        base = Path(self.root) / self.base_folder
        return all((base / f).is_file() for f in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"))


class PresentFlowers102(tvd.Flowers102):
    """Flowers-102 checking that its files exist (no MD5)."""

    def _check_integrity(self) -> bool:
        files = [self._base_folder / self._file_dict[k][0] for k in ("label", "setid")]
        return self._images_folder.is_dir() and all(f.is_file() for f in files)


class VOCMultiHot:
    """VOC XML dict -> float multi-hot ``[20]``: 1 where a non-difficult object of the class is present."""

    def __call__(self, target: dict[str, Any]) -> Tensor:
        objects = target["annotation"].get("object", [])
        objects = objects if isinstance(objects, list) else [objects]
        y = torch.zeros(len(VOC_CLASSES))
        for obj in objects:
            if str(obj.get("difficult", "0")).strip() != "1":
                y[VOC_CLASSES.index(obj["name"].strip())] = 1.0
        return y

    def __repr__(self) -> str:
        return "VOCMultiHot()"


class Transformed(Dataset):
    """Apply ``transform`` to the image of a dataset of ``(image, label)`` pairs."""

    def __init__(self, dataset: Dataset, transform: Callable | None) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        image, label = self.dataset[index]
        return (self.transform(image) if self.transform else image), label


# ----------------------------------------------------------------------------- split helpers


def per_class_split(
    labels: list[int], n_first: int, seed: int, n_second: int | None = None
) -> tuple[list, list]:
    """Seeded per-class split: ``n_first`` indices per class, then ``n_second`` (None: all the rest)."""
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    first, second = [], []
    for c in np.unique(labels_arr):
        idx = rng.permutation(np.flatnonzero(labels_arr == c))
        first.extend(idx[:n_first].tolist())
        rest = idx[n_first:]
        second.extend((rest if n_second is None else rest[:n_second]).tolist())
    return sorted(first), sorted(second)


def _caltech101(root: Path, split: str, download: bool) -> Dataset:
    full = tvd.Caltech101(str(root), target_type="category", download=download)
    train, test = per_class_split(full.y, 30, SPLIT_SEED)
    return Subset(full, train if split == "train" else test)


def _sun397_partition(root: Path) -> tuple[Path, Path] | None:
    for d in (root / "SUN397", root / "SUN397" / "Partitions", root / "Partitions"):
        if (d / "Training_01.txt").is_file() and (d / "Testing_01.txt").is_file():
            return d / "Training_01.txt", d / "Testing_01.txt"
    return None


def _sun397(root: Path, split: str, download: bool) -> Dataset:
    full = tvd.SUN397(str(root), download=download)
    files = sorted(range(len(full)), key=lambda i: str(full._image_files[i]))  # rglob order varies
    partition = _sun397_partition(root)
    if partition is None:
        labels = [full._labels[i] for i in files]
        counts = np.bincount(labels)
        n = int(min(50, counts.min() // 2)) if len(counts) else 0
        a, b = per_class_split(labels, n, SPLIT_SEED, n_second=n)
        chosen = [files[i] for i in (a if split == "train" else b)]
    else:
        by_rel = {"/" + full._image_files[i].relative_to(full._data_dir).as_posix(): i for i in files}
        lines = partition[0 if split == "train" else 1].read_text().split()
        missing = [p for p in lines if p not in by_rel]
        if missing:
            raise FileNotFoundError(
                f"SUN397 partition lists {len(missing)} images not on disk, e.g. {missing[0]}"
            )
        chosen = [by_rel[p] for p in lines]
    return Subset(full, chosen)


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetInfo:
    """One evaluation dataset: where it lives, its splits, how it is scored."""

    name: str
    title: str
    marker: str  # path under ROOT that must exist
    splits: tuple[str, ...]  # "train", "test" and, where official, "val"
    build: Callable[[Path, str, bool], Dataset]  # (root, split, download) -> dataset of (PIL, label)
    metric: str = "top1"  # top1 | mean_per_class | map11
    num_classes: int | None = None
    multilabel: bool = False
    notes: str = ""
    on_disk: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_val(self) -> bool:
        return "val" in self.splits

    def present(self, root: str | os.PathLike | None) -> bool:
        return not self.on_disk or (root is not None and (Path(root) / self.marker).exists())


def _synthetic(root: Path, split: str, download: bool, image_size: int = 64) -> Dataset:
    try:
        from ..data.synthetic import SyntheticShapes
    except ImportError as err:  # pragma: no cover - the module ships with gsg-zoo
        raise RuntimeError(f"the built-in synthetic dataset is unavailable: {err}") from err
    return SyntheticShapes(SYNTHETIC_SIZES[split], image_size=image_size, seed=0, split=split)


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("cifar10", "CIFAR-10", "cifar-10-batches-py", ("train", "test"),
                    lambda r, s, dl: SafeCIFAR10(r, train=s == "train", download=dl), num_classes=10),
        DatasetInfo("cifar100", "CIFAR-100", "cifar-100-python", ("train", "test"),
                    lambda r, s, dl: SafeCIFAR100(r, train=s == "train", download=dl), num_classes=100),
        DatasetInfo("stl10", "STL-10", "stl10_binary", ("train", "test"),
                    lambda r, s, dl: PresentSTL10(str(r), split=s, download=dl), num_classes=10),
        DatasetInfo("imagefolder", "ImageFolder", "train", ("train", "test"),
                    lambda r, s, dl: tvd.ImageFolder(str(Path(r) / ("train" if s == "train" else "val"))),
                    notes="ROOT/train and ROOT/val (the test split)"),
        DatasetInfo("synthetic", "Synthetic shapes", "", ("train", "test"), _synthetic, on_disk=False,
                    notes="gsg_zoo.data.synthetic.SyntheticShapes, 2000 train / 1000 test"),
        DatasetInfo("aircraft", "FGVC-Aircraft", "fgvc-aircraft-2013b", ("train", "val", "test"),
                    lambda r, s, dl: tvd.FGVCAircraft(str(r), split=s, download=dl),
                    metric="mean_per_class", num_classes=100),
        DatasetInfo("caltech101", "Caltech-101", "caltech101/101_ObjectCategories", ("train", "test"),
                    _caltech101, metric="mean_per_class", num_classes=101,
                    notes="30 train images per class (seed 0), rest test"),
        DatasetInfo("cars", "Stanford Cars", "stanford_cars", ("train", "test"),
                    lambda r, s, dl: tvd.StanfordCars(str(r), split=s, download=dl), num_classes=196),
        DatasetInfo("dtd", "DTD", "dtd/dtd", ("train", "val", "test"),
                    lambda r, s, dl: tvd.DTD(str(r), split=s, partition=1, download=dl), num_classes=47,
                    notes="official split 1"),
        DatasetInfo("flowers", "Flowers-102", "flowers-102", ("train", "val", "test"),
                    lambda r, s, dl: PresentFlowers102(str(r), split=s, download=dl),
                    metric="mean_per_class", num_classes=102),
        DatasetInfo("food101", "Food-101", "food-101", ("train", "test"),
                    lambda r, s, dl: tvd.Food101(str(r), split=s, download=dl), num_classes=101),
        DatasetInfo("pets", "Oxford-IIIT Pets", "oxford-iiit-pet", ("train", "test"),
                    lambda r, s, dl: tvd.OxfordIIITPet(str(r), split="trainval" if s == "train" else s,
                                                       download=dl),
                    metric="mean_per_class", num_classes=37, notes="official trainval / test"),
        DatasetInfo("sun397", "SUN397", "SUN397", ("train", "test"), _sun397, num_classes=397,
                    notes="partition 01 (Training_01.txt / Testing_01.txt) when present"),
        DatasetInfo("voc2007", "Pascal VOC2007", "VOCdevkit/VOC2007", ("train", "val", "test"),
                    lambda r, s, dl: tvd.VOCDetection(str(r), year="2007", image_set=s, download=dl,
                                                      target_transform=VOCMultiHot()),
                    metric="map11", num_classes=20, multilabel=True,
                    notes="one binary classifier per class, difficult-only images negative"),
    )
}  # fmt: skip
#: The "How Well Do Self-Supervised Models Transfer?" many-shot linear suite, in the paper's order.
TRANSFER_SUITE = ("aircraft", "caltech101", "cars", "cifar10", "cifar100", "dtd", "flowers", "food101",
                  "pets", "sun397", "voc2007")  # fmt: skip


def get_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}") from None


def build_split(
    name: str,
    root: str | os.PathLike | None,
    split: str,
    transform: Callable | None,
    *,
    download: bool = False,
    image_size: int = 64,
    subset: int | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """``(dataset of (transformed image, label), identity dict for the feature cache)``."""
    info = get_info(name)
    if split not in info.splits:
        raise ValueError(f"{info.title} has splits {info.splits}, not {split!r}")
    if info.on_disk:
        if root is None:
            raise ValueError(f"{info.title} needs --data ROOT (expected ROOT/{info.marker})")
        if not download and not info.present(root):
            raise FileNotFoundError(
                f"{info.title} not found: expected {Path(root) / info.marker} (torchvision's layout; "
                "pass --download to fetch it where torchvision can)"
            )
        try:
            base = info.build(Path(root), split, download)
        except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
            raise FileNotFoundError(f"{info.title} under {root}: {err}") from err
        ident: dict[str, Any] = {"name": info.name, "root": str(Path(root).resolve()), "split": split}
    else:
        base = _synthetic(Path("."), split, download, image_size=image_size)
        ident = {"name": info.name, "split": split, "image_size": image_size}
    if info.name == "sun397":
        ident["partition"] = "01" if _sun397_partition(Path(root)) else f"seeded-{SPLIT_SEED}"  # type: ignore[arg-type]
    if subset is not None and subset < len(base):  # type: ignore[arg-type]
        gen = torch.Generator().manual_seed(SPLIT_SEED)
        base = Subset(base, sorted(torch.randperm(len(base), generator=gen)[:subset].tolist()))  # type: ignore[arg-type]
        ident["subset"] = subset
    return Transformed(base, transform), ident


def num_classes_of(name: str, labels: Tensor) -> int:
    """Number of classes seen in ``labels`` (``max + 1``; multi-hot: its width).

    Taken from the data rather than the registry, so classes absent from a subset get no output
    that regularised fits would have to push to -inf; a label beyond the registry's count is an error.
    """
    n = int(labels.shape[1] if labels.ndim == 2 else labels.max().item() + 1)
    expected = get_info(name).num_classes
    if expected is not None and n > expected:
        raise ValueError(f"{name}: found label {n - 1}, but the dataset has {expected} classes")
    return n


def protocol_indices(train_len: int, seed: int = SPLIT_SEED) -> dict[str, Tensor]:
    """Where no official validation split exists: indices of the seeded 20% val and 80% train."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(train_len, generator=gen)
    n_val = max(1, int(round(VAL_FRACTION * train_len)))
    return {"val": perm[:n_val].sort().values, "train": perm[n_val:].sort().values}
