"""Feature cache: content-hash keys, safetensors storage, reuse, atomic writes."""

import json

import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.utils.data import TensorDataset

from gsg_zoo.eval.features import ExtractOptions, FeatureCache, default_cache_dir, weights_hash


class Pool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.bn(self.conv(x)).mean(dim=(2, 3))


def _data(n=10):
    return TensorDataset(torch.randn(n, 3, 8, 8), torch.arange(n) % 3)


OPTS = ExtractOptions(batch_size=4, num_workers=0, device="cpu", progress=False)


def test_cache_roundtrip_and_reuse(tmp_path):
    model, data = Pool().eval(), _data()
    cache = FeatureCache(tmp_path)
    first = cache.get(model, data, {"name": "toy", "split": "train"}, "T1", OPTS)
    assert not first.cached and model.calls == 3  # 10 images in batches of 4
    assert first.feats.shape == (10, 4) and first.labels.tolist() == (torch.arange(10) % 3).tolist()
    expected = model(torch.stack([x for x, _ in data]))
    torch.testing.assert_close(first.feats, expected.detach())
    again = FeatureCache(tmp_path).get(model, data, {"name": "toy", "split": "train"}, "T1", OPTS)
    assert again.cached and model.calls == 4  # no extraction, only the check above ran the model
    torch.testing.assert_close(again.feats, first.feats)
    files = list(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".safetensors"]  # no temporary file left, no pickle
    with safe_open(str(files[0]), "pt") as f:
        key = json.loads(f.metadata()["key"])
    assert key["dataset"] == {"name": "toy", "split": "train", "length": 10}
    assert key["transform"] == "'T1'" and key["precision"] == "fp32"
    assert first.feats.requires_grad is False and not first.feats.is_inference()


def test_key_changes_with_weights_transform_and_split(tmp_path):
    model = Pool().eval()
    cache = FeatureCache(tmp_path)
    ident = {"name": "toy", "split": "train"}
    base = cache.path_for(cache.key(model, ident, "T1", "fp32"))
    assert cache.path_for(cache.key(model, ident, "T2", "fp32")) != base
    assert cache.path_for(cache.key(model, {"name": "toy", "split": "test"}, "T1", "fp32")) != base
    other = Pool().eval()
    other.load_state_dict(model.state_dict())
    assert weights_hash(other) == weights_hash(model)
    with torch.no_grad():
        other.bn.running_mean[0] += 1e-3  # a buffer change alone must invalidate the cache
    assert weights_hash(other) != weights_hash(model)
    assert FeatureCache(tmp_path).path_for(FeatureCache(tmp_path).key(other, ident, "T1", "fp32")) != base


def test_disabled_cache_and_corrupt_entry(tmp_path):
    model, data = Pool().eval(), _data(5)
    off = FeatureCache(tmp_path, enabled=False).get(model, data, {"name": "toy", "split": "x"}, "T", OPTS)
    assert not off.cached and not list(tmp_path.iterdir())
    cache = FeatureCache(tmp_path)
    res = cache.get(model, data, {"name": "toy", "split": "x"}, "T", OPTS)
    res.path.write_bytes(b"not safetensors")
    again = cache.get(model, data, {"name": "toy", "split": "x"}, "T", OPTS)
    assert not again.cached  # recomputed, not trusted
    torch.testing.assert_close(again.feats, res.feats)


def test_default_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GSG_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert FeatureCache().root == tmp_path / "c"
    monkeypatch.delenv("GSG_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "gsg-zoo", "features")


def test_non_pooled_model_is_rejected(tmp_path):
    with pytest.raises(RuntimeError, match="pooled features"):
        FeatureCache(tmp_path).get(nn.Conv2d(3, 2, 1), _data(3), {"name": "toy", "split": "t"}, "T", OPTS)
