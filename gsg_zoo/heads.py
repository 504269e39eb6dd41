"""Projector and predictor MLPs of SimSiam/BYOL (the GSG paper uses the same heads)."""

from __future__ import annotations

from torch import nn


def projection_mlp(
    in_dim: int, hidden_dim: int = 2048, out_dim: int = 2048, num_layers: int = 3
) -> nn.Sequential:
    """SimSiam projector.

    ``num_layers=3`` (ImageNet): Linear-BN-ReLU, Linear-BN-ReLU, Linear-BN(affine=False), hidden
    layers without bias. ``num_layers=2`` (CIFAR): Linear-BN-ReLU, Linear-BN(affine=False).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers += [nn.Linear(dim, out_dim), nn.BatchNorm1d(out_dim, affine=False)]
    return nn.Sequential(*layers)


def prediction_mlp(dim: int = 2048, bottleneck_dim: int = 512, out_dim: int | None = None) -> nn.Sequential:
    """SimSiam predictor with a bottleneck: Linear(no bias)-BN-ReLU-Linear."""
    return nn.Sequential(
        nn.Linear(dim, bottleneck_dim, bias=False),
        nn.BatchNorm1d(bottleneck_dim),
        nn.ReLU(inplace=True),
        nn.Linear(bottleneck_dim, out_dim or dim),
    )
