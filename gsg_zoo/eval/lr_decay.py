"""Layer-wise learning-rate decay for fine-tuning ViTs, transcribed from MAE (BEiT's rule).

github.com/facebookresearch/mae ``util/lr_decay.py`` (``param_groups_lrd``, ``get_layer_id_for_vit``):
block ``i`` gets ``layer_decay ** (num_layers - (i + 1))`` of the lr, the patch embedding and the class
and position tokens ``layer_decay ** num_layers``, everything after the blocks (norm, head) 1; 1-D
parameters and the model's ``no_weight_decay()`` names get no weight decay. ``util/lr_sched.py`` then
sets each group's lr to the scheduled lr times its ``lr_scale``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn


def get_layer_id_for_vit(name: str, num_layers: int) -> int:
    """MAE's ``get_layer_id_for_vit``: 0 for tokens and patch embedding, ``i + 1`` for ``blocks.i``, else
    ``num_layers``."""
    if name in ["cls_token", "pos_embed"]:
        return 0
    if name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    return num_layers


def param_groups_lrd(
    model: nn.Module,
    weight_decay: float = 0.05,
    no_weight_decay_list: Iterable[str] = (),
    layer_decay: float = 0.75,
    prefix: str = "",
    blocks: Any = None,
) -> list[dict[str, Any]]:
    """MAE's ``param_groups_lrd``; ``prefix``: stripped from names before the layer rule (the backbone's
    place in a wrapper, e.g. ``"backbone."``), ``blocks``: the ViT's blocks (default ``model.blocks``)."""
    no_wd = set(no_weight_decay_list)
    num_layers = len(blocks if blocks is not None else model.blocks) + 1
    layer_scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    groups: dict[str, dict[str, Any]] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        name = n.removeprefix(prefix)
        no_decay = p.ndim == 1 or name in no_wd
        layer_id = get_layer_id_for_vit(name, num_layers)
        key = f"layer_{layer_id}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            wd = 0.0 if no_decay else weight_decay
            groups[key] = {"lr_scale": layer_scales[layer_id], "weight_decay": wd, "params": [], "names": []}
        groups[key]["params"].append(p)
        groups[key]["names"].append(n)
    return list(groups.values())


def is_vit(backbone: nn.Module) -> bool:
    """A ViT in timm's layout: ``blocks``, ``patch_embed`` (layer-wise decay applies)."""
    return hasattr(backbone, "blocks") and hasattr(backbone, "patch_embed")
