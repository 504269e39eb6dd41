"""Render the documentation's results tables from ``benchmarks/results/*.json``: one source of numbers.

    python tools/results_tables.py            # write docs/results/tables/*.md and the README blocks
    python tools/results_tables.py --check    # exit 1 if a committed table differs from a fresh render

Each table is a pure function of its JSON file(s) (the README's paper table: of the recipes' ``paper:``
values); ``tests/test_docs.py`` checks that the committed tables, and the README's blocks between
``<!-- results:NAME -->`` markers, equal the rendering.
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
    for label, key in [
        ("ResNet-10-T, SimSiam+GSG, 600 steps", "pretrained"),
        ("ResNet-10-T, random init", "random_init"),
        ("raw pixels", "pixels"),
    ]:
        knn, lin = ms[f"knn_top1_{key}"], ms[f"linear_fast_top1_{key}"]
        if key == "pixels":  # deterministic: no seed spread
            rows.append([label, f"{knn['mean']:.1f}", f"{lin['mean']:.1f}"])
        else:
            rows.append([label, _pm(knn["mean"], knn["std"]), _pm(lin["mean"], lin["std"])])
    return _rows(
        ["backbone (same images, same protocol)", "kNN top-1 (k=200, T=0.1)", "fast linear top-1"], rows
    )


def demo_builtin() -> str:
    """The demo on the built-in data (``gsg demo --synthetic``), paired by seed."""
    d = _load("demo_seeds.json")["synthetic"]
    runs = d["runs"]
    return (
        f"On the built-in data (`{d['command']}`, seeds {', '.join(str(r['seed']) for r in runs)}; "
        f"{runs[0]['eval']['num_train']:,} / {runs[0]['eval']['num_test']:,} images), pretrained minus random "
        f"init: kNN {_seed_diff(runs, 'knn_top1', 'random_init')}; pretrained minus raw pixels: kNN "
        f"{_seed_diff(runs, 'knn_top1', 'pixels')}.\n"
    )


def learnability() -> str:
    """kNN after a fixed wall-clock budget: with labels vs the recipe's SSL method, per nuisance variant."""
    d = _load("learnability_demo_150s.json")
    rows = [
        [
            r["variant"],
            f"{r['pixels']:.1f}",
            f"{r['random_init']:.1f}",
            f"{r['supervised']:.1f} ({r['supervised_steps']})",
            f"{r['ssl']:.1f} ({r['ssl_steps']})",
        ]
        for r in d["rows"]
    ]
    header = ["variant", "raw pixels", "random init", "with labels (steps)", f"{d['method']} (steps)"]
    return f"kNN top-1 (%) after {d['seconds']:.0f} s of training per run, {d['backbone']}:\n\n" + _rows(
        header, rows
    )


def peer_parity() -> str:
    """gsg-zoo vs lightly 1.6.0: the same SimSiam/BYOL, kNN and images/s."""
    table = {(r["method"], r["library"]): r for r in _load("peer_parity.json")["table"]}
    rows = []
    for method in ("simsiam", "byol"):
        ours, peer = table[(method, "gsg_zoo")], table[(method, "lightly")]
        rows.append(
            [
                {"simsiam": "SimSiam", "byol": "BYOL"}[method],
                _pm(ours["knn_top1_mean"], ours["knn_top1_std"], 2),
                _pm(peer["knn_top1_mean"], peer["knn_top1_std"], 2),
                _pm(ours["images_per_s_mean"], ours["images_per_s_std"]),
                _pm(peer["images_per_s_mean"], peer["images_per_s_std"]),
            ]
        )
    header = ["method", "kNN gsg-zoo", "kNN lightly", "images/s gsg-zoo", "images/s lightly"]
    return _rows(header, rows)


def _claims(path: str) -> str:
    d = _load(path)
    rows = [
        [
            r["run"],
            str(r["epochs"]),
            f"{r['encoder_passes']:,}",
            _pm(r["knn_top1"], r["knn_top1_std"]),
            _pm(r["z_rank"], r["z_rank_std"]),
            _pm(r["h_rank"], r["h_rank_std"]),
            _pm(r["z_std"], r["z_std_std"], 2),
        ]
        for r in d["table"]
    ]
    header = ["run", "epochs", "encoder passes", "kNN top-1 (%)", "eff. rank z", "eff. rank h", "std(z̄)·√d"]
    runs = sum(r["n"] for r in d["table"]) if "n" in d["table"][0] else len(d["records"])
    train_min = (
        sum(r["train_time_s"] * r["n"] for r in d["table"])
        if "n" in d["table"][0]
        else sum(r["summary"]["train_time_s"] for r in d["records"])
    ) / 60
    wall = (
        f", {sum(r['summary']['wall_time_s_this_process'] for r in d['records']) / 60:.0f} min with evaluation"
        if "records" in d
        else ""
    )
    return _rows(header, rows) + f"\n{runs} runs: {train_min:.0f} min of training on 2 cores{wall}.\n"


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
        [
            "PIL MoCo-v2 views (`data.batch_augment=false`, the reference)",
            f"{ms['pil']:.2f}",
            f"{ms['pil'] / ms['decode']:.2f}",
        ],
        [
            "decode + 4 crop boxes + packing (`data.batch_augment=true`)",
            f"{ms['boxes']:.2f}",
            f"{ms['boxes'] / ms['decode']:.2f}",
        ],
    ]
    return _rows(["loader path", "CPU ms / image", "x decode"], rows)


def throughput() -> str:
    """End-to-end images/s, PIL views (A) vs batch augmentation (B), interleaved in one process."""
    rows = []
    for name, where in [
        ("throughput_mocov2_batch_augment_cpu.json", "2-core CPU, resnet10t, batch 16, fp32"),
        ("throughput_ab_h200.json", "1x H200, resnet50, batch 128, bf16"),
    ]:
        d = _load(name)
        a, b = d["images_per_s"]["A"], d["images_per_s"]["B"]
        rows.append(
            [
                where,
                str(len(a)),
                _pm(statistics.mean(a), _sd(a)),
                _pm(statistics.mean(b), _sd(b)),
                f"{d['ratio_b_over_a']:.2f}",
                f"`benchmarks/results/{name}`",
            ]
        )
    header = [
        "machine (ImageNet recipe, SimSiam+GSG, 224 px)",
        "runs",
        "PIL views images/s",
        "batch_augment images/s",
        "ratio",
        "file",
    ]
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
        rows.append(
            [
                str(d["epochs"]),
                f"{f['top1']:.1f} / {f['wall_seconds']:.1f} s",
                f"{r['top1']:.1f} / {r['wall_seconds']:.1f} s",
                f"{d['speedup']:.1f}x",
            ]
        )
    header = ["epochs", "fast: top-1 / wall", "re-encoding: top-1 / wall", "speed-up"]
    return _rows(header, rows) + (
        f"\nAt equal accuracy the cached probe is {probe_equal_accuracy_speedup():.1f}x faster: its 10-epoch "
        "result is above what the re-encoding probe reaches in 30 epochs.\n"
    )


def probe_equal_accuracy_speedup() -> float:
    """Wall time of the 30-epoch re-encoding probe over the 10-epoch fast probe (the fast one is more
    accurate): the results page's "at equal accuracy" ratio."""
    ten, thirty = (
        _load("probe_cpu_pretrained_resnet10t.json"),
        _load("probe_cpu_pretrained_resnet10t_30ep.json"),
    )
    return thirty["reference"]["wall_seconds"] / ten["fast"]["wall_seconds"]


def shards() -> str:
    """The same JPEGs as an ImageFolder, as WebDataset shards read by index and streamed; coverage over
    2 ranks x 2 workers; the shuffle buffer against a global permutation."""
    d = _load("shards_cpu.json")
    rows = [
        [
            side,
            f"{m['images_per_s']:.0f}",
            f"{d['ratio_images_per_s'][side]:.2f}",
            f"{m['start_s']:.2f}",
            f"{m['worker_rss_mb']:.0f} / {m['worker_pss_mb']:.0f}",
        ]
        for side, m in d["mean"].items()
    ]
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
    header = [
        "order (rank 0 of " + str(setup["world"]) + ")",
        "shards per batch",
        "adjacent pairs from one shard",
        "batch pairs together again next epoch",
    ]
    rows = [
        [
            name.replace("_", " "),
            f"{m['shards_per_batch']:.1f}",
            f"{m['adjacent_same_shard']:.2%}",
            f"{m['batch_pairs_repeated_next_epoch']:.3%}",
        ]
        for name, m in q.items()
    ]
    text += _rows(header, rows) + (
        f"\nPlan only: {setup['samples']} samples in shards of {setup['shard']}, {setup['workers']} workers per rank, "
        f"batch {setup['batch']}.\n"
    )
    return text + _shards_pretrain(d)


def _shards_pretrain(d: dict) -> str:
    """``gsg pretrain`` images/s from each input, and start-up and worker memory against dataset size."""
    if not d.get("pretrain_images_per_s"):
        return ""
    ips, startup = d["pretrain_images_per_s"], d["startup_s_by_size"]
    sizes = list(next(iter(startup.values())))
    header = [
        "input",
        "gsg pretrain images/s",
        "vs folder",
        *(f"start-up, {int(n):,} images (s)" for n in sizes),
        *(f"worker PSS, {int(n):,} images (MB)" for n in sizes),
    ]
    rows = [
        [
            side,
            f"{ips[side]:.1f}",
            f"{ips[side] / ips['folder']:.2f}",
            *(f"{startup[side][n]['start_s']:.2f}" for n in sizes),
            *(f"{startup[side][n]['worker_pss_mb']:.0f}" for n in sizes),
        ]
        for side in ips
    ]
    return (
        "\n"
        + _rows(header, rows)
        + (
            "\n`gsg pretrain imagenet_simsiam_gsg` with "
            + ", ".join(f"`{o}`" for o in d["pretrain_setup"])
            + "; start-up = dataset built + first batch, and the loader workers' mean PSS after it, on "
            "datasets of small (64x48) JPEGs in 100 classes (the stream with a 256-sample buffer).\n"
        )
    )


def _seed_diff(runs: list[dict], metric: str, other: str) -> str:
    d = [r[f"{metric}_pretrained"] - r[f"{metric}_{other}"] for r in runs]
    return f"{statistics.mean(d):+.1f} ± {_sd(d):.1f}"


def demo_paired() -> str:
    """Paired-by-seed differences of the demo and its pretraining time."""
    runs = _load("demo_seeds.json")["fashion_mnist_600_steps"]["runs"]

    def diff(metric: str, other: str) -> str:
        return _seed_diff(runs, metric, other)

    secs = [r["timings_s"]["pretrain_s"] for r in runs]
    total = [r["timings_s"]["total_s"] for r in runs]
    return (
        f"Pretrained minus random init, paired by seed: kNN {diff('knn_top1', 'random_init')}, linear "
        f"{diff('linear_fast_top1', 'random_init')}. Pretrained minus raw pixels: kNN "
        f"{diff('knn_top1', 'pixels')}, linear {diff('linear_fast_top1', 'pixels')}. Pretraining took "
        f"{min(secs):.0f}-{max(secs):.0f} s and the whole demo {min(total):.0f}-{max(total):.0f} s per seed on 2 cores "
        "(measured before the demo drew its t-SNE plot, which adds its `timings_s.embed_s`).\n"
    )


def step() -> str:
    """Training-step cost of GSG over its baseline, and the guided logic's share of a GSG step."""
    d = _load("step_cpu_default.json")
    flops = {r["variant"]: r["gflop_per_step"] for r in d["results"]}
    rows = [
        [
            f"`{r['variant']}` / `{r['vs']}`",
            r["kind"],
            f"{r['time_ratio']:.2f}",
            f"{flops[r['variant']] / flops[r['vs']]:.2f}",
            f"{r['memory_ratio']:.2f}",
        ]
        for r in d["ratios"]
    ]
    fracs = [r["guided_frac"] for r in d["results"] if "guided_frac" in r]
    header = ["variant / compared with", "kind", "step time ratio", "FLOP ratio", "peak memory ratio"]
    return _rows(header, rows) + (
        f"\nPairing, selection and the GSG loss (forward and backward) take {100 * min(fracs):.2f}-"
        f"{100 * max(fracs):.2f} % of a GSG step.\n"
    )


def batch_augment() -> str:
    """Views/s of the device-side batch augmentation vs the PIL pipeline (CIFAR views)."""
    d = _load("batch_augment_cpu.json")
    return (
        f"{d['batch_views_per_s']:,.0f} views/s with `data.batch_augment=true` on the CPU ({d['threads']} "
        f"threads) vs {d['pil_views_per_s']:,.0f} for the PIL pipeline in one process "
        f"({d['speedup']:.1f}x; {d['size']} px, {d['batch']} images x {d['views']} views).\n"
    )


def source_only() -> str:
    """BYOL+GSG with the reference backward vs ``model.source_only=true``: kNN and images/s."""
    rows = []
    for views, name in [
        ("PIL", "parity_byol_gsg_demo_b64.json"),
        ("batch_augment", "parity_byol_gsg_demo_b64_batch_augment.json"),
    ]:
        d = _load(name)
        ref, so = d["stats"]["reference"], d["stats"]["source_only"]
        rows.append(
            [
                views,
                _pm(ref["knn_top1_mean"], ref["knn_top1_std"], 2),
                _pm(so["knn_top1_mean"], so["knn_top1_std"], 2),
                _pm(ref["images_per_s_mean"], ref["images_per_s_std"]),
                _pm(so["images_per_s_mean"], so["images_per_s_std"]),
                f"{d['speedup']:.2f}x",
                f"`benchmarks/results/{name}`",
            ]
        )
    header = [
        "views",
        "kNN reference",
        "kNN source-only",
        "images/s reference",
        "images/s source-only",
        "speed-up (mean of per-seed ratios)",
        "file",
    ]
    return _rows(header, rows)


def loader_cores() -> str:
    """Loader cores one H200 needs = images/s x CPU ms per image / 1000, for both view paths."""
    ms = _load("imagenet_views_cpu.json")["loader_cpu_ms_per_image"]
    ips = _load("throughput_ab_h200.json")["images_per_s_mean"]
    pil, ba = ips["A"] * ms["pil"] / 1000, ips["B"] * ms["boxes"] / 1000
    return (
        f"PIL views: {ips['A']:,.0f} images/s x {ms['pil']:.2f} ms / 1000 = {pil:.1f} loader cores per GPU "
        f"({8 * pil:.0f} for an 8-GPU node); batch augmentation: {ips['B']:,.0f} images/s x {ms['boxes']:.2f} "
        f"ms / 1000 = {ba:.1f} cores per GPU.\n"
    )


def _paired(records: list[dict], a: str, b: str, key: str) -> list[float]:
    by = {(r["run"], r["seed"]): r["summary"][key] for r in records}
    return [by[(a, s)] - by[(b, s)] for (run, s) in by if run == a]


def _diff(values: list[float]) -> str:
    sign = " in every seed" if all(v > 0 for v in values) or all(v < 0 for v in values) else ""
    return f"{statistics.mean(values):+.1f} ± {_sd(values):.1f}{sign}"


def claims_verdicts() -> str:
    """One verdict per claim and dataset, with the numbers that decide it (paired by seed where the
    file keeps per-seed records)."""
    fm = _load("claims_fmnist_9ep/claims.json")
    rec, t = fm["records"], {r["run"]: r for r in fm["table"]}
    b = {r["run"]: r for r in _load("claims/claims_table.json")["table"]}
    c1_fm = (
        f"not reproduced: without predictor both collapse most of the projection rank "
        f"({t['simsiam_nopred']['z_rank']:.1f} and {t['simsiam_gsg_nopred']['z_rank']:.1f} of 512); "
        f"GSG keeps more rank ({_diff(_paired(rec, 'simsiam_gsg_nopred', 'simsiam_nopred', 'z_rank'))}) "
        f"but its kNN is lower ({_diff(_paired(rec, 'simsiam_gsg_nopred', 'simsiam_nopred', 'knn_top1'))})"
    )
    c1_b = (
        f"reproduced on the collapse indicators only: without predictor SimSiam collapses (std·√d "
        f"{b['simsiam_nopred']['z_std']:.2f}, rank {b['simsiam_nopred']['z_rank']:.0f}), SimSiam+GSG does "
        f"not ({b['simsiam_gsg_nopred']['z_std']:.2f}, rank {b['simsiam_gsg_nopred']['z_rank']:.0f}); kNN "
        f"{b['simsiam_nopred']['knn_top1']:.1f} vs {b['simsiam_gsg_nopred']['knn_top1']:.1f}, within noise"
    )
    c2_fm = (
        f"not reproduced: SimSiam+GSG minus SimSiam kNN "
        f"{_diff(_paired(rec, 'simsiam_gsg', 'simsiam', 'knn_top1'))} at equal epochs, "
        f"{_diff(_paired(rec, 'simsiam_gsg', 'simsiam_2x_epochs', 'knn_top1'))} at equal encoder passes"
    )
    c2_b = (
        f"not resolved: kNN {b['simsiam_gsg']['knn_top1']:.1f} (GSG) vs {b['simsiam']['knn_top1']:.1f} and "
        f"{b['simsiam_2x_epochs']['knn_top1']:.1f} (SimSiam, 1x and 2x epochs), within one std"
    )
    rows = [["1. GSG works without a predictor", c1_fm, c1_b], ["2. GSG improves SimSiam", c2_fm, c2_b]]
    return _rows(["claim", f"Fashion-MNIST, {fm['epochs']} epochs", "built-in data, 4 epochs"], rows)


def monitor() -> str:
    """The old kNN monitor against today's (first N vs stratified, 1 process vs 2 ranks), and the
    cost of the step telemetry."""
    d = _load("monitor_cpu.json")
    s, res = d["settings"], d["results"]
    rows = []
    for key, label in (
        ("old_1_process", "old: first N, rank 0 only"),
        ("new_1_process", "new: stratified, 1 process"),
        ("new_2_ranks", "new: stratified, 2 ranks (gloo)"),
    ):
        m = res[key]["metrics"]
        rows.append(
            [
                label,
                f"{res[key]['seconds']:.1f}",
                f"{m['knn_top1']:.1f}",
                str(m.get("bank_classes", s["classes"])),
            ]
        )
    t = res["telemetry"]
    return _rows(["monitor", "seconds per call", "kNN top-1 (%)", "classes in the bank"], rows) + (
        f"\n{s['bank']} bank / {s['queries']} query images of a class-ordered {s['classes']}-class JPEG ImageFolder "
        f"({s['size']} px files, {s['image_size']} px crops), {s['backbone']}, {s['workers']} loader workers, "
        f"{d['machine']}. Step telemetry: {1e3 * t['telemetry_s_per_step']:.3f} ms per step (log_every "
        f"{t['log_every']}) against a {t['step_s']:.1f} s training step ({100 * t['overhead_frac']:.3f} %).\n"
    )


def decode() -> str:
    """JPEG decoding in the loader workers vs on the training device (here the CPU main process)."""
    d = _load("decode_cpu.json")
    m = d["modes"]
    rows = [[mode, f"{r['worker_ms']:.2f}", f"{r['device_ms']:.2f}"] for mode, r in m.items()]
    header = [
        "data.decode",
        "worker ms per image (decode or header, 4 boxes)",
        "device ms per image (decode, 4 crops)",
    ]
    return _rows(header, rows) + (
        f"\n{d['images']} JPEGs ({d['size']}, quality 90), batches of {d['batch']}, one thread, {d['machine']}: "
        f"`{d['command']}`. Worker time, device/worker: {m['device']['worker_ms'] / m['worker']['worker_ms']:.2f}.\n"
    )


def _paired_knn(records: list[dict], pair: str, bases: tuple[str, ...], group: str | None) -> str:
    """kNN top-1 of each ``pair`` value minus each base's, paired by seed (within each ``group`` value);
    a base is not compared with the bases before it."""
    knn = {(r.get(group), r[pair], r["seed"]): r["summary"]["knn_top1"] for r in records}
    parts = []
    for g in dict.fromkeys(r.get(group) for r in records):
        for n, base in enumerate(bases):
            for v in dict.fromkeys(r[pair] for r in records):
                diffs = [
                    knn[(g, v, s)] - knn[(g, base, s)]
                    for (g2, v2, s) in knn
                    if (g2, v2) == (g, v) and (g, base, s) in knn
                ]
                if v not in bases[: n + 1] and diffs:
                    parts.append(f"{v} − {base}{f' ({group} {g})' if group else ''}: {_diff(diffs)}")
    return "kNN top-1 differences paired by seed (mean ± std): " + "; ".join(parts) + ".\n"


def _knobs(name: str, keys: tuple[str, ...], pair: str, bases: tuple[str, ...]) -> Callable[[], str]:
    def render() -> str:
        from gsg_zoo.app.experiments import grid_markdown

        d = _load(f"knobs/{name}.json")
        group = next((k for k in keys if k != pair), None)
        return grid_markdown(d, keys) + "\n" + _paired_knn(d["records"], pair, bases, group)

    render.__doc__ = f"The research-knob experiment ``{name}`` (benchmarks/results/knobs/{name}.json)."
    return render


def finetune_fmnist() -> str:
    """Fine-tuning at 1 / 10 / 100 % of Fashion-MNIST's labels, demo backbone vs random init, and the
    pretraining run's online linear probe (benchmarks/results/finetune_fmnist.json)."""
    d = _load("finetune_fmnist.json")
    runs, rows = d["runs"], []
    for frac in sorted({r["fraction"] for r in runs}):
        at = {
            b: {r["seed"]: r for r in runs if r["backbone"] == b and r["fraction"] == frac}
            for b in ("pretrained", "random")
        }
        pre, rnd = at["pretrained"], at["random"]
        diff = [pre[s]["top1"] - rnd[s]["top1"] for s in pre if s in rnd]
        first = next(iter(pre.values()))
        rows.append(
            [
                f"{frac} %",
                f"{first['num_train']:,}",
                str(first["steps"]),
                _pm(statistics.mean(r["top1"] for r in pre.values()), _sd([r["top1"] for r in pre.values()])),
                _pm(statistics.mean(r["top1"] for r in rnd.values()), _sd([r["top1"] for r in rnd.values()])),
                _pm(statistics.mean(diff), _sd(diff)) if diff else "-",
                str(len(diff)),
            ]
        )
    header = [
        "labels",
        "training images",
        "steps",
        "demo backbone top-1",
        "random init top-1",
        "difference (paired)",
        "seeds",
    ]
    pt = d["pretraining"]
    curve = [
        [
            str(r["epoch"]),
            str(r["step"]),
            f"{r['knn_top1']:.1f}",
            f"{r['online_linear_top1']:.1f}",
            f"{r['online_linear_train_top1']:.1f}",
        ]
        for r in pt["curve"]
        if r.get("online_linear_top1") is not None
    ]
    head = [
        "epoch",
        "step",
        "kNN top-1",
        "online linear top-1 (monitor's test images)",
        "online linear top-1 (training batches)",
    ]
    return (
        _rows(header, rows)
        + f"\nProtocol `{d['protocol']}` with {' '.join(d['settings']['common'])} and per fraction "
        + ", ".join(f"{f} %: {' '.join(v)}" for f, v in d["settings"].items() if f != "common")
        + f"; {runs[0]['num_test']:,} test images. The pretraining run (`{pt['command']}`), kNN monitor: "
        + f"{pt['monitor_protocol']}; {pt['online_probe']}:\n\n"
        + _rows(head, curve)
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
    "demo_paired": demo_paired,
    "demo_builtin": demo_builtin,
    "learnability": learnability,
    "step": step,
    "batch_augment": batch_augment,
    "source_only": source_only,
    "loader_cores": loader_cores,
    "claims_verdicts": claims_verdicts,
    "monitor": monitor,
    "decode": decode,
    "finetune_fmnist": finetune_fmnist,
}
#: experiment -> (table keys, the key whose values are compared, the values compared against)
KNOB_TABLES = {
    "selection": (("selection",), "selection", ("min",)),
    "batch_size": (("method", "batch"), "method", ("simsiam",)),
    "multicrop": (("arm",), "arm", ("gsg", "gsg_steps_matched")),
    "vit": (("arm",), "arm", ("simsiam",)),
}
RENDERERS.update({f"knobs_{n}": _knobs(n, *spec) for n, spec in KNOB_TABLES.items()})


def render_all() -> dict[str, str]:
    return {name: f() for name, f in RENDERERS.items()}


def readme_with(readme: str, table: str, name: str) -> str:
    """``readme`` with the block between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` replaced."""
    start, end = f"<!-- results:{name} -->\n", f"<!-- /results:{name} -->"
    if start not in readme or end not in readme:
        raise ValueError(f"README.md has no {start.strip()} ... {end} block")
    head, rest = readme.split(start, 1)
    return head + start + table + end + rest.split(end, 1)[1]


PAPER_PAIRS = [
    ("cifar10_simsiam", "cifar10_simsiam_gsg"),
    ("cifar10_byol", "cifar10_byol_gsg"),
    ("imagenet_simsiam", "imagenet_simsiam_gsg"),
    ("imagenet_byol", "imagenet_byol_gsg"),
]


def paper() -> str:
    """The paper's numbers as the recipe files state them (``paper:``), baseline / GSG, beside ours."""
    sys.path.insert(0, str(ROOT))
    from gsg_zoo.config.recipes import load_recipe

    rows = []
    for base, gsg in PAPER_PAIRS:
        a, b = load_recipe(base).paper, load_recipe(gsg).paper
        metric = next(m for m in ("linear_top1", "knn_top1") if m in a)
        label = {"linear_top1": "linear", "knn_top1": "kNN"}[metric]
        links = f"[`{base}`](configs/pretrain/{base}.yaml) / [`{gsg}`](configs/pretrain/{gsg}.yaml)"
        rows.append([links, f"{label} {a[metric]['value']} / {b[metric]['value']}", "not run yet"])
    return _rows(["recipe (baseline / GSG)", "paper, top-1 (%)", "gsg-zoo"], rows)


def readme_demo() -> str:
    """The README's demo block: the 3-row table and the paired differences."""
    return demo() + "\n" + demo_paired()


README_BLOCKS = {"demo": readme_demo, "paper": paper}


def stale() -> list[str]:
    """The files whose committed content differs from a fresh render."""
    out = [f"docs/results/tables/{n}.md" for n, t in render_all().items() if _read(TABLES / f"{n}.md") != t]
    readme = (ROOT / "README.md").read_text()
    out += [
        f"README.md (results:{n} block)"
        for n, f in README_BLOCKS.items()
        if readme_with(readme, f(), n) != readme
    ]
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
    text = readme.read_text()
    for name, render in README_BLOCKS.items():
        text = readme_with(text, render(), name)
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
