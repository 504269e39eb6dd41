"""The kNN monitor's bank and queries span every class; ``random:ARCH`` is a reproducible
baseline, seeded by default and named with its seed."""

from __future__ import annotations

import torch
from PIL import Image

from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.train.monitor import KnnMonitor, stratified_subset
from gsg_zoo.zoo.load import canonical_spec, load_backbone, parse_random_spec


def class_ordered_folder(root, classes: int = 10, per_class: int = 12) -> None:
    """An ImageFolder whose files sort by class, as ImageNet's do."""
    for split in ("train", "test"):
        for c in range(classes):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (c * 20, i * 10, 0)).save(folder / f"{i}.png")


def test_monitor_subsets_cover_every_class_of_a_class_ordered_folder(tmp_path):
    class_ordered_folder(tmp_path)
    recipe = load_recipe(
        "demo",
        [
            "data.dataset=imagefolder",
            f"data.root={tmp_path}",
            "data.loader.num_workers=0",
            "monitor.train_limit=30",
            "monitor.test_limit=20",
        ],
    )
    bank, queries = KnnMonitor(recipe.data, recipe.monitor).loaders()
    bank_labels = torch.cat([y for _, y, _ in bank])
    query_labels = torch.cat([y for _, y, _ in queries])
    assert torch.bincount(bank_labels, minlength=10).tolist() == [3] * 10  # range(30) would give 3 classes
    assert torch.bincount(query_labels, minlength=10).tolist() == [2] * 10


def test_stratified_subset_is_seeded_and_balanced():
    labels = [c for c in range(4) for _ in range(25)]
    a = stratified_subset(labels, 40)
    assert a == stratified_subset(labels, 40) and a != stratified_subset(labels, 40, seed=1)
    assert sorted({labels[i] for i in a}) == [0, 1, 2, 3] and len(a) == 40


def test_random_baseline_is_seeded_and_named_with_its_seed():
    def features(spec: str) -> torch.Tensor:
        model, _ = load_backbone(spec)
        return model(torch.ones(1, 3, 32, 32))

    torch.manual_seed(123)  # whatever the caller's RNG holds
    a = features("random:resnet10t")
    torch.manual_seed(456)
    assert torch.equal(a, features("random:resnet10t@0"))
    assert not torch.equal(a, features("random:resnet10t@1"))
    assert canonical_spec("random:resnet10t") == "random:resnet10t@0"
    assert parse_random_spec("random:resnet10t@7") == ("resnet10t", 7)
