"""``gsg import``: every foreign layout, built the way its code base builds and saves it, gives a timm
model whose pooled features equal the original backbone's; unsafe, partial and unknown files are refused.

Each builder follows the cited file of the original project (see :data:`gsg_zoo.zoo.importers.FORMATS`).
Budget: ~40 s on 2 CPU cores (one export with its fresh-process reload check; the rest in process).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from gsg_zoo.app.cli import main
from gsg_zoo.core.checksums import sha256_file
from gsg_zoo.zoo.importers import (
    ForeignCheckpointError,
    UnsafeCheckpointError,
    read_checkpoint,
    timm_backbone,
)
from gsg_zoo.zoo.load import load_backbone

ATOL = 1e-5


def _scramble(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights and BN statistics no initialiser gives (zero_init_residual would hide whole blocks)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * (0.05 if t.dim() > 1 else 0.5))
    return model.eval()


def _pooled(backbone: nn.Module) -> nn.Module:
    """A torchvision ResNet's pooled features (its fc replaced by Identity, on a copy)."""
    ref = copy.deepcopy(backbone)
    ref.fc = nn.Identity()
    return ref.eval()


def _mlp(*dims: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


# ------------------------------------------------------------------------------------- the builders
def _simsiam_encoder(arch: str, dim: int) -> nn.Module:
    """bych-lee/gsg gsg/builder.py (= facebookresearch/simsiam simsiam/builder.py): fc -> 3-layer projector."""
    enc = torchvision.models.__dict__[arch](num_classes=dim, zero_init_residual=True)
    prev = enc.fc.weight.shape[1]
    enc.fc = nn.Sequential(
        nn.Linear(prev, prev, bias=False),
        nn.BatchNorm1d(prev),
        nn.ReLU(inplace=True),
        nn.Linear(prev, prev, bias=False),
        nn.BatchNorm1d(prev),
        nn.ReLU(inplace=True),
        enc.fc,
        nn.BatchNorm1d(dim, affine=False),
    )
    return _scramble(enc)


def _ddp(model: nn.Module) -> dict:
    return {f"module.{k}": v for k, v in model.state_dict().items()}


def gsg_simsiam_gsg(arch: str = "resnet18"):
    """SimSiamGSG as main_pretrain.py saves it: ARCH(num_classes=2048), predictor 2048-512-2048, DDP keys,
    SGD state (resnet50 in the slow variant)."""
    model = nn.Module()
    model.encoder = _simsiam_encoder(arch, 2048)
    model.predictor = _mlp(2048, 512, 2048)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # momentum buffers: tensors of the optimizer state
    ckpt = {"epoch": 100, "arch": arch, "state_dict": _ddp(model), "optimizer": opt.state_dict()}
    return ckpt, _pooled(model.encoder.eval()), "gsg", arch


def gsg_byol_target():
    """BYOL / BYOLGSG of gsg/builder.py: encoder_momentum = deepcopy(encoder) (then EMA-updated)."""
    model = nn.Module()
    model.encoder = _simsiam_encoder("resnet18", 64)
    model.predictor = _mlp(64, 16, 64)
    model.encoder_momentum = _scramble(copy.deepcopy(model.encoder), seed=1)
    ckpt = {"epoch": 3, "arch": "resnet18", "state_dict": _ddp(model), "optimizer": {"state": {}}}
    return ckpt, _pooled(model.encoder_momentum), "gsg", "resnet18"


def moco_v2():
    """facebookresearch/moco moco/builder.py with --mlp: encoder_q/encoder_k, fc -> MLP, queue."""
    model = nn.Module()
    model.encoder_q = torchvision.models.resnet18(num_classes=128)
    dim_mlp = model.encoder_q.fc.weight.shape[1]
    model.encoder_q.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), model.encoder_q.fc)
    _scramble(model.encoder_q)
    model.encoder_k = _scramble(copy.deepcopy(model.encoder_q), seed=2)
    model.register_buffer("queue", nn.functional.normalize(torch.randn(128, 64), dim=0))
    model.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
    return (
        {"epoch": 200, "arch": "resnet18", "state_dict": _ddp(model)},
        _pooled(model.encoder_q),
        "moco",
        "resnet18",
    )


def moco_v3():
    """facebookresearch/moco-v3 moco/builder.py (ResNet): base/momentum encoders, fc -> 2-layer MLP, predictor."""
    model = nn.Module()
    model.base_encoder = torchvision.models.resnet18(num_classes=256)
    hidden = model.base_encoder.fc.weight.shape[1]
    del model.base_encoder.fc
    model.base_encoder.fc = _mlp(hidden, 256, 32)
    _scramble(model.base_encoder)
    model.momentum_encoder = _scramble(copy.deepcopy(model.base_encoder), seed=3)
    model.predictor = _mlp(32, 256, 32)
    ckpt = {
        "epoch": 100,
        "arch": "resnet18",
        "state_dict": _ddp(model),
        "optimizer": {"state": {}},
        "scaler": {},
    }
    return ckpt, _pooled(model.base_encoder), "mocov3", "resnet18"


def solo_byol():
    """vturrisi/solo-learn solo/methods/base.py: Lightning checkpoint, backbone fc = Identity, momentum_backbone."""
    model = nn.Module()
    model.backbone = torchvision.models.resnet18(zero_init_residual=True)
    model.backbone.fc = nn.Identity()
    _scramble(model.backbone)
    model.classifier = nn.Linear(512, 10)
    model.projector = _mlp(512, 64, 32)
    model.momentum_backbone = _scramble(copy.deepcopy(model.backbone), seed=4)
    ckpt = {
        "epoch": 9,
        "global_step": 900,
        "pytorch-lightning_version": "2.0.0",
        "state_dict": model.state_dict(),
        "optimizer_states": [{"state": {}}],
        "lr_schedulers": [{"last_epoch": 9}],
    }
    return ckpt, model.backbone.eval(), "solo", "resnet18"


def lightly_simsiam():
    """lightly-ai/lightly examples/pytorch/simsiam.py: backbone = nn.Sequential(*list(resnet.children())[:-1])."""
    model = nn.Module()
    model.backbone = _scramble(nn.Sequential(*list(torchvision.models.resnet18().children())[:-1]))
    model.projection_head = _mlp(512, 512, 128)
    model.prediction_head = _mlp(128, 64, 128)
    return model.state_dict(), nn.Sequential(model.backbone, nn.Flatten(1)), "lightly", "resnet18"


def mm_v1b():
    """open-mmlab/mmpretrain ResNet (V1b: torchvision names) + neck, head and the BYOL CosineEMA target_net."""
    backbone = _scramble(torchvision.models.resnet34())
    backbone.fc = nn.Identity()  # mm's ResNet has no fc
    model = nn.Module()
    model.backbone = backbone
    model.neck = _mlp(512, 64, 32)
    model.head = nn.Module()
    model.head.predictor = _mlp(32, 64, 32)
    model.target_net = nn.Module()
    model.target_net.module = nn.Sequential(copy.deepcopy(backbone), copy.deepcopy(model.neck))
    model.target_net.register_buffer("steps", torch.tensor(5))
    ckpt = {
        "meta": {"epoch": 200, "mmengine_version": "0.10.0"},
        "state_dict": model.state_dict(),
        "optimizer": {"state": {}},
    }
    return ckpt, backbone.eval(), "mmselfsup", "resnet34"


class _ConvModule(nn.Module):
    """mmcv ConvModule(conv_cfg=None, norm_cfg=BN): ``conv`` (no bias), ``bn``, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class MMResNetDeepStem(nn.Module):
    """mmpretrain ResNetV1c / ResNetV1d (mmpretrain/models/backbones/resnet.py): ``_make_stem_layer``
    deep stem (3x3 s2 -> 32, 32, 64), max-pool, ResLayer with ``avg_down`` shortcuts
    ``[AvgPool2d(s, s, ceil_mode, count_include_pad=False), conv1x1 s1, bn]`` where strided, ``[conv, bn]``
    in layer1. Blocks: torchvision's (same names and pytorch style as mm's Bottleneck/BasicBlock)."""

    def __init__(self, arch: str, avg_down: bool) -> None:
        super().__init__()
        tv = torchvision.models.__dict__[arch]()
        self.stem = nn.Sequential(_ConvModule(3, 32, 2), _ConvModule(32, 32, 1), _ConvModule(32, 64, 1))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i in range(1, 5):
            layer = getattr(tv, f"layer{i}")
            down = layer[0].downsample
            if avg_down and down is not None and i > 1:
                conv, bn = down[0], down[1]
                conv.stride = (1, 1)
                pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
                layer[0].downsample = nn.Sequential(pool, conv, bn)
            setattr(self, f"layer{i}", layer)
        _scramble(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.stem(x))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x.mean((2, 3))


def _mm_deep(arch: str, avg_down: bool, expected: str):
    backbone = MMResNetDeepStem(arch, avg_down)
    sd = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    return {"meta": {"epoch": 1}, "state_dict": sd}, backbone, "mmselfsup", expected


def vissl_resnet50():
    """facebookresearch/vissl ResNeXt trunk (vissl/models/trunks/resnext.py): _feature_blocks ModuleDict,
    saved under classy_state_dict.base_model.model.trunk (extra_scripts/convert_vissl_to_torchvision.py)."""
    tv = torchvision.models.resnet.ResNet(
        torchvision.models.resnet.Bottleneck, (3, 4, 6, 3), zero_init_residual=True
    )
    blocks = nn.ModuleDict(
        [
            ("conv1", tv.conv1),
            ("bn1", tv.bn1),
            ("conv1_relu", tv.relu),
            ("maxpool", tv.maxpool),
            *[(f"layer{i}", getattr(tv, f"layer{i}")) for i in range(1, 5)],
            ("avgpool", tv.avgpool),
            ("flatten", nn.Flatten(1)),
        ]
    )
    trunk = nn.Module()
    trunk._feature_blocks = blocks
    _scramble(trunk)
    heads = _mlp(2048, 128)
    model = {"trunk": trunk.state_dict(), "heads": {f"0.clf.{k}": v for k, v in heads.state_dict().items()}}
    ckpt = {
        "phase_idx": 99,
        "iteration": 1000,
        "type": "vissl",
        "classy_state_dict": {"base_model": {"model": model}, "optimizer": {"state": {}}},
    }
    return ckpt, nn.Sequential(*blocks.values()), "vissl", "resnet50"


def torchvision_resnet18():
    """A plain torchvision state dict (torchvision/models/resnet.py): the ImageNet classifier fc is dropped."""
    tv = _scramble(torchvision.models.resnet18())
    return tv.state_dict(), _pooled(tv), "timm", "resnet18"


CASES = {
    "gsg-simsiam-gsg": gsg_simsiam_gsg,
    "gsg-simsiam-gsg-resnet50": pytest.param(lambda: gsg_simsiam_gsg("resnet50"), marks=pytest.mark.slow),
    "moco-v2": moco_v2,
    "moco-v3": moco_v3,
    "solo-learn": solo_byol,
    "lightly": lightly_simsiam,
    "mmselfsup-v1b": mm_v1b,
    "mmselfsup-v1c": pytest.param(lambda: _mm_deep("resnet50", False, "resnet50c"), marks=pytest.mark.slow),
    "mmselfsup-v1d": lambda: _mm_deep("resnet50", True, "resnet50d"),
    "vissl": vissl_resnet50,
    "torchvision": torchvision_resnet18,
}


def _save(tmp_path: Path, ckpt, name: str = "checkpoint_0099.pth.tar") -> Path:
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


def _cases() -> list:
    """CASES as pytest params, each named, the slow ones marked."""
    return [
        pytest.param(*getattr(c, "values", (c,)), marks=getattr(c, "marks", ()), id=name)
        for name, c in CASES.items()
    ]


def _max_diff(model: nn.Module, reference: nn.Module, size: int = 48) -> float:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((model.eval()(x) - reference.eval()(x)).abs().max())


def _count(ckpt) -> int:
    from gsg_zoo.zoo.importers import tensor_leaves

    return len(tensor_leaves(ckpt)[0])


# ----------------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("build", _cases())
def test_every_format_gives_the_original_features(build, tmp_path):
    ckpt, reference, fmt, arch = build()
    path = _save(tmp_path, ckpt)
    imported = read_checkpoint(path)  # auto-detected
    assert (imported.format.name, imported.architecture) == (fmt, arch)
    model = timm_backbone(imported)
    assert set(model.state_dict()) == set(imported.state_dict)  # every backbone tensor used, none missing
    assert len(imported.state_dict) + sum(imported.dropped.values()) == _count(ckpt)  # nothing unaccounted
    assert _max_diff(model, reference) <= ATOL
    explicit = read_checkpoint(path, fmt)
    assert explicit.prefix == imported.prefix


def test_target_encoders(tmp_path):
    ckpt, reference, _, _ = gsg_byol_target()
    path = _save(tmp_path, ckpt)
    target = read_checkpoint(path, encoder="target")
    assert target.prefix == "state_dict.module.encoder_momentum."
    assert _max_diff(timm_backbone(target), reference) <= ATOL
    online = read_checkpoint(path)
    assert _max_diff(timm_backbone(online), reference) > 1e-3  # the two really differ
    momentum = [k for k in ckpt["state_dict"] if k.startswith("module.encoder_momentum.")]
    assert online.dropped["state_dict.module.encoder_momentum"] == len(momentum)
    assert online.dropped["optimizer"] == 0  # listed although it holds no tensor
    ckpt, _, _, _ = solo_byol()
    solo = read_checkpoint(_save(tmp_path, ckpt, "solo.ckpt"), encoder="target")
    assert _max_diff(timm_backbone(solo), _pooled(ckpt_momentum(ckpt))) <= ATOL
    with pytest.raises(ForeignCheckpointError, match="one backbone"):
        read_checkpoint(_save(tmp_path, torchvision_resnet18()[0], "tv.pth"), encoder="target")


def ckpt_momentum(ckpt) -> nn.Module:
    tv = torchvision.models.resnet18()
    tv.fc = nn.Identity()
    sd = {
        k[len("momentum_backbone.") :]: v
        for k, v in ckpt["state_dict"].items()
        if k.startswith("momentum_backbone.")
    }
    tv.load_state_dict(sd)
    return tv


def test_import_command_writes_a_verified_export_and_specs_load_the_file(tmp_path, capsys):
    import timm

    ckpt, reference, _, _ = gsg_byol_target()
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if "momentum" not in k}
    path = _save(tmp_path, ckpt)
    out = tmp_path / "export"
    assert main(["import", str(path), "--out", str(out), "--method", "simsiam_gsg"]) == 0
    assert "reload check" in capsys.readouterr().out
    prov = json.loads((out / "gsg_export.json").read_text())
    assert prov["checkpoint"]["sha256"] == sha256_file(path) and prov["checkpoint"]["epoch"] == 3
    assert prov["source"]["format"] == "gsg" and prov["reload_check"]["max_abs_diff"] <= ATOL
    assert prov["source"]["dropped"]["state_dict.module.encoder.fc (head)"] == 17
    card = (out / "README.md").read_text()
    assert sha256_file(path) in card and "Source checkpoint" in card and "gsg import" in card
    assert "stated by whoever imported it" in card and "No evaluation results" in card
    online = _pooled(copy.deepcopy(_online_encoder(ckpt)))
    exported = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert _max_diff(exported, online) <= ATOL
    for spec in (f"import:{path}", str(path)):  # explicit, and detected as not a gsg-zoo checkpoint
        model, cfg = load_backbone(spec)
        assert _max_diff(model, online) <= ATOL and cfg["input_size"] == (3, 224, 224)


def _online_encoder(ckpt) -> nn.Module:
    enc = _simsiam_encoder("resnet18", 64)
    enc.load_state_dict(
        {
            k[len("module.encoder.") :]: v
            for k, v in ckpt["state_dict"].items()
            if k.startswith("module.encoder.")
        }
    )
    return enc.eval()


class Payload:
    """A pickle that would create ``marker`` when unpickled: stands for any code in a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_carrying_code_is_refused_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    sd = torchvision.models.resnet18().state_dict()
    path = _save(tmp_path, {"state_dict": sd, "args": Payload(marker)})
    assert not marker.exists()  # saving did not run it either
    with pytest.raises(UnsafeCheckpointError, match=r"arbitrary unpickling.*re-save its weights"):
        read_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        load_backbone(str(path))  # a model spec refuses it the same way
    assert main(["import", str(path), "--out", str(tmp_path / "out")]) == 1
    assert "torch.save({'state_dict'" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_wrong_and_partial_files_name_what_was_found(tmp_path):
    ckpt, _, _, _ = moco_v2()
    sd = ckpt["state_dict"]
    partial = {k: v for k, v in sd.items() if k != "module.encoder_q.layer4.1.bn2.weight"}
    with pytest.raises(ForeignCheckpointError, match=r"missing 1 \['layer4.1.bn2.weight'\]"):
        timm_backbone(read_checkpoint(_save(tmp_path, {"state_dict": partial}, "partial.pth")))
    with pytest.raises(ForeignCheckpointError, match=r"unknown layout.*found 1 tensors: weights.\* \(1\)"):
        read_checkpoint(_save(tmp_path, {"weights": torch.zeros(3)}, "unknown.pth"))
    bad = dict(sd, **{"module.encoder_q.layer1.0.conv1.weight": torch.zeros(64, 64, 5, 5)})
    with pytest.raises(
        ForeignCheckpointError, match=r"shape mismatch 1 \['layer1.0.conv1.weight: \(64, 64, 5, 5\)"
    ):
        timm_backbone(read_checkpoint(_save(tmp_path, {"state_dict": bad}, "shape.pth")))
    with pytest.raises(ForeignCheckpointError, match=r"does not fit: missing \d+ \['layer1.2"):
        timm_backbone(read_checkpoint(_save(tmp_path, ckpt, "arch.pth"), arch="resnet34"))
    with pytest.raises(ForeignCheckpointError, match="no online backbone of format vissl"):
        read_checkpoint(tmp_path / "arch.pth", "vissl")


def test_layouts_with_no_exact_timm_architecture_are_refused(tmp_path):
    ckpt, _, _, _ = _mm_deep("resnet18", False, "resnet18c")  # timm has resnet18d but no resnet18c
    with pytest.raises(ForeignCheckpointError, match="timm architecture 'resnet18c'"):
        read_checkpoint(_save(tmp_path, ckpt, "v1c18.pth"))
    ckpt, _, _, _ = solo_byol()  # solo-learn's CIFAR stem: 3x3, stride 1, padding 2
    ckpt["state_dict"]["backbone.conv1.weight"] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(ForeignCheckpointError, match="padding 2"):
        read_checkpoint(_save(tmp_path, ckpt, "solo_cifar.ckpt"))


def test_the_command_offers_every_format():
    from gsg_zoo.app.commands import import_checkpoint
    from gsg_zoo.zoo.importers import FORMAT_NAMES

    assert set(import_checkpoint.FORMATS) == {"auto", *FORMAT_NAMES}
