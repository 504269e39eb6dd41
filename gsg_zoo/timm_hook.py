"""Register gsg-zoo with timm as soon as timm is imported, without importing timm (or torch) itself.

``import gsg_zoo`` must make ``timm.create_model("resnet18_cifar")`` and the zoo's pretrained tags
work, yet stay light so that ``gsg --help`` answers at once. Registration has two parts, in order:

1. :mod:`gsg_zoo.backbones` registers the CIFAR-stem ResNets (``@register_model`` at import);
2. :func:`gsg_zoo.zoo.register_timm_tags` adds every zoo manifest entry as a pretrained tag.

A meta-path finder watches ``timm`` and ``gsg_zoo.backbones``; each time one of them has finished
executing, :func:`_sync` does whatever step has become possible. So any import order works (``timm``
first, ``gsg_zoo`` first, or ``gsg_zoo.backbones`` directly) and no module imports the zoo from below.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

WATCHED = ("timm", "gsg_zoo.backbones")
_loaded: set[str] = set()  # watched modules whose execution has finished
_state = {"tags": False, "busy": False}


def _sync() -> None:
    """Run the registration steps whose prerequisites are loaded (each once)."""
    if "timm" not in _loaded or _state["tags"]:
        return
    if "gsg_zoo.backbones" not in _loaded:
        if "gsg_zoo.backbones" not in sys.modules:
            importlib.import_module("gsg_zoo.backbones")  # its completion calls _sync again
        return
    _state["tags"] = True
    importlib.import_module("gsg_zoo.zoo").register_timm_tags()


def _finished(name: str) -> None:
    _loaded.add(name)
    if _loaded >= set(WATCHED):
        uninstall()
    _sync()


class _Watcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of a watched module so :func:`_finished` runs after it."""

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001 (importlib's signature)
        if fullname not in WATCHED or fullname in _loaded or _state["busy"]:
            return None
        _state["busy"] = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            _state["busy"] = False
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            exec_module(module)
            _finished(fullname)

        spec.loader.exec_module = exec_then_register  # this spec's own loader instance only
        return spec


_WATCHER = _Watcher()


def uninstall() -> None:
    if _WATCHER in sys.meta_path:
        sys.meta_path.remove(_WATCHER)


def install() -> None:
    """Register now what is possible; watch the imports that are still to come."""
    _loaded.update(name for name in WATCHED if name in sys.modules)
    if not _loaded >= set(WATCHED) and _WATCHER not in sys.meta_path:
        sys.meta_path.insert(0, _WATCHER)
    _sync()
