"""Tiny fake datasets written in the exact on-disk layouts torchvision's classes read.

Every image is a flat class colour plus noise, so a random backbone still separates the classes.
Used by tests/test_eval_*.py; the test writes these files itself (no downloads).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ],
    dtype=np.float64,
)


def class_image(label: int, rng: np.random.Generator, size: int = 16, gray: bool = False) -> np.ndarray:
    base = PALETTE[label % len(PALETTE)] * (0.6 + 0.4 * ((label // len(PALETTE)) % 2))
    img = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    if gray:
        img = img.mean(axis=2).astype(np.uint8)
    return img


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _labels(n: int, k: int) -> list[int]:
    return [i % k for i in range(n)]


def write_cifar(root: Path, hundred: bool = False, n_train: int = 50, n_test: int = 20, k: int = 5) -> None:
    rng = np.random.default_rng(0)
    key = "fine_labels" if hundred else "labels"
    base = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    base.mkdir(parents=True, exist_ok=True)

    def batch(labels: list[int]) -> dict:
        data = np.stack([class_image(y, rng, 32).transpose(2, 0, 1).reshape(-1) for y in labels])
        return {"data": data, key: labels, "batch_label": "fake"}

    train = _labels(n_train, k)
    if hundred:
        files = {"train": batch(train), "test": batch(_labels(n_test, k))}
        files["meta"] = {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": ["x"]}
    else:
        files = {f"data_batch_{i + 1}": batch(train[i::5]) for i in range(5)}
        files["test_batch"] = batch(_labels(n_test, k))
        files["batches.meta"] = {"label_names": [f"c{i}" for i in range(10)]}
    for name, obj in files.items():
        with open(base / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)


def write_stl10(root: Path, n_train: int = 30, n_test: int = 20, k: int = 5) -> None:
    rng = np.random.default_rng(0)
    base = root / "stl10_binary"
    base.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = _labels(n, k)
        x = np.stack([class_image(y, rng, 96).transpose(2, 1, 0) for y in labels])  # column-major, as STL-10
        x.astype(np.uint8).tofile(base / f"{split}_X.bin")
        (np.array(labels, dtype=np.uint8) + 1).tofile(base / f"{split}_y.bin")
    (base / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")


def write_imagefolder(root: Path, n_train: int = 10, n_test: int = 5, k: int = 3) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_test)):
        for c in range(k):
            for i in range(n):
                _save(root / split / f"class{c}" / f"{i}.png", class_image(c, rng))


def write_aircraft(root: Path, per_split: int = 12, k: int = 4) -> None:
    rng = np.random.default_rng(1)
    data = root / "fgvc-aircraft-2013b" / "data"
    names = [f"A3{i}0-{i}00" for i in range(k)]
    (data / "images").mkdir(parents=True, exist_ok=True)
    (data / "variants.txt").write_text("\n".join(names) + "\n")
    img_id = 1000000
    for split in ("train", "val", "test", "trainval"):
        lines = []
        for y in _labels(per_split, k):
            img_id += 1
            _save(data / "images" / f"{img_id}.jpg", class_image(y, rng))
            lines.append(f"{img_id} {names[y]}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")


def write_caltech101(root: Path, per_class: int = 33, k: int = 3) -> None:
    rng = np.random.default_rng(2)
    cats = root / "caltech101" / "101_ObjectCategories"
    for c in range(k):
        for i in range(per_class):  # some grayscale images, as in the real dataset
            _save(cats / f"cls{c}" / f"image_{i + 1:04d}.jpg", class_image(c, rng, gray=i % 7 == 0))
    for i in range(per_class):  # a class of its own in ssl-transfer's protocol (label 0)
        _save(cats / "BACKGROUND_Google" / f"image_{i + 1:04d}.jpg", class_image(9, rng))


def write_cars(root: Path, n_train: int = 16, n_test: int = 12, k: int = 4) -> None:
    import scipy.io as sio

    rng = np.random.default_rng(3)
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True, exist_ok=True)
    sio.savemat(
        base / "devkit" / "cars_meta.mat",
        {"class_names": np.array([f"car {i}" for i in range(k)], dtype=object)},
    )
    for split, n, ann in (
        ("train", n_train, base / "devkit" / "cars_train_annos.mat"),
        ("test", n_test, base / "cars_test_annos_withlabels.mat"),
    ):
        rec = np.zeros(n, dtype=[("fname", "O"), ("class", "O")])
        for i, y in enumerate(_labels(n, k)):
            fname = f"{i + 1:05d}.jpg"
            _save(base / f"cars_{split}" / fname, class_image(y, rng))
            rec[i] = (fname, y + 1)
        sio.savemat(ann, {"annotations": rec})


def write_dtd(root: Path, per_split: int = 12, k: int = 4) -> None:
    rng = np.random.default_rng(4)
    base = root / "dtd" / "dtd"
    names = [f"texture{i}" for i in range(k)]
    n = 0
    for split in ("train", "val", "test"):
        lines = []
        for y in _labels(per_split, k):
            n += 1
            _save(base / "images" / names[y] / f"{names[y]}_{n:04d}.jpg", class_image(y, rng))
            lines.append(f"{names[y]}/{names[y]}_{n:04d}.jpg")
        (base / "labels").mkdir(parents=True, exist_ok=True)
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


def write_flowers(root: Path, per_split: int = 12, k: int = 4) -> None:
    import scipy.io as sio

    rng = np.random.default_rng(5)
    base = root / "flowers-102"
    labels, ids = [], {}
    for split in ("trnid", "valid", "tstid"):
        ids[split] = []
        for y in _labels(per_split, k):
            labels.append(y + 1)
            ids[split].append(len(labels))
            _save(base / "jpg" / f"image_{len(labels):05d}.jpg", class_image(y, rng))
    sio.savemat(base / "imagelabels.mat", {"labels": np.array([labels])})
    sio.savemat(base / "setid.mat", {k_: np.array([v]) for k_, v in ids.items()})


def write_food101(root: Path, n_train: int = 16, n_test: int = 12, k: int = 4) -> None:
    rng = np.random.default_rng(6)
    base = root / "food-101"
    (base / "meta").mkdir(parents=True, exist_ok=True)
    n = 0
    for split, size in (("train", n_train), ("test", n_test)):
        meta: dict[str, list[str]] = {f"dish_{c}": [] for c in range(k)}
        for y in _labels(size, k):
            n += 1
            _save(base / "images" / f"dish_{y}" / f"{n}.jpg", class_image(y, rng))
            meta[f"dish_{y}"].append(f"dish_{y}/{n}")
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))


def write_pets(root: Path, n_train: int = 16, n_test: int = 12, k: int = 4) -> None:
    rng = np.random.default_rng(7)
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    breeds = [f"Breed{c}" if c % 2 else f"breed_{c}" for c in range(k)]  # cats capitalised, dogs not
    n = 0
    for split, size in (("trainval", n_train), ("test", n_test)):
        lines = []
        for y in _labels(size, k):
            n += 1
            _save(base / "images" / f"{breeds[y]}_{n}.jpg", class_image(y, rng))
            lines.append(f"{breeds[y]}_{n} {y + 1} {1 + y % 2} 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def write_sun397(root: Path, per_class: int = 8, k: int = 3, partition: bool = True) -> None:
    rng = np.random.default_rng(8)
    base = root / "SUN397"
    classes = [f"/{c}/{c}{name}" for c, name in zip("abc", ("bbey", "irport", "anyon"))][:k]
    base.mkdir(parents=True, exist_ok=True)
    (base / "ClassName.txt").write_text("\n".join(classes) + "\n")
    train, test = [], []
    for y, cls in enumerate(classes):
        for i in range(per_class):
            rel = f"{cls}/sun_{y}{i:05d}.jpg"
            _save(base / rel.lstrip("/"), class_image(y, rng))
            (train if i % 2 == 0 else test).append(rel)
    if partition:
        (base / "Training_01.txt").write_text("\n".join(train) + "\n")
        (base / "Testing_01.txt").write_text("\n".join(test) + "\n")


VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow")


def write_voc2007(root: Path, per_split: int = 12, k: int = 4) -> None:
    rng = np.random.default_rng(9)
    base = root / "VOCdevkit" / "VOC2007"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / d).mkdir(parents=True, exist_ok=True)
    n = 0
    sets: dict[str, list[str]] = {}
    for split in ("train", "val", "test"):
        sets[split] = []
        for i in range(per_split):
            n += 1
            name = f"{n:06d}"
            present = [c for c in range(k) if (i >> c) & 1 or c == i % k]
            img = np.zeros((16, 16, 3), dtype=np.uint8)
            for j, c in enumerate(present):  # vertical bands of class colours
                img[:, 16 * j // len(present) : 16 * (j + 1) // len(present)] = class_image(c, rng)[:, :1]
            _save(base / "JPEGImages" / f"{name}.jpg", img)
            objs = "".join(
                f"<object><name>{VOC_CLASSES[c]}</name><difficult>{int(c == 3 and i % 3 == 0)}</difficult>"
                "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>8</xmax><ymax>8</ymax></bndbox></object>"
                for c in present
            )
            (base / "Annotations" / f"{name}.xml").write_text(
                f"<annotation><filename>{name}.jpg</filename><size><width>16</width><height>16</height>"
                f"<depth>3</depth></size>{objs}</annotation>"
            )
            sets[split].append(name)
    sets["trainval"] = sets["train"] + sets["val"]
    for split, names in sets.items():
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")


SUITE_WRITERS = {
    "aircraft": write_aircraft,
    "caltech101": write_caltech101,
    "cars": write_cars,
    "cifar10": write_cifar,
    "cifar100": lambda root: write_cifar(root, hundred=True),
    "dtd": write_dtd,
    "flowers": write_flowers,
    "food101": write_food101,
    "pets": write_pets,
    "sun397": write_sun397,
    "voc2007": write_voc2007,
}
