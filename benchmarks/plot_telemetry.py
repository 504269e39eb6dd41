"""PNG of a run's TensorBoard step scalars (``OUT/tb/steps``), as TensorBoard's scalar dashboard shows them.

    python benchmarks/plot_telemetry.py RUN_DIR --out docs/_static/telemetry_steps.png

Panels: loss, global images/s, data-wait fraction, the GSG selection shares of the 4 cross-image pairs,
and the fastest/slowest rank's step time. Read with TensorBoard's own ``EventAccumulator``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gsg_zoo.train.log import SELECTION_KEYS  # noqa: E402


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb" / "steps"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def plot(tags: dict[str, list[tuple[int, float]]], path: Path, title: str) -> None:
    fig, axes = plt.subplots(1, 5, figsize=(18, 3.2))
    for ax, key, label in zip(
        axes[:3],
        ("loss", "images_per_s", "data_wait_frac"),
        ("loss (all ranks)", "images/s (global)", "data-wait fraction"),
    ):
        ax.plot(*zip(*tags[key]), marker=".")
        ax.set_title(label)
    if SELECTION_KEYS[0] in tags:
        steps = [s for s, _ in tags[SELECTION_KEYS[0]]]
        totals = [sum(tags[k][i][1] for k in SELECTION_KEYS) for i in range(len(steps))]
        for k in SELECTION_KEYS:
            axes[3].plot(
                steps, [v / t for (_, v), t in zip(tags[k], totals)], marker=".", label=k[len("select_") :]
            )
        axes[3].legend(fontsize=7)
    axes[3].set_title("GSG pair selected (share)")
    for key, label in (("step_time_s_max", "slowest rank"), ("step_time_s_min", "fastest rank")):
        axes[4].plot(*zip(*tags[key]), marker=".", label=label)
    axes[4].legend(fontsize=7)
    axes[4].set_title("step time (s)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    plot(scalars(args.run_dir), args.out, args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
