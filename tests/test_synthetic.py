"""The built-in procedural dataset and its on-disk writers (budget: < 30 s on one core)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from gsg_zoo.app.cli import main as gsg
from gsg_zoo.data.synthetic import CLASSES, SyntheticShapes, sample_grid
from gsg_zoo.data.writers import (
    mask_to_polygons,
    mask_to_rle,
    polygons_to_mask,
    rle_to_mask,
    write_coco,
    write_imagefolder,
    write_mmseg,
)


def _bytes(ds: SyntheticShapes, n: int) -> list[bytes]:
    return [ds[i][0].tobytes() for i in range(n)]


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood lies in the mask."""
    h, w = mask.shape
    m = np.pad(mask, 1)
    return np.logical_and.reduce([m[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])


# ---------------------------------------------------------------------------------------- dataset


def test_deterministic_in_seed_split_and_index():
    a, b = SyntheticShapes(12, 48, seed=3), SyntheticShapes(12, 48, seed=3)
    assert _bytes(a, 12) == _bytes(b, 12)
    assert a.targets == b.targets
    # random access order does not matter, and annotations are reproducible too
    assert a[7][0].tobytes() == b[7][0].tobytes() == a[-5][0].tobytes()
    assert np.array_equal(a.annotation(5)["masks"], b.annotation(5)["masks"])
    other_seed = _bytes(SyntheticShapes(12, 48, seed=4), 12)
    other_split = _bytes(SyntheticShapes(12, 48, seed=3, split="val"), 12)
    assert all(x != y for x, y in zip(_bytes(a, 12), other_seed))
    assert all(x != y for x, y in zip(_bytes(a, 12), other_split))
    assert len(set(_bytes(a, 12))) == 12  # items differ from each other


def test_items_are_rgb_images_with_balanced_labels():
    ds = SyntheticShapes(200, 32, seed=1)
    image, label = ds[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
    assert ds.classes == list(CLASSES) == sorted(CLASSES)
    counts = Counter(ds.targets)
    assert set(counts) == set(range(10)) and set(counts.values()) == {20}
    assert [ds[i][1] for i in range(30)] == ds.targets[:30]
    assert ds.targets[:10] != list(range(10))  # the order within each block is shuffled
    small = SyntheticShapes(25, 32, num_classes=3)
    assert small.classes == list(CLASSES[:3]) and max(Counter(small.targets).values()) == 9


@pytest.mark.parametrize("size", [32, 64, 224])
def test_masks_and_boxes_match_the_drawn_pixels(size):
    ds = SyntheticShapes(30 if size < 224 else 10, size, seed=2)
    n_instances, interior, total = [], 0, 0
    for i in range(len(ds)):
        s = ds.render(i)
        ann = ds.annotation(i)
        assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
        assert np.array_equal(s.image, np.asarray(ds[i][0]))
        k = len(ann["boxes"])
        n_instances.append(k)
        assert 1 <= k <= 3
        assert ann["boxes"].dtype == np.float32 and ann["boxes"].shape == (k, 4)
        assert ann["labels"].dtype == np.int64 and ann["labels"].tolist() == [s.label] * k
        assert ann["masks"].dtype == bool and ann["masks"].shape == (k, size, size)
        assert ann["masks"].sum(0).max() == 1  # instances never overlap
        for mask, box, color in zip(ann["masks"], ann["boxes"], s.colors):
            rows, cols = np.nonzero(mask)
            assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]  # tight
            painted = (s.image == color).all(-1)
            # the shape's colour fills the mask: interior pixels have exactly that colour ...
            inner = _erode(mask)
            assert painted[inner].sum() >= 0.98 * inner.sum()
            interior += int(inner.sum())
            total += int(mask.sum())
            # ... and does not spill outside it (near the instance, where the background differs)
            x0, y0, x1, y1 = (int(v) for v in box)
            near = np.zeros_like(mask)
            near[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = True
            assert (painted & near & ~mask).sum() <= 2
    assert max(n_instances) >= 2  # extra instances of the same class occur
    assert interior > 0.3 * total  # the interior check above is not vacuous


def test_primary_shape_varies_in_scale_position_and_colour():
    ds = SyntheticShapes(60, 64, seed=0)
    areas, centres, colors = [], [], []
    for i in range(len(ds)):
        s = ds.render(i)
        areas.append(s.masks.sum((1, 2)).max())
        x0, y0, x1, y1 = s.boxes[0]
        centres.append(((x0 + x1) / 2, (y0 + y1) / 2))
        colors.append(s.colors[0])
    assert max(areas) > 2.5 * min(areas)
    assert np.ptp(np.array(centres), axis=0).min() > 15
    assert np.ptp(np.array(colors), axis=0).min() > 150


def test_nuisance_switches_keep_the_shapes_and_remove_the_nuisance():
    full = SyntheticShapes(40, 32, seed=3)
    bare = SyntheticShapes(40, 32, seed=3, textured_background=False, clutter=False)
    grey = SyntheticShapes(40, 32, seed=3, grayscale=True)
    flat_seen = 0
    for i in range(len(full)):
        a, b, g = full.render(i), bare.render(i), grey.render(i)
        assert a.label == b.label == g.label
        for other in (b, g):  # same random numbers: same instances, in the same place
            np.testing.assert_array_equal(other.masks, a.masks)
            np.testing.assert_array_equal(other.boxes, a.boxes)
        np.testing.assert_array_equal(b.colors, a.colors)
        # nothing but flat background outside the anti-aliased shapes (masks dilated by 2 px)
        shapes = torch.from_numpy(b.masks.any(0))[None, None].float()
        covered = torch.nn.functional.max_pool2d(shapes, 5, 1, 2)[0, 0].bool().numpy()
        outside = b.image[~covered].reshape(-1, 3)
        assert (outside == outside[0]).all()
        flat_seen += int((a.image[~covered].reshape(-1, 3) != outside[0]).any())
        assert (g.image == g.image[..., :1]).all()  # R == G == B
        assert (g.colors == g.colors[:, :1]).all()
        inside = g.image[g.masks[0]]
        assert np.isin(g.colors[0, 0], inside[:, 0])  # the grey fill is what is painted
    assert flat_seen > 30  # the full images did have texture or clutter there
    assert "clutter=False" in repr(bare) and "grayscale=True" in repr(grey)


def test_pixels_are_a_weak_feature():
    """Raw-pixel kNN (k=20, cosine) must beat chance but stay far from perfect: nuisances dominate."""
    tr, te = SyntheticShapes(1000, 32, seed=0, split="train"), SyntheticShapes(500, 32, seed=0, split="test")
    xtr = np.stack([np.asarray(tr[i][0], np.float32).ravel() for i in range(len(tr))])
    xte = np.stack([np.asarray(te[i][0], np.float32).ravel() for i in range(len(te))])
    xtr /= np.linalg.norm(xtr, axis=1, keepdims=True)
    xte /= np.linalg.norm(xte, axis=1, keepdims=True)
    neighbours = np.argsort(-(xte @ xtr.T), axis=1)[:, :20]
    votes = np.zeros((len(te), 10))
    np.add.at(votes, (np.arange(len(te))[:, None], np.array(tr.targets)[neighbours]), 1)
    acc = float((votes.argmax(1) == np.array(te.targets)).mean())
    assert 0.14 < acc < 0.35, acc


def test_dataloader_workers_and_transform():
    from torch.utils.data import DataLoader
    from torchvision.transforms.functional import pil_to_tensor

    ds = SyntheticShapes(16, 32, seed=5, transform=pil_to_tensor)
    batches = list(DataLoader(ds, batch_size=8, num_workers=2))
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == ds.targets
    assert torch.equal(images[3], pil_to_tensor(SyntheticShapes(16, 32, seed=5)[3][0]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_images": 0}, "num_images"),
        ({"image_size": 16}, "image_size must be between 32 and 512"),
        ({"image_size": 64.0}, "image_size must be an integer"),
        ({"seed": -1}, "seed"),
        ({"split": "a/b"}, "split"),
        ({"split": ""}, "split"),
        ({"num_classes": 11}, "num_classes"),
        ({"max_extra_instances": 3}, "max_extra_instances"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    args = {"num_images": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        SyntheticShapes(**args)


def test_bad_index():
    ds = SyntheticShapes(4, 32)
    with pytest.raises(IndexError, match="out of range"):
        ds[4]
    with pytest.raises(IndexError):
        ds.annotation(-5)
    assert len(list(iter(ds))) == 4  # the sequence protocol stops at the end


def test_sample_grid():
    grid = sample_grid(SyntheticShapes(20, 32), 16)
    assert grid.size == (4 * 34, 4 * 34)
    tile = np.asarray(grid)[1:33, 35:67]
    assert np.array_equal(tile, np.asarray(SyntheticShapes(20, 32)[1][0]))


# ----------------------------------------------------------------------------------------- codecs


def _random_masks(n: int):
    rng = np.random.default_rng(0)
    for k in range(n):
        h, w = rng.integers(1, 30, 2).tolist()
        if k % 2:
            yield rng.random((h, w)) < rng.random()  # salt and pepper: saddles, holes, islands
        else:
            blobs = Image.fromarray((rng.random((4, 4)) * 255).astype(np.uint8)).resize(
                (w, h), Image.BILINEAR
            )
            yield np.asarray(blobs) > rng.integers(60, 200)


def test_mask_codecs_round_trip_exactly():
    for mask in _random_masks(120):
        h, w = mask.shape
        assert np.array_equal(rle_to_mask(mask_to_rle(mask)), mask)
        assert np.array_equal(polygons_to_mask(mask_to_polygons(mask), h, w), mask)
    ring = np.zeros((9, 9), bool)
    ring[1:8, 1:8] = True
    ring[3:6, 3:6] = False
    assert mask_to_rle(ring)["counts"][:3] == [10, 7, 2]  # column-major, starts with zeros
    polys = mask_to_polygons(ring)
    assert len(polys) == 1 and len(polys[0]) >= 16  # hole joined to the outline by a bridge


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2 copy semantics
def test_mask_codecs_agree_with_pycocotools():
    mask_util = pytest.importorskip("pycocotools.mask")
    for mask in _random_masks(60):
        h, w = mask.shape
        rle = mask_util.frPyObjects(mask_to_rle(mask), h, w)
        assert np.array_equal(mask_util.decode(rle).astype(bool), mask)
        polys = mask_to_polygons(mask)
        if polys:
            merged = mask_util.merge(mask_util.frPyObjects(polys, h, w))
            assert np.array_equal(mask_util.decode(merged).astype(bool), mask)
            assert mask_util.area(merged) == mask.sum()


# ---------------------------------------------------------------------------------------- writers


def test_imagefolder_loads_through_torchvision(tmp_path):
    from torchvision.datasets import ImageFolder

    ds = SyntheticShapes(30, 32, seed=7)
    root = write_imagefolder(ds, tmp_path / "train", progress=False)
    loaded = ImageFolder(str(root))
    assert loaded.classes == ds.classes and len(loaded) == 30
    for path, label in loaded.samples:
        index = int(path.rsplit("/", 1)[1].split(".")[0])
        assert label == ds[index][1]
        assert np.array_equal(np.asarray(loaded.loader(path)), np.asarray(ds[index][0]))


@pytest.mark.parametrize("segmentation", ["polygon", "rle"])
def test_coco_round_trip(tmp_path, segmentation):
    ds = SyntheticShapes(12, 64, seed=8, split="val")
    path = write_coco(ds, tmp_path, "val", segmentation=segmentation, progress=False)
    assert path == tmp_path / "annotations" / "instances_val.json"
    doc = json.loads(path.read_text())
    assert [c["name"] for c in doc["categories"]] == ds.classes
    assert [c["id"] for c in doc["categories"]] == list(range(1, 11))
    assert len(doc["images"]) == 12
    assert len({a["id"] for a in doc["annotations"]}) == len(doc["annotations"])
    by_image: dict[int, list] = {}
    for a in doc["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for info in doc["images"]:
        i = info["id"] - 1
        assert (info["width"], info["height"]) == (64, 64)
        on_disk = np.asarray(Image.open(tmp_path / "val" / info["file_name"]).convert("RGB"))
        assert np.array_equal(on_disk, np.asarray(ds[i][0]))
        ann = ds.annotation(i)
        anns = by_image[info["id"]]
        assert len(anns) == len(ann["boxes"])
        for a, box, label, mask in zip(anns, ann["boxes"], ann["labels"], ann["masks"]):
            assert a["iscrowd"] == 0 and a["category_id"] == label + 1
            x0, y0, x1, y1 = box.tolist()
            assert a["bbox"] == [x0, y0, x1 - x0, y1 - y0] and a["area"] == mask.sum()
            seg = a["segmentation"]
            decoded = rle_to_mask(seg) if segmentation == "rle" else polygons_to_mask(seg, 64, 64)
            assert np.array_equal(decoded, mask)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_coco_loads_with_pycocotools(tmp_path):
    coco_api = pytest.importorskip("pycocotools.coco")
    ds = SyntheticShapes(6, 64, seed=9)
    coco = coco_api.COCO(str(write_coco(ds, tmp_path, "train", progress=False)))
    for image_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        masks = ds.annotation(image_id - 1)["masks"]
        assert all(np.array_equal(coco.annToMask(a).astype(bool), m) for a, m in zip(anns, masks))


@pytest.mark.det
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_coco_polygons_through_detectron2(tmp_path):
    """detectron2's default (polygon) mask format reproduces the masks exactly, ring holes included."""
    pytest.importorskip("detectron2")
    from detectron2.data import detection_utils
    from detectron2.data.datasets import load_coco_json
    from detectron2.structures import polygons_to_bitmask

    ds = SyntheticShapes(10, 64, seed=3)
    path = write_coco(ds, tmp_path, "train", progress=False)
    records = load_coco_json(str(path), str(tmp_path / "train"), f"gsg_synthetic_{tmp_path.name}")
    assert len(records) == 10
    for record in records:
        ann = ds.annotation(record["image_id"] - 1)
        inst = detection_utils.annotations_to_instances(
            record["annotations"], (64, 64), mask_format="polygon"
        )
        assert inst.gt_classes.tolist() == ann["labels"].tolist()
        assert np.array_equal(inst.gt_boxes.tensor.numpy(), ann["boxes"])
        assert inst.gt_masks.area().tolist() == ann["masks"].sum((1, 2)).tolist()
        for polygons, mask in zip(inst.gt_masks.polygons, ann["masks"]):
            assert np.array_equal(polygons_to_bitmask(polygons, 64, 64), mask)


def test_mmseg_label_maps(tmp_path):
    ds = SyntheticShapes(10, 64, seed=10)
    root = write_mmseg(ds, tmp_path, "train", progress=False)
    write_mmseg(SyntheticShapes(4, 64, seed=10, split="val"), tmp_path, "val", progress=False)
    assert (root / "classes.txt").read_text().split() == ["background", *ds.classes]
    meta = json.loads((root / "meta.json").read_text())
    assert meta["splits"] == {"train": 10, "val": 4} and len(meta["palette"]) == 11
    for i in range(len(ds)):
        label_map = Image.open(root / "ann_dir" / "train" / f"{i:06d}.png")
        assert label_map.mode == "L"
        lm = np.asarray(label_map)
        ann = ds.annotation(i)
        expected = np.zeros((64, 64), np.uint8)
        for label, mask in zip(ann["labels"], ann["masks"]):
            expected[mask] = label + 1
        assert np.array_equal(lm, expected) and lm.max() <= 10 and set(np.unique(lm)) == {0, ds[i][1] + 1}
        img = np.asarray(Image.open(root / "img_dir" / "train" / f"{i:06d}.png"))
        assert np.array_equal(img, np.asarray(ds[i][0]))
    with pytest.raises(ValueError, match="classes"):
        write_mmseg(SyntheticShapes(2, 32, num_classes=3), tmp_path, "test", progress=False)


def test_writers_in_worker_processes_give_the_same_files(tmp_path):
    ds = SyntheticShapes(24, 32, seed=11)
    serial = write_coco(ds, tmp_path / "a", "train", progress=False)
    parallel = write_coco(ds, tmp_path / "b", "train", progress=False, workers=2)
    assert serial.read_text() == parallel.read_text()
    for name in ("000000.png", "000023.png"):
        assert (tmp_path / "a" / "train" / name).read_bytes() == (
            tmp_path / "b" / "train" / name
        ).read_bytes()
    with pytest.raises(ValueError, match="picklable"):
        write_imagefolder(SyntheticShapes(4, 32, transform=lambda x: x), tmp_path / "c", workers=2)


def test_writers_reject_bad_arguments(tmp_path):
    ds = SyntheticShapes(2, 32)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        write_imagefolder(ds, tmp_path / "file")
    with pytest.raises(ValueError, match="segmentation"):
        write_coco(ds, tmp_path, "train", segmentation="bitmap")
    with pytest.raises(ValueError, match="split"):
        write_mmseg(ds, tmp_path, "../up")
    with pytest.raises(ValueError, match="workers"):
        write_imagefolder(ds, tmp_path / "d", workers=-1)


# -------------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("fmt", ["imagefolder", "coco", "mmseg"])
def test_cli_round_trip(tmp_path, capsys, fmt):
    args = ["data", "synth", "--out", str(tmp_path), "--format", fmt, "--num-images", "20"]
    args += [
        "--image-size",
        "32",
        "--seed",
        "4",
        "--split",
        "val",
        "--no-progress",
        "--grid",
        str(tmp_path / "g.png"),
    ]
    assert gsg(args) == 0
    assert Image.open(tmp_path / "g.png").size == (5 * 34, 4 * 34)  # 20 images, 5 columns
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_images"] == 20 and summary["format"] == fmt
    ds = SyntheticShapes(20, 32, seed=4, split="val")
    if fmt == "imagefolder":
        first = tmp_path / "val" / ds.classes[ds[0][1]] / "000000.png"
    elif fmt == "coco":
        doc = json.loads((tmp_path / "annotations" / "instances_val.json").read_text())
        assert len(doc["images"]) == 20
        first = tmp_path / "val" / "000000.png"
    else:
        first = tmp_path / "img_dir" / "val" / "000000.png"
        assert (tmp_path / "ann_dir" / "val" / "000019.png").is_file()
    assert np.array_equal(np.asarray(Image.open(first).convert("RGB")), np.asarray(ds[0][0]))


def test_cli_bad_arguments(tmp_path, capsys):
    base = ["data", "synth", "--out", str(tmp_path), "--no-progress"]
    assert gsg([*base, "--format", "coco", "--image-size", "8"]) == 1
    assert "image_size must be between 32 and 512" in capsys.readouterr().err
    assert gsg([*base, "--format", "coco", "--num-images", "0"]) == 1
    assert "num_images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gsg([*base, "--format", "voc"])
    assert "invalid choice" in capsys.readouterr().err
