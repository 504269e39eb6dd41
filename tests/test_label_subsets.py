"""Label subsets of semi-supervised fine-tuning: SimCLR's shipped ImageNet lists, seeded class-balanced
subsets elsewhere, and clear errors for bad fractions, unlabelled splits and lists naming missing images."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from gsg_zoo.eval.label_subsets import (
    SIMCLR_SUBSETS,
    SUBSET_DIR,
    check_fraction,
    choose_subset,
    class_balanced,
    read_simclr_list,
)


@pytest.mark.parametrize("fraction, count", [(1.0, 12_811), (10.0, 128_116)])
def test_simclr_lists_match_their_published_counts_and_hashes(fraction, count):
    """The files as SimCLR published them (google-research/simclr imagenet_subsets/): hashed here from
    the shipped bytes, not through the module's own check."""
    name, n, sha = SIMCLR_SUBSETS[fraction]
    text = gzip.decompress((SUBSET_DIR / name).read_bytes())
    assert n == count and len(text.splitlines()) == count
    assert hashlib.sha256(text).hexdigest() == sha
    names = read_simclr_list(fraction)
    assert len(set(names)) == count and all(x.endswith(".JPEG") for x in names)
    per_class: dict[str, int] = {}
    for x in names:
        per_class[x.split("_")[0]] = per_class.get(x.split("_")[0], 0) + 1
    assert len(per_class) == 1000 and max(per_class.values()) - min(per_class.values()) == 1  # balanced


def _imagenet_like(names: list[str]) -> tuple[list[tuple[str, int]], list[str], list[int]]:
    wnids = sorted({n.split("_")[0] for n in names})
    label = {w: i for i, w in enumerate(wnids)}
    extra = [f"{w}_999999.JPEG" for w in wnids]  # images outside the list
    samples = [(f"/r/train/{n.split('_')[0]}/{n}", label[n.split("_")[0]]) for n in sorted(names + extra)]
    return samples, wnids, [y for _, y in samples]


def test_an_imagenet_folder_at_1_percent_uses_simclrs_list():
    names = read_simclr_list(1.0)
    samples, classes, labels = _imagenet_like(names)
    sub = choose_subset(labels, 1, samples=samples, classes=classes)
    assert sub.method == "simclr-list" and len(sub.indices) == 12_811
    assert {samples[i][0].rsplit("/", 1)[1] for i in sub.indices} == set(names)
    assert "sha256 71e82a48" in sub.record()["source"]


def test_a_subset_file_naming_missing_images_is_an_error():
    names = read_simclr_list(1.0)
    samples, classes, labels = _imagenet_like(names[:-5])  # five of the list's images absent
    with pytest.raises(FileNotFoundError, match=r"names 5 of its 12811 images that the training split lacks"):
        choose_subset(labels, 1, samples=samples, classes=classes)


def test_class_balanced_subset_is_seeded_and_balanced():
    labels = [i % 7 for i in range(7 * 300)] + [0] * 50  # an unbalanced class 0
    a, b, c = (class_balanced(labels, 10, s) for s in (0, 0, 1))
    assert a == b and a != c and len(a) == int(len(labels) * 0.1)
    counts = [sum(labels[i] == k for i in a) for k in range(7)]
    assert max(counts) - min(counts) <= 1
    sub = choose_subset(labels, 10, seed=3)
    rec = sub.record()
    assert rec["method"] == "class-balanced" and rec["seed"] == 3 and rec["indices"] == sub.indices
    assert choose_subset(labels, 100).method == "all"


@pytest.mark.parametrize("bad", [0, -1, 100.5, 1000])
def test_fraction_outside_0_100_is_refused(bad):
    with pytest.raises(ValueError, match=r"percentage in \(0, 100\]"):
        check_fraction(bad)


def test_a_split_without_labels_is_refused():
    with pytest.raises(ValueError, match="has no labels"):
        choose_subset([-1] * 10, 10)
