"""The in-process half of ``benchmarks/gpu_checks.sh``: one step under
``torch.cuda.set_sync_debug_mode("error")``, nvjpeg decode against PIL and the CPU's crops, and the A/B
of PIL views vs the device path vs device decode (compile off/on) on written JPEGs, ResNet-50 batch 128
bf16; ``--dry-run``: the same code on the CPU at tiny sizes (compile off).

    python benchmarks/gpu_checks.py --out benchmarks/results/gpu_checks.json [--dry-run]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
VARIANTS = {  # name: recipe overrides
    "pil_views": ["data.batch_augment=false"],
    "device_views": ["data.batch_augment=true"],
    "device_views_device_decode": ["data.batch_augment=true", "data.decode=device"],
}


def _module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sizes(dry_run: bool) -> dict[str, Any]:
    """Batch, image size, steps, workers and backbone of the full run or of the dry run."""
    if dry_run:
        return {"batch": 8, "image_size": 32, "steps": 2, "warmup": 1, "workers": 0, "backbone": "resnet10t"}
    return {"batch": 128, "image_size": 224, "steps": 12, "warmup": 4, "workers": 12, "backbone": "resnet50"}


def write_folder(root: Path, n: int) -> Path:
    """``n`` JPEGs in ``root/train/<class>/`` (bench_imagenet_views' ImageNet-like photos)."""
    paths = _module("bench_imagenet_views").write_jpegs(root / "jpegs", n)
    for i, path in enumerate(paths):
        folder = root / "train" / f"c{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        path.rename(folder / path.name)
    return root


def recipe_sets(s: dict[str, Any], root: Path, device: str) -> list[str]:
    """The overrides every check shares: the JPEG folder, the image size, bf16 on CUDA."""
    precision = "bf16" if device == "cuda" else "fp32"
    return [
        "data.dataset=imagefolder",
        f"data.root={root}",
        f"data.image_size={s['image_size']}",
        f"train.precision={precision}",
    ]


def bench_args(s: dict[str, Any], root: Path, device: str, overrides: list[str]) -> list[str]:
    """bench_throughput's arguments for one A/B side."""
    args = ["--recipes", "mocov2", "--method", "simsiam_gsg", "--workers", str(s["workers"])]
    args += ["--batch", str(s["batch"]), "--steps", str(s["steps"]), "--warmup", str(s["warmup"])]
    args += ["--backbone", s["backbone"], "--device", device]
    return args + [a for kv in [*recipe_sets(s, root, device), *overrides] for a in ("--set", kv)]


def sync_free_step(s: dict[str, Any], root: Path, device: str) -> dict[str, Any]:
    """Two warm-up steps of the trainer on the device path with device decode, then one non-log step
    under ``set_sync_debug_mode("error")`` on CUDA (on the CPU: the same step, nothing to check)."""
    from gsg_zoo.config.recipes import load_recipe
    from gsg_zoo.train.trainer import Pretrainer

    recipe = load_recipe(
        "imagenet_simsiam_gsg",
        [
            *recipe_sets(s, root, device),
            *VARIANTS["device_views_device_decode"],
            f"data.loader.num_workers={s['workers']}",
            f"train.batch_size={s['batch']}",
            f"train.device={device}",
            f"model.backbone={s['backbone']}",
            "train.log_every=1000",
            "monitor.every=-1",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Pretrainer(recipe, tmp, progress=False)
        trainer.learner.train()
        trainer.data.set_epoch(0)
        batches = iter(trainer.train_loader)
        for k in range(2):
            trainer._step(next(batches)[0], k)
        batch = next(batches)[0]
        error = None
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            out, _, _ = trainer._step(batch, 2)
            trainer.telemetry.step(out.loss.detach(), s["batch"], 0.0, out, trainer.state.step, 0.0, 0.0)
        except RuntimeError as err:
            error = str(err).splitlines()[0]
        finally:
            if device == "cuda":
                torch.cuda.set_sync_debug_mode(0)
        trainer.data.close()
    return {
        "sync_debug_mode": "error" if device == "cuda" else "n/a (cpu)",
        "ok": error is None,
        "error": error,
    }


def decode_check(root: Path, device: str, n: int) -> dict[str, Any]:
    """A batch of the JPEGs decoded on ``device`` vs PIL, and its batched crops vs the CPU's bytes."""
    from gsg_zoo.data.batch_augment import CropBoxes, PackedImages
    from gsg_zoo.data.images import open_image

    paths = sorted((root / "train").rglob("*.jpg"))[:n]
    parts = []
    for k, path in enumerate(paths):
        torch.manual_seed(k)
        parts.append(CropBoxes(4)(open_image(path.read_bytes(), True)))
    packed = PackedImages.cat(parts)
    cpu_images = packed.decoded()
    start = time.perf_counter()
    moved = packed.to(device)
    images = moved.decoded()
    if device == "cuda":
        torch.cuda.synchronize()
    decode_s = time.perf_counter() - start
    diff = max(float((a.cpu().float() - b.float()).abs().mean()) for a, b in zip(images, cpu_images))
    crops_equal = bool(torch.equal(moved.crops(64).cpu(), packed.crops(64, batched=False)))
    return {
        "images": n,
        "decode_s": decode_s,
        "max_mean_abs_diff_vs_cpu": diff,
        "crops_equal_cpu": crops_equal,
    }


def ab(s: dict[str, Any], root: Path, device: str, compile_modes: list[bool]) -> list[dict[str, Any]]:
    """images/s of every input path (compile off/on) through bench_throughput."""
    bt, rows = _module("bench_throughput"), []
    for name, overrides in VARIANTS.items():
        for compiled in compile_modes:
            sets = [*overrides, f"train.compile={str(compiled).lower()}"]
            result = bt.main(bench_args(s, root, device, sets))["results"][0]
            rows.append({"variant": name, "compile": compiled, **result})
    return rows


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"GPU checks on {report['machine']} ({'dry run, CPU' if report['dry_run'] else 'full'}): "
        f"{report['sizes']['backbone']}, batch {report['sizes']['batch']}, {report['sizes']['image_size']} px, "
        f"{report['precision']}, {report['sizes']['workers']} workers, real JPEGs.",
        "",
        f"- one step under sync debug mode: {'ok' if report['sync_free_step']['ok'] else 'FAILED'} "
        f"({report['sync_free_step']['sync_debug_mode']})",
        f"- decode: {report['decode']['images']} JPEGs in {report['decode']['decode_s']:.3f} s, mean |diff| vs CPU "
        f"{report['decode']['max_mean_abs_diff_vs_cpu']:.3f}, crops equal to the CPU bytes: {report['decode']['crops_equal_cpu']}",
        "",
        "| input path | compile | images/s | data wait % | loader-only images/s |",
        "|---|---|---|---|---|",
    ]
    for r in report["ab"]:
        lines.append(
            f"| {r['variant']} | {r['compile']} | {r['images_per_s']:.1f} | {100 * r['data_wait_frac']:.1f} | "
            f"{r['loader_only_images_per_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="the CPU at tiny sizes (no GPU needed)")
    p.add_argument("--data", help="where the JPEGs are written (default: a temporary folder)")
    p.add_argument("--no-compile", action="store_true", help="the A/B with compile off only")
    p.add_argument("--out", help="write JSON here (and a .md beside it)")
    args = p.parse_args(argv)
    device = "cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"
    s = sizes(args.dry_run)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_folder(Path(args.data or tmp), s["batch"] * (s["warmup"] + s["steps"] + 2))
        report = {
            "dry_run": args.dry_run,
            "device": device,
            "machine": torch.cuda.get_device_name(0) if device == "cuda" else "CPU",
            "torch": torch.__version__,
            "precision": "bf16" if device == "cuda" else "fp32",
            "sizes": s,
            "sync_free_step": sync_free_step(s, root, device),
            "decode": decode_check(root, device, s["batch"]),
            "ab": ab(s, root, device, [False] if args.no_compile or args.dry_run else [False, True]),
        }
    print(to_markdown(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        Path(args.out).with_suffix(".md").write_text(to_markdown(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
