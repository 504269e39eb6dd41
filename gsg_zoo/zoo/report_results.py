"""A ``gsg eval`` report (kNN, linear, fine-tune) as the card's ``results.json`` entries: one source for
the demo and zoo builds."""

from __future__ import annotations

from typing import Any


def knn_top1_at(report: dict[str, Any], k: int, t: float) -> float:
    """Top-1 of a kNN report (``run_knn``'s result) at ``(k, T)``; KeyError naming what it holds."""
    for r in report["results"]:
        if r["k"] == k and r["T"] == t:
            return float(r["top1"])
    held = [(r["k"], r["T"]) for r in report["results"]]
    raise KeyError(f"no kNN result at k={k}, T={t}: the report holds {held}")


def card_results(
    report: dict[str, Any],
    subset: bool = False,
    baselines: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The card entries of one report, protocol named; ``subset``: measured on part of its images.

    ``baselines`` maps a display name to another backbone's report of the same evaluator and
    protocol; each entry then carries their values at the same setting.
    """
    baselines = baselines or {}
    common = {
        "dataset": report["dataset"],
        "split": "test",
        "protocol_name": report["protocol"],
        "full_protocol": not subset,
        "source": f"gsg eval {report['evaluator']}",
    }
    if report["evaluator"] == "knn":
        desc = report["protocol_settings"]["description"]
        return [
            {
                "task": "knn",
                "metric": "top1",
                "value": r["top1"],
                "k": r["k"],
                "t": r["T"],
                "protocol": desc,
                **common,
                **_baselines({n: knn_top1_at(b, r["k"], r["T"]) for n, b in baselines.items()}),
            }
            for r in report["results"]
        ]
    if report["evaluator"] == "finetune":
        return [
            {
                **finetune_entry(report, common),
                **_baselines({n: float(b["top1"]) for n, b in baselines.items()}),
            }
        ]
    entry = {
        "task": "linear",
        "metric": "top1",
        "value": report["top1"],
        "protocol": f"linear {report['protocol']}",
        **common,
    }
    return [{**entry, **_baselines({n: float(b["top1"]) for n, b in baselines.items()})}]


def finetune_entry(report: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    """A ``gsg eval finetune`` report's entry: its protocol and label fraction (and how it was drawn)."""
    frac, sub = report["fraction"], report["label_subset"]
    how = sub["method"] + (f", seed {sub['seed']}" if sub.get("seed") is not None else "")
    return {
        "task": "finetune",
        "metric": f"top1 ({frac:g}% labels)",
        "value": report["top1"],
        "fraction": frac,
        "protocol": f"finetune {report['protocol']}, {frac:g} % of the labels ({how})",
        **common,
    }


def _baselines(values: dict[str, float]) -> dict[str, Any]:
    return {"baselines": values} if values else {}
