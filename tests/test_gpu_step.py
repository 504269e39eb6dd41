"""A step that never waits on the host, checked on the CPU: the device views take a fixed
number of ops whatever the batch size, and a steady-state step on each input path reads no device
value back (:class:`DeviceReads`), plus the GPU switches' plumbing and the GPU script's dry run.
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from test_pretrain import TINY
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from gsg_zoo.config.recipes import OptimConfig, load_recipe
from gsg_zoo.data.batch_augment import BatchAugment, CropBoxes, PackedImages, normalize_uint8
from gsg_zoo.train.inputs import ahead, device_batches, step_views
from gsg_zoo.train.optim import build_optimizer, sgd_fused
from gsg_zoo.train.trainer import Pretrainer

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
Tensor = torch.Tensor
#: what reads a device tensor's values on the host (each a device sync on CUDA)
READS = {
    Tensor.item,
    Tensor.tolist,
    Tensor.cpu,
    Tensor.numpy,
    Tensor.__bool__,
    Tensor.__float__,
    Tensor.__int__,
    Tensor.__index__,
    Tensor.bincount,
    torch.bincount,
    Tensor.nonzero,
    torch.nonzero,
    Tensor.unique,
    torch.unique,
    torch.masked_select,
}
TAG = "_gsg_on_device"


def _tag(tensors: Any) -> None:
    for t in tree_leaves(tensors):
        if isinstance(t, Tensor):
            setattr(t, TAG, True)


def _on_device(t: Any) -> bool:
    return isinstance(t, Tensor) and getattr(t, TAG, False)


def _moves(args: tuple, kwargs: dict) -> bool:
    """Whether a ``.to``/``.cuda`` call names a device."""
    return kwargs.get("device") is not None or any(isinstance(a, (torch.device, str)) for a in args[1:])


class DeviceReads(TorchFunctionMode):
    """Counts host reads of device tensors and blocking host-to-device copies while active.

    Device tensors: those :func:`_tag` marked, what a factory with ``device=`` or ``.to(device)``
    makes, and every output of a call that takes one. A read: a :data:`READS` call on a device tensor.
    A blocking copy: ``torch.tensor(..., device=...)`` or ``.to(device)`` of a host tensor without
    ``non_blocking=True``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        leaves = tree_leaves((args, kwargs))
        device = any(_on_device(t) for t in leaves)
        name = getattr(func, "__name__", str(func))
        if func in READS and device:
            self.reads.append(name)
        if func is torch.tensor and kwargs.get("device") is not None:
            self.reads.append("torch.tensor(device=...)")
        moved = func in (Tensor.to, Tensor.cuda) and _moves(args, kwargs)
        if moved and not device and not kwargs.get("non_blocking", False):
            self.reads.append(f"{name} (blocking host-to-device copy)")
        out = func(*args, **kwargs)
        if device or moved or kwargs.get("device") is not None:
            _tag(out)
        return out


def _images(n: int, size: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size + k % 3, 3), dtype=np.uint8)) for k in range(n)]


def _packed(n: int, size: int = 40, views: int = 4) -> PackedImages:
    torch.manual_seed(0)
    return PackedImages.cat([CropBoxes(views)(im) for im in _images(n, size)])


def _top_level_ops(fn: Any) -> list[str]:
    """Names of the aten ops ``fn()`` dispatches from Python (not those they call)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return [e.name for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None]


def test_device_views_take_the_same_ops_at_8_and_64_images():
    """The batched crops and the views after them: a fixed number of ops, not a few per box."""
    aug = BatchAugment(24, (0.5,) * 3, (0.25,) * 3, crop=False, blur_p=0.5)
    counts = {}
    aug.views(_packed(2).crops(24), 4)  # the constants, built once per device
    for n in (8, 64):
        packed = _packed(n)
        gen = torch.Generator().manual_seed(0)
        crops = _top_level_ops(lambda p=packed: p.crops(24, batched=True))
        views = _top_level_ops(lambda p=packed, g=gen: aug.views(p.crops(24, batched=True), 4, g))
        counts[n] = (len(crops), len(views))
    (crops8, views8), (crops64, views64) = counts[8], counts[64]
    assert abs(crops64 - crops8) <= 3 and abs(views64 - views8) <= 3, counts
    # the per-box path it replaces on the device: at least one more op per added box
    packs = {n: _packed(n) for n in (8, 64)}
    per_box = {n: len(_top_level_ops(lambda p=p: p.crops(24, batched=False))) for n, p in packs.items()}
    assert per_box[64] - per_box[8] >= (64 - 8) * 4, per_box


def _trainer(tmp_path: Any, recipe: str, *overrides: str) -> Pretrainer:
    sets = [*TINY, "train.log_every=1000", "train.epochs=1", "monitor.every=-1", *overrides]
    if recipe != "demo":
        sets += ["data.dataset=synthetic", "model.backbone=resnet10t", "train.channels_last=true"]
    return Pretrainer(load_recipe(recipe, sets), tmp_path, progress=False)


PATHS = {
    "pil_views": ("demo", ()),
    "pil_uint8_views": ("demo", ("data.uint8_views=true",)),
    "device_views": ("demo", ("data.batch_augment=true",)),
    "crop_boxes": ("imagenet_simsiam_gsg", ("data.batch_augment=true", "data.image_size=24")),
    "byol_crop_boxes": ("imagenet_byol_gsg", ("data.batch_augment=true", "data.image_size=24")),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_a_steady_state_step_reads_nothing_back(tmp_path, monkeypatch, path):
    """One non-log step of the trainer (views, forward, backward, optimiser, EMA, telemetry, tally) on
    each input path, with the crop boxes resized as on the device (batched)."""
    recipe, overrides = PATHS[path]
    monkeypatch.setattr(PackedImages, "crops", functools.partialmethod(PackedImages.crops, batched=True))
    trainer = _trainer(tmp_path, recipe, *overrides)
    trainer.learner.train()
    trainer.data.set_epoch(0)
    batches = iter(trainer.train_loader)
    tally = torch.zeros((), device=trainer.device)

    def step(k: int, batch: list) -> None:
        out, images, lr = trainer._step(batch, k)
        loss = out.loss.detach()
        tally.add_(loss)
        trainer.telemetry.step(loss, images, 0.0, out, trainer.state.step, 0.0, lr or 0.0)

    step(0, next(batches)[0])  # the first step builds the optimiser state
    batch = next(batches)[0]
    _tag([list(trainer.learner.parameters()), list(trainer.learner.buffers()), tally])
    _tag([v for state in trainer.optimizer.state.values() for v in state.values()])
    _tag([trainer.telemetry.steps.interval.loss_sum, trainer.telemetry.steps.interval.selection])
    with DeviceReads() as mode:
        step(1, batch)
    assert trainer.telemetry.steps.pending == 2  # no row was written: not a log step
    assert mode.reads == [], collections.Counter(mode.reads)


def test_device_reads_sees_what_a_sync_is():
    """The counter counts ``.item()``, ``bincount`` and ``torch.tensor(device=)`` on device tensors, and
    not reads of host tensors (a batch's sizes and boxes stay on the host)."""
    with DeviceReads() as mode:
        x = torch.zeros(3, device="cpu")
        host = torch.arange(3)
        x.add_(1).sum().item()
        torch.bincount(x.long())
        torch.tensor([1.0, 2.0], device=x.device)
        host.tolist()
        bool(host.any())
        host.to("cpu", non_blocking=True)
    assert mode.reads == ["item", "bincount", "torch.tensor(device=...)"], mode.reads


def test_sgd_is_fused_on_cuda_parameters_only_unless_set():
    cfg = OptimConfig()
    cuda, cpu = SimpleNamespace(device=torch.device("cuda")), SimpleNamespace(device=torch.device("cpu"))
    assert sgd_fused(cfg, [cuda, cuda]) and not sgd_fused(cfg, [cuda, cpu]) and not sgd_fused(cfg, [])
    assert not sgd_fused(OptimConfig(fused=False), [cuda]) and sgd_fused(OptimConfig(fused=True), [cpu])
    assert not sgd_fused(OptimConfig(foreach=True), [cuda])  # an explicit foreach keeps foreach
    opt = build_optimizer({"m": torch.nn.Linear(2, 2)}, cfg, 256)
    assert opt.defaults["foreach"] and not opt.defaults["fused"]  # CPU parameters: foreach


def test_ddp_gets_the_recipe_switches(monkeypatch, tmp_path):
    seen = {}

    def fake_ddp(module, **kwargs):
        seen.update(kwargs)
        return module

    trainer = _trainer(tmp_path, "demo", "train.ddp_static_graph=true", "train.ddp_broadcast_buffers=false")
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", fake_ddp)
    monkeypatch.setattr(trainer.dist, "world_size", 2)
    trainer._build_model()
    assert seen == {
        "device_ids": None,
        "gradient_as_bucket_view": True,
        "static_graph": True,
        "broadcast_buffers": False,
    }


@pytest.mark.slow
def test_gpu_checks_dry_run(tmp_path):
    """benchmarks/gpu_checks.py --dry-run: the GPU script's code paths on the CPU at tiny sizes."""
    report = _gpu_checks().main(
        ["--dry-run", "--data", str(tmp_path / "jpegs"), "--out", str(tmp_path / "gc.json")]
    )
    assert report["sync_free_step"]["ok"] and report["decode"]["crops_equal_cpu"]
    assert report["decode"]["max_mean_abs_diff_vs_cpu"] == 0.0
    assert [r["variant"] for r in report["ab"]] == ["pil_views", "device_views", "device_views_device_decode"]
    assert all(r["images_per_s"] > 0 for r in report["ab"])
    assert (tmp_path / "gc.md").read_text().count("| ") >= 3


def _gpu_checks():
    spec = importlib.util.spec_from_file_location("gpu_checks", BENCH / "gpu_checks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_checks"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("recipe", ["demo", "imagenet_byol_gsg_byol_views"])
def test_uint8_pil_views_normalised_on_the_device_are_the_float_views(tmp_path, recipe):
    """``data.uint8_views``: the workers ship uint8, :func:`step_views` normalises: the same
    floats as the workers' ``ToTensor`` + ``Normalize``, bit for bit (BYOL: two pipelines)."""
    views = {}
    for flag in ("false", "true"):
        trainer = _trainer(tmp_path / flag, recipe, f"data.uint8_views={flag}", "data.image_size=24")
        assert (trainer.data.normalize is not None) == (flag == "true")
        trainer.data.set_epoch(0)
        batch = next(iter(trainer.train_loader))[0]
        assert batch[0].dtype == (torch.uint8 if flag == "true" else torch.float32)
        views[flag] = step_views(
            batch, trainer.data, trainer.learner.config.num_views, trainer.device, True, 0
        )
    for a, b in zip(views["false"], views["true"], strict=True):
        assert torch.equal(a, b) and b.is_contiguous(memory_format=torch.channels_last)


def test_device_batches_pass_the_items_through_off_cuda():
    items = [([torch.zeros(2)], torch.zeros(2), 0)]
    assert list(device_batches(items, torch.device("cpu"))) == items
    fetched = []
    more = (fetched.append(i) or ([torch.full((2,), i)], None, 0) for i in range(5))
    assert len(list(device_batches(more, torch.device("cpu"), limit=2))) == 2 and fetched == [0, 1]


def _ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("gsg-ahead")]


def test_ahead_prepares_the_next_item_while_the_caller_holds_one():
    started = {i: threading.Event() for i in range(5)}
    consumer = threading.current_thread()

    def prepare(i: int) -> tuple[int, torch.Tensor]:
        assert threading.current_thread() is not consumer
        started[i].set()
        return i, torch.full((3,), i) * 2

    out = []
    for i, value in ahead(iter(range(4)), prepare):
        if i < 3:  # item i + 1 is fetched and prepared while the caller still holds item i
            assert started[i + 1].wait(timeout=30)
        else:
            assert not started[4].is_set()  # nothing past the last item
        out.append((i, value.tolist()))
    assert out == [(i, [2 * i] * 3) for i in range(4)]
    assert _ahead_threads() == []  # exhausted: the thread is stopped
    assert list(ahead([], prepare)) == [] and _ahead_threads() == []
    with pytest.raises(ValueError, match="depth"):
        next(ahead([1], prepare, depth=0))


def test_ahead_raises_at_the_failing_item_and_stops_its_thread_on_close():
    def prepare(i: int) -> int:
        if i == 2:
            raise KeyError(f"bad item {i}")
        return i

    got = []
    with pytest.raises(KeyError, match="bad item 2"):
        for i in ahead(range(5), prepare):
            got.append(i)
    assert got == [0, 1] and _ahead_threads() == []
    started, released = threading.Event(), threading.Event()

    def slow(i: int) -> int:
        if i == 1:
            started.set()
            assert released.wait(timeout=30)
        return i

    items = ahead(range(10), slow)
    assert next(items) == 0 and started.wait(timeout=30)  # item 1 in flight, blocked
    assert len(_ahead_threads()) == 1
    releaser = threading.Timer(0.05, released.set)
    releaser.start()
    items.close()  # waits for the item in flight, then stops the thread
    assert released.is_set() and _ahead_threads() == []
    releaser.join()


@pytest.mark.gpu
def test_uint8_views_normalised_on_cuda_equal_the_workers_floats():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    want = torch.stack([TF.normalize(TF.to_tensor(TF.to_pil_image(im)), mean, std) for im in x])
    assert torch.equal(normalize_uint8(x.cuda(), mean, std).cpu(), want)
    assert torch.equal(normalize_uint8(x, mean, std), want)
