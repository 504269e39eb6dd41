"""The one dataset registry of pretraining and evaluation: name -> how to read each split, and its protocol.

A dataset is one :class:`DatasetInfo` entry of :data:`DATASETS`: its layout (the text every "not found"
error names), splits, builder and, for evaluation, metric and class count; ``pretrain=True`` also offers
it to ``gsg pretrain``. Builders import :mod:`.readers` on first use, so :func:`dataset_names` serves
command-line help without torch. Protocol choices where torchvision has no split:
docs/reference/datasets.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

Builder = Callable[..., Any]  # (root: Path, split: str, download: bool, **options) -> Dataset of (PIL, label)


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: where it lives, how each split is read, how evaluation scores it."""

    name: str
    title: str
    layout: str  # the expected files under ROOT, named by every "not found" error
    marker: str  # path under ROOT that must exist ("" : ROOT itself)
    splits: tuple[str, ...]  # the evaluation protocol's: "train", "test" and, where official, "val"
    build: Builder
    more_splits: tuple[str, ...] = ()  # further readable splits (e.g. STL-10's unlabeled images)
    any_split: bool = False  # every name is a split (ImageFolder's folders, the synthetic streams)
    pretrain: bool = False  # offered to pretraining (labels: one int per image)
    metric: str = "top1"  # top1 | mean_per_class | map11
    num_classes: int | None = None
    multilabel: bool = False
    notes: str = ""
    on_disk: bool = True
    downloadable: bool = True  # torchvision can fetch it (``download=True``)
    protocol: dict[str, dict[str, Any]] = field(default_factory=dict)  # evaluation split -> build options
    identity: Callable[[Path], dict[str, str]] | None = None  # extra feature-cache identity of a ROOT
    needs_root: bool = False  # not on disk in a fixed layout, yet named by ROOT (a Hub id, a shard pattern)
    labelled: bool = True  # False: images without labels (pretraining only)

    @property
    def has_val(self) -> bool:
        return "val" in self.splits

    def present(self, root: str | os.PathLike | None) -> bool:
        return not self.on_disk or (root is not None and (Path(root).expanduser() / self.marker).exists())

    def check_split(self, split: str) -> None:
        """ValueError unless ``split`` is one this dataset can read."""
        if not self.any_split and split not in self.splits + self.more_splits:
            raise ValueError(f"{self.title} has splits {self.splits + self.more_splits}, not {split!r}")


def _tv() -> ModuleType:
    """``torchvision.datasets``, imported on first use."""
    from torchvision import datasets

    return datasets


def _ld() -> ModuleType:
    """:mod:`gsg_zoo.data.readers`, imported on first use."""
    from . import readers as loaders

    return loaders


def _shards() -> ModuleType:
    from . import shards

    return shards


def _hf() -> ModuleType:
    from . import hf

    return hf


def _mn() -> ModuleType:
    """:mod:`gsg_zoo.data.mnist`, imported on first use."""
    from . import mnist

    return mnist


def _mnist_layout(folder: str, flat_example: str) -> str:
    """The two layouts of the MNIST family (named by every "not found" error)."""
    example = f" (e.g. {flat_example})" if flat_example else ""
    return (
        f"ROOT/{folder}/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz] (torchvision's layout), "
        f"or ROOT/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz] (a folder of the four files{example})"
    )


#: (name, title, torchvision folder, an example of the flat layout): :mod:`.mnist` reads them
_MNIST_FAMILY = (
    ("fashion_mnist", "Fashion-MNIST", "FashionMNIST", "/usr/share/datasets/fashion-mnist"),
    ("mnist", "MNIST", "MNIST", ""),
    ("kmnist", "KMNIST", "KMNIST", ""),
)

SYNTHETIC_SIZES = {"train": 2000, "test": 1000}  # the evaluation protocol's synthetic splits

DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            "synthetic",
            "Synthetic shapes",
            "nothing on disk (built in)",
            "",
            ("train", "test"),
            lambda r, s, dl, **o: _ld().synthetic(s, **o),
            any_split=True,
            pretrain=True,
            on_disk=False,
            downloadable=False,
            protocol={s: {"num_images": n} for s, n in SYNTHETIC_SIZES.items()},
            notes="gsg_zoo.data.synthetic.SyntheticShapes, 2000 train / 1000 test",
        ),
        DatasetInfo(
            "cifar10",
            "CIFAR-10",
            "ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
            "cifar-10-batches-py",
            ("train", "test"),
            lambda r, s, dl, **_: _ld().SafeCIFAR10(r, train=s == "train", download=dl),
            pretrain=True,
            num_classes=10,
        ),
        DatasetInfo(
            "cifar100",
            "CIFAR-100",
            "ROOT/cifar-100-python/{train,test,meta}",
            "cifar-100-python",
            ("train", "test"),
            lambda r, s, dl, **_: _ld().SafeCIFAR100(r, train=s == "train", download=dl),
            pretrain=True,
            num_classes=100,
        ),
        DatasetInfo(
            "stl10",
            "STL-10",
            "ROOT/stl10_binary/{train_X.bin,train_y.bin,test_X.bin,test_y.bin,unlabeled_X.bin}",
            "stl10_binary",
            ("train", "test"),
            lambda r, s, dl, **_: _ld().PresentSTL10(str(r), split=s, download=dl),
            more_splits=("unlabeled", "train+unlabeled"),
            pretrain=True,
            num_classes=10,
        ),
        DatasetInfo(
            "hf",
            "Hugging Face dataset",
            "ROOT: a save_to_disk folder, a folder of parquet files in the Hub's layouts (ROOT/data/<split>-*"
            ".parquet, ROOT/<split>/*.parquet, a README.md `configs:` card) or a Hub id ORG/NAME",
            "",
            ("train", "test"),
            lambda r, s, dl, **o: _hf().open_hf(r, s, **o),
            any_split=True,
            pretrain=True,
            downloadable=False,
            on_disk=False,
            needs_root=True,
            notes="columns data.hf.image_column / data.hf.label_column (image, label); needs the data extra",
        ),
        DatasetInfo(
            "webdataset",
            "WebDataset shards",
            "ROOT: a folder of .tar shards (ROOT/<split>/ or ROOT/*.tar, named by split or not; a gsg "
            "manifest.json when present), a pattern DIR/NAME-{0000..0099}.tar (several joined by ::), a "
            "text file listing shards, or a wids shard-index JSON",
            "",
            ("train", "test"),
            lambda r, s, dl, **o: _shards().open_shards(r, s, **o),
            any_split=True,
            pretrain=True,
            downloadable=False,
            on_disk=False,
            needs_root=True,
            notes="written by gsg data shard or any WebDataset writer (data.wds keys); needs the data extra",
        ),
        DatasetInfo(
            "folder",
            "Unlabeled image folder",
            "ROOT/<image files>, flat or in subfolders at any depth (ROOT/<split>/ when it exists)",
            "",
            ("train",),
            lambda r, s, dl, encoded=False, **_: _ld().unlabelled_folder(r, s, encoded),
            any_split=True,
            pretrain=True,
            downloadable=False,
            labelled=False,
            notes="pretraining only: no labels (evaluation and the kNN monitor refuse it)",
        ),
        DatasetInfo(
            "imagefolder",
            "ImageFolder",
            "ROOT/<split>/<class>/<image files> (ImageNet: ROOT/train, ROOT/val)",
            "",
            ("train", "test"),
            lambda r, s, dl, folder=None, encoded=False, **_: _ld().image_folder(r, s, folder, encoded),
            any_split=True,
            pretrain=True,
            downloadable=False,
            protocol={"test": {"folder": "val"}},
            notes="ROOT/train and ROOT/val (the test split)",
        ),
        *(
            DatasetInfo(
                name,
                title,
                _mnist_layout(folder, flat),
                "",
                ("train", "test"),
                lambda r, s, dl, _n=name, **o: _mn().open_mnist(_n, r, s, dl, **o),
                pretrain=True,
                num_classes=10,
                notes="28 px zero-padded to 32 (then resized), grey in 3 channels",
            )
            for name, title, folder, flat in _MNIST_FAMILY
        ),
        DatasetInfo(
            "aircraft",
            "FGVC-Aircraft",
            "ROOT/fgvc-aircraft-2013b/data/...",
            "fgvc-aircraft-2013b",
            ("train", "val", "test"),
            lambda r, s, dl, **_: _tv().FGVCAircraft(str(r), split=s, download=dl),
            metric="mean_per_class",
            num_classes=100,
        ),
        DatasetInfo(
            "caltech101",
            "Caltech-101",
            "ROOT/caltech101/101_ObjectCategories/<class>/image_NNNN.jpg",
            "caltech101/101_ObjectCategories",
            ("train", "test"),
            lambda r, s, dl, **_: _ld().caltech101(r, s, dl),
            metric="mean_per_class",
            num_classes=102,
            identity=lambda r: _ld().caltech101_identity(r),
            notes="102 classes; ROOT/caltech101/{train,test}.txt if present, else ssl-transfer's seed-0 draw",
        ),
        DatasetInfo(
            "cars",
            "Stanford Cars",
            "ROOT/stanford_cars/{devkit/,cars_train/,cars_test/,cars_test_annos_withlabels.mat}",
            "stanford_cars",
            ("train", "test"),
            lambda r, s, dl, **_: _tv().StanfordCars(str(r), split=s, download=dl),
            num_classes=196,
        ),
        DatasetInfo(
            "dtd",
            "DTD",
            "ROOT/dtd/dtd/{images,labels}/",
            "dtd/dtd",
            ("train", "val", "test"),
            lambda r, s, dl, **_: _tv().DTD(str(r), split=s, partition=1, download=dl),
            num_classes=47,
            notes="official split 1",
        ),
        DatasetInfo(
            "flowers",
            "Flowers-102",
            "ROOT/flowers-102/{jpg/,imagelabels.mat,setid.mat}",
            "flowers-102",
            ("train", "val", "test"),
            lambda r, s, dl, **_: _ld().PresentFlowers102(str(r), split=s, download=dl),
            metric="mean_per_class",
            num_classes=102,
        ),
        DatasetInfo(
            "food101",
            "Food-101",
            "ROOT/food-101/{images,meta}/",
            "food-101",
            ("train", "test"),
            lambda r, s, dl, **_: _tv().Food101(str(r), split=s, download=dl),
            num_classes=101,
        ),
        DatasetInfo(
            "pets",
            "Oxford-IIIT Pets",
            "ROOT/oxford-iiit-pet/{images,annotations}/",
            "oxford-iiit-pet",
            ("train", "test"),
            lambda r, s, dl, **_: _tv().OxfordIIITPet(
                str(r), split="trainval" if s == "train" else s, download=dl
            ),
            metric="mean_per_class",
            num_classes=37,
            notes="official trainval / test",
        ),
        DatasetInfo(
            "sun397",
            "SUN397",
            "ROOT/SUN397/{ClassName.txt,<letter>/<class>/sun_*.jpg} [+ Training_01.txt, Testing_01.txt]",
            "SUN397",
            ("train", "test"),
            lambda r, s, dl, **_: _ld().sun397(r, s, dl),
            num_classes=397,
            identity=lambda r: _ld().sun397_identity(r),
            notes="partition 01 (Training_01.txt / Testing_01.txt) when present",
        ),
        DatasetInfo(
            "voc2007",
            "Pascal VOC2007",
            "ROOT/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main}/",
            "VOCdevkit/VOC2007",
            ("train", "val", "test"),
            lambda r, s, dl, **_: _tv().VOCDetection(
                str(r), year="2007", image_set=s, download=dl, target_transform=_ld().VOCMultiHot()
            ),
            metric="map11",
            num_classes=20,
            multilabel=True,
            notes="one binary classifier per class, difficult-only images negative",
        ),
    )
}
#: The "How Well Do Self-Supervised Models Transfer?" many-shot linear suite, in the paper's order.
TRANSFER_SUITE = (
    "aircraft",
    "caltech101",
    "cars",
    "cifar10",
    "cifar100",
    "dtd",
    "flowers",
    "food101",
    "pets",
    "sun397",
    "voc2007",
)


def dataset_names(pretrain: bool = False, multilabel: bool = True) -> tuple[str, ...]:
    """Registered names in registry order; torch-free, for command-line help.

    ``pretrain=True``: only those pretraining reads; ``multilabel=False``: without the multi-label ones
    (VOC2007) and the unlabelled ones, i.e. what ``gsg eval knn`` / ``gsg eval linear`` accept.
    """
    return tuple(
        n
        for n, d in DATASETS.items()
        if (d.pretrain or not pretrain) and (multilabel or (not d.multilabel and d.labelled))
    )


def get_info(name: str, pretrain: bool = False) -> DatasetInfo:
    """The entry of ``name`` (any case); ValueError naming the choices for an unknown one."""
    info = DATASETS.get(name.lower())
    if info is None or (pretrain and not info.pretrain):
        kind = "pretraining dataset" if pretrain else "dataset"
        raise ValueError(f"unknown {kind} {name!r}; choose from {', '.join(dataset_names(pretrain))}")
    return info


def require_labels(info: DatasetInfo, dataset: Any, where: str) -> None:
    """ValueError unless every image of ``dataset`` has a label (what evaluation and the monitor need)."""
    reason = "the images have no labels" if not info.labelled else getattr(dataset, "unlabelled", None)
    if reason:
        raise ValueError(
            f"{info.title} at {where}: {reason}; this needs a label per image: use labelled data "
            "(e.g. imagefolder, ROOT/<split>/<class>/<image>), or pretrain only with --set monitor.every=-1"
        )


def open_split(
    info: DatasetInfo, root: str | os.PathLike | None, split: str, download: bool = False, **options: Any
) -> Any:
    """``info``'s ``split`` as a dataset of ``(PIL image, label)``, read from ``root``.

    ``options`` go to the builder (the synthetic data's ``num_images``, ``image_size``, ...; others
    ignore them). ValueError for a split the dataset lacks or a missing ``root``; FileNotFoundError
    naming the expected layout when the files are not there.
    """
    info.check_split(split)
    if not info.on_disk:  # built in, or named by an id (a Hugging Face dataset)
        if info.needs_root and root is None:
            raise ValueError(f"{info.title} needs --data ROOT ({info.layout})")
        return info.build(Path(root) if root else Path("."), split, download, **options)
    if root is None:
        raise ValueError(f"{info.title} needs --data ROOT (expected layout: {info.layout})")
    path = Path(root).expanduser()
    hint = " (or pass --download to fetch it)" if info.downloadable and not download else ""
    if not download and not info.present(path):
        raise FileNotFoundError(
            f"{info.title} not found: expected {path / info.marker}; layout {info.layout}{hint}"
        )
    try:
        return info.build(path, split, download, **options)
    except (RuntimeError, FileNotFoundError) as err:  # torchvision: "Dataset not found or corrupted"
        if isinstance(err, RuntimeError) and "not found" not in str(err).lower():
            raise
        raise FileNotFoundError(
            f"{info.title} {split!r} not found under {path}: expected {info.layout}{hint}. ({err})"
        ) from err
