"""The module map of the docs' Architecture table (docs/development.md, generated from LAYERS), enforced: layers import only downwards, no cycles.

The import graph is read from the source (every ``import``, module level or inside a function), so a
lazy import that goes the wrong way counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gsg_zoo"

#: Layers, lowest first: a module may import from its own layer and the layers listed before it.
#: ``""`` is the package itself (``import gsg_zoo``: light, its public API loaded lazily).
LAYERS: dict[str, tuple[str, ...]] = {
    "base": (
        "",
        "normalization",
        "device",
        "resources",
        "layout",
        "checksums",
        "checkpoint",
        "timm_hook",
        "losses",
        "pairing",
        "heads",
        "ema",
        "optim",
        "distributed",
    ),  # fmt: skip
    "model": ("backbones", "learner", "preprocessing", "recipes"),
    "data": ("data",),
    "zoo": ("card_data", "cards", "zoo", "hub", "importers", "export", "models"),
    "eval": ("eval",),
    "train": (
        "train_step",
        "train_data",
        "resume_point",
        "run_control",
        "run_state",
        "run_log",
        "telemetry",
        "monitors",
        "trainer",
        "experiments",
        "preflight",
    ),  # fmt: skip
    "transfer": ("transfer",),
    "app": ("demo", "zoo_build", "cli", "commands", "__main__"),
}


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
    """A base module importing the trainer is an upward import and, with trainer -> losses, a cycle."""
    graph = import_graph()
    graph["losses"] = graph["losses"] | {"trainer"}
    graph["trainer"] = graph["trainer"] | {"losses"}
    assert upward_imports(graph) == ["losses (base) -> trainer (train)"]
    assert any("losses" in c and "trainer" in c for c in import_cycles(graph))
