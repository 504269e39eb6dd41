"""Readers behind the dataset registry (:mod:`gsg_zoo.data.registry`): safe and presence-checked.

Every reader yields ``(PIL image, label)`` in torchvision's on-disk layout, never unpickles code, checks
that files are present instead of hashing them, and names an unreadable image's path. The split
protocols torchvision lacks (Caltech-101, SUN397) are here too: docs/reference/datasets.md.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tvd

from .images import open_image

log = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
SPLIT_SEED = 0  # the seed of every split drawn where no official one exists

# ----------------------------------------------------------------------------- CIFAR


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


def load_batch(path: Path) -> dict[str, Any]:
    """One CIFAR batch file (a pickled dict) read with :class:`_ArrayUnpickler`."""
    with open(path, "rb") as f:
        return _ArrayUnpickler(f, encoding="latin1").load()


class SafeCIFAR10(tvd.CIFAR10):
    """torchvision's CIFAR-10 reading its pickled batches with a numpy-only unpickler.

    ``data``: uint8 ``[N, 32, 32, 3]`` and ``targets``: ``N`` ints, exactly as torchvision reads them.
    Files are checked for presence (not MD5, which costs seconds per load); ``download=True`` still
    verifies the archive.
    """

    def __init__(
        self, root: str | Path, train: bool = True, transform: Callable | None = None, download: bool = False
    ) -> None:
        tvd.VisionDataset.__init__(self, str(root), transform=transform)
        self.train = train
        if download:
            self.download()
        base = Path(self.root) / self.base_folder
        files = [f for f, _ in (self.train_list if train else self.test_list)] + [self.meta["filename"]]
        missing = [f for f in files if not (base / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{base}: missing {missing}")
        data, self.targets = [], []
        for f in files[:-1]:
            entry = load_batch(base / f)
            data.append(np.asarray(entry["data"], dtype=np.uint8))
            self.targets.extend(int(x) for x in entry.get("labels", entry.get("fine_labels", [])))
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self.classes = list(load_batch(base / self.meta["filename"])[self.meta["key"]])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class SafeCIFAR100(SafeCIFAR10):
    """CIFAR-100 (fine labels) through :class:`SafeCIFAR10`'s reader."""

    base_folder = tvd.CIFAR100.base_folder
    url, filename, tgz_md5 = tvd.CIFAR100.url, tvd.CIFAR100.filename, tvd.CIFAR100.tgz_md5
    train_list, test_list, meta = tvd.CIFAR100.train_list, tvd.CIFAR100.test_list, tvd.CIFAR100.meta


# ----------------------------------------------------------------------------- presence-checked classes

STL10_FILES = {
    "train": ("train_X.bin", "train_y.bin"),
    "test": ("test_X.bin", "test_y.bin"),
    "unlabeled": ("unlabeled_X.bin",),
    "train+unlabeled": ("train_X.bin", "train_y.bin", "unlabeled_X.bin"),
}


class PresentSTL10(tvd.STL10):
    """STL-10 checking that the binaries of its split exist (no MD5 over the 2.6 GB unlabelled file)."""

    def _check_integrity(self) -> bool:
        base = Path(self.root) / self.base_folder
        return all((base / f).is_file() for f in STL10_FILES[self.split])


class PresentFlowers102(tvd.Flowers102):
    """Flowers-102 checking that its files exist (no MD5)."""

    def _check_integrity(self) -> bool:
        files = [self._base_folder / self._file_dict[k][0] for k in ("label", "setid")]
        return self._images_folder.is_dir() and all(f.is_file() for f in files)


WARN_FIRST, WARN_EVERY = 20, 1000  # unreadable images: the first ones are each logged, then 1 in 1000
_unreadable_seen = 0  # in this process (each DataLoader worker counts its own)


def warn_unreadable(path: object, err: BaseException) -> None:
    """Log an unreadable image with its path, rate-limited: a failing disk must not flood the log."""
    global _unreadable_seen
    _unreadable_seen += 1
    n = _unreadable_seen
    if n <= WARN_FIRST or n % WARN_EVERY == 0:
        more = f"; from now on 1 in {WARN_EVERY} is logged" if n == WARN_FIRST else ""
        log.warning("unreadable image %s: %s (%d in this process%s)", path, err, n, more)


class SafeImageFolder(tvd.ImageFolder):
    """ImageFolder that reports an unreadable image with its path and yields ``None`` for it; with
    ``encoded`` its JPEGs are left encoded (:func:`.images.open_image`)."""

    encoded = False

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path, target = self.samples[index]
        try:
            img = open_image(Path(path).read_bytes(), self.encoded)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            warn_unreadable(path, err)
            return None
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def image_folder(root: Path, split: str, folder: str | None = None, encoded: bool = False) -> SafeImageFolder:
    """``ROOT/<folder or split>/<class>/<image>``; a missing folder raises FileNotFoundError."""
    path = root / (folder or split)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    images = SafeImageFolder(str(path))
    images.encoded = encoded
    return images


class UnlabelledImages(Dataset):
    """Every image file under a folder (flat or nested, symlinks followed), label -1; ``None`` for an
    unreadable one (logged with its path). Files in sorted path order; extensions are torchvision's."""

    unlabelled = "an unlabeled image folder (data.dataset=folder)"

    def __init__(self, root: Path, encoded: bool = False) -> None:
        self.root, self.encoded = root, encoded
        self.samples = [(str(p), -1) for p in image_files(root)]
        if not self.samples:
            raise FileNotFoundError(
                f"no image files under {root} (extensions {', '.join(tvd.folder.IMG_EXTENSIONS)}, in any "
                "subfolder): point data.root at the folder of images"
            )

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [-1] * len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path = self.samples[index][0]
        try:
            return open_image(Path(path).read_bytes(), self.encoded), -1
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            warn_unreadable(path, err)
            return None


def image_files(root: Path) -> list[Path]:
    """Image files under ``root`` at any depth, following symlinked folders once each (no cycles)."""
    import os

    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found += [Path(folder) / f for f in files if f.lower().endswith(tvd.folder.IMG_EXTENSIONS)]
    return sorted(p for p in found if p.is_file())


def unlabelled_folder(root: Path, split: str, encoded: bool = False) -> UnlabelledImages:
    """``data.dataset=folder``: the images under ``ROOT/<split>`` when that folder exists, else ``ROOT``."""
    folder = root / split if (root / split).is_dir() else root
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    return UnlabelledImages(folder, encoded)


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


# ----------------------------------------------------------------------------- protocol splits


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


CALTECH_TRAIN_PER_CLASS = 30


def caltech101_images(root: Path, download: bool = False) -> SafeImageFolder:
    """All 102 classes (``BACKGROUND_Google`` included) of ``ROOT/caltech101/101_ObjectCategories`` in
    torchvision ImageFolder order, as ssl-transfer's ``datasets/caltech101.py`` reads them."""
    if download:  # torchvision fetches the archive into the same layout
        tvd.Caltech101(str(root), target_type="category", download=True)
    return image_folder(root / "caltech101", "101_ObjectCategories")


def caltech101_split_files(root: Path) -> tuple[Path, Path] | None:
    """``(ROOT/caltech101/train.txt, test.txt)`` (ssl-transfer's published split) if both exist."""
    files = (root / "caltech101" / "train.txt", root / "caltech101" / "test.txt")
    return files if all(f.is_file() for f in files) else None


def caltech101_generated_split(
    labels: list[int], per_class: int = CALTECH_TRAIN_PER_CLASS, seed: int = SPLIT_SEED
) -> tuple[list[int], list[int]]:
    """ssl-transfer's ``create_caltech101_splits``: ``np.random.seed(0)``, then per class (in label order)
    ``np.sort(np.random.choice(indices, 30))`` (with replacement); train = the distinct drawn indices
    (the published ``train.txt`` lists each once: 2,416 images), test = every image never drawn."""
    rng = np.random.RandomState(seed)  # the same draws as np.random.seed(seed) + np.random.choice
    by_class: dict[int, list[int]] = {c: [] for c in range(max(labels) + 1)}
    for i, c in enumerate(labels):
        by_class[c].append(i)
    drawn = [int(i) for c in by_class for i in np.sort(rng.choice(by_class[c], per_class))]
    train = sorted(set(drawn))
    return train, sorted(set(range(len(labels))) - set(train))


def _read_caltech101_split(images: SafeImageFolder, path: Path) -> list[int]:
    """Indices into ``images`` of the ``class/image_XXXX.jpg LABEL`` lines of ``path`` (labels checked)."""
    base = Path(images.root)
    index = {Path(p).relative_to(base).as_posix(): i for i, (p, _) in enumerate(images.samples)}
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rel, label = line.split(" ")[0], int(line.split(" ")[1])
        if rel not in index:
            raise FileNotFoundError(f"{path} lists {rel}, not found under {base}")
        if images.samples[index[rel]][1] != label:
            raise ValueError(
                f"{path}: {rel} has label {label}, ImageFolder order gives {images.samples[index[rel]][1]}"
            )
        out.append(index[rel])
    return out


def caltech101(root: Path, split: str, download: bool) -> Dataset:
    """Caltech-101, 102 classes: ``ROOT/caltech101/{train,test}.txt`` when present, else the split
    generated by :func:`caltech101_generated_split` (the same procedure; see :func:`caltech101_identity`)."""
    images = caltech101_images(root, download)
    files = caltech101_split_files(root)
    if files is not None:
        return Subset(images, _read_caltech101_split(images, files[0 if split == "train" else 1]))
    train, test = caltech101_generated_split([label for _, label in images.samples])
    return Subset(images, train if split == "train" else test)


def caltech101_identity(root: Path) -> dict[str, str]:
    """Which Caltech-101 split ``root`` gives: its split files (by content hash) or the generated one."""
    import hashlib

    files = caltech101_split_files(root)
    if files is None:
        return {"caltech101_split": f"generated-seed{SPLIT_SEED}"}
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
    return {"caltech101_split": f"files-{digest}"}


def sun397_partition(root: Path) -> tuple[Path, Path] | None:
    """``(Training_01.txt, Testing_01.txt)`` of the official partition 01, if present under ``root``."""
    for d in (root / "SUN397", root / "SUN397" / "Partitions", root / "Partitions"):
        if (d / "Training_01.txt").is_file() and (d / "Testing_01.txt").is_file():
            return d / "Training_01.txt", d / "Testing_01.txt"
    return None


def sun397(root: Path, split: str, download: bool) -> Dataset:
    """SUN397: partition 01 where present, else a seeded split (50/50 per class, half/half if smaller)."""
    full = tvd.SUN397(str(root), download=download)
    files = sorted(range(len(full)), key=lambda i: str(full._image_files[i]))  # rglob order varies
    partition = sun397_partition(root)
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


def sun397_identity(root: Path) -> dict[str, str]:
    """Which SUN397 split protocol ``root`` gives: ``{"partition": "01"}`` or ``"seeded-0"``."""
    return {"partition": "01" if sun397_partition(root) else f"seeded-{SPLIT_SEED}"}


def synthetic(
    split: str,
    num_images: int = 4000,
    image_size: int = 64,
    seed: int = 0,
    textured_background: bool = True,
    clutter: bool = True,
    grayscale: bool = False,
    **_: Any,
) -> Dataset:
    """The built-in :class:`~gsg_zoo.data.synthetic.SyntheticShapes` (rendered on the fly)."""
    from .synthetic import SyntheticShapes

    return SyntheticShapes(
        num_images=int(num_images),
        image_size=int(image_size),
        seed=int(seed),
        split=split,
        textured_background=bool(textured_background),
        clutter=bool(clutter),
        grayscale=bool(grayscale),
    )
