"""Register gsg-zoo's models and zoo tags with timm whenever timm is imported, without importing it.

``import gsg_zoo`` must make ``timm.create_model("resnet18_cifar")`` and the zoo's pretrained tags work,
but must not import torch/timm itself (``gsg --help`` answers in well under a second). So:

- timm already imported: register now;
- otherwise: a meta-path finder waits for ``import timm`` and registers right after timm has loaded.

Registration is importing :mod:`gsg_zoo.backbones`, which registers the CIFAR-stem ResNets and then the
zoo's pretrained tags (:func:`gsg_zoo.zoo.register_timm_tags`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

REGISTRATION_MODULE = "gsg_zoo.backbones"


def register_now() -> None:
    """Import the registration module (idempotent: a module runs once)."""
    importlib.import_module(REGISTRATION_MODULE)


class _TimmImportWatcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of ``timm`` so registration runs after it executes."""

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001 (importlib signature)
        if fullname != "timm":
            return None
        uninstall()  # one shot; also keeps the inner find_spec below from recursing
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            exec_module(module)
            register_now()

        spec.loader.exec_module = exec_then_register  # this spec's own loader instance only
        return spec


_WATCHER = _TimmImportWatcher()


def uninstall() -> None:
    if _WATCHER in sys.meta_path:
        sys.meta_path.remove(_WATCHER)


def install() -> None:
    """Register now if timm is loaded, else once ``import timm`` happens."""
    if "timm" in sys.modules:
        register_now()
    elif _WATCHER not in sys.meta_path:
        sys.meta_path.insert(0, _WATCHER)
