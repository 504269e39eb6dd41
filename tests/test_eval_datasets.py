"""The evaluation registry reads tiny fakes written in each dataset's real on-disk layout."""

import hashlib

import numpy as np
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

from gsg_zoo.data.readers import caltech101_generated_split
from gsg_zoo.eval.datasets import TRANSFER_SUITE, build_split, eval_transform, get_info, protocol_indices

TF = eval_transform(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
# (official splits -> sizes) for the writers' defaults
SIZES = {
    "aircraft": {"train": 12, "val": 12, "test": 12},
    "caltech101": {"train": 78, "test": 54},  # 4 x 33 images, distinct of 30 drawn per class with replacement
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


# Caltech-101 as ssl-transfer publishes it (caltech101-splits/{train,test}.txt at
# github.com/linusericsson/ssl-transfer): image count of each class in ImageFolder order, and the SHA-256
# of each file's lines ("class/image_XXXX.jpg LABEL", joined by "\n").
CALTECH101_COUNTS = (
    "BACKGROUND_Google:467 Faces:435 Faces_easy:435 Leopards:200 Motorbikes:798 accordion:55 airplanes:800 "
    "anchor:42 ant:42 barrel:47 bass:54 beaver:46 binocular:33 bonsai:128 brain:98 brontosaurus:43 buddha:85 "
    "butterfly:91 camera:50 cannon:43 car_side:123 ceiling_fan:47 cellphone:59 chair:62 chandelier:107 "
    "cougar_body:47 cougar_face:69 crab:73 crayfish:70 crocodile:50 crocodile_head:51 cup:57 dalmatian:67 "
    "dollar_bill:52 dolphin:65 dragonfly:68 electric_guitar:75 elephant:64 emu:53 euphonium:64 ewer:85 ferry:67 "
    "flamingo:67 flamingo_head:45 garfield:34 gerenuk:34 gramophone:51 grand_piano:99 hawksbill:100 "
    "headphone:42 hedgehog:54 helicopter:88 ibis:80 inline_skate:31 joshua_tree:64 kangaroo:86 ketch:114 "
    "lamp:61 laptop:81 llama:78 lobster:41 lotus:66 mandolin:43 mayfly:40 menorah:87 metronome:32 minaret:76 "
    "nautilus:55 octopus:35 okapi:39 pagoda:47 panda:38 pigeon:45 pizza:53 platypus:34 pyramid:57 revolver:82 "
    "rhino:59 rooster:49 saxophone:40 schooner:63 scissors:39 scorpion:84 sea_horse:57 snoopy:35 soccer_ball:64 "
    "stapler:45 starfish:86 stegosaurus:59 stop_sign:64 strawberry:35 sunflower:85 tick:49 trilobite:86 "
    "umbrella:75 watch:239 water_lilly:37 wheelchair:59 wild_cat:34 windsor_chair:56 wrench:39 yin_yang:60"
)
PUBLISHED_SHA256 = {
    "train": "8d3408382b2f44f34ab43eecee9c12d0e28ae99141faff72521d6fa7609be4ee",  # 2,416 lines
    "test": "34b1cff0b09a1faecf56e62c9d9236d316721c5c9c8e1cc29347d6f70251639f",  # 6,728 lines
}


def test_caltech101_generated_split_reproduces_the_published_files():
    """The split drawn for the real dataset's 102 classes is, line for line, ssl-transfer's published one."""
    names, labels = [], []
    for label, item in enumerate(CALTECH101_COUNTS.split()):
        cls, count = item.split(":")
        names += [f"{cls}/image_{i:04d}.jpg" for i in range(1, int(count) + 1)]
        labels += [label] * int(count)
    assert len(names) == 9144 and max(labels) == 101  # 102 classes, BACKGROUND_Google included
    train, test = caltech101_generated_split(labels)
    for split, idx in (("train", train), ("test", test)):
        text = "\n".join(f"{names[i]} {labels[i]}" for i in idx)
        assert hashlib.sha256(text.encode()).hexdigest() == PUBLISHED_SHA256[split], split
    assert (len(train), len(test)) == (2416, 6728)


def _transcribed_caltech_split(root):
    """ssl-transfer's create_caltech101_splits, transcribed (global np.random, ImageFolder order)."""
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(root / "caltech101" / "101_ObjectCategories"))
    np.random.seed(0)
    labels = [label for _, label in dataset.imgs]
    class_idxs = {label: [] for label in range(len(dataset.classes))}
    for i, label in enumerate(labels):
        class_idxs[label].append(i)
    train_idxs = []
    for i in class_idxs:
        train_idxs.extend(list(np.sort(np.random.choice(class_idxs[i], 30))))
    return sorted(set(train_idxs)), sorted(set(range(len(labels))) - set(train_idxs)), dataset


def test_caltech101_102_classes_generated_split_and_rgb(tmp_path):
    write_caltech101(tmp_path, per_class=33, k=3)
    want_train, want_test, folder = _transcribed_caltech_split(tmp_path)
    train, ident = build_split("caltech101", tmp_path, "train", TF)
    test, _ = build_split("caltech101", tmp_path, "test", TF)
    assert train.dataset.indices == want_train and test.dataset.indices == want_test
    assert folder.classes[0] == "BACKGROUND_Google" and 0 in {train[i][1] for i in range(len(train))}
    assert ident["caltech101_split"] == "generated-seed0"
    assert all(train[i][0].shape[0] == 3 for i in range(0, len(train), 7))  # grayscale images become RGB


def test_caltech101_split_files_are_used_when_present(tmp_path):
    write_caltech101(tmp_path, per_class=33, k=3)
    base = tmp_path / "caltech101"
    (base / "train.txt").write_text("cls0/image_0003.jpg 1\r\nBACKGROUND_Google/image_0001.jpg 0\r\n")
    (base / "test.txt").write_text("cls2/image_0001.jpg 3\ncls1/image_0033.jpg 2\n")
    train, ident = build_split("caltech101", tmp_path, "train", TF)
    test, _ = build_split("caltech101", tmp_path, "test", TF)
    assert [train[i][1] for i in range(2)] == [1, 0] and [test[i][1] for i in range(2)] == [3, 2]
    assert ident["caltech101_split"].startswith("files-")
    (base / "test.txt").write_text("cls2/image_0001.jpg 1\n")  # a label that is not ImageFolder's
    with pytest.raises(ValueError, match="ImageFolder order"):
        build_split("caltech101", tmp_path, "test", TF)


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
        get_info("no_such_dataset")  # (MNIST is in the registry since bd31d68)
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
