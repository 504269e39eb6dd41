"""One set of weights, one number: a training checkpoint and its export load with the same
preprocessing and give the same features and kNN, whatever spec names them."""

from __future__ import annotations

import pytest
import torch
from test_export import make_run

from gsg_zoo.eval.features import ExtractOptions
from gsg_zoo.eval.runner import EvalContext, run_knn
from gsg_zoo.zoo.export import export_checkpoint
from gsg_zoo.zoo.load import load_backbone

CFG_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")


@pytest.fixture(scope="module", params=["resnet18_cifar", "resnet18"])
def run_and_export(request, tmp_path_factory):
    """A 48-px run: neither the CIFAR default (32) nor timm's (224), so a default cannot hide a mismatch."""
    run = tmp_path_factory.mktemp(request.param)
    ckpt, _ = make_run(run, method="simsiam", backbone=request.param, image_size=48, dataset="synthetic")
    return ckpt, export_checkpoint(ckpt, run / "export", "w", verify=False)


def _cfg(spec: str) -> dict:
    _, cfg = load_backbone(spec)
    return {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in cfg.items() if k in CFG_KEYS}


def test_checkpoint_and_export_share_preprocessing(run_and_export):
    ckpt, export = run_and_export
    specs = [str(ckpt), str(export), f"local-dir:{export}"]
    configs = [_cfg(s) for s in specs]
    assert configs[0]["input_size"] == (3, 48, 48)
    assert configs[0] == configs[1] == configs[2]


def test_checkpoint_and_export_score_the_same_knn(run_and_export):
    ckpt, export = run_and_export
    opts = ExtractOptions(num_workers=0, progress=False, device="cpu")
    results = []
    for spec in (str(ckpt), f"local-dir:{export}"):
        ctx = EvalContext.load(spec, use_cache=False, options=opts, subset=120)
        results.append(run_knn(ctx, "synthetic", [(20, 0.07), (200, 0.1)]))
        with torch.no_grad():
            x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
            results[-1]["features"] = ctx.model(x)
    a, b = results
    assert (a["features"] - b["features"]).abs().max() <= 1e-5
    assert a["results"] == b["results"], (a["results"], b["results"])
