"""``import gsg_zoo`` exposes the public API, registers the CIFAR-stem ResNets with timm, ships its configs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gsg_zoo
from gsg_zoo.core import resources
from gsg_zoo.method.learner import LearnerConfig


def _python(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_public_api_is_the_layers_own_objects():
    from gsg_zoo.method import learner, losses, pairing
    from gsg_zoo.zoo import load

    homes = {learner, losses, pairing, load}
    for name in gsg_zoo.__all__:
        assert any(getattr(m, name, None) is getattr(gsg_zoo, name) for m in homes), name
    with pytest.raises(AttributeError):
        gsg_zoo.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "order",
    [
        "import gsg_zoo; import timm",
        "import timm; import gsg_zoo",
        "import gsg_zoo.method.learner; import timm",
    ],
)
def test_cifar_models_registered_with_timm(order):
    assert _python(f"{order}; print(timm.is_model('resnet18_cifar'))") == "True"


def test_timm_without_gsg_zoo_is_untouched():
    assert _python("import timm; print(timm.is_model('resnet18_cifar'))") == "False"


def test_config_dirs_are_found():
    assert (resources.config_dir("pretrain") / "demo.yaml").is_file()
    assert (resources.config_dir("mmseg") / "_base_" / "synthetic.py").is_file()
    assert "voc_R_50_C4_24k" in resources.list_configs("detectron2", ".yaml", hidden_prefixes=("Base-",))
    with pytest.raises(ValueError, match="unknown config folder"):
        resources.config_dir("elsewhere")


def test_unknown_target_guidance_pair_is_a_clear_error():
    cfg = LearnerConfig(target="ema", guidance="gsg")
    assert cfg.method == "byol_gsg"
    cfg.guidance = "other"  # e.g. from a hand-edited checkpoint config
    with pytest.raises(ValueError, match="no method has target='ema' and guidance='other'"):
        cfg.method  # noqa: B018
