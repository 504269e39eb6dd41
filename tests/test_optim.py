"""gsg_zoo.train.optim against transcriptions of the reference code it follows.

References (read with the repository search tools; quoted in the transcriptions below):

- LARS: MoCo v3, ``moco/optimizer.py`` (github.com/facebookresearch/moco-v3), the class the
  docstring of :class:`gsg_zoo.train.optim.LARS` names: parameters with ``ndim <= 1`` get neither weight
  decay nor the trust ratio.
- lr x batch / 256, per-epoch cosine and the fixed predictor lr: the GSG authors' ``main_pretrain.py``
  (github.com/bych-lee/gsg, from SimSiam's ``main_simsiam.py``): ``init_lr = args.lr *
  args.batch_size / 256`` and ``adjust_learning_rate(optimizer, init_lr, epoch, args)`` with
  ``fix_lr`` param groups.
- Warmup: MoCo v3 ``main_moco.py`` ``adjust_learning_rate``, per step (``epoch + i /
  iters_per_epoch``, the current version) and per epoch (its first version, commit 02655ae).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_pretrain import TINY
from torch import nn

from gsg_zoo.config.recipes import OptimConfig, load_recipe
from gsg_zoo.train.optim import LARS, build_optimizer, effective_lr, lr_at, param_groups, set_lr
from gsg_zoo.train.trainer import Pretrainer


# ---------------------------------------------------------------- transcriptions of the references
class ReferenceLARS(torch.optim.Optimizer):
    """MoCo v3 ``moco/optimizer.py`` ``LARS``, transcribed (nesterov=False)."""

    def __init__(self, params, lr=0, weight_decay=0, momentum=0.9, trust_coefficient=0.001):
        defaults = dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                dp = p.grad
                if dp is None:
                    continue
                if p.ndim > 1:  # if not normalization gamma/beta or bias
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm = torch.norm(p)
                    update_norm = torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(
                        param_norm > 0.0,
                        torch.where(
                            update_norm > 0, (g["trust_coefficient"] * param_norm / update_norm), one
                        ),
                        one,
                    )
                    dp = dp.mul(q)
                param_state = self.state[p]
                if "mu" not in param_state:
                    param_state["mu"] = torch.zeros_like(p)
                mu = param_state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])


def reference_adjust_learning_rate(optimizer, init_lr: float, epoch: int, epochs: int) -> None:
    """GSG ``main_pretrain.py`` / SimSiam ``main_simsiam.py`` ``adjust_learning_rate``, transcribed."""
    cur_lr = init_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    for param_group in optimizer.param_groups:
        if "fix_lr" in param_group and param_group["fix_lr"]:
            param_group["lr"] = init_lr
        else:
            param_group["lr"] = cur_lr


def reference_warmup_cosine(lr: float, epoch: float, warmup_epochs: float, epochs: int) -> float:
    """MoCo v3 ``main_moco.py`` ``adjust_learning_rate`` (per step: ``epoch`` is fractional)."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))


def reference_warmup_cosine_per_epoch(init_lr: float, epoch: int, warmup_epochs: int, epochs: int) -> float:
    """MoCo v3 ``main_moco.py`` at commit 02655ae (per-epoch schedule)."""
    if epoch < warmup_epochs:
        return init_lr / (warmup_epochs + 1) * (epoch + 1)
    return init_lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))


# ---------------------------------------------------------------- a small model with every kind of parameter
class Tiny(nn.Module):
    """Conv (4-d weight, bias), BatchNorm (1-d), Linear (2-d weight, bias) and a frozen parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        self.frozen = nn.Parameter(torch.ones(2, 2), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def modules() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {"encoder": Tiny(), "predictor": nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))}


def fill_grads(params: list[nn.Parameter], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


# ---------------------------------------------------------------- LARS
def test_lars_matches_moco_v3_reference_over_steps():
    """Same params, grads and groups (with and without weight decay): identical trajectories."""
    ours_m, ref_m = Tiny(), Tiny()
    ref_m.load_state_dict(ours_m.state_dict())
    # non-zero BN and bias values so that an adapted 1-d parameter would differ from the reference
    with torch.no_grad():
        for m in (ours_m, ref_m):
            m.bn.weight.fill_(0.7), m.bn.bias.fill_(0.3)

    def groups(m: Tiny) -> list[dict]:
        return [
            {"params": [m.conv.weight, m.fc.weight, m.bn.weight]},
            {"params": [m.fc.bias], "weight_decay": 0.0},
        ]

    ours = LARS(groups(ours_m), lr=0.5, weight_decay=1e-2, momentum=0.9)
    ref = ReferenceLARS(groups(ref_m), lr=0.5, weight_decay=1e-2, momentum=0.9)
    trained = [
        n for n, p in ours_m.named_parameters() if n in ("conv.weight", "fc.weight", "bn.weight", "fc.bias")
    ]
    for step in range(4):
        for m in (ours_m, ref_m):
            fill_grads([dict(m.named_parameters())[n] for n in trained], seed=step)
        ours.step(), ref.step()
    for name, p in ours_m.named_parameters():
        torch.testing.assert_close(p, dict(ref_m.named_parameters())[name], rtol=1e-6, atol=1e-7, msg=name)


def test_lars_adapts_only_matrices_and_decays_only_them():
    """First step from zero momentum: ndim>1 moves by lr * trust * |p| / |g + wd p| * (g + wd p); a 1-d
    parameter moves by lr * g exactly (no weight decay, no trust ratio)."""
    w, b = nn.Parameter(torch.randn(5, 4)), nn.Parameter(torch.randn(5))
    w0, b0 = w.detach().clone(), b.detach().clone()
    fill_grads([w, b], seed=1)
    lr, wd, trust = 0.3, 0.1, 0.001
    LARS([w, b], lr=lr, weight_decay=wd, momentum=0.9, trust_coefficient=trust).step()
    update = w.grad + wd * w0
    expected_w = w0 - lr * trust * w0.norm() / update.norm() * update
    torch.testing.assert_close(w.detach(), expected_w)
    torch.testing.assert_close(b.detach(), b0 - lr * b.grad)


def test_build_optimizer_lars_uses_the_effective_lr_and_group_weight_decay():
    cfg = OptimConfig(optimizer="lars", lr=0.1, weight_decay=1e-6, wd_exclude_bn_bias=True, momentum=0.8)
    opt = build_optimizer(modules(), cfg, global_batch=1024)
    assert isinstance(opt, LARS)
    assert {g["lr"] for g in opt.param_groups} == {0.1 * 1024 / 256}
    assert {g["name"]: g["weight_decay"] for g in opt.param_groups} == {
        "encoder": 1e-6,
        "encoder_no_wd": 0.0,
        "predictor": 1e-6,
        "predictor_no_wd": 0.0,
    }
    assert all(g["momentum"] == 0.8 and g["trust_coefficient"] == 0.001 for g in opt.param_groups)


# ---------------------------------------------------------------- lr scaling and schedules
@pytest.mark.parametrize("lr,batch", [(0.05, 512), (0.03, 512), (0.05, 256), (0.1, 64)])
def test_effective_lr_is_lr_times_batch_over_256(lr, batch):
    """GSG main_pretrain.py: ``init_lr = args.lr * args.batch_size / 256`` (global batch)."""
    assert effective_lr(OptimConfig(lr=lr), batch) == pytest.approx(lr * batch / 256, rel=1e-12)
    assert effective_lr(OptimConfig(lr=lr, scale_lr=False), batch) == lr
    opt = build_optimizer(modules(), OptimConfig(lr=lr), batch)
    assert all(g["lr"] == pytest.approx(lr * batch / 256) for g in opt.param_groups)


@pytest.mark.parametrize("fix_predictor_lr", [True, False])
def test_per_epoch_cosine_and_fixed_predictor_lr_match_simsiam(fix_predictor_lr):
    """Every epoch, every group's lr equals what the reference's ``adjust_learning_rate`` sets on the
    reference groups (``encoder`` with fix_lr=False, ``predictor`` with fix_lr=fix_pred_lr)."""
    cfg, epochs, batch = OptimConfig(lr=0.05, fix_predictor_lr=fix_predictor_lr), 10, 512
    mods = modules()
    ours = build_optimizer(mods, cfg, batch)
    init_lr = 0.05 * batch / 256
    ref = torch.optim.SGD(
        [
            {"params": mods["encoder"].parameters(), "fix_lr": False},
            {"params": mods["predictor"].parameters(), "fix_lr": fix_predictor_lr},
        ],
        init_lr,
    )
    ref_lr = {"encoder": 0, "predictor": 1}
    base_lr = effective_lr(cfg, batch)
    for epoch in range(epochs):
        set_lr(ours, lr_at(cfg, base_lr, epoch, epochs), base_lr)
        reference_adjust_learning_rate(ref, init_lr, epoch, epochs)
        for g in ours.param_groups:
            assert g["lr"] == pytest.approx(ref.param_groups[ref_lr[g["name"]]]["lr"], rel=1e-12), (
                epoch,
                g["name"],
            )
    assert [g["fix_lr"] for g in ours.param_groups] == [False, fix_predictor_lr]


@pytest.mark.parametrize("warmup", [1.0, 2.5])
def test_per_step_warmup_then_cosine_matches_moco_v3(warmup):
    cfg, epochs, steps = OptimConfig(warmup_epochs=warmup, per_step=True), 8, 7
    for epoch in range(epochs):
        for i in range(steps):
            progress = epoch + i / steps
            expected = reference_warmup_cosine(0.4, progress, warmup, epochs)
            assert lr_at(cfg, 0.4, progress, epochs) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert lr_at(cfg, 0.4, warmup / 2, epochs) == pytest.approx(0.2)  # warmup is on: half way, half the lr


def test_per_epoch_warmup_matches_moco_v3_per_epoch_version():
    """Per epoch, the first epoch trains at lr / (warmup + 1), not 0."""
    cfg, epochs = OptimConfig(warmup_epochs=3, per_step=False), 10
    got = [lr_at(cfg, 0.4, e, epochs) for e in range(epochs)]
    assert got == pytest.approx([reference_warmup_cosine_per_epoch(0.4, e, 3, epochs) for e in range(epochs)])
    assert got[0] == pytest.approx(0.1)


def test_constant_schedule_and_unknown_names():
    assert lr_at(OptimConfig(schedule="constant"), 0.3, 5.5, 10) == 0.3
    with pytest.raises(ValueError, match="schedule"):
        lr_at(OptimConfig(schedule="step"), 0.3, 1, 10)
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(modules(), OptimConfig(optimizer="adam"), 256)


# ---------------------------------------------------------------- weight decay exclusion
def test_wd_exclusion_puts_exactly_bn_and_biases_in_no_wd_groups():
    mods = modules()
    groups = {
        g["name"]: g for g in param_groups(mods, OptimConfig(weight_decay=5e-4, wd_exclude_bn_bias=True))
    }
    enc, pred = mods["encoder"], mods["predictor"]
    expected = {
        "encoder": [enc.conv.weight, enc.fc.weight],
        "encoder_no_wd": [enc.conv.bias, enc.bn.weight, enc.bn.bias, enc.fc.bias],
        "predictor": [pred[0].weight],
        "predictor_no_wd": [pred[0].bias, pred[1].weight, pred[1].bias],
    }
    assert {k: [id(p) for p in g["params"]] for k, g in groups.items()} == {
        k: [id(p) for p in v] for k, v in expected.items()
    }  # the frozen parameter is in no group
    assert [g["weight_decay"] for g in groups.values()] == [5e-4, 0.0, 5e-4, 0.0]
    without = param_groups(mods, OptimConfig(weight_decay=5e-4))
    assert [(g["name"], len(g["params"]), g["weight_decay"]) for g in without] == [
        ("encoder", 6, 5e-4),
        ("predictor", 4, 5e-4),
    ]


def test_wd_exclusion_takes_effect_in_an_sgd_step():
    """Zero gradients: decayed parameters shrink by lr * wd, excluded ones do not move."""
    mods = modules()
    opt = build_optimizer(
        mods, OptimConfig(lr=0.1, scale_lr=False, weight_decay=0.5, wd_exclude_bn_bias=True), 256
    )
    params = [p for m in mods.values() for p in m.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    for p, p0 in zip(params, before):
        torch.testing.assert_close(p.detach(), p0 * (1 - 0.1 * 0.5) if p.ndim > 1 else p0)


# ---------------------------------------------------------------- a paper recipe's optimiser in the trainer
def test_trainer_applies_imagenet_simsiam_gsg_schedule_per_group(tmp_path):
    """The imagenet_simsiam_gsg recipe's optim section (lr 0.05 x batch/256, per-epoch cosine, fixed
    predictor lr) on a tiny model: the lr of each group at every optimiser step, and the logged lr."""
    epochs, steps, batch = 2, 2, 8
    recipe = load_recipe(
        "imagenet_simsiam_gsg",
        [
            *TINY,
            "data.dataset=synthetic",
            "data.root=null",
            f"train.batch_size={batch}",
            f"train.epochs={epochs}",
            f"train.max_steps_per_epoch={steps}",
            "monitor.every=-1",
            "train.sync_bn=off",
        ],
    )
    assert recipe.optim == load_recipe("imagenet_simsiam_gsg").optim  # the recipe's own optimiser settings
    trainer = Pretrainer(recipe, tmp_path / "run", progress=False)
    applied: list[dict[str, float]] = []
    trainer.optimizer.register_step_pre_hook(
        lambda opt, *_: applied.append({g["name"]: g["lr"] for g in opt.param_groups})
    )
    trainer.run()
    init_lr = 0.05 * batch / 256
    per_epoch = [init_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)) for epoch in range(epochs)]
    expected = [{"encoder": lr, "predictor": init_lr} for lr in per_epoch for _ in range(steps)]
    assert applied == [pytest.approx(e, rel=1e-12) for e in expected]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx(per_epoch, rel=1e-12)
