"""Which labelled training images a semi-supervised fine-tune sees: a fraction of a split's labels.

ImageNet at 1 % and 10 %: the image lists SimCLR published (github.com/google-research/simclr
``imagenet_subsets/{1,10}percent.txt``), shipped gzipped beside this module and checked against their
sha256 and counts before use, so every number uses the same images. Other datasets: a seeded
class-balanced subset (the same count per class, as SimCLR's lists hold), its seed and indices
recorded in the results.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: SimCLR's lists (google-research/simclr @ 383d4143fd8cf7879ae10f1046a9baeb753ff438): lines, sha256
#: of the published (uncompressed) text.
SIMCLR_SUBSETS: dict[float, tuple[str, int, str]] = {
    1.0: ("1percent.txt.gz", 12811, "71e82a48ba78252683ae334c4d019ebd5c6e855b9599c1389fbe83eb9549cf17"),
    10.0: ("10percent.txt.gz", 128116, "6d09de11e7bdaf5b1f3b1f249b6183695f97310cdd20f0c03e7235b6b9392091"),
}
SUBSET_DIR = Path(__file__).resolve().with_name("simclr_subsets")
SIMCLR_SOURCE = "github.com/google-research/simclr imagenet_subsets/{}percent.txt"
WNID = re.compile(r"^n\d{8}$")


@dataclass
class LabelSubset:
    """The chosen training indices and how they were chosen (recorded in the results)."""

    indices: list[int]
    fraction: float
    method: str  # "all" | "simclr-list" | "class-balanced"
    seed: int | None = None
    source: str | None = None  # the list's origin and sha256 (simclr-list)
    per_class: dict[int, int] = field(default_factory=dict)

    def record(self, with_indices: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "fraction": self.fraction,
            "method": self.method,
            "num_images": len(self.indices),
            "seed": self.seed,
            "source": self.source,
            "per_class_min": min(self.per_class.values(), default=None),
            "per_class_max": max(self.per_class.values(), default=None),
        }
        if with_indices:
            out["indices"] = self.indices
        return out


def check_fraction(fraction: float) -> float:
    """``fraction`` (percent of the labels) in (0, 100], else ValueError."""
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 100):
        raise ValueError(f"--fraction must be a percentage in (0, 100], got {fraction!r}")
    return float(fraction)


def read_simclr_list(fraction: float) -> list[str]:
    """SimCLR's ImageNet image names at 1 or 10 %, verified against the published sha256 and count."""
    if fraction not in SIMCLR_SUBSETS:
        raise ValueError(f"SimCLR published ImageNet subsets at 1 and 10 %, not {fraction:g} %")
    name, count, sha = SIMCLR_SUBSETS[fraction]
    data = gzip.decompress((SUBSET_DIR / name).read_bytes())
    if hashlib.sha256(data).hexdigest() != sha:
        raise RuntimeError(f"{SUBSET_DIR / name} does not hash to SimCLR's published {sha}: reinstall")
    names = data.decode().split()
    if len(names) != count:
        raise RuntimeError(f"{name}: {len(names)} names, SimCLR published {count}")
    return names


def read_list_file(path: str | os.PathLike) -> list[str]:
    """Image file names, one a line (a SimCLR-style subset file)."""
    names = Path(path).expanduser().read_text().split()
    if not names:
        raise ValueError(f"{path}: the subset file names no images")
    return names


def indices_of_names(samples: list[tuple[str, int]], names: list[str], what: str) -> list[int]:
    """Indices of ``samples`` (ImageFolder's ``(path, label)``) whose file names are ``names``; a name
    without an image is an error naming how many are missing and a few of them."""
    where = {os.path.basename(p): i for i, (p, _) in enumerate(samples)}
    missing = [n for n in names if n not in where]
    if missing:
        raise FileNotFoundError(
            f"{what} names {len(missing)} of its {len(names)} images that the training split lacks, "
            f"e.g. {', '.join(missing[:3])}: the subset needs every one of them (is ROOT the full set?)"
        )
    return sorted(where[n] for n in names)


def looks_like_imagenet(samples: list[tuple[str, int]], classes: list[str]) -> bool:
    """An ImageFolder of the 1000 ImageNet classes (WordNet ids as folder names)."""
    return len(classes) == 1000 and all(WNID.match(c) for c in classes) and bool(samples)


def class_balanced(labels: list[int], fraction: float, seed: int, count: int | None = None) -> list[int]:
    """``floor(N x fraction / 100)`` indices (or ``count``; at least one per class), the same count per
    class (the remainder one each to seeded classes), each class's drawn with ``seed``; sorted."""
    arr = np.asarray(labels)
    classes = np.unique(arr)
    rng = np.random.default_rng(seed)
    total = max(int(len(arr) * fraction / 100) if count is None else count, len(classes))
    base, extra = divmod(total, len(classes))
    bonus = set(rng.permutation(classes)[:extra].tolist())
    chosen: list[int] = []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(arr == c))
        chosen += idx[: base + (c in bonus)].tolist()
    return sorted(int(i) for i in chosen)


def choose_subset(
    labels: list[int],
    fraction: float,
    seed: int = 0,
    samples: list[tuple[str, int]] | None = None,
    classes: list[str] | None = None,
    subset_file: str | None = None,
) -> LabelSubset:
    """The fine-tune's training images: all (100 %), a list file's, SimCLR's (ImageNet 1/10 %) or a
    seeded class-balanced subset. ``samples``/``classes``: an ImageFolder's, for file-name lists."""
    fraction = check_fraction(fraction)
    require_labels(labels)
    if subset_file is not None:
        if samples is None:
            raise ValueError("--subset-file needs an image-folder dataset (file names to match)")
        idx = indices_of_names(samples, read_list_file(subset_file), f"subset file {subset_file}")
        return _made(idx, labels, fraction, "list-file", None, str(Path(subset_file).resolve()))
    if fraction == 100:
        return _made(list(range(len(labels))), labels, fraction, "all", None, None)
    imagenet = samples is not None and classes is not None and looks_like_imagenet(samples, classes)
    if imagenet and fraction in SIMCLR_SUBSETS:
        src = SIMCLR_SOURCE.format(int(fraction))
        idx = indices_of_names(samples, read_simclr_list(fraction), src)  # type: ignore[arg-type]
        sha = SIMCLR_SUBSETS[fraction][2]
        return _made(idx, labels, fraction, "simclr-list", None, f"{src} sha256 {sha}")
    return _made(class_balanced(labels, fraction, seed), labels, fraction, "class-balanced", seed, None)


def _made(
    idx: list[int], labels: list[int], fraction: float, method: str, seed: int | None, source: str | None
) -> LabelSubset:
    counts: dict[int, int] = {}
    for i in idx:
        counts[labels[i]] = counts.get(labels[i], 0) + 1
    return LabelSubset(idx, fraction, method, seed, source, counts)


def require_labels(labels: list[int]) -> None:
    """ValueError for a split without labels (none, or the -1 of unlabelled images)."""
    if not labels or min(labels) < 0:
        raise ValueError(
            "the training split has no labels (unlabelled images carry -1): fine-tuning needs a "
            "labelled split, e.g. STL-10's train rather than unlabeled"
        )


def dataset_labels(ds: Any) -> list[int]:
    """Every label of a dataset without decoding its images (``targets``/``labels``), else by reading."""
    for name in ("targets", "labels"):
        labels = getattr(ds, name, None)
        if labels is not None:
            return [int(y) for y in labels]
    return [int(ds[i][1]) for i in range(len(ds))]
