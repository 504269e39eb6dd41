"""Projector and predictor MLPs of SimSiam/BYOL (the GSG paper uses the same heads)."""

from __future__ import annotations

from torch import nn


def projection_mlp(
    in_dim: int, hidden_dim: int = 2048, out_dim: int = 2048, num_layers: int = 3, last_bias: bool = True
) -> nn.Sequential:
    """SimSiam projector.

    ``num_layers=3`` (ImageNet): Linear-BN-ReLU, Linear-BN-ReLU, Linear-BN(affine=False), hidden
    layers without bias. ``num_layers=2`` (CIFAR): Linear-BN-ReLU, Linear-BN(affine=False).
    ``last_bias=False``: MoCo v3's ``_build_mlp`` (no Linear has a bias; the same function in training,
    where the last BN removes any bias).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers += [nn.Linear(dim, out_dim, bias=last_bias), nn.BatchNorm1d(out_dim, affine=False)]
    return nn.Sequential(*layers)


def prediction_mlp(
    dim: int = 2048, bottleneck_dim: int = 512, out_dim: int | None = None, last_bn: bool = False
) -> nn.Sequential:
    """SimSiam predictor with a bottleneck: Linear(no bias)-BN-ReLU-Linear.

    ``last_bn=True``: MoCo v3's 2-layer predictor, Linear(no bias)-BN-ReLU-Linear(no bias)-BN(affine=False)
    (facebookresearch/moco-v3 moco/builder.py ``_build_mlp(2, dim, mlp_dim, dim)``).
    """
    out = out_dim or dim
    first = [
        nn.Linear(dim, bottleneck_dim, bias=False),
        nn.BatchNorm1d(bottleneck_dim),
        nn.ReLU(inplace=True),
    ]
    # built in layer order: the initial weights draw from the RNG in the order they always did
    last = nn.Linear(bottleneck_dim, out, bias=not last_bn)
    return nn.Sequential(*first, last, *([nn.BatchNorm1d(out, affine=False)] if last_bn else []))


#: ``model.heads``: the head style (projector last bias, predictor last BN)
HEAD_STYLES: dict[str, dict[str, bool]] = {
    "simsiam": {"last_bias": True, "last_bn": False},
    "mocov3": {"last_bias": False, "last_bn": True},
}
