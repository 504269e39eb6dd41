"""The run's files: config.yaml, one row per epoch (metrics.jsonl, metrics.csv, TensorBoard), and at
the end summary.json and curves.png. Written by the main rank only."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

if TYPE_CHECKING:
    from .recipes import MonitorConfig
    from .run_state import RunState

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
        },  # fmt: skip
        "z_std": last.get("z_std"),
        "z_rank": last.get("z_rank"),
        "h_rank": last.get("h_rank"),
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
    ax.set_xlabel("epoch")
    ax.set_title(label)
    protocol = next((r["monitor_protocol"] for r in reversed(history) if r.get("monitor_protocol")), None)
    if key == "knn_top1" and protocol:  # the curve names what it measures
        ax.set_title(f"{label}\n" + textwrap.fill(protocol, 56), fontsize=7)
    ax.grid(alpha=0.3)
    if key == "z_rank" and pts:
        ax.legend()
