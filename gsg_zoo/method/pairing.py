"""Pairing of images within a local batch for GSG."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

PairingMode = Literal["derangement", "permutation"]


def random_derangement(n: int, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly random permutation of ``range(n)`` with no fixed point (rejection sampling).

    ``n == 1`` has no derangement: the single image is paired with itself (no contrast for it).
    Sampled on the CPU (a few microseconds for thousands of images); move it with
    ``.to(device, non_blocking=True)``.
    """
    if n < 1:
        raise ValueError(f"batch must hold at least one image, got {n}")
    if n == 1:
        return torch.zeros(1, dtype=torch.long)
    idx = torch.arange(n)
    while True:  # accepts with probability ~1/e
        r = torch.randperm(n, generator=generator)
        if not bool((r == idx).any()):
            return r


def pair_indices(
    n: int, mode: PairingMode = "derangement", generator: torch.Generator | None = None
) -> Tensor:
    """Index ``r`` so that sample ``i`` is paired with sample ``r[i]``.

    ``"derangement"`` (default) never pairs an image with itself; ``"permutation"`` is the reference
    implementation's ``randperm``, where about one image per batch is paired with itself.
    """
    if mode == "derangement":
        return random_derangement(n, generator)
    if mode == "permutation":
        return torch.randperm(n, generator=generator)
    raise ValueError(f"pairing must be 'derangement' or 'permutation', got {mode!r}")
