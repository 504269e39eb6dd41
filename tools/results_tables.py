"""Render the documentation's results tables from ``benchmarks/results/*.json``: one source of numbers.

    python tools/results_tables.py            # write docs/results/tables/*.md and the README block
    python tools/results_tables.py --check    # exit 1 if a committed table differs from a fresh render

Each table is a pure function of its JSON file(s); ``tests/test_docs.py`` checks that the committed
tables (and the README's demo table, between ``<!-- results:demo -->`` markers) equal the rendering.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TABLES = ROOT / "docs" / "results" / "tables"
README_BLOCK = "demo"  # the table the README shows


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _pm(mean: float, std: float, digits: int = 1) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _rows(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def demo() -> str:
    """The `make demo` 3-row table: Fashion-MNIST, 600 steps, seeds 0-2."""
    ms = _load("demo_seeds.json")["fashion_mnist_600_steps"]["mean_std"]
    rows = []
    for label, key in [("ResNet-10-T, SimSiam+GSG, 600 steps", "pretrained"), ("ResNet-10-T, random init", "random_init"),
                       ("raw pixels", "pixels")]:  # fmt: skip
        knn, lin = ms[f"knn_top1_{key}"], ms[f"linear_fast_top1_{key}"]
        if key == "pixels":  # deterministic: no seed spread
            rows.append([label, f"{knn['mean']:.1f}", f"{lin['mean']:.1f}"])
        else:
            rows.append([label, _pm(knn["mean"], knn["std"]), _pm(lin["mean"], lin["std"])])
    return _rows(
        ["backbone (same images, same protocol)", "kNN top-1 (k=200, T=0.1)", "fast linear top-1"], rows
    )


def peer_parity() -> str:
    """gsg-zoo vs lightly 1.6.0: the same SimSiam/BYOL, kNN and images/s."""
    table = {(r["method"], r["library"]): r for r in _load("peer_parity.json")["table"]}
    rows = []
    for method in ("simsiam", "byol"):
        ours, peer = table[(method, "gsg_zoo")], table[(method, "lightly")]
        rows.append([
            {"simsiam": "SimSiam", "byol": "BYOL"}[method],
            _pm(ours["knn_top1_mean"], ours["knn_top1_std"], 2), _pm(peer["knn_top1_mean"], peer["knn_top1_std"], 2),
            _pm(ours["images_per_s_mean"], ours["images_per_s_std"]),
            _pm(peer["images_per_s_mean"], peer["images_per_s_std"]),
        ])  # fmt: skip
    header = ["method", "kNN gsg-zoo", "kNN lightly", "images/s gsg-zoo", "images/s lightly"]
    return _rows(header, rows)


def _claims(path: str) -> str:
    d = _load(path)
    rows = [
        [r["run"], str(r["epochs"]), f"{r['encoder_passes']:,}", _pm(r["knn_top1"], r["knn_top1_std"]),
         _pm(r["z_rank"], r["z_rank_std"]), _pm(r["h_rank"], r["h_rank_std"]), _pm(r["z_std"], r["z_std_std"], 2)]
        for r in d["table"]
    ]  # fmt: skip
    header = ["run", "epochs", "encoder passes", "kNN top-1 (%)", "eff. rank z", "eff. rank h", "std(z̄)·√d"]
    return _rows(header, rows)


def claims_fmnist() -> str:
    """The claims experiment on Fashion-MNIST, 9 epochs (900 steps per 1x run), seeds 0-2."""
    return _claims("claims_fmnist_9ep/claims.json")


def claims_fmnist_3ep() -> str:
    return _claims("claims_fmnist/claims.json")


def claims_builtin() -> str:
    """The claims experiment on the built-in data, 4 epochs (PIL views), seeds 0-2."""
    return _claims("claims/claims_table.json")


def imagenet_views() -> str:
    """Loader CPU per image of the ImageNet recipes' views."""
    d = _load("imagenet_views_cpu.json")
    ms = d["loader_cpu_ms_per_image"]
    rows = [
        ["decode alone (the floor)", f"{ms['decode']:.2f}", "1.00"],
        ["PIL MoCo-v2 views (`data.batch_augment=false`, the reference)", f"{ms['pil']:.2f}",
         f"{ms['pil'] / ms['decode']:.2f}"],
        ["decode + 4 crop boxes + packing (`data.batch_augment=true`)", f"{ms['boxes']:.2f}",
         f"{ms['boxes'] / ms['decode']:.2f}"],
    ]  # fmt: skip
    return _rows(["loader path", "CPU ms / image", "x decode"], rows)


def throughput() -> str:
    """End-to-end images/s, PIL views (A) vs batch augmentation (B), interleaved in one process."""
    rows = []
    for name, where in [("throughput_mocov2_batch_augment_cpu.json", "2-core CPU, resnet10t, batch 16, fp32"),
                        ("throughput_ab_h200.json", "1x H200, resnet50, batch 128, bf16")]:  # fmt: skip
        d = _load(name)
        a, b = d["images_per_s"]["A"], d["images_per_s"]["B"]
        rows.append([where, str(len(a)), _pm(statistics.mean(a), _sd(a)), _pm(statistics.mean(b), _sd(b)),
                     f"{d['ratio_b_over_a']:.2f}", f"`benchmarks/results/{name}`"])  # fmt: skip
    header = ["machine (ImageNet recipe, SimSiam+GSG, 224 px)", "runs", "PIL views images/s",
              "batch_augment images/s", "ratio", "file"]  # fmt: skip
    return _rows(header, rows)


def probe() -> str:
    """The cached fast linear probe vs re-encoding augmented images every epoch."""
    ten, thirty = (
        _load("probe_cpu_pretrained_resnet10t.json"),
        _load("probe_cpu_pretrained_resnet10t_30ep.json"),
    )
    rows = []
    for d in (ten, thirty):
        f, r = d["fast"], d["reference"]
        rows.append([str(d["epochs"]), f"{f['top1']:.1f} / {f['wall_seconds']:.1f} s",
                     f"{r['top1']:.1f} / {r['wall_seconds']:.1f} s", f"{d['speedup']:.1f}x"])  # fmt: skip
    header = ["epochs", "fast: top-1 / wall", "re-encoding: top-1 / wall", "speed-up"]
    return _rows(header, rows) + (
        f"\nAt equal accuracy the cached probe is {probe_equal_accuracy_speedup():.1f}x faster: its 10-epoch "
        "result is above what the re-encoding probe reaches in 30 epochs.\n"
    )


def probe_equal_accuracy_speedup() -> float:
    """Wall time of the 30-epoch re-encoding probe over the 10-epoch fast probe (the fast one is more
    accurate): the README's "at equal accuracy" ratio."""
    ten, thirty = (
        _load("probe_cpu_pretrained_resnet10t.json"),
        _load("probe_cpu_pretrained_resnet10t_30ep.json"),
    )
    return thirty["reference"]["wall_seconds"] / ten["fast"]["wall_seconds"]


def shards() -> str:
    """The same JPEGs as an ImageFolder, as WebDataset shards read by index and streamed; coverage over
    2 ranks x 2 workers; the shuffle buffer against a global permutation (issue 26)."""
    d = _load("shards_cpu.json")
    rows = [[side, f"{m['images_per_s']:.0f}", f"{d['ratio_images_per_s'][side]:.2f}", f"{m['start_s']:.2f}",
             f"{m['worker_rss_mb']:.0f} / {m['worker_pss_mb']:.0f}"] for side, m in d["mean"].items()]  # fmt: skip
    header = [
        "input",
        "loader images/s",
        "vs folder",
        "start-up: dataset + first batch (s)",
        "worker RSS / PSS (MB)",
    ]
    c = d["coverage_2_ranks_x_2_workers"]
    text = _rows(header, rows) + (
        f"\n{d['images']} JPEGs ({d['jpeg']}), {d['workers']} loader workers, {d['cpus']} CPUs. Streamed over "
        f"{c['ranks']} gloo ranks x {c['workers']} workers: steps per rank {c['steps_per_rank']}, {c['distinct']} "
        f"distinct images, {c['repeated']} repeated, {c['dropped_tail']} of {c['samples']} in the dropped tail.\n\n"
    )
    q = d["shuffle"]
    setup = q.pop("setup")
    header = ["order (rank 0 of " + str(setup["world"]) + ")", "shards per batch", "adjacent pairs from one shard",
              "batch pairs together again next epoch"]  # fmt: skip
    rows = [[name.replace("_", " "), f"{m['shards_per_batch']:.1f}", f"{m['adjacent_same_shard']:.2%}",
             f"{m['batch_pairs_repeated_next_epoch']:.3%}"] for name, m in q.items()]  # fmt: skip
    return (
        text
        + _rows(header, rows)
        + (
            f"\nPlan only: {setup['samples']} samples in shards of {setup['shard']}, {setup['workers']} workers per rank, "
            f"batch {setup['batch']}.\n"
        )
    )


RENDERERS: dict[str, Callable[[], str]] = {
    "shards": shards,
    "demo": demo,
    "peer_parity": peer_parity,
    "claims_fmnist": claims_fmnist,
    "claims_fmnist_3ep": claims_fmnist_3ep,
    "claims_builtin": claims_builtin,
    "imagenet_views": imagenet_views,
    "throughput": throughput,
    "probe": probe,
}


def render_all() -> dict[str, str]:
    return {name: f() for name, f in RENDERERS.items()}


def readme_with(readme: str, table: str, name: str = README_BLOCK) -> str:
    """``readme`` with the block between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` replaced."""
    start, end = f"<!-- results:{name} -->\n", f"<!-- /results:{name} -->"
    if start not in readme or end not in readme:
        raise ValueError(f"README.md has no {start.strip()} ... {end} block")
    head, rest = readme.split(start, 1)
    return head + start + table + end + rest.split(end, 1)[1]


def stale() -> list[str]:
    """The files whose committed content differs from a fresh render."""
    out = [f"docs/results/tables/{n}.md" for n, t in render_all().items() if _read(TABLES / f"{n}.md") != t]
    readme = (ROOT / "README.md").read_text()
    if readme_with(readme, demo()) != readme:
        out.append("README.md (results:demo block)")
    return out


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when a table is stale")
    args = p.parse_args(argv)
    if args.check:
        bad = stale()
        for name in bad:
            print(f"stale: {name} (run python tools/results_tables.py)", file=sys.stderr)
        return 1 if bad else 0
    TABLES.mkdir(parents=True, exist_ok=True)
    for name, table in render_all().items():
        (TABLES / f"{name}.md").write_text(table)
    readme = ROOT / "README.md"
    readme.write_text(readme_with(readme.read_text(), demo()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
