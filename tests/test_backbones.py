import pytest
import timm
import torch

import gsg_zoo  # noqa: F401  (registers the CIFAR-stem ResNets)
from gsg_zoo.method.backbones import create_backbone, feature_dim


def test_cifar_stem_registered_in_timm():
    for name in ("resnet18_cifar", "resnet34_cifar", "resnet50_cifar"):
        assert name in timm.list_models("*_cifar")
    m = timm.create_model("resnet18_cifar", num_classes=0)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, torch.nn.Identity)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert m.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 4  # 32 / 8


def test_cifar_features_only_reductions():
    m = timm.create_model("resnet18_cifar", features_only=True, out_indices=(1, 2, 3, 4))
    assert m.feature_info.reduction() == [1, 2, 4, 8]
    outs = m(torch.randn(1, 3, 32, 32))
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4]


@pytest.mark.parametrize("zero_init", [True, False])
def test_zero_init_residual(zero_init):
    m = create_backbone("resnet18", zero_init_residual=zero_init)
    w = m.layer1[0].bn2.weight
    assert bool((w == 0).all()) == zero_init


def test_any_timm_model_and_unknown_name():
    m = create_backbone("mobilenetv3_small_050")
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, feature_dim(m))
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone("resnet_does_not_exist")
