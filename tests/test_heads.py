"""The heads: SimSiam's layers, built in layer order so a seed gives the weights it always gave."""

from __future__ import annotations

import torch
from torch import nn

from gsg_zoo.method.heads import prediction_mlp, projection_mlp


def simsiam_predictor(dim: int, pred_dim: int) -> nn.Sequential:
    """facebookresearch/simsiam ``simsiam/builder.py``'s predictor, transcribed."""
    return nn.Sequential(
        nn.Linear(dim, pred_dim, bias=False),
        nn.BatchNorm1d(pred_dim),
        nn.ReLU(inplace=True),
        nn.Linear(pred_dim, dim),
    )


def simsiam_cifar_projector(in_dim: int, hidden: int, dim: int) -> nn.Sequential:
    """The 2-layer projector (Linear-BN-ReLU, Linear-BN(affine=False)), layers in order."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, dim),
        nn.BatchNorm1d(dim, affine=False),
    )


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_default_heads_draw_the_simsiam_initial_weights_in_layer_order():
    torch.manual_seed(0)
    ours = prediction_mlp(32, 8)
    torch.manual_seed(0)
    assert same_state(ours, simsiam_predictor(32, 8))
    torch.manual_seed(1)
    ours = projection_mlp(16, 24, 32, num_layers=2)
    torch.manual_seed(1)
    assert same_state(ours, simsiam_cifar_projector(16, 24, 32))


def test_mocov3_predictor_has_no_last_bias_and_ends_in_bn():
    head = prediction_mlp(32, 8, last_bn=True)
    assert head[3].bias is None and isinstance(head[4], nn.BatchNorm1d) and not head[4].affine
    assert projection_mlp(16, 24, 32, num_layers=2, last_bias=False)[3].bias is None
