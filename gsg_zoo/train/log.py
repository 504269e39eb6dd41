"""The run's files: config.yaml, one row per epoch (metrics.jsonl, metrics.csv, TensorBoard), and at
the end summary.json and curves.png. Written by the main rank only."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import socket
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import yaml
from torch import Tensor

from ..core.distributed import DistInfo
from ..method.ema import ema_momentum
from ..method.losses import PAIRS

if TYPE_CHECKING:
    from ..config.recipes import MonitorConfig
    from .state import RunState

log = logging.getLogger("gsg_zoo.pretrain")
Row = dict[str, Any]


def tensorboard_writer(path: Path) -> Any:
    """A ``SummaryWriter`` at ``path``; None (with a note) when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        return None
    return SummaryWriter(str(path))


class RunLog:
    """Writes a run's outputs under ``out``; every method is a no-op when ``enabled`` is False."""

    def __init__(self, out: Path, tensorboard: bool, enabled: bool = True) -> None:
        self.out, self.tensorboard, self.enabled = out, tensorboard, enabled
        self._tb: Any = None

    def start(self, config: dict[str, Any]) -> None:
        """Create ``out`` and write the fully resolved recipe to ``config.yaml``; a resumed run with
        changed settings keeps the earlier one as ``config.N.yaml`` (N = 1, 2, ...)."""
        if not self.enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path, text = self.out / "config.yaml", yaml.safe_dump(config, sort_keys=False)
        if path.exists() and path.read_text() != text:
            n = 1 + sum(1 for _ in self.out.glob("config.*.yaml"))
            path.rename(self.out / f"config.{n}.yaml")
        path.write_text(text)

    def epoch(self, history: list[Row]) -> None:
        """Rewrite the metrics files from the whole ``history`` (consistent after a resume) and send
        its last row to TensorBoard."""
        if not self.enabled:
            return
        write_history(history, self.out)
        if self.tensorboard:
            self._scalars(history[-1])

    def finish(self, summary: dict[str, Any], history: list[Row], title: str) -> None:
        if not self.enabled:
            return
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_curves(history, self.out / "curves.png", title=title)

    def _scalars(self, row: Row) -> None:
        if self._tb is None:
            self._tb = tensorboard_writer(self.out / "tb")
            if self._tb is None:  # not installed: said once, then no TensorBoard for this run
                self.tensorboard = False
                return
        for k, v in row.items():
            if isinstance(v, (int, float)) and k != "epoch":
                self._tb.add_scalar(k, v, row["epoch"])


def write_history(history: list[Row], out: Path) -> None:
    """``out/metrics.jsonl`` (a row per line) and ``out/metrics.csv`` (columns: every key, sorted)."""
    with open(out / "metrics.jsonl", "w") as f:
        for r in history:
            f.write(json.dumps(r) + "\n")
    keys = sorted({k for r in history for k in r})
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)


def run_summary(
    state: RunState, world_size: int, device: torch.device, train_time: float, wall_time: float
) -> dict[str, Any]:
    """summary.json: what was trained, the last monitor readings, and time and throughput."""
    recipe, cfg, history = state.recipe, state.learner.config, state.history
    images = sum(r.get("steps", 0) for r in history) * recipe.train.batch_size
    last = history[-1] if history else {}
    return {
        "name": recipe.name,
        "method": cfg.method,
        "predictor": cfg.predictor,
        "backbone": cfg.backbone,
        "dataset": recipe.data.dataset,
        "epochs": state.epoch,
        "steps": state.step,
        "batch_size": recipe.train.batch_size,
        "world_size": world_size,
        "device": str(device.type),
        "device_name": device_name(device),
        "final_loss": last.get("loss"),
        **monitor_summary(recipe.monitor, history),
        "train_time_s": train_time,
        "device_hours": train_time * world_size / 3600,
        "images_per_s": images / max(train_time, 1e-9),
        "images_seen": images,
        "encoder_passes": images * cfg.num_views,
        "skipped_images": state.skipped_images,
        "wall_time_s_this_process": wall_time,
    }


def monitor_summary(mc: MonitorConfig, history: list[Row]) -> dict[str, Any]:
    """The last monitored epoch's kNN top-1 and collapse indicators (None if none was monitored)."""
    monitored = [r for r in history if "knn_top1" in r]
    last = monitored[-1] if monitored else {}
    return {
        "knn_top1": last.get("knn_top1"),
        "knn_protocol": {
            "k": mc.k,
            "t": mc.t,
            "train": mc.train_split,
            "test": mc.test_split,
            "description": last.get("monitor_protocol"),
        },
        "z_std": last.get("z_std"),
        "z_rank": last.get("z_rank"),
        "h_rank": last.get("h_rank"),
        **online_probe_summary(mc, history),
    }


#: What the online probe measures, as the summary and the card name it.
ONLINE_PROBE_PROTOCOL = (
    "online linear probe: a linear head on the detached pooled backbone features of each step's first "
    "view, its own SGD (lr {lr}, momentum 0.9, constant); top1 on the kNN monitor's test images (eval "
    "mode), train_top1 on the epoch's augmented training batches"
)


def online_probe_summary(mc: MonitorConfig, history: list[Row]) -> dict[str, Any]:
    """``{"online_probe": {top1, train_top1, protocol, curve}}`` when the run had one (else ``{}``); kept
    nested so that it is not read as a linear-probe result."""
    rows = [r for r in history if "online_linear_train_top1" in r or "online_linear_top1" in r]
    if not rows:
        return {}
    last = rows[-1]
    return {
        "online_probe": {
            "top1": last.get("online_linear_top1"),
            "train_top1": last.get("online_linear_train_top1"),
            "epoch": last["epoch"],
            "protocol": ONLINE_PROBE_PROTOCOL.format(lr=mc.online_linear_lr),
            "curve": [
                [r["epoch"], r.get("online_linear_top1"), r.get("online_linear_train_top1")] for r in rows
            ],
        }
    }


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" x{os.cpu_count()}"
    return f"cpu x{os.cpu_count()}"


CURVE_PANELS = (
    ("loss", "loss"),
    ("knn_top1", "kNN top-1 (%)"),
    ("z_std", "std(normalised z)·√d"),
    ("z_rank", "effective rank"),
)


def plot_curves(history: list[Row], path: Path, title: str = "") -> None:
    """PNG of loss, kNN accuracy and collapse indicators over epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for ax, (key, label) in zip(axes, CURVE_PANELS):
        _plot_panel(ax, history, key, label)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_panel(ax: Any, history: list[Row], key: str, label: str) -> None:
    """One metric over epochs; the rank panel also draws the backbone's rank ``h_rank``."""
    pts = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
    if key == "z_rank":
        pts_h = [(r["epoch"], r["h_rank"]) for r in history if r.get("h_rank") is not None]
        if pts_h:
            ax.plot(*zip(*pts_h), marker=".", label="backbone h")
    if pts:
        ax.plot(*zip(*pts), marker=".", label="projection z" if key == "z_rank" else None)
    probe = [
        (r["epoch"], r["online_linear_top1"]) for r in history if r.get("online_linear_top1") is not None
    ]
    if key == "knn_top1" and probe:  # the online linear probe on the same test images
        if pts:
            ax.lines[-1].set_label("kNN")
        ax.plot(*zip(*probe), marker=".", label="online linear")
        ax.legend()
    ax.set_xlabel("epoch")
    ax.set_title(label)
    protocol = next((r["monitor_protocol"] for r in reversed(history) if r.get("monitor_protocol")), None)
    if key == "knn_top1" and protocol:  # the curve names what it measures
        ax.set_title(f"{label}\n" + textwrap.fill(protocol, 56), fontsize=7)
    ax.grid(alpha=0.3)
    if key == "z_rank" and pts:
        ax.legend()


if TYPE_CHECKING:
    from ..config.recipes import Recipe
    from .state import RunState

log = logging.getLogger("gsg_zoo.pretrain")

SELECTION_KEYS = tuple(f"select_{a}_{b}" for a, b in PAIRS)  # counts of each GSG pair in the interval
STEPS_FILE = "steps.jsonl"
LOG_FORMAT = "%(asctime)s [rank {rank}/{world} {host}] %(name)s %(levelname)s: %(message)s"


def configure_rank_logging(info: DistInfo) -> None:
    """Root log lines name the rank and host; ranks other than 0 log warnings and errors only."""
    fmt = logging.Formatter(
        LOG_FORMAT.format(rank=info.rank, world=info.world_size, host=socket.gethostname()), "%H:%M:%S"
    )
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # the console's (``logging.basicConfig``), not a capture's
            handler.setFormatter(fmt)
    if not info.is_main:
        logging.getLogger("gsg_zoo").setLevel(logging.WARNING)


@dataclass
class Interval:
    """One rank's running totals since the last row."""

    loss_sum: Tensor  # on the device: no host sync per step
    selection: Tensor  # (4,) GSG pair counts, on the device
    steps: int = 0
    images: int = 0
    data_s: float = 0.0
    start: float = field(default_factory=time.perf_counter)


class StepTelemetry:
    """Accumulates each step (:meth:`record`) and turns an interval into an all-reduced row (:meth:`row`)."""

    def __init__(
        self, info: DistInfo, device: torch.device, total_steps: int, ema: dict[str, Any] | None = None
    ) -> None:
        self.info, self.device, self.total_steps = info, device, total_steps
        self.ema = ema  # BYOL: the learner's ema_momentum / ema_schedule
        self.interval = self._fresh()

    def _fresh(self) -> Interval:
        zeros = torch.zeros((), device=self.device)
        return Interval(zeros, torch.zeros(4, dtype=torch.long, device=self.device))

    def restart(self) -> None:
        """Drop the running totals and restart the clock (an epoch start: the monitor's time is no step)."""
        self.interval = self._fresh()

    def record(
        self, loss: Tensor, images: int, data_s: float, selection_counts: Tensor | None = None
    ) -> None:
        """Add one step: its detached loss (device tensor), local images, seconds waited for the batch
        and, for GSG, the ``(4,)`` selection counts of the local batch."""
        iv = self.interval
        iv.loss_sum += loss.float()
        if selection_counts is not None:
            iv.selection += selection_counts
        iv.steps, iv.images, iv.data_s = iv.steps + 1, iv.images + images, iv.data_s + data_s

    @property
    def pending(self) -> int:
        return self.interval.steps

    def row(self, step: int, epoch: float, lr: float) -> dict[str, Any]:
        """The interval's row (every rank must call this at the same step), then a fresh interval."""
        iv, self.interval = self.interval, self._fresh()
        wall = time.perf_counter() - iv.start
        step_s, data_s = wall / max(iv.steps, 1), iv.data_s / max(iv.steps, 1)
        mem = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else 0.0
        head = torch.tensor([iv.images, iv.data_s, wall, iv.steps], dtype=torch.float64, device=self.device)
        total = torch.cat([iv.loss_sum.double().view(1), iv.selection.double(), head])
        peak = torch.tensor([step_s, -step_s, data_s, -data_s, mem], dtype=torch.float64, device=self.device)
        if self.info.world_size > 1:
            dist.all_reduce(total)
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        loss, *sel, images, waited, walls, steps = total.tolist()
        step_max, step_min, data_max, data_min, mem = peak.tolist()
        mean_wall = walls / self.info.world_size
        row: dict[str, Any] = {
            "step": step,
            "epoch": round(epoch, 4),
            "loss": loss / max(steps, 1),
            "lr": lr,
            "images_per_s": images / max(mean_wall, 1e-9),
            "data_wait_frac": waited / max(walls, 1e-9),
            "step_time_s_max": step_max,
            "step_time_s_min": -step_min,
            "data_time_s_max": data_max,
            "data_time_s_min": -data_min,
            "eta_s": (self.total_steps - step) * mean_wall / max(steps / self.info.world_size, 1),
            "time": time.time(),
        }
        if self.ema is not None:
            m, schedule = self.ema["momentum"], self.ema["schedule"]
            row["ema_momentum"] = ema_momentum(m, max(step - 1, 0), self.total_steps, schedule)  # last step's
        if any(sel):
            row.update(zip(SELECTION_KEYS, (int(c) for c in sel)))
        if self.device.type == "cuda":
            row["max_mem_gib"] = mem
        return row


def format_row(row: dict[str, Any], total_steps: int) -> str:
    """One plain log line of a step row (what a log file without a TTY gets instead of a bar)."""
    eta = (
        time.strftime("%H:%M:%S", time.gmtime(row["eta_s"]))
        if row["eta_s"] < 86400
        else f"{row['eta_s'] / 86400:.1f}d"
    )
    parts = [
        f"step {row['step']}/{total_steps}",
        f"epoch {row['epoch']:.2f}",
        f"loss {row['loss']:.4f}",
        f"lr {row['lr']:.4g}",
        f"{row['images_per_s']:.0f} img/s",
        f"data {100 * row['data_wait_frac']:.0f}%",
        f"step {row['step_time_s_min']:.3f}-{row['step_time_s_max']:.3f}s",
        f"eta {eta}",
    ]
    if "ema_momentum" in row:
        parts.append(f"ema {row['ema_momentum']:.4f}")
    if SELECTION_KEYS[0] in row:
        total = sum(row[k] for k in SELECTION_KEYS) or 1
        parts.append("select " + "/".join(f"{100 * row[k] / total:.0f}" for k in SELECTION_KEYS) + "%")
    if "max_mem_gib" in row:
        parts.append(f"mem {row['max_mem_gib']:.1f}G")
    return ", ".join(parts)


def console_is_tty() -> bool:
    return sys.stderr.isatty()


class StepSinks:
    """Where rank 0's step rows go: ``steps.jsonl`` (always), TensorBoard, W&B and a log line."""

    def __init__(
        self,
        out: Path,
        tensorboard: bool,
        wandb_run: Any = None,
        log_lines: bool = True,
        total_steps: int = 0,
    ) -> None:
        self.out, self.wandb, self.log_lines, self.total_steps = out, wandb_run, log_lines, total_steps
        self._tb = tensorboard_writer(out / "tb" / "steps") if tensorboard else None

    def truncate(self, step: int) -> None:
        """Drop rows past ``step`` (a resumed run redoes those steps): the file stays one history."""
        path = self.out / STEPS_FILE
        if path.exists():
            rows = [
                line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step
            ]
            path.write_text("".join(r + "\n" for r in rows))

    def write(self, row: dict[str, Any]) -> None:
        with open(self.out / STEPS_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in ("step", "time")}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, row["step"])
        if self.wandb is not None:
            self.wandb.log({f"step/{k}": v for k, v in scalars.items()}, step=row["step"])
        if self.log_lines:
            log.info(format_row(row, self.total_steps))

    def epoch(self, row: dict[str, Any]) -> None:
        """An epoch row to W&B (``epoch/KEY`` at its global step); TensorBoard gets it from the run log."""
        if self.wandb is not None:
            scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
            self.wandb.log({f"epoch/{k}": v for k, v in scalars.items()}, step=row["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def start_wandb(out: Path, run_id: str | None, project: str, name: str, config: dict[str, Any]) -> Any:
    """A W&B run in ``out/wandb``, resuming ``run_id`` when given (a resumed pretraining continues its
    curves). ``WANDB_MODE=offline`` writes it locally for a later ``wandb sync``."""
    try:
        import wandb
    except ImportError:
        raise RuntimeError("monitor.wandb=true needs the wandb package: pip install wandb") from None
    return wandb.init(
        project=project,
        id=run_id or uuid.uuid4().hex[:8],
        resume="allow",
        dir=str(out),
        name=name,
        config=config,
    )


class RunTelemetry:
    """The trainer's telemetry: a :class:`StepTelemetry` on every rank, :class:`StepSinks` on rank 0.

    ``state.telemetry`` (saved in every checkpoint) keeps the W&B run id, so a resumed run logs to the
    same W&B run.
    """

    def __init__(
        self,
        recipe: Recipe,
        info: DistInfo,
        device: torch.device,
        total_steps: int,
        out: Path,
        progress: bool = True,
    ) -> None:
        lc, mc = recipe.learner_config(), recipe.monitor
        ema = {"momentum": lc.ema_momentum, "schedule": lc.ema_schedule} if lc.target == "ema" else None
        self.recipe, self.info, self.out, self.progress = recipe, info, out, progress
        self.every, self.total_steps = recipe.train.log_every, total_steps
        self.steps = StepTelemetry(info, device, total_steps, ema)
        self.sinks: StepSinks | None = None
        self.tensorboard, self.wandb = mc.tensorboard, mc.wandb

    def start(self, state: RunState) -> None:
        """Open the sinks on rank 0 (after the resume: rows past the resumed step are dropped)."""
        if not self.info.is_main:
            return
        run = None
        if self.wandb:
            run = start_wandb(
                self.out,
                state.telemetry.get("wandb_id"),
                self.recipe.monitor.wandb_project,
                self.recipe.name,
                self.recipe.to_dict(),
            )
            state.telemetry["wandb_id"] = run.id
        self.sinks = StepSinks(
            self.out, self.tensorboard, run, self.progress and not console_is_tty(), self.total_steps
        )
        self.sinks.truncate(state.step)

    def step(
        self,
        loss: Tensor,
        images: int,
        data_s: float,
        out: Any,
        step: int,
        epoch: float,
        lr: float,
        epoch_end: bool = False,
    ) -> None:
        """Record one step; every ``log_every`` steps of the epoch (and at its end) write a row. Every rank
        calls this at the same steps."""
        self.steps.record(loss, images, data_s, getattr(out, "selection_counts", None))
        if self.steps.pending >= self.every or (epoch_end and self.steps.pending):
            row = self.steps.row(step, epoch, lr)
            if self.sinks is not None:
                self.sinks.write(row)

    def epoch(self, row: dict[str, Any]) -> None:
        if self.sinks is not None:
            self.sinks.epoch(row)

    def close(self) -> None:
        if self.sinks is not None:
            self.sinks.close()
            self.sinks = None
