"""Vision Transformer backbones: a tiny timm ViT pretrains a few steps with the MoCo-v3-style settings
(AdamW, warm-up, MoCo v3 heads, frozen patch embedding), exports, reloads through timm with its pooling,
and serves the feature evaluations; the dense adapters refuse it clearly."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from test_pretrain import TINY

from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.method.learner import LearnerConfig, SelfSupervisedLearner
from gsg_zoo.train.trainer import Pretrainer
from gsg_zoo.zoo.export import export_checkpoint
from gsg_zoo.zoo.load import load_backbone

VIT = "{img_size: 16, patch_size: 8, depth: 2, embed_dim: 64, num_heads: 2, global_pool: avg}"
VIT_OVERRIDES = [
    *TINY,
    "model.backbone=vit_small_patch16_224",
    f"model.backbone_kwargs={VIT}",
    "model.heads=mocov3",
    "model.freeze_patch_embed=true",
    "optim.optimizer=adamw",
    "optim.lr=1.5e-4",
    "optim.weight_decay=0.1",
    "optim.warmup_epochs=1",
    "optim.per_step=true",
    "train.epochs=2",
    "train.max_steps_per_epoch=2",
    "monitor.every=-1",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("vit")
    trainer = Pretrainer(load_recipe("demo", VIT_OVERRIDES), out / "run", progress=False)
    before = {k: v.clone() for k, v in trainer.learner.backbone.state_dict().items()}
    summary = trainer.run()
    return out, summary, before


def test_tiny_vit_pretrains_exports_and_reloads_with_its_pooling(trained):
    out, summary, _ = trained
    assert summary["steps"] == 4 and summary["final_loss"] is not None
    ckpt = out / "run" / "checkpoints" / "last.pt"
    export = export_checkpoint(ckpt, out / "export", verify=False)
    config = json.loads((export / "config.json").read_text())
    assert config["global_pool"] == "avg" and config["model_args"]["depth"] == 2
    assert json.loads((export / "gsg_export.json").read_text())["pooling"] == "avg"
    reloaded = timm.create_model(f"local-dir:{export}", pretrained=True, num_classes=0).eval()
    trained_backbone, data_cfg = load_backbone(str(ckpt))
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        want = trained_backbone(x)
        assert want.shape == (3, 64)
        assert torch.allclose(reloaded(x), want, atol=1e-5)
        tokens = reloaded.forward_features(x)  # (N, 1 + 4 patches, 64): avg = mean of the patch tokens
        mean_patch = reloaded.fc_norm(tokens[:, 1:].mean(1))  # timm: LayerNorm after the mean for avg
        assert torch.allclose(want, mean_patch, atol=1e-5)
    assert tuple(data_cfg["input_size"]) == (3, 16, 16)


def test_frozen_patch_embedding_and_mocov3_heads(trained):
    out, _, before = trained
    state = torch.load(out / "run" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    after = {
        k.removeprefix("encoder.backbone."): v
        for k, v in state["model"].items()
        if k.startswith("encoder.backbone.")
    }
    assert torch.equal(after["patch_embed.proj.weight"], before["patch_embed.proj.weight"])  # frozen
    assert not torch.equal(after["blocks.0.attn.qkv.weight"], before["blocks.0.attn.qkv.weight"])  # trained
    learner = SelfSupervisedLearner(LearnerConfig(**state["config"]["model"]))
    assert not any(p.requires_grad for p in learner.backbone.patch_embed.parameters())
    pred = learner.predictor
    assert isinstance(pred[-1], torch.nn.BatchNorm1d) and not pred[-1].affine and pred[-2].bias is None
    assert learner.encoder.projector[-2].bias is None
    with pytest.raises(ValueError, match="needs a Vision Transformer"):
        SelfSupervisedLearner(LearnerConfig(backbone="resnet10t", freeze_patch_embed=True))


def test_vit_recipes_resolve():
    for name in (
        "imagenet_simsiam_vit_s16",
        "imagenet_simsiam_gsg_vit_s16",
        "imagenet_byol_vit_s16",
        "imagenet_byol_gsg_vit_s16",
    ):
        recipe = load_recipe(name)
        cfg = recipe.learner_config()
        assert cfg.backbone == "vit_small_patch16_224" and cfg.backbone_kwargs["global_pool"] == "token"
        assert (
            recipe.optim.optimizer == "adamw" and recipe.optim.warmup_epochs == 40 and cfg.heads == "mocov3"
        )


def test_dense_adapters_refuse_vit():
    from gsg_zoo.transfer.detection import convert_resnet
    from gsg_zoo.transfer.segmentation import resnet_depth

    vit = timm.create_model(
        "vit_small_patch16_224", num_classes=0, img_size=16, patch_size=8, depth=1, embed_dim=32, num_heads=2
    )
    with pytest.raises(ValueError, match="detection transfer supports ResNet backbones only"):
        convert_resnet(vit)
    with pytest.raises(ValueError, match="segmentation transfer supports ResNet backbones only"):
        resnet_depth(vit.state_dict())
