"""Reference settings of the linear probe (apex LARC), the GSG kNN protocol and fp32 by default."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from eval_fakes import write_imagefolder

from gsg_zoo.app.cli import main
from gsg_zoo.data.augment import square_resize_transform
from gsg_zoo.eval.features import ExtractOptions
from gsg_zoo.eval.linear import LinearConfig, make_optimizer

MODEL = ["--model", "random:mobilenetv3_small_050", "--workers", "0", "--quiet"]


def _apex_larc_step(
    optim: torch.optim.Optimizer, trust_coefficient: float, clip: bool, eps: float = 1e-8
) -> None:
    """apex/parallel/LARC.py ``LARC.step`` (github.com/NVIDIA/apex), transcribed."""
    with torch.no_grad():
        weight_decays = []
        for group in optim.param_groups:
            weight_decay = group["weight_decay"] if "weight_decay" in group else 0  # noqa: SIM401 (verbatim)
            weight_decays.append(weight_decay)
            group["weight_decay"] = 0
            for p in group["params"]:
                if p.grad is None:
                    continue
                param_norm = torch.norm(p.data)
                grad_norm = torch.norm(p.grad.data)
                if param_norm != 0 and grad_norm != 0:
                    adaptive_lr = (
                        trust_coefficient * (param_norm) / (grad_norm + param_norm * weight_decay + eps)
                    )
                    if clip:
                        adaptive_lr = min(adaptive_lr / group["lr"], 1)
                    p.grad.data += weight_decay * p.data
                    p.grad.data *= adaptive_lr
    optim.step()
    for i, group in enumerate(optim.param_groups):
        group["weight_decay"] = weight_decays[i]


def _tiny(seed: int = 0) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    fc = torch.nn.Linear(6, 3)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(3, 6, generator=gen) * 0.01)
        fc.bias.copy_(torch.randn(3, generator=gen) * 0.1)  # nonzero: LARC adapts the bias too
    return fc, torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)


def _steps(fc, x, y, opt, step, n: int = 2) -> None:
    for _ in range(n):
        opt.zero_grad()
        F.cross_entropy(fc(x), y).backward()
        step()


def test_lars_is_apex_larc_around_sgd_as_in_simsiam_lincls():
    """SimSiam main_lincls.py: LARC(SGD(lr, momentum, wd), trust_coefficient=.001, clip=False); two steps
    (momentum) with weight decay, on weight and a nonzero bias."""
    cfg = LinearConfig(batch_size=256, lr=0.1, weight_decay=1e-4, optimizer="lars")
    ours_fc, x, y = _tiny()
    ours = make_optimizer(ours_fc, cfg)
    _steps(ours_fc, x, y, ours, ours.step)
    ref_fc, _, _ = _tiny()
    sgd = torch.optim.SGD(ref_fc.parameters(), cfg.effective_lr(), momentum=cfg.momentum, weight_decay=1e-4)
    _steps(ref_fc, x, y, sgd, lambda: _apex_larc_step(sgd, 0.001, clip=False))
    for a, b in zip(ours_fc.parameters(), ref_fc.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert ours.param_groups[0]["weight_decay"] == 1e-4  # restored after the step


def test_gsg_knn_transform_is_main_knn():
    """GSG main_knn.py: Resize([256, 256]), CenterCrop([224, 224]), ImageNet normalisation."""
    text = repr(square_resize_transform())
    assert "Resize(size=[256, 256], interpolation=bilinear" in text and "CenterCrop(size=(224, 224))" in text
    assert "mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)" in text


def _knn_predict_top1(train_x, train_y, test_x, test_y, classes, knn_k=200, knn_t=0.2) -> float:
    """GSG main_knn.py ``validate`` + ``knn_predict``, transcribed (one process)."""
    feature_bank = F.normalize(train_x, dim=1).t().contiguous()
    feature = F.normalize(test_x, dim=1)
    sim_matrix = torch.mm(feature, feature_bank)
    sim_weight, sim_indices = sim_matrix.topk(k=knn_k, dim=-1)
    sim_labels = torch.gather(train_y.expand(feature.size(0), -1), dim=-1, index=sim_indices)
    sim_weight = (sim_weight / knn_t).exp()
    one_hot_label = torch.zeros(feature.size(0) * knn_k, classes)
    one_hot_label = one_hot_label.scatter(dim=-1, index=sim_labels.view(-1, 1), value=1.0)
    pred_scores = torch.sum(
        one_hot_label.view(feature.size(0), -1, classes) * sim_weight.unsqueeze(dim=-1), dim=1
    )
    pred_labels = pred_scores.argsort(dim=-1, descending=True)
    return (pred_labels[:, 0] == test_y).float().sum().item() / len(test_y) * 100


def test_knn_protocol_gsg_end_to_end(tmp_path):
    """``gsg eval knn --protocol gsg``: k=200, T=0.2, the square-resize transform (scaled from
    --image-size 32: 37 -> 32), fp32; top-1 equals main_knn.py's on the cached features; JSON names it."""
    root = tmp_path / "if"
    write_imagefolder(root, n_train=60, n_test=8, k=4)  # 240 training images: k = 200 neighbours
    out, cache = tmp_path / "out", tmp_path / "cache"
    torch.manual_seed(0)
    args = [
        "eval",
        "knn",
        *MODEL,
        "--image-size",
        "32",
        "--dataset",
        "imagefolder",
        "--data",
        str(root),
        "--protocol",
        "gsg",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
    ]
    assert main(args) == 0
    res = json.loads((out / "knn_gsg_imagefolder.json").read_text())
    settings = res["protocol_settings"]
    assert (
        res["protocol"] == "gsg" and settings["ks_and_ts"] == [[200, 0.2]] and settings["precision"] == "fp32"
    )
    assert (
        "Resize(size=[37, 37]" in settings["transform"]
        and "CenterCrop(size=(32, 32))" in settings["transform"]
    )
    from safetensors.torch import load_file

    files = {p.name.split("-")[1]: load_file(str(p)) for p in cache.glob("*.safetensors")}
    train, test = files["train"], files["test"]
    want = _knn_predict_top1(train["features"], train["labels"], test["features"], test["labels"], 4)
    assert abs(res["results"][0]["top1"] - want) < 1e-4
    assert "protocol `gsg`" in (out / "knn_gsg_imagefolder.md").read_text()


def test_reference_protocols_run_in_fp32_unless_amp_is_asked():
    from gsg_zoo.app.cli import build_parser

    assert ExtractOptions().amp is False
    parser = build_parser()
    base = ["eval", "knn", "--model", "x", "--dataset", "cifar10"]
    assert parser.parse_args(base).amp is False
    assert parser.parse_args([*base, "--amp"]).amp is True
    assert parser.parse_args([*base, "--no-amp"]).amp is False
