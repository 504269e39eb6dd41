"""Reference tables generated from the code when the documentation build starts (``_generated/*.md``).

Each table is a pure function of the package: the recipes (``configs/pretrain/*.yaml``), the keys ``--set``
accepts (the recipe dataclasses), the dataset registry and the module layers that
``tests/test_architecture.py`` enforces. Pages include them with ``{include}``.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "_generated"


def _cell(c: object) -> str:
    return str(c).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> str:
    esc = _cell
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]) + "\n"


def recipes() -> str:
    from gsg_zoo.config.recipes import list_recipes, load_recipe

    rows = []
    for name in list_recipes():
        r = load_recipe(name)
        paper = (
            ", ".join(f"{k} {v['value'] if isinstance(v, dict) else v}" for k, v in r.paper.items()) or "-"
        )
        rows.append(
            [
                f"`{name}`",
                r.method,
                r.data.dataset,
                r.learner_config().backbone,
                str(r.train.epochs),
                str(r.train.batch_size),
                r.data.augmentation,
                paper,
            ]
        )
    return _table(["recipe", "method", "data", "backbone", "epochs", "batch", "views", "paper"], rows)


def recipe_keys() -> str:
    from gsg_zoo.config.recipes import key_defaults

    skip = ("name", "method", "paper")
    rows = [[f"`{k}`", f"`{v!r}`"] for k, v in key_defaults().items() if k not in skip]
    return _table(["key", "default"], rows)


def datasets() -> str:
    from gsg_zoo.data.registry import DATASETS

    rows = [
        [
            f"`{d.name}`",
            d.title,
            ", ".join(d.splits + d.more_splits) or "any folder",
            "yes" if d.pretrain else "",
            d.metric,
            d.layout,
        ]
        for d in DATASETS.values()
    ]
    return _table(["name", "dataset", "splits", "pretraining", "metric", "expected under ROOT"], rows)


def layers() -> dict[str, tuple[str, ...]]:
    spec = importlib.util.spec_from_file_location(
        "test_architecture", ROOT / "tests" / "test_architecture.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LAYERS


def architecture() -> str:
    """Layer, module and the first line of its docstring, for every module of the package."""
    pkg = ROOT / "gsg_zoo"
    rows = []
    for layer, members in layers().items():
        for member in members:
            paths = (
                [pkg / "__init__.py"]
                if member == ""
                else sorted(
                    [pkg / f"{member}.py"]
                    if (pkg / f"{member}.py").exists()
                    else (pkg / member).rglob("*.py")
                )
            )
            for path in paths:
                doc = ast.get_docstring(ast.parse(path.read_text())) or ""
                name = path.relative_to(pkg).with_suffix("").as_posix().removesuffix("/__init__")
                rows.append([layer, f"`{'gsg_zoo' if name == '__init__' else name}`", doc.split("\n\n")[0]])
    return _table(["layer", "module", "job"], rows)


def _markdown(rst: str) -> str:
    """reST inline code and roles (````x````, ``:func:`x```) as markdown code spans."""
    return re.sub(r"``([^`]+)``", r"`\1`", re.sub(r":\w+:`~?([^`]+)`", r"`\1`", rst))


def api() -> str:
    """The public names of ``gsg_zoo`` (its ``__all__``), each with the first line of its docstring."""
    import inspect

    import gsg_zoo

    tree = ast.parse((ROOT / "gsg_zoo" / "__init__.py").read_text())
    home = {a.asname or a.name: n.module for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    rows = []
    for name in gsg_zoo.__all__:
        obj = getattr(gsg_zoo, name)
        module = home[name].lstrip(".")
        if callable(obj):
            kind = "class" if inspect.isclass(obj) else "function"
            summary = _markdown((inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " "))
        else:  # a constant: its type and keys
            kind = type(obj).__name__
            summary = "keys: " + ", ".join(f"`{k}`" for k in obj) if isinstance(obj, dict) else f"`{obj!r}`"
        rows.append([f"{{py:obj}}`~gsg_zoo.{module}.{name}`", kind, f"`gsg_zoo.{module}`", summary])
    return _table(["name", "kind", "defined in", "what"], rows)


GENERATORS = {
    "api": api,
    "recipes": recipes,
    "recipe_keys": recipe_keys,
    "datasets": datasets,
    "architecture": architecture,
}


def write_all(_app=None) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, render in GENERATORS.items():
        text = render()
        path = OUT / f"{name}.md"
        if not path.exists() or path.read_text() != text:  # unchanged files keep Sphinx's cache valid
            path.write_text(text)


def setup(app):
    app.connect("builder-inited", write_all)
    return {"parallel_read_safe": True, "version": "1"}
