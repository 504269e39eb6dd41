"""Run mmsegmentation on ``mmcv-lite`` (no compiled ``mmcv._ext``).

A few mmseg modules import :mod:`mmcv.ops` at module level (``point_sample``, ``sigmoid_focal_loss``),
and the real ``mmcv.ops`` package loads compiled kernels on import, so with ``mmcv-lite``
``import mmseg.models`` fails. :func:`apply` installs a small replacement ``mmcv.ops`` that

* provides ``point_sample`` (and its helpers) from mmcv's own pure-PyTorch ``mmcv/ops/point_sample.py``;
* provides ``sigmoid_focal_loss`` as a function that raises when called (mmseg's ``FocalLoss`` only
  calls it for CUDA tensors; on the CPU it uses its pure-PyTorch version);
* raises :class:`ModuleNotFoundError` for every other op, which mmseg's optional imports
  (``cc_head``, ``psa_head``, ...) already expect.

The shim is applied only when compiled mmcv ops are absent, and only by the segmentation command
(or a caller that asks for it): importing gsg-zoo never changes ``mmcv``.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from pathlib import Path
from typing import Any

SHIM_ATTR = "__gsg_zoo_shim__"
PURE_PYTHON_OPS = ("point_sample", "bilinear_grid_sample", "SimpleRoIAlign")


def has_compiled_ops() -> bool:
    """True when mmcv's compiled extension (full ``mmcv``, not ``mmcv-lite``) is installed."""
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except ModuleNotFoundError:  # mmcv itself missing
        return False


def is_applied() -> bool:
    return getattr(sys.modules.get("mmcv.ops"), SHIM_ATTR, False)


def apply() -> bool:
    """Install the ``mmcv.ops`` shim if compiled ops are missing; return whether the shim is active.

    Raises ModuleNotFoundError with install instructions when mmcv is not installed at all.
    """
    try:
        import mmcv
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "mmcv is not installed: install the segmentation extra with `bash tools/install_mmseg.sh` "
            "(mmengine, mmcv-lite, mmsegmentation)"
        ) from err
    if has_compiled_ops():
        return False
    if is_applied():
        return True
    real_ops = Path(mmcv.__file__).parent / "ops"
    ops = _ShimOps("mmcv.ops")
    ops.__path__ = []  # a package whose submodules are all missing (``mmcv.ops.nms`` -> ModuleNotFoundError)
    ops.__file__ = __file__
    setattr(ops, SHIM_ATTR, True)
    sys.modules["mmcv.ops"] = ops
    point_sample = _load_file("mmcv.ops.point_sample", real_ops / "point_sample.py")
    for name in PURE_PYTHON_OPS:
        setattr(ops, name, getattr(point_sample, name))
    ops.sigmoid_focal_loss = _needs_compiled_ops("sigmoid_focal_loss")
    mmcv.ops = ops
    # mmcv.cnn.bricks.transformer tries the deformable-attention op on import and warns that it is absent.
    warnings.filterwarnings("ignore", message="Fail to import ``MultiScaleDeformableAttention``")
    return True


class _ShimOps(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise ModuleNotFoundError(
            f"mmcv.ops.{name} needs mmcv's compiled ops, which mmcv-lite does not ship; "
            "install full mmcv (see configs/mmseg/README.md) to use it",
            name=f"mmcv.ops.{name}",
        )


def _needs_compiled_ops(name: str):
    def op(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"mmcv.ops.{name} needs mmcv's compiled ops (mmcv-lite is installed)")

    op.__name__ = name
    return op


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"cannot load {path}", name=name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
