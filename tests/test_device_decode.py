"""``data.decode: device``: the readers leave JPEGs encoded (header read only), the workers draw the crop
boxes from the header's size and pack the bytes, and ``PackedImages.crops`` decodes a batch's JPEGs in
one ``torchvision.io.decode_jpeg`` call on the training device.

On the CPU (the tested fallback) ``decode_jpeg`` and PIL give the same pixels (both libjpeg-turbo;
measured: max |difference| 0 over the JPEGs below, baseline, progressive, 4:4:4 and 4:2:0, grayscale),
so the device path's boxes, crops and views equal the worker path's exactly. The CUDA call is only
mocked here (its device argument and CPU inputs checked); a real-GPU check is marked ``gpu``.

Budget: ~15 s on 2 CPU cores.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
import torchvision.io
from PIL import Image
from test_pretrain import TINY

from gsg_zoo.config.recipes import CROP_BOX_AUGMENTATIONS, DataConfig, load_recipe
from gsg_zoo.core.distributed import DistInfo
from gsg_zoo.data.batch_augment import CropBoxes, PackedImages, decode_jpegs
from gsg_zoo.data.images import EncodedImage, open_image
from gsg_zoo.data.pretraining import collate_views
from gsg_zoo.train.inputs import CROP_BOX_VIEWS, build_train_data, step_views, view_transform


def _encode(pixels: np.ndarray | Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _pixels(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth gradient with noise (JPEG-like content: neither flat nor pure noise), uint8 (H, W, 3)."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w)], -1)
    noise = np.random.default_rng(seed).integers(0, 40, (h, w, 3))
    return (base + noise).clip(0, 255).astype(np.uint8)


def images() -> dict[str, bytes]:
    """JPEGs of several sizes and encodings, a PNG, a grayscale JPEG and a CMYK JPEG."""
    return {
        "a.jpg": _encode(_pixels(37, 53, 0), quality=90),
        "b.jpg": _encode(_pixels(64, 48, 1), quality=75, subsampling=2),  # 4:2:0
        "c.jpg": _encode(_pixels(50, 50, 2), quality=95, subsampling=0, progressive=True),
        "d.png": _encode(_pixels(30, 41, 3), "PNG"),
        "e.jpg": _encode(_pixels(45, 33, 4)[..., 0], quality=90),  # grayscale (mode L)
        "f.jpg": _encode(Image.fromarray(_pixels(28, 36, 5)).convert("CMYK"), quality=90),
    }


def test_open_image_leaves_only_device_decodable_jpegs_encoded():
    data = images()
    kinds = {name: open_image(blob, encoded=True) for name, blob in data.items()}
    left_encoded = {n for n, im in kinds.items() if isinstance(im, EncodedImage)}
    assert left_encoded == {"a.jpg", "b.jpg", "c.jpg", "e.jpg"}
    assert (kinds["a.jpg"].height, kinds["a.jpg"].width) == (37, 53) and kinds["a.jpg"].data is data["a.jpg"]
    assert kinds["d.png"].mode == kinds["f.jpg"].mode == "RGB"  # PNG and CMYK: decoded in the worker
    for blob in data.values():  # the worker path: PIL's decode, as ever
        assert open_image(blob).tobytes() == Image.open(io.BytesIO(blob)).convert("RGB").tobytes()
    truncated = data["a.jpg"][: len(data["a.jpg"]) // 2]  # no end marker: decoded (and refused) by PIL
    for bad in (truncated, b"not an image", b""):
        with pytest.raises(OSError):
            open_image(bad, encoded=True)


def _packed(data: dict[str, bytes], encoded: bool, seed: int = 7) -> PackedImages:
    """The batch a loader yields for ``data``: each image's boxes drawn from its own seed."""
    parts = []
    for i, blob in enumerate(data.values()):
        torch.manual_seed(seed + i)
        parts.append(CropBoxes(num_views=3)(open_image(blob, encoded)))
    return PackedImages.cat(parts)


def test_device_decode_draws_the_worker_boxes_and_gives_its_crops():
    data = images()
    worker, device = _packed(data, False), _packed(data, True)
    assert torch.equal(device.boxes, worker.boxes) and torch.equal(device.sizes, worker.sizes)
    assert device.encoded.tolist() == [True, True, True, False, True, False] and not worker.encoded.any()
    a, b = worker.crops(24).float(), device.crops(24).float()
    diff = (a - b).abs()
    # decode_jpeg (CPU) and PIL are both libjpeg-turbo: measured max |diff| 0; the bound the
    # documentation states is mean |diff| < 1 grey level
    assert diff.mean() < 1.0 and diff.max() == 0
    full = [im.float() for im in device.decoded()]
    for im, blob in zip(full, data.values(), strict=True):
        pil = torch.from_numpy(np.array(Image.open(io.BytesIO(blob)).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(im, pil.float())


def test_mixed_batches_keep_their_bytes_through_cat_to_and_pin_memory(monkeypatch):
    data = images()
    one = _packed(dict(list(data.items())[:3]), True)  # JPEGs only: no pixels
    two = _packed(dict(list(data.items())[3:]), True)  # PNG, grayscale JPEG, CMYK
    plain = _packed({"d.png": data["d.png"]}, False)  # a part without JPEG bytes
    both = PackedImages.cat([one, two, plain])
    assert one.pixels.numel() == 0 and len(both) == 7
    sizes = [len(data[n]) for n in ("a.jpg", "b.jpg", "c.jpg")] + [0, len(data["e.jpg"]), 0, 0]
    assert both.jpeg_lengths.tolist() == sizes
    assert bytes(both.jpeg.numpy()) == data["a.jpg"] + data["b.jpg"] + data["c.jpg"] + data["e.jpg"]
    assert torch.equal(both.crops(8), torch.cat([one.crops(8), two.crops(8), plain.crops(8)]))
    moved = both.to("cpu", non_blocking=True)
    assert moved.jpeg is both.jpeg and torch.equal(moved.jpeg_lengths, both.jpeg_lengths)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self.clone())  # no CUDA driver here
    pinned = both.pin_memory()
    assert torch.equal(pinned.jpeg, both.jpeg) and torch.equal(pinned.crops(8), both.crops(8))
    assert PackedImages.cat([plain, plain]).jpeg is None  # the worker path's batches are unchanged
    batch = collate_views([([part], 0) for part in (one, two)])[0][0]
    assert torch.equal(batch.jpeg, both.jpeg[: batch.jpeg.numel()])


def _recording_decode(calls: list):
    """A stand-in for ``torchvision.io.decode_jpeg`` that records its call and decodes on the CPU."""
    real = torchvision.io.decode_jpeg

    def fake(inputs, mode, device):
        calls.append((list(inputs), mode, device))
        return real(inputs, mode=mode, device="cpu")

    return fake


def test_a_batch_is_decoded_in_one_call_on_the_training_device_from_cpu_inputs(monkeypatch):
    calls: list = []
    monkeypatch.setattr(torchvision.io, "decode_jpeg", _recording_decode(calls))
    packed = _packed(images(), True)
    jpegs = list(packed.jpeg.split(packed.jpeg_lengths[packed.encoded].tolist()))
    out = decode_jpegs(jpegs, torch.device("cuda"))
    ((inputs, mode, device),) = calls  # one call for the whole batch
    assert device == torch.device("cuda") and mode == torchvision.io.ImageReadMode.RGB
    assert len(inputs) == 4
    assert all(t.device.type == "cpu" and t.dtype == torch.uint8 and t.ndim == 1 for t in inputs)
    assert [tuple(im.shape) for im in out] == [(3, 37, 53), (3, 64, 48), (3, 50, 50), (3, 45, 33)]
    calls.clear()
    packed.crops(16)  # on a CPU batch: one call, on the CPU
    assert len(calls) == 1 and calls[0][2] == torch.device("cpu")
    calls.clear()
    _packed({"d.png": images()["d.png"]}, True).crops(16)
    assert calls == []  # nothing encoded: no call


def test_a_batch_decoded_ahead_gives_the_same_crops_without_decoding_again(monkeypatch):
    data = images()
    packed = _packed(data, True)
    want = {batched: packed.crops(16, batched) for batched in (False, True)}
    calls: list = []
    monkeypatch.setattr(torchvision.io, "decode_jpeg", _recording_decode(calls))
    ready = packed.decode_ahead()
    assert len(calls) == 1 and len(ready.predecoded) == 4 and packed.predecoded is None
    assert [tuple(im.shape) for im in ready.predecoded] == [
        (3, 37, 53),
        (3, 64, 48),
        (3, 50, 50),
        (3, 45, 33),
    ]
    for batched, crops in want.items():  # the per-box and the batched resize both take the decoded JPEGs
        assert torch.equal(ready.crops(16, batched), crops)
    assert all(torch.equal(a, b) for a, b in zip(ready.decoded(), packed.decoded(), strict=True))
    assert len(calls) == 2  # packed.decoded() above; ready decoded nothing again
    assert ready.decode_ahead() is ready and ready.to("cpu").predecoded == ready.predecoded
    plain = _packed({"d.png": data["d.png"]}, True)
    assert plain.decode_ahead() is plain and len(calls) == 2  # nothing encoded: no call
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self.clone())  # no CUDA driver here
    pinned = ready.pin_memory()
    assert all(torch.equal(a, b) for a, b in zip(pinned.predecoded, ready.predecoded, strict=True))
    both = PackedImages.cat([ready, plain, ready])  # predecoded kept in the order of the JPEG bytes
    assert len(both.predecoded) == 8 and torch.equal(
        both.crops(16), torch.cat([want[False], plain.crops(16), want[False]])
    )
    assert PackedImages.cat([ready, packed]).predecoded is None and len(calls) == 2


def test_a_failed_batched_decode_falls_back_to_pil_an_undecodable_jpeg_is_an_error(monkeypatch, caplog):
    packed = _packed(images(), True)
    want = packed.crops(16)

    def broken(*args, **kwargs):
        raise RuntimeError("nvjpeg: no decoder")

    monkeypatch.setattr(torchvision.io, "decode_jpeg", broken)
    with caplog.at_level(logging.WARNING, logger="gsg_zoo.data"):
        assert torch.equal(packed.crops(16), want)
    assert "nvjpeg: no decoder" in caplog.text and "one by one with PIL" in caplog.text
    monkeypatch.undo()
    good = _encode(_pixels(20, 20, 9))
    headless = good[: good.index(b"\xff\xda")] + b"\xff\xd9"  # header and end marker, no scan
    torch.manual_seed(0)
    bad = CropBoxes(2)(open_image(headless, encoded=True))  # the reader reads the header only
    assert bad.encoded.all()
    with pytest.raises(RuntimeError, match="decode_jpeg nor by PIL.*data.decode=worker"):
        bad.crops(8)


def test_recipe_validation_names_the_keys():
    ok = load_recipe("imagenet_simsiam_gsg", ["data.batch_augment=true", "data.decode=device"])
    assert ok.data.decode == "device" and load_recipe("imagenet_simsiam_gsg").data.decode == "worker"
    load_recipe("imagenet_byol_gsg_byol_views", ["data.batch_augment=true", "data.decode=device"])
    with pytest.raises(ValueError, match="data.decode='gpu' is not one of worker, device"):
        load_recipe("imagenet_simsiam_gsg", ["data.batch_augment=true", "data.decode=gpu"])
    message = r"data.decode=device needs data.batch_augment=true and data.augmentation mocov2 or byol"
    with pytest.raises(ValueError, match=message + r" \(got batch_augment=False, augmentation=mocov2\)"):
        load_recipe("imagenet_simsiam_gsg", ["data.decode=device"])
    with pytest.raises(ValueError, match=message + r" \(got batch_augment=True, augmentation=cifar\)"):
        load_recipe("demo", ["data.batch_augment=true", "data.decode=device"])
    with pytest.raises(ValueError, match=message):  # a DataConfig built in code is checked too
        view_transform(DataConfig(augmentation="mocov2", decode="device"), 2)
    assert set(CROP_BOX_AUGMENTATIONS) == set(CROP_BOX_VIEWS)


# --- end to end: the training loader of each reader, decode=worker vs device


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same images as an ImageFolder, WebDataset shards and a Hugging Face dataset (JPEG bytes kept)."""
    from gsg_zoo.app.cli import main

    root = tmp_path_factory.mktemp("decode")
    names, blobs = [], []
    for i in range(3):  # 3 rounds of the six kinds, two classes
        for name, blob in images().items():
            (root / "folder" / "train" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            (root / "folder" / "train" / f"c{i % 2}" / f"{i}{name}").write_bytes(blob)
            names.append(f"{i}{name}")
            blobs.append((blob, i % 2))
    assert (
        main(
            [
                "data",
                "shard",
                "imagefolder",
                "--data",
                str(root / "folder"),
                "--out",
                str(root / "shards" / "train"),
                "--max-count",
                "5",
                "--no-progress",
            ]
        )
        == 0
    )
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b, _ in blobs], "label": [y for _, y in blobs]}
    ).cast_column("image", datasets.Image())
    datasets.DatasetDict({"train": table}).save_to_disk(str(root / "hf"))
    return root


READERS = {
    "imagefolder": ("data.dataset=imagefolder", "folder"),
    "webdataset": ("data.dataset=webdataset", "shards"),
    "streaming": (
        "data.dataset=webdataset",
        "shards",
        "data.stream.enabled=true",
        "data.stream.shuffle_buffer=4",
    ),
    "hf": ("data.dataset=hf", "hf"),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_training_views_equal_the_worker_decode_views(sources, reader):
    dataset, folder, *extra = READERS[reader]

    def epoch(decode: str, workers: int = 0) -> list[tuple[PackedImages, list[torch.Tensor]]]:
        recipe = load_recipe(
            "imagenet_simsiam_gsg",
            [
                *TINY,
                dataset,
                f"data.root={sources / folder}",
                "data.batch_augment=true",
                f"data.decode={decode}",
                f"data.loader.num_workers={workers}",
                "train.batch_size=6",
                "data.loader.persistent_workers=false",
                *extra,
            ],
        )
        data = build_train_data(recipe, DistInfo(), torch.device("cpu"), 6, 2)
        data.set_epoch(1)
        out = []
        for step, (views, _, skipped) in enumerate(data.loader):
            assert skipped == 0
            out.append((views[0], step_views(views, data, 2, torch.device("cpu"), False, seed=step)))
        return out

    worker, device = epoch("worker"), epoch("device", workers=2 if reader == "imagefolder" else 0)
    assert len(worker) == len(device) == 3
    assert sum(int(p.encoded.sum()) for p, _ in device) == 12 and all(p.jpeg is None for p, _ in worker)
    for (wp, wv), (dp, dv) in zip(worker, device, strict=True):
        assert torch.equal(wp.boxes, dp.boxes)
        assert all(torch.equal(a, b) for a, b in zip(wv, dv, strict=True))  # measured identical (see top)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvjpeg_decode_on_a_gpu_is_close_to_pil():
    """On a real GPU: the batch decodes with nvjpeg, its crops within one grey level (mean) of PIL's."""
    packed = _packed(images(), True)
    gpu = packed.to("cuda").crops(24).cpu().float()
    diff = (gpu - _packed(images(), False).crops(24).float()).abs()
    assert diff.mean() < 1.0, (diff.mean(), diff.max())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_copied_and_decoded_ahead_on_a_gpu_give_the_same_crops():
    """On a real GPU: device_batches' side-stream copy and decode one batch ahead change no crop."""
    from gsg_zoo.train.inputs import device_batches

    cuda = torch.device("cuda", torch.cuda.current_device())
    loader = [([_packed(images(), True, seed)], None, 0) for seed in range(3)]
    for (batch, _, _), (want, _, _) in zip(device_batches(loader, cuda), loader, strict=True):
        assert batch[0].predecoded is not None and batch[0].pixels.device == cuda
        assert torch.equal(batch[0].crops(24).cpu(), want[0].to(cuda).crops(24).cpu())
