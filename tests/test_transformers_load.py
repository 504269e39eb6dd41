"""Exports load in Hugging Face transformers: ``AutoModel``, ``AutoImageProcessor`` and
``pipeline("image-feature-extraction")`` give the pooled features of ``timm.create_model("local-dir:...")``,
offline; ``AutoModelForImageClassification(num_labels=N)`` puts a new head on the same backbone
(transformers refuses a head-less checkpoint without ``num_labels``). A CIFAR-stem export: transformers'
own ImportError without ``import gsg_zoo`` (quoted by the card), the card's snippet with it. transformers
is a test dependency only: gsg_zoo never imports it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_export import make_run

from gsg_zoo.core.checksums import verify_export
from gsg_zoo.zoo.export import export_checkpoint

transformers = pytest.importorskip("transformers")

CHECK = r"""
import json, sys
import numpy as np, timm, torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

path = sys.argv[1]
image = Image.fromarray((np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3))
ref = timm.create_model(f"local-dir:{path}", pretrained=True).eval()
cfg = timm.data.resolve_data_config({}, model=ref)
x = timm.data.create_transform(**cfg)(image).unsqueeze(0)
with torch.no_grad():
    want = ref(x)
    processor = AutoImageProcessor.from_pretrained(path)
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    model = AutoModel.from_pretrained(path).eval()
    auto = model(pixels).pooler_output
    # transformers refuses a head-less checkpoint here by design; the fine-tuning entry point adds a
    # new head (num_labels) on the exported backbone, whose pooled features must be ours
    classifier = AutoModelForImageClassification.from_pretrained(path, num_labels=5).eval()
    logits = classifier(pixels).logits
    tm = classifier.timm_model
    pooled = tm.forward_head(tm.forward_features(pixels), pre_logits=True)
    piped = pipeline("image-feature-extraction", model=path, framework="pt", pool=True)(image)

# A CIFAR-stem export: transformers' own ImportError without gsg_zoo (the card quotes it), then the
# card's transformers snippet after `import gsg_zoo` gives timm's features.
stock_only = "gsg_zoo" not in sys.modules  # everything above ran on stock timm + transformers
cifar, card_code = sys.argv[2], sys.argv[3]
try:
    AutoModel.from_pretrained(cifar)
    refused = ""
except ImportError as err:
    refused = str(err)
ns = {"img": image}
exec(card_code, ns)  # imports gsg_zoo first
ref = timm.create_model(f"local-dir:{cifar}", pretrained=True).eval()
cfg = timm.data.resolve_data_config({}, model=ref)
with torch.no_grad():
    cifar_want = ref(timm.data.create_transform(**cfg)(image).unsqueeze(0))
    cifar_logits = ns["classifier"](ns["processor"](image, return_tensors="pt")["pixel_values"]).logits
print(json.dumps({
    "stock_only": stock_only, "refused": refused, "cifar_auto": float((ns["emb"] - cifar_want).abs().max()),
    "cifar_pipeline": float((torch.tensor(ns["extract"](image)).reshape(-1) - cifar_want.reshape(-1)).abs().max()),
    "cifar_classifier_shape": list(cifar_logits.shape),
    "pixels": float((pixels - x).abs().max()),
    "auto": float((auto - want).abs().max()),
    "classifier_shape": list(logits.shape), "classifier": float((pooled - want).abs().max()),
    "pipeline": float((torch.tensor(piped).reshape(-1) - want.reshape(-1)).abs().max()),
}))
"""


def _card_transformers_code(export: Path, name: str) -> str:
    """The python block of the card's "Usage with transformers" section, pointed at ``export``."""
    text = (export / "README.md").read_text()
    section = text.split("## Usage with transformers\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return code.replace(f"/path/to/{name}", str(export))


@pytest.mark.slow
def test_exports_load_through_every_transformers_entry_point(tmp_path):
    """Stock timm (resnet10t) without gsg_zoo; CIFAR stem (resnet18_cifar) through its card's snippet."""
    ckpt, _ = make_run(
        tmp_path / "run",
        method="byol",
        backbone="resnet10t",
        image_size=64,
        dataset="synthetic",
        summary=None,
    )
    export = export_checkpoint(ckpt, tmp_path / "export")
    config = json.loads((export / "config.json").read_text())
    assert config["num_classes"] == 0 and "num_classes" not in config.get("model_args", {})
    verify_export(export)  # the checksum manifest covers the rewritten config.json
    cifar = export_checkpoint(make_run(tmp_path / "cifar_run", summary=None)[0], tmp_path / "cifar", name="c")
    card = (cifar / "README.md").read_text()
    assert "`pip install gsg-zoo`, then run `import gsg_zoo`" in card
    # gsg_zoo is importable, but only the card's snippet imports it (after the stock checks and the refusal)
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    argv = [sys.executable, "-c", CHECK, str(export), str(cifar), _card_transformers_code(cifar, "c")]
    run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    quoted = re.search(r"`ImportError: (.*?)`", card).group(1)  # the card quotes transformers' message
    assert got["stock_only"]
    assert got["refused"] and quoted in got["refused"], got["refused"]
    assert got["cifar_auto"] <= 1e-5 and got["cifar_pipeline"] <= 1e-5, got
    assert got["cifar_classifier_shape"] == [1, 10]
    assert got["pixels"] <= 1e-5  # AutoImageProcessor = timm's eval transform of the export
    assert got["auto"] <= 1e-5 and got["classifier"] <= 1e-5 and got["pipeline"] <= 1e-5, got
    assert got["classifier_shape"] == [1, 5]  # a new 5-class head on the exported backbone


def test_gsg_zoo_does_not_import_transformers():
    code = "import sys, gsg_zoo.zoo.export, gsg_zoo.zoo.load; print('transformers' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    )
    assert torch is not None
