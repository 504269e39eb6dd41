"""Training-step benchmark: SimSiam / BYOL with and without GSG (and source-only GSG) at equal settings.

In one process, for each method: the median time of warm training steps (the trainer's step,
``gsg_zoo.train.step.train_step``: forward, backward, SGD step, EMA update), peak memory, FLOPs of
one step (``torch.utils.flop_counter.FlopCounterMode``: matmuls and convolutions) and the achieved
FLOP/s next to a matmul peak measured in the same run, and the time of the guided logic alone
(pairing, selection, GSG loss forward and backward on the real tensor shapes) as a fraction of the
step. Prints markdown tables; ``--out`` writes JSON.

Peak memory: CUDA ``torch.cuda.max_memory_allocated`` during the steps; CPU: the peak resident set
size sampled every millisecond during the steps minus the RSS before the first step (after
``malloc_trim``), an approximation (allocator caching can hide or add memory).

Examples::

    python benchmarks/bench_step.py                       # resnet18 at 32 px, batch 64, all methods
    python benchmarks/bench_step.py --backbone resnet18_cifar --methods byol byol_gsg --out step.json
    python benchmarks/bench_step.py --amp bf16 --channels-last --methods simsiam_gsg
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from gsg_zoo.train.step import autocast, train_step

VARIANTS = {
    "simsiam": ("simsiam", True, False),
    "simsiam_gsg": ("simsiam_gsg", True, False),
    "simsiam_gsg_so": ("simsiam_gsg", True, True),
    "simsiam_nopred": ("simsiam", False, False),
    "simsiam_gsg_nopred": ("simsiam_gsg", False, False),
    "simsiam_gsg_nopred_so": ("simsiam_gsg", False, True),
    "byol": ("byol", True, False),
    "byol_gsg": ("byol_gsg", True, False),
    "byol_gsg_so": ("byol_gsg", True, True),
    "byol_nopred": ("byol", False, False),
    "byol_gsg_nopred": ("byol_gsg", False, False),
    "byol_gsg_nopred_so": ("byol_gsg", False, True),
}  # name -> (method, predictor, source_only); "_so": source-only backward


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("Examples::")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backbone", default="resnet18", help="timm backbone (default resnet18, ImageNet stem)")
    p.add_argument("--size", type=int, default=32, help="image size in pixels (default 32)")
    p.add_argument("--batch", type=int, default=64, help="images per view-batch (default 64)")
    p.add_argument("--steps", type=int, default=5, help="timed warm steps (median reported; default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        metavar="M",
        help=f"variants to run (default all): {', '.join(VARIANTS)}",
    )
    p.add_argument("--projector-layers", type=int, default=2)
    p.add_argument("--proj-dim", type=int, default=2048, help="projector hidden and output width")
    p.add_argument("--pred-dim", type=int, default=512, help="predictor bottleneck width")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="autocast dtype")
    p.add_argument("--channels-last", action="store_true", help="channels_last model and inputs")
    p.add_argument(
        "--foreach", default="auto", choices=["auto", "on", "off"], help="SGD foreach implementation"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder and predictor")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    p.add_argument("--out", help="write the results as JSON here")
    return p.parse_args(argv)


@dataclass
class Setup:
    device: torch.device
    amp: torch.dtype | None
    channels_last: bool

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device.type, self.amp)


# ---------------------------------------------------------------------------------------------- memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory over a block: CUDA allocator peak, or sampled RSS growth on Linux CPUs."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_bytes, self.method = device, None, "n/a"
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated - allocated before"
        elif os.path.exists("/proc/self/statm"):
            _malloc_trim()
            self._base = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
            self.method = "sampled RSS peak - RSS before (approximate)"
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, _rss_bytes()) - self._base


# ---------------------------------------------------------------------------------------------- timing
def median_time(fn: Callable[[], Any], setup: Setup, steps: int, warmup: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    setup.sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        setup.sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def matmul_peak_flops(setup: Setup) -> dict[str, Any]:
    """Best-of-N FLOP/s of a large square matmul (fp32 on CPU, bf16 on CUDA)."""
    dtype, n, reps = (torch.bfloat16, 8192, 20) if setup.device.type == "cuda" else (torch.float32, 2048, 5)
    a = torch.randn(n, n, device=setup.device, dtype=dtype)
    b = torch.randn(n, n, device=setup.device, dtype=dtype)
    a @ b
    setup.sync()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        setup.sync()
        best = min(best, time.perf_counter() - t)
    return {"dtype": str(dtype).replace("torch.", ""), "n": n, "flops_per_s": 2 * n**3 / best}


# ---------------------------------------------------------------------------------------------- steps
def build(variant: str, args: argparse.Namespace, setup: Setup) -> tuple[Any, torch.optim.Optimizer]:
    from gsg_zoo.method.learner import LearnerConfig, SelfSupervisedLearner

    method, predictor, source_only = VARIANTS[variant]
    torch.manual_seed(0)
    cfg = LearnerConfig.for_method(
        method,
        backbone=args.backbone,
        predictor=predictor,
        source_only=source_only,
        projector_layers=args.projector_layers,
        projector_hidden_dim=args.proj_dim,
        projector_dim=args.proj_dim,
        predictor_hidden_dim=args.pred_dim,
    )
    learner = SelfSupervisedLearner(cfg).to(setup.device).train()
    if setup.channels_last:
        learner.to(memory_format=torch.channels_last)
    if args.compile:
        learner.encoder.compile()
        learner.predictor.compile()
    foreach = {"auto": None, "on": True, "off": False}[args.foreach]
    params = [p for p in learner.online_modules().parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4, foreach=foreach)
    return learner, opt


def make_views(learner: Any, args: argparse.Namespace, setup: Setup) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    views = []
    for _ in range(learner.config.num_views):
        v = torch.randn(args.batch, 3, args.size, args.size, generator=g).to(setup.device)
        views.append(v.contiguous(memory_format=torch.channels_last) if setup.channels_last else v)
    return views


def one_step(learner: Any, opt: torch.optim.Optimizer, views: list[torch.Tensor], setup: Setup) -> Any:
    """The trainer's step (:func:`gsg_zoo.train.step.train_step`) without a grad scaler, EMA at 1/100."""
    return train_step(learner, views, opt, ema=learner, step=1, total_steps=100, amp_dtype=setup.amp)


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def guided_logic(learner: Any, args: argparse.Namespace, setup: Setup) -> Callable[[], Any]:
    """What GSG adds beyond the encoder passes, on the step's real (N, D) shapes."""
    from gsg_zoo.method.losses import gsg_loss, gsg_select, negative_cosine
    from gsg_zoo.method.pairing import pair_indices

    cfg, n, dim = learner.config, args.batch, args.proj_dim
    g = torch.Generator().manual_seed(1)
    zs = [torch.randn(n, dim, generator=g).to(setup.device) for _ in range(4)]
    ps = [z.clone().requires_grad_(True) for z in zs]
    imgs = [torch.randn(n, 3, args.size, args.size, generator=g).to(setup.device) for _ in range(4)]

    def reference() -> None:
        r = pair_indices(n, cfg.pairing).to(setup.device, non_blocking=True)
        z4 = [zs[0], zs[1], zs[2][r], zs[3][r]]
        sel = gsg_select(z4, cfg.distance)
        gsg_loss([ps[0], ps[1], ps[2][r], ps[3][r]], z4, selection=sel).backward()

    def source_only() -> None:  # selection, regrouping of the input images and of the targets, loss
        r = pair_indices(n, cfg.pairing).to(setup.device, non_blocking=True)
        z4 = [zs[0], zs[1], zs[2][r], zs[3][r]]
        sel = gsg_select(z4, cfg.distance)
        a, b = (sel // 2).bool(), (sel % 2).bool()
        torch.where(a.view(-1, 1, 1, 1), imgs[1], imgs[0])
        torch.where(b.view(-1, 1, 1, 1), imgs[3][r], imgs[2][r])
        t_a, t_b = torch.where(a[:, None], z4[0], z4[1]), torch.where(b[:, None], z4[2], z4[3])
        (0.5 * (negative_cosine(ps[0], t_a) + negative_cosine(ps[1], t_b))).backward()

    return source_only if cfg.source_only else reference


def host_sync_check(learner: Any, views: list[torch.Tensor], setup: Setup) -> str:
    """On CUDA, run forward+backward with sync debug mode 'error' (reports any host-device sync)."""
    if setup.device.type != "cuda":
        return "n/a (cpu)"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with setup.autocast():
            out = learner(views)
        out.loss.backward()
        return "none"
    except RuntimeError as err:
        return f"sync: {str(err).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
        learner.zero_grad(set_to_none=True)


def bench_variant(variant: str, args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    learner, opt = build(variant, args, setup)
    views = make_views(learner, args, setup)
    method, predictor, source_only = VARIANTS[variant]
    row: dict[str, Any] = {
        "variant": variant,
        "method": method,
        "predictor": predictor,
        "source_only": source_only,
        "views": learner.config.num_views,
    }
    with PeakMemory(setup.device) as mem:
        step_s, times = median_time(
            lambda: one_step(learner, opt, views, setup), setup, args.steps, args.warmup
        )
    row.update(step_ms=step_s * 1e3, step_ms_all=[t * 1e3 for t in times], images_per_s=args.batch / step_s)
    row.update(peak_mem_mb=None if mem.peak_bytes is None else mem.peak_bytes / 2**20, mem_method=mem.method)
    if not args.no_flops and not args.compile:
        flops = count_flops(lambda: one_step(learner, opt, views, setup))
        row.update(gflop_per_step=flops / 1e9, achieved_gflops=flops / step_s / 1e9)
    if learner.config.guidance == "gsg":
        g_s, _ = median_time(guided_logic(learner, args, setup), setup, max(args.steps, 5) * 4, 3)
        row.update(guided_ms=g_s * 1e3, guided_frac=g_s / step_s)
        row["host_syncs"] = host_sync_check(learner, views, setup)
    return row


# ---------------------------------------------------------------------------------------------- report
def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """GSG / baseline (same target and predictor) and source-only / reference GSG."""
    by = {r["variant"]: r for r in rows}
    out = []
    for name, r in by.items():
        if r["method"].endswith("gsg"):
            base = name.replace("_gsg", "").removesuffix("_so")
            ref = name.removesuffix("_so")
            pairs = [("gsg/baseline", base)] + ([("source_only/reference", ref)] if r["source_only"] else [])
            for kind, other in pairs:
                if other in by:
                    o = by[other]
                    mem = (
                        r["peak_mem_mb"] / o["peak_mem_mb"] if r["peak_mem_mb"] and o["peak_mem_mb"] else None
                    )
                    out.append(
                        {
                            "variant": name,
                            "vs": other,
                            "kind": kind,
                            "time_ratio": r["step_ms"] / o["step_ms"],
                            "memory_ratio": mem,
                        }
                    )
    return out


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "n/a" if v is None else format(v, spec)


def to_markdown(result: dict[str, Any]) -> str:
    c, peak = result["config"], result["matmul_peak"]
    lines = [
        f"Step benchmark: {c['backbone']} at {c['size']} px, batch {c['batch']} per view, heads "
        f"{c['proj_dim']}/{c['pred_dim']}, {c['device_name']}, torch {result['torch']}, threads {result['threads']}, "
        f"amp {c['amp']}, channels_last {c['channels_last']}, foreach {c['foreach']}, compile {c['compile']}; "
        f"median of {c['steps']} warm steps. Matmul peak ({peak['dtype']}, {peak['n']}^3): "
        f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s.",
        "",
        "| variant | views | step ms | images/s | peak mem MB | GFLOP/step | GFLOP/s | % of matmul peak "
        "| guided logic ms | guided % of step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        pct = 100 * r["achieved_gflops"] * 1e9 / peak["flops_per_s"] if "achieved_gflops" in r else None
        lines.append(
            f"| {r['variant']} | {r['views']} | {r['step_ms']:.1f} | {r['images_per_s']:.1f} | "
            f"{_fmt(r['peak_mem_mb'])} | {_fmt(r.get('gflop_per_step'), '.2f')} | "
            f"{_fmt(r.get('achieved_gflops'))} | {_fmt(pct)} | {_fmt(r.get('guided_ms'), '.2f')} | "
            f"{_fmt(None if 'guided_frac' not in r else 100 * r['guided_frac'], '.2f')} |"
        )
    if result["ratios"]:
        lines += ["", "| variant | vs | time ratio | memory ratio |", "|---|---|---|---|"]
        for q in result["ratios"]:
            lines.append(
                f"| {q['variant']} | {q['vs']} | {q['time_ratio']:.2f} | {_fmt(q['memory_ratio'], '.2f')} |"
            )
    mem = result["results"][0]["mem_method"] if result["results"] else ""
    lines += ["", f"Peak memory: {mem}."]
    return "\n".join(lines) + "\n"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name} ({os.cpu_count()} cores)"


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[str], None]]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc="bench_step", file=sys.stderr)
    yield lambda name: (bar.set_postfix_str(name), bar.update(1))
    bar.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import gsg_zoo  # noqa: F401  (registers the CIFAR-stem backbones with timm)

    if args.threads:
        torch.set_num_threads(args.threads)
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if name == "auto" else name)
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    setup = Setup(device, amp, args.channels_last)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    config.update(device=device.type, device_name=_device_name(device))
    rows = []
    peak = matmul_peak_flops(setup)
    with _progress(len(args.methods)) as tick:
        for variant in args.methods:
            rows.append(bench_variant(variant, args, setup))
            tick(variant)
    result = {
        "config": config,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "matmul_peak": peak,
        "results": rows,
        "ratios": ratios(rows),
    }
    print(to_markdown(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
