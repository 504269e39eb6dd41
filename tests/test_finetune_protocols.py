"""Fine-tuning protocols against transcriptions of their reference code: SimCLR's LARS and schedule
(google-research/simclr tf2/lars_optimizer.py, tf2/model.py), lightly's cosine schedule
(lightly/utils/scheduler.py) and MAE's layer-wise lr decay (facebookresearch/mae util/lr_decay.py)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from gsg_zoo.eval.finetune import (
    Classifier,
    build_optimizer,
    lightly_cosine,
    param_groups,
    resolve_config,
    schedule,
    set_lr,
)
from gsg_zoo.eval.lr_decay import param_groups_lrd

# ------------------------------------------------------------------------------ SimCLR, transcribed
EXCLUDE = ["batch_normalization", "bias", "head_supervised"]  # model.py build_optimizer


def _tf_lars_apply(param, grad, v, name, lr, momentum=0.9, weight_decay=0.0, eeta=0.001, classic=True):
    """tf2/lars_optimizer.py ``LARSOptimizer._resource_apply_dense`` (use_nesterov=False), transcribed;
    returns (next_param, next_v)."""
    use_wd = bool(weight_decay) and not any(re.search(r, name) for r in EXCLUDE)
    adapt = not any(re.search(r, name) for r in EXCLUDE)
    if use_wd:
        grad = grad + weight_decay * param
    if classic:
        trust_ratio = 1.0
        if adapt:
            w_norm, g_norm = torch.norm(param, p=2), torch.norm(grad, p=2)
            trust_ratio = torch.where(
                w_norm > 0,
                torch.where(g_norm > 0, eeta * w_norm / g_norm, torch.tensor(1.0)),
                torch.tensor(1.0),
            )
        scaled_lr = lr * trust_ratio
        next_v = momentum * v + scaled_lr * grad
        return param - next_v, next_v
    raise NotImplementedError


def _tf_names(model: Classifier) -> dict[str, str]:
    """Our parameter names -> the TF variable names the reference's regexes see."""
    return {
        "backbone.0.weight": "base_model/conv2d/kernel:0",
        "backbone.0.bias": "base_model/conv2d/bias:0",
        "backbone.1.weight": "base_model/batch_normalization/gamma:0",
        "backbone.1.bias": "base_model/batch_normalization/beta:0",
        "head.weight": "head_supervised/linear_layer/dense/kernel:0",
        "head.bias": "head_supervised/linear_layer/dense/bias:0",
    }


def _tiny_classifier() -> Classifier:
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    model = Classifier(backbone, 4, 3, zero_init=False)  # a nonzero head: its decay and momentum matter
    with torch.no_grad():
        model.backbone[1].weight.uniform_(0.5, 1.5)
        model.backbone[1].bias.uniform_(-0.1, 0.1)
    return model


def test_simclr_lars_is_the_reference_optimizer():
    """Three LARS steps with weight decay (the head's through the loss, as run.py/add_weight_decay do):
    every parameter equals the transcription's."""
    lr, wd = 0.3, 1e-3
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 6, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    ours = _tiny_classifier()
    opt = build_optimizer(ours, resolve_config("simclr", 1.0, weight_decay=wd))
    ref = _tiny_classifier()
    names = _tf_names(ref)
    slots = {n: torch.zeros_like(p) for n, p in ref.named_parameters()}
    for _ in range(3):
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        F.cross_entropy(ours(x), y).backward()
        opt.step()
        ref.zero_grad()
        l2 = [0.5 * (p**2).sum() for n, p in ref.named_parameters() if "head" in n and "bias" not in n]
        (F.cross_entropy(ref(x), y) + wd * sum(l2)).backward()  # model.add_weight_decay(lars): head only
        with torch.no_grad():
            for n, p in ref.named_parameters():
                new, slots[n] = _tf_lars_apply(p, p.grad, slots[n], names[n], lr, weight_decay=wd)
                p.copy_(new)
    for (n, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=n)


def _tf_warmup_cosine(step, base_lr, num_examples, warmup_epochs, batch, scaling, epochs):
    """tf2/model.py ``WarmUpAndCosineDecay.__call__`` + ``get_train_steps`` + Keras ``CosineDecay``."""
    warmup_steps = int(round(warmup_epochs * num_examples // batch))
    scaled = base_lr * batch / 256.0 if scaling == "linear" else base_lr * math.sqrt(batch)
    learning_rate = step / float(warmup_steps) * scaled if warmup_steps else scaled
    total_steps = num_examples * epochs // batch + 1
    decay_steps = total_steps - warmup_steps
    s = min(step - warmup_steps, decay_steps)
    cosine = scaled * (0.5 * (1 + math.cos(math.pi * s / decay_steps)))
    return learning_rate if step < warmup_steps else cosine


@pytest.mark.parametrize("warmup", [0.0, 2.0])
def test_simclr_schedule_is_warmup_and_cosine_decay(warmup):
    """README 1 % command (lr 0.005, sqrt scaling, batch 1024, 60 epochs): the lr at every step, and
    the step counts (get_train_steps; run.py's epoch_steps = round(N / B))."""
    n = 12_811
    cfg = resolve_config("simclr", 1.0, warmup_epochs=warmup)
    assert (cfg.base_lr, cfg.batch_size, cfg.epochs, cfg.lr_scaling) == (0.005, 1024, 60, "sqrt")
    total, per_epoch, warmup_steps = schedule(cfg, n)
    assert total == n * 60 // 1024 + 1 and per_epoch == round(n / 1024)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)
    for step in range(total):
        want = _tf_warmup_cosine(step, 0.005, n, warmup, 1024, "sqrt", 60)
        assert set_lr(opt, cfg, step, total, warmup_steps) == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert resolve_config("simclr", 10.0).epochs == 30


# ------------------------------------------------------------------------------ lightly, transcribed
def _lightly_cosine_schedule(step, max_steps, start_value, end_value):
    """lightly/utils/scheduler.py ``cosine_schedule`` (period=None)."""
    if max_steps <= 1:  # noqa: SIM114 (verbatim)
        decay = end_value
    elif step >= max_steps - 1:
        decay = end_value
    else:
        decay = end_value - (end_value - start_value) * (np.cos(np.pi * step / (max_steps - 1)) + 1) / 2
    return float(decay)


def _lightly_cosine_warmup(step, max_steps, start_value, end_value, warmup_steps, warmup_start_value=0.0):
    """lightly/utils/scheduler.py ``cosine_warmup_schedule`` (warmup_end_value=start_value, period=None)."""
    if step < warmup_steps:
        return warmup_start_value + (start_value - warmup_start_value) * (step + 1) / warmup_steps
    return _lightly_cosine_schedule(step - warmup_steps, max_steps - warmup_steps, start_value, end_value)


@pytest.mark.parametrize("max_steps, warmup", [(1, 0), (7, 0), (120, 0), (120, 10)])
def test_default_schedule_is_lightlys_cosine_warmup_scheduler(max_steps, warmup):
    """CosineWarmupScheduler(start 1.0, end 0.001) as FinetuneClassifier builds it (warmup 0): the
    factor at every step; the lr is SGD's 0.05 x batch / 256 times it."""
    for step in range(max_steps):
        want = _lightly_cosine_warmup(step, max_steps, 1.0, 0.001, warmup)
        assert lightly_cosine(step, max_steps, warmup) == pytest.approx(want, rel=1e-12)
    cfg = resolve_config("default", 100.0)
    assert (cfg.optimizer, cfg.base_lr, cfg.batch_size, cfg.epochs, cfg.weight_decay) == (
        "sgd",
        0.05,
        256,
        30,
        0,
    )
    assert cfg.peak_lr == 0.05 * 256 / 256 and schedule(cfg, 1000) == (30 * (1000 // 256), 1000 // 256, 0)


# --------------------------------------------------------------------------------- MAE, transcribed
def _mae_param_groups_lrd(model, weight_decay=0.05, no_weight_decay_list=(), layer_decay=0.75):
    """util/lr_decay.py ``param_groups_lrd`` + ``get_layer_id_for_vit``, transcribed."""

    def get_layer_id_for_vit(name, num_layers):
        if name in ["cls_token", "pos_embed"]:  # noqa: SIM114 (verbatim)
            return 0
        elif name.startswith("patch_embed"):
            return 0
        elif name.startswith("blocks"):
            return int(name.split(".")[1]) + 1
        else:
            return num_layers

    param_groups = {}
    num_layers = len(model.blocks) + 1
    layer_scales = list(layer_decay ** (num_layers - i) for i in range(num_layers + 1))
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or n in no_weight_decay_list:
            g_decay, this_decay = "no_decay", 0.0
        else:
            g_decay, this_decay = "decay", weight_decay
        layer_id = get_layer_id_for_vit(n, num_layers)
        group_name = "layer_%d_%s" % (layer_id, g_decay)  # noqa: UP031 (verbatim)
        if group_name not in param_groups:
            param_groups[group_name] = {
                "lr_scale": layer_scales[layer_id],
                "weight_decay": this_decay,
                "params": [],
            }
        param_groups[group_name]["params"].append((n, p))
    return list(param_groups.values())


def _vit(num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, num_classes=num_classes
    )


def test_layer_decay_is_maes_param_groups_lrd():
    vit = _vit(10)
    nwd = vit.no_weight_decay()
    want = _mae_param_groups_lrd(vit, 0.05, nwd, 0.65)
    ours = param_groups_lrd(vit, 0.05, nwd, 0.65)
    assert [(g["lr_scale"], g["weight_decay"]) for g in ours] == [
        (g["lr_scale"], g["weight_decay"]) for g in want
    ]
    assert [g["names"] for g in ours] == [[n for n, _ in g["params"]] for g in want]
    # the fine-tune wraps a headless ViT and a new head: each parameter gets MAE's scale of its name
    model = Classifier(_vit(0), vit.num_features, 10, zero_init=False)
    cfg = resolve_config("default", 100.0, vit=True)
    assert cfg.layer_decay == 0.75
    scale = {n: g["lr_scale"] for g in _mae_param_groups_lrd(vit, 0.0, nwd, 0.75) for n, _ in g["params"]}
    got = {g["names"][0].removeprefix("backbone."): g["lr_scale"] for g in param_groups(model, cfg)}
    assert got == scale


def test_layer_decay_is_refused_for_other_backbones():
    with pytest.raises(ValueError, match="applies to ViTs"):
        resolve_config("default", 100.0, vit=False, layer_decay=0.75)


def test_overrides_are_named_and_unknown_protocols_refused():
    cfg = resolve_config("simclr", 1.0, epochs=3, batch_size=1024, base_lr=None)
    assert cfg.overrides == ("epochs",) and cfg.epochs == 3
    with pytest.raises(ValueError, match="unknown fine-tuning protocol"):
        resolve_config("mae", 1.0)
