"""The layers of ``gsg_zoo`` are its folders, enforced: a folder imports only from itself and the folders
below it, with no import cycles (docs/development.md renders ``LAYERS`` as the architecture table).

The import graph is read from the source (every ``import``, module level or inside a function), so a
lazy import that goes the wrong way counts too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gsg_zoo"

#: Layers, lowest first: the folders (and top-level modules) of each; a module may import from its own
#: layer and the layers listed before it. ``""`` is the package itself, the public API over all layers.
LAYERS: dict[str, tuple[str, ...]] = {
    "core": ("core", "_version"),
    "method": ("method",),
    "config": ("config",),
    "data": ("data",),
    "zoo": ("zoo",),
    "eval": ("eval",),
    "train": ("train",),
    "transfer": ("transfer",),
    "app": ("app",),
    "api": ("", "__main__"),
}
#: At most this many top-level modules besides ``__init__`` and ``__main__``: the rest live in layers.
MAX_TOP_LEVEL_MODULES = 5


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _without_type_checking(tree: ast.Module) -> ast.Module:
    """Drop ``if TYPE_CHECKING:`` blocks: imports for type checkers only, never run."""
    tree.body = [
        n for n in tree.body if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))
    ]
    return tree


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if name else []
    found = set()
    for node in ast.walk(_without_type_checking(ast.parse(path.read_text()))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here if is_pkg else here[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            subs = {f"{target}.{a.name}".strip(".") for a in node.names}
            found |= (subs & modules) or {target}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gsg_zoo"):
            found.add(node.module.removeprefix("gsg_zoo").lstrip("."))
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("gsg_zoo").lstrip(".") for a in node.names if a.name.startswith("gsg_zoo")
            }
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, name, set(paths)) for name, path in paths.items()}


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    for rank, members in enumerate(LAYERS.values()):
        if top in members:
            return rank
    raise AssertionError(f"gsg_zoo.{module} is in no layer: add it to LAYERS (the docs' table follows)")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    names = list(LAYERS)
    return [
        f"{m} ({names[layer_of(m)]}) -> {d} ({names[layer_of(d)]})"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if layer_of(d) > layer_of(m)
    ]


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, str] = {}
    cycles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_every_module_has_a_layer_and_imports_only_downwards():
    upward = upward_imports(import_graph())
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_can_fail():
    """A method module importing the trainer is an upward import and, with trainer -> losses, a cycle."""
    graph = import_graph()
    graph["method.losses"] = graph["method.losses"] | {"train.trainer"}
    graph["train.trainer"] = graph["train.trainer"] | {"method.losses"}
    assert upward_imports(graph) == ["method.losses (method) -> train.trainer (train)"]
    assert any("method.losses" in c and "train.trainer" in c for c in import_cycles(graph))


def test_the_package_shows_its_layers():
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"top-level modules {top}: move them into a layer folder"
    folders = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    members = {m for names in LAYERS.values() for m in names}
    assert set(folders) | set(top) | {"", "__main__"} == members, "LAYERS names exactly the folders"


#: Machinery the package must not use: import hooks, and timm's private names (``timm.models._registry``,
#: ``_model_pretrained_cfgs``, ...); registration goes through timm's public ``register_model``.
HIDDEN = re.compile(r"sys\.meta_path|importlib\.abc|\btimm(\.\w+)*\._(?!_)\w+|\b_model_\w+")


def test_no_import_hooks_and_no_private_timm_names():
    found = [
        f"{p.relative_to(PACKAGE)}:{i}: {line.strip()}"
        for p in sorted(PACKAGE.rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if HIDDEN.search(line)
    ]
    assert not found, "hidden machinery:\n" + "\n".join(found)


#: A module docstring says what the module does and why in a few lines; the depth goes to docs/.
MAX_DOCSTRING_LINES = 15


def test_module_docstrings_say_what_and_why_in_a_few_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in sorted(PACKAGE.rglob("*.py"))
        if (doc := ast.get_docstring(ast.parse(p.read_text()), clean=False))
        and (n := doc.count("\n") + 1) > MAX_DOCSTRING_LINES
    }
    assert not long, f"module docstrings over {MAX_DOCSTRING_LINES} lines (move the depth to docs/): {long}"
