"""The documentation is part of the product: it builds strictly, its code runs, its commands parse, its
links exist, its numbers come from the results files and its architecture table from the enforced layers.

A ```python block runs in a fresh process from an empty directory, unless its first line is
``# needs: <what and why>`` (data, a previous command's output, the network).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
README_LIMIT = 8192


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_blocks(lang: str) -> list[tuple[str, str]]:
    """(``file:line``, code) of every fenced block of ``lang`` in the README and the docs."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) == lang:
                found.append((f"{page.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}", m.group(2)))
    return found


def gsg_command_lines(blocks: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(where, argv) of every ``gsg ...`` or ``... -m gsg_zoo ...`` command in shell blocks."""
    out = []
    for where, code in blocks:
        for line in code.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["gsg"]:
                out.append((where, words[1:]))
            elif "-m" in words and "gsg_zoo" in words:
                out.append((where, words[words.index("gsg_zoo") + 1 :]))
    return out


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())  # links inside code blocks are code, not links
    return [t for t in LINK.findall(text) if not re.match(r"^(https?:|mailto:|#)", t)]


def test_docs_build_strictly(tmp_path):
    """sphinx-build -W: any warning fails, including a broken cross-reference or heading anchor."""
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-q",
        "-E",
        "-b",
        "html",
        str(DOCS),
        str(tmp_path),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / "reference" / "cli.html").read_text().count("gsg pretrain") > 0


PYTHON_BLOCKS = code_blocks("python")


@pytest.mark.parametrize("where,code", PYTHON_BLOCKS, ids=[w for w, _ in PYTHON_BLOCKS])
def test_python_blocks_run(where, code, tmp_path):
    first = code.splitlines()[0] if code.strip() else ""
    if first.startswith("# needs:"):
        assert len(first) > len("# needs: ") + 10, f"{where}: say what the block needs and why"
        pytest.skip(first[2:])
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, f"{where} failed:\n{run.stderr[-3000:]}"


def test_every_gsg_command_line_parses():
    from gsg_zoo.cli import build_parser

    lines = gsg_command_lines(code_blocks("bash"))
    assert len(lines) >= 20  # the guides' commands are found at all
    bad = []
    for where, argv in lines:
        try:
            build_parser().parse_args(argv)
        except SystemExit as exit_:
            if exit_.code:
                bad.append(f"{where}: gsg {' '.join(argv)}")
    assert not bad, "command lines the parser refuses:\n" + "\n".join(bad)


def test_the_command_check_catches_a_wrong_flag():
    from gsg_zoo.cli import build_parser

    ((where, argv),) = gsg_command_lines([("x", "gsg experiment claims --no-such-flag ROOT")])
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


def test_every_relative_link_exists():
    missing = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in PAGES
        for target in relative_links(page)
        if not (page.parent / target.split("#")[0]).exists()
    ]
    assert not missing, "broken links:\n" + "\n".join(missing)


def test_readme_is_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT, (
        f"README.md is {size} bytes; keep it under {README_LIMIT}: move depth to docs/"
    )


def test_results_tables_equal_the_rendering_of_the_json_files():
    tables = _load("results_tables", ROOT / "tools" / "results_tables.py")
    assert tables.stale() == [], "run python tools/results_tables.py"


def test_architecture_table_lists_every_module_in_its_enforced_layer():
    gen = _load("gsg_docs", DOCS / "_ext" / "gsg_docs.py")
    arch = _load("test_architecture_layers", ROOT / "tests" / "test_architecture.py")
    rows = [r.split(" | ") for r in gen.architecture().splitlines()[2:]]
    table = {row[1].strip("`"): row[0].strip("| ") for row in rows}
    modules = {
        p.relative_to(ROOT / "gsg_zoo").with_suffix("").as_posix().removesuffix("/__init__")
        for p in (ROOT / "gsg_zoo").rglob("*.py")
    }
    modules = {"gsg_zoo" if m == "__init__" else m for m in modules}
    assert set(table) == modules
    for module, layer in table.items():
        top = "" if module == "gsg_zoo" else module.split("/")[0]
        assert top in arch.LAYERS[layer], f"{module} shown in layer {layer}, enforced elsewhere"
